"""`flowledger demo`: one execution run end to end by two in-process workers.

`run_demo(db, out)` seeds the sample data, starts an execution of the `demo-pipeline`
sample workflow (fetch; then transform, a fan-out of three steps, beside audit; load once
every transform step is done; notify after load and audit) and runs it with two reference
workers (`flowledger.worker.Worker`, one handler thread each) sharing the Database pool:
each claims a step (with a lease); the handler logs, calls a tool and heartbeats; the
worker writes the completion or the failure. One transform step fails its first attempt,
goes back to the queue with the stage's short backoff and is claimed again. The relay
then delivers the outbox events, and `out` receives a timeline (relative times, worker,
step, what happened), a check that every attempt started only after the steps it depends
on had completed, and a summary.

The demo works on the database it is given like real workers would, so it keeps its
hands off other work: a due step of another execution stops it before it starts (the
probe's claim is rolled back); one that becomes due later is given back by the worker
that claims it (queued again, no attempt spent) and the demo stops with Conflict. The
relay leaves events that do not belong to the sample workflows undelivered (recorded as
a failed delivery, so the application's own relay retries them).
"""

from __future__ import annotations

import datetime
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

import msgspec
import psycopg

from flowledger.database import Database
from flowledger.errors import Conflict, FlowledgerError
from flowledger.records.events import OutboxEvent
from flowledger.records.runs import (
    ClaimedStep,
    Execution,
    ExecutionStatus,
    LogLevel,
    NewLogLine,
    Step,
)
from flowledger.records.workflows import Workflow
from flowledger.tools.seed import DEMO_WORKFLOW, SAMPLE_OWNER, SAMPLE_WORKFLOWS, SeedReport, seed
from flowledger.worker import Worker, Written

__all__ = [
    "WORKERS",
    "AttemptSummary",
    "DeliveredEvent",
    "DemoReport",
    "StepSummary",
    "TimelineEntry",
    "run_demo",
]

Out = Callable[[str], None]

WORKERS: Final = ("demo-worker-1", "demo-worker-2")
"""The worker ids of the demo's two threads."""
_LEASE: Final = datetime.timedelta(seconds=5)
# Each step "works" twice this long: once in its tool call, once after the heartbeat.
_WORK_SECONDS: Final = 0.05
_POLL_SECONDS: Final = 0.02
_DEADLINE_SECONDS: Final = 30.0
# The step that fails its first attempt: the second element of the transform fan-out.
_FLAKY_STEP: Final = ("transform", 1)
_FLAKY_ERROR: Final = "ConnectionResetError: warehouse closed the connection"
_TOOLS: Final = {
    "fetch": ("http.get", {"url": "https://api.example.com/orders?since=yesterday"}),
    "transform": ("sql.query", {"sql": "SELECT normalise(batch) FROM staging"}),
    "audit": ("sql.query", {"sql": "SELECT count(*) FROM staging WHERE suspicious"}),
    "load": ("s3.put", {"bucket": "warehouse", "key": "orders/batch.parquet"}),
    "notify": ("smtp.send", {"to": "team@example.com", "subject": "orders loaded"}),
}
# Enough relay passes for a development database's backlog; the demo's own events come last.
_MAX_RELAY_PASSES: Final = 1000
_FINISHED: Final = frozenset({"completed", "failed", "cancelled"})


class TimelineEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One thing that happened: seconds since the demo started, who, on which step, what."""

    at: float
    worker: str
    step: str | None
    event: str


class AttemptSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of a step as recorded in step_attempts."""

    attempt: int
    worker: str
    outcome: str | None
    error: str | None


class StepSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A step of the demo execution at the end: its status and every attempt."""

    task_name: str
    task_index: int
    status: str
    attempts: list[AttemptSummary]


class DeliveredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An outbox event the demo's relay delivered."""

    event_type: str
    aggregate_type: str
    aggregate_id: uuid.UUID
    payload: dict[str, Any]


class DemoReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one demo run did: the execution's outcome, its steps, timeline and events."""

    execution_id: uuid.UUID
    workflow: str
    status: ExecutionStatus
    duration_seconds: float
    steps: list[StepSummary]
    attempts: int
    retries: int
    log_lines: int
    tool_executions: int
    timeline: list[TimelineEntry]
    # The dependency graph the execution pinned, and whether every attempt started after
    # every step it depends on had completed (read back from the database).
    task_graph: dict[str, list[str]]
    in_dependency_order: bool
    events: list[DeliveredEvent]
    # Pending events of other aggregates, left for the application's own relay.
    events_left: int
    cancelled_leftovers: list[uuid.UUID]
    seeded: SeedReport

    def as_json(self) -> dict[str, Any]:
        """The report as JSON-ready builtins (what `flowledger demo --json` prints)."""
        payload: dict[str, Any] = msgspec.to_builtins(self)
        payload["seeded"] = self.seeded.as_json()
        return payload


def run_demo(db: Database, out: Out) -> DemoReport:
    """Seed, run one demo-pipeline execution with two workers, relay its events; the
    report (status `completed` on success). Raises Conflict when other executions' steps
    are due (the demo touches none of them), FlowledgerError when the run stalls."""
    seeded = seed(db)
    owner = db.users.get_by_email(email=SAMPLE_OWNER)
    workflow = db.workflows.get_by_name(owner_id=owner.id, name=DEMO_WORKFLOW)
    timeline = _Timeline(out)
    out(f"flowledger demo: {len(WORKERS)} workers run one execution of {DEMO_WORKFLOW}")
    out(_seed_line(seeded))
    out("")
    out("timeline (seconds since start, worker, step, what happened)")
    leftovers = _cancel_leftovers(db, workflow.id, timeline)
    _refuse_other_work(db)  # before anything is started
    execution = db.executions.start(
        workflow_id=workflow.id, parameters={"source": "flowledger demo"}, triggered_by=owner.id
    )
    steps = db.steps.list_by_execution(execution_id=execution.id)
    queued = sum(s.status == "queued" for s in steps)
    timeline.add(
        "main",
        None,
        f"started execution {execution.id} ({len(steps)} steps: {queued} queued,"
        f" {len(steps) - queued} waiting for what they depend on)",
    )
    run = _Run(db, execution, timeline)
    final = run.execute()
    timeline.add("main", None, f"execution {final.status}")
    ours = {str(w.id) for w in _sample_workflows(db, owner.id)}
    delivered, left = _relay(db, ours)
    report = _report(db, final, run, timeline, delivered, left, leftovers, seeded)
    for line in _closing_lines(report):
        out(line)
    return report


class _Timeline:
    """Entries in the order they happened, each passed to `out` as it is recorded."""

    def __init__(self, out: Out) -> None:
        self._out = out
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self.entries: list[TimelineEntry] = []

    def add(self, worker: str, step: str | None, event: str) -> None:
        with self._lock:
            at = round(time.monotonic() - self._start, 3)
            entry = TimelineEntry(at=at, worker=worker, step=step, event=event)
            self.entries.append(entry)
            when = f"+{at:.3f}s"
            self._out(f"  {when:>8}  {worker:<13}  {step or '':<12}  {event}")


