"""The reference worker: runs steps through handlers with batched writes, retries failures,
gives back unstarted steps on shutdown, survives a crash through the reaper, and never runs
a step twice when several workers share the queue."""

from __future__ import annotations

import collections
import datetime
import threading
import time
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _runs_factories import add_stage, claim_and_flush_stamps, make_workflow
from flowledger.database import Database
from flowledger.errors import InvalidInput
from flowledger.records.runs import ClaimedStep, Step
from flowledger.records.workflows import StagePatch
from flowledger.worker import _MAX_BUFFER, Worker, Written, _Pace

# Sync-only code (the worker, the tools): `db` is the sync face only.
pytestmark = pytest.mark.sync_face

Conn = psycopg.Connection[Any]


def _pipeline(conn: Conn, *, items: int = 3, action: str = "core.noop") -> Any:
    wf = make_workflow(conn)
    add_stage(conn, wf, "fetch", backoff_base_seconds=0)
    add_stage(conn, wf, "each", with_items=list(range(items)), backoff_base_seconds=0)
    add_stage(conn, wf, "join", backoff_base_seconds=0)
    conn.execute("UPDATE workflow_stages SET action_ref = %s WHERE workflow_id = %s", (action, wf))
    return wf


def test_the_worker_runs_a_dag_to_completion_in_batches(db: Database, conn: Conn) -> None:
    wf = _pipeline(conn)
    runs = [db.executions.start(workflow_id=wf) for _ in range(5)]
    seen: list[tuple[str, int, Any]] = []
    lock = threading.Lock()

    def handler(step: ClaimedStep) -> dict[str, Any]:
        with lock:
            seen.append((step.task_name, step.task_index, step.inputs))
        return {"task": step.task_name, "item": step.item}

    stats = Worker(db, {"core.noop": handler}, concurrency=4, worker_id="w").run(until_idle=True)

    assert (stats.claimed, stats.completed, stats.failed, stats.lost) == (25, 25, 0, 0)
    assert {db.executions.get(id=r.id).status for r in runs} == {"completed"}
    joins = [inputs for name, _, inputs in seen if name == "join"]
    assert joins == [{"each": [{"task": "each", "item": i} for i in range(3)]}] * 5


def test_a_failing_handler_is_retried_and_a_missing_one_fails(db: Database, conn: Conn) -> None:
    wf = _pipeline(conn, items=1)
    run = db.executions.start(workflow_id=wf)
    calls: collections.Counter[str] = collections.Counter()

    def flaky(step: ClaimedStep) -> None:
        calls[step.task_name] += 1
        if step.task_name == "each" and step.attempt == 1:
            raise RuntimeError("first time fails")

    stats = Worker(db, {"core.noop": flaky}, worker_id="w").run(until_idle=True)
    assert db.executions.get(id=run.id).status == "completed"
    assert (calls["each"], stats.failed) == (2, 1)
    [first, _] = db.steps.list_attempts(step_id=db.steps.find_by_task_name(
        execution_id=run.id, task_name="each")[0].id)  # fmt: skip
    assert first.error == "RuntimeError: first time fails"

    other = db.executions.start(workflow_id=_pipeline(conn, action="core.unknown"))
    Worker(db, {"core.noop": flaky}, worker_id="w").run(until_idle=True)
    failed = db.executions.get(id=other.id)
    assert failed.status == "failed" and "no handler for 'core.unknown'" in (
        failed.error_message or ""
    )


