"""Durable timers and signals: a step sleeps until a time or waits for a signal of its
execution (with a timeout), spending no attempt; each signal is consumed exactly once,
whether it comes before or after the wait."""

from __future__ import annotations

import datetime
import threading
import time
import uuid
from collections import Counter
from typing import Any

import psycopg
import pytest

from _runs_factories import add_stage, make_workflow
from flowledger.database import Database
from flowledger.errors import InvalidInput, LeaseLost, NotFound
from flowledger.records.runs import ClaimedStep, Execution

Conn = psycopg.Connection[Any]
UTC = datetime.UTC


def _run(db: Database, conn: Conn, *, items: int | None = None, attempts: int = 1) -> Execution:
    wf = make_workflow(conn)
    add_stage(
        conn,
        wf,
        "a",
        max_attempts=attempts,
        with_items=None if items is None else list(range(items)),
    )
    return db.executions.start(workflow_id=wf)


def _claim_one(db: Database, worker: str = "w") -> ClaimedStep:
    [step] = db.steps.claim(worker_id=worker, limit=1)
    return step


def _tables(conn: Conn) -> list[Any]:
    return [
        conn.execute(
            "SELECT id, status, attempt, lease_owner, available_at, signal_name, signal_id,"
            " signal_deadline FROM execution_steps ORDER BY id"
        ).fetchall(),
        conn.execute("SELECT * FROM execution_signals ORDER BY id").fetchall(),
        conn.execute("SELECT id, finished_at FROM step_attempts ORDER BY id").fetchall(),
    ]


def test_a_sleeping_step_is_not_claimed_before_its_time_and_spends_no_attempt(
    db: Database, conn: Conn
) -> None:
    _run(db, conn, attempts=1)
    step = _claim_one(db)
    for _ in range(3):  # with max_attempts 1, a sleep that spent the attempt would end it
        until = datetime.datetime.now(UTC) + datetime.timedelta(seconds=0.8)
        slept = db.steps.sleep(step_id=step.id, worker_id="w", attempt=step.attempt, until=until)
        assert (slept.status, slept.attempt, slept.lease_owner) == ("queued", 0, None)
        assert slept.available_at == until
        assert db.steps.claim(worker_id="w", limit=10) == []
        assert db.steps.list_attempts(step_id=step.id) == []  # a sleep is no attempt
        while not (claimed := db.steps.claim(worker_id="w", limit=10)):
            time.sleep(0.05)
        assert datetime.datetime.now(UTC) >= until
        [step] = claimed
        assert step.attempt == 1
    db.steps.complete(step_id=step.id, worker_id="w", attempt=1)
    assert [a.outcome for a in db.steps.list_attempts(step_id=step.id)] == ["completed"]


def test_a_sleep_until_a_past_time_is_claimable_at_once_and_wakes_the_workers(
    db: Database, conn: Conn
) -> None:
    _run(db, conn)
    step = _claim_one(db)
    with db.wake_ups() as wake:
        while wake.wait(0.05):
            pass
        past = datetime.datetime(2000, 1, 1, tzinfo=UTC)
        slept = db.steps.sleep(step_id=step.id, worker_id="w", attempt=1, until=past)
        assert slept.available_at > past
        assert wake.wait(5) is True
    assert _claim_one(db).id == step.id


def test_a_sleep_is_durable_rows_only(db: Database, conn: Conn, db_url: str) -> None:
    _run(db, conn)
    step = _claim_one(db)
    until = datetime.datetime.now(UTC) + datetime.timedelta(hours=1)
    db.steps.sleep(step_id=step.id, worker_id="w", attempt=1, until=until)
    with psycopg.connect(db_url) as other:  # what another process (after a restart) sees
        row = other.execute(
            "SELECT status, available_at FROM execution_steps WHERE id = %s", (step.id,)
        ).fetchone()
    assert row == ("queued", until)
    assert db.steps.claim(worker_id="w2", limit=10) == []


def test_a_step_waits_for_a_signal_sent_later_and_gets_its_payload(
    db: Database, conn: Conn
) -> None:
    run = _run(db, conn, attempts=1)
    step = _claim_one(db)
    waiting = db.steps.wait_for_signal(step_id=step.id, worker_id="w", attempt=1, name="approve")
    assert (waiting.status, waiting.attempt, waiting.lease_owner) == ("waiting", 0, None)
    assert db.steps.claim(worker_id="w", limit=10) == []
    with db.wake_ups() as wake:
        while wake.wait(0.05):
            pass
        sent = db.signals.send(execution_id=run.id, name="approve", payload={"by": "ann"})
        assert wake.wait(5) is True
    assert sent.consumed_by == step.id and sent.consumed_at is not None
    again = _claim_one(db)
    assert (again.id, again.attempt) == (step.id, 1)
    assert again.inputs == {"signal:approve": {"by": "ann"}}


