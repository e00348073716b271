"""The worker of the async face: coroutine handlers as tasks, batched writes, retries,
shutdown giving back unstarted steps, and every step run exactly once by many workers."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

import flowledger
from _runs_factories import add_stage, claim_and_flush_stamps, make_workflow
from flowledger.aio.database import AsyncDatabase
from flowledger.errors import InvalidInput
from flowledger.records.runs import ClaimedStep
from flowledger.records.workflows import StagePatch
from flowledger.worker import AsyncWorker

Conn = psycopg.Connection[Any]


def _pipeline(conn: Conn, *, items: int = 3, action: str = "core.noop") -> Any:
    wf = make_workflow(conn)
    add_stage(conn, wf, "fetch", backoff_base_seconds=0)
    add_stage(conn, wf, "each", with_items=list(range(items)), backoff_base_seconds=0)
    add_stage(conn, wf, "join", backoff_base_seconds=0)
    conn.execute("UPDATE workflow_stages SET action_ref = %s WHERE workflow_id = %s", (action, wf))
    return wf


def _run(db_url: str, body: Callable[[AsyncDatabase], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        db = await flowledger.connect_async(db_url, max_size=10, connect_attempts=1)
        try:
            return await body(db)
        finally:
            await db.close()

    return asyncio.run(main())


def test_the_async_worker_runs_a_dag_to_completion(db_url: str, conn: Conn) -> None:
    wf = _pipeline(conn)
    seen: list[tuple[str, Any]] = []

    async def handler(step: ClaimedStep) -> dict[str, Any]:
        await asyncio.sleep(0)
        seen.append((step.task_name, step.inputs))
        return {"task": step.task_name, "item": step.item}

    async def body(db: AsyncDatabase) -> Any:
        runs = [await db.executions.start(workflow_id=wf) for _ in range(5)]
        stats = await AsyncWorker(db, {"core.noop": handler}, worker_id="w").run(until_idle=True)
        return stats, [(await db.executions.get(id=r.id)).status for r in runs]

    stats, statuses = _run(db_url, body)
    assert (stats.claimed, stats.completed, stats.failed, stats.lost) == (25, 25, 0, 0)
    assert set(statuses) == {"completed"}
    joins = [inputs for name, inputs in seen if name == "join"]
    assert joins == [{"each": [{"task": "each", "item": i} for i in range(3)]}] * 5


def test_a_failing_handler_is_retried_and_a_missing_one_fails(db_url: str, conn: Conn) -> None:
    wf = _pipeline(conn, items=1)
    other = _pipeline(conn, action="core.unknown")
    calls: collections.Counter[str] = collections.Counter()

    async def flaky(step: ClaimedStep) -> None:
        calls[step.task_name] += 1
        if step.task_name == "each" and step.attempt == 1:
            raise RuntimeError("first time fails")

    async def body(db: AsyncDatabase) -> Any:
        run = await db.executions.start(workflow_id=wf)
        unknown = await db.executions.start(workflow_id=other)
        stats = await AsyncWorker(db, {"core.noop": flaky}, worker_id="w").run(until_idle=True)
        return stats, await db.executions.get(id=run.id), await db.executions.get(id=unknown.id)

    stats, run, unknown = _run(db_url, body)
    assert run.status == "completed"
    # One failed attempt of "each", then the three attempts of the unknown action's step.
    assert calls["each"] == 2 and stats.failed == 4
    assert unknown.status == "failed"
    assert "no handler for 'core.unknown'" in (unknown.error_message or "")


def test_shutdown_gives_back_unstarted_steps_and_finishes_running_ones(
    db_url: str, conn: Conn
) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "each", with_items=list(range(8)))

    async def body(db: AsyncDatabase) -> Any:
        run = await db.executions.start(workflow_id=wf)
        started, release = asyncio.Event(), asyncio.Event()

        async def slow(step: ClaimedStep) -> str:
            started.set()
            await release.wait()
            return "done"

        worker = AsyncWorker(db, {"core.noop": slow}, concurrency=2, prefetch=4, worker_id="w")
        running = asyncio.create_task(worker.run())
        await asyncio.wait_for(started.wait(), 10)
        worker.stop()
        await asyncio.sleep(0.1)
        release.set()
        await asyncio.wait_for(running, 10)
        steps = await db.steps.list_by_execution(execution_id=run.id)
        attempts = {s.id: await db.steps.list_attempts(step_id=s.id) for s in steps}
        return worker.stats, steps, attempts

    stats, steps, attempts = _run(db_url, body)
    assert (stats.claimed, stats.completed, stats.released) == (6, 2, 4)
    assert sorted(s.status for s in steps) == ["completed"] * 2 + ["queued"] * 6
    for step in steps:
        # A released step used up no attempt and left no attempt row.
        expected = (1, 1) if step.status == "completed" else (0, 0)
        assert (step.attempt, len(attempts[step.id])) == expected


@pytest.mark.concurrency
def test_eight_async_workers_run_every_step_exactly_once(db_url: str, conn: Conn) -> None:
    wf = _pipeline(conn, items=4)
    runs: collections.Counter[tuple[str, str, int]] = collections.Counter()

    async def handler(step: ClaimedStep) -> None:
        await asyncio.sleep(0)
        runs[str(step.execution_id), step.task_name, step.task_index] += 1

    async def body(db: AsyncDatabase) -> Any:
        executions = [await db.executions.start(workflow_id=wf) for _ in range(40)]
        workers = [
            AsyncWorker(db, {"core.noop": handler}, concurrency=2, worker_id=f"w{i}", flush_size=5)
            for i in range(8)
        ]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        for _ in range(1200):
            states = {(await db.executions.get(id=e.id)).status for e in executions}
            if states == {"completed"}:
                break
            await asyncio.sleep(0.05)
        for worker in workers:
            worker.stop()
        await asyncio.gather(*tasks)
        return states, workers

    states, workers = _run(db_url, body)
    assert states == {"completed"}
    assert len(runs) == 40 * 6 and set(runs.values()) == {1}
    assert sum(w.stats.completed for w in workers) == 240
    assert sum(1 for w in workers if w.stats.completed) > 1
    attempts = conn.execute("SELECT count(*), max(attempt) FROM step_attempts").fetchone()
    assert attempts == (240, 1)


def test_bad_async_worker_settings_are_refused(db_url: str) -> None:
    async def noop(step: ClaimedStep) -> None:
        return None

    async def body(db: AsyncDatabase) -> None:
        bad: list[dict[str, Any]] = [
            {"concurrency": 0},
            {"flush_interval": 0},
            {"prefetch": -1},
            {"lanes": 0},
            {"lanes": 17},
            {"lanes": 1.5},
        ]
        for kwargs in bad:
            with pytest.raises(InvalidInput):
                AsyncWorker(db, {"core.noop": noop}, **kwargs)
        with pytest.raises(InvalidInput, match="coroutine functions"):
            AsyncWorker(db, {"core.noop": lambda step: None})  # type: ignore[dict-item,return-value]

    _run(db_url, body)


def test_an_async_worker_of_some_queues_runs_only_their_steps(db_url: str, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "cpu", depends_on=[])
    add_stage(conn, wf, "gpu", depends_on=[], with_items=[1, 2])
    seen: list[str] = []

    async def handler(step: ClaimedStep) -> None:
        seen.append(step.queue)

    async def body(db: AsyncDatabase) -> Any:
        [_, gpu] = await db.stages.list(workflow_id=wf)
        await db.stages.update(id=gpu.id, patch=StagePatch(queue="gpu"))
        run = await db.executions.start(workflow_id=wf)
        stats = await AsyncWorker(db, {"core.noop": handler}, queues=["gpu"]).run(until_idle=True)
        steps = await db.steps.list_by_execution(execution_id=run.id)
        return stats, {s.task_name: s.status for s in steps}

    stats, statuses = _run(db_url, body)
    assert (stats.claimed, seen) == (2, ["gpu", "gpu"])
    assert statuses == {"cpu": "queued", "gpu": "completed"}


def test_an_async_worker_refuses_bad_queues(db_url: str) -> None:
    async def body(db: AsyncDatabase) -> Any:
        with pytest.raises(InvalidInput, match="queues"):
            AsyncWorker(db, {"core.noop": _noop}, queues=["Not A Queue"])

    _run(db_url, body)


async def _noop(step: ClaimedStep) -> None:
    return None


def test_a_batch_is_written_and_the_room_it_frees_claimed_in_one_transaction(
    db_url: str, conn: Conn
) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "only")

    async def noop(step: ClaimedStep) -> None:
        return None

    async def body(db: AsyncDatabase) -> Any:
        for _ in range(30):
            await db.executions.start(workflow_id=wf)
        # One task at a time, room for 5, flushed when all 5 are done: see the sync test.
        worker = AsyncWorker(db, {"core.noop": noop}, concurrency=1, prefetch=4, flush_interval=60)
        return await worker.run(until_idle=True)

    stats = _run(db_url, body)
    assert (stats.claimed, stats.completed) == (30, 30)
    claims, flushes = claim_and_flush_stamps(conn, wf)
    assert sorted(claims.values()) == sorted(flushes.values()) == [5] * 6
    assert len(set(claims) & set(flushes)) == 5


def test_async_lanes_run_every_step_exactly_once(
    db_url: str, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    wf = _pipeline(conn, items=4)
    ran: collections.Counter[tuple[str, str, int]] = collections.Counter()
    claimers: set[int] = set()
    claim_in = AsyncWorker._claim_in

    async def recording(self: AsyncWorker, tx: Any, freed: int = 0) -> list[ClaimedStep]:
        steps = await claim_in(self, tx, freed)
        if steps:
            claimers.add(id(self))
        return steps

    monkeypatch.setattr(AsyncWorker, "_claim_in", recording)

    async def handler(step: ClaimedStep) -> None:
        ran[str(step.execution_id), step.task_name, step.task_index] += 1
        await asyncio.sleep(0)

    async def body(db: AsyncDatabase) -> Any:
        runs = [await db.executions.start(workflow_id=wf) for _ in range(20)]
        # Four handlers make two lanes by default; each claims and writes on its own (a
        # small buffer leaves steps for both).
        worker = AsyncWorker(db, {"core.noop": handler}, concurrency=4, prefetch=4, flush_size=3)
        stats = await worker.run(until_idle=True)
        return stats, {(await db.executions.get(id=r.id)).status for r in runs}

    stats, statuses = _run(db_url, body)
    assert len(claimers) == 2
    assert statuses == {"completed"}
    assert (stats.claimed, stats.completed, stats.lost) == (20 * 6, 20 * 6, 0)
    assert len(ran) == 20 * 6 and set(ran.values()) == {1}


def test_the_async_default_buffer_follows_the_handlers_pace(db_url: str, conn: Conn) -> None:
    # As the threaded worker's: large claims for fast handlers; for slow ones (50 ms),
    # after the first claim (ten per task slot), at most 2 running and 4 buffered steps.
    fast = make_workflow(conn)
    add_stage(conn, fast, "each", with_items=list(range(300)))
    slow_wf = make_workflow(conn)
    add_stage(conn, slow_wf, "each", with_items=list(range(30)))
    conn.execute(
        "UPDATE workflow_stages SET action_ref = 'core.slow' WHERE workflow_id = %s", (slow_wf,)
    )

    async def noop(step: ClaimedStep) -> None:
        return None

    async def slow(step: ClaimedStep) -> None:
        await asyncio.sleep(0.05)

    async def body(db: AsyncDatabase) -> tuple[int, int]:
        await db.executions.start(workflow_id=fast)
        quick = await AsyncWorker(db, {"core.noop": noop}, concurrency=1).run(until_idle=True)
        await db.executions.start(workflow_id=slow_wf)
        paced = await AsyncWorker(db, {"core.slow": slow}, concurrency=2).run(until_idle=True)
        return quick.completed, paced.completed

    assert _run(db_url, body) == (300, 30)
    claims, _ = claim_and_flush_stamps(conn, fast)
    assert sorted(claims.values())[-1] > 11, claims
    claims, _ = claim_and_flush_stamps(conn, slow_wf)
    first, *later = sorted(claims.items())
    assert first[1] == 22
    assert later and max(n for _, n in later) <= 6, claims
