"""Records of the workflows aggregate: workflows, their definition versions and stages."""

from __future__ import annotations

import datetime
import uuid
from typing import Any, Final, Literal, get_args

import msgspec
from msgspec import UNSET, UnsetType

from flowledger.errors import FlowledgerError

__all__ = [
    "FAILURE_MODES",
    "STATUSES",
    "TRIGGER_TYPES",
    "Concurrency",
    "FailureMode",
    "NewStage",
    "NewWorkflow",
    "RateLimit",
    "RetryPolicy",
    "Stage",
    "StagePatch",
    "TriggerType",
    "Workflow",
    "WorkflowPatch",
    "WorkflowSort",
    "WorkflowStatus",
    "WorkflowVersion",
]

WorkflowStatus = Literal["draft", "active", "archived"]
TriggerType = Literal["manual", "schedule", "event", "webhook"]
WorkflowSort = Literal["updated_at", "created_at", "name"]
# What a step failed for good does to its execution (see README, "Failure modes").
FailureMode = Literal["fail_fast", "continue"]
FAILURE_MODES: Final[frozenset[str]] = frozenset(get_args(FailureMode))
STATUSES: Final[frozenset[str]] = frozenset(get_args(WorkflowStatus))
TRIGGER_TYPES: Final[frozenset[str]] = frozenset(get_args(TriggerType))


class Workflow(msgspec.Struct, frozen=True, gc=False):
    """A workflow row (every column but the generated search vector)."""

    id: uuid.UUID
    owner_id: uuid.UUID
    pack_id: uuid.UUID | None
    name: str
    description: str
    status: WorkflowStatus
    enabled: bool
    trigger_type: TriggerType
    schedule: str | None
    definition_yaml: str
    definition: dict[str, Any]
    param_schema: dict[str, Any]
    out_schema: dict[str, Any]
    tags: list[str]
    failure_mode: FailureMode
    # At most this many executions hold a slot (running or paused) at once; None: no cap.
    max_running_executions: int | None
    # The definition version; the database bumps it when the definition or a stage changes.
    version: int
    # The optimistic-locking counter: pass it back as `expected_version`.
    row_version: int
    created_at: datetime.datetime
    updated_at: datetime.datetime


class WorkflowVersion(msgspec.Struct, frozen=True, gc=False):
    """An immutable snapshot of a workflow's definition, as executions pin it."""

    id: uuid.UUID
    workflow_id: uuid.UUID
    version: int
    definition_yaml: str
    definition: dict[str, Any]
    created_at: datetime.datetime


class NewWorkflow(msgspec.Struct, frozen=True, kw_only=True):
    """What `workflows.create` needs; everything but owner and name has a default."""

    owner_id: uuid.UUID | str
    name: str
    pack_id: uuid.UUID | str | None = None
    description: str = ""
    status: WorkflowStatus = "draft"
    enabled: bool = True
    trigger_type: TriggerType = "manual"
    # A cron expression (5 or 6 fields, or @hourly, @daily...); required iff trigger_type
    # is "schedule".
    schedule: str | None = None
    definition_yaml: str = ""
    definition: dict[str, Any] = {}
    param_schema: dict[str, Any] = {}
    out_schema: dict[str, Any] = {}
    tags: list[str] = []
    failure_mode: FailureMode = "fail_fast"
    # At most this many executions running (or paused) at once, 1..2**31-1; the others wait
    # as pending and start oldest first. None: no cap.
    max_running_executions: int | None = None