def test_shutdown_gives_back_unstarted_steps_and_finishes_running_ones(
    db: Database, conn: Conn
) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "each", with_items=list(range(8)))
    run = db.executions.start(workflow_id=wf)
    started = threading.Event()
    release = threading.Event()

    def slow(step: ClaimedStep) -> str:
        started.set()
        release.wait(10)
        return "done"

    worker = Worker(db, {"core.noop": slow}, concurrency=2, prefetch=4, worker_id="w")
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert started.wait(10)
    worker.stop()
    time.sleep(0.1)
    release.set()
    thread.join(10)

    stats = worker.stats
    assert (stats.claimed, stats.completed, stats.released) == (6, 2, 4)
    steps = db.steps.list_by_execution(execution_id=run.id)
    assert sorted(s.status for s in steps) == ["completed"] * 2 + ["queued"] * 6
    for step in steps:
        attempts = db.steps.list_attempts(step_id=step.id)
        # A released step used up no attempt and left no attempt row.
        assert (step.attempt, len(attempts)) == ((1, 1) if step.status == "completed" else (0, 0))


def test_lanes_share_the_threads_and_run_every_step_exactly_once(db: Database, conn: Conn) -> None:
    wf = _pipeline(conn, items=4)
    runs = [db.executions.start(workflow_id=wf) for _ in range(20)]
    ran: collections.Counter[tuple[str, str, int]] = collections.Counter()
    threads: set[str] = set()
    lock = threading.Lock()

    def handler(step: ClaimedStep) -> None:
        with lock:
            ran[str(step.execution_id), step.task_name, step.task_index] += 1
            threads.add(threading.current_thread().name.rpartition("_")[0])

    # Four handler threads make two lanes by default, each with two threads of its own
    # (and, with a small buffer, steps to claim: a default one grows for no-op handlers
    # until one lane may claim all of them).
    worker = Worker(db, {"core.noop": handler}, concurrency=4, prefetch=4, flush_size=3)
    stats = worker.run(until_idle=True)
    assert threads == {"flowledger-worker-lane0", "flowledger-worker-lane1"}
    assert (stats.claimed, stats.completed, stats.lost) == (20 * 6, 20 * 6, 0)
    assert len(ran) == 20 * 6 and set(ran.values()) == {1}
    assert {db.executions.get(id=r.id).status for r in runs} == {"completed"}
    # One lane by default below four threads, and as many as asked otherwise.
    threads.clear()
    db.executions.start(workflow_id=wf)
    Worker(db, {"core.noop": handler}, concurrency=3).run(until_idle=True)
    assert threads == {"flowledger-worker"}
    threads.clear()
    db.executions.start(workflow_id=wf)
    Worker(db, {"core.noop": handler}, concurrency=3, lanes=3, prefetch=0).run(until_idle=True)
    assert threads <= {f"flowledger-worker-lane{i}" for i in range(3)} and len(threads) >= 2


def test_stop_ends_every_lane_and_an_error_in_one_stops_them_all(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "each", with_items=list(range(12)))
    db.executions.start(workflow_id=wf)
    started = threading.Event()
    release = threading.Event()

    def slow(step: ClaimedStep) -> None:
        started.set()
        release.wait(10)

    worker = Worker(db, {"core.noop": slow}, concurrency=2, lanes=2, prefetch=4)
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert started.wait(10)
    time.sleep(0.2)  # both lanes hold steps by now
    worker.stop()
    time.sleep(0.1)
    release.set()
    thread.join(10)
    assert not thread.is_alive()
    stats = worker.stats
    # Each lane held its running step and two buffered ones: all written or given back.
    assert stats.claimed == 6 and stats.completed + stats.released == 6 and stats.released >= 2

    def broken(step: ClaimedStep, what: Written, state: Step | None) -> None:
        raise RuntimeError("on_written failed")

    db.executions.start(workflow_id=wf)
    failing = Worker(db, {"core.noop": lambda step: None}, concurrency=4, on_written=broken)
    with pytest.raises(RuntimeError, match="on_written failed"):
        failing.run()


