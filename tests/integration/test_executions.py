"""Executions: start (version pin, fan-out, idempotency, outbox), reads, lifecycle, retention."""

from __future__ import annotations

import datetime
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from _runs_factories import add_stage, bump_definition, make_user, make_workflow, outbox_events
from flowledger.database import Database
from flowledger.errors import InvalidCursor, InvalidInput, NotFound

Conn = psycopg.Connection[Any]


def test_start_pins_version_fans_out_and_announces(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    bump_definition(conn, wf)
    add_stage(conn, wf, "fetch", max_attempts=5, timeout_seconds=60)
    add_stage(conn, wf, "each", with_items=["a", "b", "c"])
    add_stage(conn, wf, "none", with_items=[])
    user = make_user(conn)

    ex = db.executions.start(workflow_id=wf, parameters={"x": 1}, triggered_by=user)

    assert ex.status == "running" and ex.started_at is not None
    # Version 2 from the definition, then one more per stage added.
    assert ex.workflow_version == 5
    assert ex.parameters == {"x": 1} and ex.triggered_by == user
    assert ex.task_graph == {"fetch": [], "each": ["fetch"], "none": ["each"]}
    steps = db.steps.list_by_execution(execution_id=ex.id)
    assert [(s.task_name, s.task_index, s.status) for s in steps] == [
        ("each", 0, "pending"), ("each", 1, "pending"), ("each", 2, "pending"),
        ("fetch", 0, "queued"),
    ]  # fmt: skip
    fetch = steps[-1]
    assert (fetch.max_attempts, fetch.timeout_seconds, fetch.attempt) == (5, 60, 0)
    assert outbox_events(conn, ex.id) == ["execution.started"]


def test_start_with_known_idempotency_key_returns_the_existing_run(
    db: Database, conn: Conn
) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "only")
    first = db.executions.start(workflow_id=wf, idempotency_key="k-1")
    again = db.executions.start(workflow_id=wf, idempotency_key="k-1", parameters={"y": 2})
    assert again == first
    count = conn.execute("SELECT count(*) FROM execution_steps").fetchone()
    assert count == (1,)
    assert outbox_events(conn, first.id) == ["execution.started"]


def test_concurrent_starts_with_one_key_create_one_execution(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "only")
    with ThreadPoolExecutor(4) as pool:
        runs = list(
            pool.map(
                lambda _: db.executions.start(workflow_id=wf, idempotency_key="same"), range(8)
            )
        )
    assert len({r.id for r in runs}) == 1
    assert conn.execute("SELECT count(*) FROM workflow_executions").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM execution_steps").fetchone() == (1,)


