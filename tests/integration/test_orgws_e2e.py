"""orgws (and qxs) through a real worker, over real SOAP/HTTP to their simulators:

* an answer about the account (orgws -2 帐户信息错误, qxs 用户名或密码不能为空) opens the
  account's circuit: the next batch does not call the vendor, `smsq accounts` shows the
  vendor's words, and a routed batch goes out on the route's next account;
* every orgws batch has a Timestamp of its own: its send second, the next free one when
  another batch of the account took it, the same for every chunk and retry.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from smsq.store.models import Batch, Chunk
from smsq.store.stamps import second_of

from ..conftest import (
    GUARD_OFF,
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
NEAR = 3  # seconds: a Timestamp this close to the time the vendor received the call is "the send time"


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
        GUARD_OFF  # the module sends one text to the same numbers through several accounts
        + "".join(
            _account(name, kind[name], sim.url + PATH[kind[name]], extra[kind[name]]) for name, sim in sims.items()
        )
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


def stamp_of(batch_id: int) -> int | None:
    with db() as s:
        return s.get(Batch, batch_id).stamp


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
    # At o-next the batch took a Timestamp of its own there: one for all its calls, the send time.
    assert len({s.timestamp for s in after.sends}) == 1
    assert all(abs(s.at - s.timestamp) < NEAR for s in after.sends)


# -- the batch Timestamp ---------------------------------------------------------


def test_two_batches_of_one_account_created_in_one_second_get_their_own_timestamps(vendors):
    from smsq.tasks import send_sms

    (state,) = fresh(vendors, "o-next")
    for _ in range(5):  # two sends in one second: start each try at the top of a second
        time.sleep(1.02 - time.time() % 1)
        a, b = (send_sms("o-next", [mobile], CONTENT).batch_id for mobile in ("13700000011", "13700000012"))
        with db() as s:
            created = [second_of(s.get(Batch, i).created_at) for i in (a, b)]
        if created[0] == created[1]:
            break
    else:
        pytest.fail("could not store two batches in one second")
    for batch_id in (a, b):
        assert wait_final(batch_id).recipients == {"sent": 1}
    stamps = [stamp_of(a), stamp_of(b)]
    assert stamps[0] != stamps[1] and all(0 <= stamp - created[0] <= 2 for stamp in stamps), (stamps, created)
    by_number = {s.numbers[0]: s for s in state.sends}
    assert [by_number[m].timestamp for m in ("13700000011", "13700000012")] == stamps
    assert all(abs(s.at - s.timestamp) < NEAR for s in state.sends)  # the real send time
    assert by_number["13700000011"].batch_id != by_number["13700000012"].batch_id  # two vendor batches


def test_a_retry_carries_the_batchs_timestamp(vendors):
    from smsq.tasks import send_sms

    (state,) = fresh(vendors, "o-next")
    set_faults(vendors.sims["o-next"], busy=True)  # -9 接收数据失败: transient, retried
    receipt = send_sms("o-next", ["13700000021"], CONTENT)
    wait_until(lambda: any(r.state == -9 for r in state.received), what="the first call, refused")
    set_faults(vendors.sims["o-next"], busy=False)
    assert wait_final(receipt.batch_id).recipients == {"sent": 1}
    calls = list(state.received)
    assert len(calls) >= 2 and [r.state for r in calls][-1] == 1 and {r.state for r in calls[:-1]} == {-9}
    assert {r.timestamp for r in calls} == {stamp_of(receipt.batch_id)}
    assert abs(calls[0].at - calls[0].timestamp) < NEAR


def test_producers_at_once_never_take_one_second_twice(vendors):
    from smsq.tasks import send_sms

    fresh(vendors, "o-next")
    start = threading.Barrier(6)

    def one(i: int) -> int:
        start.wait()
        return send_sms("o-next", [f"137000000{30 + i}"], CONTENT).batch_id

    with ThreadPoolExecutor(6) as pool:
        ids = list(pool.map(one, range(6)))
    stamps = [stamp_of(i) for i in ids]
    assert None not in stamps and len(set(stamps)) == 6, stamps
    for batch_id in ids:
        wait_final(batch_id)