class _Run:
    """Two reference workers (`flowledger.worker.Worker`, one handler thread each) on one
    execution, until it finishes (or a worker meets another execution's step)."""

    def __init__(self, db: Database, execution: Execution, timeline: _Timeline) -> None:
        self._db = db
        self._execution = execution
        self._timeline = timeline
        self._lock = threading.Lock()
        self._foreign: ClaimedStep | None = None
        self.log_lines = 0
        self.tool_executions = 0

    def execute(self) -> Execution:
        """The finished execution. On a worker's error, another execution's step, a stall
        or an interrupt the execution is cancelled (left running, its queued steps would be
        the next run's first claims) and the error raised."""
        final: Execution | None = None
        try:
            self._run_workers()
            if self._foreign is not None:
                raise _foreign_work(self._foreign)
            final = self._db.executions.get(id=self._execution.id)
            if final.status not in _FINISHED:
                raise FlowledgerError(
                    f"demo execution {final.id} did not finish within {_DEADLINE_SECONDS:g} s"
                    " (another worker may hold its steps)"
                )
            return final
        finally:
            if final is None or final.status not in _FINISHED:
                self._db.executions.cancel(id=self._execution.id)

    def _run_workers(self) -> None:
        actions = {
            s.action_ref for s in self._db.stages.list(workflow_id=self._execution.workflow_id)
        }
        workers = [
            Worker(
                self._db,
                dict.fromkeys(actions, self._run_step),
                worker_id=name,
                concurrency=1,
                prefetch=0,
                lease=_LEASE,
                flush_interval=0.001,
                idle_wait=_POLL_SECONDS,
                accept=self._ours,
                on_written=self._written,
            )
            for name in WORKERS
        ]
        errors: list[BaseException] = []

        def run(worker: Worker) -> None:
            try:
                worker.run()
            except BaseException as exc:  # re-raised in the main thread below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(w,), name=w.worker_id) for w in workers]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + _DEADLINE_SECONDS
            while time.monotonic() < deadline and not errors and self._foreign is None:
                if self._db.executions.get(id=self._execution.id).status in _FINISHED:
                    break
                time.sleep(_POLL_SECONDS)
        finally:
            # Also on KeyboardInterrupt: the workers must stop before the demo returns.
            for worker in workers:
                worker.stop()
            for thread in threads:
                thread.join()
        if errors:
            raise errors[0]

    def _ours(self, step: ClaimedStep) -> bool:
        if step.execution_id == self._execution.id:
            return True
        self._foreign = step  # given back untouched by the worker; the demo stops
        return False

    def _run_step(self, step: ClaimedStep) -> dict[str, Any]:
        worker = step.lease_owner
        name = _label(step.task_name, step.task_index, step.item is not None)
        lease = _LEASE.total_seconds()
        self._timeline.add(
            worker, name, f"claimed attempt {step.attempt}/{step.max_attempts} (lease {lease:g} s)"
        )
        self._log(step, f"attempt {step.attempt} started on {worker}")
        error = self._call_tool(worker, step)
        self._db.steps.heartbeat(
            step_id=step.id, worker_id=worker, attempt=step.attempt, lease=_LEASE
        )
        self._timeline.add(worker, name, f"heartbeat: lease extended by {lease:g} s")
        time.sleep(_WORK_SECONDS)
        # Logged before the worker writes the outcome: a dependent can only be claimed
        # after that write commits, so the timeline is in dependency order.
        if error is not None:
            self._log(step, f"{name} failed: {error}", level="error")
            self._timeline.add(worker, name, f"FAILED attempt {step.attempt}: {error}")
            raise ConnectionResetError(error.removeprefix("ConnectionResetError: "))
        self._log(step, f"{name} done")
        self._timeline.add(worker, name, "completed")
        return {"worker": worker, "attempt": step.attempt, "item": step.item}

    def _written(self, step: ClaimedStep, what: Written, after: Step | None) -> None:
        worker = step.lease_owner
        name = _label(step.task_name, step.task_index, step.item is not None)
        if what == "lost":
            self._timeline.add(worker, name, "lease lost: result dropped")
        elif after is not None and after.status == "queued":
            backoff = (after.available_at - after.updated_at).total_seconds()
            self._timeline.add(
                worker,
                name,
                f"back to queued: retry after a {backoff:.2f} s backoff"
                f" (attempt {after.attempt + 1} of {after.max_attempts})",
            )

    def _call_tool(self, worker: str, step: ClaimedStep) -> str | None:
        """Record the step's tool call; the error when this attempt is meant to fail."""
        tool_name, tool_input = _TOOLS.get(step.task_name, ("noop", {}))
        call = self._db.tool_executions.start(
            tool_name=tool_name, input=tool_input, step_id=step.id
        )
        time.sleep(_WORK_SECONDS)
        flaky = (step.task_name, step.task_index) == _FLAKY_STEP and step.attempt == 1
        error = _FLAKY_ERROR if flaky else None
        output = None if error else {"ok": True, "worker": worker}
        done = self._db.tool_executions.finish(id=call.id, output=output, error=error)
        with self._lock:
            self.tool_executions += 1
        outcome = "failed" if error else "succeeded"
        label = _label(step.task_name, step.task_index, step.item is not None)
        self._timeline.add(worker, label, f"tool {tool_name} {outcome} ({done.duration_ms} ms)")
        return error

    def _log(self, step: ClaimedStep, message: str, *, level: LogLevel = "info") -> None:
        line = NewLogLine(
            step_id=step.id,
            execution_id=step.execution_id,
            message=message,
            level=level,
            fields={"attempt": step.attempt, "worker": step.lease_owner},
        )
        written = self._db.step_logs.append(lines=[line])
        with self._lock:
            self.log_lines += written