def test_start_without_steps_completes_at_once(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    ex = db.executions.start(workflow_id=wf)
    assert ex.status == "completed" and ex.finished_at is not None
    assert outbox_events(conn, ex.id) == ["execution.started", "execution.completed"]


def test_start_errors(db: Database, conn: Conn) -> None:
    with pytest.raises(NotFound):
        db.executions.start(workflow_id=uuid.uuid4())
    with pytest.raises(InvalidInput):
        db.executions.start(workflow_id="not-a-uuid")
    wf = make_workflow(conn)
    with pytest.raises(InvalidInput):
        db.executions.start(workflow_id=wf, idempotency_key="  ")
    with pytest.raises(InvalidInput, match="parent execution"):
        db.executions.start(workflow_id=wf, parent_execution_id=uuid.uuid4())
    assert conn.execute("SELECT count(*) FROM workflow_executions").fetchone() == (0,)


def test_start_inside_a_rolled_back_transaction_leaves_nothing(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "only")
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.executions.start(workflow_id=wf)
        raise RuntimeError("abort")
    for table in ("workflow_executions", "execution_steps", "outbox"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_get_and_list_filters_and_keyset(db: Database, conn: Conn) -> None:
    wf, other = make_workflow(conn), make_workflow(conn)
    add_stage(conn, wf, "s")
    add_stage(conn, other, "s")
    mine = [db.executions.start(workflow_id=wf) for _ in range(5)]
    theirs = db.executions.start(workflow_id=other)
    child = db.executions.start(workflow_id=other, parent_execution_id=mine[0].id)

    assert db.executions.get(id=mine[0].id) == mine[0]
    with pytest.raises(NotFound):
        db.executions.get(id=uuid.uuid4())

    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page = db.executions.list(workflow_id=wf, limit=2, cursor=cursor)
        seen += [e.id for e in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [e.id for e in reversed(mine)]

    assert [e.id for e in db.executions.list(parent_execution_id=mine[0].id).items] == [child.id]
    db.executions.cancel(id=theirs.id)
    assert [e.id for e in db.executions.list(status="cancelled").items] == [theirs.id]
    after = mine[2].created_at
    recent = db.executions.list(workflow_id=wf, created_from=after).items
    assert {e.id for e in recent} == {e.id for e in mine if e.created_at >= after}
    assert db.executions.list(workflow_id=wf, created_to=mine[0].created_at).items == []
    with pytest.raises(InvalidInput):
        db.executions.list(status="bogus")  # type: ignore[arg-type]
    with pytest.raises(InvalidCursor):
        db.executions.list(cursor="garbage")


def test_pause_resume_and_find_paused(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "s")
    ex = db.executions.start(workflow_id=wf)
    paused = db.executions.pause(id=ex.id, reason="maintenance")
    assert (paused.status, paused.pause_reason) == ("paused", "maintenance")
    assert paused.row_version == ex.row_version + 1
    assert db.steps.claim(worker_id="w") == []  # paused executions are not claimed
    assert [e.id for e in db.executions.find_paused()] == [ex.id]
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    assert db.executions.find_paused(paused_before=past) == []

    resumed = db.executions.resume(id=ex.id)
    assert (resumed.status, resumed.pause_reason) == ("running", None)
    assert db.executions.find_paused() == []
    assert db.executions.resume(id=ex.id) == resumed  # already running: as is, no event
    assert outbox_events(conn, ex.id) == [
        "execution.started",
        "execution.paused",
        "execution.resumed",
    ]


def test_illegal_transitions_and_missing_rows(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    ex = db.executions.start(workflow_id=wf)  # no stages: completed
    with pytest.raises(InvalidInput, match="completed -> paused"):
        db.executions.pause(id=ex.id)
    with pytest.raises(InvalidInput, match="completed -> cancelled"):
        db.executions.cancel(id=ex.id)
    for call in (db.executions.pause, db.executions.resume, db.executions.cancel):
        with pytest.raises(NotFound):
            call(id=uuid.uuid4())


def test_resume_completes_an_execution_whose_steps_finished_while_paused(
    db: Database, conn: Conn
) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "s")
    ex = db.executions.start(workflow_id=wf)
    [claimed] = db.steps.claim(worker_id="w")
    db.executions.pause(id=ex.id)
    db.steps.complete(step_id=claimed.id, worker_id="w", attempt=1, outputs={"ok": True})
    assert db.executions.get(id=ex.id).status == "paused"
    assert db.executions.resume(id=ex.id).status == "completed"


def test_cancel_cancels_unfinished_steps_atomically(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a", depends_on=[])
    add_stage(conn, wf, "b", depends_on=[])
    add_stage(conn, wf, "c")
    ex = db.executions.start(workflow_id=wf)
    first, second = db.steps.claim(worker_id="w", limit=2)
    db.steps.complete(step_id=first.id, worker_id="w", attempt=1)

    cancelled = db.executions.cancel(id=ex.id)

    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    statuses = {s.id: s.status for s in db.steps.list_by_execution(execution_id=ex.id)}
    assert statuses[first.id] == "completed"
    assert sorted(statuses.values()) == ["cancelled", "cancelled", "completed"]
    [attempt] = db.steps.list_attempts(step_id=second.id)
    assert attempt.outcome == "cancelled"
    assert db.executions.cancel(id=ex.id) == cancelled  # idempotent, no second event
    assert outbox_events(conn, ex.id) == ["execution.started", "execution.cancelled"]


def test_fail_finishes_the_execution_once(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a")
    ex = db.executions.start(workflow_id=wf)
    failed = db.executions.fail(id=ex.id, error="operator stop")
    assert failed is not None and failed.status == "failed"
    assert failed.error_message == "operator stop"
    assert {s.status for s in db.steps.list_by_execution(execution_id=ex.id)} == {"cancelled"}
    assert db.executions.fail(id=ex.id, error="again") is None
    assert outbox_events(conn, ex.id) == ["execution.started", "execution.failed"]


def test_prune_finished_deletes_old_runs_in_batches_with_their_history(
    db: Database, conn: Conn
) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a")
    old = [db.executions.start(workflow_id=wf) for _ in range(5)]
    for ex in old:
        db.executions.cancel(id=ex.id)
    live = db.executions.start(workflow_id=wf)
    conn.execute(
        "UPDATE workflow_executions SET finished_at = now() - interval '2 days',"
        " started_at = now() - interval '3 days' WHERE status = 'cancelled'"
    )
    recent = db.executions.start(workflow_id=wf)
    db.executions.cancel(id=recent.id)

    assert db.executions.prune_finished(older_than=datetime.timedelta(days=1), batch=2) == 5
    left = {r[0] for r in conn.execute("SELECT id FROM workflow_executions").fetchall()}
    assert left == {live.id, recent.id}
    assert conn.execute("SELECT count(*) FROM execution_steps").fetchone() == (2,)
    with pytest.raises(InvalidInput):
        db.executions.prune_finished(older_than=datetime.timedelta(days=1), batch=0)
