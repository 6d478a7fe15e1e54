"""Preview before sending and the daily quota, against the real database, broker and Redis
of each mode, and the dxt simulator's real balance poll.

No worker runs here: a preview must leave every table, every broker message and every
Redis key as it found them, and the quota is taken at intake, before any worker.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, func, select

from smsq import preview_send
from smsq.store.models import Base, Batch, DailyQuota
from smsq.tasks import send_sms
from smsq.tasks.blocklist import block_number
from smsq.tasks.polls import poll
from smsq.tasks.producer import NoValidNumbersError
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import (
    MODES,
    ROOT,
    Stack,
    apply_env,
    drop_postgres,
    migrated_postgres,
    mode_env,
    restore_env,
    write_config,
)
from .conftest import open_window, smsq

QUOTA_ACCOUNTS = """
[accounts.quota-dxt]
provider = "dxt"
base_url = "{url}"
username = "test"
password_env = "SMSQ_TEST_DXT_PASSWORD"
signature = "【某某科技】"
rate_limit = "200/s"
daily_quota = {quota}
"""
QUOTA = 50
CONTENT = "【某某科技】您的订单已发货"


@pytest.fixture(scope="module", params=[*MODES, "postgres"])
def stack(request, dxt_sim, tmp_path_factory):
    """A mode's database, broker and Redis, with no worker. ``postgres``: PostgreSQL with no
    Redis (the embedded broker), where the quota is counted in the database under a row lock."""
    from smsq.tasks.schema import ensure_schema
    from smsq.worker.db import upgrade

    state, url = dxt_sim
    tmp = tmp_path_factory.mktemp(f"preview-{request.param}")
    config = write_config(tmp / "smsq.toml", url)
    with config.open("a", encoding="utf-8") as f:
        f.write(QUOTA_ACCOUNTS.format(url=url, quota=QUOTA))
    env = mode_env("embedded" if request.param == "postgres" else request.param, tmp, config)
    if request.param == "postgres":
        env["SMSQ_DATABASE_URL"] = migrated_postgres(f"smsq_preview_{os.getpid()}")
    saved = apply_env(env)
    upgrade(settings().database_url)
    ensure_schema(settings())
    try:
        yield Stack(request.param, env, state, url, tmp)
    finally:
        restore_env(saved)
        if request.param == "postgres":
            drop_postgres(f"smsq_preview_{os.getpid()}")


@pytest.fixture
def fresh_quota(stack):
    """The quota account's count starts at nothing."""
    with session_scope(settings().database_url) as s:
        s.execute(delete(DailyQuota))
    if redis := _redis():
        for key in redis.scan_iter("smsq:quota:*"):
            redis.delete(key)


def _redis():
    import redis

    url = settings().redis_url
    return redis.Redis.from_url(url) if url else None


def everything(stack) -> dict:
    """Rows of every table, the embedded broker's messages, and every Redis key with its value."""
    seen: dict = {}
    with session_scope(settings().database_url) as s:
        for table in Base.metadata.sorted_tables:
            seen[table.name] = s.scalar(select(func.count()).select_from(table))
    broker = stack.tmp / "broker.db"
    if broker.exists():
        with sqlite3.connect(broker) as conn:
            tables = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]
            seen["broker"] = {t: conn.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}
    if redis := _redis():
        seen["redis"] = {key: redis.dump(key) for key in redis.scan_iter("*")}
    return seen


def numbers(start: int, count: int) -> list[str]:
    return [f"139{start + i:08d}" for i in range(count)]


def test_a_preview_writes_nothing_and_reports_what_the_send_does(stack, fresh_quota):
    open_window()
    assert poll("shop-dxt", "balance").outcome == "ok"  # the balance a preview weighs
    given = numbers(1000, 12)
    block_number("shop-dxt", given[3], "opted out")
    block_number("shop-dxt", given[4], "blocked by an operator")
    to = [*given, given[0], "12345", "not a number"]
    content = "您好" * 40  # 80 characters, and the account's 6-character signature: 86, two segments
    before = everything(stack)
    p = preview_send("shop-dxt", iter(to), content)
    assert everything(stack) == before
    assert p.accepted == 10 and p.rejected_by == {"invalid": 2, "opted out": 1, "blocked": 1}
    assert (p.characters, p.segments, p.max_chars, p.billable) == (86, 2, 335, 20)
    assert p.balance == stack.sim.balances["test"] and p.balance_verdict == "enough"
    assert p.balance_checked_at is not None and p.lane == "priority" and p.sendable

    receipt = send_sms("shop-dxt", iter(to), content)  # the send itself agrees
    assert (receipt.accepted, receipt.segments) == (p.accepted, p.segments)
    assert sorted(receipt.rejected) == sorted(p.rejected)


def test_a_long_list_is_previewed_through_the_staging_path(stack, fresh_quota):
    to = numbers(2_000_000, 12_000)
    before = everything(stack)
    p = preview_send("shop-dxt", (n for n in to + ["0"]), CONTENT)
    assert everything(stack) == before
    assert p.accepted == 12_000 and p.rejected_by == {"invalid": 1} and p.lane == "bulk" and p.billable == 12_000


