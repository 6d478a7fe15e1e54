#!/usr/bin/env python
"""Peak memory of ``send_sms`` for a very large list: one text, or personal texts.

Runs each kind in a fresh process of its own (this script again, with ``--kind``), so
that one kind's peak is not the other's: ``send_sms(account, <generator of --count
numbers>, content)``, or ``send_sms(account, messages=<generator of (mobile, text)
pairs>)`` with ``--texts`` distinct texts. The numbers are send_million.py's (every
1000th invalid, every 500th a repeat in another spelling), generated, never held.
Reports the process's peak RSS (``ru_maxrss``: the interpreter, the imports, the
in-process dxt simulator and the send) against ``--target-mb`` (300), the wall time
and the numbers accepted.

Run from the repository root:
  .venv/bin/python bench/memory.py --count 10000000 --mode embedded
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import send_million as bench  # noqa: E402  (the scratch environment and the numbers)


def messages(count: int, texts: int) -> Iterator[tuple[str, str]]:
    """(mobile, text) pairs of send_million's numbers, the texts taken in turn."""
    for i, mobile in enumerate(bench.numbers(count)):
        yield mobile, f"【某某科技】尊敬的客户{i % texts:04d}号，您的订单已发货。"


def run_kind(kind: str, mode: str, count: int, texts: int) -> dict:
    """One send of ``kind`` in this process, in a scratch environment; its figures."""
    from smsq.simulator.dxt import DxtState, create_app
    from smsq.simulator.server import serve

    tmp = Path(tempfile.mkdtemp(prefix=f"smsq-memory-{mode}-"))
    running = serve(create_app(DxtState({bench.SIM_USER: bench.PASSWORD}, balance=2 * count)), port=0)
    try:
        bench.setup_env(mode, tmp, bench.write_config(tmp / "smsq.toml", running.url, "1000/s"))
        bench.prepare_schema_and_connections()
        from smsq.tasks import send_sms

        before = bench.max_rss_mb()
        start = time.perf_counter()
        if kind == "personal":
            receipt = send_sms(bench.ACCOUNT, messages=messages(count, texts))
        else:
            receipt = send_sms(bench.ACCOUNT, bench.numbers(count), bench.CONTENT)
        wall = time.perf_counter() - start
        return {
            "kind": kind,
            "mode": mode,
            "count": count,
            "texts": texts if kind == "personal" else 1,
            "accepted": receipt.accepted,
            "expected_accepted": bench.expected_counts(count)[0],
            "wall_s": round(wall, 1),
            "rss_peak_before_mb": round(before, 1),
            "rss_peak_mb": round(bench.max_rss_mb(), 1),
        }
    finally:
        running.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if mode == "distributed":
            bench.drop_postgres(bench.PG_DATABASE)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=10_000_000, help="entries in the list (default 10,000,000)")
    p.add_argument("--mode", choices=("embedded", "distributed"), default="embedded")
    p.add_argument("--kind", choices=("text", "personal", "both"), default="both")
    p.add_argument("--texts", type=int, default=1000, help="distinct texts of the personal send (default 1000)")
    p.add_argument("--target-mb", type=float, default=300.0, help="peak RSS aimed at (default 300)")
    args = p.parse_args(argv)
    if args.kind != "both":
        print(json.dumps(run_kind(args.kind, args.mode, args.count, args.texts)))
        return 0
    ok = True
    for kind in ("text", "personal"):
        command = [sys.executable, __file__, "--kind", kind, "--mode", args.mode]
        command += ["--count", str(args.count), "--texts", str(args.texts)]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        within = result["rss_peak_mb"] <= args.target_mb and result["accepted"] == result["expected_accepted"]
        ok = ok and within
        print(json.dumps({**result, "target_mb": args.target_mb, "ok": within}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
