#!/usr/bin/env python
"""Benchmark of personal texts: the intake of a send whose rows each fill a template, and
what a personal text costs in the database.

What it does (see bench/README.md):

1. Builds a scratch environment as send_million.py does (distributed: a fresh PostgreSQL
   database and a flushed Redis db; no worker, no vendor is called).
2. The reference: a raw ``COPY`` of the same rows, as given (number and the values of the
   template's variables, tab-separated), into a fresh table, right before and right after
   the call; the faster of the two counts.
3. ``send_sms(account, template=..., rows=<generator>)`` of ``--count`` rows (default
   100,000), every row's text its own (an order number each): its wall time, and its
   ratio to the reference (target: at most 5x).
4. Storage: the batch cut into chunk and recipient rows (the split job, run here), then
   the bytes the ``chunks`` and ``recipients`` tables grew by, per number, for: every text
   its own; 100 distinct texts; one text to as many numbers (``to=``, ``content=``).
5. Prints a table and writes ``bench/results/personal-<count>.json``.

Run from the repository root:  .venv/bin/python bench/personal.py --help
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("SMSQ_BENCH_PG_DB", "smsq_bench_personal")  # read by send_million at import

import send_million as base  # noqa: E402  (the scratch environment and the machine's description)

TEMPLATE = "【某某商城】{name}您好，您的订单{order}已发货，请留意查收"
NAMES = ["张三", "李四", "王五", "赵六", "孙七", "周八", "吴九", "郑十"]


def rows(count: int, distinct: int | None) -> Iterator[dict]:
    """Row i: number 13 followed by i in 9 digits, a name, an order number; ``distinct``
    texts in all (None: every row its own)."""
    for i in range(count):
        order = 880000 + (i if distinct is None else i % distinct)
        name = NAMES[(i if distinct is None else i % distinct) % len(NAMES)]
        yield {"mobile": base.canonical(i), "name": name, "order": order}


def reference_copy(count: int) -> float:
    """Seconds to COPY the rows as given (three text columns) into a fresh table and commit."""
    import psycopg

    from smsq.worker.config import settings

    conninfo = settings().database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_rows_reference")
        conn.execute("CREATE TABLE bench_rows_reference (mobile text, name text, ord text)")
        conn.commit()
        start = time.perf_counter()
        with conn.cursor() as cursor, cursor.copy("COPY bench_rows_reference FROM STDIN") as copy:
            base.copy_lines(copy, (f"{row['mobile']}\t{row['name']}\t{row['order']}" for row in rows(count, None)))
        conn.commit()
        elapsed = time.perf_counter() - start
        conn.execute("DROP TABLE bench_rows_reference")
        conn.commit()
    return elapsed


def table_bytes() -> int:
    """The chunks' and recipients' tables, with their indexes and TOAST."""
    from sqlalchemy import text

    from smsq.worker.config import settings
    from smsq.worker.db import engine_for

    with engine_for(settings().database_url).connect() as conn:
        return int(
            conn.execute(
                text("SELECT pg_total_relation_size('chunks') + pg_total_relation_size('recipients')")
            ).scalar_one()
        )


def stored_bytes_per_number(send) -> tuple[int, float]:
    """Send, cut the batch into its chunk and recipient rows here, and measure what the
    tables grew by per accepted number (after a VACUUM, so that dead rows do not count)."""
    from sqlalchemy import text

    from smsq.tasks.split import run_split
    from smsq.worker.config import settings
    from smsq.worker.db import engine_for

    conf = settings()
    vacuum = engine_for(conf.database_url).execution_options(isolation_level="AUTOCOMMIT")
    with vacuum.connect() as conn:
        conn.execute(text("VACUUM chunks, recipients"))
    before = table_bytes()
    receipt = send()
    run_split(conf, receipt.batch_id)
    with vacuum.connect() as conn:
        conn.execute(text("VACUUM chunks, recipients"))
    return receipt.accepted, (table_bytes() - before) / receipt.accepted


def run(count: int) -> dict:
    from smsq.tasks import send_sms

    reference_runs = [reference_copy(count)]
    started = time.perf_counter()
    receipt = send_sms(base.ACCOUNT, template=TEMPLATE, rows=rows(count, None), idempotency_key="intake")
    wall = time.perf_counter() - started
    reference_runs.append(reference_copy(count))
    reference = min(reference_runs)
    assert receipt.accepted == count, receipt
    storage = {}
    for name, send in {
        "own_text_each": lambda: send_sms(base.ACCOUNT, template=TEMPLATE, rows=rows(count, None)),
        "100_texts": lambda: send_sms(base.ACCOUNT, template=TEMPLATE, rows=rows(count, 100)),
        "one_text": lambda: send_sms(
            base.ACCOUNT, (row["mobile"] for row in rows(count, None)), TEMPLATE.format(name="张三", order=1)
        ),
    }.items():
        accepted, per_number = stored_bytes_per_number(send)
        storage[name] = {"numbers": accepted, "bytes_per_number": round(per_number)}
    return {
        "count": count,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "reference_s": round(reference, 3),
        "reference_runs_s": [round(r, 3) for r in reference_runs],
        "send_sms_s": round(wall, 3),
        "ratio_to_reference": round(wall / reference, 2),
        "accepted": receipt.accepted,
        "storage": storage,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="rows of the send (default 100,000)")
    parser.add_argument("--output", type=Path, help="result file (default bench/results/personal-<count>.json)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smsq-bench-personal-") as tmp:
        config = base.write_config(Path(tmp) / "smsq.toml", "http://127.0.0.1:9/", "1000/s")
        base.setup_env("distributed", Path(tmp), config)
        # The duplicate guard looks at each text once: three sends of the same rows here
        # would be refused as duplicates of the first, so it is off for this account's kind.
        Path(config).write_text(config.read_text() + '\n[kinds.notice]\nduplicate_window = "0"\n', encoding="utf-8")
        base.prepare_schema_and_connections()
        try:
            result = run(args.count)
        finally:
            base.drop_postgres(base.PG_DATABASE)
    out = args.output or base.RESULTS / f"personal-{args.count}.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    took, copy = result["send_sms_s"], result["reference_s"]
    print(f"send_sms of {args.count:,} personal rows: {took:.2f} s, raw COPY {copy:.2f} s,")
    print(f"  {result['ratio_to_reference']:.1f}x the reference (target: at most 5x)")
    for name, figures in result["storage"].items():
        print(
            f"  stored per number ({name}): {figures['bytes_per_number']} bytes (chunks and recipients, with indexes)"
        )
    print(f"results written to {out}")
    return 0 if result["ratio_to_reference"] <= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
