"""orgws (and qxs) through a real worker, over real SOAP/HTTP to their simulators:

* an answer about the account (orgws -2 帐户信息错误, qxs 用户名或密码不能为空) opens the
  account's circuit: the next batch does not call the vendor, `smsq accounts` shows the
  vendor's words, and a routed batch goes out on the route's next account.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from smsq.store.models import Chunk

from ..conftest import (
    PASSWORD,
    Stack,
    apply_env,
    mode_env,
    restore_env,
    start_worker,
    stop_worker,
    wait_final,
    wait_until,
)
from .conftest import set_faults, smsq

CONTENT = "【某某科技】尊敬的客户，您的包裹已到达驿站，取件码 8-3-1024。"
SEND_CALL = {"orgws": "SendMessage", "qxs": "sms.aspx:send"}
PATH = {"orgws": "Service.asmx", "qxs": ""}  # appended to a simulator's URL to make the account's base_url


def _account(name: str, provider: str, url: str, extra: str) -> str:
    return f"""
[accounts.{name}]
provider = "{provider}"
base_url = "{url}"
username = "test"
password_env = "SMSQ_TEST_DXT_PASSWORD"
signature = "【某某科技】"
rate_limit = "100/s"
timeout = 5
{extra}
"""


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def vendors(request, tmp_path_factory):
    """o-alone, q-alone: accounts of their own, for the circuit; route shop: o-first, then o-next."""
    from smsq.simulator import orgws, qxs
    from smsq.simulator.server import serve

    states = {
        "o-alone": orgws.OrgwsState({"test": PASSWORD}, balance=10_000_000, org_id=10001),
        "q-alone": qxs.QxsState({"test": PASSWORD}, balance=10_000_000, userid="12"),
        "o-first": orgws.OrgwsState({"test": PASSWORD}, balance=10_000_000, org_id=10001),
        "o-next": orgws.OrgwsState({"test": PASSWORD}, balance=10_000_000, org_id=10001),
    }
    kind = {name: "qxs" if name.startswith("q-") else "orgws" for name in states}
    modules = {"orgws": orgws, "qxs": qxs}
    sims = {name: serve(modules[kind[name]].create_app(state), port=0) for name, state in states.items()}
    extra = {"orgws": "org_id = 10001", "qxs": 'userid = "12"'}
    config = tmp_path_factory.mktemp(f"orgws-{request.param}") / "smsq.toml"
    config.write_text(
        "".join(_account(name, kind[name], sim.url + PATH[kind[name]], extra[kind[name]]) for name, sim in sims.items())
        + '\n[routes.shop]\naccounts = ["o-first", "o-next"]\ncooloff = 120\n',
        encoding="utf-8",
    )
    env = mode_env(request.param, config.parent, config)
    saved = apply_env(env)
    from smsq.tasks.schema import ensure_schema
    from smsq.worker.config import settings
    from smsq.worker.db import upgrade

    upgrade(settings().database_url)
    ensure_schema(settings())
    stack = Stack(request.param, env, None, "", config.parent)
    stack.worker = start_worker(stack)
    yield SimpleNamespace(stack=stack, states=states, sims=sims)
    stop_worker(stack.worker)
    restore_env(saved)
    for sim in sims.values():
        sim.stop()


def fresh(vendors, *names: str):
    """The simulators of ``names``, reset (faults off, nothing recorded)."""
    for name in names:
        vendors.states[name].reset()
    return [vendors.states[name] for name in names]


def send_calls(state, provider: str) -> int:
    with state.lock:
        return [c.endpoint for c in state.calls].count(SEND_CALL[provider])


def db():
    from smsq.worker.config import settings
    from smsq.worker.db import session_scope

    return session_scope(settings().database_url, readonly=True)


# -- answers about the account -------------------------------------------------


@pytest.mark.parametrize(
    "account, provider, words",
    [("o-alone", "orgws", "auth -2 帐户信息错误: 调用的参数有为空值"), ("q-alone", "qxs", "auth 用户名或密码不能为空")],
)
def test_an_answer_about_the_account_opens_its_circuit_and_the_next_batch_waits(vendors, account, provider, words):
    from smsq.tasks import batch_status, send_sms

    (state,) = fresh(vendors, account)
    set_faults(vendors.sims[account], empty_login=True)  # over the /_sim/ control route
    first = send_sms(account, ["13700000001", "13700000002"], CONTENT)
    status = wait_final(first.batch_id)
    assert (status.chunks, status.recipients) == ({"failed": 1}, {"failed": 2}), status
    assert send_calls(state, provider) == 1 and state.sends == []

    # What an operator sees: the circuit open, with the vendor's own words.
    listed = smsq("accounts", "--json", env=vendors.stack.env)
    assert listed.returncode == 0, listed.stderr
    circuit = {a["account"]: a for a in json.loads(listed.stdout)}[account]["circuit"]
    assert circuit["state"] == "open" and circuit["reason"].startswith(words), circuit
    text = smsq("accounts", env=vendors.stack.env).stdout
    assert "circuit  open until" in text and words in text, text

    # The next batch waits for the cool-off without calling the vendor.
    second = send_sms(account, ["13700000003"], CONTENT)

    def held() -> bool:
        with db() as s:
            detail = s.scalars(select(Chunk.detail).where(Chunk.batch_id == second.batch_id)).first()
        return bool(detail and detail.startswith("held until"))

    wait_until(held, what="the second batch's chunk to be held by the open circuit")
    assert send_calls(state, provider) == 1, [c.endpoint for c in state.calls]
    assert batch_status(second.batch_id).chunks == {"pending": 1}


def test_a_routed_batch_whose_first_account_answers_minus_2_goes_out_on_the_next(vendors):
    from smsq.tasks import send_sms

    first, after = fresh(vendors, "o-first", "o-next")
    set_faults(vendors.sims["o-first"], empty_login=True)
    numbers = [f"139{i:08d}" for i in range(150)]
    receipt = send_sms("shop", numbers, CONTENT)
    status = wait_final(receipt.batch_id)
    assert status.route == "shop" and status.by_account == {"o-next": {"sent": 150}}, status
    assert status.chunks.get("moved", 0) >= 1, status
    assert sorted(n for s in after.sends for n in s.numbers) == numbers  # each number once
    assert first.sends == [] and 1 <= send_calls(first, "orgws") <= 2  # one call per worker slot at most
    with db() as s:
        moved = s.scalars(select(Chunk.detail).where(Chunk.batch_id == receipt.batch_id, Chunk.state == "moved")).all()
    assert moved and all(d.startswith("moved to o-next: o-first auth -2 帐户信息错误") for d in moved), moved