def test_a_signal_sent_before_the_wait_is_kept_and_consumed_by_it(db: Database, conn: Conn) -> None:
    run = _run(db, conn)
    first = db.signals.send(execution_id=run.id, name="go", payload=1)
    second = db.signals.send(execution_id=run.id, name="go", payload=2)
    assert (first.consumed_by, second.consumed_by) == (None, None)
    step = _claim_one(db)
    woken = db.steps.wait_for_signal(step_id=step.id, worker_id="w", attempt=1, name="go")
    assert woken.status == "queued"  # at once: the signal was there
    step = _claim_one(db)
    assert step.inputs == {"signal:go": 1}
    # Signals queue: the second is still there for the next wait, oldest first.
    db.steps.wait_for_signal(step_id=step.id, worker_id="w", attempt=1, name="go")
    assert _claim_one(db).inputs == {"signal:go": 2}
    consumed = [
        (s.payload, s.consumed_by) for s in db.signals.list_by_execution(execution_id=run.id)
    ]
    assert consumed == [(1, step.id), (2, step.id)]


def test_a_wait_with_a_timeout_is_woken_without_a_payload_by_the_reaper(
    db: Database, conn: Conn
) -> None:
    run = _run(db, conn)
    step = _claim_one(db)
    db.steps.wait_for_signal(
        step_id=step.id,
        worker_id="w",
        attempt=1,
        name="go",
        timeout=datetime.timedelta(seconds=0.5),
    )
    assert db.steps.reap().woken == []
    time.sleep(0.6)
    assert db.steps.reap().woken == [step.id]
    again = _claim_one(db)
    assert (again.id, again.attempt, again.inputs) == (step.id, 1, {})
    late = db.signals.send(execution_id=run.id, name="go", payload="late")
    assert late.consumed_by is None  # nobody waits any more: kept


def test_a_waiting_step_is_not_reaped_as_an_expired_lease(db: Database, conn: Conn) -> None:
    _run(db, conn)
    step = _claim_one(db)
    db.steps.wait_for_signal(step_id=step.id, worker_id="w", attempt=1, name="go")
    conn.execute(
        "UPDATE execution_steps SET started_at = now() - interval '2 hours' WHERE id = %s",
        (step.id,),
    )
    result = db.steps.reap()
    assert (result.requeued, result.failed, result.timed_out, result.woken) == ([], [], [], [])
    assert db.steps.get(id=step.id).status == "waiting"


def test_sleep_and_wait_of_a_lost_lease_change_nothing(db: Database, conn: Conn) -> None:
    run = _run(db, conn)
    step = _claim_one(db)
    db.signals.send(execution_id=run.id, name="go")
    before = _tables(conn)
    now = datetime.datetime.now(UTC)
    with pytest.raises(LeaseLost):
        db.steps.sleep(step_id=step.id, worker_id="other", attempt=1, until=now)
    with pytest.raises(LeaseLost):
        db.steps.wait_for_signal(step_id=step.id, worker_id="w", attempt=2, name="go")
    assert _tables(conn) == before


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        ({"until": datetime.datetime(2030, 1, 1)}, "until"),  # naive
        ({"until": "2030-01-01T00:00:00Z"}, "until"),
        ({"until": None}, "until"),
        ({"name": "Go"}, "name"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"name": "go", "timeout": datetime.timedelta(0)}, "timeout"),
        ({"name": "go", "timeout": datetime.timedelta(seconds=-1)}, "timeout"),
        ({"name": "go", "timeout": 5}, "timeout"),
        ({"name": "go", "timeout": datetime.timedelta(days=400)}, "timeout"),
        ({"until": datetime.datetime.now(UTC), "attempt": 0}, "attempt"),
        ({"name": "go", "worker_id": ""}, "worker_id"),
    ],
)
def test_bad_sleeps_and_waits_are_refused_naming_the_argument(
    db: Database, conn: Conn, call: dict[str, Any], argument: str
) -> None:
    _run(db, conn)
    step = _claim_one(db)
    before = _tables(conn)
    args: dict[str, Any] = {"step_id": step.id, "worker_id": "w", "attempt": 1, **call}
    method = db.steps.sleep if "until" in call else db.steps.wait_for_signal
    with pytest.raises(InvalidInput, match=argument):
        method(**args)
    assert _tables(conn) == before


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"name": None}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"execution_id": "not-a-uuid"}, "execution id"),
        ({"payload": object()}, "payload"),
        ({"payload": float("nan")}, "payload"),
    ],
)
def test_bad_sends_are_refused_naming_the_argument(
    db: Database, conn: Conn, call: dict[str, Any], argument: str
) -> None:
    run = _run(db, conn)
    before = _tables(conn)
    args: dict[str, Any] = {"execution_id": run.id, "name": "go", **call}
    with pytest.raises(InvalidInput, match=argument):
        db.signals.send(**args)
    with pytest.raises(NotFound):
        db.signals.send(execution_id=uuid.uuid4(), name="go")
    assert _tables(conn) == before