class WorkflowPatch(msgspec.Struct, frozen=True, kw_only=True):
    """The fields `workflows.update` changes; UNSET leaves a field as it is.

    The definition is not here: `workflows.update_definition` changes it (and its version).
    """

    name: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    status: WorkflowStatus | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    trigger_type: TriggerType | UnsetType = UNSET
    # None clears the schedule (with a trigger_type other than "schedule").
    schedule: str | UnsetType | None = UNSET
    # None detaches the workflow from its pack.
    pack_id: uuid.UUID | str | UnsetType | None = UNSET
    param_schema: dict[str, Any] | UnsetType = UNSET
    out_schema: dict[str, Any] | UnsetType = UNSET
    tags: list[str] | UnsetType = UNSET
    failure_mode: FailureMode | UnsetType = UNSET
    # None lifts the cap (every pending execution starts); a higher cap starts pending
    # executions up to it; a lower one stops nothing that runs.
    max_running_executions: int | UnsetType | None = UNSET


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How often a stage's step is retried and how long to wait in between.

    The wait before attempt n+1 is min(backoff_base_seconds * 2**(n-1), backoff_max_seconds),
    plus jitter. The defaults are the column default of workflow_stages.retry_policy.
    """

    max_attempts: int = 3
    backoff_base_seconds: float = 1
    backoff_max_seconds: float = 300


class Concurrency(msgspec.Struct, frozen=True, kw_only=True):
    """At most `limit` steps of one key run at once, across every worker.

    `key` is a template over the execution's parameters: each `{name}` is replaced by the
    parameter's text (empty when the execution has no such parameter), once, when the
    execution starts; "tenant:{tenant}" caps each tenant on its own, a key with no
    placeholder caps every execution together. Stages naming the same key share its limit.
    """

    key: str
    limit: int


class RateLimit(msgspec.Struct, frozen=True, kw_only=True):
    """At most `limit` steps of one key start in any `per_seconds` (a sliding window).

    `key` is a template as in `Concurrency`. A start is a claim: every attempt counts.
    """

    key: str
    limit: int
    per_seconds: float


class Stage(msgspec.Struct, frozen=True, gc=False):
    """A stage row: one ordered step of a workflow."""

    id: uuid.UUID
    workflow_id: uuid.UUID
    # 0..n-1 within the workflow, contiguous.
    position: int
    name: str
    action_ref: str
    # None: after the stage before it by position; []: a root; names: a DAG.
    depends_on: list[str] | None
    config: dict[str, Any]
    # Fan-out items: one execution step per element; None for a single step.
    with_items: list[Any] | None
    retry_policy: RetryPolicy
    timeout_seconds: int
    # The queue its steps run in.
    queue: str
    # How many of its steps (with those of other stages of the same key) run at once.
    concurrency: Concurrency | None
    # How many of its steps (with those of other stages of the same key) start per window.
    rate_limit: RateLimit | None
    created_at: datetime.datetime
    updated_at: datetime.datetime

    @staticmethod
    def from_row(*values: Any) -> Stage:
        """A stage from its row (the query layer decodes with this): retry_policy,
        concurrency and rate_limit need decoding, from their jsonb dicts; raises
        FlowledgerError on a malformed one."""
        # Lax: the CHECKs accept integral numbers written as 3.0.
        row = list(values)
        for index, kind in _DECODED:
            if row[index] is None:
                continue
            try:
                row[index] = msgspec.convert(row[index], kind, strict=False)
            except msgspec.ValidationError as exc:
                name = Stage.__struct_fields__[index]
                raise FlowledgerError(f"stage {row[0]} has a malformed {name}: {exc}") from exc
        return Stage(*row)


_DECODED: Final[tuple[tuple[int, type[msgspec.Struct]], ...]] = tuple(
    (Stage.__struct_fields__.index(name), kind)
    for name, kind in (
        ("retry_policy", RetryPolicy),
        ("concurrency", Concurrency),
        ("rate_limit", RateLimit),
    )
)


class NewStage(msgspec.Struct, frozen=True, kw_only=True):
    """What `stages.add` needs: a name unique in the workflow and the action it runs."""

    name: str
    action_ref: str
    # None (the default): runs after the stage before it by position (the first stage is a
    # root); []: a root that starts at once; a list of stage names: runs when all completed.
    depends_on: list[str] | None = None
    config: dict[str, Any] = {}
    with_items: list[Any] | None = None
    retry_policy: RetryPolicy = RetryPolicy()
    timeout_seconds: int = 3600
    # The queue its steps run in: workers can claim from some queues only.
    queue: str = "default"
    # None: no cap on how many of its steps run at once.
    concurrency: Concurrency | None = None
    # None: no cap on how fast its steps start.
    rate_limit: RateLimit | None = None


class StagePatch(msgspec.Struct, frozen=True, kw_only=True):
    """The fields `stages.update` changes; UNSET leaves a field as it is.

    Name and position are not here: a rename would break other stages' depends_on, and
    positions change through `stages.reorder`.
    """

    action_ref: str | UnsetType = UNSET
    # None: back to "after the stage before it by position".
    depends_on: list[str] | UnsetType | None = UNSET
    config: dict[str, Any] | UnsetType = UNSET
    # None turns a fan-out stage back into a single step.
    with_items: list[Any] | UnsetType | None = UNSET
    retry_policy: RetryPolicy | UnsetType = UNSET
    timeout_seconds: int | UnsetType = UNSET
    queue: str | UnsetType = UNSET
    # None removes the limit.
    concurrency: Concurrency | UnsetType | None = UNSET
    rate_limit: RateLimit | UnsetType | None = UNSET
