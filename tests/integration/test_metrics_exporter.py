"""`smsq metrics` without a worker: queue lengths as the broker holds them, what
it serves when the database and broker are away, how it binds; and the vendor
call tally against rows that commit out of id order."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import insert

from smsq.cli.call_tally import SETTLE_SECONDS, CallTally
from smsq.store.models import VendorCall
from smsq.worker.db import session_scope, upgrade

from ..conftest import REDIS_URL, ROOT, fresh_redis, wait_until
from .conftest import listening_addresses, running, scrape, smsq, value


@pytest.mark.parametrize("broker", ["embedded", "redis"])
def test_queue_lengths_are_what_waits_in_the_broker(env, tmp_path, broker):
    if broker == "redis":
        env = {**env, "SMSQ_BROKER_URL": fresh_redis(REDIS_URL)}
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("\n".join(f"1385555{i:04d}" for i in range(250)), encoding="utf-8")
    # 250 numbers: one split job on the bulk queue (a worker cuts its 3 chunks); one OTP: its chunk
    for args in (["--to-file", str(numbers), "--kind", "marketing"], ["--to", "13866660001", "--kind", "otp"]):
        sent = smsq("send", "--account", "shop-dxt", *args, "--content", "【某某科技】hi", env=env, cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
    with running("metrics", env=env, cwd=tmp_path) as (port, _):
        samples = scrape(port)
        exposed = set(re.findall(r"^# HELP (smsq_\w+)", httpx.get(f"http://127.0.0.1:{port}/metrics").text, re.M))
    # Every metric the Grafana dashboard and the Prometheus alert rules query is one the exporter serves.
    for queries in ("grafana/smsq-dashboard.json", "prometheus/smsq-alerts.yml"):
        text = (ROOT / "deploy" / queries).read_text(encoding="utf-8")
        queried = {re.sub(r"_(bucket|count|sum)$", "", name) for name in re.findall(r"smsq_\w+", text)}
        assert queried and queried <= exposed, (queries, queried - exposed)
    assert value(samples, "smsq_queue_length", queue="smsq.bulk") == 1
    assert value(samples, "smsq_queue_length", queue="smsq.priority") == 1
    assert ("smsq_queue_length", frozenset({"queue": "smsq.poll"}.items())) in samples  # empty, still shown
    assert value(samples, "smsq_queue_length", queue="smsq.poll") == 0
    assert value(samples, "smsq_chunks", kind="otp", state="pending") == 1  # the bulk batch's are not cut yet...
    assert value(samples, "smsq_chunks", kind="marketing", state="pending") == 0
    # ...its numbers wait, counted by their batch's kind
    assert value(samples, "smsq_recipients_total", account="shop-dxt", kind="marketing", state="queued") == 250
    assert value(samples, "smsq_recipients_total", account="shop-dxt", kind="otp", state="queued") == 1
    assert value(samples, "smsq_recipients_total", account="shop-dxt", kind="notice", state="queued") == 0
    assert value(samples, "smsq_up", component="broker") == 1


def test_unreachable_database_and_broker_are_reported_not_fatal(env, tmp_path):
    env = {
        **env,
        "SMSQ_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere",
        "SMSQ_BROKER_URL": "redis://127.0.0.1:1/0",
    }
    with running("metrics", env=env, cwd=tmp_path) as (port, proc):
        first = scrape(port)
        assert value(first, "smsq_up", component="database") == 0
        assert ("smsq_up", frozenset({"component": "broker"}.items())) in first
        assert value(first, "smsq_up", component="broker") == 0
        assert not any(name.startswith("smsq_chunks") for name, _ in first)
        wait_until(lambda: scrape(port), 10, what="a second scrape")  # the exporter lives on
        assert proc.poll() is None


def test_metrics_binds_localhost_and_reports_a_taken_port(env, tmp_path):
    with running("metrics", env=env, cwd=tmp_path) as (port, _):
        assert listening_addresses(port) == {"127.0.0.1"}
        taken = smsq("metrics", "--port", str(port), env=env, cwd=tmp_path)
    assert taken.returncode == 2
    assert f"smsq: error: cannot listen on 127.0.0.1:{port}" in taken.stderr and "Traceback" not in taken.stderr


def test_call_tally_counts_rows_that_commit_out_of_order_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'tally.db'}"
    upgrade(url)
    t0 = datetime(2026, 1, 1, 12, 0, 0)

    def add(*rows):
        with session_scope(url) as s:
            s.execute(
                insert(VendorCall),
                [
                    dict(id=i, account="a", outcome=o, seconds=sec, created_at=t0 + timedelta(seconds=at))
                    for i, o, sec, at in rows
                ],
            )

    tally = CallTally()
    add((1, "ok", 0.2, 0), (2, "ok", 0.3, 1), (4, "transient", 6.0, 2))  # id 3 not committed yet
    with session_scope(url, readonly=True) as s:
        assert tally.update(s) == 3
    add((3, "ambiguous", 15.0, 1))  # commits late
    with session_scope(url, readonly=True) as s:
        assert tally.update(s) == 1
        assert tally.update(s) == 0  # nothing counted twice
    assert dict(tally.calls) == {("a", "ok"): 2, ("a", "transient"): 1, ("a", "ambiguous"): 1}
    histogram = dict(tally.durations["a"].cumulative())
    assert (histogram["0.25"], histogram["0.5"], histogram["10.0"], histogram["15.0"], histogram["+Inf"]) == (
        1,
        2,
        3,
        4,
        4,
    )
    assert tally.durations["a"].total == pytest.approx(21.5)

    add((5, "ok", 0.1, SETTLE_SECONDS + 10))  # much later: ids 1-4 are settled
    with session_scope(url, readonly=True) as s:
        assert tally.update(s) == 1
    assert tally._floor == 4 and set(tally._above_floor) == {5}  # only the recent rows are remembered
    assert tally.calls[("a", "ok")] == 3
