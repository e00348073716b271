"""`flowledger seed --scale N`: deterministic, consistent, refuses to run twice."""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg
import pytest

from flowledger.errors import InvalidInput
from flowledger.tools.cli import EXIT_ERROR, EXIT_OK, main
from flowledger.tools.volume import generate


def _fingerprint(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute(
        """SELECT (SELECT md5(string_agg(id::text || status, ',' ORDER BY id))
                     FROM workflow_executions),
                  (SELECT md5(string_agg(id::text || status, ',' ORDER BY id))
                     FROM execution_steps),
                  (SELECT count(*) FROM step_logs), (SELECT count(*) FROM outbox),
                  (SELECT count(*) FROM memory_items)"""
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_volume_is_deterministic_and_consistent(db_url: str, empty_db_url: str) -> None:
    from flowledger.tools.migrate import Migrator

    with Migrator(empty_db_url) as mig:
        mig.apply()
    prints = []
    for url in (db_url, empty_db_url):
        with psycopg.connect(url, autocommit=True) as conn:
            report = generate(conn, scale=300, seed=7)
            prints.append(_fingerprint(conn))
    assert prints[0] == prints[1]
    assert report.rows["workflow_executions"] == 300
    assert report.rows["execution_steps"] == 900
    with psycopg.connect(db_url) as conn:
        # Every running execution has exactly one leased step; steps of finished ones ended.
        bad = conn.execute(
            """SELECT count(*) FROM workflow_executions e
                WHERE e.status = 'running'
                  AND (SELECT count(*) FROM execution_steps s
                        WHERE s.execution_id = e.id AND s.status = 'running') <> 1"""
        ).fetchone()
        assert bad == (0,)
        versions = conn.execute("SELECT count(*) FROM workflow_versions").fetchone()
        # Version 1 from the insert, version 2 from the stages added to it.
        assert versions is not None and versions[0] == 2 * report.rows["workflows"]
        analyzed = conn.execute(
            "SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL"
            " FROM pg_stat_user_tables WHERE relname = 'workflow_executions'"
        ).fetchone()
        assert analyzed == (True,)


def test_volume_refuses_a_second_run_and_bad_scale(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(InvalidInput, match="scale must be at least 1"):
            generate(conn, scale=0)
        generate(conn, scale=10)
        with pytest.raises(InvalidInput, match="already holds generated volume"):
            generate(conn, scale=10)


def test_volume_reports_progress_per_top_level_table(db_url: str) -> None:
    ticks: list[tuple[str, int, int]] = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        generate(conn, scale=30, progress=lambda *tick: ticks.append(tick))

    assert ticks == [
        ("users", 5, 5),
        ("workflows", 10, 10),
        ("workflow_executions", 30, 30),
        ("memory_items", 100, 100),
        ("analyze", 0, 1),
        ("analyze", 1, 1),
    ]


def test_a_failed_copy_raises_and_leaves_no_thread_behind(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE outbox ADD COLUMN region text NOT NULL")
        threads = threading.active_count()
        with pytest.raises(psycopg.errors.NotNullViolation) as failure:
            generate(conn, scale=30)

        # Checked while the error (and the frames it holds) is still alive.
        assert failure.value.sqlstate == "23502"
        assert threading.active_count() == threads
        # The chunk holding the failed copy was rolled back whole.
        assert conn.execute("SELECT count(*) FROM workflow_executions").fetchone() == (0,)


def test_seed_scale_command(
    db_url: str, empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["seed", "--scale", "50", "--database", db_url, "--json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["rows"]["workflow_executions"] == 50
    assert main(["seed", "--scale", "50", "--database", empty_db_url]) == EXIT_ERROR
    assert "not fully migrated" in capsys.readouterr().err
