"""Wake-ups: whatever makes steps claimable sends one notification per transaction, and a
waiting worker returns on it (or after its timeout)."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from _runs_factories import add_stage, expire_lease, make_workflow
from flowledger.database import Database
from flowledger.errors import InvalidInput
from flowledger.records.runs import StartRequest

Conn = psycopg.Connection[Any]


def _drained(wake: Any) -> None:
    while wake.wait(0.05):
        pass


def test_a_start_wakes_a_waiting_worker_once(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a", with_items=[1, 2, 3])
    with db.wake_ups() as wake:
        assert wake.wait(0.05) is False  # nothing happened yet
        db.executions.start_many(requests=[StartRequest(workflow_id=wf)] * 5)
        assert wake.wait(5) is True
        assert wake.wait(0.2) is False  # 5 executions, 15 steps: one notification


def test_a_waiting_worker_returns_as_soon_as_a_start_commits(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a")
    woke: list[float] = []
    with db.wake_ups() as wake:
        ready = threading.Event()

        def waiter() -> None:
            ready.set()
            if wake.wait(10):
                woke.append(time.monotonic())

        thread = threading.Thread(target=waiter)
        thread.start()
        ready.wait()
        time.sleep(0.05)
        started = time.monotonic()
        db.executions.start(workflow_id=wf)
        thread.join()
    assert woke and woke[0] - started < 2.0


def test_promotions_resumes_retries_and_requeues_wake_workers(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a", max_attempts=2)
    add_stage(conn, wf, "b")
    with db.wake_ups() as wake:
        ex = db.executions.start(workflow_id=wf)
        _drained(wake)
        [a] = db.steps.claim(worker_id="w")
        assert wake.wait(0.1) is False  # a claim makes nothing claimable
        expire_lease(conn, a.id)
        db.steps.reap()  # requeued
        assert wake.wait(2) is True
        [a] = db.steps.claim(worker_id="w")
        db.executions.pause(id=ex.id)
        db.steps.complete(step_id=a.id, worker_id="w", attempt=a.attempt)
        assert wake.wait(0.1) is False  # paused: nothing promoted
        db.executions.resume(id=ex.id)
        assert wake.wait(2) is True  # b queued on resume
        [b] = db.steps.claim(worker_id="w")
        db.executions.fail(id=ex.id, error="stop")
        _drained(wake)
        db.executions.retry(id=ex.id)
        assert wake.wait(2) is True
        assert b.task_name == "b"


def test_wait_refuses_a_bad_timeout(db: Database) -> None:
    with db.wake_ups() as wake:
        for bad in (-1, float("nan"), float("inf"), "1", True):
            with pytest.raises(InvalidInput, match="timeout"):
                wake.wait(bad)  # type: ignore[arg-type]
