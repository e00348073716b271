"""max_running_executions: a capped workflow's executions beyond the cap wait as pending and
start oldest first, in the transaction that frees a slot; its validation."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from _runs_factories import add_stage, make_workflow, outbox_events
from flowledger.database import Database
from flowledger.errors import InvalidInput
from flowledger.records.identity import NewUser
from flowledger.records.runs import Execution, StartRequest
from flowledger.records.workflows import NewWorkflow, WorkflowPatch

Conn = psycopg.Connection[Any]
LEASE = datetime.timedelta(minutes=5)


def capped(conn: Conn, cap: int | None, stages: int = 1) -> uuid.UUID:
    """A workflow with `stages` single-step stages in a chain, capped at `cap`."""
    wf = make_workflow(conn)
    for n in range(stages):
        add_stage(conn, wf, f"s{n}", max_attempts=1)
    conn.execute("UPDATE workflows SET max_running_executions = %s WHERE id = %s", (cap, wf))
    return wf


def statuses(db: Database, executions: list[Execution]) -> list[str]:
    return [db.executions.get(id=e.id).status for e in executions]


def slots(conn: Conn, wf: uuid.UUID) -> int | None:
    row = conn.execute("SELECT running FROM workflow_run_slots WHERE workflow_id = %s", (wf,))
    found = row.fetchone()
    assert found is not None
    value: int | None = found[0]
    return value


def run_to_the_end(db: Database, execution: Execution) -> None:
    """Complete the step of a one-stage execution, claiming it (with whatever else is
    queued) unless worker "w" holds it already."""
    [step] = db.steps.list_by_execution(execution_id=execution.id)
    if step.status == "queued":
        db.steps.claim(worker_id="w", limit=100, lease=LEASE)
        [step] = db.steps.list_by_execution(execution_id=execution.id)
    assert step.status == "running"
    db.steps.complete(step_id=step.id, worker_id="w", attempt=step.attempt, outputs={})


def test_starts_beyond_the_cap_wait_as_pending_with_their_steps(db: Database, conn: Conn) -> None:
    wf = capped(conn, 2)
    runs = [db.executions.start(workflow_id=wf) for _ in range(4)]

    assert [r.status for r in runs] == ["running", "running", "pending", "pending"]
    assert [r.started_at is None for r in runs] == [False, False, True, True]
    assert outbox_events(conn, runs[2].id) == ["execution.pending"]
    assert outbox_events(conn, runs[0].id) == ["execution.started"]
    # Steps exist for a pending execution, but no claim takes them.
    assert [s.status for s in db.steps.list_by_execution(execution_id=runs[3].id)] == ["queued"]
    claimed = db.steps.claim(worker_id="w", limit=10, lease=LEASE)
    assert sorted(s.execution_id for s in claimed) == sorted(r.id for r in runs[:2])
    assert slots(conn, wf) == 2
    pending = db.executions.list(workflow_id=wf, status="pending").items
    assert sorted(e.id for e in pending) == sorted(r.id for r in runs[2:])
    assert db.executions.get(id=runs[2].id) == runs[2]


def test_a_completed_execution_starts_the_oldest_pending_one(db: Database, conn: Conn) -> None:
    wf = capped(conn, 1)
    first, second, third = (db.executions.start(workflow_id=wf) for _ in range(3))
    with conn.cursor() as listen:
        listen.execute("LISTEN flowledger_steps")

    run_to_the_end(db, first)

    assert statuses(db, [first, second, third]) == ["completed", "running", "pending"]
    started = db.executions.get(id=second.id)
    assert started.started_at is not None and started.row_version == second.row_version + 1
    assert outbox_events(conn, second.id) == ["execution.pending", "execution.started"]
    payload = conn.execute(
        "SELECT payload FROM outbox WHERE aggregate_id = %s AND event_type = 'execution.started'",
        (second.id,),
    ).fetchone()
    assert payload == ({"workflow_id": str(wf), "workflow_version": 2, "status": "running"},)
    assert [n.channel for n in conn.notifies(timeout=2, stop_after=1)] == ["flowledger_steps"]
    assert slots(conn, wf) == 1


@pytest.mark.parametrize("how", ["fail", "cancel", "fail_step"])
def test_a_failed_or_cancelled_execution_frees_its_slot(db: Database, conn: Conn, how: str) -> None:
    wf = capped(conn, 1)
    first, second = (db.executions.start(workflow_id=wf) for _ in range(2))
    if how == "fail":
        db.executions.fail(id=first.id, error="boom")
    elif how == "cancel":
        db.executions.cancel(id=first.id)
    else:
        [step] = db.steps.claim(worker_id="w", limit=10, lease=LEASE)
        db.steps.fail(step_id=step.id, worker_id="w", attempt=step.attempt, error="boom")
    assert statuses(db, [first, second]) == [
        "cancelled" if how == "cancel" else "failed",
        "running",
    ]


def test_a_paused_execution_keeps_its_slot(db: Database, conn: Conn) -> None:
    wf = capped(conn, 1)
    first, second = (db.executions.start(workflow_id=wf) for _ in range(2))
    db.executions.pause(id=first.id)
    assert statuses(db, [first, second]) == ["paused", "pending"]
    db.executions.resume(id=first.id)
    assert statuses(db, [first, second]) == ["running", "pending"]
    db.executions.pause(id=first.id)
    db.executions.cancel(id=first.id)  # a paused execution that ends frees its slot
    assert statuses(db, [first, second]) == ["cancelled", "running"]


def test_failing_a_pending_execution_frees_nothing(db: Database, conn: Conn) -> None:
    wf = capped(conn, 1)
    first, second, third = (db.executions.start(workflow_id=wf) for _ in range(3))
    failed = db.executions.fail(id=second.id, error="not needed")
    assert failed is not None and failed.status == "failed"
    assert statuses(db, [first, second, third]) == ["running", "failed", "pending"]
    assert slots(conn, wf) == 1


def test_cancelling_a_pending_execution_frees_nothing(db: Database, conn: Conn) -> None:
    wf = capped(conn, 1)
    first, second, third = (db.executions.start(workflow_id=wf) for _ in range(3))
    cancelled = db.executions.cancel(id=second.id)
    assert (cancelled.status, cancelled.started_at) == ("cancelled", None)
    assert statuses(db, [first, second, third]) == ["running", "cancelled", "pending"]
    assert [s.status for s in db.steps.list_by_execution(execution_id=second.id)] == ["cancelled"]
    run_to_the_end(db, first)
    assert statuses(db, [first, second, third]) == ["completed", "cancelled", "running"]


def test_a_pending_execution_cannot_be_paused_or_resumed(db: Database, conn: Conn) -> None:
    wf = capped(conn, 1)
    db.executions.start(workflow_id=wf)
    waiting = db.executions.start(workflow_id=wf)
    with pytest.raises(InvalidInput, match="pending -> paused"):
        db.executions.pause(id=waiting.id)
    with pytest.raises(InvalidInput, match="is pending: only a paused execution"):
        db.executions.resume(id=waiting.id)
    assert db.executions.get(id=waiting.id) == waiting


def test_resuming_a_finished_execution_is_refused(db: Database, conn: Conn) -> None:
    wf = capped(conn, None, stages=0)
    done = db.executions.start(workflow_id=wf)
    with pytest.raises(InvalidInput, match="is completed: only a paused execution"):
        db.executions.resume(id=done.id)


def test_an_execution_without_steps_completes_even_when_every_slot_is_taken(
    db: Database, conn: Conn
) -> None:
    wf = capped(conn, 1)
    db.executions.start(workflow_id=wf)
    conn.execute("DELETE FROM workflow_stages WHERE workflow_id = %s", (wf,))
    empty = db.executions.start(workflow_id=wf)
    assert empty.status == "completed"
    assert outbox_events(conn, empty.id) == ["execution.started", "execution.completed"]
    assert slots(conn, wf) == 1


def test_start_many_admits_in_request_order_per_workflow(db: Database, conn: Conn) -> None:
    one, two, free = capped(conn, 1), capped(conn, 2), capped(conn, None)
    order = [one, two, free, one, two, two, free, one]
    runs = db.executions.start_many(requests=[StartRequest(workflow_id=w) for w in order])
    assert [r.status for r in runs] == [
        "running", "running", "running", "pending", "running", "pending", "running", "pending",
    ]  # fmt: skip
    assert (slots(conn, one), slots(conn, two), slots(conn, free)) == (1, 2, None)


def test_a_used_idempotency_key_takes_no_slot(db: Database, conn: Conn) -> None:
    wf = capped(conn, 2)
    first = db.executions.start(workflow_id=wf, idempotency_key="k")
    runs = db.executions.start_many(
        requests=[
            StartRequest(workflow_id=wf, idempotency_key="k"),
            StartRequest(workflow_id=wf, idempotency_key="n"),
            StartRequest(workflow_id=wf, idempotency_key="n"),
            StartRequest(workflow_id=wf),
        ]
    )
    assert runs[0] == first
    assert [r.status for r in runs[1:]] == ["running", "running", "pending"]
    assert runs[1] == runs[2]


def test_raising_the_cap_starts_pending_executions_and_lowering_stops_nothing(
    db: Database, conn: Conn
) -> None:
    user = db.users.create(user=NewUser(email="cap@example.com", display_name="Cap"))
    wf = db.workflows.create(
        workflow=NewWorkflow(owner_id=user.id, name="capped", max_running_executions=1)
    )
    assert wf.max_running_executions == 1
    add_stage(conn, wf.id, "only")
    runs = [db.executions.start(workflow_id=wf.id) for _ in range(5)]
    assert statuses(db, runs) == ["running"] + ["pending"] * 4

    wf = db.workflows.update(
        id=wf.id, patch=WorkflowPatch(max_running_executions=3), expected_version=wf.row_version
    )
    assert wf.max_running_executions == 3
    assert statuses(db, runs) == ["running"] * 3 + ["pending"] * 2

    wf = db.workflows.update(
        id=wf.id, patch=WorkflowPatch(max_running_executions=1), expected_version=wf.row_version
    )
    assert statuses(db, runs) == ["running"] * 3 + ["pending"] * 2
    run_to_the_end(db, runs[0])
    run_to_the_end(db, runs[1])
    # Two slots freed, but the cap is 1 and one execution still runs: nothing starts.
    assert statuses(db, runs) == ["completed"] * 2 + ["running"] + ["pending"] * 2

    wf = db.workflows.update(
        id=wf.id, patch=WorkflowPatch(description="x"), expected_version=wf.row_version
    )
    assert wf.max_running_executions == 1  # an unset field keeps the cap
    wf = db.workflows.update(
        id=wf.id, patch=WorkflowPatch(max_running_executions=None), expected_version=wf.row_version
    )
    assert wf.max_running_executions is None
    assert statuses(db, runs) == ["completed"] * 2 + ["running"] * 3
    assert slots(conn, wf.id) is None


def test_a_cap_set_on_a_busy_workflow_counts_what_runs(db: Database, conn: Conn) -> None:
    wf = capped(conn, None)
    runs = [db.executions.start(workflow_id=wf) for _ in range(3)]
    db.executions.pause(id=runs[2].id)
    conn.execute("UPDATE workflows SET max_running_executions = 2 WHERE id = %s", (wf,))
    assert slots(conn, wf) == 3
    later = db.executions.start(workflow_id=wf)
    assert later.status == "pending"
    run_to_the_end(db, runs[0])
    assert db.executions.get(id=later.id).status == "pending"  # 2 still hold a slot
    db.executions.cancel(id=runs[2].id)
    assert db.executions.get(id=later.id).status == "running"


def test_a_retry_takes_a_free_slot_or_waits_its_turn(db: Database, conn: Conn) -> None:
    wf = capped(conn, 1)
    failed = db.executions.start(workflow_id=wf)
    db.executions.fail(id=failed.id, error="boom")
    running = db.executions.start(workflow_id=wf)
    later = db.executions.start(workflow_id=wf)

    retried = db.executions.retry(id=failed.id)
    assert (retried.status, retried.attempt) == ("pending", 2)
    assert retried.started_at == failed.started_at
    assert outbox_events(conn, failed.id)[-1] == "execution.retried"
    # The retried execution is older than `later`: it starts first.
    run_to_the_end(db, running)
    assert statuses(db, [failed, later]) == ["running", "pending"]
    run_to_the_end(db, failed)
    assert statuses(db, [failed, later]) == ["completed", "running"]

    run_to_the_end(db, later)
    again = db.executions.start(workflow_id=wf)
    db.executions.fail(id=again.id, error="boom")
    assert db.executions.retry(id=again.id).status == "running"  # a slot is free
    assert slots(conn, wf) == 1


def test_deleting_a_running_execution_frees_its_slot(db: Database, conn: Conn) -> None:
    wf = capped(conn, 1)
    first, second = (db.executions.start(workflow_id=wf) for _ in range(2))
    conn.execute("DELETE FROM workflow_executions WHERE id = %s", (first.id,))
    assert db.executions.get(id=second.id).status == "running"
    assert slots(conn, wf) == 1


def test_deleting_a_capped_workflow_deletes_its_slot_row(db: Database, conn: Conn) -> None:
    wf = capped(conn, 1)
    db.executions.start(workflow_id=wf)
    db.executions.start(workflow_id=wf)
    db.workflows.delete(id=wf)
    gone = conn.execute("SELECT count(*) FROM workflow_run_slots WHERE workflow_id = %s", (wf,))
    assert gone.fetchone() == (0,)


def test_an_uncapped_workflow_keeps_no_count(db: Database, conn: Conn) -> None:
    wf = capped(conn, None)
    runs = [db.executions.start(workflow_id=wf) for _ in range(3)]
    assert statuses(db, runs) == ["running"] * 3
    run_to_the_end(db, runs[0])
    assert slots(conn, wf) is None


# --- validation ---------------------------------------------------------------

BAD_CAPS = st.one_of(
    st.booleans(),
    st.integers(max_value=0),
    st.integers(min_value=2**31),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)


def _table_state(conn: Conn) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM workflows), (SELECT count(*) FROM workflow_run_slots),"
        " (SELECT string_agg(row_version || ':' || coalesce(max_running_executions, 0), ',')"
        "    FROM workflows)"
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_a_bad_cap_is_refused_naming_it_and_changes_nothing(db: Database, conn: Conn) -> None:
    user = db.users.create(user=NewUser(email="bad@example.com", display_name="Bad"))
    wf = db.workflows.create(workflow=NewWorkflow(owner_id=user.id, name="kept"))
    before = _table_state(conn)

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
    @given(cap=BAD_CAPS)
    def refused(cap: Any) -> None:
        with pytest.raises(InvalidInput, match="max_running_executions must be an integer"):
            db.workflows.create(
                workflow=NewWorkflow(owner_id=user.id, name="new", max_running_executions=cap)
            )
        with pytest.raises(InvalidInput, match="max_running_executions must be an integer"):
            db.workflows.update(
                id=wf.id,
                patch=WorkflowPatch(max_running_executions=cap),
                expected_version=wf.row_version,
            )
        assert _table_state(conn) == before

    refused()


def test_every_cap_in_range_is_stored(db: Database) -> None:
    user = db.users.create(user=NewUser(email="ok@example.com", display_name="Ok"))
    wf = db.workflows.create(workflow=NewWorkflow(owner_id=user.id, name="ok"))

    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
    @given(cap=st.one_of(st.none(), st.integers(min_value=1, max_value=2**31 - 1)))
    def stored(cap: int | None) -> None:
        nonlocal wf
        wf = db.workflows.update(
            id=wf.id,
            patch=WorkflowPatch(max_running_executions=cap),
            expected_version=wf.row_version,
        )
        assert wf.max_running_executions == cap
        assert db.workflows.get(id=wf.id).max_running_executions == cap

    stored()
    assert WorkflowPatch().max_running_executions is UNSET


def test_a_start_after_a_raise_in_one_transaction_counts_what_the_raise_started(
    db: Database, conn: Conn
) -> None:
    wf = capped(conn, 1)
    runs = [db.executions.start(workflow_id=wf) for _ in range(3)]
    version = db.workflows.get(id=wf).row_version
    with db.transaction() as tx:
        tx.workflows.update(
            id=wf, patch=WorkflowPatch(max_running_executions=3), expected_version=version
        )
        later = tx.executions.start(workflow_id=wf)
    assert later.status == "pending"
    assert statuses(db, [*runs, later]) == ["running"] * 3 + ["pending"]
    assert slots(conn, wf) == 3
