"""Starting many executions in one statement: each as `start` starts one, in request order,
idempotent per key, all or nothing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from _runs_factories import add_stage, make_user, make_workflow
from flowledger.database import Database
from flowledger.errors import InvalidInput, NotFound
from flowledger.records.runs import StartRequest

Conn = psycopg.Connection[Any]


def _count(conn: Conn, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_start_many_starts_each_request_in_order(db: Database, conn: Conn) -> None:
    first, second, empty = make_workflow(conn), make_workflow(conn), make_workflow(conn)
    add_stage(conn, first, "a")
    add_stage(conn, first, "b")
    add_stage(conn, second, "each", with_items=[1, 2])
    user = make_user(conn)
    taken = db.executions.start(workflow_id=first, idempotency_key="taken")

    started = db.executions.start_many(
        requests=[
            StartRequest(workflow_id=first, parameters={"n": 1}, triggered_by=user),
            StartRequest(workflow_id=str(second), parameters={"n": 2}, idempotency_key="k"),
            StartRequest(workflow_id=first, idempotency_key="taken"),
            StartRequest(workflow_id=second, idempotency_key="k"),  # twice in one batch
            StartRequest(workflow_id=empty),
        ]
    )

    assert [e.parameters for e in started] == [{"n": 1}, {"n": 2}, {}, {"n": 2}, {}]
    assert started[0].triggered_by == user and started[0].task_graph == {"a": [], "b": ["a"]}
    assert started[2] == taken and started[3] == started[1]
    assert [e.status for e in started] == ["running", "running", "running", "running", "completed"]
    steps = db.steps.list_by_execution(execution_id=started[0].id)
    assert [(s.task_name, s.status) for s in steps] == [("a", "queued"), ("b", "pending")]
    assert len(db.steps.list_by_execution(execution_id=started[1].id)) == 2
    events = conn.execute(
        "SELECT event_type FROM outbox WHERE aggregate_id = %s ORDER BY id", (started[4].id,)
    ).fetchall()
    assert events == [("execution.started",), ("execution.completed",)]
    assert _count(conn, "workflow_executions") == 4  # taken, 0, 1, 4


def test_start_many_is_all_or_nothing(db: Database, conn: Conn) -> None:
    good, archived = make_workflow(conn), make_workflow(conn)
    add_stage(conn, good, "a")
    conn.execute("UPDATE workflows SET status = 'archived' WHERE id = %s", (archived,))
    with pytest.raises(InvalidInput, match="is archived"):
        db.executions.start_many(
            requests=[StartRequest(workflow_id=good), StartRequest(workflow_id=archived)]
        )
    with pytest.raises(NotFound):
        db.executions.start_many(
            requests=[StartRequest(workflow_id=good), StartRequest(workflow_id=make_user(conn))]
        )
    with pytest.raises(InvalidInput, match="does not exist"):
        db.executions.start_many(
            requests=[StartRequest(workflow_id=good, triggered_by=make_workflow(conn))]
        )
    assert (_count(conn, "workflow_executions"), _count(conn, "execution_steps")) == (0, 0)
    assert _count(conn, "outbox") == 0


def test_start_many_checks_its_arguments(db: Database) -> None:
    assert db.executions.start_many(requests=[]) == []
    for bad in ("nope", [{"workflow_id": "x"}], [StartRequest(workflow_id="not-a-uuid")]):
        with pytest.raises(InvalidInput):
            db.executions.start_many(requests=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="idempotency_key"):
        db.executions.start_many(
            requests=[
                StartRequest(
                    workflow_id="01a24000-0000-7000-8000-000000000000", idempotency_key=" "
                )
            ]
        )
