"""No lost update under optimistic locking, and a mixed engine load that ends consistent:
starts, claims, completions, failures with retries, dying workers, reapers, cancellations
and the outbox relay all at once, with no error other than the documented ones."""

from __future__ import annotations

import datetime
import functools
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from _runs_factories import add_stage, make_workflow
from _threads import run_threads
from flowledger.database import Database
from flowledger.errors import FlowledgerError, InvalidInput, LeaseLost, StaleWrite
from flowledger.records.events import OutboxEvent
from flowledger.records.identity import NewUser
from flowledger.records.workflows import NewWorkflow, WorkflowPatch

pytestmark = pytest.mark.concurrency

Conn = psycopg.Connection[Any]


def test_eight_threads_of_optimistic_updates_lose_nothing(db: Database) -> None:
    owner = db.users.create(user=NewUser(email="opt@example.com", display_name="O"))
    wf = db.workflows.create(
        workflow=NewWorkflow(owner_id=owner.id, name="counter", description="0")
    )
    per_thread, threads = 15, 8
    stale = [0] * threads
    barrier = threading.Barrier(threads)

    def bump(n: int) -> None:
        barrier.wait()
        done = 0
        while done < per_thread:
            current = db.workflows.get(id=wf.id)
            patch = WorkflowPatch(description=str(int(current.description) + 1))
            try:
                db.workflows.update(id=wf.id, patch=patch, expected_version=current.row_version)
                done += 1
            except StaleWrite:
                stale[n] += 1

    run_threads([functools.partial(bump, n) for n in range(threads)])

    final = db.workflows.get(id=wf.id)
    assert int(final.description) == per_thread * threads  # every increment landed once
    assert final.row_version == 1 + per_thread * threads
    assert sum(stale) > 0, "the threads never collided: the test proved nothing"


def test_mixed_engine_load_stays_consistent(db: Database, conn: Conn) -> None:
    workflow_id = make_workflow(conn)
    for name in ("a", "b", "c"):
        add_stage(
            conn,
            workflow_id,
            name,
            max_attempts=3,
            backoff_base_seconds=0.05,
            backoff_max_seconds=0.2,
        )
    stop = time.monotonic() + 6.0
    allowed = (LeaseLost,)
    unexpected: list[BaseException] = []
    stats = dict.fromkeys(
        ("started", "completed", "failed", "abandoned", "lease_lost", "cancelled", "relayed"), 0
    )
    lock = threading.Lock()

    def count(key: str, n: int = 1) -> None:
        with lock:
            stats[key] += n

    def loop(body: Callable[[random.Random], None], seed: int) -> Callable[[], None]:
        def run() -> None:
            rng = random.Random(seed)
            while time.monotonic() < stop:
                try:
                    body(rng)
                except allowed:
                    count("lease_lost")
                except FlowledgerError as exc:
                    unexpected.append(exc)
                    return

        return run

    def starter(rng: random.Random) -> None:
        db.executions.start(workflow_id=workflow_id, parameters={"n": rng.randrange(100)})
        count("started")
        time.sleep(0.02)

    def worker(name: str) -> Callable[[random.Random], None]:
        def body(rng: random.Random) -> None:
            claimed = db.steps.claim(worker_id=name, limit=5, lease=datetime.timedelta(seconds=1))
            if not claimed:
                time.sleep(0.01)
            for step in claimed:
                roll = rng.random()
                if roll < 0.05:
                    count("abandoned")  # the worker "dies": the reaper must requeue it
                elif roll < 0.25:
                    db.steps.fail(
                        step_id=step.id, worker_id=name, attempt=step.attempt, error="boom"
                    )
                    count("failed")
                else:
                    db.steps.heartbeat(step_id=step.id, worker_id=name, attempt=step.attempt)
                    db.steps.complete(step_id=step.id, worker_id=name, attempt=step.attempt)
                    count("completed")

        return body

    def reaper(rng: random.Random) -> None:
        db.steps.reap(batch=20)
        time.sleep(0.1)

    def canceller(rng: random.Random) -> None:
        time.sleep(0.2)
        row = conn_for_cancel.execute(
            "SELECT id FROM workflow_executions WHERE status = 'running' ORDER BY random() LIMIT 1"
        ).fetchone()
        if row is None:
            return
        try:
            db.executions.cancel(id=row[0])
            count("cancelled")
        except InvalidInput as exc:  # finished in the meantime: a documented refusal
            assert "illegal workflow_executions status transition" in str(exc)

    delivered: list[uuid.UUID] = []

    def relay(rng: random.Random) -> None:
        def handler(events: list[OutboxEvent]) -> None:
            delivered.extend(e.id for e in events)

        result = db.outbox.relay(handler=handler, batch=50)
        count("relayed", result.published)
        time.sleep(0.05)

    with psycopg.connect(db.url, autocommit=True) as conn_for_cancel:
        bodies: list[Callable[[random.Random], None]] = [
            starter,
            worker("w1"),
            worker("w2"),
            worker("w3"),
            reaper,
            reaper,
            canceller,
            relay,
        ]
        run_threads([loop(body, seed) for seed, body in enumerate(bodies)])

    assert not unexpected, f"undocumented errors: {unexpected[:3]}"
    assert stats["started"] > 20 and stats["completed"] > 20 and stats["failed"] > 0
    # A running step always holds a lease; a finished step never does.
    assert (
        _one(
            conn,
            "SELECT count(*) FROM execution_steps"
            " WHERE (status = 'running') <> (lease_owner IS NOT NULL)",
        )
        == 0
    )
    # A completed execution has every step completed or skipped.
    assert (
        _one(
            conn,
            """SELECT count(*) FROM workflow_executions e WHERE e.status = 'completed'
        AND EXISTS (SELECT 1 FROM execution_steps s WHERE s.execution_id = e.id
                     AND s.status NOT IN ('completed', 'skipped'))""",
        )
        == 0
    )
    # A cancelled execution has no step left to run. (Completions racing the cancel are
    # proven by test_claims; timestamps here are transaction start times, so a completion
    # that committed first may still carry a later completed_at than the cancel.)
    assert (
        _one(
            conn,
            """SELECT count(*) FROM execution_steps s JOIN workflow_executions e
        ON e.id = s.execution_id WHERE e.status = 'cancelled'
        AND s.status IN ('pending', 'queued', 'running')""",
        )
        == 0
    )
    # Every attempt a step counts has its row, each closed once the step left 'running'.
    assert (
        _one(
            conn,
            """SELECT count(*) FROM execution_steps s WHERE s.attempt <>
        (SELECT count(*) FROM step_attempts a WHERE a.step_id = s.id)""",
        )
        == 0
    )
    assert (
        _one(
            conn,
            """SELECT count(*) FROM step_attempts a JOIN execution_steps s
        ON s.id = a.step_id WHERE a.finished_at IS NULL
        AND NOT (s.status = 'running' AND a.attempt = s.attempt)""",
        )
        == 0
    )
    # The relay delivered each event at most once.
    assert len(delivered) == len(set(delivered)) == stats["relayed"]


def _one(conn: Conn, sql: str) -> Any:
    row = conn.execute(sql.encode()).fetchone()
    assert row is not None
    return row[0]
