# Generated from src/flowledger/aio/repositories/metrics.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""Engine metrics: the step queue, executions per status, the outbox backlog, per-tool
failure rates; each from an indexed query (sql/metrics.sql), cheap enough to scrape."""

from __future__ import annotations

import datetime
from typing import get_args

from flowledger.records.metrics import (
    EngineMetrics,
    OutboxBacklog,
    StatusCount,
    StepQueue,
    ToolFailures,
)
from flowledger.records.runs import ExecutionStatus
from flowledger.repositories._checks import as_interval
from flowledger.repositories.base import Repository

__all__ = ["MetricsRepository"]

_MAX_WINDOW = datetime.timedelta(days=366)
# In lifecycle order: the order the metrics list them in.
_EXECUTION_STATUSES = list(get_args(ExecutionStatus))


class MetricsRepository(Repository):
    """Engine metrics, read in one short transaction."""

    def collect(
        self, *, tool_window: datetime.timedelta = datetime.timedelta(minutes=15)
    ) -> EngineMetrics:
        """A snapshot of the engine; per-tool failure rates over `tool_window`. Raises
        InvalidInput (window)."""
        window = as_interval(tool_window, "tool_window", datetime.timedelta(seconds=1), _MAX_WINDOW)
        with self._atomic() as conn:
            steps: StepQueue | None = self._fetch("stats_engine_steps", {}, conn=conn)
            estimated: list[StatusCount] = self._fetch("stats_engine_step_estimates", {}, conn=conn)
            executions: list[StatusCount] = self._fetch(
                "stats_engine_executions", {"statuses": _EXECUTION_STATUSES}, conn=conn
            )
            outbox: OutboxBacklog | None = self._fetch("stats_engine_outbox", {}, conn=conn)
            tools: list[ToolFailures] = self._fetch(
                "stats_engine_tools", {"window": window}, conn=conn
            )
        assert steps is not None and outbox is not None  # aggregates yield one row
        return EngineMetrics(
            steps=steps,
            steps_by_status_estimated={c.status: c.count for c in estimated},
            executions_by_status={c.status: c.count for c in executions},
            outbox=outbox,
            tools=tools,
            tool_window_seconds=window.total_seconds(),
        )