def test_a_crashed_workers_steps_are_reaped_and_run_by_another(db: Database, conn: Conn) -> None:
    wf = _pipeline(conn, items=2)
    run = db.executions.start(workflow_id=wf)
    # A worker that claims and dies: its leases run out, nothing is written.
    [lost] = db.steps.claim(worker_id="crashed", lease=datetime.timedelta(milliseconds=1))
    time.sleep(0.05)
    assert db.steps.reap().requeued == [lost.id]
    Worker(db, {"core.noop": lambda step: None}, worker_id="w").run(until_idle=True)
    assert db.executions.get(id=run.id).status == "completed"
    outcomes = [a.outcome for a in db.steps.list_attempts(step_id=lost.id)]
    assert outcomes == ["lease_lost", "completed"]


def test_a_batch_is_written_and_the_room_it_frees_claimed_in_one_transaction(
    db: Database, conn: Conn
) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "only")
    runs = [db.executions.start(workflow_id=wf) for _ in range(30)]
    # One handler thread and room for 5 steps, flushed when all 5 are done (not by the
    # clock): one claim of 5, then 6 flushes each completing 5 steps and claiming the next
    # 5 (the last finds none). now() is the transaction's start: a claim made in a flush's
    # transaction stamps its steps' heartbeat_at with the completed_at it gives the batch.
    worker = Worker(
        db, {"core.noop": lambda step: None}, concurrency=1, prefetch=4, flush_interval=60
    )
    stats = worker.run(until_idle=True)
    assert (stats.claimed, stats.completed) == (30, 30)
    assert {db.executions.get(id=r.id).status for r in runs} == {"completed"}
    claims, flushes = claim_and_flush_stamps(conn, wf)
    assert sorted(claims.values()) == sorted(flushes.values()) == [5] * 6
    assert len(set(claims) & set(flushes)) == 5


@pytest.mark.concurrency
def test_eight_workers_run_every_step_exactly_once(db_url: str, conn: Conn) -> None:
    from flowledger.database import connect

    wf = _pipeline(conn, items=4)
    runs: collections.Counter[tuple[str, str, int]] = collections.Counter()
    lock = threading.Lock()

    def handler(step: ClaimedStep) -> None:
        with lock:
            runs[str(step.execution_id), step.task_name, step.task_index] += 1

    with connect(db_url, min_size=1, max_size=10) as db:
        executions = [db.executions.start(workflow_id=wf) for _ in range(40)]
        workers = [
            Worker(db, {"core.noop": handler}, concurrency=2, worker_id=f"w{i}", flush_size=5)
            for i in range(8)
        ]
        threads = [threading.Thread(target=w.run) for w in workers]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while any(db.executions.get(id=e.id).status == "running" for e in executions):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join()
        assert {db.executions.get(id=e.id).status for e in executions} == {"completed"}
    assert len(runs) == 40 * 6 and set(runs.values()) == {1}
    assert sum(w.stats.completed for w in workers) == 240
    attempts = conn.execute("SELECT count(*), max(attempt) FROM step_attempts").fetchone()
    assert attempts == (240, 1)


def test_bad_worker_settings_are_refused(db: Database) -> None:
    for kwargs in (
        {"concurrency": 0},
        {"flush_interval": 0},
        {"prefetch": -1},
        {"idle_wait": float("nan")},
        {"lanes": 0},
        {"lanes": 5},
        {"lanes": True},
        {"lanes": "2"},
    ):
        with pytest.raises(InvalidInput):
            Worker(db, {}, **kwargs)
    with pytest.raises(InvalidInput):
        Worker(db, {"x": "not callable"})  # type: ignore[dict-item]


