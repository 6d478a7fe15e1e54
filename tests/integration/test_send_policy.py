"""The send policy at intake, on the real databases and Redis: per-number frequency caps
raced by two producer processes, the duplicate guard across two sends, and the refusals
counted by reason in ``smsq_rejected_total``.

Three places the counts live: ``redis`` (PostgreSQL, Redis as broker and counter),
``postgres`` (PostgreSQL alone: an embedded broker on SQLite, no Redis) and ``embedded``
(SQLite for both). No worker runs: what is checked is what intake admits and stores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from smsq.cli.metrics import SmsqCollector
from smsq.store.models import SplitChunk
from smsq.tasks.caps import window_no
from smsq.tasks.producer import NoValidNumbersError, send_sms
from smsq.worker.config import settings
from smsq.worker.db import session_scope, upgrade
from smsq.worker.kinds import Cap

from ..conftest import PASSWORD, REDIS_URL, ROOT, apply_env, fresh_redis, migrated_postgres, restore_env, write_config

ACCOUNT = "shop-dxt"
KINDS = """
[kinds.notice]
per_number = ["2/1d"]      # the race: each number at most twice, whoever asks
duplicate_window = "0"

[kinds.otp]                # the defaults: 1/1m, 5/1h, 10/1d; a duplicate window of 30s
"""


def policy_env(where: str, tmp: Path, config: Path) -> dict:
    env = {"SMSQ_CONFIG": str(config), "SMSQ_TEST_DXT_PASSWORD": PASSWORD, "SMSQ_REDIS_URL": ""}
    if where == "embedded":
        env["SMSQ_DATABASE_URL"] = f"sqlite:///{tmp / 'smsq.db'}"
    else:
        env["SMSQ_DATABASE_URL"] = migrated_postgres(f"smsq_policy_{os.getpid()}")
    if where == "redis":
        env["SMSQ_BROKER_URL"] = fresh_redis(REDIS_URL)
    else:  # nobody takes the tasks: an embedded broker keeps them
        env["SMSQ_BROKER_URL"] = f"sqla+sqlite:///{tmp / 'broker.db'}"
    return env


@pytest.fixture(scope="module", params=["redis", "postgres", "embedded"])
def where(request, dxt_sim, tmp_path_factory):
    _, url = dxt_sim
    tmp = tmp_path_factory.mktemp(f"policy-{request.param}")
    config = write_config(tmp / "smsq.toml", url, kinds=KINDS)  # the defaults but for the notice's
    saved = apply_env(policy_env(request.param, tmp, config))
    upgrade(settings().database_url)
    assert (settings().redis_url is not None) == (request.param == "redis")
    yield request.param
    restore_env(saved)


def numbers(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n)]


# -- two producer processes race for the same numbers' allowance --------------------------

PRODUCER = """
import json, sys
from smsq.tasks.producer import NoValidNumbersError, send_sms
numbers, rounds, tag = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
print("ready", flush=True)
sys.stdin.readline()  # both processes start sending together
receipts = []
for i in range(rounds):
    try:
        r = send_sms("shop-dxt", numbers, f"notice {tag} {i}")
        receipts.append({"batch": r.batch_id, "accepted": r.accepted, "rejected": r.rejected})
    except NoValidNumbersError as refused:  # every number capped: nothing stored
        receipts.append({"batch": None, "accepted": 0, "rejected": refused.rejected})
print(json.dumps(receipts), flush=True)
"""


def race(lists: list[list[str]], rounds: int) -> list[dict]:
    """Each list sent ``rounds`` times by a process of its own, all released at once."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PRODUCER, json.dumps(mobiles), str(rounds), str(i)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, mobiles in enumerate(lists)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    receipts = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        receipts += json.loads(out.strip().splitlines()[-1])
    return receipts


def test_two_producer_processes_racing_for_a_cap_get_the_cap_between_them(where):
    if where == "embedded":
        pytest.skip("SQLite's write lock serialises producers; the race is PostgreSQL's and Redis's")
    cap = Cap(2, 86400)
    day = window_no(cap, time.time())
    mobiles = numbers("1360000", 200)  # a list past the short path: staged
    receipts = race([mobiles, mobiles[::-1]], rounds=3)  # the other in reverse: no deadlock either
    if window_no(cap, time.time()) != day:
        pytest.skip("the Beijing day turned during the race")
    assert sum(r["accepted"] for r in receipts) == 2 * len(mobiles)
    refusals = Counter(number for r in receipts for number, _ in r["rejected"])
    assert refusals == dict.fromkeys(mobiles, 4)  # 6 asks each, 2 taken
    assert {reason for r in receipts for _, reason in r["rejected"]} == {"frequency cap 2/1d"}
    with session_scope(settings().database_url) as s:
        staged = Counter(
            n
            for chunk in s.scalars(
                select(SplitChunk.mobiles).where(SplitChunk.batch_id.in_([r["batch"] for r in receipts]))
            )
            for n in chunk.split(",")
        )
    assert staged == dict.fromkeys(mobiles, 2)  # stored for sending: twice each, no more, none lost


