"""Concurrency and rate limits under real concurrency: 8 workers with their own connections
claim, complete, fail, release and abandon steps of one key while a reaper requeues the
abandoned ones and a sampler counts the running steps; and workers racing for a
rate-limited key start no more steps in any window than allowed."""

from __future__ import annotations

import datetime
import functools
import random
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

from _runs_factories import make_workflow
from _threads import run_threads
from flowledger.database import connect
from flowledger.errors import LeaseLost
from flowledger.records.runs import StepLease
from flowledger.records.workflows import Concurrency, NewStage, RateLimit, RetryPolicy

pytestmark = pytest.mark.concurrency

Conn = psycopg.Connection[Any]
WORKERS = 8
LIMIT = 2


def _workflow(conn: Conn, url: str, **stage: Any) -> uuid.UUID:
    wf = make_workflow(conn)
    with connect(url, min_size=1, max_size=1) as db:
        db.stages.add(
            workflow_id=wf,
            stage=NewStage(
                name="work",
                action_ref="core.noop",
                retry_policy=RetryPolicy(
                    max_attempts=3, backoff_base_seconds=0, backoff_max_seconds=0
                ),
                **stage,
            ),
        )
    return wf


def _settled(conn: Conn, wf: uuid.UUID) -> bool:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE status NOT IN ('completed', 'failed')) FROM"
        " workflow_executions WHERE workflow_id = %s",
        (wf,),
    ).fetchone()
    return row is not None and row[0] == 0


@pytest.mark.parametrize("round_", range(3))
def test_eight_workers_never_run_more_steps_of_a_key_than_its_limit(
    db_url: str, conn: Conn, round_: int
) -> None:
    wf = _workflow(conn, db_url, concurrency=Concurrency(key="tenant:{tenant}", limit=LIMIT))
    with connect(db_url, min_size=1, max_size=1) as db:
        for n in range(48):
            db.executions.start(workflow_id=wf, parameters={"tenant": "ab"[n % 2]})
    done = threading.Event()
    seen: dict[str, list[int]] = {"tenant:a": [], "tenant:b": []}
    mismatches: list[tuple[Any, ...]] = []

    def sampler() -> None:
        with psycopg.connect(db_url, autocommit=True) as mine:
            while not done.is_set():
                for key, counts in seen.items():
                    # One statement, one snapshot: running steps, and the slots held.
                    row = mine.execute(
                        "SELECT (SELECT count(*) FROM execution_steps"
                        "         WHERE concurrency_key = %(k)s AND status = 'running'),"
                        "       (SELECT count(step_id) FROM concurrency_slots WHERE key = %(k)s)",
                        {"k": key},
                    ).fetchone()
                    assert row is not None
                    counts.append(row[0])
                    if row[0] != row[1]:
                        mismatches.append((key, *row))

    def worker(n: int) -> None:
        rng = random.Random(f"{round_}-{n}")
        me = f"w{n}"
        with connect(db_url, min_size=1, max_size=1) as db:
            while not done.is_set():
                lease = datetime.timedelta(seconds=0.3)
                batch = db.steps.claim(worker_id=me, limit=rng.randint(1, 3), lease=lease)
                if not batch:
                    time.sleep(0.01)
                    continue
                time.sleep(rng.uniform(0, 0.02))
                for step in batch:
                    fate = rng.random()
                    try:
                        if fate < 0.6:
                            db.steps.complete(step_id=step.id, worker_id=me, attempt=step.attempt)
                        elif fate < 0.75:
                            db.steps.fail(
                                step_id=step.id, worker_id=me, attempt=step.attempt, error="x"
                            )
                        elif fate < 0.85:
                            db.steps.release_many(
                                worker_id=me,
                                steps=[StepLease(step_id=step.id, attempt=step.attempt)],
                            )
                        # else: abandoned; its lease expires and the reaper requeues it.
                    except LeaseLost:
                        pass  # reaped first: the lease ran out while this worker slept

    def reaper() -> None:
        with connect(db_url, min_size=1, max_size=1) as db:
            while not done.is_set():
                db.steps.reap()
                time.sleep(0.05)

    def referee() -> None:
        deadline = time.monotonic() + 150
        with psycopg.connect(db_url, autocommit=True) as mine:
            while not _settled(mine, wf) and time.monotonic() < deadline:
                time.sleep(0.1)
        done.set()

    run_threads(
        [sampler, reaper, referee] + [functools.partial(worker, n) for n in range(WORKERS)],
        timeout=200,
    )
    assert _settled(conn, wf), "not every execution finished"
    for key, counts in seen.items():
        assert max(counts) <= LIMIT, f"{key}: {max(counts)} steps ran at once"
        assert LIMIT in counts, f"{key}: the limit was never reached; the test proves nothing"
    assert mismatches == []
    held = conn.execute("SELECT count(step_id) FROM concurrency_slots").fetchone()
    assert held == (0,)
    # Every step ran to an end, each attempt from one claim.
    attempts = conn.execute(
        "SELECT count(*) FROM step_attempts a JOIN execution_steps s ON s.id = a.step_id"
        " WHERE a.finished_at IS NULL"
    ).fetchone()
    assert attempts == (0,)


def test_racing_workers_start_no_more_than_the_rate_in_any_window(db_url: str, conn: Conn) -> None:
    limit, window = 5, 0.5
    wf = _workflow(conn, db_url, rate_limit=RateLimit(key="api", limit=limit, per_seconds=window))
    with connect(db_url, min_size=1, max_size=1) as db:
        for _ in range(40):
            db.executions.start(workflow_id=wf)
    began = time.monotonic()

    def worker(n: int) -> None:
        me = f"w{n}"
        with connect(db_url, min_size=1, max_size=1) as db:
            while time.monotonic() - began < 2.0:
                for step in db.steps.claim(worker_id=me, limit=3):
                    db.steps.complete(step_id=step.id, worker_id=me, attempt=step.attempt)
                time.sleep(0.005)

    run_threads([functools.partial(worker, n) for n in range(4)])
    starts = [
        r[0].timestamp()
        for r in conn.execute("SELECT started_at FROM step_attempts ORDER BY started_at")
    ]
    # Sliding window: the (i + limit)-th start is at least a window after the i-th.
    gaps = [b - a for a, b in zip(starts, starts[limit:], strict=False)]
    assert gaps and min(gaps) >= window, f"{limit + 1} starts within {min(gaps):.3f}s"
    # And the limit is a rate, not a stop: 2 s hold 4 full windows of 5 (a fifth begins
    # at 2.0 s exactly); a loaded machine may lose one.
    assert 15 <= len(starts) <= 25, len(starts)
