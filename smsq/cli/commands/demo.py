"""``smsq demo``: the simulators, a worker and beat, and one real send through them.

Embedded by default (SQLite database, SQLite broker, all under ``demo-run/``);
with ``SMSQ_BROKER_URL``/``SMSQ_DATABASE_URL`` set it runs on those instead.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from smsq.scheduler.app import get_app
from smsq.store.models import AccountBalance, InboundMessage
from smsq.tasks import batch_status, send_sms
from smsq.tasks.schema import ensure_schema
from smsq.worker.config import forget_settings, settings
from smsq.worker.db import session_scope

from .batches import print_status, wait_for
from .common import format_balance
from .processes import require_simulators


def _code_text() -> str:
    """A verification text with a code of its own, as every real one has.

    A rerun against the same database within 30 s would otherwise send the first run's
    text to the same numbers, and the duplicate guard (README: Message kinds) would
    rightly refuse every one of them.
    """
    return f"【某某科技】您的验证码是 {secrets.randbelow(900_000) + 100_000}，5分钟内有效。"


def _say(text: str) -> None:
    print(f"==> {text}", flush=True)


def _numbers(count: int) -> list[str]:
    numbers = [f"1380013{i:04d}" for i in range(count)]
    # What real lists hold: the same number spelled three ways, and junk.
    return numbers + ["+86 138-0013-0000", "008613800130001", "12345", "not-a-number"]


REPORT_WAIT = 100  # seconds: three report polls, 30 s apart, with room to spare

INBOUND = [("13800130007", "收到，谢谢！"), ("13800130042", "TD"), ("13900001111", "请问几点发货？")]


def reports_back(status) -> int:
    """Recipients of the batch whose delivery report has come back (delivered or failed)."""
    return status.recipients.get("delivered", 0) + status.recipients.get("failed", 0)


def _wait_reports(batch_id: int, expected: int, timeout: float):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        status = batch_status(batch_id)
        done = reports_back(status)
        if done != last:
            print(f"    delivery reports: {done}/{expected}", flush=True)
            last = done
        if done >= expected or time.monotonic() > deadline:
            return status
        time.sleep(1)


def _other_vendors(sims: dict, content: str) -> None:
    """One small batch through every other vendor's simulator."""
    for n, (name, (state, _, _)) in enumerate(sims.items()):
        if name == "dxt":
            continue
        # Numbers of its own per vendor: the same text to the same number within 30 s is a
        # duplicate, whichever account sends it (the duplicate guard, README: Message kinds).
        receipt = send_sms(f"demo-{name}", [f"139{n:02d}00000{k}" for k in (1, 2, 3)], content)
        status = wait_for(receipt.batch_id, show=False, timeout=60)
        got = sum(len(s.numbers) for s in state.sends)
        print(
            f"    demo-{name:<8} batch {receipt.batch_id}: chunks {status.chunks}; the {name} simulator "
            f"received {got} numbers",
            flush=True,
        )


def _show_balances() -> None:
    with session_scope(settings().database_url, readonly=True) as session:
        rows = session.execute(select(AccountBalance).order_by(AccountBalance.account)).scalars().all()
        shown = ", ".join(f"{b.account} {format_balance(b.balance)}" for b in rows)
    print(f"    balances polled so far: {shown or 'none yet'} (see `smsq accounts`)", flush=True)


def _show_inbound() -> None:
    with session_scope(settings().database_url, readonly=True) as session:
        rows = session.execute(select(InboundMessage).order_by(InboundMessage.id)).scalars().all()
        print(f"    inbound messages stored: {len(rows)}", flush=True)
        for m in rows:
            print(f"      {m.account}  {m.mobile}  {m.content}", flush=True)


def _spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:  # the child holds its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "smsq", *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


def _clear_scratch(directory: Path, users_own: set[str]) -> None:
    """Remove what the last run left here (its SQLite database and broker, beat's
    schedule, the logs), so every run starts from an empty database. A database
    or broker the user named by URL (``users_own``) is theirs: never touched."""
    patterns = ["celerybeat-schedule*", "worker.log", "beat.log"]
    if "SMSQ_DATABASE_URL" not in users_own:
        patterns.append("smsq.db*")
    if "SMSQ_BROKER_URL" not in users_own:
        patterns.append("broker.db*")
    old = [path for pattern in patterns for path in directory.glob(pattern)]
    for path in old:
        path.unlink()
    if old:
        _say(f"fresh start: the previous demo's files in {directory} were removed (they are scratch)")


def cmd_demo(args) -> int:
    require_simulators()
    return run_demo(Path(args.dir), count=args.count, keep=args.keep_running, any_port=args.any_port)


def run_demo(directory: Path, *, count: int = 250, keep: bool = False, any_port: bool = False) -> int:
    from smsq.simulator.catalog import DEMO_PASSWORD, build, config  # here: the optional extra smsq[sim]

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    users_own = {name for name in ("SMSQ_DATABASE_URL", "SMSQ_BROKER_URL") if os.environ.get(name)}
    env = _demo_env(directory, DEMO_PASSWORD)
    logging.getLogger("smsq.producer").setLevel(logging.WARNING)  # the demo tells its own story
    sims = build(any_port=any_port)
    running: list = []
    procs: list[subprocess.Popen] = []
    try:
        ports = _start_simulators(sims, running)
        if ports is None:
            return 1
        # Only now: a demo still running holds the ports, and its files are not scratch yet.
        _clear_scratch(directory, users_own)
        # One account per simulator; inbound and reports polled as often as vendors allow.
        (directory / "smsq.toml").write_text(
            "# Written by `smsq demo`.\n" + config(extra="poll_interval = 30\n", ports=ports), encoding="utf-8"
        )
        dxt_state = sims["dxt"][0]
        for mobile, text in INBOUND:  # replies waiting at the vendor
            dxt_state.add_inbound(mobile, text)
        _start_processes(directory, env, procs)
        code = _send_and_follow(sims, count, directory, keep)
        while code == 0 and keep and all(p.poll() is None for p in procs):
            time.sleep(1)
        return code
    except KeyboardInterrupt:
        return 130
    finally:
        _stop(procs)
        for sim in running:
            sim.stop()


