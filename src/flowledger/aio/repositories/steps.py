"""Steps: the claim loop (claim, heartbeat, complete, fail) and the reaper.

Every worker write is compare-and-set on (id, status 'running', lease_owner, attempt);
zero rows means the lease was lost (expired and reaped, or the execution was cancelled),
reported as LeaseLost with nothing changed. Retries wait base * 2^(attempt-1) seconds,
capped at the stage's backoff_max_seconds, then jittered by +-20 % (so retries of many
steps that failed together spread out, while a retry never comes much earlier than its
policy says).
"""

from __future__ import annotations

import builtins
import datetime
import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from flowledger.aio.repositories.base import AsyncConnection, AsyncRepository, as_uuid
from flowledger.errors import InvalidInput, LeaseLost
from flowledger.records.runs import (
    STEP_STATUSES,
    ClaimedStep,
    CompleteResult,
    ExecutionLock,
    FailResult,
    HeartbeatResult,
    ReapResult,
    ReleasedStep,
    Step,
    StepAttempt,
    StepCompletion,
    StepFailure,
    StepLease,
)
from flowledger.repositories._checks import (
    INT32_MAX,
    as_instant,
    as_int,
    as_interval,
    as_json,
    as_name,
    as_optional_instant,
    as_optional_queues,
    as_signal_name,
    as_text,
    as_uuid_list,
    check_batch,
    show,
)

if TYPE_CHECKING:
    from flowledger.aio.repositories.registry import AsyncRepositories

__all__ = ["AsyncStepsReader", "AsyncStepsRepository"]

engine_log = logging.getLogger("flowledger.engine")

_DEFAULT_LEASE = datetime.timedelta(seconds=30)
_MAX_CLAIM = 1000
# A worker holding a step longer heartbeats; a longer lease only delays the reaper.
MAX_LEASE = datetime.timedelta(days=1)
# A wait for a signal longer than a year is a mistake, not a plan.
_MAX_WAIT = datetime.timedelta(days=366)


class AsyncStepsReader(AsyncRepository):
    """Steps: look up, list an execution's, attempts, find by task, retries due, overruns."""

    async def get(self, *, id: uuid.UUID | str) -> Step:
        """The step with this id; raises NotFound, InvalidInput on a malformed id."""
        step_id = as_uuid(id, "step id")
        found: Step = await self._require("get_step_by_id", {"id": step_id}, _missing(step_id))
        return found

    async def list_by_execution(self, *, execution_id: uuid.UUID | str) -> builtins.list[Step]:
        """Every step of an execution by task name and index; raises InvalidInput."""
        params = {"execution_id": as_uuid(execution_id, "execution id")}
        found: builtins.list[Step] = await self._fetch("list_steps_by_execution", params)
        return found

    async def list_attempts(self, *, step_id: uuid.UUID | str) -> list[StepAttempt]:
        """The attempts of a step, first to last; raises InvalidInput on a malformed id."""
        params = {"step_id": as_uuid(step_id, "step id")}
        found: list[StepAttempt] = await self._fetch("list_step_attempts", params)
        return found

    async def find_by_task_name(
        self, *, execution_id: uuid.UUID | str, task_name: str
    ) -> builtins.list[Step]:
        """The steps of one task of an execution (one per with_items element), by index;
        empty when there is none. Raises InvalidInput."""
        if not isinstance(task_name, str):
            raise InvalidInput(f"task_name must be a string, got {type(task_name).__name__}")
        as_name(task_name, "task_name", blank=True)
        params = {"execution_id": as_uuid(execution_id, "execution id"), "task_name": task_name}
        found: builtins.list[Step] = await self._fetch("list_steps_by_task_name", params)
        return found

    async def find_by_child_execution(self, *, execution_id: uuid.UUID | str) -> Step:
        """The step that started the child execution `execution_id` and waits (or waited)
        for it. Raises NotFound (no such execution, or not a child of a step), InvalidInput."""
        child = as_uuid(execution_id, "execution id")
        missing = f"execution {child} was not started by a step"
        found: Step = await self._require("get_step_by_child_execution", {"id": child}, missing)
        return found

    async def find_pending_retries(
        self, *, now: datetime.datetime | None = None, limit: int = 100
    ) -> list[Step]:
        """Steps waiting out a retry backoff at `now` (default: the current time), soonest
        due first; raises InvalidInput on a bad limit."""
        _check_find_limit(limit)
        params = {"now": as_optional_instant(now, "now") or _utcnow(), "limit": limit}
        found: list[Step] = await self._fetch("find_pending_retries", params)
        return found

    async def find_timed_out(
        self, *, now: datetime.datetime | None = None, limit: int = 100
    ) -> list[Step]:
        """Running steps past their timeout at `now` (default: the current time), oldest
        first; raises InvalidInput on a bad limit."""
        _check_find_limit(limit)
        params = {"now": as_optional_instant(now, "now") or _utcnow(), "limit": limit}
        found: list[Step] = await self._fetch("find_timed_out_steps", params)
        return found


