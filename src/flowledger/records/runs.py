"""Records of the runs aggregate: executions, their steps and attempts, logs and tool calls."""

from __future__ import annotations

import datetime
import uuid
from typing import Any, Literal

import msgspec

__all__ = [
    "EXECUTION_STATUSES",
    "LOG_LEVELS",
    "STEP_STATUSES",
    "ClaimedStep",
    "CompleteResult",
    "CompletedStep",
    "Execution",
    "ExecutionLock",
    "ExecutionProgress",
    "ExecutionStatus",
    "FailResult",
    "FailureMode",
    "HeartbeatResult",
    "LeaseExpiry",
    "LogLevel",
    "LogLine",
    "LogPartition",
    "NewLogLine",
    "QueueMark",
    "QueueState",
    "ReapResult",
    "ReleasedStep",
    "Signal",
    "StartRequest",
    "Step",
    "StepAttempt",
    "StepCompletion",
    "StepFailure",
    "StepLease",
    "StepStatus",
    "ToolExecution",
    "ToolStats",
    "WorkflowState",
]

ExecutionStatus = Literal["pending", "running", "paused", "completed", "failed", "cancelled"]
EXECUTION_STATUSES: frozenset[str] = frozenset(
    {"pending", "running", "paused", "completed", "failed", "cancelled"}
)
StepStatus = Literal[
    "pending",
    "queued",
    "running",
    "waiting",
    "completed",
    "failed",
    "skipped",
    "cancelled",
    "timed_out",
]
STEP_STATUSES: frozenset[str] = frozenset(
    {
        "pending",
        "queued",
        "running",
        "waiting",
        "completed",
        "failed",
        "skipped",
        "cancelled",
        "timed_out",
    }
)
FailureMode = Literal["fail_fast", "continue"]
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: frozenset[str] = frozenset({"debug", "info", "warning", "error"})


class Execution(msgspec.Struct, frozen=True, gc=False):
    """One run of a workflow, pinned to the workflow version it runs."""

    id: uuid.UUID
    workflow_id: uuid.UUID
    workflow_version: int
    parent_execution_id: uuid.UUID | None
    triggered_by: uuid.UUID | None
    status: ExecutionStatus
    attempt: int
    idempotency_key: str | None
    parameters: dict[str, Any]
    variables: dict[str, Any]
    task_graph: dict[str, Any]
    error_message: str | None
    pause_reason: str | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    row_version: int
    created_at: datetime.datetime
    updated_at: datetime.datetime
    # Pinned from the workflow at start.
    failure_mode: FailureMode
    # The step of the parent execution that started this one and waits for it.
    parent_step_id: uuid.UUID | None


class ExecutionLock(msgspec.Struct, frozen=True, gc=False):
    """What the engine reads of an execution while it holds the execution's row lock."""

    id: uuid.UUID
    status: ExecutionStatus
    failure_mode: FailureMode
    parent_step_id: uuid.UUID | None


class WorkflowState(msgspec.Struct, frozen=True, gc=False):
    """Whether a workflow can be started: its status and enabled flag."""

    status: str
    enabled: bool


class ExecutionProgress(msgspec.Struct, frozen=True, gc=False):
    """Where an execution stands, derived from its steps.

    `counts` is the number of steps per status; each task name appears in exactly one of
    the lists (a with_items task by the state of its items: any failed, else any queued,
    running or waiting (current), else any pending, else any cancelled, else any skipped,
    else completed).
    """

    execution_id: uuid.UUID
    status: ExecutionStatus
    attempt: int
    counts: dict[str, int]
    current: list[str]
    pending: list[str]
    completed: list[str]
    failed: list[str]
    skipped: list[str]
    cancelled: list[str]


class Step(msgspec.Struct, frozen=True, gc=False):
    """One task (or one with_items element of it) of one execution."""

    id: uuid.UUID
    execution_id: uuid.UUID
    stage_id: uuid.UUID | None
    task_name: str
    task_index: int
    status: StepStatus
    priority: int
    attempt: int
    max_attempts: int
    available_at: datetime.datetime
    timeout_seconds: int
    lease_owner: str | None
    lease_expires_at: datetime.datetime | None
    heartbeat_at: datetime.datetime | None
    started_at: datetime.datetime | None
    completed_at: datetime.datetime | None
    duration_ms: int | None
    outputs: Any
    error: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    queue: str
    # Its concurrency and rate-limit keys as rendered at start (None: its stage has none).
    concurrency_key: str | None
    rate_key: str | None


class ClaimedStep(msgspec.Struct, frozen=True, gc=False):
    """A step a worker now holds the lease of, with what it needs to run it.

    `attempt` and `lease_owner` are the compare-and-set key of every later write;
    `action_ref`, `config`, `item` (the with_items element of this task_index, None without
    fan-out) and `depends_on` come from the stage snapshot the execution pinned at start;
    `inputs` holds the outputs of the steps it depends on, by task name (a with_items task's
    as a list in item order); `queue` is the queue it was claimed from.
    """

    id: uuid.UUID
    execution_id: uuid.UUID
    stage_id: uuid.UUID | None
    task_name: str
    task_index: int
    attempt: int
    max_attempts: int
    timeout_seconds: int
    lease_owner: str
    lease_expires_at: datetime.datetime
    action_ref: str | None
    config: dict[str, Any] | None
    item: Any
    depends_on: list[str]
    inputs: dict[str, Any]
    queue: str


class QueueMark(msgspec.Struct, frozen=True, gc=False):
    """A queue as pause or resume left it."""

    name: str
    paused: bool
    updated_at: datetime.datetime


