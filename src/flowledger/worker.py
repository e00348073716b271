"""A reference worker: claims ahead into a bounded buffer, runs handlers on a thread pool,
writes completions and failures in batches, heartbeats its leases in one statement, wakes
on notifications, and on shutdown finishes or gives back what it holds.

    worker = Worker(db, {"core.http": fetch, "core.noop": lambda step: None})
    worker.run()            # until worker.stop() (or SIGINT/SIGTERM in `flowledger worker`)

A handler receives the `ClaimedStep` (its `config`, `item` and `inputs`) and returns the
step's outputs; an exception fails the attempt (retried as the stage's policy says). A step
whose action has no handler fails with a message saying so. `queues` (optional) limits
the claims to those queues (default: every queue). `accept` (optional) sees each
claimed step first: one it refuses is given back at once, without spending an attempt;
`on_written` (optional) is told what became of each result once its batch is written.

It holds at most `concurrency + prefetch` steps. Without `prefetch` the buffer follows the
handlers: about 0.1 s of work per handler at their recent pace (ten per handler until one
has finished, at most 1,000), so fast handlers are claimed and written in large batches
and slow ones are not hoarded from other workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib
import inspect
import logging
import math
import os
import queue
import socket
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import msgspec

from flowledger.aio.database import AsyncDatabase, AsyncTransaction
from flowledger.aio.wakeups import AsyncWakeUps
from flowledger.database import Database, Transaction
from flowledger.errors import InvalidInput, Unavailable
from flowledger.records.runs import ClaimedStep, Step, StepCompletion, StepFailure, StepLease
from flowledger.repositories._checks import as_optional_queues
from flowledger.wakeups import WakeUps

__all__ = [
    "AsyncHandler",
    "AsyncWorker",
    "Handler",
    "Worker",
    "WorkerStats",
    "Written",
    "load_handlers",
]

Handler = Callable[[ClaimedStep], Any]
Written = Literal["completed", "failed", "lost"]
"""What became of a step's result: written as completed or failed, or dropped because its
lease was lost."""

log = logging.getLogger("flowledger.worker")

# With until_idle, how long a lane with nothing to do waits before it looks again while
# other lanes still hold steps (a wake-up ends the wait sooner).
_PEER_WAIT = 0.05
# By default a worker's buffer holds about this much work per handler thread (or task) at
# the pace its handlers kept lately: fast handlers are claimed and written in large batches
# (few statements and commits per step), slow ones are not hoarded from other workers, and
# a buffered step waits about this long for a thread.
_BUFFER_SECONDS = 0.1
_MAX_BUFFER = 1000
_MAX_OUTAGE_PAUSE = 30.0  # seconds between tries while the database is unavailable
_MAX_CLAIM = 1000  # steps.claim's largest limit (and the batched writes')
_T = TypeVar("_T")


class WorkerStats(msgspec.Struct, kw_only=True):
    """What a worker did: steps claimed, completed, failed, given back at shutdown, given
    back at once because `accept` refused them, results dropped because the lease was lost
    meanwhile, and database calls that failed with `Unavailable` and were tried again."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    released: int = 0
    refused: int = 0
    lost: int = 0
    outages: int = 0