def _demo_env(directory: Path, password: str) -> dict:
    """The demo's settings, in this process (it sends the batch) and for the processes it starts."""
    env = dict(os.environ)
    env["SMSQ_CONFIG"] = str(directory / "smsq.toml")
    env["SMSQ_DEMO_PASSWORD"] = password
    env.setdefault("SMSQ_DATABASE_URL", f"sqlite:///{directory / 'smsq.db'}")
    env.setdefault("SMSQ_BROKER_URL", f"sqla+sqlite:///{directory / 'broker.db'}")
    env.setdefault("SMSQ_RELAY_INTERVAL", "5")
    os.environ.update(env)  # this process sends the batch with the same settings
    return env


def _start_simulators(sims: dict, running: list) -> dict[str, int] | None:
    """Each simulator serving on its port (added to ``running``); None when a port is taken."""
    from smsq.simulator.server import serve  # here: the optional extra smsq[sim]

    ports = {}
    for name, (_, app, port) in sims.items():
        try:
            sim = serve(app, port=port)
        except OSError as exc:
            _say(
                f"port {port} for the {name} simulator is taken ({exc.strerror}): is `smsq simulate` "
                f"or another demo running? Stop it and try again."
            )
            return None
        running.append(sim)
        ports[name] = sim.port
        _say(f"simulator {name} on {sim.url}")
    return ports


def _start_processes(directory: Path, env: dict, procs: list[subprocess.Popen]) -> None:
    """A worker and beat on the config just written (added to ``procs``)."""
    forget_settings()
    conf = settings()
    mode = "embedded (SQLite + SQLite broker)" if conf.embedded else f"broker {conf.broker_url.split('@')[-1]}"
    _say(f"mode: {mode}; files in {directory}")
    ensure_schema(conf)  # before two processes race to create the SQLite tables
    _declare_queues()
    procs.append(_spawn(["worker", "--loglevel", "info"], env, directory / "worker.log"))
    procs.append(_spawn(["beat", "--loglevel", "info"], env, directory / "beat.log"))
    _say(f"worker and beat started (logs: {directory / 'worker.log'}, {directory / 'beat.log'})")


def _declare_queues() -> None:
    """smsq's queues, made in the broker by this one process. On a new SQLite broker the
    worker and beat, started at once, would both create kombu's tables and a queue's row,
    and kombu lets the loser's error through (that worker then never consumes)."""
    app = get_app()
    with app.connection_for_write() as connection:
        for queue in app.conf.task_queues:
            queue.bind(connection.default_channel).declare()


def _send_and_follow(sims: dict, count: int, directory: Path, keep: bool) -> int:
    """The sample batch through the dxt simulator, one through every other vendor's, then
    the reports and inbound messages: 0, or 1 when the demo fell short."""
    numbers, content = _numbers(count), _code_text()
    _say(f"send_sms(account='demo-dxt', to=<{len(numbers)} numbers>, content={content!r})")
    receipt = send_sms("demo-dxt", numbers, content)
    print(
        f"    batch {receipt.batch_id}: {receipt.accepted} accepted, lane {receipt.lane}, "
        f"{receipt.segments} segment(s) each",
        flush=True,
    )
    for number, reason in receipt.rejected:
        print(f"    rejected {number!r}: {reason}", flush=True)
    status = wait_for(receipt.batch_id, timeout=120)
    print_status(status, as_json=False)
    _show_dxt_calls(sims["dxt"][0].sends)
    if not status.final:
        _say("the batch did not settle in 120 s; see the worker log")
        return 1
    _other_vendors(sims, content)
    _say("waiting for delivery reports and inbound messages (the vendor allows one poll per 30 s)")
    status = _wait_reports(receipt.batch_id, receipt.accepted, timeout=REPORT_WAIT)
    print_status(status, as_json=False)
    _show_inbound()
    _show_balances()
    back = reports_back(status)
    if back < receipt.accepted:
        _say(
            f"the batch went out and settled, but only {back} of its {receipt.accepted} delivery "
            f"reports came back in {REPORT_WAIT} s; see {directory / 'worker.log'}"
        )
        return 1
    _say(f"done: the batch went out, settled, and all {back} of its delivery reports came back")
    if keep:
        _say("still running (Ctrl-C to stop); try: smsq status " + str(receipt.batch_id))
    return 0


def _show_dxt_calls(sends: list) -> None:
    got = sum(len(s.numbers) for s in sends)
    print(
        f"    the dxt simulator received {len(sends)} calls, {got} numbers "
        f"(at most {max((len(s.numbers) for s in sends), default=0)} per call), "
        f"content {sends[0].content!r}"
        if sends
        else "    the dxt simulator received nothing",
        flush=True,
    )
