"""`python -m bench [--quick] [--large] [--only 1,2,...]`: run the benchmarks and print one table."""

from __future__ import annotations

import argparse
import platform
import sys
import time
import traceback
from collections.abc import Callable

from bench.common import Row


def _machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os

    return f"{os.cpu_count()} CPUs, {model}, Python {platform.python_version()}"


def print_table(rows: list[Row]) -> None:
    headers = ("section", "metric", "measured", "target", "")
    table = [headers] + [(r.section, r.metric, r.value, r.target, r.verdict) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    widths[2] = min(widths[2], 110)
    for i, row in enumerate(table):
        print(" | ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            print("-+-".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    parser.add_argument(
        "--large",
        action="store_true",
        help="section 2: DynamoDB at 100,000 ended events on in-process moto, instead of the default sizes",
    )
    parser.add_argument(
        "--only", default="1,2,2b,3,3c,4,5,3b,6,6b,7,7c,8", help="comma-separated sections to run"
    )
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",")}

    from bench import (
        access_bench,
        announce_bench,
        coldstart,
        deadline_bench,
        http_bench,
        side_by_side,
        slack_limits,
        store_bench,
    )

    sizes = [10, 1_000, 10_000] if args.quick else [10, 1_000, 100_000]
    dynamo_sizes = [10, 1_000, 10_000] if args.quick else [10, 1_000, 20_000]
    submissions = 100 if args.quick else 500
    expiries = 50 if args.quick else 200
    sections: list[tuple[str, Callable[[list[Row]], None]]] = [
        ("1", store_bench.op_costs),
        (
            "2",
            store_bench.scaling_large
            if args.large
            else lambda rows: store_bench.scaling(rows, sizes, dynamo_sizes),
        ),
        ("3", lambda rows: http_bench.run(rows, submissions=submissions, memory="4" in only)),
        ("2b", store_bench.sqlite_one_profile),
        ("3", store_bench.sqlite_contention),
        ("3c", lambda rows: side_by_side.run(rows, repeats=3, rounds=2 if args.quick else 5)),
        ("3b", lambda rows: http_bench.run_dynamodb(rows, submissions=100)),
        ("5", lambda rows: announce_bench.run(rows, count=expiries)),
        ("6", lambda rows: access_bench.run(rows, count=20 if args.quick else 100)),
        ("6b", lambda rows: access_bench.run_pipeline(rows, count=20 if args.quick else 100)),
        ("7", lambda rows: deadline_bench.run(rows, count=10 if args.quick else 20)),
        # issue 21: Lambda cold start against bare Bolt; ack latency and the 429 burst under Slack's limits
        ("7c", lambda rows: coldstart.run(rows, samples=5 if args.quick else 9)),
        ("8", lambda rows: slack_limits.run(rows, rounds=2 if args.quick else 4)),
    ]
    rows: list[Row] = []
    print(f"machine: {_machine()}", file=sys.stderr)
    for key, fn in sections:
        if key not in only and not (key == "3" and "4" in only):
            continue
        started = time.perf_counter()
        print(f"running section {key} ...", file=sys.stderr, flush=True)
        try:
            fn(rows)
        except Exception as exc:  # report and carry on with the other sections
            traceback.print_exc()
            rows.append(Row(key, "FAILED", f"{type(exc).__name__}: {exc}"[:200], "", "MISS"))
        print(f"section {key} took {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    kind = ("quick" if args.quick else "full") + (", large" if args.large else "")
    print(f"\nbreakglass benchmarks ({kind}) on {_machine()}\n")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
