# Generated from src/flowledger/aio/repositories/tool_executions.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""Tool executions: tool calls of steps and agent sessions, per-tool statistics, pruning."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from flowledger.errors import Conflict, InvalidInput
from flowledger.records.runs import ToolExecution, ToolStats
from flowledger.repositories._checks import (
    as_instant,
    as_json,
    as_name,
    as_optional_text,
    check_batch,
    cutoff_of,
)
from flowledger.repositories.base import Repository, as_optional_uuid, as_uuid

__all__ = ["ToolExecutionsReader", "ToolExecutionsRepository"]


class ToolExecutionsReader(Repository):
    """Tool calls: look up, per-tool statistics."""

    def get(self, *, id: uuid.UUID | str) -> ToolExecution:
        """The tool call with this id; raises NotFound, InvalidInput on a malformed id."""
        call_id = as_uuid(id, "tool execution id")
        found: ToolExecution = self._require(
            "get_tool_execution_by_id",
            {"id": call_id},
            f"tool execution {call_id} not found",
        )
        return found

    def stats(self, *, since: datetime.datetime, until: datetime.datetime) -> list[ToolStats]:
        """Per tool (by name), over finished calls created in [since, until): count,
        failures, failure_rate, p50_ms, p95_ms; raises InvalidInput when until < since."""
        since = as_instant(since, "since")
        until = as_instant(until, "until")
        if until < since:
            raise InvalidInput("until must not be before since")
        found: list[ToolStats] = self._fetch(
            "stats_tool_executions", {"since": since, "until": until}
        )
        return found


class ToolExecutionsRepository(ToolExecutionsReader):
    """Tool calls: start, finish (duration measured by the server), statistics, prune."""

    def start(
        self,
        *,
        tool_name: str,
        input: dict[str, Any],
        step_id: uuid.UUID | str | None = None,
        session_id: uuid.UUID | str | None = None,
    ) -> ToolExecution:
        """The running tool call; raises InvalidInput (blank name, unknown step or session)."""
        params = {
            "tool_name": as_name(tool_name, "tool_name"),
            "input": as_json(input, "input"),
            "step_id": as_optional_uuid(step_id, "step id"),
            "session_id": as_optional_uuid(session_id, "session id"),
        }
        started: ToolExecution | None = self._fetch("insert_tool_execution", params, context=params)
        assert started is not None  # INSERT ... RETURNING yields its row
        return started

    def finish(
        self, *, id: uuid.UUID | str, output: Any = None, error: str | None = None
    ) -> ToolExecution:
        """The finished call: failed when `error` is given, else succeeded; raises NotFound,
        Conflict when it already finished, InvalidInput."""
        call_id = as_uuid(id, "tool execution id")
        params = {
            "id": call_id,
            "output": None if output is None else as_json(output, "output"),
            "error": as_optional_text(error, "error"),
        }
        finished: ToolExecution | None = self._fetch("complete_tool_execution", params)
        if finished is None:
            self.get(id=call_id)  # raises NotFound when it does not exist
            raise Conflict(f"tool execution {call_id} already finished")
        return finished

    def prune(
        self, *, older_than: datetime.datetime | datetime.timedelta, batch: int = 1000
    ) -> int:
        """Delete tool calls that finished before `older_than` (a time, or an age; running
        calls never), one bounded transaction per batch; the number deleted. Raises
        InvalidInput on a bad cutoff or batch."""
        check_batch(batch)
        params = {"cutoff": cutoff_of(older_than), "batch": batch}
        return self._delete_in_batches("prune_tool_executions", params)