@pytest.mark.concurrency
@pytest.mark.parametrize("round_", range(5))
def test_every_signal_wakes_exactly_one_step_under_concurrent_waits_sends_and_claims(
    db: Database, conn: Conn, round_: int
) -> None:
    """20 steps wait while 20 signals are sent and claimers run, all at once: no wake-up is
    lost (a send racing a wait) and none is doubled."""
    count = 20
    run = _run(db, conn, items=count)
    held = db.steps.claim(worker_id="w", limit=count)
    assert len(held) == count
    woken: list[ClaimedStep] = []
    lock = threading.Lock()
    stop = threading.Event()
    # Each wait starts together with a send (a barrier per waiter/sender pair): the race
    # of a send that does not see the wait yet and a wait that does not see the signal.
    pairs = [threading.Barrier(2) for _ in (0, 1)]

    def wait_half(half: int) -> None:
        for step in held[half::2]:
            pairs[half].wait()
            db.steps.wait_for_signal(step_id=step.id, worker_id="w", attempt=1, name="go")

    def send_half(half: int) -> None:
        for n in range(half, count, 2):
            pairs[half].wait()
            db.signals.send(execution_id=run.id, name="go", payload=n)

    def claim_loop(n: int) -> None:
        while not stop.is_set():
            got = db.steps.claim(worker_id=f"c{n}", limit=5)
            with lock:
                woken.extend(got)
            if not got:
                time.sleep(0.005)

    threads = [threading.Thread(target=wait_half, args=(h,)) for h in (0, 1)]
    threads += [threading.Thread(target=send_half, args=(h,)) for h in (0, 1)]
    threads += [threading.Thread(target=claim_loop, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with lock:
            if len(woken) >= count:
                break
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join()
    assert Counter(s.id for s in woken) == Counter({s.id: 1 for s in held})
    payloads = sorted(s.inputs["signal:go"] for s in woken)
    assert payloads == list(range(count))
    signals = db.signals.list_by_execution(execution_id=run.id)
    assert len(signals) == count
    assert sorted(str(s.consumed_by) for s in signals) == sorted(str(s.id) for s in held)


def test_a_wait_that_finds_its_signal_and_a_reaped_timeout_wake_the_workers(
    db: Database, conn: Conn
) -> None:
    run = _run(db, conn, items=2)
    first, second = db.steps.claim(worker_id="w", limit=2)
    db.signals.send(execution_id=run.id, name="go")
    db.steps.wait_for_signal(
        step_id=second.id, worker_id="w", attempt=1, name="later",
        timeout=datetime.timedelta(milliseconds=200),
    )  # fmt: skip
    with db.wake_ups() as wake:
        while wake.wait(0.05):
            pass
        db.steps.wait_for_signal(step_id=first.id, worker_id="w", attempt=1, name="go")
        assert wake.wait(5) is True
        while wake.wait(0.05):
            pass
        time.sleep(0.3)
        assert db.steps.reap().woken == [second.id]
        assert wake.wait(5) is True


def test_a_sleep_into_the_future_sends_no_wake_up(db: Database, conn: Conn) -> None:
    _run(db, conn)
    step = _claim_one(db)
    with db.wake_ups() as wake:
        while wake.wait(0.05):
            pass
        until = datetime.datetime.now(UTC) + datetime.timedelta(minutes=5)
        db.steps.sleep(step_id=step.id, worker_id="w", attempt=1, until=until)
        assert wake.wait(0.3) is False
