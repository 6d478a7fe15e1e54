"""Failover routes: config, the circuit of each account, and a route whose first account is broken,
end to end (real worker, dxt and linkws simulators over HTTP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from smsq.providers import Outcome, SendResult
from smsq.store.models import AccountCircuit, Chunk, Recipient
from smsq.tasks import circuit
from smsq.tasks.decisions import Policy, decide
from smsq.worker.config import ConfigError, UnknownAccountError, load_settings

from ..conftest import (
    PASSWORD,
    ROOT,
    Stack,
    apply_env,
    mode_env,
    restore_env,
    start_worker,
    stop_worker,
    wait_final,
)

ACCOUNTS = """
[accounts.a-dxt]
provider = "dxt"
base_url = "http://127.0.0.1:1/"
username = "u"
password = "p"

[accounts.b-linkws]
provider = "linkws"
base_url = "http://127.0.0.1:1/"
username = "u"
password = "p"
"""


def settings_for(tmp_path, routes: str, monkeypatch):
    path = tmp_path / "smsq.toml"
    path.write_text(ACCOUNTS + routes, encoding="utf-8")
    monkeypatch.setenv("SMSQ_CONFIG", str(path))
    monkeypatch.setenv("SMSQ_DATABASE_URL", f"sqlite:///{tmp_path / 'smsq.db'}")
    return load_settings()


# -- config -----------------------------------------------------------------


def test_a_route_is_read_with_its_accounts_in_order(tmp_path, monkeypatch):
    conf = settings_for(tmp_path, '[routes.shop]\naccounts = ["b-linkws", "a-dxt"]\ncooloff = 7\n', monkeypatch)
    route = conf.route_or_account("shop")
    assert route.accounts == ("b-linkws", "a-dxt") and route.cooloff == 7
    assert conf.route_or_account("a-dxt").accounts == ("a-dxt",)  # an account is a route of one
    assert conf.cooloff("a-dxt") == 7 and conf.cooloff("b-linkws") == 7
    with pytest.raises(UnknownAccountError, match=r"'nope'.*accounts: a-dxt, b-linkws; routes: shop"):
        conf.route_or_account("nope")


@pytest.mark.parametrize(
    "table, message",
    [
        ('[routes.a-dxt]\naccounts = ["b-linkws"]\n', r"route 'a-dxt': an account has the same name"),
        ("[routes.shop]\naccounts = []\n", r"route 'shop': accounts must be a list of at least one"),
        ("[routes.shop]\n", r"route 'shop': accounts must be a list"),
        ('[routes.shop]\naccounts = ["a-dxt", "ghost"]\n', r"route 'shop': accounts names 'ghost', not configured"),
        ('[routes.shop]\naccounts = ["a-dxt", "a-dxt"]\n', r"route 'shop': accounts names 'a-dxt' more than once"),
        ('[routes.shop]\naccounts = ["a-dxt"]\ncooloff = 0\n', r"route 'shop': cooloff must be a positive number"),
        ('[routes.shop]\naccounts = ["a-dxt"]\ncoolof = 3\n', r"route 'shop': unknown key\(s\) 'coolof'"),
        ('[rout.shop]\naccounts = ["a-dxt"]\n', r"unknown top-level table\(s\) rout"),
    ],
)
def test_route_mistakes_name_the_route_and_the_key(tmp_path, monkeypatch, table, message):
    with pytest.raises(ConfigError, match=message):
        settings_for(tmp_path, table, monkeypatch)


# -- the circuit, on a fake clock -------------------------------------------

T0 = datetime(2030, 1, 1, 12, 0, 0)
AUTH = SendResult(Outcome.AUTH, code="-7", message="用户登入信息验证失败")
OK = SendResult(Outcome.OK)


@pytest.fixture
def conf(tmp_path, monkeypatch):
    from smsq.tasks.schema import ensure_schema

    conf = settings_for(tmp_path, '[routes.shop]\naccounts = ["a-dxt", "b-linkws"]\ncooloff = 10\n', monkeypatch)
    ensure_schema(conf)
    return conf


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def state(conf) -> SimpleNamespace:
    from smsq.worker.db import session_scope

    with session_scope(conf.database_url, readonly=True) as s:
        row = s.get(AccountCircuit, "a-dxt")
        return SimpleNamespace(
            state=row.state, cooloff=row.cooloff, trips=row.trips, reopen_at=row.reopen_at, reason=row.reason
        )


def heard(
    conf, result: SendResult, seconds: float, *, probe: bool = False, attempt: int = 1, first_ago: float = 0.0
) -> str | None:
    """What a-dxt's circuit makes of the answer ``result`` at ``at(seconds)`` to the chunk's
    ``attempt``-th call, its first ``first_ago`` seconds before."""
    decision = decide(result, attempt, at(seconds - first_ago), at(seconds), Policy.of(conf), probe=probe)
    return circuit.after_call(conf, "a-dxt", decision, now=at(seconds))


def fail_probe_at(conf, seconds: float, chunk_id: int) -> None:
    assert circuit.admit(conf, "a-dxt", chunk_id, now=at(seconds)) == circuit.Admission(probe=True)
    heard(conf, AUTH, seconds + 0.5, probe=True)


def test_auth_opens_the_circuit_for_the_cooloff_then_exactly_one_chunk_probes(conf):
    assert circuit.admit(conf, "a-dxt", 1, now=at(0)) == circuit.Admission(probe=False)
    assert heard(conf, AUTH, 0) == "opened"
    s = state(conf)
    assert (s.state, s.cooloff, s.reopen_at, s.reason) == ("open", 10, at(10), "auth -7 用户登入信息验证失败")
    blocked = circuit.admit(conf, "a-dxt", 2, now=at(9))
    assert isinstance(blocked, circuit.Blocked) and blocked.until == at(10) and "auth -7" in blocked.why
    # A chunk in flight before the trip failing too changes nothing.
    assert heard(conf, AUTH, 1) is None
    assert state(conf).reopen_at == at(10)
    # After the cool-off one chunk takes the probe; the others keep waiting.
    assert circuit.admit(conf, "a-dxt", 3, now=at(10)) == circuit.Admission(probe=True)
    assert isinstance(circuit.admit(conf, "a-dxt", 4, now=at(10.1)), circuit.Blocked)
    assert circuit.admit(conf, "a-dxt", 3, now=at(10.2)) == circuit.Admission(probe=True)  # its redelivery
    assert heard(conf, OK, 11, probe=True) == "closed"
    assert circuit.admit(conf, "a-dxt", 4, now=at(11)) == circuit.Admission(probe=False)


def test_failed_probes_double_the_cooloff_up_to_eight_times(conf):
    heard(conf, AUTH, 0)
    cooloffs, clock = [], 10
    for chunk in range(5):
        fail_probe_at(conf, clock, 100 + chunk)
        s = state(conf)
        cooloffs.append(s.cooloff)
        clock = (s.reopen_at - T0).total_seconds()
    assert cooloffs == [20, 40, 80, 80, 80]
    assert state(conf).trips == 6


def test_an_account_that_fails_again_soon_after_closing_keeps_its_longer_cooloff(conf):
    heard(conf, AUTH, 0)
    fail_probe_at(conf, 10, 1)  # open for 20 s
    circuit.admit(conf, "a-dxt", 2, now=at(31))
    heard(conf, OK, 31, probe=True)
    # It works for a minute, then fails again: no flapping back at the base cool-off.
    heard(conf, AUTH, 91)
    assert state(conf).cooloff == 40
    circuit.admit(conf, "a-dxt", 3, now=at(131))
    heard(conf, OK, 131, probe=True)
    # Quiet for more than ten base cool-offs: the damping is forgotten.
    heard(conf, AUTH, 131 + 101)
    assert (state(conf).cooloff, state(conf).trips) == (10, 1)


def test_retries_running_out_trip_the_circuit_and_a_lost_probe_is_given_up(conf):
    busy = SendResult(Outcome.TRANSIENT, message="connect refused")
    assert heard(conf, busy, 0) is None
    # the chunk's retry budget (SMSQ_RETRY_FOR) is spent with its fifth call
    assert heard(conf, busy, 0, attempt=5, first_ago=conf.retry_for) == "opened"
    assert state(conf).reason.startswith("transient after 5 attempts:")
    assert circuit.admit(conf, "a-dxt", 1, now=at(10)).probe
    # The probe's worker died: after the send timeout another chunk may probe.
    assert isinstance(circuit.admit(conf, "a-dxt", 2, now=at(10 + conf.send_timeout - 1)), circuit.Blocked)
    assert circuit.admit(conf, "a-dxt", 2, now=at(10 + conf.send_timeout)).probe


# -- end to end ---------------------------------------------------------------

CONTENT = "【某某科技】尊敬的客户，您的包裹已到达驿站，取件码 8-3-1024。"
BROKEN_ENV = "SMSQ_TEST_ROUTE_DXT_PASSWORD"


def numbers(start: int, count: int) -> list[str]:
    return [f"139{start + i:08d}" for i in range(count)]


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def route_stack(request, tmp_path_factory):
    from smsq.simulator.dxt import DxtState
    from smsq.simulator.dxt import create_app as dxt_app
    from smsq.simulator.linkws import LinkwsState
    from smsq.simulator.linkws import create_app as linkws_app
    from smsq.simulator.server import serve

    dxt = DxtState({"test": PASSWORD}, balance=10_000_000)
    linkws = LinkwsState({"test": PASSWORD}, balance=10_000_000, min_poll_interval=0.0)
    sims = [serve(dxt_app(dxt), port=0), serve(linkws_app(linkws), port=0)]
    tmp = tmp_path_factory.mktemp(f"routes-{request.param}")
    config = tmp / "smsq.toml"
    config.write_text(
        f"""
