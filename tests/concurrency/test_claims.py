"""Claims under real concurrency: no step is claimed twice or lost, reapers never double-requeue,
and a cancellation never lets a step complete after it."""

from __future__ import annotations

import datetime
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
import pytest

from flowledger.database import Database
from flowledger.errors import LeaseLost

pytestmark = pytest.mark.concurrency

Conn = psycopg.Connection[Any]
T = TypeVar("T")
LEASE = datetime.timedelta(minutes=5)


def _execution_with_steps(conn: Conn, count: int) -> uuid.UUID:
    """A running execution holding `count` queued steps, made with plain SQL."""
    row = conn.execute(
        """
        WITH u AS (INSERT INTO users (email, display_name)
                   VALUES ('c-' || gen_random_uuid() || '@example.com', 'C') RETURNING id),
             w AS (INSERT INTO workflows (owner_id, name)
                   SELECT id, 'wf-' || left(md5(random()::text), 10) FROM u RETURNING id)
        INSERT INTO workflow_executions (workflow_id, workflow_version, status, started_at)
        SELECT id, 1, 'running', now() FROM w
        RETURNING id
        """
    ).fetchone()
    assert row is not None
    execution_id: uuid.UUID = row[0]
    conn.execute(
        """
        INSERT INTO execution_steps (execution_id, task_name, task_index, status)
        SELECT %s, 'bulk', g, 'queued' FROM generate_series(0, %s - 1) AS g
        """,
        (execution_id, count),
    )
    return execution_id


def _in_threads(n: int, work: Callable[[int], T]) -> list[T]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(work, range(n)))


def test_four_workers_claim_every_step_exactly_once(db: Database, conn: Conn) -> None:
    total = 20_000
    _execution_with_steps(conn, total)

    def drain(worker: int) -> list[uuid.UUID]:
        mine: list[uuid.UUID] = []
        while batch := db.steps.claim(worker_id=f"w{worker}", limit=50, lease=LEASE):
            mine += [s.id for s in batch]
        return mine

    claims = [step for mine in _in_threads(4, drain) for step in mine]

    assert len(claims) == total
    assert len(set(claims)) == total
    left = conn.execute("SELECT count(*) FROM execution_steps WHERE status <> 'running'")
    assert left.fetchone() == (0,)
    attempts = conn.execute("SELECT count(*), count(DISTINCT step_id) FROM step_attempts")
    assert attempts.fetchone() == (total, total)


def test_racing_reapers_requeue_each_expired_step_once(db: Database, conn: Conn) -> None:
    total = 600
    _execution_with_steps(conn, total)
    assert len(db.steps.claim(worker_id="dead", limit=total, lease=LEASE)) == total
    conn.execute("UPDATE execution_steps SET lease_expires_at = now() - interval '1 minute'")

    def reap(_: int) -> list[uuid.UUID]:
        mine: list[uuid.UUID] = []
        while (result := db.steps.reap(batch=40)).requeued:
            assert result.failed == [] and result.timed_out == []
            mine += result.requeued
        return mine

    requeued = Counter(step for mine in _in_threads(2, reap) for step in mine)

    assert len(requeued) == total
    assert set(requeued.values()) == {1}
    outcomes = conn.execute("SELECT outcome, count(*) FROM step_attempts GROUP BY outcome")
    assert outcomes.fetchall() == [("lease_lost", total)]
    queued = conn.execute("SELECT count(*) FROM execution_steps WHERE status = 'queued'")
    assert queued.fetchone() == (total,)


def test_no_step_completes_after_its_execution_was_cancelled(db: Database, conn: Conn) -> None:
    total = 300
    execution_id = _execution_with_steps(conn, total)
    steps = db.steps.claim(worker_id="w", limit=total, lease=LEASE)
    cancelled = threading.Event()
    halfway = threading.Event()
    done = Counter[str]()
    late_successes: list[uuid.UUID] = []
    lock = threading.Lock()

    def complete(worker: int) -> None:
        for n, step in enumerate(steps[worker::4]):
            after_cancel = cancelled.is_set()
            try:
                db.steps.complete(step_id=step.id, worker_id="w", attempt=step.attempt)
                outcome = "completed"
            except LeaseLost:
                outcome = "lost"
            with lock:
                done[outcome] += 1
                if outcome == "completed" and after_cancel:
                    late_successes.append(step.id)
            if n == 10:
                halfway.set()

    def cancel() -> None:
        halfway.wait(10)
        time.sleep(0.01)
        db.executions.cancel(id=execution_id)
        cancelled.set()

    canceller = threading.Thread(target=cancel)
    canceller.start()
    _in_threads(4, complete)
    canceller.join()

    assert late_successes == []
    assert done["completed"] + done["lost"] == total
    assert done["completed"] > 0 and done["lost"] > 0
    counts = dict(
        conn.execute("SELECT status, count(*) FROM execution_steps GROUP BY status").fetchall()
    )
    assert counts == {"completed": done["completed"], "cancelled": done["lost"]}
    status = conn.execute(
        "SELECT status FROM workflow_executions WHERE id = %s", (execution_id,)
    ).fetchone()
    assert status == ("cancelled",)
