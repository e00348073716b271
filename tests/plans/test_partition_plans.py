"""check-plans on the partitioned step_logs: a plan reads the partitions' own indexes, and
the annotation names the partitioned index they belong to."""

from __future__ import annotations

import datetime
from typing import Any

import psycopg
import pytest

from flowledger.database import connect
from flowledger.repositories.queries import get_queries, parse_queries
from flowledger.tools.plans import (
    SMALL_TABLE_PAGES,
    _Index,
    _index_reads,
    _indexes,
    check_plans,
    format_report,
)

Conn = psycopg.Connection[Any]
STEP_LOG_QUERIES = {n: q for n, q in get_queries().items() if n.startswith("list_step_logs_")}
BIG = SMALL_TABLE_PAGES + 1
# A query answered by a skip scan of the primary key (id, logged_at): its Index Cond does
# not hold the leading column, so only the annotation can say it is meant.
BY_TIME = parse_queries(
    "-- name: list_step_log_ids_since\n-- Ids since a time.\n-- plan: index step_logs_pkey\n"
    "SELECT id FROM step_logs WHERE logged_at > %(since)s::timestamptz;\n",
    file="partitioned.sql",
)["list_step_log_ids_since"]


@pytest.mark.parametrize(
    ("parent", "purposeful"), [("step_logs_pkey", True), (None, False), ("users_pkey", False)]
)
def test_a_partitions_index_counts_as_the_partitioned_index_it_belongs_to(
    parent: str | None, purposeful: bool
) -> None:
    indexes = {"step_logs_2030_01_pkey": _Index("step_logs_2030_01", "id", BIG, parent)}
    plan = {"Index Name": "step_logs_2030_01_pkey", "Index Cond": "(logged_at > $1)"}

    used, problems = _index_reads(BY_TIME, plan, indexes)

    assert bool(used) is purposeful
    assert bool(problems) is not purposeful


def test_the_indexes_of_partitions_know_their_partitioned_index(conn: Conn) -> None:
    indexes = _indexes(conn)
    month = f"step_logs_{datetime.datetime.now(datetime.UTC):%Y_%m}"
    of_month = {i.parent for i in indexes.values() if i.table == month}
    assert of_month == {
        "step_logs_pkey",
        "step_logs_step_idx",
        "step_logs_execution_idx",
        "step_logs_logged_at_idx",
    }
    assert indexes["step_logs_step_idx"].parent is None  # the partitioned index itself
    assert indexes["users_pkey"].parent is None


def _fill(db_url: str, conn: Conn) -> None:
    """Twelve monthly partitions (and the default one) holding 60,000 lines of 300 steps,
    each step logging every 43 hours over the year."""
    with connect(db_url, min_size=1, max_size=2) as db:
        db.step_logs.ensure_partitions(
            months_ahead=11, now=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
        )
    conn.execute(
        "INSERT INTO users (email, display_name) VALUES ('p@example.com', 'P');"
        "INSERT INTO workflows (owner_id, name) SELECT id, 'wf' FROM users;"
        "INSERT INTO workflow_executions (workflow_id, workflow_version)"
        "  SELECT w.id, 1 FROM workflows w, generate_series(1, 30);"
        "INSERT INTO execution_steps (execution_id, task_name, task_index)"
        "  SELECT e.id, 's', g FROM workflow_executions e, generate_series(1, 10) g;"
        "INSERT INTO step_logs (step_id, execution_id, message, logged_at)"
        "  SELECT s.id, s.execution_id, 'line ' || g,"
        "         '2025-01-01Z'::timestamptz + (g * 43 || ' hours')::interval"
        "    FROM execution_steps s, generate_series(1, 200) g;"
        "ANALYZE"
    )


@pytest.mark.parametrize("strict", [True, False])
def test_step_log_queries_read_the_partitions_indexes_on_volume(
    db_url: str, conn: Conn, strict: bool
) -> None:
    _fill(db_url, conn)
    partitions = conn.execute(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'step_logs'::regclass"
    ).fetchone()
    assert partitions is not None and partitions[0] >= 13
    assert conn.execute("SELECT count(*) FROM step_logs").fetchone() == (60_000,)

    report = check_plans(conn, strict=strict, queries=STEP_LOG_QUERIES)

    assert report.ok, "\n".join(format_report(report, verbose=True))
    assert {r.query for r in report.results} == set(STEP_LOG_QUERIES)
    for r in report.results:
        # Only the partitions' own indexes, never the partitioned one by its name.
        assert r.indexes and not {"step_logs_step_idx", "step_logs_execution_idx"} & set(
            r.indexes
        ), r.plan
        if strict:
            assert r.seq_scans == [], r.plan
    by_month = conn.execute(
        "SELECT count(*) FROM step_logs WHERE logged_at < '2026-01-01Z'"
        " GROUP BY date_trunc('month', logged_at AT TIME ZONE 'UTC')"
    ).fetchall()
    assert len(by_month) == 12 and min(by_month) > (4_000,)