[accounts.route-dxt]
provider = "dxt"
base_url = "{sims[0].url}"
username = "test"
password_env = "{BROKEN_ENV}"
signature = "【某某科技】"
rate_limit = "200/s"

[accounts.route-linkws]
provider = "linkws"
base_url = "{sims[1].url}"
username = "test"
password_env = "SMSQ_TEST_DXT_PASSWORD"
transport = "http"
signature = "【某某科技】"
rate_limit = "200/s"

[routes.shop]
accounts = ["route-dxt", "route-linkws"]
cooloff = 8
""",
        encoding="utf-8",
    )
    env = {**mode_env(request.param, tmp, config), BROKEN_ENV: "not-the-password"}
    saved = apply_env(env)
    from smsq.tasks.schema import ensure_schema
    from smsq.worker.config import settings
    from smsq.worker.db import upgrade

    upgrade(settings().database_url)
    ensure_schema(settings())
    stack = Stack(request.param, env, dxt, sims[0].url, tmp)
    stack.worker = start_worker(stack)
    yield SimpleNamespace(stack=stack, dxt=dxt, linkws=linkws)
    stop_worker(stack.worker)
    restore_env(saved)
    for sim in sims:
        sim.stop()


def smsq(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "smsq", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **stack.env, "PYTHONPATH": str(ROOT)},
    )


def received(sim) -> Counter:
    return Counter(n for s in sim.sends for n in s.numbers)


def refused_sends(sim) -> int:
    return [c.endpoint for c in sim.calls].count("sendsms_txt.asp") - len(sim.sends)


def test_a_route_whose_first_account_is_broken_delivers_through_the_second_then_comes_back(route_stack):
    from smsq.tasks import send_sms
    from smsq.worker.config import settings
    from smsq.worker.db import session_scope

    r = route_stack
    first, second = numbers(0, 250), numbers(1000, 250)

    # 1. The first account refuses the password: every number goes out through linkws, once,
    #    except one that unsubscribed at linkws.
    from smsq import block_number

    block_number("route-linkws", first[7], "opted out")
    moved = send_sms("shop", first, CONTENT)
    status = wait_final(moved.batch_id, timeout=60)
    assert status.recipients == {"sent": 249, "failed": 1}, status
    assert status.by_account == {"route-linkws": {"sent": 249, "failed": 1}}
    with session_scope(settings().database_url, readonly=True) as s:
        (refused,) = (
            s.execute(select(Recipient).where(Recipient.batch_id == moved.batch_id, Recipient.state == "failed"))
            .scalars()
            .all()
        )
        assert refused.mobile == first[7] and refused.detail == "blocked for account route-linkws: opted out"
    assert status.route == "shop" and status.chunks.get("moved", 0) >= 1
    assert r.dxt.sends == [] and 1 <= refused_sends(r.dxt) <= 2  # one call per worker process at most
    # 2. While its circuit is open, a new send goes to linkws at once, at linkws's chunk size.
    with session_scope(settings().database_url, readonly=True) as s:
        assert s.get(AccountCircuit, "route-dxt").reopen_at > datetime.utcnow() + timedelta(seconds=1), (
            "the first batch took most of the cool-off; the next send would probe"
        )
    direct = send_sms("shop", second, CONTENT)
    status = wait_final(direct.batch_id, timeout=60)
    assert status.by_account == {"route-linkws": {"sent": 250}} and status.chunks == {"accepted": 1}
    assert received(r.linkws) == Counter(first[:7] + first[8:] + second)  # every number exactly once
    assert max(len(s.numbers) for s in r.linkws.sends) == 250  # one linkws call, up to 500 numbers
    assert {s.content for s in r.linkws.sends} == {CONTENT.removeprefix("【某某科技】") + "【某某科技】"}
    assert refused_sends(r.dxt) <= 2  # the broken account was not called again

    # What an operator sees.
    accounts = {a["account"]: a for a in json.loads(smsq(r.stack, "accounts", "--json").stdout)}
    assert accounts["route-dxt"]["circuit"]["state"] in ("open", "half_open")
    assert "auth -7" in accounts["route-dxt"]["circuit"]["reason"]
    assert accounts["route-dxt"]["routes"] == ["shop"] and accounts["route-linkws"]["circuit"]["state"] == "closed"
    text = smsq(r.stack, "status", str(moved.batch_id)).stdout
    assert "route shop" in text and "route-linkws: failed 1, sent 249" in text

    # 3. The password is fixed (the worker restarted with it) and the cool-off passes:
    #    one probe goes to the first account, succeeds, and sends go back to it.
    stop_worker(r.stack.worker)
    r.stack.env[BROKEN_ENV] = PASSWORD
    apply_env({BROKEN_ENV: PASSWORD})
    r.stack.worker = start_worker(r.stack)
    with session_scope(settings().database_url, readonly=True) as s:
        reopen_at = s.get(AccountCircuit, "route-dxt").reopen_at
    time.sleep(max(0.0, (reopen_at - datetime.utcnow()).total_seconds()) + 0.5)
    probe = send_sms("shop", numbers(2000, 50), CONTENT)
    assert wait_final(probe.batch_id).by_account == {"route-dxt": {"sent": 50}}
    back = send_sms("shop", numbers(3000, 250), CONTENT)
    assert wait_final(back.batch_id).by_account == {"route-dxt": {"sent": 250}}
    assert received(r.dxt) == Counter(numbers(2000, 50) + numbers(3000, 250))
    assert sorted(len(s.numbers) for s in r.dxt.sends) == [50, 50, 100, 100]  # dxt's chunk size
    assert {s.content for s in r.dxt.sends} == {CONTENT}  # dxt keeps the signature in front
    with session_scope(settings().database_url, readonly=True) as s:
        assert s.get(AccountCircuit, "route-dxt").state == "closed"
        moved_chunks = (
            s.execute(select(Chunk).where(Chunk.batch_id == moved.batch_id, Chunk.state == "moved")).scalars().all()
        )
        assert all(c.detail.startswith("moved to route-linkws: route-dxt auth -7") for c in moved_chunks)
