"""What a transaction-mode pooler costs: the same calls direct and through PgBouncer.

    .venv/bin/python benchmarks/pooler.py --direct URL --bouncer URL [--calls 2000] [--rounds 5]

URL and the PgBouncer URL (pool_mode=transaction, in front of the same server) name the
same migrated database. Each round runs, one after the other on one pooled connection,
`--calls` point lookups (`users.get`) and `--calls` claim + complete cycles of one-step
executions, in five configurations:

- direct: the defaults (prepared statements after 5 uses, settings in the startup packet);
- direct, prepares off (`prepare_threshold=None`);
- PgBouncer, `pooler="transaction"` (its statement timeout sent with each statement);
- PgBouncer, `pooler="transaction", statement_timeout=None` (the role's timeout instead);
- PgBouncer, psycopg by hand: the lookup's SQL on a plain connection, prepares off.

It prints the median over the rounds of microseconds per call, and each configuration's
ratio to the direct default.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

import flowledger
from flowledger.database import Database
from flowledger.records.identity import NewUser
from flowledger.records.runs import StartRequest
from flowledger.repositories.queries import get_queries

CONFIGS: dict[str, dict[str, Any]] = {
    "direct": {},
    "direct, prepares off": {"prepare_threshold": None},
    "PgBouncer, pooler=transaction": {"pooler": "transaction"},
    "PgBouncer, pooler=transaction, no timeout": {
        "pooler": "transaction",
        "statement_timeout": None,
    },
}


def _setup(url: str, executions: int) -> tuple[uuid.UUID, uuid.UUID]:
    """A user to look up and a one-stage workflow to start."""
    with flowledger.connect(url, max_size=1) as db, db.pinned() as p:
        user = p.users.create(
            user=NewUser(email=f"bench-{uuid.uuid4().hex[:8]}@example.com", display_name="B")
        )
        conn = p.connection
        row = conn.execute(
            "INSERT INTO workflows (owner_id, name) VALUES (%s, %s) RETURNING id",
            (user.id, f"pooler-{uuid.uuid4().hex[:8]}"),
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO workflow_stages (workflow_id, position, name, action_ref)"
            " VALUES (%s, 0, 'only', 'core.noop')",
            (row[0],),
        )
        return user.id, row[0]


def _time(calls: int, call: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for i in range(calls):
        call(i)
    return (time.perf_counter() - started) / calls * 1e6


def _engine(db: Database, workflow_id: uuid.UUID, calls: int) -> float:
    """Microseconds per claim + complete of one step (starts not timed)."""
    for start in range(0, calls, 500):
        n = min(500, calls - start)
        db.executions.start_many(requests=[StartRequest(workflow_id=workflow_id)] * n)

    def cycle(i: int) -> None:
        (step,) = db.steps.claim(worker_id="bench", limit=1)
        db.steps.complete(step_id=step.id, worker_id="bench", attempt=step.attempt)

    return _time(calls, cycle)


def _by_hand(url: str, sql: str, user_id: uuid.UUID, calls: int) -> float:
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        cur = conn.cursor()
        params = {"id": user_id}
        return _time(calls, lambda _: cur.execute(sql, params).fetchone())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--direct", required=True)
    parser.add_argument("--bouncer", required=True)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    user_id, workflow_id = _setup(args.direct, args.calls)
    lookup_sql = get_queries()["get_user_by_id"].sql
    lookups: dict[str, list[float]] = {}
    cycles: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, settings in CONFIGS.items():
            url = args.direct if name.startswith("direct") else args.bouncer
            with flowledger.connect(url, min_size=1, max_size=1, **settings) as db:
                db.users.get(id=user_id)  # warm-up
                lookups.setdefault(name, []).append(
                    _time(args.calls, lambda _: db.users.get(id=user_id))
                )
                cycles.setdefault(name, []).append(_engine(db, workflow_id, args.calls))
        lookups.setdefault("PgBouncer, psycopg by hand", []).append(
            _by_hand(args.bouncer, lookup_sql, user_id, args.calls)
        )
    base_lookup = statistics.median(lookups["direct"])
    base_cycle = statistics.median(cycles["direct"])
    header = f"{'configuration':45} {'lookup µs':>10} {'ratio':>6}"
    print(f"{header} {'claim+complete µs':>18} {'ratio':>6}")
    for name in lookups:
        lookup = statistics.median(lookups[name])
        line = f"{name:45} {lookup:10.0f} {lookup / base_lookup:6.2f}"
        if name in cycles:
            cycle = statistics.median(cycles[name])
            line += f" {cycle:18.0f} {cycle / base_cycle:6.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
