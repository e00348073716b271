"""Engine metrics: what `db.metrics()` returns, and its Prometheus text form."""

from __future__ import annotations

import msgspec

__all__ = ["EngineMetrics", "OutboxBacklog", "StatusCount", "StepQueue", "ToolFailures"]


class StepQueue(msgspec.Struct, frozen=True, gc=False):
    """The live step queue."""

    due: int
    # Queued with available_at in the future: a retry backoff or a delayed start.
    delayed: int
    oldest_due_seconds: float | None
    running: int
    # Running steps whose lease ran out and that no reaper pass has requeued yet.
    leases_expired: int


class StatusCount(msgspec.Struct, frozen=True, gc=False):
    """How many rows have one status."""

    status: str
    count: int


class OutboxBacklog(msgspec.Struct, frozen=True, gc=False):
    """Outbox events not yet published."""

    backlog: int
    oldest_seconds: float | None


class ToolFailures(msgspec.Struct, frozen=True, gc=False):
    """One tool's finished calls in the metrics window."""

    tool_name: str
    calls: int
    failures: int
    failure_rate: float


class EngineMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of the engine: the step queue, executions per status (exact), steps per
    status (the planner's estimate), the outbox backlog, per-tool failure rates."""

    steps: StepQueue
    steps_by_status_estimated: dict[str, int]
    executions_by_status: dict[str, int]
    outbox: OutboxBacklog
    tools: list[ToolFailures]
    tool_window_seconds: float

    def prometheus(self) -> str:
        """The metrics in Prometheus' text exposition format (version 0.0.4)."""
        out: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP flowledger_{name} {help_}")
            out.append(f"# TYPE flowledger_{name} {kind}")
            out.extend(f"flowledger_{name}{labels} {value:g}" for labels, value in samples)

        s = self.steps
        metric("steps_due", "gauge", "Queued steps due now.", [("", s.due)])
        metric("steps_delayed", "gauge", "Queued steps not due yet.", [("", s.delayed)])
        metric("steps_running", "gauge", "Running steps.", [("", s.running)])
        metric(
            "leases_expired", "gauge", "Expired leases not reaped yet.", [("", s.leases_expired)]
        )
        metric(
            "oldest_due_step_age_seconds",
            "gauge",
            "Age of the oldest due step (0 when none).",
            [("", s.oldest_due_seconds or 0.0)],
        )
        metric(
            "steps_estimated",
            "gauge",
            "Steps per status, the planner's estimate.",
            [(f'{{status="{k}"}}', v) for k, v in sorted(self.steps_by_status_estimated.items())],
        )
        metric(
            "executions",
            "gauge",
            "Executions per status.",
            [(f'{{status="{k}"}}', v) for k, v in sorted(self.executions_by_status.items())],
        )
        metric("outbox_backlog", "gauge", "Unpublished outbox events.", [("", self.outbox.backlog)])
        metric(
            "outbox_oldest_unpublished_seconds",
            "gauge",
            "Age of the oldest unpublished event (0 when none).",
            [("", self.outbox.oldest_seconds or 0.0)],
        )
        metric(
            "tool_failure_rate",
            "gauge",
            f"Failed share of finished tool calls over the last {self.tool_window_seconds:g} s.",
            [(f'{{tool="{_label(t.tool_name)}"}}', t.failure_rate) for t in self.tools],
        )
        return "\n".join(out) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
