"""Tasks: planning and work items, and the ordered tasks attached to workflows.

A task is not run by the engine: stages are what executions run. A workflow's tasks are
its to-do list, kept in `sequence` order (unique per workflow; detaching leaves a gap,
`reorder` renumbers 0..n-1). Every change of a workflow's tasks locks the workflow's row
first, so attach, detach and reorder of one workflow run one after the other.
"""

from __future__ import annotations

import builtins
import datetime
import re
import uuid
from collections.abc import Sequence
from typing import Any, Final

from msgspec import UNSET, UnsetType
from psycopg.types.json import Jsonb

from flowledger.aio.repositories.base import AsyncConnection, AsyncRepository, as_uuid
from flowledger.errors import InvalidCursor, InvalidInput, NotFound
from flowledger.records.metrics import StatusCount
from flowledger.records.tasks import (
    TASK_STATUSES,
    NewTask,
    Task,
    TaskPatch,
    TaskStatus,
    WorkflowTask,
)
from flowledger.repositories._checks import (
    INT32_MAX,
    as_choice,
    as_cursor,
    as_int,
    as_json,
    as_optional_instant,
    as_struct,
    as_text,
    as_uuid_list,
    show,
)
from flowledger.repositories.pagination import (
    DEFAULT_PAGE_SIZE,
    Page,
    check_limit,
    listing_scope,
    make_page,
)

__all__ = [
    "MAX_TITLE_LENGTH",
    "MAX_WORKSPACE_PATH_LENGTH",
    "AsyncTasksReader",
    "AsyncTasksRepository",
]

# Mirror tasks_title_check, tasks_task_type_check and tasks_workspace_path_check.
MAX_TITLE_LENGTH: Final = 255
MAX_WORKSPACE_PATH_LENGTH: Final = 512
_TASK_TYPE: Final = re.compile(r"[a-z][a-z0-9_.-]{0,62}")
# The order count_by_status reports statuses in: the lifecycle's.
_STATUS_ORDER: Final = ("pending", "in_progress", "done", "cancelled")


class AsyncTasksReader(AsyncRepository):
    """Tasks: look up, keyset listings, counts by status, a workflow's tasks in order."""

    async def get(self, *, id: uuid.UUID | str) -> Task:
        """The task with this id; raises NotFound, InvalidInput on a malformed id."""
        task_id = as_uuid(id, "task id")
        found: Task = await self._require("get_task_by_id", {"id": task_id}, _missing(task_id))
        return found

    async def list(
        self,
        *,
        created_from: datetime.datetime | None = None,
        created_to: datetime.datetime | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Task]:
        """A page of the tasks created in [created_from, created_to) (either end optional),
        newest first; raises InvalidInput, InvalidCursor."""
        return await self._page(
            "list_tasks_by_created_at", {}, created_from, created_to, limit, cursor
        )

    async def list_by_status(
        self,
        *,
        status: TaskStatus,
        created_from: datetime.datetime | None = None,
        created_to: datetime.datetime | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Task]:
        """A page of the tasks of one status (optionally created in [created_from,
        created_to)), newest first; raises InvalidInput, InvalidCursor."""
        filters = {"status": _status(status)}
        return await self._page(
            "list_tasks_by_status", filters, created_from, created_to, limit, cursor
        )

    async def list_by_type(
        self,
        *,
        task_type: str,
        created_from: datetime.datetime | None = None,
        created_to: datetime.datetime | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Task]:
        """A page of the tasks of one type (optionally created in [created_from,
        created_to)), newest first; raises InvalidInput, InvalidCursor."""
        filters = {"task_type": _task_type(task_type)}
        return await self._page(
            "list_tasks_by_type", filters, created_from, created_to, limit, cursor
        )

    async def list_by_workspace(
        self,
        *,
        workspace_path: str,
        created_from: datetime.datetime | None = None,
        created_to: datetime.datetime | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Task]:
        """A page of the tasks of one workspace path (optionally created in [created_from,
        created_to)), newest first; raises InvalidInput, InvalidCursor."""
        filters = {"workspace_path": _workspace_path(workspace_path)}
        return await self._page(
            "list_tasks_by_workspace", filters, created_from, created_to, limit, cursor
        )

    async def count_by_status(self) -> dict[str, int]:
        """How many tasks have each status, every status listed (zero included)."""
        rows: builtins.list[StatusCount] = await self._fetch(
            "count_tasks_by_status", {"statuses": builtins.list(_STATUS_ORDER)}
        )
        return {row.status: row.count for row in rows}

    async def list_for_workflow(
        self, *, workflow_id: uuid.UUID | str
    ) -> builtins.list[WorkflowTask]:
        """The tasks attached to the workflow, in sequence order; raises NotFound (workflow),
        InvalidInput on a malformed id."""
        wid = as_uuid(workflow_id, "workflow id")
        found: builtins.list[WorkflowTask] = await self._fetch(
            "list_workflow_tasks", {"workflow_id": wid}
        )
        if not found:
            await self._repos.workflows.get(id=wid)  # NotFound for an unknown workflow
        return found

    async def _page(
        self,
        query: str,
        filters: dict[str, Any],
        created_from: datetime.datetime | None,
        created_to: datetime.datetime | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Task]:
        check_limit(limit)
        start = as_optional_instant(created_from, "created_from")
        end = as_optional_instant(created_to, "created_to")
        if start is not None and end is not None and start > end:
            raise InvalidInput(f"created_from ({start}) is after created_to ({end})")
        filters = {**filters, "created_from": start, "created_to": end}
        # The query's name is the listing: a cursor fits only the listing and filters
        # that issued it.
        scope = listing_scope(f"tasks.{query}:created_at,id:desc", filters)
        params = {**filters, **self._after(cursor, scope), "limit": limit}
        rows: builtins.list[Task] = await self._fetch(query, params)
        return make_page(
            rows, limit=limit, key=lambda t: (t.created_at, t.id), codec=self._codec, scope=scope
        )

    def _after(self, cursor: str | None, scope: str) -> dict[str, Any]:
        if cursor is None:
            return {"after_created_at": None, "after_id": None}
        created_at, task_id = self._codec.decode(as_cursor(cursor), scope, arity=2)
        if not isinstance(created_at, datetime.datetime) or not isinstance(task_id, uuid.UUID):
            # Signed by us, so a bug rather than tampering; still refuse it.
            raise InvalidCursor("cursor does not hold a (created_at, id) position")
        return {"after_created_at": created_at, "after_id": task_id}


