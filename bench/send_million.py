#!/usr/bin/env python
"""Benchmark of the send path: ``send_sms`` of a very large batch, and optionally a worker draining it.

What it does (see bench/README.md):

1. Builds a scratch environment: a temp dir, a config with one dxt account that
   points at a dxt simulator started in this process, and for the distributed
   mode a fresh PostgreSQL database and a flushed Redis db 10.
2. Measures the reference: a raw bulk write of the same entries (the same
   generator) into a one-column table -- PostgreSQL ``COPY``, or SQLite
   ``executemany`` in one transaction -- right before and right after the call
   below; the faster of the two is the reference, so the ratio is never flattered
   by a noisy neighbour slowing the reference down.
3. Calls ``send_sms(account, <generator of --count numbers>, content)`` -- a
   generator, never a list -- with every 1000th entry invalid and every 500th a
   repeat of an earlier number in another spelling. It measures the wall time
   (split into staging / blocked-number reasons / rejections / publishing by
   timing wrappers installed on ``smsq.tasks.producer``'s helpers, in this
   process only), its ratio to the reference, and the peak RSS of the process
   before and after (``ru_maxrss``).
4. With ``--with-worker``: starts ``smsq worker --concurrency 2``
   (prefork in distributed mode, threads in embedded mode), waits until the
   worker has cut every chunk (the split job) and until
   ``batch_status(...).final``, and checks that every valid unique number reached
   the simulator exactly once and that no request carried more than 100 numbers.
5. Unless ``--no-tracemalloc``: calls send_sms a second time, on the same list,
   with tracemalloc on, for the peak of Python allocations during the call.
   tracemalloc slows the Python parts of the call two to four times, so the
   wall times above come from the first call, which runs without it. (The
   second batch is left pending: a worker has been stopped by then.)
6. Prints a table and writes ``bench/results/<mode>-<count>.json``.

Run from the repository root:  .venv/bin/python bench/send_million.py --help
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import logging
import math
import os
import platform
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
ACCOUNT = "bench-dxt"
SIM_USER = "bench"
PASSWORD = "Bench-pw-7781"
PASSWORD_ENV = "SMSQ_BENCH_DXT_PASSWORD"
CONTENT = "【某某科技】您的验证码是 345678，请在5分钟内输入。"
PG_ADMIN_URL = os.environ.get("SMSQ_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PG_DATABASE = os.environ.get("SMSQ_BENCH_PG_DB", "smsq_bench")
REDIS_URL = os.environ.get("SMSQ_BENCH_REDIS", "redis://127.0.0.1:6379/10")
VENDOR_MAX_NUMBERS = 100  # dxt: at most 100 numbers per send request


# -- the numbers ---------------------------------------------------------------
# Entry i of the list (0-based):
#   i % 1000 == 999             invalid (two kinds, alternating)
#   i % 500 == 499 (otherwise)  a repeat of entry i - 250, spelled "+86 138-…"
#   i % 10 == 3                 a valid new number spelled "+86 1xx-xxxx-xxxx"
#   i % 10 == 7                 a valid new number spelled "0086…"
#   otherwise                   a valid new number, 11 plain digits
# The canonical number of entry i is 13 followed by i in 9 digits, so entries
# are unique unless they are repeats (count must stay below 10**9).


def canonical(i: int) -> str:
    return f"13{i:09d}"


def is_invalid(i: int) -> bool:
    return i % 1000 == 999


def is_repeat(i: int) -> bool:
    return i % 500 == 499 and not is_invalid(i)


def numbers(count: int) -> Iterator[str]:
    """The input list as a generator: nothing of it is ever held in memory."""
    for i in range(count):
        if is_invalid(i):
            yield f"2{i:010d}" if i % 2000 == 999 else f"n/a-{i}"
        elif is_repeat(i):
            n = canonical(i - 250)  # i - 250 is a plain new entry: % 500 == 249
            yield f"+86 {n[:3]}-{n[3:7]}-{n[7:]}"
        elif i % 10 == 3:
            n = canonical(i)
            yield f"+86 {n[:3]}-{n[3:7]}-{n[7:]}"
        elif i % 10 == 7:
            yield "0086" + canonical(i)
        else:
            yield canonical(i)


def expected_counts(count: int) -> tuple[int, int, int]:
    """(unique valid numbers, invalid entries, repeats) of ``numbers(count)``."""
    invalid = sum(1 for i in range(999, count, 1000))
    repeats = sum(1 for i in range(499, count, 1000))  # i % 500 == 499 and i % 1000 != 999
    return count - invalid - repeats, invalid, repeats


def expected_numbers(count: int) -> set[str]:
    return {canonical(i) for i in range(count) if not is_invalid(i) and not is_repeat(i)}


# -- process measurements --------------------------------------------------------


def max_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def current_rss_mb() -> float | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class PhaseTimer:
    """Wraps helpers that smsq.tasks.producer calls by module-level name, to time send_sms' phases.

    send_sms looks its helpers up in the module's globals at call time, so
    replacing them there (in this process only) is enough; nothing is edited.
    """

    PHASES = {
        "stage_chunks": "normalise, de-duplicate, group, bulk write of staged chunks",
        "blocked_reasons": "reasons of the blocked numbers found (SQL)",
        "write_rejected": "store rejected entries",
        "cut": "cut chunks inline (small batches only)",
        "_publish": "publish after commit (split job / small batch's chunks)",
    }
    PUBLISH = "_publish"

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.returned: dict[str, object] = {}
        self._saved: dict[str, object] = {}

    def install(self) -> None:
        import smsq.tasks.producer as producer

        for name in self.PHASES:
            original = getattr(producer, name)
            self._saved[name] = original
            setattr(producer, name, self._wrap(name, original))

    def uninstall(self) -> None:
        import smsq.tasks.producer as producer

        for name, original in self._saved.items():
            setattr(producer, name, original)
        self._saved.clear()

    def _wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
                self.returned[name] = result
                return result
            finally:
                self.seconds[name] += time.perf_counter() - start

        timed.__wrapped__ = fn
        return timed


# -- the scratch environment ---------------------------------------------------


def fresh_postgres(name: str) -> str:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_postgres(name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def write_config(path: Path, sim_url: str, rate_limit: str) -> Path:
    path.write_text(
        f"""\