def _foreign_work(step: ClaimedStep) -> Conflict:
    return Conflict(
        f"step {step.task_name} of execution {step.execution_id} is due: the demo's"
        " workers would take other executions' work; run the demo on a database of its own"
    )


def _refuse_other_work(db: Database) -> None:
    """Raise Conflict when any step is due: the demo's workers would claim it. The probe's
    claim is rolled back, so the step is left untouched."""
    foreign: ClaimedStep | None = None
    with db.transaction() as tx:
        claimed = tx.steps.claim(worker_id="demo-probe", limit=1, lease=_LEASE)
        if claimed:
            foreign = claimed[0]
            raise psycopg.Rollback()
    if foreign is not None:
        raise _foreign_work(foreign)


def _cancel_leftovers(db: Database, workflow_id: uuid.UUID, timeline: _Timeline) -> list[uuid.UUID]:
    """Cancel demo executions an interrupted run left running: their queued steps would
    otherwise be claimed first."""
    cancelled = []
    for execution in db.executions.list(workflow_id=workflow_id, status="running", limit=100).items:
        db.executions.cancel(id=execution.id)
        timeline.add("main", None, f"cancelled execution {execution.id}, left by an earlier run")
        cancelled.append(execution.id)
    return cancelled


class _NotSampleEvent(Exception):
    """Raised by the relay handler: the event is not the demo's to deliver."""


def _relay(db: Database, ours: set[str]) -> tuple[list[OutboxEvent], int]:
    """The pending events of sample executions, delivered one per relay pass (so that an
    event of another aggregate is put back alone); and how many others were put back."""
    delivered: list[OutboxEvent] = []
    left = 0

    def deliver(events: list[OutboxEvent]) -> None:
        for event in events:
            if event.aggregate_type != "execution" or event.payload.get("workflow_id") not in ours:
                raise _NotSampleEvent("not an event of the sample data: left for its own relay")
        delivered.extend(events)

    for _ in range(_MAX_RELAY_PASSES):
        result = db.outbox.relay(handler=deliver, batch=1)
        left += result.failed
        if not result.published and not result.failed:
            break
    return delivered, left


def _sample_workflows(db: Database, owner_id: uuid.UUID) -> list[Workflow]:
    return [db.workflows.get_by_name(owner_id=owner_id, name=name) for name in SAMPLE_WORKFLOWS]