class AsyncTasksRepository(AsyncTasksReader):
    """Tasks, and the tasks attached to workflows in sequence order."""

    async def create(self, *, task: NewTask) -> Task:
        """The new task; raises InvalidInput (bad fields)."""
        task = as_struct(task, NewTask, "task")
        params = {
            "title": _title(task.title),
            "description": as_text(task.description, "description"),
            "task_type": _task_type(task.task_type),
            "status": _status(task.status),
            "config": as_json(task.config, "config", object_only=True),
            "metadata": as_json(task.metadata, "metadata", object_only=True),
            "workspace_path": None
            if task.workspace_path is None
            else _workspace_path(task.workspace_path),
        }
        created: Task | None = await self._fetch("insert_task", params, context=params)
        assert created is not None  # INSERT ... RETURNING yields its row
        return created

    async def update(self, *, id: uuid.UUID | str, patch: TaskPatch) -> Task:
        """The task after applying the patch's set fields (a workspace_path of None clears
        it); raises NotFound, InvalidInput."""
        task_id = as_uuid(id, "task id")
        params = {"id": task_id, **_patch_params(as_struct(patch, TaskPatch, "patch"))}
        found: Task = await self._require("update_task", params, _missing(task_id), context=params)
        return found

    async def delete(self, *, id: uuid.UUID | str) -> None:
        """Delete the task, detaching it from every workflow; raises NotFound, InvalidInput."""
        task_id = as_uuid(id, "task id")
        if await self._fetch("delete_task", {"id": task_id}) == 0:
            raise NotFound(_missing(task_id))

    async def attach(
        self,
        *,
        workflow_id: uuid.UUID | str,
        task_id: uuid.UUID | str,
        sequence: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> WorkflowTask:
        """The task as attached to the workflow, at `sequence` or (None) after its last task;
        raises NotFound (workflow, task), Conflict (already attached, sequence taken),
        InvalidInput."""
        wid, tid = as_uuid(workflow_id, "workflow id"), as_uuid(task_id, "task id")
        params = {
            "workflow_id": wid,
            "task_id": tid,
            "sequence": None if sequence is None else as_int(sequence, "sequence", 0, INT32_MAX),
            "config": as_json({} if config is None else config, "config", object_only=True),
        }
        async with self._atomic(params) as conn:
            await self._lock_workflow(wid, conn)
            if await self._fetch("lock_task_key", {"id": tid}, conn=conn) is None:
                raise NotFound(_missing(tid))
            attached: WorkflowTask = await self._fetch(
                "insert_workflow_task", params, context=params, conn=conn
            )
        return attached

    async def detach(self, *, workflow_id: uuid.UUID | str, task_id: uuid.UUID | str) -> None:
        """Detach the task from the workflow (the task itself stays); raises NotFound
        (workflow, or the task is not attached to it), InvalidInput."""
        params = {
            "workflow_id": as_uuid(workflow_id, "workflow id"),
            "task_id": as_uuid(task_id, "task id"),
        }
        async with self._atomic() as conn:
            await self._lock_workflow(params["workflow_id"], conn)
            if await self._fetch("delete_workflow_task", params, conn=conn) == 0:
                raise NotFound(
                    f"task {params['task_id']} is not attached to workflow {params['workflow_id']}"
                )

    async def reorder(
        self, *, workflow_id: uuid.UUID | str, task_ids: Sequence[uuid.UUID | str]
    ) -> builtins.list[WorkflowTask]:
        """The workflow's tasks in the new order, task_ids[i] now at sequence i (one
        statement); raises NotFound (workflow), InvalidInput unless task_ids are exactly
        the attached tasks, each once."""
        wid = as_uuid(workflow_id, "workflow id")
        ids = as_uuid_list(task_ids, "task id")
        if len(set(ids)) != len(ids):
            raise InvalidInput("task_ids must not repeat a task")
        mismatch = f"task_ids must be exactly the {{}} tasks attached to workflow {wid}"
        async with self._atomic() as conn:
            await self._lock_workflow(wid, conn)
            # Statements after the lock see every attach committed before it was granted.
            # The renumbering changes nothing unless no other task is attached, so with
            # distinct ids all of them renumbered means exactly the attached tasks.
            params = {"workflow_id": wid, "task_ids": ids}
            where = {"workflow_id": wid}
            exact = (
                await self._fetch("reorder_workflow_tasks", params, conn=conn) == len(ids)
                if ids
                else await self._fetch("count_workflow_tasks", where, conn=conn) == 0
            )
            if not exact:
                count = await self._fetch("count_workflow_tasks", where, conn=conn)
                raise InvalidInput(mismatch.format(count))
            ordered: builtins.list[WorkflowTask] = await self._fetch(
                "list_workflow_tasks", {"workflow_id": wid}, conn=conn
            )
        return ordered

    async def _lock_workflow(self, workflow_id: uuid.UUID, conn: AsyncConnection) -> None:
        if (
            await self._fetch("lock_workflow_tasks", {"workflow_id": workflow_id}, conn=conn)
            is None
        ):
            raise NotFound(f"workflow {workflow_id} not found")


def _patch_params(patch: TaskPatch) -> dict[str, Any]:
    path = patch.workspace_path
    return {
        "title": None if isinstance(patch.title, UnsetType) else _title(patch.title),
        "description": None
        if isinstance(patch.description, UnsetType)
        else as_text(patch.description, "description"),
        "task_type": None
        if isinstance(patch.task_type, UnsetType)
        else _task_type(patch.task_type),
        "status": None if isinstance(patch.status, UnsetType) else _status(patch.status),
        "config": _object("config", patch.config),
        "metadata": _object("metadata", patch.metadata),
        "set_workspace_path": path is not UNSET,
        "workspace_path": None if path is None or path is UNSET else _workspace_path(path),
    }


def _object(field: str, value: object) -> Jsonb | None:
    return None if value is UNSET else as_json(value, field, object_only=True)


def _title(value: object) -> str:
    return as_text(value, "title", max_length=MAX_TITLE_LENGTH, blank=False)


def _status(value: object) -> str:
    return as_choice(value, "status", TASK_STATUSES)


def _task_type(value: object) -> str:
    if not isinstance(value, str) or not _TASK_TYPE.fullmatch(value):
        raise InvalidInput(
            f"task_type must be lowercase letters, digits, '_', '.' or '-', starting with a "
            f"letter, at most 63 characters; got {show(value)}"
        )
    return value


def _workspace_path(value: object) -> str:
    return as_text(value, "workspace_path", max_length=MAX_WORKSPACE_PATH_LENGTH, blank=False)


def _missing(task_id: uuid.UUID) -> str:
    return f"task {task_id} not found"