def test_a_balance_short_of_the_billable_messages_is_not_enough(stack, fresh_quota):
    httpx.post(f"{stack.sim_url.rstrip('/')}/_sim/faults", json={"balance": 15}).raise_for_status()
    try:
        open_window()
        assert poll("shop-dxt", "balance").outcome == "ok"
        p = preview_send("shop-dxt", numbers(3000, 10), "字" * 70)  # 76 characters with the signature: 2 each
        assert (p.billable, p.balance, p.balance_verdict) == (20, 15, "not enough")
    finally:
        stack.sim.reset()


def test_the_preview_counts_what_the_quota_would_refuse_and_takes_none_of_it(stack, fresh_quota):
    send_sms("quota-dxt", numbers(4000, QUOTA - 3), CONTENT)
    before = everything(stack)
    p = preview_send("quota-dxt", numbers(5000, 5), CONTENT)
    assert everything(stack) == before
    assert (p.accepted, p.rejected_by, p.quota_used, p.daily_quota) == (3, {"over quota": 2}, QUOTA - 3, QUOTA)
    receipt = send_sms("quota-dxt", numbers(5000, 5), CONTENT)
    assert receipt.accepted == 3 and receipt.rejected == [(n, f"daily quota {QUOTA} reached") for n in numbers(5003, 2)]
    with pytest.raises(NoValidNumbersError, match=f"reached its daily quota of {QUOTA} numbers"):
        send_sms("quota-dxt", numbers(6000, 1), CONTENT)
    nothing = preview_send("quota-dxt", numbers(6000, 1), CONTENT)
    assert not nothing.sendable and nothing.quota_used == QUOTA


def test_the_quota_refusal_and_the_dry_run_on_the_command_line(stack, fresh_quota):
    env = stack.env
    dry = smsq(
        "send", "--dry-run", "--account", "quota-dxt", "--to", ",".join(numbers(7000, 3)), "--content", CONTENT, env=env
    )
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was stored or sent" in dry.stdout and "accepted:  3 number(s)" in dry.stdout
    as_json = smsq(
        "send",
        "--dry-run",
        "--json",
        "--account",
        "quota-dxt",
        "--to",
        numbers(7000, 1)[0],
        "--content",
        CONTENT,
        env=env,
    )
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["billable"] == 1

    sent = smsq("send", "--account", "quota-dxt", "--to", ",".join(numbers(7000, QUOTA)), "--content", CONTENT, env=env)
    assert sent.returncode == 0, sent.stderr
    refused = smsq("send", "--account", "quota-dxt", "--to", numbers(8000, 1)[0], "--content", CONTENT, env=env)
    assert refused.returncode == 2 and refused.stdout == ""
    assert errors(refused) == [
        f"smsq: error: account quota-dxt has reached its daily quota of {QUOTA} numbers for today (Beijing "
        "time; it starts again at 00:00 +08:00): nothing was stored; 1 number(s) over the quota"
    ]
    dry_refused = smsq(
        "send", "--dry-run", "--account", "quota-dxt", "--to", numbers(8000, 1)[0], "--content", CONTENT, env=env
    )
    assert dry_refused.returncode == 2 and errors(dry_refused) == errors(refused)
    assert "over quota 1" in dry_refused.stdout


def errors(run: subprocess.CompletedProcess) -> list[str]:
    """Its stderr without the config's warnings (the shared config has an account with a
    password written in the file)."""
    return [line for line in run.stderr.splitlines() if " WARNING " not in line]


PRODUCER = """
import os, sys, time
from pathlib import Path
from smsq.tasks import send_sms
from smsq.tasks.producer import NoValidNumbersError

me, sends, go = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
print("ready", flush=True)  # imported: the test starts the race once both are here
while not go.exists():
    time.sleep(0.01)
accepted = 0
for i in range(sends):
    numbers = [f"137{me}{i:04d}{j:03d}" for j in range(3)]
    try:
        accepted += send_sms("quota-dxt", numbers, "【某某科技】您的订单已发货").accepted
    except NoValidNumbersError:
        pass
print(accepted)
"""


def test_two_producers_racing_never_exceed_the_quota(stack, fresh_quota, tmp_path):
    go = tmp_path / "go"
    with session_scope(settings().database_url) as s:
        first = (s.scalar(select(func.max(Batch.id))) or 0) + 1
    env = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT)}
    producers = [
        subprocess.Popen(
            [sys.executable, "-c", PRODUCER, str(me), "30", str(go)], env=env, stdout=subprocess.PIPE, text=True
        )
        for me in (1, 2)
    ]
    for p in producers:  # both imported and waiting at the line, however slow the host
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    Path(go).touch()
    accepted = [int(p.communicate(timeout=120)[0].split()[-1]) for p in producers]
    assert all(p.returncode == 0 for p in producers)
    assert sum(accepted) == QUOTA  # 180 numbers asked for, the quota exactly taken
    assert all(a > 0 for a in accepted), accepted  # both were in the race
    with session_scope(settings().database_url) as s:
        stored = s.scalar(select(func.sum(Batch.accepted)).where(Batch.account == "quota-dxt", Batch.id >= first))
    assert stored == QUOTA
