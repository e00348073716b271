"""Named queues and flow control on the claim path: claim + complete with `queues=[...]`,
with a concurrency key and with a rate limit, next to the plain claim (every queue).

Each run first queues STEPS fresh steps (untimed; 10 per execution) in the queues of the
workload, then `workers` threads claim up to `batch` steps at a time (with the workload's
`queues` argument) and complete each, until none is left for them; the figure is steps
completed per second. Workloads:

* `one queue`: every step in 'default'; claims with no queues (the claim finds the queues
  holding queued steps, here one) vs `queues=['default']`, and that with every step under
  a concurrency key (4 keys, limit 100 each: the slots are taken and given back, the limit
  never binds) or a rate limit (one key, 10,000 starts per second: every claim stamps
  slots, the limit never binds) — the cost of the machinery, not of waiting;
* `three queues`: steps spread over 'qa', 'qb', 'qc'; claims with no queues (three queue
  fronts read, up to 3 x batch rows locked per claim) vs `queues=['qa', 'qb', 'qc']` vs
  `queues=['qa']` (a worker of one queue, which drains a third of the steps).

Configurations are interleaved repeat by repeat; the median is reported. Compare ratios
within one run: this kind of machine drifts by +-25 % from minute to minute.

Usage (without --database, FLOWLEDGER_URL or DATABASE_URL it uses the embedded server):

    .venv/bin/python benchmarks/queues.py [--database URL] [--repeats 3]
        [--output benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import psycopg

from measure import claim_complete_rate, median, ratio
from report import write_section
from servers import migrated_database

HERE = Path(__file__).resolve().parent
BENCH_DB = "flowledger_queues_bench"
STEPS = 600
CONFIGS = ((1, 1), (4, 10))  # (workers, batch)
CONCURRENCY_KEYS, CONCURRENCY_LIMIT = 4, 100
RATE_LIMIT = 10_000  # starts per second, one key
# (workload, label, queues the steps are spread over, queues the claims ask for, limits:
# None, "concurrency" or "rate")
RUNS: tuple[tuple[str, str, tuple[str, ...], list[str] | None, str | None], ...] = (
    ("one queue", "no queues (every queue)", ("default",), None, None),
    ("one queue", "queues=['default']", ("default",), ["default"], None),
    (
        "one queue",
        "queues=['default'], concurrency key (4 keys, limit 100)",
        ("default",),
        ["default"],
        "concurrency",
    ),
    (
        "one queue",
        "queues=['default'], rate limit (10,000/s)",
        ("default",),
        ["default"],
        "rate",
    ),
    ("three queues", "no queues (every queue)", ("qa", "qb", "qc"), None, None),
    (
        "three queues",
        "queues=['qa', 'qb', 'qc']",
        ("qa", "qb", "qc"),
        ["qa", "qb", "qc"],
        None,
    ),
    ("three queues", "queues=['qa']", ("qa", "qb", "qc"), ["qa"], None),
)
TITLE = (
    "Named queues and flow control: claim + complete with `queues=[...]`, a concurrency key"
    " or a rate limit, next to the plain claim"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database", help="server URL (default: the embedded server)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, help="write the table into this RESULTS.md")
    args = parser.parse_args(argv)
    url, server = migrated_database(args.database, BENCH_DB)
    started = time.perf_counter()
    samples: dict[tuple[int, int, int], list[float]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        workflow = _workflow(conn)
        for repeat in range(args.repeats):
            for workers, batch in CONFIGS:
                for n, (workload, label, spread, queues, limits) in enumerate(RUNS):
                    _queue_steps(conn, workflow, spread, limits)
                    rate = claim_complete_rate(url, workers, batch, queues=queues)
                    samples.setdefault((n, workers, batch), []).append(rate)
                    print(
                        f"[{repeat + 1}] {workload}, {label}, W={workers} B={batch}:"
                        f" {rate:,.0f} steps/s",
                        flush=True,
                    )
    report = _report(samples, server, args.repeats, time.perf_counter() - started)
    print(report)
    if args.output:
        write_section(args.output, "queues", TITLE, report)
    return 0


def _workflow(conn: psycopg.Connection[Any]) -> Any:
    row = conn.execute(
        """WITH u AS (INSERT INTO users (email, display_name)
                      VALUES ('bench@example.com', 'Bench') RETURNING id)
           INSERT INTO workflows (owner_id, name) SELECT id, 'bench' FROM u RETURNING id"""
    ).fetchone()
    assert row is not None
    return row[0]


def _queue_steps(
    conn: psycopg.Connection[Any], workflow: Any, spread: tuple[str, ...], limits: str | None
) -> None:
    """Cancel what is left queued or running, then queue STEPS fresh steps, round-robin over
    the queues of `spread`, under the keys of `limits` (with their slots, as a start makes
    them)."""
    with conn.transaction():
        conn.execute(
            "UPDATE execution_steps SET status = 'cancelled', lease_owner = NULL,"
            " lease_expires_at = NULL WHERE status IN ('queued', 'running')"
        )
        conn.execute(
            """WITH ex AS (
                 INSERT INTO workflow_executions
                        (workflow_id, workflow_version, status, started_at)
                 SELECT %(w)s, 1, 'running', now() FROM generate_series(1, %(n)s / 10)
                 RETURNING id)
               INSERT INTO execution_steps
                      (execution_id, task_name, task_index, status, max_attempts, queue,
                       concurrency_key, concurrency_limit, rate_key, rate_limit, rate_window)
               SELECT ex.id, 'bench', i, 'queued', 3,
                      (%(queues)s::text[])[1 + (i %% cardinality(%(queues)s::text[]))],
                      CASE WHEN %(keyed)s THEN 'tenant:' || (i %% %(keys)s) END,
                      CASE WHEN %(keyed)s THEN %(limit)s END,
                      CASE WHEN %(rated)s THEN 'api' END,
                      CASE WHEN %(rated)s THEN %(rate)s END,
                      CASE WHEN %(rated)s THEN interval '1 second' END
                 FROM ex, generate_series(0, 9) AS i""",
            {
                "w": workflow,
                "n": STEPS,
                "queues": list(spread),
                "keyed": limits == "concurrency",
                "keys": CONCURRENCY_KEYS,
                "limit": CONCURRENCY_LIMIT,
                "rated": limits == "rate",
                "rate": RATE_LIMIT,
            },
        )
        conn.execute(
            """INSERT INTO concurrency_slots (key, slot)
               SELECT 'tenant:' || k, s
                 FROM generate_series(0, %(keys)s - 1) AS k, generate_series(1, %(limit)s) AS s
               ON CONFLICT DO NOTHING""",
            {"keys": CONCURRENCY_KEYS, "limit": CONCURRENCY_LIMIT},
        )
        conn.execute(
            """INSERT INTO rate_slots (key, slot) SELECT 'api', s
                 FROM generate_series(1, %(rate)s) AS s ON CONFLICT DO NOTHING""",
            {"rate": RATE_LIMIT},
        )
    conn.execute("ANALYZE execution_steps, concurrency_slots, rate_slots")


def _report(
    samples: dict[tuple[int, int, int], list[float]], server: str, repeats: int, seconds: float
) -> str:
    lines = [
        f"Command: `python benchmarks/queues.py --repeats {repeats}"
        " --output benchmarks/RESULTS.md`",
        f"- server: {server}; run took {seconds / 60:.1f} min; medians of {repeats}"
        f" interleaved runs; {STEPS:,} steps queued per run",
        "",
        "| workload | claims | workers, batch | steps/s | ÷ no queues (same workload)"
        " | ÷ no queues, median of the repeats' ratios |",
        "|---|---|---|---:|---:|---:|",
    ]
    for workers, batch in CONFIGS:
        plain: dict[str, float] = {}
        baseline: dict[str, list[float]] = {}
        for n, (workload, label, _, queues, _limits) in enumerate(RUNS):
            runs = samples[(n, workers, batch)]
            rate = median(runs)
            if queues is None:
                plain[workload], baseline[workload] = rate, runs
            # Each repeat against the baseline run next to it: steadier than the ratio of
            # medians when the machine drifts between repeats.
            paired = median(ratio(r, b) for r, b in zip(runs, baseline[workload], strict=True))
            lines.append(
                f"| {workload} | {label} | {workers}, {batch} | {rate:,.0f}"
                f" | {ratio(rate, plain[workload]):.2f}× | {paired:.2f}× |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
