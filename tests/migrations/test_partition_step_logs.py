"""0017 turns step_logs into a table partitioned by month with every line kept, and its
rollback gives back the plain table with the same lines."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import psycopg

from _runs_factories import add_stage, make_workflow
from flowledger.tools.migrate import Migrator

Conn = psycopg.Connection[Any]
UTC = datetime.UTC
LOGGED = [
    datetime.datetime(2023, 11, 30, 23, 59, 59, 999999, tzinfo=UTC),
    datetime.datetime(2023, 12, 1, tzinfo=UTC),
    # 00:30 on 1 January in UTC+2 is still December in UTC: months are UTC months.
    datetime.datetime(2024, 1, 1, 0, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
    datetime.datetime(2024, 3, 15, 8, tzinfo=UTC),
]


def _lines(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT id, step_id, execution_id, level, message, fields, logged_at"
        "  FROM step_logs ORDER BY id"
    ).fetchall()


def _with_lines_before_0017(url: str) -> list[tuple[Any, ...]]:
    """Migrate up to 0016, write a step's lines over several months (ids chosen, with a
    gap), and return them as stored."""
    with Migrator(url) as mig:
        mig.apply(to="0016_create_cursor_key")
    with psycopg.connect(url, autocommit=True) as conn:
        wf = make_workflow(conn)
        add_stage(conn, wf, "s")
        row = conn.execute(
            "INSERT INTO workflow_executions (workflow_id, workflow_version)"
            " VALUES (%s, 1) RETURNING id",
            (wf,),
        ).fetchone()
        assert row is not None
        ex = row[0]
        step = conn.execute(
            "INSERT INTO execution_steps (execution_id, task_name) VALUES (%s, 's') RETURNING id",
            (ex,),
        ).fetchone()
        assert step is not None
        for i, at in enumerate(LOGGED):
            conn.execute(
                "INSERT INTO step_logs (step_id, execution_id, message, logged_at, fields)"
                " VALUES (%s, %s, %s, %s, %s)",
                (step[0], ex, f"line {i}", at, f'{{"i": {i}}}'),
            )
        conn.execute("DELETE FROM step_logs WHERE message = 'line 1'")
        return _lines(conn)


def _partitions(conn: Conn) -> dict[str, int]:
    rows = conn.execute(
        "SELECT c.relname, (SELECT count(*) FROM step_logs l WHERE l.tableoid = c.oid)"
        "  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'step_logs'::regclass"
    ).fetchall()
    return dict(rows)


def test_0017_moves_every_line_into_its_utc_month(empty_db_url: str) -> None:
    before = _with_lines_before_0017(empty_db_url)
    with Migrator(empty_db_url) as mig:
        mig.apply(to="0017_partition_step_logs")
    now = datetime.datetime.now(UTC)
    this_month = f"step_logs_{now:%Y_%m}"
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT relkind FROM pg_class WHERE relname = 'step_logs'"
        ).fetchone() == ("p",)
        assert _lines(conn) == before
        partitions = _partitions(conn)
        assert partitions["step_logs_2023_11"] == 1
        assert partitions["step_logs_2023_12"] == 1  # 2023-12-31 22:30 UTC
        assert partitions["step_logs_2024_03"] == 1
        assert partitions["step_logs_default"] == 0
        assert "step_logs_2024_01" not in partitions and this_month in partitions
        # Numbering goes on after the highest id the plain table handed out.
        step_id, ex = before[0][1], before[0][2]
        row = conn.execute(
            "INSERT INTO step_logs (step_id, execution_id, message) VALUES (%s, %s, 'new')"
            " RETURNING id",
            (step_id, ex),
        ).fetchone()
        assert row == (len(LOGGED) + 1,)


def test_0017_rollback_restores_the_plain_table_with_every_line(empty_db_url: str) -> None:
    before = _with_lines_before_0017(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'step_logs' ORDER BY 1"
        ).fetchall()
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'step_logs'::regclass ORDER BY 1"
        ).fetchall()
    with Migrator(empty_db_url) as mig:
        mig.apply(to="0017_partition_step_logs")
        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            step_id, ex = before[0][1], before[0][2]
            # A line in the default partition (a month with no partition) comes back too.
            conn.execute(
                "INSERT INTO step_logs (step_id, execution_id, message, logged_at)"
                " VALUES (%s, %s, 'old', '2001-01-01T00:00:00Z')",
                (step_id, ex),
            )
            after_0017 = _lines(conn)
        assert mig.rollback(steps=1).migrations == ["0017_partition_step_logs"]
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT relkind FROM pg_class WHERE relname = 'step_logs'"
        ).fetchone() == ("r",)
        assert _lines(conn) == after_0017
        assert [r[:4] for r in after_0017[: len(before)]] == [r[:4] for r in before]
        assert (
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'step_logs'"
                " ORDER BY 1"
            ).fetchall()
            == indexes
        )
        assert (
            conn.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = 'step_logs'::regclass ORDER BY 1"
            ).fetchall()
            == constraints
        )
        assert conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'step_logs\\_%%'"
            " AND relkind IN ('r', 'p')"
        ).fetchone() == (0,)
        row = conn.execute(
            "INSERT INTO step_logs (step_id, execution_id, message) VALUES (%s, %s, 'new')"
            " RETURNING id",
            (step_id, ex),
        ).fetchone()
        assert row is not None and row[0] == max(r[0] for r in after_0017) + 1
        assert isinstance(step_id, uuid.UUID)
