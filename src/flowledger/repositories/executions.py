"""Executions: start a run (version pinned, steps fanned out, event written) and steer it.

An execution is inserted directly as 'running' (started_at = now()): its steps are queued
in the same transaction, so there is no moment at which it exists without them.
"""

from __future__ import annotations

import builtins
import datetime
import uuid
from typing import Any

from psycopg.types.json import Jsonb

from flowledger.errors import InvalidInput, NotFound
from flowledger.records.events import NewEvent
from flowledger.records.runs import EXECUTION_STATUSES, Execution, ExecutionStatus
from flowledger.repositories.base import Connection, Repository, as_optional_uuid, as_uuid
from flowledger.repositories.outbox import OutboxRepository, check_batch, cutoff_of
from flowledger.repositories.pagination import DEFAULT_PAGE_SIZE, Page, check_limit, make_page

__all__ = ["ExecutionsRepository"]

_LIST_SCOPE = "executions.list:created_at:desc"
_CANCELLED = "execution cancelled"


class ExecutionsRepository(Repository):
    """Workflow executions: start, read, pause/resume/cancel/fail, prune."""

    def start(
        self,
        *,
        workflow_id: uuid.UUID | str,
        parameters: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        triggered_by: uuid.UUID | str | None = None,
        parent_execution_id: uuid.UUID | str | None = None,
    ) -> Execution:
        """The running execution of the workflow's current version, its steps queued and
        `execution.started` written, all in one transaction; with an idempotency key already
        used, the existing execution (nothing is created). Raises NotFound (workflow),
        InvalidInput (malformed ids, blank key, unknown parent or user)."""
        if idempotency_key is not None and not idempotency_key.strip():
            raise InvalidInput("idempotency_key must not be blank")
        params = {
            "workflow_id": as_uuid(workflow_id, "workflow id"),
            "parameters": Jsonb(parameters if parameters is not None else {}),
            "idempotency_key": idempotency_key,
            "triggered_by": as_optional_uuid(triggered_by, "triggered_by"),
            "parent_execution_id": as_optional_uuid(parent_execution_id, "parent execution id"),
        }
        with self._atomic(params) as conn:
            created = self._one("insert_execution", params, Execution, context=params, conn=conn)
            if created is None:
                return self._existing(params, conn)
            steps = {"execution_id": created.id, "workflow_id": created.workflow_id}
            self._execute("insert_execution_steps", steps, conn=conn)
            self._announce(created, "execution.started", conn)
            # A workflow without stages (or with only empty fan-outs) is done at once.
            return self.complete_if_done(id=created.id, conn=conn) or created

    def get(self, *, id: uuid.UUID | str) -> Execution:
        """The execution with this id; raises NotFound, InvalidInput on a malformed id."""
        execution_id = as_uuid(id, "execution id")
        return self._one_or_raise(
            "get_execution_by_id", {"id": execution_id}, Execution, _missing(execution_id)
        )

    def list(
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
        if status is not None and status not in EXECUTION_STATUSES:
            raise InvalidInput(f"unknown execution status {status!r}")
        after_created_at, after_id = self._after(cursor)
        params = {
            "workflow_id": as_optional_uuid(workflow_id, "workflow id"),
            "status": status,
            "parent_execution_id": as_optional_uuid(parent_execution_id, "parent execution id"),
            "created_from": created_from,
            "created_to": created_to,
            "after_created_at": after_created_at,
            "after_id": after_id,
            "limit": limit,
        }
        rows = self._many("list_executions", params, Execution)
        return make_page(
            rows,
            limit=limit,
            key=lambda e: (e.created_at, e.id),
            codec=self._codec,
            scope=_LIST_SCOPE,
        )

    def find_paused(
        self, *, paused_before: datetime.datetime | None = None, limit: int = 100
    ) -> builtins.list[Execution]:
        """Paused executions, longest paused first (optionally paused before a time);
        raises InvalidInput on a bad limit."""
        check_limit(limit)
        params = {"paused_before": paused_before, "limit": limit}
        return self._many("find_paused_executions", params, Execution)

    def pause(self, *, id: uuid.UUID | str, reason: str | None = None) -> Execution:
        """The paused execution (its queued steps are no longer claimed; running ones finish;
        already paused: returned as is); raises NotFound, InvalidInput when it is finished."""
        execution_id = as_uuid(id, "execution id")
        params = {"id": execution_id, "reason": reason}
        with self._atomic() as conn:
            paused = self._one("set_execution_paused", params, Execution, conn=conn)
            if paused is None:
                return self._get(execution_id, conn)
            self._announce(paused, "execution.paused", conn)
        return paused

    def resume(self, *, id: uuid.UUID | str) -> Execution:
        """The running execution again (completed at once when its steps all finished while
        paused; already running: returned as is); raises NotFound, InvalidInput when it is
        finished."""
        execution_id = as_uuid(id, "execution id")
        with self._atomic() as conn:
            resumed = self._one("set_execution_running", {"id": execution_id}, Execution, conn=conn)
            if resumed is None:
                return self._get(execution_id, conn)
            self._announce(resumed, "execution.resumed", conn)
            return self.complete_if_done(id=execution_id, conn=conn) or resumed

    def cancel(self, *, id: uuid.UUID | str) -> Execution:
        """The cancelled execution, all its unfinished steps cancelled in the same transaction
        (already cancelled: returned as is). Raises NotFound, InvalidInput when finished."""
        execution_id = as_uuid(id, "execution id")
        with self._atomic() as conn:
            # Steps before the execution row: the lock order of step completions.
            params = {"execution_id": execution_id, "reason": _CANCELLED}
            self._scalar("cancel_execution_steps", params, conn=conn)
            self._execute("close_cancelled_attempts", params, conn=conn)
            cancelled = self._one("cancel_execution", {"id": execution_id}, Execution, conn=conn)
            if cancelled is None:
                return self._get(execution_id, conn)
            self._announce(cancelled, "execution.cancelled", conn)
        return cancelled

    def fail(
        self, *, id: uuid.UUID | str, error: str, conn: Connection | None = None
    ) -> Execution | None:
        """The failed execution, its unclaimed leftover steps cancelled and
        `execution.failed` written; None when it already was finished. Raises InvalidInput."""
        execution_id = as_uuid(id, "execution id")
        with self._atomic(conn=conn) as c:
            params = {"id": execution_id, "error": error}
            failed = self._one("fail_execution", params, Execution, conn=c)
            if failed is None:
                return None
            leftovers = {"execution_id": execution_id, "reason": "execution failed"}
            self._scalar("cancel_leftover_steps", leftovers, conn=c)
            self._execute("close_cancelled_attempts", leftovers, conn=c)
            self._announce(failed, "execution.failed", c)
        return failed

    def complete_if_done(
        self, *, id: uuid.UUID | str, conn: Connection | None = None
    ) -> Execution | None:
        """The execution, completed (and `execution.completed` written) when it is running and
        every step is completed or skipped; None otherwise. Raises InvalidInput."""
        execution_id = as_uuid(id, "execution id")
        with self._atomic(conn=conn) as c:
            # The lock makes concurrent "last step done" checks run one after the other; each
            # statement after it sees the steps the others committed.
            self._scalar("lock_execution", {"id": execution_id}, conn=c)
            done = self._one("complete_execution_if_done", {"id": execution_id}, Execution, conn=c)
            if done is not None:
                self._announce(done, "execution.completed", c)
        return done

    def prune_finished(
        self, *, older_than: datetime.datetime | datetime.timedelta, batch: int = 500
    ) -> int:
        """Delete executions finished before `older_than` (a time, or an age) with their
        steps, attempts, logs and sub-executions, one bounded transaction per batch; the
        number of executions deleted. Raises InvalidInput."""
        check_batch(batch)
        params = {"cutoff": cutoff_of(older_than), "batch": batch}
        return self._delete_in_batches("prune_finished_executions", params)

    def _existing(self, params: dict[str, Any], conn: Connection) -> Execution:
        if params["idempotency_key"] is not None:
            found = self._one("get_execution_by_idempotency_key", params, Execution, conn=conn)
            if found is not None:
                return found
        raise NotFound(f"workflow {params['workflow_id']} not found")

    def _get(self, execution_id: uuid.UUID, conn: Connection) -> Execution:
        return self._one_or_raise(
            "get_execution_by_id",
            {"id": execution_id},
            Execution,
            _missing(execution_id),
            conn=conn,
        )

    def _announce(self, execution: Execution, event_type: str, conn: Connection) -> None:
        payload = {
            "workflow_id": str(execution.workflow_id),
            "workflow_version": execution.workflow_version,
            "status": execution.status,
        }
        if execution.error_message is not None:
            payload["error"] = execution.error_message
        event = NewEvent(
            aggregate_type="execution",
            aggregate_id=execution.id,
            event_type=event_type,
            payload=payload,
        )
        OutboxRepository(self._executor, self._codec).append(event=event, conn=conn)

    def _after(self, cursor: str | None) -> tuple[Any, Any]:
        if cursor is None:
            return None, None
        created_at, execution_id = self._codec.decode(cursor, _LIST_SCOPE, arity=2)
        if not isinstance(created_at, datetime.datetime) or not isinstance(execution_id, uuid.UUID):
            raise InvalidInput("cursor does not hold a (created_at, id) position")
        return created_at, execution_id


def _missing(execution_id: uuid.UUID) -> str:
    return f"execution {execution_id} not found"
