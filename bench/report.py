"""Write the README's benchmark table from bench/results/*.json.

`make bench` runs the measurements, then this: the table between the README's
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` markers is replaced by one
built from the result files, so the figures the README shows are the ones last
measured. Every figure is a ratio to a reference taken in the same run (the
machine is shared and noisy); the absolute numbers stand beside it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _row(what: str, measured: str, reference: str, ratio: str, target: str, met: bool | None) -> str:
    verdict = "—" if met is None else ("met" if met else "**not met**")
    return f"| {what} | {measured} | {reference} | {ratio} | {target} | {verdict} |"


def rows() -> list[str]:
    out = ["| measurement | measured | reference (same run) | ratio | target | |", "|---|---|---|---|---|---|"]
    big = _load("distributed-1000000.json")
    if big:
        s = big["send_sms"]
        ratio = big.get("ratio_to_reference")
        out.append(
            _row(
                "`send_sms` of 1,000,000 numbers, PostgreSQL",
                f"{s['wall_s']:.2f} s",
                f"raw `COPY` {big['reference_s']:.2f} s",
                f"{ratio:.1f}×",
                "≤ 5×",
                ratio is not None and ratio <= 5,
            )
        )
        out.append(
            _row(
                "peak RSS of that call",
                f"{s['rss_peak_after_mb']:.0f} MB",
                f"grew {s['rss_peak_growth_mb']:.0f} MB",
                "—",
                "≤ 250 MB",
                s["rss_peak_after_mb"] <= 250,
            )
        )
    small = _load("embedded-200000.json")
    if small:
        s = small["send_sms"]
        out.append(
            _row(
                "`send_sms` of 200,000 numbers, embedded (SQLite)",
                f"{s['wall_s']:.2f} s",
                f"SQLite `executemany` {small['reference_s']:.2f} s",
                f"{small['ratio_to_reference']:.1f}×",
                "≤ 5 s",
                s["wall_s"] <= 5,
            )
        )
    worker = _load("throughput.json")
    if worker:
        r = worker["results"]
        latency_ms = worker["args"]["latency"] * 1000
        if "a_throughput" in r:
            a = r["a_throughput"]
            out.append(
                _row(
                    f"one default worker, {latency_ms:.0f} ms vendor latency, account `100/s`",
                    f"{a['numbers_per_s']:,.0f} numbers/s",
                    f"allowance {a['allowance']:,}/s",
                    f"{a['ratio']:.0%}",
                    "≥ 80 %",
                    a["ratio"] >= 0.8,
                )
            )
        if "b_fairness" in r:
            b = r["b_fairness"]
            out.append(
                _row(
                    "account B's 10 chunks while A (`1/s`) has 30 queued",
                    f"{b['b_behind_a_s']:.2f} s",
                    f"B alone {b['b_alone_s']:.2f} s",
                    f"{b['ratio']:.1f}×",
                    "≤ 2 s",
                    b["b_behind_a_s"] <= 2,
                )
            )
        if "c_otp" in r:
            c, limit = r["c_otp"], 0.3 + worker["args"]["latency"]
            for case, label in (
                ("behind_blast", "behind another account's blast"),
                ("behind_throttled", "behind a `1/s` account's backlog"),
                ("behind_own_blast", "behind its own account's blast"),
            ):
                if case in c:
                    p99 = c[case]["p99_s"]
                    out.append(
                        _row(
                            f"OTP p99 {label}",
                            f"{p99:.2f} s",
                            f"idle {c['idle']['p99_s']:.2f} s",
                            f"{p99 / c['idle']['p99_s']:.1f}×",
                            f"≤ {limit:.1f} s",
                            p99 <= limit,
                        )
                    )
        if "d_zero_latency" in r:
            d = r["d_zero_latency"]
            out.append(
                _row(
                    "zero latency, end to end",
                    f"{d['worker_numbers_per_s']:,.0f} numbers/s",
                    f"plain httpx loop {d['httpx_loop_numbers_per_s']:,.0f}/s",
                    f"{d['ratio']:.2f}",
                    "≥ 0.30",
                    d["ratio"] >= 0.3,
                )
            )
        if "e_window" in r:
            e = r["e_window"]
            out.append(
                _row(
                    'vendor calls in any 1-s window, `rate_limit = "5/s"`',
                    f"at most {e['busiest_second_calls']}, mean {e['mean_calls_per_s']:.2f}/s",
                    f"rate {e['rate']}/s",
                    f"{e['ratio']:.0%} of rate",
                    "≤ 5, mean ≥ 90 %",
                    e["busiest_second_calls"] <= e["rate"] and e["ratio"] >= 0.9,
                )
            )
    return out


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        print(f"README.md has no {BEGIN} … {END} section", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    table = "\n".join(rows())
    readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}", encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