def test_a_second_code_within_the_minute_is_refused_naming_the_cap(where):
    first = send_sms(ACCOUNT, ["13611110001"], "【某某科技】验证码 111111", kind="otp")
    assert first.accepted == 1 and first.rejected == []
    with pytest.raises(NoValidNumbersError) as refused:
        send_sms(ACCOUNT, ["13611110001"], "【某某科技】验证码 222222", kind="otp")
    assert refused.value.rejected == [("13611110001", "frequency cap 1/1m")]
    mixed = send_sms(ACCOUNT, ["13611110001", "13611110002"], "【某某科技】验证码 333333", kind="otp")
    assert mixed.accepted == 1 and mixed.rejected == [("13611110001", "frequency cap 1/1m")]


def test_the_same_text_to_the_same_number_twice_is_a_duplicate_of_the_first_batch(where):
    text = "【某某科技】您的订单已发货"
    first = send_sms(ACCOUNT, ["13622220001", "13622220002"], text, kind="marketing")
    second = send_sms(ACCOUNT, ["13622220002", "13622220003"], text, kind="marketing")
    assert second.accepted == 1
    assert second.rejected == [("13622220002", f"duplicate of batch {first.batch_id} within 30s")]
    other = send_sms(ACCOUNT, ["13622220001"], text + "。", kind="marketing")  # another text
    assert other.accepted == 1 and other.rejected == []


def test_a_list_of_several_blocks_is_guarded_whole_and_its_resend_refused_whole(where):
    """Past one block (5,000 entries) the checks run block by block (with Redis: one block
    ahead, in a thread of their own): every number of the list is guarded, and a resend
    is refused number by number, in whatever order the list comes."""
    text = "【某某科技】双12大促，全场五折"
    mobiles = [f"136{i:08d}" for i in range(12_000)]
    first = send_sms(ACCOUNT, mobiles + ["12345"], text, kind="marketing")
    assert first.accepted == 12_000 and [n for n, _ in first.rejected] == ["12345"]
    with pytest.raises(NoValidNumbersError) as refused:
        send_sms(ACCOUNT, mobiles[::-1], text, kind="marketing")
    assert Counter(reason for _, reason in refused.value.rejected) == {
        f"duplicate of batch {first.batch_id} within 30s": 12_000
    }
    newcomers = [f"137{i:08d}" for i in range(6_000)]
    part = send_sms(ACCOUNT, mobiles[6_000:] + newcomers, text, kind="marketing")
    assert part.accepted == 6_000 and sorted(n for n, _ in part.rejected) == mobiles[6_000:]
    with session_scope(settings().database_url) as s:
        staged = [
            n
            for chunk in s.scalars(select(SplitChunk.mobiles).where(SplitChunk.batch_id == part.batch_id))
            for n in chunk.split(",")
        ]
    assert staged == newcomers  # in list order, each once


def test_the_signature_is_part_of_the_content(where):
    """The guard hashes the text as sent: given without the signature, the account adds it
    (dxt: at the end), and the same words signed there are then the same content."""
    send_sms(ACCOUNT, ["13633330001"], "您的快递到了", kind="marketing")
    again = send_sms(ACCOUNT, ["13633330001", "13633330002"], "您的快递到了【某某科技】", kind="marketing")
    assert again.accepted == 1
    assert [(n, reason.startswith("duplicate of batch ")) for n, reason in again.rejected] == [("13633330001", True)]


def rejected_counts() -> dict[tuple[str, str], float]:
    """smsq_rejected_total of the account by (kind, reason), from a fresh exporter."""
    [family] = [f for f in SmsqCollector(settings()).collect() if f.name == "smsq_rejected"]
    return {
        (s.labels["kind"], s.labels["reason"]): s.value
        for s in family.samples
        if s.labels["account"] == ACCOUNT and s.name == "smsq_rejected_total"
    }