def _report(
    db: Database,
    final: Execution,
    run: _Run,
    timeline: _Timeline,
    delivered: list[OutboxEvent],
    left: int,
    leftovers: list[uuid.UUID],
    seeded: SeedReport,
) -> DemoReport:
    steps = [
        StepSummary(
            task_name=step.task_name,
            task_index=step.task_index,
            status=step.status,
            attempts=[
                AttemptSummary(
                    attempt=a.attempt, worker=a.worker_id, outcome=a.outcome, error=a.error
                )
                for a in db.steps.list_attempts(step_id=step.id)
            ],
        )
        for step in db.steps.list_by_execution(execution_id=final.id)
    ]
    attempts = sum(len(s.attempts) for s in steps)
    assert final.started_at is not None and final.finished_at is not None
    return DemoReport(
        execution_id=final.id,
        workflow=DEMO_WORKFLOW,
        status=final.status,
        duration_seconds=round((final.finished_at - final.started_at).total_seconds(), 3),
        steps=steps,
        attempts=attempts,
        retries=attempts - len(steps),
        log_lines=run.log_lines,
        tool_executions=run.tool_executions,
        timeline=timeline.entries,
        task_graph=final.task_graph,
        in_dependency_order=_in_dependency_order(db, final),
        events=[
            DeliveredEvent(
                event_type=e.event_type,
                aggregate_type=e.aggregate_type,
                aggregate_id=e.aggregate_id,
                payload=e.payload,
            )
            for e in delivered
        ],
        events_left=left,
        cancelled_leftovers=leftovers,
        seeded=seeded,
    )


def _in_dependency_order(db: Database, execution: Execution) -> bool:
    """Whether every attempt of the execution started after every step of the stages it
    depends on (its pinned task graph) had completed, as the database recorded them."""
    steps = db.steps.list_by_execution(execution_id=execution.id)
    done: dict[str, list[datetime.datetime | None]] = {}
    for step in steps:
        done.setdefault(step.task_name, []).append(step.completed_at)
    for step in steps:
        needed = [t for dep in execution.task_graph.get(step.task_name, []) for t in done[dep]]
        for attempt in db.steps.list_attempts(step_id=step.id):
            if any(t is None or t > attempt.started_at for t in needed):
                return False
    return True


def _label(task_name: str, task_index: int, fan_out: bool) -> str:
    return f"{task_name}[{task_index}]" if fan_out else task_name


def _seed_line(seeded: SeedReport) -> str:
    if not seeded.total:
        return "sample data: already in place"
    counts = msgspec.structs.asdict(seeded)
    created = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v)
    return f"sample data: created {seeded.total} rows ({created})"


def _closing_lines(report: DemoReport) -> list[str]:
    own = [e for e in report.events if e.aggregate_id == report.execution_id]
    others = Counter(e.event_type for e in report.events if e.aggregate_id != report.execution_id)
    lines = ["", f"outbox: the relay delivered {len(report.events)} events"]
    lines += [
        f"  {e.event_type:<20}  execution {e.aggregate_id}  status={e.payload.get('status')}"
        for e in own
    ]
    if others:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(others.items()))
        lines.append(f"  and {sum(others.values())} events of other sample executions ({kinds})")
    if report.events_left:
        lines.append(f"  ({report.events_left} events of other aggregates left for their relay)")
    per_worker = Counter(a.worker for s in report.steps for a in s.attempts)
    lines += [
        "",
        "summary",
        f"  execution  {report.execution_id}: {report.status} in {report.duration_seconds:.2f} s",
        "  steps      "
        + ", ".join(f"{_summary_label(report, s)} {s.status}" for s in report.steps),
        "  order      every attempt started after the steps it depends on completed"
        if report.in_dependency_order
        else "  order      AN ATTEMPT STARTED BEFORE A STEP IT DEPENDS ON HAD COMPLETED",
        f"  attempts   {report.attempts} ({report.retries} retry)"
        if report.retries == 1
        else f"  attempts   {report.attempts} ({report.retries} retries)",
    ]
    lines += [
        f"  retried    {_summary_label(report, s)}: "
        + ", then ".join(f"attempt {a.attempt} {a.outcome} on {a.worker}" for a in s.attempts)
        for s in report.steps
        if len(s.attempts) > 1
    ]
    lines += [
        "  workers    " + ", ".join(f"{w}: {n} attempts" for w, n in sorted(per_worker.items())),
        f"  written    {report.log_lines} log lines, {report.tool_executions} tool calls",
    ]
    return lines


def _summary_label(report: DemoReport, step: StepSummary) -> str:
    fan_out = sum(s.task_name == step.task_name for s in report.steps) > 1
    return _label(step.task_name, step.task_index, fan_out)