class AsyncStepsRepository(AsyncStepsReader):
    """Execution steps: claim with a lease, heartbeat, complete, fail (with retries), reap."""

    # Its neighbours are full repositories: it writes through them.
    _repos: AsyncRepositories

    async def claim(
        self,
        *,
        worker_id: str,
        limit: int = 1,
        lease: datetime.timedelta = _DEFAULT_LEASE,
        queues: Sequence[str] | None = None,
    ) -> list[ClaimedStep]:
        """Up to `limit` due steps of running executions in `queues` (None: every queue),
        never of a paused queue, now leased to `worker_id` (priority, available_at, id
        order; never one step to two workers); raises InvalidInput."""
        _check_worker(worker_id)
        _check_lease(lease)
        _check_find_limit(limit)
        names = as_optional_queues(queues, "queues")
        params = {"worker_id": worker_id, "limit": limit, "lease": lease, "queues": names}
        found: list[ClaimedStep] = await self._fetch("claim_steps", params)
        return found

    async def heartbeat(
        self,
        *,
        step_id: uuid.UUID | str,
        worker_id: str,
        attempt: int,
        lease: datetime.timedelta = _DEFAULT_LEASE,
    ) -> datetime.datetime:
        """The new lease expiry of a step the worker still holds; raises LeaseLost, InvalidInput."""
        params = _cas(step_id, worker_id, attempt)
        result = await self.heartbeat_many(
            worker_id=worker_id,
            steps=[StepLease(step_id=params["id"], attempt=attempt)],
            lease=lease,
        )
        if result.lost:
            raise _lost(params)
        return result.leases[params["id"]]

    async def heartbeat_many(
        self,
        *,
        worker_id: str,
        steps: Sequence[StepLease],
        lease: datetime.timedelta = _DEFAULT_LEASE,
    ) -> HeartbeatResult:
        """Extend, in one statement, the leases of the steps the worker still holds: the new
        expiry per step, and the steps whose lease was lost (not an error: a worker drops
        those). Raises InvalidInput."""
        _check_lease(lease)
        ids, attempts = _held(worker_id, steps, StepLease, "steps")
        params = {"worker_id": worker_id, "ids": ids, "attempts": attempts, "lease": lease}
        extended = await self._fetch("heartbeat_steps", params) if ids else []
        leases = {x.id: x.lease_expires_at for x in extended}
        return HeartbeatResult(leases=leases, lost=[i for i in ids if i not in leases])

    async def complete(
        self, *, step_id: uuid.UUID | str, worker_id: str, attempt: int, outputs: Any = None
    ) -> None:
        """Store the outputs and close the attempt; in the same transaction the pending steps
        whose last dependency this was are queued (unless the execution is paused or
        cancelled) and the execution completes when nothing is left to run. Raises
        LeaseLost, InvalidInput."""
        params = _cas(step_id, worker_id, attempt)
        one = StepCompletion(step_id=params["id"], attempt=attempt, outputs=outputs)
        if (await self.complete_many(worker_id=worker_id, completions=[one])).lost:
            raise _lost(params)

    async def complete_many(
        self, *, worker_id: str, completions: Sequence[StepCompletion]
    ) -> CompleteResult:
        """Complete many steps of one worker in one transaction, exactly as `complete` does
        each (one statement for the steps, their attempts and their dependents, one to finish
        the executions left with nothing to run): compare-and-set per step, so a lost lease
        is reported in `lost` and nothing is written for that step, while the others
        complete. Raises InvalidInput."""
        ids, attempts = _held(worker_id, completions, StepCompletion, "completions")
        if not ids:
            return CompleteResult(completed=[], lost=[])
        outputs = [as_json(c.outputs, "outputs") for c in completions]
        async with self._atomic() as conn:
            locks = await self._lock_executions_of(ids, conn)
            done = await self._repos.executions._complete_steps(
                worker_id, ids, attempts, outputs, locks, conn
            )
        completed = {d.id for d in done}
        return CompleteResult(
            completed=[i for i in ids if i in completed],
            lost=[i for i in ids if i not in completed],
        )

    async def fail(
        self, *, step_id: uuid.UUID | str, worker_id: str, attempt: int, error: str
    ) -> Step:
        """The step after a failed attempt: queued again after a backoff while attempts
        remain; else failed for good, which skips every step depending on it and fails the
        execution (fail_fast) or lets its independent branches finish (continue), in the
        same transaction. Raises LeaseLost, InvalidInput."""
        params = _cas(step_id, worker_id, attempt)
        one = StepFailure(step_id=params["id"], attempt=attempt, error=error)
        result = await self.fail_many(worker_id=worker_id, failures=[one])
        if result.lost:
            raise _lost(params)
        return result.steps[0]

    async def fail_many(self, *, worker_id: str, failures: Sequence[StepFailure]) -> FailResult:
        """Record many failed attempts of one worker in one transaction, exactly as `fail`
        does each: each step after its attempt (queued again, or failed for good and
        propagated), and the steps whose lease was lost (nothing written for them). Raises
        InvalidInput."""
        ids, attempts = _held(worker_id, failures, StepFailure, "failures")
        if not ids:
            return FailResult(steps=[], lost=[])
        errors = [as_text(f.error, "error") for f in failures]
        async with self._atomic() as conn:
            locks = await self._lock_executions_of(ids, conn)
            steps = await self._repos.executions._fail_steps(
                worker_id, ids, attempts, errors, locks, conn
            )
        by_id = {s.id: s for s in steps}
        return FailResult(
            steps=[by_id[i] for i in ids if i in by_id], lost=[i for i in ids if i not in by_id]
        )

    async def release_many(
        self, *, worker_id: str, steps: Sequence[StepLease]
    ) -> builtins.list[uuid.UUID]:
        """Give back claimed steps the worker never started (a worker shutting down with a
        buffer): queued again without using up an attempt, their claim's attempt row
        deleted. The steps released; one whose lease was lost is left alone. Raises
        InvalidInput."""
        ids, attempts = _held(worker_id, steps, StepLease, "steps")
        if not ids:
            return []
        params = {"worker_id": worker_id, "ids": ids, "attempts": attempts}
        async with self._atomic() as conn:
            await self._lock_executions_of(ids, conn)  # the engine's lock order
            released: builtins.list[ReleasedStep] = await self._fetch(
                "release_steps", params, conn=conn
            )
        return [r.id for r in released]

    async def sleep(
        self,
        *,
        step_id: uuid.UUID | str,
        worker_id: str,
        attempt: int,
        until: datetime.datetime,
    ) -> Step:
        """The step, queued again to run at `until` (at once when that has passed): a
        durable timer that spends no attempt (the attempt is given back, its row deleted)
        and that no claim takes before `until`. Raises LeaseLost, InvalidInput."""
        params = _cas(step_id, worker_id, attempt)
        params["until"] = as_instant(until, "until")
        async with self._atomic() as conn:
            await self._lock_executions_of([params["id"]], conn)  # the engine's lock order
            slept: Step | None = await self._fetch("requeue_sleeping_step", params, conn=conn)
        if slept is None:
            raise _lost(params)
        return slept

    async def wait_for_signal(
        self,
        *,
        step_id: uuid.UUID | str,
        worker_id: str,
        attempt: int,
        name: str,
        timeout: datetime.timedelta | None = None,
    ) -> Step:
        """The step after ending its attempt to wait for the signal `name` of its execution
        (no attempt spent): queued at once when such a signal was sent and not consumed yet
        (the oldest is consumed), else `waiting` (no lease, not claimable) until one is sent,
        or until `timeout` passed, when a reaper pass queues it without one. The payload is
        `inputs["signal:<name>"]` of its next claims. Raises LeaseLost, InvalidInput."""
        params = _cas(step_id, worker_id, attempt)
        params["name"] = as_signal_name(name, "name")
        params["timeout"] = None
        if timeout is not None:
            params["timeout"] = as_interval(
                timeout, "timeout", datetime.timedelta(microseconds=1), _MAX_WAIT
            )
        async with self._atomic() as conn:
            # The execution's row first, as a send takes it: the two run one after the
            # other, so a signal sent meanwhile is either seen here or finds this step.
            await self._lock_executions_of([params["id"]], conn)
            waited: Step | None = await self._fetch("wait_step_for_signal", params, conn=conn)
        if waited is None:
            raise _lost(params)
        return waited

    async def reap(self, *, batch: int = 100) -> ReapResult:
        """One reaper pass over up to `batch` steps of each kind, skipping rows others hold:
        running steps past their timeout, and steps whose lease expired, are requeued while
        attempts remain, else become timed_out / failed, which skips their dependents and
        fails the execution (or, in continue mode, lets its other branches finish); steps
        whose wait for a signal passed its deadline are queued without one (`woken`). Step
        ids per resulting status. Raises InvalidInput on a bad batch."""
        check_batch(batch)
        async with self._atomic() as conn:
            timed_out: builtins.list[Step] = await self._fetch(
                "expire_timed_out_steps", {"batch": batch}, conn=conn
            )
            expired: builtins.list[Step] = await self._fetch(
                "requeue_expired_steps", {"batch": batch}, conn=conn
            )
            woken: builtins.list[Step] = await self._fetch(
                "queue_overdue_waits", {"batch": batch}, conn=conn
            )
            reaped = [*timed_out, *expired]
            final = [s for s in reaped if s.status != "queued"]
            if final:
                # Already held by this transaction (the reaper queries lock them first).
                ids = {"ids": [s.id for s in final]}
                locks: builtins.list[ExecutionLock] = await self._fetch(
                    "lock_step_executions", ids, conn=conn
                )
                await self._repos.executions._after_failures(final, {x.id: x for x in locks}, conn)
        result = ReapResult(
            requeued=[s.id for s in reaped if s.status == "queued"],
            failed=[s.id for s in final if s.status == "failed"],
            timed_out=[s.id for s in final if s.status == "timed_out"],
            woken=[s.id for s in woken],
        )
        if reaped:
            # Normal operation reaps nothing: a lease that ran out is a worker that died or
            # stalled, worth a line at WARNING.
            engine_log.warning(
                "reaper: %d steps requeued, %d failed, %d timed out",
                len(result.requeued),
                len(result.failed),
                len(result.timed_out),
            )
        return result

    async def bulk_update_status(self, *, ids: Sequence[uuid.UUID | str], status: str) -> int:
        """Set the status of many steps in one statement, clearing leases and closing the
        open attempts of steps that were running; the number changed. Raises InvalidInput
        on an unknown status, 'running' (only a claim leases) or an illegal transition."""
        if not isinstance(status, str) or status not in STEP_STATUSES or status == "running":
            raise InvalidInput(f"cannot set step status {show(status)} in bulk")
        params = {"ids": as_uuid_list(ids, "step id"), "status": status}
        async with self._atomic() as conn:
            # The executions' rows first: the engine's lock order.
            await self._fetch("lock_step_executions", {"ids": params["ids"]}, conn=conn)
            changed = int(await self._fetch("update_steps_status", params, conn=conn))
            outcome = {"pending": "lease_lost", "queued": "lease_lost", "skipped": "cancelled"}
            closing = {"ids": params["ids"], "outcome": outcome.get(status, status)}
            await self._fetch("close_attempts_of_steps", closing, conn=conn)
        return changed

    async def _lock_executions_of(
        self, ids: builtins.list[uuid.UUID], conn: AsyncConnection
    ) -> dict[uuid.UUID, ExecutionLock]:
        locks: builtins.list[ExecutionLock] = await self._fetch(
            "lock_step_executions", {"ids": ids}, conn=conn
        )
        return {lock.id: lock for lock in locks}


