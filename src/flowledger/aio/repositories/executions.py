"""Executions: start a run (version pinned, steps fanned out, event written) and steer it.

An execution is inserted directly as 'running' (started_at = now()): its steps are created
in the same transaction, so there is no moment at which it exists without them. Of a
workflow with max_running_executions, one that finds every slot taken is inserted as
'pending' (started_at NULL) with its steps, which no claim takes until it runs; the
database starts pending executions, oldest first, in the transaction that frees a slot
(see the slot triggers of migration 0024).

The engine's lock order: an execution's row before its steps' rows, a child execution's
before its parent's. Every transaction that finishes, promotes, skips or cancels steps of
an execution takes the execution's row first (claims and heartbeats touch only their own
steps and never wait), so such transactions of one execution run one after the other and
none waits for another in the opposite order. A capped workflow's slot row comes after
them all: a start or a retry locks it after the workflow's row (and a child start after its
parent's row), and a change out of running or paused settles it when the transaction
commits, when every execution row it needs is held already.
"""

from __future__ import annotations

import builtins
import datetime
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from flowledger.aio.repositories.base import (
    AsyncConnection,
    AsyncRepository,
    as_optional_uuid,
    as_uuid,
)
from flowledger.errors import FlowledgerError, InvalidInput, NotFound, StaleWrite
from flowledger.records.events import NewEvent
from flowledger.records.runs import (
    EXECUTION_STATUSES,
    CompletedStep,
    Execution,
    ExecutionLock,
    ExecutionProgress,
    ExecutionStatus,
    StartRequest,
    Step,
    WorkflowState,
)
from flowledger.repositories._checks import (
    INT64_MAX,
    as_cursor,
    as_int,
    as_json,
    as_name,
    as_optional_instant,
    as_optional_text,
    as_text,
    check_batch,
    cutoff_of,
    show,
)
from flowledger.repositories.pagination import (
    DEFAULT_PAGE_SIZE,
    Page,
    check_limit,
    listing_scope,
    make_page,
)

if TYPE_CHECKING:
    from flowledger.aio.repositories.registry import AsyncRepositories

__all__ = ["AsyncExecutionsReader", "AsyncExecutionsRepository"]

_LIST_SCOPE = "executions.list:created_at:desc"
_CANCELLED = "execution cancelled"
_MAX_STARTS = 1000


class AsyncExecutionsReader(AsyncRepository):
    """Executions: look up, list, find paused ones, progress."""

    async def get(self, *, id: uuid.UUID | str) -> Execution:
        """The execution with this id; raises NotFound, InvalidInput on a malformed id."""
        execution_id = as_uuid(id, "execution id")
        found: Execution = await self._require(
            "get_execution_by_id", {"id": execution_id}, _missing(execution_id)
        )
        return found

    async def list(
        self,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
        workflow_id: uuid.UUID | str | None = None,
        status: ExecutionStatus | None = None,
        parent_execution_id: uuid.UUID | str | None = None,
        created_from: datetime.datetime | None = None,
        created_to: datetime.datetime | None = None,
    ) -> Page[Execution]:
        """A page of executions, newest first, filtered by workflow, status, parent and
        creation time in [created_from, created_to); raises InvalidInput, InvalidCursor."""
        check_limit(limit)
        if status is not None and (not isinstance(status, str) or status not in EXECUTION_STATUSES):
            raise InvalidInput(f"unknown execution status {show(status)}")
        filters = {
            "workflow_id": as_optional_uuid(workflow_id, "workflow id"),
            "status": status,
            "parent_execution_id": as_optional_uuid(parent_execution_id, "parent execution id"),
            "created_from": as_optional_instant(created_from, "created_from"),
            "created_to": as_optional_instant(created_to, "created_to"),
        }
        scope = listing_scope(_LIST_SCOPE, filters)
        after_created_at, after_id = self._after(cursor, scope)
        params = {
            **filters,
            "after_created_at": after_created_at,
            "after_id": after_id,
            "limit": limit,
        }
        rows: builtins.list[Execution] = await self._fetch("list_executions", params)
        return make_page(
            rows,
            limit=limit,
            key=lambda e: (e.created_at, e.id),
            codec=self._codec,
            scope=scope,
        )

    async def find_paused(
        self, *, paused_before: datetime.datetime | None = None, limit: int = 100
    ) -> builtins.list[Execution]:
        """Paused executions, longest paused first (optionally paused before a time);
        raises InvalidInput on a bad limit."""
        check_limit(limit)
        params = {
            "paused_before": as_optional_instant(paused_before, "paused_before"),
            "limit": limit,
        }
        found: builtins.list[Execution] = await self._fetch("find_paused_executions", params)
        return found

    async def progress(self, *, id: uuid.UUID | str) -> ExecutionProgress:
        """Where the execution stands, derived from its steps in one indexed query: step
        counts per status and the task names that are current (queued, running or
        waiting), pending, completed, failed, skipped and cancelled. Raises NotFound,
        InvalidInput."""
        execution_id = as_uuid(id, "execution id")
        params = {"id": execution_id}
        missing = _missing(execution_id)
        found: ExecutionProgress = await self._require("get_execution_progress", params, missing)
        return found

    def _after(self, cursor: str | None, scope: str) -> tuple[Any, Any]:
        if cursor is None:
            return None, None
        created_at, execution_id = self._codec.decode(as_cursor(cursor), scope, arity=2)
        if not isinstance(created_at, datetime.datetime) or not isinstance(execution_id, uuid.UUID):
            raise InvalidInput("cursor does not hold a (created_at, id) position")
        return created_at, execution_id


