"""The reference worker's lanes: no-op steps drained per second by `Worker(concurrency=W,
lanes=L)`, for each W and L side by side in one run.

Each run first starts TASKS one-step executions (untimed, `start_many`), waits until no
autovacuum worker runs on the server, then drains them with one `Worker.run(until_idle=
True)` on a pool of W + 2 connections; the figure is steps completed per second, and every
step is checked to have completed exactly once (attempt 1, one attempt row). The
configurations are interleaved repeat by repeat, the median is reported, with each
lane count's ratio to one lane at the same W.

Usage (without --database, FLOWLEDGER_URL or DATABASE_URL it uses the embedded server):

    .venv/bin/python benchmarks/worker_lanes.py [--database URL] [--repeats 5]
        [--tasks 2000] [--output benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import psycopg

from measure import median, ratio
from report import write_section
from servers import migrated_database, wait_for_autovacuum

BENCH_DB = "flowledger_lanes_bench"
CONFIGS = ((4, (1, 2, 4)), (8, (1, 2, 4)))  # (W, lane counts)
TITLE = "The reference worker's lanes: no-op steps drained per second"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database", help="server URL (default: the embedded server)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--output", type=Path, help="write the table into this RESULTS.md")
    args = parser.parse_args(argv)
    url, server = migrated_database(args.database, BENCH_DB)
    started = time.perf_counter()
    samples: dict[tuple[int, int], list[float]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        workflow = _workflow(conn)
        for repeat in range(args.repeats):
            for workers, lane_counts in CONFIGS:
                for lanes in lane_counts:
                    rate = _drain(url, conn, workflow, workers, lanes, args.tasks)
                    samples.setdefault((workers, lanes), []).append(rate)
                    print(f"[{repeat + 1}] W={workers} lanes={lanes}: {rate:,.0f} steps/s")
    report = _report(samples, server, args, time.perf_counter() - started)
    print(report)
    if args.output:
        write_section(args.output, "worker-lanes", TITLE, report)
    return 0


def _workflow(conn: psycopg.Connection[Any]) -> Any:
    row = conn.execute(
        """WITH u AS (INSERT INTO users (email, display_name)
                      VALUES ('lanes@example.com', 'Lanes') RETURNING id),
                w AS (INSERT INTO workflows (owner_id, name)
                      SELECT id, 'lanes' FROM u RETURNING id)
           INSERT INTO workflow_stages (workflow_id, position, name, action_ref)
           SELECT id, 0, 'only', 'core.noop' FROM w RETURNING workflow_id"""
    ).fetchone()
    assert row is not None
    return row[0]


def _drain(
    url: str, conn: psycopg.Connection[Any], workflow: Any, workers: int, lanes: int, n: int
) -> float:
    import flowledger
    from flowledger.records.runs import StartRequest
    from flowledger.worker import Worker

    # TRUNCATE, not DELETE: the dead rows of earlier runs would slow the claims of later ones.
    conn.execute("TRUNCATE workflow_executions CASCADE")
    conn.execute("TRUNCATE outbox")
    with flowledger.connect(url, min_size=workers + 2, max_size=workers + 2) as db:
        for first in range(0, n, 1000):
            requests = [StartRequest(workflow_id=workflow)] * min(1000, n - first)
            db.executions.start_many(requests=requests)
        conn.execute("ANALYZE")
        wait_for_autovacuum(conn)
        worker = Worker(db, {"core.noop": lambda step: None}, concurrency=workers, lanes=lanes)
        start = time.perf_counter()
        stats = worker.run(until_idle=True)
        seconds = time.perf_counter() - start
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE s.status = 'completed' AND s.attempt = 1"
        " AND (SELECT count(*) FROM step_attempts a WHERE a.step_id = s.id) = 1)"
        " FROM execution_steps s"
    ).fetchone()
    if stats.completed != n or row != (n,):
        raise AssertionError(f"W={workers} lanes={lanes}: {row} of {n} completed exactly once")
    return n / seconds


def _report(
    samples: dict[tuple[int, int], list[float]],
    server: str,
    args: argparse.Namespace,
    elapsed: float,
) -> str:
    lines = [
        f"Command: `.venv/bin/python benchmarks/worker_lanes.py --repeats {args.repeats}"
        f" --tasks {args.tasks}`",
        "",
        f"- server: {server}; {args.tasks:,} one-step executions per run, drained"
        " by one `Worker(concurrency=W, lanes=L).run(until_idle=True)` with no-op handlers;"
        f" medians of {args.repeats} interleaved repeats; the run took {elapsed / 60:.1f} min",
        "",
        "| W | lanes | steps/s | ÷ one lane |",
        "|---:|---:|---:|---:|",
    ]
    for workers, lane_counts in CONFIGS:
        one = median(samples[workers, 1])
        for lanes in lane_counts:
            rate = median(samples[workers, lanes])
            lines.append(f"| {workers} | {lanes} | {rate:,.0f} | {ratio(rate, one):.2f}× |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
