"""Which plans the prepared statements run: the library's connections force generic plans
(`plan_cache_mode=force_generic_plan` in their startup packet); PostgreSQL's default
(auto) and forced custom plans next to it, on the hot paths.

Each configuration is a `flowledger.connect` of one connection whose session is then SET
to the mode under test. Per round and configuration (interleaved, each round in a rotated
order):

* `start`: STARTS single `executions.start` calls of a one-stage workflow, µs per call;
* `claim + complete`: those steps drained one at a time (`claim(limit=1)`, `complete`),
  µs per step;
* `claim 10 + complete_many`: STARTS more steps drained ten at a time with one
  `complete_many` per batch, µs per step.

After the rounds, the auto connection's pg_prepared_statements tells how many generic and
custom plans each statement ran: a statement with only custom plans is planned anew on
every call. Medians of the rounds; compare within one run (this machine drifts).

Usage (without --database, FLOWLEDGER_URL or DATABASE_URL it uses the embedded server):

    .venv/bin/python benchmarks/plan_cache.py [--database URL] [--rounds 5]
        [--output benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

import flowledger
from flowledger.records.runs import StartRequest, StepCompletion
from measure import median, ratio
from report import write_section
from servers import migrated_database

BENCH_DB = "flowledger_plan_cache_bench"
STARTS = 200
MODES = ("force_generic_plan", "auto", "force_custom_plan")
LABELS = {
    "force_generic_plan": "force_generic_plan (the library's setting)",
    "auto": "auto (PostgreSQL's default)",
    "force_custom_plan": "force_custom_plan",
}
PATHS = ("start", "claim + complete", "claim 10 + complete_many")
TITLE = "Generic plans: what `plan_cache_mode` does to the hot paths"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database", help="server URL (default: the embedded server)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, help="write the table into this RESULTS.md")
    args = parser.parse_args(argv)
    url, server = migrated_database(args.database, BENCH_DB)
    workflow = _workflow(url)
    started = time.perf_counter()
    samples: dict[tuple[str, str], list[float]] = {}
    dbs = {mode: flowledger.connect(url, min_size=1, max_size=1) for mode in MODES}
    try:
        for mode, db in dbs.items():
            # A session setting, on the pool's only connection: it outlives the block.
            with db.transaction() as tx:
                tx.connection.execute(f"SET plan_cache_mode = {mode}")
        for n in range(args.rounds):
            # Each round in another order: the data grows as the rounds go, and whichever
            # mode comes first in a round was measured to pay for it.
            order = MODES[n % len(MODES) :] + MODES[: n % len(MODES)]
            for mode in order:
                db = dbs[mode]
                for path, micros in _round(db, workflow).items():
                    samples.setdefault((mode, path), []).append(micros)
                print(
                    f"[{n + 1}] {mode}: "
                    + ", ".join(f"{p} {samples[(mode, p)][-1]:,.0f} µs" for p in PATHS),
                    flush=True,
                )
        plans = _plans_run(dbs["auto"])
    finally:
        for db in dbs.values():
            db.close()
    report = _report(samples, plans, server, args.rounds, time.perf_counter() - started)
    print(report)
    if args.output:
        write_section(args.output, "plan-cache", TITLE, report)
    return 0


def _workflow(url: str) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            """WITH u AS (INSERT INTO users (email, display_name)
                          VALUES ('bench@example.com', 'Bench') RETURNING id),
                    w AS (INSERT INTO workflows (owner_id, name)
                          SELECT id, 'bench' FROM u RETURNING id)
               INSERT INTO workflow_stages (workflow_id, position, name, action_ref)
               SELECT id, 0, 'work', 'core.noop' FROM w RETURNING workflow_id"""
        ).fetchone()
    assert row is not None
    return row[0]


def _round(db: flowledger.Database, workflow: Any) -> dict[str, float]:
    """µs per call of each path, on one configuration."""
    out = {"start": _timed(STARTS, lambda: db.executions.start(workflow_id=workflow))}

    def one_by_one() -> None:
        for step in db.steps.claim(worker_id="bench", limit=1):
            db.steps.complete(step_id=step.id, worker_id="bench", attempt=step.attempt)

    out["claim + complete"] = _timed(STARTS, one_by_one)
    db.executions.start_many(requests=[StartRequest(workflow_id=workflow)] * STARTS)

    def batched() -> None:
        steps = db.steps.claim(worker_id="bench", limit=10)
        db.steps.complete_many(
            worker_id="bench",
            completions=[StepCompletion(step_id=s.id, attempt=s.attempt) for s in steps],
        )

    out["claim 10 + complete_many"] = _timed(STARTS // 10, batched) / 10
    return out


def _timed(calls: int, call: Callable[[], object]) -> float:
    began = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - began) / calls * 1e6


def _plans_run(db: flowledger.Database) -> list[tuple[str, int, int]]:
    with db.transaction() as tx:
        rows = tx.connection.execute(
            "SELECT substring(statement FROM '/\\* flowledger:(\\w+) \\*/'), generic_plans,"
            " custom_plans FROM pg_prepared_statements ORDER BY 1"
        ).fetchall()
    return [(str(name), int(generic), int(custom)) for name, generic, custom in rows]


def _report(
    samples: dict[tuple[str, str], list[float]],
    plans: list[tuple[str, int, int]],
    server: str,
    rounds: int,
    seconds: float,
) -> str:
    lines = [
        f"Command: `python benchmarks/plan_cache.py --rounds {rounds}"
        " --output benchmarks/RESULTS.md`",
        f"- server: {server}; run took {seconds / 60:.1f} min; medians of {rounds}"
        f" interleaved rounds; {STARTS} starts and {2 * STARTS} steps per round and mode",
        "",
        "| plan_cache_mode | " + " | ".join(f"{p} µs | ÷ generic" for p in PATHS) + " |",
        "|---|" + "---:|---:|" * len(PATHS),
    ]
    for mode in MODES:
        cells = []
        for path in PATHS:
            value = median(samples[(mode, path)])
            base = median(samples[("force_generic_plan", path)])
            cells.append(f"{value:,.0f} | {ratio(value, base):.2f}×")
        lines.append(f"| {LABELS[mode]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Plans the prepared statements ran on the `auto` connection (generic, custom):",
        "",
        "| statement | generic plans | custom plans |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {generic:,} | {custom:,} |" for name, generic, custom in plans]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
