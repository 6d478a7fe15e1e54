"""Send windows end to end: a real worker, the dxt simulator over HTTP, and two windows
that turn at the same whole minute (windows are HH:MM, so up to a minute and a bit away):

* one that opens then, a minute or less after a marketing campaign was sent with
  `smsq send --kind marketing --wait`: the campaign is stored, its chunks pending until
  the opening, `smsq status` and `--wait` say so, the vendor sees nothing before the
  opening and every number once after it;
* one that closes then, under a campaign running at 1 call a second: what went before
  the close went, the rest pauses, pending, due at the next day's opening, without a
  vendor call or a counted attempt.

Both wait on events (the batch final, every chunk left pending and due), never a fixed
sleep. The arithmetic (openings, edges, across midnight) is tests/unit/test_send_windows.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from smsq.providers.base import BEIJING
from smsq.store.models import Chunk, utcnow
from smsq.tasks import batch_status, send_sms
from smsq.tasks.cancel import cancel_batch
from smsq.tasks.policy import opening_words
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import MODES, ROOT, run_stack, wait_final, wait_until
from .conftest import smsq

AHEAD = 12  # seconds at least between the sends and the turn of the windows: time to store and start
CLOSING_CHUNKS = 100  # at 1 call a second: more than the minute and a bit before the close
CONTENT = "【某某科技】周末大促，全场五折，回T退订"


def clock(moment: datetime) -> str:
    return f"{moment.astimezone(BEIJING):%H:%M}"


def naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def account(name: str, url: str, window: str, rate: str) -> str:
    return f"""
[accounts.{name}]
provider = "dxt"
base_url = "{url}"
username = "test"
password_env = "SMSQ_TEST_DXT_PASSWORD"
signature = "【某某科技】"
rate_limit = "{rate}"

