"""Where the WAL of a completed one-step run goes: by record type and by relation.

    .venv/bin/python benchmarks/wal_breakdown.py URL [--tasks 2000] [--batch 10]

URL names a migrated database on a server with the pg_walinspect extension (PostgreSQL
15+ contrib; the script creates the extension, so it needs the right to) and a free
replication slot (a temporary one holds the drain's WAL until it is read). It starts
`--tasks` one-step executions, then drains them with `steps.claim(limit=--batch)` and
`steps.complete_many` on one connection, and reads the WAL written by the drain alone
(`pg_get_wal_stats` and `pg_get_wal_records_info` between the LSNs before and after): the
bytes per completed task of each record type and of each table and index. With
`--statements` (the server preloads pg_stat_statements, with `pg_stat_statements.track =
all` to see the statements of triggers and foreign keys), it also prints the server's
execution time per completed task of each statement of the drain.
"""

from __future__ import annotations

import argparse
import time
import uuid
from decimal import Decimal

import flowledger
from flowledger.records.runs import StartRequest, StepCompletion


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--statements", action="store_true")
    args = parser.parse_args(argv)
    with flowledger.connect(args.url, max_size=1) as db, db.pinned() as p:
        conn = p.connection
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        owner = conn.execute(
            "INSERT INTO users (email, display_name) VALUES (%s, 'WAL') RETURNING id",
            (f"wal-{uuid.uuid4().hex[:12]}@example.com",),
        ).fetchone()
        assert owner is not None
        workflow = conn.execute(
            "INSERT INTO workflows (owner_id, name) VALUES (%s, %s) RETURNING id",
            (owner[0], f"wal-{uuid.uuid4().hex[:10]}"),
        ).fetchone()
        assert workflow is not None
        conn.execute(
            "INSERT INTO workflow_stages (workflow_id, position, name, action_ref)"
            " VALUES (%s, 0, 'only', 'core.noop')",
            (workflow[0],),
        )
        for first in range(0, args.tasks, 1000):
            n = min(1000, args.tasks - first)
            p.executions.start_many(requests=[StartRequest(workflow_id=workflow[0])] * n)
        if args.statements:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
        # A temporary slot (this session's, dropped with it) keeps the drain's WAL until it
        # is read: on a busy server a checkpoint (another database's CREATE DATABASE, say)
        # could otherwise recycle the first segment before pg_walinspect reaches it.
        conn.execute(
            "SELECT pg_create_physical_replication_slot(%s, true, true)",
            (f"fl_wal_breakdown_{uuid.uuid4().hex[:12]}",),
        )
        start = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
        done = 0
        while steps := p.steps.claim(worker_id="wal", limit=args.batch):
            completions = [
                StepCompletion(step_id=s.id, attempt=s.attempt, outputs={}) for s in steps
            ]
            p.steps.complete_many(worker_id="wal", completions=completions)
            done += len(steps)
        time.sleep(0.5)  # pg_walinspect reads up to the flushed position only
        end = conn.execute("SELECT pg_current_wal_flush_lsn()").fetchone()
        assert start is not None and end is not None and done > 0
        total = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (end[0], start[0])).fetchone()
        assert total is not None
        print(f"{done} tasks drained, {Decimal(total[0]) / done:.0f} WAL bytes per task")
        print("\nby record type (bytes per task, full-page images included):")
        for name, count, size in conn.execute(
            'SELECT "resource_manager/record_type", count, combined_size'
            " FROM pg_get_wal_stats(%s, %s, true) WHERE count > 0"
            " ORDER BY combined_size DESC LIMIT 12",
            (start[0], end[0]),
        ):
            print(f"  {name:24} {size / done:7.0f}  ({count / done:.2f} records per task)")
        print("\nby relation (bytes per task of the records that name one):")
        for name, size in conn.execute(
            "SELECT coalesce(c.relname, '(no relation)'), sum(w.record_length)"
            " FROM pg_get_wal_records_info(%s, %s) w"
            " LEFT JOIN pg_class c ON c.relfilenode ="
            " (regexp_match(w.block_ref, 'rel \\d+/\\d+/(\\d+)'))[1]::oid"
            " GROUP BY 1 ORDER BY 2 DESC LIMIT 20",
            (start[0], end[0]),
        ):
            print(f"  {name:44} {size / done:7.0f}")
        if args.statements:
            print("\nserver execution time (µs per task) of the drain's statements:")
            for query, calls, total in conn.execute(
                "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 70), calls,"
                " total_exec_time FROM pg_stat_statements"
                " WHERE query NOT LIKE '%%pg_walinspect%%' AND query NOT LIKE '%%pg_get_wal%%'"
                " ORDER BY total_exec_time DESC LIMIT 10"
            ):
                print(f"  {total * 1000 / done:7.1f}  {calls:6}  {query}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
