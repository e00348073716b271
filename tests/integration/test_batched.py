"""Batched worker writes: many completions, failures or heartbeats of one worker in one
transaction, compare-and-set per step, a lost lease reported per step."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import psycopg
import pytest

from _runs_factories import add_stage, expire_lease, make_workflow
from flowledger.database import Database
from flowledger.errors import InvalidInput
from flowledger.records.runs import ClaimedStep, StepCompletion, StepFailure, StepLease

Conn = psycopg.Connection[Any]


def _claim(db: Database, worker: str = "w") -> list[ClaimedStep]:
    return db.steps.claim(worker_id=worker, limit=100)


def _statuses(db: Database, execution_id: uuid.UUID) -> dict[tuple[str, int], str]:
    steps = db.steps.list_by_execution(execution_id=execution_id)
    return {(s.task_name, s.task_index): s.status for s in steps}


def test_complete_many_completes_promotes_and_reports_lost_leases(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a", depends_on=[])
    add_stage(conn, wf, "b", depends_on=[])
    add_stage(conn, wf, "c", depends_on=["a", "b"])
    add_stage(conn, wf, "solo", depends_on=[])
    first = db.executions.start(workflow_id=wf)
    second = db.executions.start(workflow_id=wf)
    claimed = _claim(db)
    assert len(claimed) == 6
    stolen = next(c for c in claimed if c.execution_id == second.id and c.task_name == "solo")
    expire_lease(conn, stolen.id)
    db.steps.reap()  # requeued: the batch's completion of it must not be written

    done = [
        StepCompletion(step_id=c.id, attempt=c.attempt, outputs={"t": c.task_name}) for c in claimed
    ]
    result = db.steps.complete_many(worker_id="w", completions=done)

    assert result.lost == [stolen.id]
    assert result.completed == [c.id for c in claimed if c.id != stolen.id]
    # a and b of one execution completed in the same batch: c counted down twice, queued.
    assert _statuses(db, first.id) == {
        ("a", 0): "completed", ("b", 0): "completed", ("c", 0): "queued", ("solo", 0): "completed"
    }  # fmt: skip
    assert _statuses(db, second.id)["solo", 0] == "queued"
    assert db.steps.get(id=stolen.id).outputs is None
    [c_first, c_second, solo] = sorted(_claim(db), key=lambda s: (s.execution_id, s.task_name))
    assert c_first.inputs == {"a": {"t": "a"}, "b": {"t": "b"}}
    last = [StepCompletion(step_id=s.id, attempt=s.attempt) for s in (c_first, c_second, solo)]
    assert db.steps.complete_many(worker_id="w", completions=last).lost == []
    assert {db.executions.get(id=e.id).status for e in (first, second)} == {"completed"}
    # One event per finished execution, written with the batch.
    finished = conn.execute(
        "SELECT count(*) FROM outbox WHERE event_type = 'execution.completed'"
    ).fetchone()
    assert finished == (2,)


def test_fail_many_requeues_fails_and_reports_lost_leases(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "retried", depends_on=[], backoff_base_seconds=0)
    add_stage(conn, wf, "doomed", depends_on=[], max_attempts=1)
    add_stage(conn, wf, "after", depends_on=["doomed"])
    ex = db.executions.start(workflow_id=wf)
    retried, doomed = sorted(_claim(db), key=lambda s: s.task_name, reverse=True)
    failures = [
        StepFailure(step_id=retried.id, attempt=retried.attempt, error="flaky"),
        StepFailure(step_id=doomed.id, attempt=doomed.attempt, error="broken"),
        StepFailure(step_id=uuid.uuid4(), attempt=1, error="unknown step"),
    ]
    result = db.steps.fail_many(worker_id="w", failures=failures)
    assert [(s.task_name, s.status) for s in result.steps] == [
        ("retried", "queued"), ("doomed", "failed")
    ]  # fmt: skip
    assert result.lost == [failures[2].step_id]
    # fail_fast: the failure skipped its dependent and failed the execution.
    assert _statuses(db, ex.id) == {
        ("retried", 0): "cancelled", ("doomed", 0): "failed", ("after", 0): "skipped"
    }  # fmt: skip
    assert db.executions.get(id=ex.id).status == "failed"
    [attempt] = db.steps.list_attempts(step_id=doomed.id)
    assert (attempt.outcome, attempt.error) == ("failed", "broken")


def test_heartbeat_many_extends_held_leases_and_reports_lost_ones(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "each", with_items=[1, 2, 3])
    db.executions.start(workflow_id=wf)
    steps = _claim(db)
    expire_lease(conn, steps[0].id)
    db.steps.reap()
    lease = datetime.timedelta(minutes=10)
    held = [StepLease(step_id=s.id, attempt=s.attempt) for s in steps]
    result = db.steps.heartbeat_many(worker_id="w", steps=held, lease=lease)
    assert result.lost == [steps[0].id]
    assert set(result.leases) == {steps[1].id, steps[2].id}
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=9)
    assert all(expiry > soon for expiry in result.leases.values())
    assert db.steps.heartbeat_many(worker_id="other", steps=held[1:]).lost == [
        steps[1].id, steps[2].id
    ]  # fmt: skip


def test_batches_are_checked_before_anything_is_written(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a")
    db.executions.start(workflow_id=wf)
    [step] = _claim(db)
    one = StepCompletion(step_id=step.id, attempt=step.attempt)
    with pytest.raises(InvalidInput, match="more than once"):
        db.steps.complete_many(worker_id="w", completions=[one, one])
    with pytest.raises(InvalidInput, match="StepCompletion"):
        db.steps.complete_many(worker_id="w", completions=[{"step_id": step.id}])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="at most 1000"):
        db.steps.complete_many(worker_id="w", completions=[one] * 1001)
    with pytest.raises(InvalidInput, match="attempt"):
        db.steps.fail_many(
            worker_id="w", failures=[StepFailure(step_id=step.id, attempt=0, error="x")]
        )
    with pytest.raises(InvalidInput, match="error must be a string"):
        db.steps.fail_many(
            worker_id="w",
            failures=[StepFailure(step_id=step.id, attempt=1, error=None)],  # type: ignore[arg-type]
        )
    with pytest.raises(InvalidInput, match="step id"):
        db.steps.heartbeat_many(worker_id="w", steps=[StepLease(step_id="nope", attempt=1)])
    assert db.steps.get(id=step.id).status == "running"
    assert db.steps.complete_many(worker_id="w", completions=[]).completed == []


def test_a_claim_completion_and_finish_call_no_rule_trigger_function(
    db: Database, conn: Conn
) -> None:
    # The rules live in the triggers' WHEN conditions and the hot statements write
    # updated_at themselves: PL/pgSQL runs only to refuse a change or for other writes.
    # The transaction's own function counters see it (track_functions = 'pl');
    # note_run_slots, which every execution's finish calls, shows that they count.
    wf = make_workflow(conn)
    add_stage(conn, wf, "only", depends_on=[])
    started = db.executions.start(workflow_id=wf)
    watched = [
        "set_updated_at",
        "check_step_transition",
        "check_execution_transition",
        "check_step_attempt_write_once",
        "note_run_slots",
    ]
    with db.pinned() as pinned:
        pinned.connection.execute("SET track_functions = 'pl'")
        with pinned.transaction() as tx:
            [step] = tx.steps.claim(worker_id="w", limit=1)
            done = [StepCompletion(step_id=step.id, attempt=step.attempt)]
            assert tx.steps.complete_many(worker_id="w", completions=done).lost == []
            calls = dict(
                tx.connection.execute(
                    "SELECT proname, coalesce(pg_stat_get_xact_function_calls(oid), 0)"
                    "  FROM pg_proc WHERE proname = ANY (%s)",
                    [watched],
                ).fetchall()
            )
    assert calls == {
        "set_updated_at": 0,
        "check_step_transition": 0,
        "check_execution_transition": 0,
        "check_step_attempt_write_once": 0,
        "note_run_slots": 1,
    }
    assert db.executions.get(id=started.id).status == "completed"
    after = db.steps.get(id=step.id)
    assert after.status == "completed"
    assert after.updated_at == after.completed_at  # written by the completion itself
