"""`flowledger maintain`, run as a real command: step_logs' partitions made ahead, old
months dropped with --drop-older-than, what it did printed (or one JSON document)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from _runs_factories import add_stage, make_workflow
from flowledger.database import connect
from flowledger.records.runs import NewLogLine

Conn = psycopg.Connection[Any]
UTC = datetime.UTC


def maintain(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`flowledger maintain ARGV` with no database configured but what ARGV says."""
    unset = ("DATABASE_URL", "FLOWLEDGER_URL", "FLOWLEDGER_HOME")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-m", "flowledger", "maintain", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _month(at: datetime.datetime, ahead: int) -> str:
    index = at.year * 12 + at.month - 1 + ahead
    return f"step_logs_{index // 12:04d}_{index % 12 + 1:02d}"


def _old_months_with_lines(db_url: str, conn: Conn) -> None:
    """Partitions for January to March 2020, one line in each, and one in the default."""
    with connect(db_url, min_size=1, max_size=1) as db:
        db.step_logs.ensure_partitions(
            months_ahead=2, now=datetime.datetime(2020, 1, 1, tzinfo=UTC)
        )
        wf = make_workflow(conn)
        add_stage(conn, wf, "s")
        ex = db.executions.start(workflow_id=wf)
        [step] = db.steps.list_by_execution(execution_id=ex.id)
        db.step_logs.append(
            lines=[
                NewLogLine(step_id=step.id, execution_id=ex.id, message=m, logged_at=at)
                for m, at in [
                    ("jan", datetime.datetime(2020, 1, 9, tzinfo=UTC)),
                    ("feb", datetime.datetime(2020, 2, 9, tzinfo=UTC)),
                    ("mar", datetime.datetime(2020, 3, 9, tzinfo=UTC)),
                    ("old", datetime.datetime(2019, 5, 9, tzinfo=UTC)),
                ]
            ]
        )


def _messages(conn: Conn) -> list[str]:
    return [r[0] for r in conn.execute("SELECT message FROM step_logs ORDER BY logged_at")]


def test_maintain_makes_the_months_ahead_and_says_so(db_url: str, tmp_path: Path) -> None:
    now = datetime.datetime.now(UTC)
    proc = maintain("--database", db_url, "--months-ahead", "5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(" [")[0] for line in lines[:2]] == [
        f"created {_month(now, 4)}",
        f"created {_month(now, 5)}",
    ]
    assert lines[-1].startswith("6 monthly partitions; step_logs_default ")

    again = maintain("--database", db_url, "--months-ahead", "5", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert (doc["created"], doc["dropped"], doc["cutoff"]) == ([], [], None)
    assert [p["name"] for p in doc["partitions"]] == [
        *(_month(now, i) for i in range(6)),
        "step_logs_default",
    ]


def test_maintain_drops_the_months_older_than_a_date(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    _old_months_with_lines(db_url, conn)
    proc = maintain("--database", db_url, "--drop-older-than", "2020-03-01", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["cutoff"] == "2020-03-01T00:00:00Z"
    assert [(p["name"], p["starts_at"], p["ends_at"], p["is_default"]) for p in doc["dropped"]] == [
        ("step_logs_2020_01", "2020-01-01T00:00:00Z", "2020-02-01T00:00:00Z", False),
        ("step_logs_2020_02", "2020-02-01T00:00:00Z", "2020-03-01T00:00:00Z", False),
    ]
    assert _messages(conn) == ["old", "mar"]  # the default partition is never dropped


def test_maintain_drops_the_months_older_than_a_number_of_days(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    _old_months_with_lines(db_url, conn)
    proc = maintain("--database", db_url, "--drop-older-than", "30", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    dropped = [
        line.split(" ")[1] for line in proc.stdout.splitlines() if line.startswith("dropped")
    ]
    assert dropped == ["step_logs_2020_01", "step_logs_2020_02", "step_logs_2020_03"]
    assert _messages(conn) == ["old"]
    now = datetime.datetime.now(UTC)
    kept = conn.execute(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'step_logs'::regclass"
    ).fetchone()
    assert kept == (5,)  # this month, the three next, the default
    assert _month(now, 0) in {r[0] for r in conn.execute("SELECT relname FROM pg_class")}


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--months-ahead", "-1"], "--months-ahead: must be a whole number of months"),
        (["--months-ahead", "61"], "--months-ahead: must be a whole number of months"),
        (["--months-ahead", "three"], "--months-ahead: must be a whole number of months"),
        (["--drop-older-than", "-5"], "--drop-older-than: must be a number of days"),
        (["--drop-older-than", "soon"], "--drop-older-than: must be a number of days"),
        (["--drop-older-than", "2026-01-31T00:00:00"], "--drop-older-than: must be a number"),
        (["--drop-older-than", "99999999"], "--drop-older-than: must be at most 36,525 days"),
    ],
)
def test_maintain_refuses_bad_options_before_connecting(
    argv: list[str], error: str, tmp_path: Path
) -> None:
    proc = maintain(*argv, "--database", "postgresql://x@127.0.0.1:1/nowhere", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and error in proc.stderr, proc.stderr


def test_maintain_refuses_a_database_not_migrated(empty_db_url: str, tmp_path: Path) -> None:
    proc = maintain("--database", empty_db_url, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("flowledger: error: the database is not fully migrated")
    assert "Traceback" not in proc.stderr


def test_maintain_needs_a_database_named(tmp_path: Path) -> None:
    proc = maintain(cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("flowledger: error: no database configured")
