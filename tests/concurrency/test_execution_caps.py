"""max_running_executions under real concurrency: starters, workers that complete, fail and
cancel, and a sampler on its own connection. The cap is never exceeded, no execution is
left pending with a free slot, and the executions that waited start in id order."""

from __future__ import annotations

import datetime
import functools
import random
import threading
import time
import uuid
from collections import Counter
from typing import Any

import psycopg
import pytest

from _runs_factories import add_stage, make_workflow
from _threads import run_threads
from flowledger.database import Database
from flowledger.records.runs import StartRequest, StepCompletion
from flowledger.repositories.queries import query

pytestmark = pytest.mark.concurrency

Conn = psycopg.Connection[Any]
LEASE = datetime.timedelta(minutes=5)
CAPS = (2, 3)
STARTERS, WORKERS, PER_STARTER = 3, 3, 16
# The sampler gives up after this long: executions still pending or running then are the
# failure the test reports, not a hang.
SETTLE_SECONDS = 90.0


def _capped(conn: Conn, cap: int) -> uuid.UUID:
    wf = make_workflow(conn)
    add_stage(conn, wf, "only", max_attempts=1)
    conn.execute("UPDATE workflows SET max_running_executions = %s WHERE id = %s", (cap, wf))
    return wf


def _unfinished(conn: Conn, workflows: list[uuid.UUID]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM workflow_executions"
        " WHERE workflow_id = ANY(%s) AND status IN ('pending', 'running', 'paused')",
        (workflows,),
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("round_", range(3))
def test_the_cap_holds_and_every_execution_runs_once_in_order(
    db: Database, conn: Conn, db_url: str, round_: int
) -> None:
    workflows = [_capped(conn, cap) for cap in CAPS]
    started = threading.Event()  # every starter is done
    settled = threading.Event()  # nothing is pending or running any more
    starters_left = [STARTERS]
    total = [0]
    lock = threading.Lock()
    peaks: Counter[uuid.UUID] = Counter()
    slot_peaks: Counter[uuid.UUID] = Counter()

    def starter(n: int) -> None:
        rng = random.Random(f"{round_}-s{n}")
        made = 0
        while made < PER_STARTER:
            wf = workflows[rng.randrange(len(workflows))]
            if rng.random() < 0.3:
                batch = [StartRequest(workflow_id=rng.choice(workflows)) for _ in range(3)]
                made += len(db.executions.start_many(requests=batch))
            else:
                db.executions.start(workflow_id=wf)
                made += 1
            time.sleep(rng.random() * 0.01)
        with lock:
            total[0] += made
            starters_left[0] -= 1
            if starters_left[0] == 0:
                started.set()

    def worker(n: int) -> None:
        rng = random.Random(f"{round_}-w{n}")
        me = f"w{n}"
        while not settled.is_set():
            steps = db.steps.claim(worker_id=me, limit=4, lease=LEASE)
            if not steps:
                time.sleep(0.005)
                continue
            done = []
            for step in steps:
                roll = rng.random()
                if roll < 0.1:
                    db.steps.fail(step_id=step.id, worker_id=me, attempt=step.attempt, error="x")
                elif roll < 0.2:
                    db.executions.cancel(id=step.execution_id)
                else:
                    done.append(StepCompletion(step_id=step.id, attempt=step.attempt))
            if done:
                # One transaction finishing executions of both workflows at once.
                db.steps.complete_many(worker_id=me, completions=done)

    def sampler() -> None:
        with psycopg.connect(db_url, autocommit=True) as own:
            deadline = time.monotonic() + SETTLE_SECONDS
            while time.monotonic() < deadline:
                for wf, running, held in own.execute(
                    "SELECT w.id,"
                    "  (SELECT count(*) FROM workflow_executions AS x"
                    "    WHERE x.workflow_id = w.id AND x.status = 'running'),"
                    "  s.running"
                    " FROM workflows AS w JOIN workflow_run_slots AS s ON s.workflow_id = w.id"
                    " WHERE w.id = ANY(%s)",
                    (workflows,),
                ).fetchall():
                    peaks[wf] = max(peaks[wf], running)
                    slot_peaks[wf] = max(slot_peaks[wf], held)
                if started.is_set() and _unfinished(own, workflows) == 0:
                    break
                time.sleep(0.001)
        settled.set()

    run_threads(
        [functools.partial(starter, n) for n in range(STARTERS)]
        + [functools.partial(worker, n) for n in range(WORKERS)]
        + [sampler],
        timeout=SETTLE_SECONDS + 60,
    )

    caps = dict(zip(workflows, CAPS, strict=True))
    assert all(peaks[wf] <= caps[wf] for wf in workflows), (dict(peaks), caps)
    assert all(slot_peaks[wf] <= caps[wf] for wf in workflows), (dict(slot_peaks), caps)
    assert all(peaks[wf] == caps[wf] for wf in workflows), "the cap was never reached"
    # None left pending (a lost wake-up) or running; the slot counts are back to 0.
    assert _unfinished(conn, workflows) == 0
    counts = conn.execute(
        "SELECT running FROM workflow_run_slots WHERE workflow_id = ANY(%s)", (workflows,)
    ).fetchall()
    assert counts == [(0,), (0,)]

    rows = conn.execute(
        """
        SELECT x.id, x.workflow_id, x.status, x.started_at,
               count(*) FILTER (WHERE o.event_type = 'execution.pending'),
               count(*) FILTER (WHERE o.event_type = 'execution.started'),
               count(*) FILTER (WHERE o.event_type IN ('execution.completed',
                                                       'execution.failed',
                                                       'execution.cancelled'))
          FROM workflow_executions AS x
          LEFT JOIN outbox AS o ON o.aggregate_id = x.id
         WHERE x.workflow_id = ANY(%s)
         GROUP BY x.id
         ORDER BY x.id
        """,
        (workflows,),
    ).fetchall()
    assert len(rows) == total[0]
    waited = [r for r in rows if r[4] == 1]
    assert waited, "no execution ever waited: the test proved nothing"
    for _, _, status, started_at, pending, starts, ends in rows:
        assert status in ("completed", "failed", "cancelled")
        assert ends == 1  # finished exactly once
        # Started once, unless it was cancelled while it waited.
        assert starts == (0 if started_at is None else 1)
        assert pending in (0, 1)
    # Those that waited started in id order, per workflow.
    for wf in workflows:
        times = [r[3] for r in waited if r[1] == wf and r[3] is not None]
        assert times == sorted(times)


def test_a_finished_execution_takes_its_slot_row_last(
    db: Database, conn: Conn, db_url: str
) -> None:
    """T1 finishes an execution of a capped workflow, then wants another execution's row
    (as a finished child then locks its parent); T2 holds that row and starts an execution
    of the capped workflow (as a child start holds its parent). T1 settles the slot when it
    commits, so T2's start does not wait for T1 and neither deadlocks: T2's execution waits
    as pending and starts when T1 commits."""
    capped_wf = _capped(conn, 1)
    other_wf = make_workflow(conn)
    add_stage(conn, other_wf, "only")
    finishing = db.executions.start(workflow_id=capped_wf)
    parent = db.executions.start(workflow_id=other_wf)
    start = query("start_executions").sql
    params = {
        "workflow_ids": [capped_wf],
        "parameters": ["{}"],
        "idempotency_keys": [None],
        "triggered_by": [None],
        "parent_execution_ids": [None],
        "parent_step_ids": [None],
    }
    lock_parent = "SELECT 1 FROM workflow_executions WHERE id = %s FOR NO KEY UPDATE"
    started: list[tuple[Any, ...]] = []
    with psycopg.connect(db_url) as t1, psycopg.connect(db_url) as t2:
        t1.execute(
            "UPDATE workflow_executions SET status = 'completed', finished_at = now()"
            " WHERE id = %s",
            (finishing.id,),
        )
        t2.execute(lock_parent, (parent.id,))

        def starter() -> None:
            started.extend(t2.execute(start, params).fetchall())
            t2.commit()

        def finisher() -> None:
            time.sleep(0.3)  # T2's start is under way (or waiting) by now
            t1.execute(lock_parent, (parent.id,))
            t1.commit()

        run_threads([starter, finisher], timeout=60)

    [row] = started
    child = db.executions.get(id=row[0])
    assert (row[5], child.status) == ("pending", "running")
    assert db.executions.get(id=finishing.id).status == "completed"