[accounts.{ACCOUNT}]
provider = "dxt"
base_url = "{sim_url}"
username = "{SIM_USER}"
password_env = "{PASSWORD_ENV}"
charset = "gbk"
signature = "【某某科技】"
rate_limit = "{rate_limit}"
timeout = 10
""",
        encoding="utf-8",
    )
    return path


def setup_env(mode: str, tmp: Path, config: Path) -> dict[str, str]:
    env = {"SMSQ_CONFIG": str(config), PASSWORD_ENV: PASSWORD}
    if mode == "embedded":
        env["SMSQ_DATABASE_URL"] = f"sqlite:///{tmp / 'smsq.db'}"
        env["SMSQ_BROKER_URL"] = f"sqla+sqlite:///{tmp / 'broker.db'}"
    else:
        import redis

        env["SMSQ_DATABASE_URL"] = fresh_postgres(PG_DATABASE)
        redis.Redis.from_url(REDIS_URL).flushdb()
        env["SMSQ_BROKER_URL"] = REDIS_URL
        env["SMSQ_REDIS_URL"] = REDIS_URL
    os.environ.update(env)
    return env


def prepare_schema_and_connections() -> None:
    """Migrate, open the database pool and the broker connection before the clock starts."""
    from sqlalchemy import text

    from smsq.tasks.schema import ensure_schema
    from smsq.worker.app import get_app
    from smsq.worker.config import settings
    from smsq.worker.db import engine_for, upgrade

    conf = settings()
    upgrade(conf.database_url)
    ensure_schema(conf)
    with engine_for(conf.database_url).connect() as conn:
        conn.execute(text("SELECT 1"))
    app = get_app()
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)


def database_size_mb() -> float | None:
    from sqlalchemy import text

    from smsq.worker.config import settings
    from smsq.worker.db import engine_for

    url = settings().database_url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        files = [path, path.with_name(path.name + "-wal")]
        return sum(f.stat().st_size for f in files if f.exists()) / 2**20
    with engine_for(url).connect() as conn:
        return conn.execute(text("SELECT pg_database_size(current_database())")).scalar() / 2**20


def broker_backlog() -> int | None:
    """Messages waiting in the Redis queues (distributed mode only)."""
    from smsq.worker.config import settings

    conf = settings()
    if conf.embedded:
        return None
    import redis

    r = redis.Redis.from_url(conf.broker_url)
    return sum(r.llen(q) for q in ("smsq.priority", "smsq.bulk", "smsq.poll"))


# -- the reference: a raw bulk write of the same entries ----------------------------

REFERENCE_TABLE = "bench_copy_reference"


def reference_write(count: int) -> float:
    """Seconds to write ``numbers(count)``, as given, into a fresh one-column table by the
    database's bulk path and commit: PostgreSQL COPY (text blocks of 5,000 lines), SQLite
    one prepared executemany in one transaction. The same generator feeds send_sms."""
    from smsq.worker.config import settings

    url = settings().database_url
    if url.startswith("sqlite:///"):
        import sqlite3

        path = Path(url.removeprefix("sqlite:///")).with_name("reference.db")
        path.unlink(missing_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"CREATE TABLE {REFERENCE_TABLE} (mobile TEXT)")
        start = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO {REFERENCE_TABLE} (mobile) VALUES (?)", ((n,) for n in numbers(count)))
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
        path.unlink(missing_ok=True)
        return elapsed
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {REFERENCE_TABLE}")
        conn.execute(f"CREATE TABLE {REFERENCE_TABLE} (mobile text)")
        conn.commit()
        start = time.perf_counter()
        with conn.cursor() as cursor, cursor.copy(f"COPY {REFERENCE_TABLE} (mobile) FROM STDIN") as copy:
            # The entries hold no tab, newline or backslash: nothing to escape (no work
            # the reference would be charged for and send_sms not).
            copy_lines(copy, numbers(count))
        conn.commit()
        elapsed = time.perf_counter() - start
        conn.execute(f"DROP TABLE {REFERENCE_TABLE}")
        conn.commit()
    return elapsed


def copy_lines(copy, lines: Iterator[str], block: int = 5000) -> None:
    """Lines of COPY's text format written a block of ``block`` lines at a time."""
    while chunk := list(itertools.islice(lines, block)):
        copy.write("\n".join(chunk) + "\n")


