"""Sample data: three users, the `core` pack and its actions, six workflows with stages,
and ten executions of them in mixed states (with their steps, attempts, log lines and
outbox events).

`seed(db)` writes everything through the repositories and is idempotent: each row is
looked up by its natural key (user email, pack ref, action ref, owner + workflow name,
workflow + stage name, workflow + execution idempotency key "seed-<n>") and created only
when missing, so a second run creates nothing and leaves every row (and id) as it was.

Executions are driven to their sample state the way workers would: by claiming their
steps. A claim takes the oldest due step of the whole database, so seeding refuses
(Conflict, nothing written for that execution) when steps of other executions are due.
The sample leaves no step due: its unfinished executions are paused, or hold their
remaining steps under a lease as long as the step timeout.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any, Final, Literal, TypeVar

import msgspec

from flowledger.database import Database, Transaction
from flowledger.errors import Conflict, NotFound
from flowledger.records.catalog import NewAction, NewPack, Pack
from flowledger.records.identity import NewUser, Role, User
from flowledger.records.runs import ClaimedStep, Execution, LogLevel, NewLogLine, Step
from flowledger.records.workflows import (
    NewStage,
    NewWorkflow,
    RetryPolicy,
    TriggerType,
    Workflow,
    WorkflowStatus,
)

__all__ = ["DEMO_WORKFLOW", "SAMPLE_OWNER", "SAMPLE_WORKFLOWS", "SeedReport", "seed"]

T = TypeVar("T")


class SeedReport(msgspec.Struct, frozen=True, kw_only=True):
    """How many rows one `seed` run created; all zero when the data was already there."""

    users: int = 0
    packs: int = 0
    actions: int = 0
    workflows: int = 0
    stages: int = 0
    # Definition changes applied, each of which wrote a workflow_versions row.
    definition_changes: int = 0
    executions: int = 0
    steps: int = 0
    log_lines: int = 0

    @property
    def total(self) -> int:
        """Every row created, all kinds together."""
        return sum(msgspec.structs.astuple(self))

    def as_json(self) -> dict[str, int]:
        """The counts by kind, then "total": what `flowledger seed` prints."""
        return {**msgspec.structs.asdict(self), "total": self.total}


_USERS: Final[tuple[tuple[str, str, Role], ...]] = (
    ("admin@example.com", "Ada Admin", "admin"),
    ("dev@example.com", "Dev Eloper", "developer"),
    ("viewer@example.com", "Vic Viewer", "viewer"),
)
SAMPLE_OWNER: Final = "dev@example.com"
"""Email of the user owning every sample workflow."""
DEMO_WORKFLOW: Final = "demo-pipeline"
"""The sample workflow `flowledger demo` runs: a fan-out, a fan-in and a parallel branch;
retries after ~0.2 s."""

_PACK: Final = NewPack(ref="core", label="Core", description="Built-in actions.", version="1.0.0")
_ACTIONS: Final[tuple[tuple[str, str, str], ...]] = (
    ("core.http", "flowledger_actions.http:request", "Send an HTTP request."),
    ("core.shell", "flowledger_actions.shell:run", "Run a shell command."),
    ("core.python", "flowledger_actions.python:call", "Call a Python function."),
    ("core.email", "flowledger_actions.email:send", "Send an email."),
    ("core.noop", "flowledger_actions.noop:pass_", "Do nothing (a placeholder)."),
)


class _Sample(msgspec.Struct, frozen=True, kw_only=True):
    """One sample workflow: its fields, its stages (name, action) and its tags.

    Stages run in order unless `graph` names a stage's dependencies (a list, [] for a root)
    or `items` gives it with_items elements (a fan-out).
    """

    name: str
    description: str
    status: WorkflowStatus
    trigger_type: TriggerType
    schedule: str | None
    tags: list[str]
    stages: list[tuple[str, str]]
    graph: dict[str, list[str]] = {}
    items: dict[str, list[Any]] = {}
    in_pack: bool = False
    enabled: bool = True
    retry_policy: RetryPolicy = RetryPolicy(
        max_attempts=3, backoff_base_seconds=2, backoff_max_seconds=60
    )


_WORKFLOWS: Final[tuple[_Sample, ...]] = (
    _Sample(
        name="nightly-etl",
        description="Extract the day's orders, transform them and load them into the warehouse.",
        status="active",
        trigger_type="schedule",
        schedule="0 2 * * *",
        tags=["etl", "nightly", "warehouse"],
        stages=[
            ("extract", "core.shell"),
            ("transform", "core.python"),
            ("load", "core.shell"),
            ("notify", "core.email"),
        ],
        in_pack=True,
    ),
    _Sample(
        name="invoice-sync",
        description="Synchronise paid invoices from the billing provider.",
        status="active",
        trigger_type="webhook",
        schedule=None,
        tags=["billing", "sync"],
        stages=[("fetch", "core.http"), ("reconcile", "core.python"), ("store", "core.shell")],
    ),
    _Sample(
        name="deploy-service",
        description="Build, test and roll out a service release.",
        status="active",
        trigger_type="manual",
        schedule=None,
        tags=["ops", "deploy"],
        stages=[("build", "core.shell"), ("test", "core.shell"), ("rollout", "core.http")],
    ),
    _Sample(
        name="weekly-report",
        description="Email the weekly usage report to the team.",
        status="active",
        trigger_type="schedule",
        schedule="0 8 * * 1",
        tags=["reporting"],
        stages=[("render", "core.python"), ("send", "core.email")],
        in_pack=True,
    ),
    _Sample(
        name="cleanup-temp",
        description="Delete temporary files older than a week when storage runs low.",
        status="draft",
        trigger_type="event",
        schedule=None,
        tags=["ops", "maintenance"],
        stages=[("scan", "core.shell"), ("delete", "core.shell")],
        enabled=False,
    ),
    _Sample(
        name=DEMO_WORKFLOW,
        description="Fetch, transform, load and announce a batch; run by `flowledger demo`.",
        status="active",
        trigger_type="manual",
        schedule=None,
        tags=["demo"],
        # fetch, then transform (one step per source) and audit side by side; load waits for
        # every transform step (fan-in), notify for load and audit.
        stages=[
            ("fetch", "core.http"),
            ("transform", "core.python"),
            ("audit", "core.shell"),
            ("load", "core.shell"),
            ("notify", "core.email"),
        ],
        graph={"audit": ["fetch"], "load": ["transform"], "notify": ["load", "audit"]},
        items={"transform": ["orders", "invoices", "refunds"]},
        # Short backoffs, so that a failed attempt is retried within the demo's second.
        retry_policy=RetryPolicy(max_attempts=3, backoff_base_seconds=0.2, backoff_max_seconds=1),
    ),
)
SAMPLE_WORKFLOWS: Final[tuple[str, ...]] = tuple(sample.name for sample in _WORKFLOWS)
"""Names of the sample workflows (all owned by SAMPLE_OWNER)."""

Outcome = Literal["completed", "failed", "cancelled", "paused", "running"]

# Execution n is started with idempotency key "seed-<n>" and driven to its outcome.
_RUNS: Final[tuple[tuple[str, Outcome], ...]] = (
    ("nightly-etl", "completed"),
    ("invoice-sync", "completed"),
    ("deploy-service", "completed"),
    ("weekly-report", "completed"),
    ("invoice-sync", "completed"),
    ("nightly-etl", "failed"),
    ("deploy-service", "cancelled"),
    ("weekly-report", "paused"),
    ("invoice-sync", "running"),
    ("nightly-etl", "running"),
)
_WORKER: Final = "seed-worker"
# Steps left running hold their lease as long as their timeout (the stage's 600 s): a
# reaper then times them out (failing the execution) instead of requeueing them, so the
# sample never hands a due step to the next worker.
_RUNNING_LEASE: Final = datetime.timedelta(seconds=600)


def seed(db: Database) -> SeedReport:
    """Create whatever part of the sample data is missing; the report counts what was new."""
    counts = dict.fromkeys(msgspec.structs.asdict(SeedReport()), 0)
    users = {email: _user(db, email, name, role, counts) for email, name, role in _USERS}
    pack = _pack(db, counts)
    for ref, entrypoint, description in _ACTIONS:
        _action(db, pack, ref, entrypoint, description, counts)
    for sample in _WORKFLOWS:
        with db.transaction() as tx:
            _workflow(tx, users[SAMPLE_OWNER], pack, sample, counts)
    for n, (name, outcome) in enumerate(_RUNS, start=1):
        # One transaction per execution: started and driven to its state, or not at all.
        with db.transaction() as tx:
            _execution(tx, users[SAMPLE_OWNER], n, name, outcome, counts)
    return SeedReport(**counts)


def _user(db: Database, email: str, name: str, role: Role, counts: dict[str, int]) -> User:
    return _get_or_create(
        lambda: db.users.get_by_email(email=email),
        lambda: db.users.create(user=NewUser(email=email, display_name=name, role=role)),
        "users",
        counts,
    )


def _pack(db: Database, counts: dict[str, int]) -> Pack:
    return _get_or_create(
        lambda: db.packs.get_by_ref(ref=_PACK.ref),
        lambda: db.packs.create(pack=_PACK),
        "packs",
        counts,
    )


def _action(
    db: Database, pack: Pack, ref: str, entrypoint: str, description: str, counts: dict[str, int]
) -> None:
    new = NewAction(pack_id=pack.id, ref=ref, entrypoint=entrypoint, description=description)
    _get_or_create(
        lambda: db.actions.get_by_ref(ref=ref),
        lambda: db.actions.create(action=new),
        "actions",
        counts,
    )


def _workflow(
    tx: Transaction, owner: User, pack: Pack, sample: _Sample, counts: dict[str, int]
) -> None:
    # One transaction per workflow: a run that stops half-way leaves whole workflows only.
    new = NewWorkflow(
        owner_id=owner.id,
        pack_id=pack.id if sample.in_pack else None,
        name=sample.name,
        description=sample.description,
        status=sample.status,
        enabled=sample.enabled,
        trigger_type=sample.trigger_type,
        schedule=sample.schedule,
        definition_yaml=_yaml(sample, revision=1),
        definition=_definition(sample, revision=1),
        tags=sample.tags,
    )
    workflow = _get_or_create(
        lambda: tx.workflows.get_by_name(owner_id=owner.id, name=sample.name),
        lambda: _in_savepoint(tx, lambda: tx.workflows.create(workflow=new)),
        "workflows",
        counts,
    )
    existing = {stage.name for stage in tx.stages.list(workflow_id=workflow.id)}
    for index, (name, action_ref) in enumerate(sample.stages):
        if name not in existing:
            # Its place in the sample: the end while building a new workflow, its old slot
            # when the stage was removed by hand since an earlier run.
            position = min(index, len(existing))
            stage = _stage(sample, name, action_ref)
            tx.stages.add(workflow_id=workflow.id, stage=stage, position=position)
            existing.add(name)
            counts["stages"] += 1
    if workflow.definition != _definition(sample, revision=2):
        _revise(tx, workflow, sample)
        counts["definition_changes"] += 1


def _revise(tx: Transaction, workflow: Workflow, sample: _Sample) -> None:
    tx.workflows.update_definition(
        id=workflow.id,
        definition_yaml=_yaml(sample, revision=2),
        definition=_definition(sample, revision=2),
        expected_version=workflow.row_version,
    )


def _stage(sample: _Sample, name: str, action_ref: str) -> NewStage:
    names = [stage for stage, _ in sample.stages]
    before = names[: names.index(name)]
    return NewStage(
        name=name,
        action_ref=action_ref,
        depends_on=sample.graph.get(name, before[-1:]),
        with_items=sample.items.get(name),
        config={"description": f"{name} step of {sample.name}"},
        retry_policy=sample.retry_policy,
        timeout_seconds=600,
    )


def _definition(sample: _Sample, *, revision: int) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "version": "1.0",
        "description": sample.description,
        "tasks": [
            {"name": name, "action": action, "depends_on": sample.graph.get(name)}
            for name, action in sample.stages
        ],
    }
    if revision > 1:
        # The sample edit: a timeout for the whole run.
        definition["timeout_seconds"] = 3600
    return definition


def _yaml(sample: _Sample, *, revision: int) -> str:
    lines = ["version: '1.0'", f"description: {sample.description}", "tasks:"]
    for name, action in sample.stages:
        lines += [f"  - name: {name}", f"    action: {action}"]
    if revision > 1:
        lines.append("timeout_seconds: 3600")
    return "\n".join(lines) + "\n"


def _execution(
    tx: Transaction, owner: User, n: int, name: str, outcome: Outcome, counts: dict[str, int]
) -> None:
    workflow = tx.workflows.get_by_name(owner_id=owner.id, name=name)
    execution = tx.executions.start(
        workflow_id=workflow.id,
        parameters={"sample": n},
        idempotency_key=f"seed-{n}",
        triggered_by=owner.id,
    )
    # A used key returns the existing execution; every execution the seed drove has logs.
    if tx.step_logs.list_by_execution(execution_id=execution.id, limit=1).items:
        return
    counts["executions"] += 1
    steps = len(tx.steps.list_by_execution(execution_id=execution.id))
    counts["steps"] += steps
    if not steps:
        return  # its stages were all removed by hand: completed at start, nothing to drive
    lines = _drive(tx, execution, outcome)
    counts["log_lines"] += tx.step_logs.append(lines=lines)


def _drive(tx: Transaction, execution: Execution, outcome: Outcome) -> list[NewLogLine]:
    """Bring a new execution to `outcome`; the log lines its steps wrote on the way."""
    if outcome == "completed":
        lines: list[NewLogLine] = []
        while claimed := _claim(tx, execution):
            lines.append(_complete(tx, claimed[0]))
        return lines
    lines = [_complete(tx, _claim(tx, execution)[0])]
    if outcome == "failed":
        step = _claim(tx, execution)[0]
        error = "exit status 1: upstream returned 503 Service Unavailable"
        tx.steps.fail(step_id=step.id, worker_id=_WORKER, attempt=step.attempt, error=error)
        lines.append(_line(step, f"{step.task_name} failed: {error}", level="error"))
        tx.executions.fail(id=execution.id, error=f"{step.task_name}: gave up after {error}")
    elif outcome == "cancelled":
        tx.executions.cancel(id=execution.id)
        lines.append(_line(_next_step(tx, execution), f"cancelled by {SAMPLE_OWNER}"))
    elif outcome == "paused":
        tx.executions.pause(id=execution.id, reason="waiting for approval")
        lines.append(_line(_next_step(tx, execution), "waiting for approval", level="warning"))
    else:
        steps = tx.steps.list_by_execution(execution_id=execution.id)
        remaining = sum(s.status == "queued" for s in steps)
        for step in _claim(tx, execution, limit=remaining, lease=_RUNNING_LEASE):
            lines.append(_line(step, f"{step.task_name} started"))
    return lines


def _claim(
    tx: Transaction,
    execution: Execution,
    *,
    limit: int = 1,
    lease: datetime.timedelta = datetime.timedelta(seconds=30),
) -> list[ClaimedStep]:
    claimed = tx.steps.claim(worker_id=_WORKER, limit=limit, lease=lease)
    foreign = [c for c in claimed if c.execution_id != execution.id]
    if foreign:
        # Raised inside the execution's transaction: the claim and the execution roll back.
        raise Conflict(
            f"cannot drive sample execution {execution.idempotency_key}: step"
            f" {foreign[0].task_name} of execution {foreign[0].execution_id} is due and"
            " would be claimed first; seed a database without other pending work"
        )
    return claimed


def _complete(tx: Transaction, step: ClaimedStep) -> NewLogLine:
    outputs = {"ok": True, "action": step.action_ref}
    tx.steps.complete(step_id=step.id, worker_id=_WORKER, attempt=step.attempt, outputs=outputs)
    return _line(step, f"{step.task_name} done")


def _next_step(tx: Transaction, execution: Execution) -> Step:
    steps = tx.steps.list_by_execution(execution_id=execution.id)
    return next(s for s in steps if s.status != "completed")


def _line(step: Step | ClaimedStep, message: str, *, level: LogLevel = "info") -> NewLogLine:
    return NewLogLine(
        step_id=step.id,
        execution_id=step.execution_id,
        message=message,
        level=level,
        fields={"worker": _WORKER},
    )


def _in_savepoint(tx: Transaction, create: Callable[[], T]) -> T:
    # A failed insert must not abort the enclosing transaction, so that the Conflict
    # fallback of _get_or_create can still read the row.
    with tx.transaction():
        return create()


def _get_or_create(
    get: Callable[[], T], create: Callable[[], T], kind: str, counts: dict[str, int]
) -> T:
    try:
        return get()
    except NotFound:
        pass
    try:
        created = create()
    except Conflict:
        # Another run created it between our look-up and insert.
        return get()
    counts[kind] += 1
    return created