def _cas(step_id: uuid.UUID | str, worker_id: str, attempt: int) -> dict[str, Any]:
    _check_worker(worker_id)
    as_int(attempt, "attempt", 1, INT32_MAX)
    return {"id": as_uuid(step_id, "step id"), "worker_id": worker_id, "attempt": attempt}


def _held(
    worker_id: str,
    items: Sequence[StepLease | StepCompletion | StepFailure],
    kind: type[StepLease | StepCompletion | StepFailure],
    argument: str,
) -> tuple[builtins.list[uuid.UUID], builtins.list[int]]:
    """The step ids and attempts of a batch, checked: every item a `kind`, no step twice."""
    _check_worker(worker_id)
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise InvalidInput(f"{argument} must be a list of {kind.__name__}")
    if len(items) > _MAX_CLAIM:
        raise InvalidInput(f"{argument} holds {len(items)} items; at most {_MAX_CLAIM}")
    ids: builtins.list[uuid.UUID] = []
    attempts: builtins.list[int] = []
    for item in items:
        if not isinstance(item, kind):
            raise InvalidInput(f"{argument} must hold {kind.__name__} items, got {item!r}")
        checked = _cas(item.step_id, worker_id, item.attempt)
        ids.append(checked["id"])
        attempts.append(item.attempt)
    if len(set(ids)) != len(ids):
        raise InvalidInput(f"{argument} names a step more than once")
    return ids, attempts


def _lost(params: dict[str, Any]) -> LeaseLost:
    return LeaseLost(
        f"step {params['id']} is no longer leased to {params['worker_id']!r} "
        f"for attempt {params['attempt']}"
    )


def _check_worker(worker_id: str) -> None:
    as_name(worker_id, "worker_id")


def _check_lease(lease: datetime.timedelta) -> None:
    if isinstance(lease, datetime.timedelta) and lease <= datetime.timedelta(0):
        raise InvalidInput(f"lease must be positive, got {lease}")
    as_interval(lease, "lease", datetime.timedelta(microseconds=1), MAX_LEASE)


def _check_find_limit(limit: int) -> None:
    as_int(limit, "limit", 1, _MAX_CLAIM)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _missing(step_id: uuid.UUID) -> str:
    return f"step {step_id} not found"