# -- the worker --------------------------------------------------------------------


def start_worker(env: dict[str, str], tmp: Path, concurrency: int) -> tuple[subprocess.Popen, Path]:
    log_path = tmp / "worker.log"
    child_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    with open(log_path, "ab") as out:  # the worker holds its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "smsq", "worker", "--concurrency", str(concurrency), "--loglevel", "info"],
            cwd=tmp,
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, log_path


def wait_ready(proc: subprocess.Popen, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while "ready." not in log_path.read_text(errors="replace"):
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker not ready in {timeout} s:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)


def stop_worker(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()  # warm shutdown; prefork children go with the main process
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the run -----------------------------------------------------------------------


def run_send(count: int, *, use_tracemalloc: bool, profile: bool) -> dict:
    from smsq.tasks import send_sms

    timer = PhaseTimer()
    timer.install()
    profiler = cProfile.Profile() if profile else None
    rss_max_before = max_rss_mb()
    rss_before = current_rss_mb()
    if use_tracemalloc:
        tracemalloc.start()
    start_wall = time.time()
    start = time.perf_counter()
    try:
        if profiler:
            receipt = profiler.runcall(send_sms, ACCOUNT, numbers(count), CONTENT)
        else:
            receipt = send_sms(ACCOUNT, numbers(count), CONTENT)
    finally:
        elapsed = time.perf_counter() - start
        traced_peak = tracemalloc.get_traced_memory()[1] if use_tracemalloc else None
        if use_tracemalloc:
            tracemalloc.stop()
        timer.uninstall()
    rss_max_after = max_rss_mb()
    phases = {name: round(timer.seconds.get(name, 0.0), 3) for name in PhaseTimer.PHASES}
    publish = timer.seconds.get(PhaseTimer.PUBLISH, 0.0)
    result = {
        "batch_id": receipt.batch_id,
        "accepted": receipt.accepted,
        "rejected": len(receipt.rejected),
        "lane": receipt.lane,
        "queued": receipt.queued,
        "started_at": start_wall,
        "wall_s": round(elapsed, 3),
        "intake_s": round(elapsed - publish, 3),  # everything up to and including the commit
        "publish_s": round(publish, 3),
        "phases_s": phases,
        "other_s": round(elapsed - sum(timer.seconds.values()), 3),  # batch row, commit, schema check
        "numbers_per_s": round(count / elapsed, 1),
        "rss_peak_before_mb": round(rss_max_before, 1),
        "rss_peak_after_mb": round(rss_max_after, 1),
        "rss_peak_growth_mb": round(rss_max_after - rss_max_before, 1),
        "rss_current_before_mb": round(rss_before, 1) if rss_before is not None else None,
        "rss_current_after_mb": round(current_rss_mb() or 0, 1) if rss_before is not None else None,
        "tracemalloc_peak_mb": round(traced_peak / 2**20, 2) if traced_peak is not None else None,
        "profiled": profile,
    }
    if profiler:
        result["_profiler"] = profiler
    return result


def check_intake(count: int, send: dict) -> dict:
    from smsq.tasks import batch_status

    unique, invalid, repeats = expected_counts(count)
    status = batch_status(send["batch_id"])
    expected_chunks = math.ceil(unique / VENDOR_MAX_NUMBERS)
    checks = {
        "expected_unique": unique,
        "expected_invalid": invalid,
        "expected_repeats": repeats,
        "accepted_ok": send["accepted"] == unique,
        "rejected_ok": send["rejected"] == invalid,
        # Chunks made (by a worker, if one runs already) plus chunks still to cut.
        "chunks": sum(status.chunks.values()) + status.to_split,
        "chunks_ok": sum(status.chunks.values()) + status.to_split == expected_chunks,
        "to_split": status.to_split,
        "published_ok": send["queued"],
        "recipient_states": status.recipients,
    }
    backlog = broker_backlog()
    if backlog is not None:
        checks["broker_backlog"] = backlog
    return checks


def run_worker(
    env: dict,
    tmp: Path,
    count: int,
    send: dict,
    proc: subprocess.Popen | None,
    log_path: Path | None,
    concurrency: int,
    timeout: float,
    sim,
) -> dict:
    from smsq.tasks import batch_status

    spawned = time.time()
    startup = None
    if proc is None:
        proc, log_path = start_worker(env, tmp, concurrency)
        wait_ready(proc, log_path)
        startup = time.time() - spawned
    ready = time.time()
    deadline = time.monotonic() + timeout
    status = batch_status(send["batch_id"])
    last_print = 0.0
    split_at = time.time() if not status.to_split else None
    try:
        while not status.final:
            if split_at is None and not status.to_split:
                split_at = time.time()
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"batch not final after {timeout} s: {status.chunks}")
            if time.monotonic() - last_print > 10:
                print(f"  ... chunks {dict(sorted(status.chunks.items()))}", file=sys.stderr, flush=True)
                last_print = time.monotonic()
            time.sleep(0.2 if split_at is None else 0.5)
            status = batch_status(send["batch_id"])
        final_at = time.time()
        split_at = split_at or final_at
    finally:
        stop_worker(proc)

    with sim.lock:
        sends = list(sim.sends)
        decode_errors = len(sim.decode_errors)
        calls = len(sim.calls)
    received = Counter(n for s in sends for n in s.numbers)
    expected = expected_numbers(count)
    missing = len(expected - received.keys())
    unexpected = len(received.keys() - expected)
    duplicates = sum(1 for n in received.values() if n > 1)
    largest = max((len(s.numbers) for s in sends), default=0)
    first = min((s.at for s in sends), default=None)
    last = max((s.at for s in sends), default=None)
    window = (last - first) if first is not None and last is not None else None
    delivered = sum(received.values())
    log_text = log_path.read_text(errors="replace")
    return {
        "worker_pool": "threads" if env["SMSQ_BROKER_URL"].startswith("sqla+") else "prefork",
        "concurrency": concurrency,
        "worker_startup_s": round(startup, 3) if startup is not None else None,  # None: --worker-first
        "split_done_after_worker_ready_s": round(split_at - ready, 3),
        "drain_from_worker_ready_s": round(final_at - ready, 3),
        "final_after_send_sms_start_s": round(final_at - send["started_at"], 3),
        "sim_first_to_last_send_s": round(window, 3) if window is not None else None,
        "numbers_per_s": round(delivered / (final_at - max(ready, send["started_at"])), 1),
        "numbers_per_s_sim_window": round(delivered / window, 1) if window else None,
        "requests": len(sends),
        "vendor_calls": calls,
        "numbers_received": delivered,
        "unique_received": len(received),
        "missing": missing,
        "unexpected": unexpected,
        "duplicates": duplicates,
        "max_numbers_per_request": largest,
        "decode_errors": decode_errors,
        "chunk_states": status.chunks,
        "recipient_states": status.recipients,
        "worker_log_warnings": sum(1 for line in log_text.splitlines() if "WARNING" in line),
        "worker_log_errors": sum(1 for line in log_text.splitlines() if "ERROR" in line or "CRITICAL" in line),
        "ok": missing == 0
        and unexpected == 0
        and duplicates == 0
        and largest <= VENDOR_MAX_NUMBERS
        and decode_errors == 0
        and set(status.chunks) == {"accepted"},
    }