_ANY = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=5)
    | st.lists(st.integers(), max_size=2)
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(concurrency=_ANY, lanes=_ANY, prefetch=_ANY)
def test_any_concurrency_lanes_and_prefetch_are_taken_or_refused_by_name(
    db: Database, concurrency: object, lanes: object, prefetch: object
) -> None:
    def whole(value: object, low: int, high: int) -> bool:
        return type(value) is int and low <= value <= high

    kwargs: dict[str, Any] = {"concurrency": concurrency, "lanes": lanes, "prefetch": prefetch}
    valid = (
        whole(concurrency, 1, 1000)
        and (prefetch is None or whole(prefetch, 0, 1000))
        and (lanes is None or whole(lanes, 1, concurrency))  # type: ignore[arg-type]
    )
    if valid:
        worker = Worker(db, {"core.noop": lambda step: None}, **kwargs)
        expected = lanes if lanes is not None else (2 if concurrency >= 4 else 1)  # type: ignore[operator]
        assert worker._lanes == expected
        return
    with pytest.raises(InvalidInput) as refused:
        Worker(db, {"core.noop": lambda step: None}, **kwargs)
    named = [n for n in ("concurrency", "prefetch", "lanes") if str(refused.value).startswith(n)]
    assert named, str(refused.value)


@given(
    concurrency=st.integers(min_value=1, max_value=1000),
    seconds=st.lists(st.floats(min_value=0, max_value=3600), min_size=1, max_size=50),
)
def test_the_paced_buffer_is_bounded_and_holds_less_for_slower_handlers(
    concurrency: int, seconds: list[float]
) -> None:
    pace = _Pace()
    assert pace.buffer(concurrency) == min(_MAX_BUFFER, 10 * concurrency)
    for value in seconds:
        pace.add(value)
    held = pace.buffer(concurrency)
    assert 0 <= held <= _MAX_BUFFER
    assert pace.mean is not None and min(seconds) <= pace.mean * (1 + 1e-9) + 1e-12
    slower = _Pace()
    slower.mean = pace.mean * 2 + 1e-3
    assert slower.buffer(concurrency) <= held
    if pace.mean > 0:
        assert held == min(_MAX_BUFFER, int(concurrency * 0.1 / max(pace.mean, 1e-6)))


def test_flowledger_worker_command_runs_until_sigterm(
    db: Database, conn: Conn, db_url: str, tmp_path: Any
) -> None:
    import json
    import signal
    import subprocess
    import sys

    (tmp_path / "my_handlers.py").write_text(
        "HANDLERS = {'core.noop': lambda step: {'done': step.task_name}}\n"
    )
    run = db.executions.start(workflow_id=_pipeline(conn, items=2))
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowledger.tools.cli", "worker", "my_handlers:HANDLERS",
         "--database", db_url, "--json", "--worker-id", "cli-worker"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while db.executions.get(id=run.id).status != "completed":
            assert time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert (report["worker_id"], report["completed"], report["failed"]) == ("cli-worker", 4, 0)

    bad = subprocess.run(
        [sys.executable, "-m", "flowledger.tools.cli", "worker", "nope_module:X",
         "--database", db_url],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1 and "cannot import 'nope_module'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_worker_of_some_queues_runs_only_their_steps(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "cpu", depends_on=[])
    add_stage(conn, wf, "gpu", depends_on=[], with_items=[1, 2])
    db.stages.update(id=db.stages.list(workflow_id=wf)[1].id, patch=StagePatch(queue="gpu"))
    run = db.executions.start(workflow_id=wf)
    seen: list[str] = []
    stats = Worker(db, {"core.noop": lambda s: seen.append(s.queue)}, queues=["gpu"]).run(
        until_idle=True
    )
    assert (stats.claimed, seen) == (2, ["gpu", "gpu"])
    statuses = {s.task_name: s.status for s in db.steps.list_by_execution(execution_id=run.id)}
    assert statuses == {"cpu": "queued", "gpu": "completed"}
    with pytest.raises(InvalidInput, match="queues"):
        Worker(db, {"core.noop": lambda s: None}, queues="gpu")


def test_a_handler_that_sleeps_its_step_leaves_it_queued_and_its_result_dropped(
    db: Database, conn: Conn
) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "poll", max_attempts=1)
    run = db.executions.start(workflow_id=wf)
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)

    def poll(step: ClaimedStep) -> None:
        db.steps.sleep(
            step_id=step.id, worker_id=step.lease_owner, attempt=step.attempt, until=until
        )

    stats = Worker(db, {"core.noop": poll}).run(until_idle=True)
    assert (stats.claimed, stats.completed, stats.lost) == (1, 0, 1)
    [step] = db.steps.list_by_execution(execution_id=run.id)
    assert (step.status, step.attempt, step.available_at) == ("queued", 0, until)


