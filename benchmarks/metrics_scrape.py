"""What one scrape of `db.metrics()` costs on a database holding realistic volume.

    flowledger seed --scale 1000000 --database URL     # the 1M-execution volume, ANALYZEd
    .venv/bin/python benchmarks/metrics_scrape.py URL [--calls 20]

It times `db.metrics()` (one short transaction of five indexed queries) `--calls` times on
one pooled connection and prints the median, the 90th percentile and each query's own
server time (EXPLAIN ANALYZE).
"""

from __future__ import annotations

import argparse
import statistics
import time

import flowledger
from flowledger.records.runs import EXECUTION_STATUSES
from flowledger.repositories.queries import get_queries

QUERIES = (
    "stats_engine_steps",
    "stats_engine_step_estimates",
    "stats_engine_executions",
    "stats_engine_outbox",
    "stats_engine_tools",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    with flowledger.connect(args.url, max_size=1) as db:
        db.metrics()  # warm-up: plans, caches
        times = []
        for _ in range(args.calls):
            started = time.perf_counter()
            db.metrics()
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        p90 = times[int(len(times) * 0.9) - 1]
        print(f"db.metrics(): median {statistics.median(times):.1f} ms, p90 {p90:.1f} ms")
        params = {"statuses": sorted(EXECUTION_STATUSES), "window": "15 minutes"}
        with db.pinned() as pinned:
            for name in QUERIES:
                explain = "EXPLAIN (ANALYZE, FORMAT JSON) " + get_queries()[name].sql
                row = pinned.connection.execute(explain, params).fetchone()
                assert row is not None
                print(f"  {name}: {row[0][0]['Execution Time']:.2f} ms on the server")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