[accounts.{name}.kinds.marketing]
send_window = "{window}"
"""


@pytest.fixture(scope="module", params=MODES, name="stack")
def _stack(request, dxt_sim, tmp_path_factory):
    yield from run_stack(request.param, dxt_sim, tmp_path_factory)


@pytest.fixture(scope="module")
def turn(stack):
    """Two accounts added to the file, their windows turning at the next whole minute at
    least AHEAD seconds away (Beijing time): one opens then, one closes then. The kind's own
    window is any time, so that an account may set any window whatever the hour of the run."""
    now = datetime.now(BEIJING)
    at = (now + timedelta(seconds=AHEAD + 60)).replace(second=0, microsecond=0)
    config = Path(stack.env["SMSQ_CONFIG"])
    guard_off = '[kinds.marketing]\nduplicate_window = "0"\n'  # the suite's file has the table (GUARD_OFF)
    text = config.read_text(encoding="utf-8")
    assert guard_off in text
    config.write_text(text.replace(guard_off, guard_off + 'send_window = "00:00-24:00"\n'), encoding="utf-8")
    with open(config, "a", encoding="utf-8") as f:
        f.write(account("opens-dxt", stack.sim_url, f"{clock(at)}-{clock(at + timedelta(hours=1))}", "200/s"))
        since = now.replace(second=0, microsecond=0)
        f.write(account("closes-dxt", stack.sim_url, f"{clock(since)}-{clock(at)}", "1/s"))
    return at, since


def cli(stack, *args: str) -> subprocess.CompletedProcess:
    return smsq(*args, env=stack.env)


@pytest.fixture(scope="module")
def turned(stack, turn):
    """Both campaigns, sent before the turn and followed past it: the opening one through
    `smsq send --wait`, the closing one through send_sms."""
    at, _ = turn
    stack.sim.reset()
    closing = send_sms(
        "closes-dxt", [f"1361{i:07d}" for i in range(100 * CLOSING_CHUNKS)], CONTENT, kind="marketing"
    ).batch_id
    numbers = [f"1370000{i:04d}" for i in range(250)]
    waiting = subprocess.Popen(
        [sys.executable, "-m", "smsq", "send", "--account", "opens-dxt", "--kind", "marketing"]
        + ["--to", ",".join(numbers), "--content", CONTENT, "--wait"],
        env={**os.environ, "PYTHONPATH": str(ROOT), **stack.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert waiting.stdout is not None
    opening = int(waiting.stdout.readline())  # the batch id, printed before the wait
    cut = wait_until(lambda: (s := batch_status(opening)).chunks.get("pending") == 3 and s, 30, 0.1, "the chunks")
    before = cut, cli(stack, "status", str(opening)), chunk_rows(opening)
    assert datetime.now(BEIJING) < at, "the sends took longer than AHEAD: nothing tells before from after"
    out, err = waiting.communicate(timeout=(at - datetime.now(BEIJING)).total_seconds() + 90)
    return {"opening": (opening, numbers, before, waiting.returncode, out, err), "closing": closing}


def chunk_rows(batch_id: int):
    with session_scope(settings().database_url, readonly=True) as session:
        return session.execute(
            select(Chunk.state, Chunk.next_attempt_at, Chunk.attempts, Chunk.queued_at).where(
                Chunk.batch_id == batch_id
            )
        ).all()


def test_a_campaign_sent_before_its_window_waits_stored_and_goes_out_once_when_it_opens(stack, turn, turned):
    at, _ = turn
    batch_id, numbers, (before, status_cli, chunks), code, out, err = turned["opening"]
    # Before the opening: stored, pending, due at the opening, not "scheduled" (no send_at)
    assert before.waiting_for_window_until == naive_utc(at) and not before.scheduled, before
    assert before.chunks == {"pending": 3} and before.recipients == {"queued": 250}, before
    assert {(state, due, attempts) for state, due, attempts, _ in chunks} == {("pending", naive_utc(at), 0)}
    assert status_cli.returncode == 0, status_cli.stderr
    opens = opening_words(naive_utc(at), utcnow())  # "12:34 +08:00" (with the date past midnight)
    assert f"waiting for the send window, opens {opens}" in status_cli.stdout, status_cli.stdout
    assert "waiting:    waiting for the send window" in status_cli.stdout, status_cli.stdout
    # --wait said why it waited, and ended when everything went
    assert code == 0, err
    assert f"waiting: waiting for the send window {clock(at)}-" in err, err
    assert batch_status(batch_id).recipients == {"sent": 250}
    sends = [s for s in stack.sim.sends if s.username == "test" and s.numbers[0].startswith("1370000")]
    assert sorted(n for s in sends for n in s.numbers) == numbers  # every number once
    early = [s.at - at.timestamp() for s in sends if s.at < at.timestamp()]
    assert not early, f"sent before the window opened: {early}"
    assert "final" in out, out


def test_a_campaign_running_at_the_windows_close_pauses_until_the_next_opening(stack, turn, turned):
    at, since = turn
    batch_id = turned["closing"]
    tomorrow = naive_utc(since + timedelta(days=1))

    def paused():
        rows = chunk_rows(batch_id)
        left = [r for r in rows if r.state != "accepted"]
        return left and all(r.state == "pending" and r.next_attempt_at == tomorrow for r in left) and rows

    rows = wait_until(paused, 120, 0.5, "the rest of the campaign to wait for the next opening")
    left = [r for r in rows if r.state == "pending"]
    sent = [r for r in rows if r.state == "accepted"]
    assert sent and left, (len(sent), len(left))  # some went before the close, the rest waits
    assert {r.attempts for r in left} == {0}  # no attempt counted
    assert all(r.queued_at is None for r in left)  # not in the broker: the relay releases them then
    calls = [s for s in stack.sim.sends if s.numbers[0].startswith("1361")]
    assert len(calls) == len(sent)  # no vendor call for a chunk that waits
    late = [s.at - at.timestamp() for s in calls if s.at >= at.timestamp() + 1]
    assert not late, f"sent after the window closed: {late}"
    status = batch_status(batch_id)
    assert status.waiting_for_window_until == tomorrow and not status.final, status
    assert status.recipients.get("queued") == 100 * len(left), status
    assert sum(status.recipients.values()) == 100 * CLOSING_CHUNKS, status
    said = cli(stack, "status", str(batch_id))
    opens = f"{(since + timedelta(days=1)):%Y-%m-%d %H:%M} +08:00"
    assert f"waiting for the send window, opens {opens}" in said.stdout, said.stdout
    cancel_batch(batch_id)  # the next opening is a day away
    wait_final(batch_id)