def test_the_default_buffer_grows_for_fast_handlers(db: Database, conn: Conn) -> None:
    # Before a handler finished the worker holds ten steps per thread besides the running
    # ones; then about 0.1 s of work per thread at the handlers' pace (at most 1,000):
    # with no-op handlers, claims much larger than eleven steps.
    wf = make_workflow(conn)
    add_stage(conn, wf, "each", with_items=list(range(300)))
    run = db.executions.start(workflow_id=wf)
    stats = Worker(db, {"core.noop": lambda step: None}, concurrency=1).run(until_idle=True)
    assert (stats.claimed, stats.completed) == (300, 300)
    claims, _ = claim_and_flush_stamps(conn, wf)
    assert sorted(claims.values())[-1] > 11, claims
    assert db.executions.get(id=run.id).status == "completed"


def test_the_default_buffer_shrinks_for_slow_handlers(db: Database, conn: Conn) -> None:
    # 50 ms a step: about 0.1 s of work per thread is under two steps each, so once the
    # first steps finished the worker holds at most its 2 running steps and 4 more; only
    # the first claim, before any pace was known, took ten per thread.
    wf = make_workflow(conn)
    add_stage(conn, wf, "each", with_items=list(range(30)))
    db.executions.start(workflow_id=wf)

    def slow(step: ClaimedStep) -> None:
        time.sleep(0.05)

    stats = Worker(db, {"core.noop": slow}, concurrency=2).run(until_idle=True)
    assert stats.completed == 30
    claims, _ = claim_and_flush_stamps(conn, wf)
    first, *later = sorted(claims.items())
    assert first[1] == 22
    assert later and max(n for _, n in later) <= 6, claims


def test_a_claim_never_asks_for_more_than_the_claim_limit(db: Database, conn: Conn) -> None:
    # 1,000 threads and a prefetch of 1,000 hold up to 2,000 steps; one claim takes 1,000.
    wf = make_workflow(conn)
    add_stage(conn, wf, "each", with_items=list(range(5)))
    db.executions.start(workflow_id=wf)
    worker = Worker(db, {"core.noop": lambda step: None}, concurrency=1000, prefetch=1000, lanes=1)
    assert worker.run(until_idle=True).completed == 5


def test_a_flush_of_more_results_than_one_statement_takes_writes_them_all(
    db: Database, conn: Conn
) -> None:
    # A worker may hold up to 2,000 steps; the batched writes take 1,000 a statement: a
    # flush writes its results in parts, in its one transaction.
    wf = make_workflow(conn)
    add_stage(conn, wf, "each", with_items=list(range(1500)))
    run = db.executions.start(workflow_id=wf)
    worker = Worker(db, {"core.noop": lambda step: None}, worker_id="big", concurrency=1)
    held = db.steps.claim(worker_id="big", limit=1000) + db.steps.claim(worker_id="big", limit=1000)
    assert len(held) == 1500
    failing = held[:3]
    results: list[tuple[ClaimedStep, Any, BaseException | None]] = [
        (s, None, RuntimeError("no")) if s in failing else (s, {"i": s.task_index}, None)
        for s in held
    ]
    worker._held.update({s.id: s for s in held})
    worker._flush(results)
    assert (worker.stats.completed, worker.stats.failed, worker.stats.lost) == (1497, 3, 0)
    statuses = collections.Counter(
        s.status for s in db.steps.list_by_execution(execution_id=run.id)
    )
    assert statuses == {"completed": 1497, "queued": 3}
    assert not worker._held
