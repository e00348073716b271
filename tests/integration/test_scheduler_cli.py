"""`flowledger scheduler` as a real command: one pass with --once, the loop stopped by
SIGTERM and SIGINT, a lost database pass retried, and its usage errors."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flowledger.database import Database, connect
from flowledger.errors import Unavailable
from flowledger.records.identity import NewUser
from flowledger.records.workflows import NewWorkflow
from flowledger.tools.scheduler import run_scheduler

# The command and the loop are sync-only tools: `db` is the sync face only.
pytestmark = pytest.mark.sync_face

Conn = psycopg.Connection[Any]


def _every_second(db: Database, name: str = "heartbeat") -> uuid.UUID:
    owner = db.users.create(user=NewUser(email=f"{name}@example.com", display_name="Ops"))
    wf = db.workflows.create(
        workflow=NewWorkflow(
            owner_id=owner.id,
            name=name,
            status="active",
            trigger_type="schedule",
            schedule="* * * * * *",
        )
    )
    return wf.id


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "flowledger", "scheduler", *argv]


def _executions(conn: Conn, workflow_id: uuid.UUID) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT id::text, idempotency_key FROM workflow_executions WHERE workflow_id = %s"
        " ORDER BY idempotency_key",
        (workflow_id,),
    ).fetchall()
    return [(str(i), str(k)) for i, k in rows]


def test_once_fires_what_is_due_and_exits(
    db: Database, conn: Conn, db_url: str, tmp_path: Path
) -> None:
    workflow_id = _every_second(db)
    time.sleep(1.2)  # a tick falls after the rule was set

    proc = subprocess.run(
        _cli("--once", "--json", "--database", db_url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["passes"], report["fired"]) == (1, 1)
    [tick] = report["ticks"]
    assert tick["workflow_id"] == str(workflow_id)
    assert _executions(conn, workflow_id) == [
        (tick["execution_id"], "schedule:" + tick["tick"].replace("+00:00", "Z"))
    ]


def test_the_loop_with_json_prints_one_document_when_stopped(
    db: Database, conn: Conn, db_url: str, tmp_path: Path
) -> None:
    workflow_id = _every_second(db)
    with subprocess.Popen(
        _cli("--interval", "0.5", "--json", "--database", db_url),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        deadline = time.monotonic() + 60
        while len(_executions(conn, workflow_id)) < 2:
            assert time.monotonic() < deadline, "the loop fired fewer than 2 ticks in 60 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)

    assert (proc.returncode, err) == (0, "")
    report = json.loads(out)
    assert report["fired"] == len(_executions(conn, workflow_id))
    assert report["passes"] >= 2 and report["failed_passes"] == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_loop_fires_each_tick_once_until_stopped(
    db: Database, conn: Conn, db_url: str, tmp_path: Path, sig: signal.Signals
) -> None:
    workflow_id = _every_second(db)
    with subprocess.Popen(
        _cli("--interval", "0.5", "--database", db_url),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert "stop with Ctrl-C" in proc.stdout.readline()
        deadline = time.monotonic() + 60
        while len(_executions(conn, workflow_id)) < 3:
            assert time.monotonic() < deadline, "the loop fired fewer than 3 ticks in 60 s"
            time.sleep(0.1)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)

    assert proc.returncode == 0, err
    assert "Traceback" not in err
    fired = [line for line in out.splitlines() if line.startswith("fired ")]
    assert out.splitlines()[-1].startswith("scheduler stopped: passes ")
    started = _executions(conn, workflow_id)
    # One execution per tick, each reported once, consecutive seconds.
    assert sorted(line.rsplit(": ", 1)[1] for line in fired) == sorted(i for i, _ in started)
    keys = [key for _, key in started]
    assert len(set(keys)) == len(keys) >= 3


def test_a_pass_that_loses_the_database_is_logged_and_tried_again(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop outlives a failed pass: Unavailable is a warning, the next pass runs."""
    stop = threading.Event()
    calls: list[int] = []

    with connect(db_url, min_size=1, max_size=1) as db:
        real = db.schedules.fire_due

        def flaky(**kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise Unavailable("connection lost")
            stop.set()
            return real(**kwargs)

        db.schedules.fire_due = flaky  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger="flowledger.engine"):
            stats = run_scheduler(db, interval=0.05, limit=10, stop=stop, report=lambda f: None)

    assert (stats.passes, stats.failed_passes, len(calls)) == (2, 1, 2)
    assert "scheduler pass failed, trying again in 0.05 s: connection lost" in caplog.text


def test_once_raises_a_failed_pass(db_url: str) -> None:
    with connect(db_url, min_size=1, max_size=1) as db:

        def lost(**kwargs: Any) -> Any:
            raise Unavailable("connection lost")

        db.schedules.fire_due = lost  # type: ignore[method-assign]
        with pytest.raises(Unavailable):
            run_scheduler(
                db, interval=1, limit=10, stop=threading.Event(), report=lambda f: None, once=True
            )


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--interval", "0"], "argument --interval: must be seconds in (0, 86400], got '0'"),
        (["--interval", "soon"], "argument --interval: must be seconds in (0, 86400]"),
        (["--interval", "86401"], "argument --interval: must be seconds in (0, 86400]"),
        (["--limit", "0"], "argument --limit: must be an integer 1..1000, got '0'"),
        (["--limit", "1001"], "argument --limit: must be an integer 1..1000"),
    ],
)
def test_usage_errors(argv: list[str], error: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        _cli(*argv, "--database", "postgresql://x@127.0.0.1:1/none"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert error in proc.stderr.splitlines()[-1]


def test_a_database_not_migrated_is_an_error(empty_db_url: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        _cli("--once", "--database", empty_db_url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert line.startswith("flowledger: error: the database is not fully migrated")