class Worker:
    """Runs the steps of the actions it has handlers for; see the module docstring."""

    def __init__(
        self,
        db: Database,
        handlers: Mapping[str, Handler],
        *,
        worker_id: str | None = None,
        concurrency: int = 4,
        prefetch: int | None = None,
        lease: datetime.timedelta = datetime.timedelta(seconds=60),
        flush_size: int = 100,
        flush_interval: float = 0.005,
        idle_wait: float = 1.0,
        accept: Callable[[ClaimedStep], bool] | None = None,
        on_written: Callable[[ClaimedStep, Written, Step | None], None] | None = None,
        queues: Sequence[str] | None = None,
        lanes: int | None = None,
    ) -> None:
        _check_options(handlers, concurrency, prefetch, flush_interval, idle_wait, flush_size)
        self._lanes = _check_lanes(lanes, concurrency)
        # None: every queue, as steps.claim; checked here, not at the first claim.
        self._queues = as_optional_queues(queues, "queues")
        self._db = db
        self._handlers = dict(handlers)
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._concurrency = concurrency
        self._prefetch = prefetch
        self._pace = _Pace()
        self._lease = lease
        self._flush_size = flush_size
        self._flush_interval = flush_interval
        self._idle_wait = idle_wait
        self._accept = accept
        self._on_written = on_written
        self._stop = threading.Event()
        self._results: queue.SimpleQueue[tuple[ClaimedStep, Any, BaseException | None]] = (
            queue.SimpleQueue()
        )
        self._held: dict[uuid.UUID, ClaimedStep] = {}
        self._futures: dict[uuid.UUID, Future[None]] = {}
        self._thread_names = "flowledger-worker"
        self._peers: list[Worker] = []  # the other lanes, when this is one of several
        self.stats = WorkerStats()

    def stop(self) -> None:
        """Ask `run` to finish: no more claims, unstarted steps given back, running ones
        finished and written."""
        self._stop.set()

    def run(self, *, until_idle: bool = False) -> WorkerStats:
        """Work until `stop()` (or, with `until_idle`, until nothing is left to claim and
        nothing is held); the statistics."""
        if self._lanes > 1:
            return self._run_lanes(until_idle)
        pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix=self._thread_names)
        pending: list[tuple[ClaimedStep, Any, BaseException | None]] = []
        oldest = 0.0
        next_beat = time.monotonic() + self._lease.total_seconds() / 3
        outage = _Outage(self)
        wake: WakeUps | None = None
        try:
            wake = self._db.wake_ups()  # an unreachable database at start is raised
            while not self._stop.is_set():
                try:
                    if wake is None:
                        wake = self._db.wake_ups()
                    claimed = self._claim(pool)
                    pending, oldest = self._collect(pending, oldest, wait=not claimed)
                    flushed = bool(pending) and (
                        len(pending) >= self._flush_size
                        or time.monotonic() - oldest >= self._flush_interval
                        or not self._held.keys() - {s.id for s, _, _ in pending}
                    )
                    if flushed:
                        # Completions may have queued dependents: claim before waiting.
                        claimed += self._flush(pending, pool)
                        pending = []
                    if time.monotonic() >= next_beat:
                        self._heartbeat()
                        next_beat = time.monotonic() + self._lease.total_seconds() / 3
                    if not claimed and not flushed and not self._held and not pending:
                        # Another lane's completions may still queue steps for this one.
                        peers_busy = any(peer._held for peer in self._peers)
                        if until_idle and not peers_busy:
                            break
                        wake.wait(_PEER_WAIT if until_idle else self._idle_wait)
                except Unavailable as exc:
                    # Nothing was written (a failed transaction rolled back): the results
                    # stay pending and the steps held; all is tried again after a pause.
                    if wake is not None:
                        _close_quietly(wake)
                        wake = None
                    self._stop.wait(outage.failed(exc))
                    continue
                outage.passed()
        finally:
            if wake is not None:
                _close_quietly(wake)
            self._shutdown(pool, pending)
        return self.stats

    def _run_lanes(self, until_idle: bool) -> WorkerStats:
        """Run the claim loops side by side, one thread each, each with its share of the
        handler threads and of the buffer and its own transactions: while one lane writes
        a batch, another claims or writes its own. The first error stops every lane and is
        raised once all have shut down."""
        children = [
            Worker(
                self._db,
                self._handlers,
                accept=self._accept,
                on_written=self._on_written,
                **_lane_options(self, lane),
            )
            for lane in range(self._lanes)
        ]
        errors: list[BaseException] = []

        def run_lane(child: Worker, lane: int) -> None:
            child._stop = self._stop
            child._peers = [peer for peer in children if peer is not child]
            child._thread_names = f"flowledger-worker-lane{lane}"
            try:
                child.run(until_idle=until_idle)
            except BaseException as exc:
                errors.append(exc)
                self._stop.set()

        threads = [
            threading.Thread(target=run_lane, args=(child, i), name=f"flowledger-lane{i}")
            for i, child in enumerate(children)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            # A timed join leaves the main thread free to run signal handlers (stop()).
            while thread.is_alive():
                thread.join(0.5)
        for child in children:
            _add_stats(self.stats, child.stats)
        if errors:
            raise errors[0]
        return self.stats

    def _claim(self, pool: ThreadPoolExecutor) -> int:
        if len(self._held) >= _capacity(self):
            return 0
        # A claim of its own is one statement: no transaction block (two round trips).
        steps, refused = self._claim_in(self._db)
        return self._start(steps, refused, pool)

    def _claim_in(
        self, tx: Database | Transaction, freed: int = 0
    ) -> tuple[list[ClaimedStep], int]:
        """Claim as many steps as there is room for (counting `freed` held steps whose
        results this transaction writes), in the caller's transaction (or on their own,
        with the database), and give back at once those `accept` refuses; the steps kept,
        and how many were refused."""
        room = min(_MAX_CLAIM, _capacity(self) - len(self._held) + freed)
        if room <= 0 or self._stop.is_set():
            return [], 0
        steps = tx.steps.claim(
            worker_id=self.worker_id, limit=room, lease=self._lease, queues=self._queues
        )
        if self._accept is None:
            return steps, 0
        refused = [s for s in steps if not self._accept(s)]
        if not refused:
            return steps, 0
        released = tx.steps.release_many(worker_id=self.worker_id, steps=_leases(refused))
        return [s for s in steps if s not in refused], len(released)

    def _start(self, steps: list[ClaimedStep], refused: int, pool: ThreadPoolExecutor) -> int:
        """Hand the steps claimed (and committed) to the handlers."""
        self.stats.claimed += len(steps) + refused
        self.stats.refused += refused
        for step in steps:
            self._held[step.id] = step
            self._futures[step.id] = pool.submit(self._execute, step)
        return len(steps)

    def _execute(self, step: ClaimedStep) -> None:
        handler = self._handlers.get(step.action_ref or "")
        began = time.perf_counter()
        try:
            if handler is None:
                raise LookupError(f"worker {self.worker_id} has no handler for {step.action_ref!r}")
            outputs = handler(step)
        # A handler is the application's code: whatever it raises fails this attempt.
        except Exception as exc:
            self._pace.add(time.perf_counter() - began)
            self._results.put((step, None, exc))
        else:
            self._pace.add(time.perf_counter() - began)
            self._results.put((step, outputs, None))

    def _collect(
        self,
        pending: list[tuple[ClaimedStep, Any, BaseException | None]],
        oldest: float,
        *,
        wait: bool,
    ) -> tuple[list[tuple[ClaimedStep, Any, BaseException | None]], float]:
        # Block briefly only when there is nothing else to do but wait for handlers.
        timeout = self._flush_interval if wait and self._held else 0.0
        while True:
            try:
                result = (
                    self._results.get(timeout=timeout) if timeout else self._results.get_nowait()
                )
            except queue.Empty:
                return pending, oldest
            if not pending:
                oldest = time.monotonic()
            pending.append(result)
            timeout = 0.0

    def _flush(
        self,
        results: list[tuple[ClaimedStep, Any, BaseException | None]],
        pool: ThreadPoolExecutor | None = None,
    ) -> int:
        """Write the results and (with `pool`, unless stopping) claim the room they free,
        in one transaction: one commit for both. The number of steps claimed."""
        done = [(s, o) for s, o, e in results if e is None]
        failed = [(s, e) for s, _, e in results if e is not None]
        written: list[tuple[ClaimedStep, Written, Step | None]] = []
        steps: list[ClaimedStep] = []
        refused = 0
        with self._db.transaction() as tx:
            # At most _MAX_CLAIM steps per statement (a worker may hold more).
            for part in _parts(done):
                result = tx.steps.complete_many(
                    worker_id=self.worker_id, completions=_completions(part)
                )
                lost = set(result.lost)
                written += [(s, "lost" if s.id in lost else "completed", None) for s, _ in part]
            for part_failed in _parts(failed):
                outcome = tx.steps.fail_many(
                    worker_id=self.worker_id, failures=_failures(part_failed)
                )
                after = {x.id: x for x in outcome.steps}
                written += [
                    (s, "failed" if s.id in after else "lost", after.get(s.id))
                    for s, _ in part_failed
                ]
            if pool is not None:
                steps, refused = self._claim_in(tx, freed=len(results))
        # Held until written: another lane deciding whether to stop sees them meanwhile.
        for step, _, _ in results:
            self._held.pop(step.id, None)
            self._futures.pop(step.id, None)
        for _, what, _ in written:
            if what == "completed":
                self.stats.completed += 1
            elif what == "failed":
                self.stats.failed += 1
            else:
                self.stats.lost += 1
        if self._on_written is not None:
            for step, what, state in written:
                self._on_written(step, what, state)
        return 0 if pool is None else self._start(steps, refused, pool)

    def _heartbeat(self) -> None:
        if not self._held:
            return
        leases = _leases(self._held.values())
        result = self._db.steps.heartbeat_many(
            worker_id=self.worker_id, steps=leases, lease=self._lease
        )
        if result.lost:
            log.warning("worker %s lost the lease of %d steps", self.worker_id, len(result.lost))

    def _shutdown(
        self, pool: ThreadPoolExecutor, pending: list[tuple[ClaimedStep, Any, BaseException | None]]
    ) -> None:
        # Steps whose handler has not started go back unspent; running ones finish.
        unstarted = [s for i, s in self._held.items() if self._futures[i].cancel()]
        pool.shutdown(wait=True)
        if unstarted:
            leases = _leases(unstarted)
            released = self._db.steps.release_many(worker_id=self.worker_id, steps=leases)
            self.stats.released += len(released)
            for step in unstarted:
                self._held.pop(step.id, None)
        pending, _ = self._collect(pending, 0.0, wait=False)
        if pending:
            self._flush(pending)


AsyncHandler = Callable[[ClaimedStep], Awaitable[Any]]
_Result = tuple[ClaimedStep, Any, BaseException | None]


class AsyncWorker:
    """The worker of the async face: the same claims ahead, batched writes, heartbeats,
    wake-ups and shutdown as `Worker`, with handlers that are coroutine functions run as
    tasks (at most `concurrency` at once) on the caller's event loop."""

    def __init__(
        self,
        db: AsyncDatabase,
        handlers: Mapping[str, AsyncHandler],
        *,
        worker_id: str | None = None,
        concurrency: int = 16,
        prefetch: int | None = None,
        lease: datetime.timedelta = datetime.timedelta(seconds=60),
        flush_size: int = 100,
        flush_interval: float = 0.005,
        idle_wait: float = 1.0,
        queues: Sequence[str] | None = None,
        lanes: int | None = None,
    ) -> None:
        _check_options(handlers, concurrency, prefetch, flush_interval, idle_wait, flush_size)
        if not all(inspect.iscoroutinefunction(h) for h in handlers.values()):
            raise InvalidInput("AsyncWorker handlers must be coroutine functions (async def)")
        self._lanes = _check_lanes(lanes, concurrency)
        self._concurrency = concurrency
        self._prefetch = prefetch
        self._queues = as_optional_queues(queues, "queues")
        self._db = db
        self._handlers = dict(handlers)
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._pace = _Pace()
        self._slots = asyncio.Semaphore(concurrency)
        self._lease = lease
        self._flush_size = flush_size
        self._flush_interval = flush_interval
        self._idle_wait = idle_wait
        self._stop = asyncio.Event()
        self._results: asyncio.Queue[_Result] = asyncio.Queue()
        self._held: dict[uuid.UUID, ClaimedStep] = {}
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._started: set[uuid.UUID] = set()
        self._peers: list[AsyncWorker] = []  # the other lanes, when this is one of several
        self.stats = WorkerStats()

    def stop(self) -> None:
        """Ask `run` to finish: no more claims, unstarted steps given back, running ones
        finished and written."""
        self._stop.set()

    async def run(self, *, until_idle: bool = False) -> WorkerStats:
        """Work until `stop()` (or, with `until_idle`, until nothing is left to claim and
        nothing is held); the statistics."""
        if self._lanes > 1:
            return await self._run_lanes(until_idle)
        pending: list[_Result] = []
        oldest = 0.0
        next_beat = time.monotonic() + self._lease.total_seconds() / 3
        outage = _Outage(self)
        wake: AsyncWakeUps | None = None
        try:
            wake = await self._db.wake_ups()  # an unreachable database at start is raised
            while not self._stop.is_set():
                try:
                    if wake is None:
                        wake = await self._db.wake_ups()
                    claimed = await self._claim()
                    collected = await self._collect(wait=not claimed, pending=len(pending))
                    if collected and not pending:
                        oldest = time.monotonic()
                    pending += collected
                    if pending and (
                        len(pending) >= self._flush_size
                        or time.monotonic() - oldest >= self._flush_interval
                        or not self._running_besides(pending)
                    ):
                        # Completions may have queued dependents: claim before waiting.
                        await self._flush(pending, claim=True)
                        pending = []
                        outage.passed()
                        continue
                    if time.monotonic() >= next_beat:
                        await self._heartbeat()
                        next_beat = time.monotonic() + self._lease.total_seconds() / 3
                    if not claimed and not self._held and not pending:
                        # Another lane's completions may still queue steps for this one.
                        peers_busy = any(peer._held for peer in self._peers)
                        if until_idle and not peers_busy:
                            break
                        await wake.wait(_PEER_WAIT if until_idle else self._idle_wait)
                except Unavailable as exc:
                    # As Worker: nothing was written; all is tried again after a pause.
                    if wake is not None:
                        await _aclose_quietly(wake)
                        wake = None
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), outage.failed(exc))
                    continue
                outage.passed()
        finally:
            if wake is not None:
                await _aclose_quietly(wake)
            await self._shutdown(pending)
        return self.stats

    async def _run_lanes(self, until_idle: bool) -> WorkerStats:
        """Run the claim loops side by side as tasks, as `Worker` runs its lanes."""
        children = [
            AsyncWorker(self._db, self._handlers, **_lane_options(self, lane))
            for lane in range(self._lanes)
        ]
        errors: list[BaseException] = []

        async def run_lane(child: AsyncWorker) -> None:
            child._stop = self._stop
            child._peers = [peer for peer in children if peer is not child]
            try:
                await child.run(until_idle=until_idle)
            except BaseException as exc:
                errors.append(exc)
                self._stop.set()

        await asyncio.gather(*(run_lane(child) for child in children))
        for child in children:
            _add_stats(self.stats, child.stats)
        if errors:
            raise errors[0]
        return self.stats

    def _running_besides(self, pending: list[_Result]) -> bool:
        return bool(self._held.keys() - {s.id for s, _, _ in pending})

    async def _claim(self) -> int:
        if len(self._held) >= _capacity(self):
            return 0
        # A claim of its own is one statement: no transaction block (two round trips).
        return self._start(await self._claim_in(self._db))

    async def _claim_in(
        self, tx: AsyncDatabase | AsyncTransaction, freed: int = 0
    ) -> list[ClaimedStep]:
        room = min(_MAX_CLAIM, _capacity(self) - len(self._held) + freed)
        if room <= 0 or self._stop.is_set():
            return []
        return await tx.steps.claim(
            worker_id=self.worker_id, limit=room, lease=self._lease, queues=self._queues
        )

    def _start(self, steps: list[ClaimedStep]) -> int:
        """Hand the steps claimed (and committed) to the handlers."""
        self.stats.claimed += len(steps)
        for step in steps:
            self._held[step.id] = step
            self._tasks[step.id] = asyncio.create_task(self._execute(step))
        return len(steps)

    async def _execute(self, step: ClaimedStep) -> None:
        async with self._slots:
            self._started.add(step.id)
            handler = self._handlers.get(step.action_ref or "")
            began = time.perf_counter()
            try:
                if handler is None:
                    raise LookupError(
                        f"worker {self.worker_id} has no handler for {step.action_ref!r}"
                    )
                outputs = await handler(step)
            # A handler is the application's code: whatever it raises fails this attempt.
            except Exception as exc:
                self._pace.add(time.perf_counter() - began)
                self._results.put_nowait((step, None, exc))
            else:
                self._pace.add(time.perf_counter() - began)
                self._results.put_nowait((step, outputs, None))

    async def _collect(self, *, wait: bool, pending: int = 0) -> list[_Result]:
        # Gather what finished; wait up to the flush interval for more only when the
        # handlers are all there is to wait for, and only while some are still running.
        results: list[_Result] = []
        deadline = time.monotonic() + (self._flush_interval if wait and self._held else 0.0)
        while True:
            try:
                results.append(self._results.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - time.monotonic()
            if (
                left <= 0
                or len(results) >= self._flush_size
                or pending + len(results) >= len(self._held)
            ):
                return results
            try:
                results.append(await asyncio.wait_for(self._results.get(), left))
            except TimeoutError:
                return results

    async def _flush(self, results: list[_Result], *, claim: bool = False) -> None:
        """Write the results and (with `claim`, unless stopping) claim the room they free,
        in one transaction: one commit for both."""
        done = [(s, o) for s, o, e in results if e is None]
        failed = [(s, e) for s, _, e in results if e is not None]
        completed = failed_for = lost = 0
        steps: list[ClaimedStep] = []
        async with self._db.transaction() as tx:
            # At most _MAX_CLAIM steps per statement (a worker may hold more).
            for part in _parts(done):
                written = await tx.steps.complete_many(
                    worker_id=self.worker_id, completions=_completions(part)
                )
                completed, lost = completed + len(written.completed), lost + len(written.lost)
            for part_failed in _parts(failed):
                outcome = await tx.steps.fail_many(
                    worker_id=self.worker_id, failures=_failures(part_failed)
                )
                failed_for, lost = failed_for + len(outcome.steps), lost + len(outcome.lost)
            if claim:
                steps = await self._claim_in(tx, freed=len(results))
        # Held until written: another lane deciding whether to stop sees them meanwhile.
        for step, _, _ in results:
            self._held.pop(step.id, None)
            self._tasks.pop(step.id, None)
            self._started.discard(step.id)
        self.stats.completed += completed
        self.stats.failed += failed_for
        self.stats.lost += lost
        self._start(steps)

    async def _heartbeat(self) -> None:
        if not self._held:
            return
        result = await self._db.steps.heartbeat_many(
            worker_id=self.worker_id, steps=_leases(self._held.values()), lease=self._lease
        )
        if result.lost:
            log.warning("worker %s lost the lease of %d steps", self.worker_id, len(result.lost))

    async def _shutdown(self, pending: list[_Result]) -> None:
        # Steps whose handler has not started go back unspent; running ones finish.
        unstarted = [s for i, s in self._held.items() if i not in self._started]
        for step in unstarted:
            self._tasks.pop(step.id).cancel()
            self._held.pop(step.id)
        running = list(self._tasks.values())
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        if unstarted:
            released = await self._db.steps.release_many(
                worker_id=self.worker_id, steps=_leases(unstarted)
            )
            self.stats.released += len(released)
        pending += await self._collect(wait=False)
        if pending:
            await self._flush(pending)


def _check_options(
    handlers: object,
    concurrency: object,
    prefetch: object,
    flush_interval: object,
    idle_wait: object,
    flush_size: object,
) -> None:
    if not isinstance(handlers, Mapping) or not all(callable(h) for h in handlers.values()):
        raise InvalidInput("handlers must map action refs to callables")
    for name, value in (("concurrency", concurrency), ("flush_size", flush_size)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            raise InvalidInput(f"{name} must be an integer between 1 and 1000, got {value!r}")
    if prefetch is not None and (
        isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 0 <= prefetch <= 1000
    ):
        raise InvalidInput(f"prefetch must be an integer between 0 and 1000, got {prefetch!r}")
    for name, seconds in (("flush_interval", flush_interval), ("idle_wait", idle_wait)):
        if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds <= 0:
            raise InvalidInput(f"{name} must be a positive number of seconds, got {seconds!r}")


def _check_lanes(lanes: object, concurrency: int) -> int:
    """The number of claim loops: as asked (1..concurrency), else 2 from 4 handlers up."""
    if lanes is None:
        return 2 if concurrency >= 4 else 1
    if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= concurrency:
        raise InvalidInput(
            f"lanes must be an integer between 1 and concurrency ({concurrency}), got {lanes!r}"
        )
    return lanes


class _Outage:
    """A worker's run of calls failed with `Unavailable`: each failure is counted and
    logged, and the pause before the next try doubles from 0.25 s to 30 s; the first pass
    through the loop that fails nothing ends the outage (and says so)."""

    __slots__ = ("_failures", "_worker")

    def __init__(self, worker: Worker | AsyncWorker) -> None:
        self._worker = worker
        self._failures = 0

    def failed(self, exc: Unavailable) -> float:
        """Count and log the failure; the seconds to wait before trying again."""
        self._failures += 1
        self._worker.stats.outages += 1
        pause = min(_MAX_OUTAGE_PAUSE, 0.25 * (1 << min(self._failures - 1, 10)))
        log.warning(
            "worker %s: the database is unavailable (%s); trying again in %.2f s",
            self._worker.worker_id,
            exc,
            pause,
        )
        return pause

    def passed(self) -> None:
        if self._failures:
            log.warning(
                "worker %s: the database is reachable again after %d failed tries",
                self._worker.worker_id,
                self._failures,
            )
            self._failures = 0


def _close_quietly(wake: WakeUps) -> None:
    # Its connection is already lost, or the worker is ending: a failure to close changes
    # nothing (the server drops the session with the connection).
    with contextlib.suppress(Unavailable):
        wake.close()


async def _aclose_quietly(wake: AsyncWakeUps) -> None:
    with contextlib.suppress(Unavailable):
        await wake.close()


class _Pace:
    """How long the worker's handlers took lately: a mean weighted towards the last few
    dozen steps (updated from the handler threads: a lost update only ages it a little)."""

    __slots__ = ("mean",)

    def __init__(self) -> None:
        self.mean: float | None = None

    def add(self, seconds: float) -> None:
        mean = self.mean
        self.mean = seconds if mean is None else mean + (seconds - mean) * 0.1

    def buffer(self, concurrency: int) -> int:
        """The steps to hold beyond the running ones: about `_BUFFER_SECONDS` of work per
        thread at this pace (ten per thread until a handler has finished), at most
        `_MAX_BUFFER`."""
        if self.mean is None:
            return min(_MAX_BUFFER, 10 * concurrency)
        return min(_MAX_BUFFER, int(concurrency * _BUFFER_SECONDS / max(self.mean, 1e-6)))


def _capacity(worker: Worker | AsyncWorker) -> int:
    """The steps the worker may hold (running and buffered): `concurrency + prefetch`, the
    buffer following the handlers' pace when no prefetch was given."""
    prefetch = worker._prefetch
    buffered = worker._pace.buffer(worker._concurrency) if prefetch is None else prefetch
    return worker._concurrency + buffered


def _add_stats(total: WorkerStats, part: WorkerStats) -> None:
    for field in msgspec.structs.fields(WorkerStats):
        setattr(total, field.name, getattr(total, field.name) + getattr(part, field.name))


def _lane_options(worker: Worker | AsyncWorker, lane: int) -> dict[str, Any]:
    """The settings of lane `lane` of `worker`: its own, with its share of the handlers
    and of the buffer."""
    prefetch = worker._prefetch
    return {
        "worker_id": worker.worker_id,
        "concurrency": _share(worker._concurrency, worker._lanes, lane),
        "prefetch": None if prefetch is None else _share(prefetch, worker._lanes, lane),
        "lease": worker._lease,
        "flush_size": worker._flush_size,
        "flush_interval": worker._flush_interval,
        "idle_wait": worker._idle_wait,
        "queues": worker._queues,
        "lanes": 1,
    }


def _share(total: int, parts: int, part: int) -> int:
    """Part `part` of `total` split into `parts` shares differing by at most one."""
    return total // parts + (1 if part < total % parts else 0)


def _parts(items: list[_T]) -> list[list[_T]]:
    """`items` in consecutive parts of at most `_MAX_CLAIM` (what one batched call takes)."""
    return [items[i : i + _MAX_CLAIM] for i in range(0, len(items), _MAX_CLAIM)]


def _completions(done: list[tuple[ClaimedStep, Any]]) -> list[StepCompletion]:
    return [StepCompletion(step_id=s.id, attempt=s.attempt, outputs=o) for s, o in done]


def _failures(failed: list[tuple[ClaimedStep, BaseException]]) -> list[StepFailure]:
    return [
        StepFailure(step_id=s.id, attempt=s.attempt, error=f"{type(e).__name__}: {e}")
        for s, e in failed
    ]


def _leases(steps: Iterable[ClaimedStep]) -> list[StepLease]:
    return [StepLease(step_id=s.id, attempt=s.attempt) for s in steps]


def load_handlers(spec: str) -> Mapping[str, Handler]:
    """The handlers named by "MODULE:ATTRIBUTE" (a mapping of action refs to callables),
    importing MODULE from the current directory or the installed packages; raises
    InvalidInput saying what is wrong."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InvalidInput(f"handlers must be given as MODULE:ATTRIBUTE, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(f"cannot import {module_name!r}: {exc}") from exc
    handlers = getattr(module, attribute, None)
    if not isinstance(handlers, Mapping) or not all(callable(h) for h in handlers.values()):
        raise InvalidInput(f"{spec} must be a mapping of action refs to callables")
    return handlers
