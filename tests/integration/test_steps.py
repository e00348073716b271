"""Steps: claim order and leases, heartbeat, complete, fail with backoff, reaper, bulk."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import psycopg
import pytest

from _runs_factories import add_stage, age_start, expire_lease, make_workflow, outbox_events
from flowledger.database import Database
from flowledger.errors import InvalidInput, LeaseLost, NotFound
from flowledger.records.runs import Execution

Conn = psycopg.Connection[Any]
LEASE = datetime.timedelta(seconds=30)


def _start(db: Database, conn: Conn, **stage: Any) -> Execution:
    wf = make_workflow(conn)
    add_stage(conn, wf, "work", **stage)
    return db.executions.start(workflow_id=wf)


def test_claim_leases_in_priority_order_with_what_a_worker_needs(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "fan", with_items=[{"n": 0}, {"n": 1}, {"n": 2}], config={"k": "v"})
    ex = db.executions.start(workflow_id=wf)
    steps = db.steps.list_by_execution(execution_id=ex.id)
    conn.execute("UPDATE execution_steps SET priority = -1 WHERE id = %s", (steps[2].id,))

    before = datetime.datetime.now(datetime.UTC)
    claimed = db.steps.claim(worker_id="w1", limit=2, lease=LEASE)

    assert [c.id for c in claimed] == [steps[2].id, steps[0].id]
    first = claimed[0]
    assert (first.attempt, first.lease_owner, first.item) == (1, "w1", {"n": 2})
    assert (first.action_ref, first.config) == ("core.noop", {"k": "v"})
    assert first.lease_expires_at >= before + LEASE - datetime.timedelta(seconds=1)
    stored = db.steps.get(id=first.id)
    assert (stored.status, stored.lease_owner, stored.attempt) == ("running", "w1", 1)
    assert stored.started_at is not None and stored.heartbeat_at is not None
    [attempt] = db.steps.list_attempts(step_id=first.id)
    assert (attempt.attempt, attempt.worker_id, attempt.outcome) == (1, "w1", None)
    assert [c.id for c in db.steps.claim(worker_id="w2", limit=5)] == [steps[1].id]
    assert db.steps.claim(worker_id="w2") == []


def test_claim_skips_steps_not_yet_due(db: Database, conn: Conn) -> None:
    ex = _start(db, conn)
    conn.execute(
        "UPDATE execution_steps SET available_at = now() + interval '1 hour'"
        " WHERE execution_id = %s",
        (ex.id,),
    )
    assert db.steps.claim(worker_id="w") == []


def test_claim_validates_input(db: Database) -> None:
    with pytest.raises(InvalidInput):
        db.steps.claim(worker_id=" ")
    with pytest.raises(InvalidInput):
        db.steps.claim(worker_id="w", limit=0)
    with pytest.raises(InvalidInput):
        db.steps.claim(worker_id="w", lease=datetime.timedelta(0))
    with pytest.raises(NotFound):
        db.steps.get(id=uuid.uuid4())


def test_heartbeat_extends_only_the_holders_lease(db: Database, conn: Conn) -> None:
    _start(db, conn)
    [step] = db.steps.claim(worker_id="w", lease=datetime.timedelta(seconds=5))
    extended = db.steps.heartbeat(
        step_id=step.id, worker_id="w", attempt=1, lease=datetime.timedelta(minutes=10)
    )
    assert extended > step.lease_expires_at + datetime.timedelta(minutes=9)
    for worker, attempt in (("other", 1), ("w", 2)):
        with pytest.raises(LeaseLost):
            db.steps.heartbeat(step_id=step.id, worker_id=worker, attempt=attempt)
    assert db.steps.get(id=step.id).lease_expires_at == extended


def test_complete_stores_outputs_and_completes_the_execution(db: Database, conn: Conn) -> None:
    ex = _start(db, conn, with_items=[1, 2])
    a, b = db.steps.claim(worker_id="w", limit=2)
    db.steps.complete(step_id=a.id, worker_id="w", attempt=1, outputs={"r": 1})
    assert db.executions.get(id=ex.id).status == "running"
    with pytest.raises(LeaseLost):
        db.steps.complete(step_id=b.id, worker_id="intruder", attempt=1)
    db.steps.complete(step_id=b.id, worker_id="w", attempt=1, outputs=[1, 2])

    done = db.steps.get(id=a.id)
    assert (done.status, done.outputs, done.lease_owner) == ("completed", {"r": 1}, None)
    assert done.completed_at is not None and done.duration_ms is not None
    assert done.duration_ms >= 0
    assert [x.outcome for x in db.steps.list_attempts(step_id=a.id)] == ["completed"]
    assert db.executions.get(id=ex.id).status == "completed"
    assert outbox_events(conn, ex.id) == ["execution.started", "execution.completed"]
    with pytest.raises(LeaseLost):  # a second completion changes nothing
        db.steps.complete(step_id=a.id, worker_id="w", attempt=1, outputs={"r": 2})
    assert db.steps.get(id=a.id).outputs == {"r": 1}


def test_fail_retries_with_capped_jittered_backoff_then_fails_the_run(
    db: Database, conn: Conn
) -> None:
    ex = _start(db, conn, max_attempts=3, backoff_base_seconds=10, backoff_max_seconds=15)
    [step] = db.steps.claim(worker_id="w")
    before = datetime.datetime.now(datetime.UTC)
    retried = db.steps.fail(step_id=step.id, worker_id="w", attempt=1, error="boom")
    # attempt 1: base * 2^0 = 10 s, +-20 %
    assert retried.status == "queued" and retried.error == "boom"
    delay = (retried.available_at - before).total_seconds()
    assert 7.5 <= delay <= 12.5
    assert [s.id for s in db.steps.find_pending_retries()] == [step.id]
    assert db.steps.claim(worker_id="w") == []  # still backing off

    conn.execute("UPDATE execution_steps SET available_at = now() WHERE id = %s", (step.id,))
    [again] = db.steps.claim(worker_id="w")
    assert again.attempt == 2
    retried = db.steps.fail(step_id=step.id, worker_id="w", attempt=2, error="boom")
    # attempt 2: 20 s capped at 15 s, +-20 %
    # (measured from before the first failure: allow a second of test time)
    assert 12 <= (retried.available_at - before).total_seconds() <= 18 + 1

    conn.execute("UPDATE execution_steps SET available_at = now() WHERE id = %s", (step.id,))
    [last] = db.steps.claim(worker_id="w")
    assert last.attempt == 3
    failed = db.steps.fail(step_id=step.id, worker_id="w", attempt=3, error="final")
    assert failed.status == "failed" and failed.completed_at is not None
    run = db.executions.get(id=ex.id)
    assert run.status == "failed" and run.error_message is not None
    assert "final" in run.error_message
    outcomes = [x.outcome for x in db.steps.list_attempts(step_id=step.id)]
    assert outcomes == ["failed", "failed", "failed"]
    assert outbox_events(conn, ex.id) == ["execution.started", "execution.failed"]
    with pytest.raises(LeaseLost):
        db.steps.fail(step_id=step.id, worker_id="w", attempt=3, error="late")


def test_reap_requeues_expired_leases_and_fails_exhausted_ones(db: Database, conn: Conn) -> None:
    ex = _start(db, conn, with_items=[1, 2], max_attempts=1)
    other = _start(db, conn, max_attempts=2)
    claimed = db.steps.claim(worker_id="w", limit=3)
    for c in claimed:
        expire_lease(conn, c.id)
    retry = next(c for c in claimed if c.execution_id == other.id)

    result = db.steps.reap()

    assert result.requeued == [retry.id]
    assert sorted(result.failed) == sorted(c.id for c in claimed if c.execution_id == ex.id)
    assert result.timed_out == []
    assert db.steps.get(id=retry.id).status == "queued"
    assert [x.outcome for x in db.steps.list_attempts(step_id=retry.id)] == ["lease_lost"]
    assert db.executions.get(id=ex.id).status == "failed"
    assert db.executions.get(id=other.id).status == "running"
    with pytest.raises(LeaseLost):  # the old holder may not write any more
        db.steps.complete(step_id=retry.id, worker_id="w", attempt=1)
    [reclaimed] = db.steps.claim(worker_id="w2")
    assert (reclaimed.id, reclaimed.attempt) == (retry.id, 2)
    assert db.steps.reap() == db.steps.reap()  # nothing left to do


def test_reap_times_out_overdue_steps(db: Database, conn: Conn) -> None:
    ex = _start(db, conn, timeout_seconds=60, max_attempts=1)
    [step] = db.steps.claim(worker_id="w")
    assert db.steps.find_timed_out() == []
    age_start(conn, step.id, 120)
    assert [s.id for s in db.steps.find_timed_out()] == [step.id]
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    assert db.steps.find_timed_out(now=past) == []

    result = db.steps.reap()

    assert (result.timed_out, result.requeued, result.failed) == ([step.id], [], [])
    assert db.steps.get(id=step.id).status == "timed_out"
    assert [x.outcome for x in db.steps.list_attempts(step_id=step.id)] == ["timed_out"]
    assert db.executions.get(id=ex.id).status == "failed"
    with pytest.raises(InvalidInput):
        db.steps.reap(batch=0)


def test_reap_requeues_a_timed_out_step_while_attempts_remain(db: Database, conn: Conn) -> None:
    ex = _start(db, conn, timeout_seconds=60, max_attempts=2)
    [step] = db.steps.claim(worker_id="w")
    age_start(conn, step.id, 120)

    result = db.steps.reap()

    assert (result.timed_out, result.requeued, result.failed) == ([], [step.id], [])
    assert db.steps.get(id=step.id).status == "queued"
    assert db.executions.get(id=ex.id).status == "running"
    [again] = db.steps.claim(worker_id="w2")
    assert (again.id, again.attempt) == (step.id, 2)
    age_start(conn, step.id, 120)
    assert db.steps.reap().timed_out == [step.id]  # out of attempts now
    outcomes = [x.outcome for x in db.steps.list_attempts(step_id=step.id)]
    assert outcomes == ["timed_out", "timed_out"]
    assert db.executions.get(id=ex.id).status == "failed"


def test_bulk_update_status(db: Database, conn: Conn) -> None:
    ex = _start(db, conn, with_items=[1, 2, 3])
    ids = [s.id for s in db.steps.list_by_execution(execution_id=ex.id)]
    assert db.steps.bulk_update_status(ids=ids[:2], status="skipped") == 2
    assert [s.status for s in db.steps.list_by_execution(execution_id=ex.id)] == [
        "skipped", "skipped", "queued"
    ]  # fmt: skip
    with pytest.raises(InvalidInput, match="queued -> pending"):
        db.steps.bulk_update_status(ids=ids[2:], status="pending")
    for bad in ("running", "bogus"):
        with pytest.raises(InvalidInput):
            db.steps.bulk_update_status(ids=ids, status=bad)
    with pytest.raises(InvalidInput):
        db.steps.bulk_update_status(ids=["nope"], status="skipped")


def test_bulk_update_of_running_steps_closes_their_attempts(db: Database, conn: Conn) -> None:
    ex = _start(db, conn, with_items=[1, 2])
    claimed = db.steps.claim(worker_id="w", limit=2)
    assert len(claimed) == 2
    assert db.steps.bulk_update_status(ids=[claimed[0].id], status="cancelled") == 1
    assert db.steps.bulk_update_status(ids=[claimed[1].id], status="queued") == 1
    attempts = {
        a.step_id: (a.outcome, a.finished_at is not None)
        for s in claimed
        for a in db.steps.list_attempts(step_id=s.id)
    }
    assert attempts == {claimed[0].id: ("cancelled", True), claimed[1].id: ("lease_lost", True)}
    assert db.executions.get(id=ex.id).status == "running"