class AsyncExecutionsRepository(AsyncExecutionsReader):
    """Workflow executions: start, read, pause/resume/cancel/fail/retry, progress, prune."""

    # Its neighbours are full repositories: it writes through them.
    _repos: AsyncRepositories

    async def start(
        self,
        *,
        workflow_id: uuid.UUID | str,
        parameters: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        triggered_by: uuid.UUID | str | None = None,
        parent_execution_id: uuid.UUID | str | None = None,
        parent_step_id: uuid.UUID | str | None = None,
    ) -> Execution:
        """The running execution of the workflow's current version, its steps created from
        the version's stage snapshot (those with no dependency queued) and
        `execution.started` written, in one statement (pending, with `execution.pending`,
        while its workflow's max_running_executions are running); with an idempotency key
        already used, the existing execution (nothing is created). With `parent_step_id`, a child
        execution: that running step waits for it (no lease, not claimable) and completes
        or fails with it. Raises NotFound (workflow, parent step), InvalidInput (archived or
        disabled workflow, malformed ids, blank key, unknown parent or user, a parent step
        that is not running)."""
        request = _request(workflow_id, parameters, idempotency_key, triggered_by)
        request["parent_execution_id"] = as_optional_uuid(
            parent_execution_id, "parent execution id"
        )
        request["parent_step_id"] = as_optional_uuid(parent_step_id, "parent step id")
        if request["parent_step_id"] is None:
            return (await self._start([request], None))[0][0]
        async with self._atomic(request) as conn:
            await self._adopt(request, conn)
            [(execution, created)] = await self._start([request], conn)
            if created:
                await self._wait_for(request["parent_step_id"], conn)
                if execution.status == "completed":  # nothing to run: done at once
                    await self._report_to_parent(execution, conn)
        return execution

    async def start_many(self, *, requests: Sequence[StartRequest]) -> builtins.list[Execution]:
        """Start many executions (each with its own workflow, parameters and idempotency
        key) in one statement and one transaction, exactly as `start` starts each; the
        executions in request order (an already used key gives the existing one). Raises
        NotFound, InvalidInput (for any request: then none is started)."""
        if isinstance(requests, str | bytes) or not isinstance(requests, Sequence):
            raise InvalidInput("requests must be a list of StartRequest")
        if len(requests) > _MAX_STARTS:
            raise InvalidInput(f"requests holds {len(requests)} items; at most {_MAX_STARTS}")
        checked = []
        for r in requests:
            if not isinstance(r, StartRequest):
                raise InvalidInput(f"requests must hold StartRequest items, got {r!r}")
            checked.append(_request(r.workflow_id, r.parameters, r.idempotency_key, r.triggered_by))
        if not checked:
            return []
        async with self._atomic() as conn:
            return [execution for execution, _ in await self._start(checked, conn)]

    async def pause(self, *, id: uuid.UUID | str, reason: str | None = None) -> Execution:
        """The paused execution (its queued steps are no longer claimed; running ones finish;
        already paused: returned as is); raises NotFound, InvalidInput when it is finished."""
        execution_id = as_uuid(id, "execution id")
        params = {"id": execution_id, "reason": as_optional_text(reason, "reason")}
        async with self._atomic() as conn:
            paused: Execution | None = await self._fetch("set_execution_paused", params, conn=conn)
            if paused is None:
                return await self._get(execution_id, conn)
            await self._announce(paused, "execution.paused", conn)
        return paused

    async def resume(self, *, id: uuid.UUID | str) -> Execution:
        """The running execution again: steps whose dependencies completed while it was
        paused are queued, and it finishes at once when nothing is left to run (already
        running: returned as is). Raises NotFound, InvalidInput when it is finished or
        pending (a pending execution starts when its workflow has a free slot)."""
        execution_id = as_uuid(id, "execution id")
        async with self._atomic() as conn:
            resumed: Execution | None = await self._fetch(
                "set_execution_running", {"id": execution_id}, conn=conn
            )
            if resumed is None:
                current = await self._get(execution_id, conn)
                if current.status != "running":
                    raise InvalidInput(
                        f"execution {execution_id} is {current.status}: only a paused "
                        "execution can be resumed"
                    )
                return current
            await self._fetch("queue_ready_steps", {"id": execution_id}, conn=conn)
            await self._announce(resumed, "execution.resumed", conn)
            return await self._finish_if_settled(execution_id, conn) or resumed

    async def cancel(self, *, id: uuid.UUID | str) -> Execution:
        """The cancelled execution, all its unfinished steps cancelled in the same transaction
        (already cancelled: returned as is); a child execution fails the step that waits for
        it. Raises NotFound, InvalidInput when finished."""
        execution_id = as_uuid(id, "execution id")
        async with self._atomic() as conn:
            # The execution's row first: the engine's lock order.
            cancelled: Execution | None = await self._fetch(
                "cancel_execution", {"id": execution_id}, conn=conn
            )
            if cancelled is None:
                return await self._get(execution_id, conn)
            await self._cancel_steps(execution_id, _CANCELLED, conn)
            await self._announce(cancelled, "execution.cancelled", conn)
            await self._report_to_parent(cancelled, conn)
        return cancelled

    async def fail(self, *, id: uuid.UUID | str, error: str) -> Execution | None:
        """The failed execution, its unfinished steps cancelled and `execution.failed`
        written; None when it already was finished. Raises InvalidInput."""
        execution_id = as_uuid(id, "execution id")
        error = as_text(error, "error")
        async with self._atomic() as conn:
            return await self._fail(execution_id, error, conn)

    async def retry(self, *, id: uuid.UUID | str) -> Execution:
        """The failed execution running again as its next attempt, in one transaction: its
        failed, timed-out, skipped and cancelled steps requeued with a fresh attempt budget
        (pending until what they depend on completes), completed steps kept with their
        outputs, `execution.retried` written. Of a workflow whose max_running_executions
        are running, it waits as pending and starts in its turn (id order). Raises
        NotFound, InvalidInput unless it is failed."""
        execution_id = as_uuid(id, "execution id")
        async with self._atomic() as conn:
            retried: Execution | None = await self._fetch(
                "retry_execution", {"id": execution_id}, conn=conn
            )
            if retried is None:
                current = await self._get(execution_id, conn)
                raise InvalidInput(
                    f"execution {execution_id} is {current.status}: only a failed execution "
                    "can be retried"
                )
            await self._fetch("requeue_execution_steps", {"id": execution_id}, conn=conn)
            await self._announce(retried, "execution.retried", conn)
            return await self._finish_if_settled(execution_id, conn) or retried

    async def set_variables(
        self, *, id: uuid.UUID | str, variables: dict[str, Any], expected_version: int
    ) -> Execution:
        """The execution with its variables replaced if its row_version still is
        `expected_version` (compare-and-set; row_version + 1). Raises StaleWrite, NotFound,
        InvalidInput."""
        execution_id = as_uuid(id, "execution id")
        if not isinstance(variables, dict):
            kind = type(variables).__name__
            raise InvalidInput(f"variables must be a JSON object (dict), got {kind}")
        if isinstance(expected_version, bool) or not isinstance(expected_version, int):
            raise InvalidInput(f"expected_version must be an integer, got {show(expected_version)}")
        params = {
            "id": execution_id,
            "variables": as_json(variables, "variables", object_only=True),
            "expected_version": as_int(expected_version, "expected_version", 0, INT64_MAX),
        }
        async with self._atomic(params) as conn:
            updated: Execution | None = await self._fetch(
                "update_execution_variables", params, conn=conn
            )
            if updated is not None:
                return updated
            current = await self._get(execution_id, conn)
        raise StaleWrite(
            f"execution {execution_id} changed: expected row_version {expected_version}, "
            f"now {current.row_version}"
        )

    async def prune_finished(
        self, *, older_than: datetime.datetime | datetime.timedelta, batch: int = 500
    ) -> int:
        """Delete executions finished before `older_than` (a time, or an age) with their
        steps, attempts, logs and sub-executions, one bounded transaction per batch; the
        number of executions deleted. Raises InvalidInput."""
        check_batch(batch)
        params = {"cutoff": cutoff_of(older_than), "batch": batch}
        return await self._delete_in_batches("prune_finished_executions", params)

    async def _start(
        self, requests: builtins.list[dict[str, Any]], conn: AsyncConnection | None
    ) -> builtins.list[tuple[Execution, bool]]:
        """Run start_executions for checked requests: each request's execution, and whether
        this call created it (False: its idempotency key was used already). Raises when a
        request's workflow cannot be started (nothing was created for it)."""
        params = {
            "workflow_ids": [r["workflow_id"] for r in requests],
            "parameters": [r["parameters"] for r in requests],
            "idempotency_keys": [r["idempotency_key"] for r in requests],
            "triggered_by": [r["triggered_by"] for r in requests],
            "parent_execution_ids": [r.get("parent_execution_id") for r in requests],
            "parent_step_ids": [r.get("parent_step_id") for r in requests],
        }
        context = requests[0] if len(requests) == 1 else None
        created: builtins.list[Execution] = await self._fetch(
            "start_executions", params, context=context, conn=conn
        )
        # Rows come in request order; a request without one reused a key or cannot start.
        rows = iter(created)
        row = next(rows, None)
        results: builtins.list[tuple[Execution, bool] | None] = []
        for r in requests:
            if row is not None and (row.workflow_id, row.idempotency_key) == (
                r["workflow_id"],
                r["idempotency_key"],
            ):
                results.append((row, True))
                row = next(rows, None)
            else:
                results.append(None)
        missing = [r for r, result in zip(requests, results, strict=True) if result is None]
        existing = await self._existing(missing, conn) if missing else {}
        return [
            result or (existing[r["workflow_id"], r["idempotency_key"]], False)
            for r, result in zip(requests, results, strict=True)
        ]

    async def _existing(
        self, requests: builtins.list[dict[str, Any]], conn: AsyncConnection | None
    ) -> dict[tuple[uuid.UUID, str | None], Execution]:
        keyed = [r for r in requests if r["idempotency_key"] is not None]
        params = {
            "workflow_ids": [r["workflow_id"] for r in keyed],
            "idempotency_keys": [r["idempotency_key"] for r in keyed],
        }
        found = (
            await self._fetch("get_executions_by_idempotency_keys", params, conn=conn)
            if keyed
            else []
        )
        existing = {(e.workflow_id, e.idempotency_key): e for e in found}
        for r in requests:
            if (r["workflow_id"], r["idempotency_key"]) not in existing:
                raise await self._unstartable(r["workflow_id"], conn)
        return existing

    async def _unstartable(
        self, workflow_id: uuid.UUID, conn: AsyncConnection | None
    ) -> FlowledgerError:
        params = {"workflow_id": workflow_id}
        state: WorkflowState | None = await self._fetch("get_workflow_startable", params, conn=conn)
        if state is None:
            return NotFound(f"workflow {workflow_id} not found")
        if state.status == "archived":
            return InvalidInput(f"workflow {workflow_id} is archived: it cannot be started")
        return InvalidInput(f"workflow {workflow_id} is disabled: enable it to start it")

    async def _adopt(self, params: dict[str, Any], conn: AsyncConnection) -> None:
        # A child execution: its parent is the execution of the parent step (locked here:
        # the parent's row, then the step's row in _wait_for).
        parent = await self._lock_of_step(params["parent_step_id"], conn)
        if params["parent_execution_id"] not in (None, parent.id):
            raise InvalidInput(
                f"parent step {params['parent_step_id']} belongs to execution {parent.id}, "
                f"not {params['parent_execution_id']}"
            )
        params["parent_execution_id"] = parent.id

    async def _wait_for(self, step_id: uuid.UUID, conn: AsyncConnection) -> None:
        if await self._fetch("wait_for_child", {"id": step_id}, conn=conn) is None:
            raise InvalidInput(
                f"step {step_id} is not running: only a claimed step can start a child execution"
            )

    async def _lock_of_step(self, step_id: uuid.UUID, conn: AsyncConnection) -> ExecutionLock:
        lock: ExecutionLock | None = await self._fetch(
            "lock_step_execution", {"id": step_id}, conn=conn
        )
        if lock is None:
            raise NotFound(f"step {step_id} not found")
        return lock

    async def _cancel_steps(
        self, execution_id: uuid.UUID, reason: str, conn: AsyncConnection
    ) -> None:
        params = {"execution_id": execution_id, "reason": reason}
        await self._fetch("cancel_execution_steps", params, conn=conn)
        await self._fetch("close_cancelled_attempts", params, conn=conn)

    async def _fail(
        self, execution_id: uuid.UUID, error: str, conn: AsyncConnection
    ) -> Execution | None:
        params = {"id": execution_id, "error": error}
        failed: Execution | None = await self._fetch("fail_execution", params, conn=conn)
        if failed is None:
            return None
        await self._cancel_steps(execution_id, "execution failed", conn)
        await self._announce(failed, "execution.failed", conn)
        await self._report_to_parent(failed, conn)
        return failed

    async def _finish_if_settled(
        self, execution_id: uuid.UUID, conn: AsyncConnection
    ) -> Execution | None:
        """Finish the running execution when none of its steps can run any more (the caller
        holds its row): completed, or failed when a step failed for good."""
        done = await self._finish_settled([execution_id], conn)
        return done[0] if done else None

    async def _finish_settled(
        self, execution_ids: builtins.list[uuid.UUID], conn: AsyncConnection
    ) -> builtins.list[Execution]:
        """Finish and announce, in one statement, those of the running executions (whose
        rows the caller holds) none of whose steps can run any more, and report finished
        children to their parent steps."""
        params = {"ids": execution_ids}
        done: builtins.list[Execution] = await self._fetch(
            "finish_executions_if_settled", params, conn=conn
        )
        for execution in done:
            await self._report_to_parent(execution, conn)
        return done

    async def _after_failures(
        self,
        steps: builtins.list[Step],
        locks: Mapping[uuid.UUID, ExecutionLock],
        conn: AsyncConnection,
    ) -> None:
        """Steps failed for good (the caller holds their executions' rows): skip what
        depends on them, then fail each execution at once (fail_fast) or let its other
        branches run on and finish it once nothing more can run (continue)."""
        await self._fetch("skip_downstream_steps", {"ids": [s.id for s in steps]}, conn=conn)
        first: dict[uuid.UUID, Step] = {}
        for step in sorted(steps, key=lambda s: s.execution_id):
            first.setdefault(step.execution_id, step)
        for execution_id, step in first.items():
            if locks[execution_id].failure_mode == "continue":
                await self._finish_if_settled(execution_id, conn)
            else:
                reason = f"step {step.task_name}[{step.task_index}] {step.status}: {step.error}"
                await self._fail(execution_id, reason, conn)

    async def _report_to_parent(self, child: Execution, conn: AsyncConnection) -> None:
        """A finished child execution completes (or fails) the parent step waiting for it,
        in the same transaction; that may promote, skip or finish in the parent in turn."""
        if child.parent_step_id is None:
            return
        parent = await self._lock_of_step(child.parent_step_id, conn)
        step_id = child.parent_step_id
        if child.status == "completed":
            result = await self._fetch("get_execution_result", {"id": child.id}, conn=conn)
            outputs = as_json({"execution_id": str(child.id), "outputs": result}, "outputs")
            await self._complete_steps(None, [step_id], [1], [outputs], {parent.id: parent}, conn)
            return
        why = f": {child.error_message}" if child.error_message else ""
        error = f"child execution {child.id} {child.status}{why}"
        await self._fail_steps(None, [step_id], [1], [error], {parent.id: parent}, conn)

    async def _complete_steps(
        self,
        worker_id: str | None,
        ids: builtins.list[uuid.UUID],
        attempts: builtins.list[int],
        outputs: builtins.list[Jsonb],
        locks: Mapping[uuid.UUID, ExecutionLock],
        conn: AsyncConnection,
    ) -> builtins.list[CompletedStep]:
        """The engine's one completion path (single, batched, or a waiting step whose child
        completed, with worker_id None): complete the steps, promote their dependents, finish
        the executions left with nothing to run. The caller holds the executions' rows
        (`locks`); the steps completed, those missing lost their lease."""
        params = {
            "worker_id": worker_id,
            "ids": ids,
            "attempts": attempts,
            "outputs": outputs,
        }
        done: builtins.list[CompletedStep] = await self._fetch("complete_steps", params, conn=conn)
        running = {d.execution_id for d in done if locks[d.execution_id].status == "running"}
        if running:
            await self._finish_settled(sorted(running), conn)
        return done

    async def _fail_steps(
        self,
        worker_id: str | None,
        ids: builtins.list[uuid.UUID],
        attempts: builtins.list[int],
        errors: builtins.list[str],
        locks: Mapping[uuid.UUID, ExecutionLock],
        conn: AsyncConnection,
    ) -> builtins.list[Step]:
        """The engine's one failure path (single, batched, or a waiting step whose child
        failed, with worker_id None): record the failed attempts, then propagate the steps
        that failed for good. The caller holds the executions' rows (`locks`); the steps
        written, those missing lost their lease."""
        params = {"worker_id": worker_id, "ids": ids, "attempts": attempts, "errors": errors}
        steps: builtins.list[Step] = await self._fetch("fail_steps", params, conn=conn)
        final = [s for s in steps if s.status == "failed"]
        if final:
            await self._after_failures(final, locks, conn)
        return steps

    async def _get(self, execution_id: uuid.UUID, conn: AsyncConnection) -> Execution:
        found: Execution = await self._require(
            "get_execution_by_id",
            {"id": execution_id},
            _missing(execution_id),
            conn=conn,
        )
        return found

    async def _announce(self, execution: Execution, event_type: str, conn: AsyncConnection) -> None:
        event = NewEvent(
            aggregate_type="execution",
            aggregate_id=execution.id,
            event_type=event_type,
            payload=_payload(execution),
        )
        await self._repos.outbox.append(event=event, conn=conn)


def _request(
    workflow_id: uuid.UUID | str,
    parameters: dict[str, Any] | None,
    idempotency_key: str | None,
    triggered_by: uuid.UUID | str | None,
) -> dict[str, Any]:
    if idempotency_key is not None:
        as_name(idempotency_key, "idempotency_key")
    return {
        "workflow_id": as_uuid(workflow_id, "workflow id"),
        "parameters": as_json(
            parameters if parameters is not None else {}, "parameters", object_only=True
        ),
        "idempotency_key": idempotency_key,
        "triggered_by": as_optional_uuid(triggered_by, "triggered_by"),
    }


def _payload(execution: Execution) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "workflow_id": str(execution.workflow_id),
        "workflow_version": execution.workflow_version,
        "status": execution.status,
    }
    if execution.error_message is not None:
        payload["error"] = execution.error_message
    return payload


def _missing(execution_id: uuid.UUID) -> str:
    return f"execution {execution_id} not found"
