"""Step logs: binary COPY append, keyset reads by step and execution."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import psycopg
import pytest

from _runs_factories import add_stage, make_workflow
from flowledger.database import Database
from flowledger.errors import InvalidCursor, InvalidInput
from flowledger.records.runs import NewLogLine

Conn = psycopg.Connection[Any]
T0 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)


def _two_steps(db: Database, conn: Conn) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    wf = make_workflow(conn)
    add_stage(conn, wf, "s", with_items=[1, 2])
    ex = db.executions.start(workflow_id=wf)
    a, b = db.steps.list_by_execution(execution_id=ex.id)
    return ex.id, a.id, b.id


def test_append_and_page_through_a_steps_lines(db: Database, conn: Conn) -> None:
    ex, a, b = _two_steps(db, conn)
    lines = [
        NewLogLine(
            step_id=a if i % 2 == 0 else b,
            execution_id=ex,
            message=f"line {i}",
            level="warning" if i == 0 else "info",
            fields={"i": i, "nested": {"ok": True}},
            logged_at=T0 + datetime.timedelta(seconds=i),
        )
        for i in range(10)
    ]
    assert db.step_logs.append(lines=lines) == 10

    messages: list[str] = []
    cursor = None
    while True:
        page = db.step_logs.list_by_step(step_id=a, limit=2, cursor=cursor)
        messages += [line.message for line in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert messages == [f"line {i}" for i in range(0, 10, 2)]

    first = db.step_logs.list_by_step(step_id=a, limit=1).items[0]
    assert (first.level, first.fields, first.logged_at) == (
        "warning", {"i": 0, "nested": {"ok": True}}, T0
    )  # fmt: skip
    every = db.step_logs.list_by_execution(execution_id=ex, limit=100)
    assert [line.message for line in every.items] == [f"line {i}" for i in range(10)]
    assert every.next_cursor is None
    with pytest.raises(InvalidCursor):  # a by-step cursor is not valid by execution
        db.step_logs.list_by_execution(execution_id=ex, cursor=page.next_cursor or cursor)


def test_append_defaults_and_errors(db: Database, conn: Conn) -> None:
    ex, a, _ = _two_steps(db, conn)
    assert db.step_logs.append(lines=[]) == 0
    db.step_logs.append(lines=[NewLogLine(step_id=a, execution_id=ex, message="hi")])
    [line] = db.step_logs.list_by_step(step_id=a).items
    assert (line.level, line.fields) == ("info", {})
    with pytest.raises(InvalidInput, match="log level"):
        db.step_logs.append(
            lines=[NewLogLine(step_id=a, execution_id=ex, message="x", level="loud")]  # type: ignore[arg-type]
        )
    bad = NewLogLine(step_id=uuid.uuid4(), execution_id=ex, message="orphan")
    with pytest.raises(InvalidInput, match="step that does not exist"):
        db.step_logs.append(lines=[NewLogLine(step_id=a, execution_id=ex, message="ok"), bad])
    assert len(db.step_logs.list_by_step(step_id=a).items) == 1  # all or nothing


def test_logs_go_with_their_execution(db: Database, conn: Conn) -> None:
    ex, a, _ = _two_steps(db, conn)
    db.step_logs.append(lines=[NewLogLine(step_id=a, execution_id=ex, message="bye")])
    db.executions.cancel(id=ex)
    assert db.executions.prune_finished(older_than=datetime.timedelta(seconds=-60)) == 1
    assert conn.execute("SELECT count(*) FROM step_logs").fetchone() == (0,)