def test_the_metric_counts_refusals_by_reason_never_by_number(where):
    before = rejected_counts()
    assert ("otp", "capped") in before and ("marketing", "duplicate") in before  # every series, from zero
    send_sms(ACCOUNT, ["13644440001"], "【某某科技】验证码 444444", kind="otp")
    with pytest.raises(NoValidNumbersError):  # refused whole: nothing stored, still counted
        send_sms(ACCOUNT, ["13644440001", "12345"], "【某某科技】验证码 555555", kind="otp")
    send_sms(ACCOUNT, ["13644440002"], "【某某科技】通知", kind="marketing")
    send_sms(ACCOUNT, ["13644440002", "13644440003", "x"], "【某某科技】通知", kind="marketing")
    after = rejected_counts()
    grew = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    assert grew == {
        ("otp", "capped"): 1,
        ("otp", "invalid"): 1,
        ("marketing", "duplicate"): 1,
        ("marketing", "invalid"): 1,
    }


def test_a_dry_run_of_the_checks_looks_and_counts_nothing(where):
    """The preview's seam: ``admission(..., dry_run=True)`` reports what would be refused
    and counts nothing, in Redis as in the database."""
    from smsq.store.models import Batch
    from smsq.tasks.policy import admission, policy_for

    text = "【某某科技】验证码 777777"
    sent = send_sms(ACCOUNT, ["13655550001"], text, kind="otp")
    policy = policy_for(settings(), ACCOUNT, "otp")

    def look(mobiles: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
        rejected: list[tuple[str, str]] = []
        with session_scope(settings().database_url) as session:
            batch = Batch(account=ACCOUNT, content=text, lane="priority", kind="otp")
            admit = admission(session, policy, batch, rejected, dry_run=True)
            assert admit is not None and batch.id is None  # nothing written
            return admit(mobiles), rejected

    for _ in range(2):  # looking twice counts nothing either time
        assert look(["13655550001", "13655550002"]) == (
            ["13655550002"],
            [("13655550001", "frequency cap 1/1m")],
        )
    # the look took nothing: the number is still free to send, and not guarded
    assert send_sms(ACCOUNT, ["13655550002"], text, kind="otp").accepted == 1
    assert sent.accepted == 1


def test_the_redis_guard_holds_a_number_for_its_window_across_buckets_and_only_then():
    from smsq.tasks.duplicates import digest, redis_guard

    url, text, window = fresh_redis(REDIS_URL), digest("【某某科技】双11大促"), 30
    a, b, c = "13800138000", "13900139000", "13700137000"
    assert redis_guard(url, text, [a, b], 7, window, False, 100.0) == {}  # bucket 3: guarded by batch 7
    assert redis_guard(url, text, [a, c], 8, window, True, 125.0) == {a: "7"}  # a look only: nothing written
    assert redis_guard(url, text, [a], 8, window, False, 125.0) == {a: "7"}  # bucket 4: the previous one counts
    assert redis_guard(url, text, [c], 9, window, False, 126.0) == {}  # c was not written by the look
    assert redis_guard(url, text, [b], 9, window, False, 131.0) == {}  # 31 s after batch 7's last block: free
    assert redis_guard(url, digest("another text"), [c], 10, window, False, 126.5) == {}  # per text
    assert redis_guard(url, text, [b, c], 11, window, False, 140.0) == {b: "9", c: "9"}


def test_a_text_sent_to_one_number_at_a_time_is_guarded_per_number_whoever_sent_it():
    """A notice sent as events come (one number a send, hundreds of sends in a window): each
    send is looked up per number, never per earlier send, and names the one that holds it."""
    from smsq.tasks.duplicates import digest, redis_guard

    url, text, window = fresh_redis(REDIS_URL), digest("【某某科技】您的快递已到"), 30
    for i in range(500):  # batches 1..500, one number each, in bucket 10 (300-329 s)
        assert redis_guard(url, text, [f"1390000{i:04d}"], i + 1, window, False, 300.0 + i / 100) == {}
    asked = ["13900000017", "13800000000", "13900000420", "13900000017"[:-1] + "9"]
    assert redis_guard(url, text, asked, 501, window, False, 309.0) == {
        "13900000017": "18",
        "13900000420": "421",
        "13900000019": "20",
    }
    # 31 s after a batch's send (bucket 11), it no longer guards its number; a later one does
    assert redis_guard(url, text, ["13900000001", "13900000499"], 502, window, False, 332.0) == {"13900000499": "500"}