class QueueState(msgspec.Struct, frozen=True, gc=False):
    """A queue: whether it is paused (since `updated_at`; None when it never was paused or
    resumed) and how many of its steps are queued and running."""

    name: str
    paused: bool
    queued: int
    running: int
    updated_at: datetime.datetime | None


class Signal(msgspec.Struct, frozen=True, gc=False):
    """A signal sent to an execution: consumed by the step `consumed_by` (at
    `consumed_at`), or both None while it waits for a step to wait for its name."""

    id: uuid.UUID
    execution_id: uuid.UUID
    name: str
    payload: Any
    created_at: datetime.datetime
    consumed_by: uuid.UUID | None
    consumed_at: datetime.datetime | None


class StepAttempt(msgspec.Struct, frozen=True, gc=False):
    """The write-once history row of one attempt of a step."""

    id: uuid.UUID
    step_id: uuid.UUID
    execution_id: uuid.UUID
    attempt: int
    worker_id: str
    started_at: datetime.datetime
    finished_at: datetime.datetime | None
    outcome: str | None
    error: str | None


class ReapResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one `steps.reap` call did: step ids per outcome."""

    requeued: list[uuid.UUID]
    failed: list[uuid.UUID]
    timed_out: list[uuid.UUID]
    # Steps whose wait for a signal passed its deadline, queued without one.
    woken: list[uuid.UUID] = msgspec.field(default_factory=list)


class StartRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One execution to start with `executions.start_many`."""

    workflow_id: uuid.UUID | str
    parameters: dict[str, Any] | None = None
    idempotency_key: str | None = None
    triggered_by: uuid.UUID | str | None = None


class StepCompletion(msgspec.Struct, frozen=True, kw_only=True):
    """One completion for `steps.complete_many`: the step, the attempt the worker holds, its
    outputs."""

    step_id: uuid.UUID | str
    attempt: int
    outputs: Any = None


class StepFailure(msgspec.Struct, frozen=True, kw_only=True):
    """One failed attempt for `steps.fail_many`."""

    step_id: uuid.UUID | str
    attempt: int
    error: str


class StepLease(msgspec.Struct, frozen=True, kw_only=True):
    """A step a worker holds, for `steps.heartbeat_many`."""

    step_id: uuid.UUID | str
    attempt: int


class CompletedStep(msgspec.Struct, frozen=True, gc=False):
    """A step a batched completion completed, and its execution."""

    id: uuid.UUID
    execution_id: uuid.UUID


class CompleteResult(msgspec.Struct, frozen=True, kw_only=True):
    """What `steps.complete_many` did: the steps completed, and those whose lease was lost
    (nothing was written for them)."""

    completed: list[uuid.UUID]
    lost: list[uuid.UUID]


class FailResult(msgspec.Struct, frozen=True, kw_only=True):
    """What `steps.fail_many` did: each step after its failed attempt (queued again or
    failed for good), and those whose lease was lost (nothing was written for them)."""

    steps: list[Step]
    lost: list[uuid.UUID]


class ReleasedStep(msgspec.Struct, frozen=True, gc=False):
    """A claimed step given back unstarted."""

    id: uuid.UUID


class LeaseExpiry(msgspec.Struct, frozen=True, gc=False):
    """A step whose lease a heartbeat extended, and the new expiry."""

    id: uuid.UUID
    lease_expires_at: datetime.datetime


class HeartbeatResult(msgspec.Struct, frozen=True, kw_only=True):
    """What `steps.heartbeat_many` did: the new lease expiry per step still held, and the
    steps whose lease was lost."""

    leases: dict[uuid.UUID, datetime.datetime]
    lost: list[uuid.UUID]


class NewLogLine(msgspec.Struct, frozen=True, kw_only=True):
    """One log line to append; `logged_at` defaults to the server's now()."""

    step_id: uuid.UUID | str
    execution_id: uuid.UUID | str
    message: str
    level: LogLevel = "info"
    fields: dict[str, Any] = msgspec.field(default_factory=dict)
    logged_at: datetime.datetime | None = None


class LogLine(msgspec.Struct, frozen=True, gc=False):
    """A stored log line."""

    id: int
    step_id: uuid.UUID
    execution_id: uuid.UUID
    level: LogLevel
    message: str
    fields: dict[str, Any]
    logged_at: datetime.datetime


class LogPartition(msgspec.Struct, frozen=True, gc=False):
    """One partition of step_logs: the lines logged in [starts_at, ends_at), one UTC month
    for those flowledger makes; the default partition (`is_default`, no bounds) holds the
    lines of months that have none. `total_bytes` is its size on disk, indexes included."""

    name: str
    starts_at: datetime.datetime | None
    ends_at: datetime.datetime | None
    is_default: bool
    total_bytes: int


class ToolExecution(msgspec.Struct, frozen=True, gc=False):
    """One tool call made by a step or an agent session."""

    id: uuid.UUID
    step_id: uuid.UUID | None
    session_id: uuid.UUID | None
    tool_name: str
    input: dict[str, Any]
    output: Any
    status: Literal["running", "succeeded", "failed"]
    error: str | None
    started_at: datetime.datetime
    finished_at: datetime.datetime | None
    duration_ms: int | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


class ToolStats(msgspec.Struct, frozen=True, gc=False):
    """Per-tool statistics over finished calls of a time window (latencies in ms)."""

    tool_name: str
    count: int
    failures: int
    failure_rate: float
    p50_ms: float | None
    p95_ms: float | None