def profile_summary(profiler: cProfile.Profile, top: int) -> tuple[str, list[dict]]:
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.sort_stats("cumulative").print_stats(top)
    rows = []
    for func in stats.fcn_list[:top]:
        cc, nc, tt, ct, _ = stats.stats[func]
        filename, line, name = func
        rows.append(
            {
                "function": f"{Path(filename).name}:{line}({name})" if line else name,
                "ncalls": nc,
                "tottime_s": round(tt, 3),
                "cumtime_s": round(ct, 3),
            }
        )
    return buf.getvalue(), rows


# -- output ---------------------------------------------------------------------------


def print_table(result: dict) -> None:
    s = result["send_sms"]
    rows = [
        ("mode", result["mode"]),
        ("count (entries given)", f"{result['count']:,}"),
        ("accepted / rejected", f"{s['accepted']:,} / {s['rejected']:,}"),
        (
            "reference: raw bulk write",
            f"{result['reference_s']:.2f} s  (before {result['reference_runs_s'][0]:.2f}"
            f", after {result['reference_runs_s'][1]:.2f})",
        ),
        ("send_sms wall time", f"{s['wall_s']:.2f} s  ({s['numbers_per_s']:,.0f} entries/s)"),
        ("send_sms / reference", f"{result['ratio_to_reference']:.2f}x"),
        ("  intake + commit", f"{s['intake_s']:.2f} s"),
    ]
    labels = PhaseTimer.PHASES
    for name, secs in s["phases_s"].items():
        if name != PhaseTimer.PUBLISH:
            rows.append((f"    {labels[name]}", f"{secs:.2f} s"))
    rows += [
        ("    other (batch row, commit)", f"{s['other_s']:.2f} s"),
        ("  publishing", f"{s['publish_s']:.2f} s  (" + ("taken" if s["queued"] else "NOT taken") + " by the broker)"),
        ("peak RSS before / after", f"{s['rss_peak_before_mb']:.1f} / {s['rss_peak_after_mb']:.1f} MB"),
        ("peak RSS growth", f"{s['rss_peak_growth_mb']:.1f} MB"),
        (
            "tracemalloc peak (second call)",
            "not measured"
            if s["tracemalloc_peak_mb"] is None
            else f"{s['tracemalloc_peak_mb']:.2f} MB  (that call: {result['send_sms_traced']['wall_s']:.2f} s)",
        ),
    ]
    c = result["checks"]
    rows.append(
        (
            "intake checks",
            "ok" if c["accepted_ok"] and c["rejected_ok"] and c["chunks_ok"] and c["published_ok"] else f"FAILED {c}",
        )
    )
    if result.get("database_size_mb") is not None:
        rows.append(("database size after send_sms", f"{result['database_size_mb']:.1f} MB"))
    w = result.get("worker")
    if w:
        rows += [
            ("worker", f"{w['worker_pool']}, concurrency {w['concurrency']}"),
            ("  worker start-up", f"{w['worker_startup_s']:.2f} s" if w["worker_startup_s"] is not None else "-"),
            ("  every chunk cut after worker ready", f"{w['split_done_after_worker_ready_s']:.2f} s"),
            ("  final after worker ready", f"{w['drain_from_worker_ready_s']:.2f} s"),
            ("  final after send_sms start", f"{w['final_after_send_sms_start_s']:.2f} s"),
            (
                "  numbers/s to the simulator",
                f"{w['numbers_per_s']:,.0f}  (first-to-last send: {w['numbers_per_s_sim_window'] or 0:,.0f})",
            ),
            ("  requests / max numbers each", f"{w['requests']:,} / {w['max_numbers_per_request']}"),
            ("  missing / unexpected / twice", f"{w['missing']} / {w['unexpected']} / {w['duplicates']}"),
            ("  delivery check", "ok" if w["ok"] else "FAILED"),
        ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Benchmark send_sms with a very large generator of numbers, and optionally a worker "
        "draining the batch to the dxt simulator. Writes bench/results/<mode>-<count>.json."
    )
    p.add_argument("--count", type=int, default=1_000_000, help="entries in the list (default 1,000,000)")
    p.add_argument(
        "--mode",
        choices=("embedded", "distributed"),
        default="distributed",
        help="embedded: SQLite + SQLite broker; distributed: PostgreSQL + Redis db 10 (default)",
    )
    p.add_argument(
        "--with-worker",
        action="store_true",
        help="start a worker, wait until the batch is final and check what the simulator received",
    )
    p.add_argument(
        "--worker-first",
        action="store_true",
        help="start the worker before send_sms (default: after, so the send_sms numbers are not shared with a worker)",
    )
    p.add_argument("--concurrency", type=int, default=2, help="worker processes/threads (default 2)")
    p.add_argument(
        "--rate-limit",
        default="1000/s",
        help="the account's rate limit (default 1000/s, so that the limiter is not what is measured)",
    )
    p.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the batch to be final")
    p.add_argument(
        "--no-tracemalloc",
        action="store_true",
        help="skip the second send_sms call that runs under tracemalloc (the timed first call "
        "never does: tracemalloc slows its Python parts two to four times)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="run send_sms under cProfile; print the top functions by cumulative time and write "
        "bench/results/<mode>-<count>-profile.{json,prof} (or next to --output)",
    )
    p.add_argument("--top", type=int, default=10, help="functions shown with --profile (default 10)")
    p.add_argument("--output", type=Path, help="result file (default bench/results/<mode>-<count>.json)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir and the scratch database")
    args = p.parse_args(argv)
    if not 0 < args.count < 10**9:
        p.error("--count must be between 1 and 999,999,999")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from smsq.simulator.dxt import DxtState, create_app
    from smsq.simulator.server import serve

    tmp = Path(tempfile.mkdtemp(prefix=f"smsq-bench-{args.mode}-"))
    sim = DxtState({SIM_USER: PASSWORD}, balance=2 * args.count + 1000)
    running = serve(create_app(sim), port=0)
    worker = worker_log = None
    result: dict = {}
    try:
        config = write_config(tmp / "smsq.toml", running.url, args.rate_limit)
        env = setup_env(args.mode, tmp, config)
        prepare_schema_and_connections()
        if args.with_worker and args.worker_first:
            worker, worker_log = start_worker(env, tmp, args.concurrency)
            wait_ready(worker, worker_log)

        out = args.output or RESULTS / (f"{args.mode}-{args.count}" + ("-profile" if args.profile else "") + ".json")
        print(f"reference: raw bulk write of {args.count:,} entries ...", file=sys.stderr, flush=True)
        reference_before = reference_write(args.count)
        print(f"send_sms of {args.count:,} entries, {args.mode} mode ...", file=sys.stderr, flush=True)
        send = run_send(args.count, use_tracemalloc=False, profile=args.profile)
        reference_after = reference_write(args.count)
        reference = min(reference_before, reference_after)
        profiler = send.pop("_profiler", None)
        result = {
            "mode": args.mode,
            "count": args.count,
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "options": {
                "rate_limit": args.rate_limit,
                "tracemalloc_pass": not args.no_tracemalloc,
                "with_worker": args.with_worker,
                "worker_first": args.worker_first,
            },
            "reference_s": round(reference, 3),
            "reference_runs_s": [round(reference_before, 3), round(reference_after, 3)],
            "ratio_to_reference": round(send["wall_s"] / reference, 2),
            "send_sms": send,
        }
        result["checks"] = check_intake(args.count, send)
        result["database_size_mb"] = round(database_size_mb() or 0, 1)
        if profiler is not None:
            text, rows = profile_summary(profiler, args.top)
            print(text)
            result["profile_top_cumulative"] = rows
            out.parent.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(str(out.with_suffix(".prof")))
        if args.with_worker:
            print("waiting for the worker to make the batch final ...", file=sys.stderr, flush=True)
            result["worker"] = run_worker(
                env, tmp, args.count, send, worker, worker_log, args.concurrency, args.timeout, sim
            )
            worker = None  # stopped by run_worker
        if not args.no_tracemalloc and not args.profile:
            print(f"send_sms of {args.count:,} entries again, under tracemalloc ...", file=sys.stderr, flush=True)
            traced = run_send(args.count, use_tracemalloc=True, profile=False)
            send["tracemalloc_peak_mb"] = traced["tracemalloc_peak_mb"]
            result["send_sms_traced"] = {
                k: traced[k]
                for k in (
                    "batch_id",
                    "accepted",
                    "rejected",
                    "wall_s",
                    "tracemalloc_peak_mb",
                    "rss_peak_before_mb",
                    "rss_peak_after_mb",
                    "rss_peak_growth_mb",
                )
            }
        print_table(result)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"results written to {out}", file=sys.stderr)
    finally:
        stop_worker(worker)
        running.stop()
        from smsq.worker.db import _engines

        for engine in list(_engines.values()):
            engine.dispose()
        if args.keep:
            print(f"kept {tmp}" + ("" if args.mode == "embedded" else f" and database {PG_DATABASE}"), file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            if args.mode == "distributed" and "SMSQ_DATABASE_URL" in os.environ:
                drop_postgres(PG_DATABASE)
    ok = result.get("checks", {}).get("accepted_ok") and result.get("checks", {}).get("chunks_ok")
    if "worker" in result:
        ok = ok and result["worker"]["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
