"""What flowledger logs, on its own loggers: slow calls (name, duration, rows; never the
parameters), start-up retries, lost pooled connections, pool waits, reaper outcomes and
migrations applied, and nothing at INFO in normal operation."""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
import time
from typing import Any

import psycopg
import pytest

import flowledger
from _runs_factories import add_stage, expire_lease, make_workflow
from flowledger.errors import Unavailable
from flowledger.records.identity import NewUser
from flowledger.tools.migrate import Migrator

Conn = psycopg.Connection[Any]


def _flowledger(
    caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG
) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("flowledger") and r.levelno >= level]


def test_normal_operation_is_quiet_at_info(
    db_url: str, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "only")
    caplog.set_level(logging.INFO, logger="flowledger")
    with flowledger.connect(db_url, connect_attempts=1) as db:
        db.users.create(user=NewUser(email="quiet@example.com", display_name="Q"))
        run = db.executions.start(workflow_id=wf)
        [step] = db.steps.claim(worker_id="w")
        db.steps.complete(step_id=step.id, worker_id="w", attempt=step.attempt)
        assert db.executions.get(id=run.id).status == "completed"
        assert db.steps.reap().requeued == []
    assert _flowledger(caplog, logging.INFO) == []


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_slow_call_is_logged_with_its_name_never_its_parameters(
    db_url: str, caplog: pytest.LogCaptureFixture, face: str
) -> None:
    caplog.set_level(logging.WARNING, logger="flowledger.query")
    user = NewUser(email="secret-person@example.com", display_name="S")
    if face == "sync":
        with flowledger.connect(db_url, connect_attempts=1, slow_query_seconds=0) as db:
            db.users.create(user=user)
    else:

        async def body() -> None:
            adb = await flowledger.connect_async(db_url, connect_attempts=1, slow_query_seconds=0)
            try:
                await adb.users.create(user=user)
            finally:
                await adb.close()

        asyncio.run(body())
    [record] = _flowledger(caplog)
    assert record.name == "flowledger.query" and record.levelno == logging.WARNING
    assert record.getMessage().startswith("slow query insert_user: ")
    assert (record.query, record.rows) == ("insert_user", 1)  # type: ignore[attr-defined]
    assert record.duration_s >= 0  # type: ignore[attr-defined]
    assert "secret-person" not in record.getMessage() + repr(record.__dict__)


def test_calls_under_the_threshold_are_not_logged(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flowledger")
    with flowledger.connect(db_url, connect_attempts=1, slow_query_seconds=60) as db:
        db.users.list(limit=5)
    with flowledger.connect(db_url, connect_attempts=1, slow_query_seconds=None) as db:
        db.users.list(limit=5)
    assert _flowledger(caplog) == []


def test_start_up_retries_are_logged_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="flowledger.pool")
    url = "postgresql://app:hunter2secret@127.0.0.1:1/nowhere"
    with pytest.raises(Unavailable):
        flowledger.connect(url, connect_attempts=3, connect_backoff=0.01, connect_timeout=1)
    records = _flowledger(caplog)
    assert [r.getMessage().split(" to reach ")[0] for r in records] == [
        "attempt 1 of 3",
        "attempt 2 of 3",
    ]
    assert all("hunter2secret" not in r.getMessage() for r in records)


def test_a_lost_pooled_connection_is_logged_and_replaced(
    db_url: str, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flowledger.pool")
    with flowledger.connect(db_url, connect_attempts=1, min_size=1, max_size=1) as db:
        db.users.list(limit=1)
        others = (
            "FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND application_name = 'flowledger'"
        )
        conn.execute(f"SELECT pg_terminate_backend(pid) {others}")
        # The pool replaces a connection the server has closed: wait until it has.
        deadline = time.monotonic() + 5
        while conn.execute(f"SELECT count(*) {others}").fetchone() != (0,):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        while not _flowledger(caplog) and time.monotonic() < deadline:
            db.users.list(limit=1)  # served by a replacement connection
            time.sleep(0.05)
    [record] = _flowledger(caplog)
    assert record.getMessage().startswith("a pooled connection was lost")


def test_a_long_wait_for_a_pooled_connection_is_logged(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flowledger.pool")
    settings: dict[str, Any] = {"max_size": 1, "pool_wait_warning_seconds": 0.05}
    with flowledger.connect(db_url, connect_attempts=1, **settings) as db:
        held = threading.Event()

        def hold() -> None:
            with db.pinned():
                held.set()
                time.sleep(0.3)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(5)
        db.users.list(limit=1)
        holder.join()
    [record] = _flowledger(caplog)
    assert record.getMessage().startswith("waited ")
    assert "pooled connection (size 1 of max 1" in record.getMessage()


def test_the_reaper_logs_what_it_requeued(
    db_url: str, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "only")
    caplog.set_level(logging.WARNING, logger="flowledger.engine")
    with flowledger.connect(db_url, connect_attempts=1) as db:
        db.executions.start(workflow_id=wf)
        [step] = db.steps.claim(worker_id="gone", lease=datetime.timedelta(minutes=1))
        expire_lease(conn, step.id)
        assert db.steps.reap().requeued == [step.id]
    [record] = _flowledger(caplog)
    assert record.getMessage() == "reaper: 1 steps requeued, 0 failed, 0 timed out"


def test_migrations_applied_are_logged_at_info(
    empty_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flowledger.migrate")
    with Migrator(empty_db_url) as mig:
        applied = mig.apply().migrations
    messages = [r.getMessage() for r in _flowledger(caplog)]
    assert [m.split(" (")[0] for m in messages] == [f"applied {m}" for m in applied]


def test_the_readme_json_lines_example_renders_a_slow_call(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Logs", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)  # the README's own configuration, as written
    logger = logging.getLogger("flowledger")
    try:
        with flowledger.connect(db_url, connect_attempts=1, slow_query_seconds=0) as db:
            db.users.list(limit=1)
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    [line] = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert line["logger"] == "flowledger.query" and line["query"] == "list_users"
    assert line["rows"] == 0 and line["duration_s"] >= 0


def test_the_command_leaves_the_logging_set_up_as_it_found_it(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowledger.tools.cli import EXIT_OK, main

    logger = logging.getLogger("flowledger")
    before = (list(logger.handlers), logger.propagate)
    assert main(["stats", "--database", db_url]) == EXIT_OK
    assert main(["--json", "stats", "--database", db_url]) == EXIT_OK
    capsys.readouterr()
    assert (list(logger.handlers), logger.propagate) == before
