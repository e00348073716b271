"""Records of the tasks aggregate: planning and work items, and their place in workflows."""

from __future__ import annotations

import datetime
import uuid
from typing import Any, Final, Literal, get_args

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "TASK_STATUSES",
    "NewTask",
    "Task",
    "TaskPatch",
    "TaskStatus",
    "WorkflowTask",
]

# pending: not started; in_progress: being worked on; done and cancelled: finished.
TaskStatus = Literal["pending", "in_progress", "done", "cancelled"]
TASK_STATUSES: Final[frozenset[str]] = frozenset(get_args(TaskStatus))


class Task(msgspec.Struct, frozen=True, gc=False):
    """A task row."""

    id: uuid.UUID
    title: str
    description: str
    task_type: str
    status: TaskStatus
    config: dict[str, Any]
    metadata: dict[str, Any]
    workspace_path: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


class NewTask(msgspec.Struct, frozen=True, kw_only=True):
    """What `tasks.create` needs; everything but title and task_type has a default."""

    title: str
    # A lowercase identifier: letters, digits, '_', '.', '-', starting with a letter.
    task_type: str
    description: str = ""
    status: TaskStatus = "pending"
    config: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    workspace_path: str | None = None


class TaskPatch(msgspec.Struct, frozen=True, kw_only=True):
    """The fields `tasks.update` changes; UNSET leaves a field as it is."""

    title: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    task_type: str | UnsetType = UNSET
    status: TaskStatus | UnsetType = UNSET
    config: dict[str, Any] | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET
    # None clears the workspace.
    workspace_path: str | UnsetType | None = UNSET


class WorkflowTask(msgspec.Struct, frozen=True, gc=False):
    """A task as attached to a workflow: its place (sequence), the attachment's own
    config, when it was attached, and the task itself."""

    workflow_id: uuid.UUID
    sequence: int
    config: dict[str, Any]
    attached_at: datetime.datetime
    task: Task

    @staticmethod
    def from_row(*values: Any) -> WorkflowTask:
        """From its row (the query layer decodes with this): the task comes as the jsonb
        of its row, converted here."""
        workflow_id, sequence, config, attached_at, task = values
        # Not strict: in JSON the task's id and timestamps are strings.
        row = msgspec.convert(task, Task, strict=False)
        return WorkflowTask(workflow_id, sequence, config, attached_at, row)
