# Generated from src/flowledger/aio/repositories/step_logs.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""Step logs: lines appended in bulk with binary COPY, read back by step or by execution."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from typing import Any

from flowledger.errors import InvalidInput
from flowledger.records.runs import LOG_LEVELS, LogLine, NewLogLine
from flowledger.repositories._checks import (
    MAX_ITEMS,
    as_cursor,
    as_json_object,
    as_optional_instant,
    as_struct,
    as_text,
    show,
)
from flowledger.repositories.base import Repository, as_uuid
from flowledger.repositories.pagination import (
    DEFAULT_PAGE_SIZE,
    Page,
    check_limit,
    listing_scope,
    make_page,
)
from flowledger.repositories.queries import get_queries

__all__ = ["StepLogsReader", "StepLogsRepository"]

_COPY_TYPES = ["uuid", "uuid", "text", "text", "jsonb", "timestamptz"]
_BY_STEP = "step_logs.by_step:logged_at:asc"
_BY_EXECUTION = "step_logs.by_execution:logged_at:asc"


class StepLogsReader(Repository):
    """Step logs: pages of a step's or an execution's lines."""

    def list_by_step(
        self, *, step_id: uuid.UUID | str, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[LogLine]:
        """A page of one step's log lines, oldest first; raises InvalidInput, InvalidCursor."""
        params = {"step_id": as_uuid(step_id, "step id")}
        return self._page("list_step_logs_by_step", params, limit, cursor, _BY_STEP)

    def list_by_execution(
        self,
        *,
        execution_id: uuid.UUID | str,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[LogLine]:
        """A page of the log lines of all steps of an execution, oldest first; raises
        InvalidInput, InvalidCursor."""
        params = {"execution_id": as_uuid(execution_id, "execution id")}
        return self._page("list_step_logs_by_execution", params, limit, cursor, _BY_EXECUTION)

    def _page(
        self, name: str, params: dict[str, Any], limit: int, cursor: str | None, scope: str
    ) -> Page[LogLine]:
        check_limit(limit)
        # params holds only the filter (the step or execution) at this point.
        scope = listing_scope(scope, params)
        after_logged_at, after_id = (None, None)
        if cursor is not None:
            after_logged_at, after_id = self._codec.decode(as_cursor(cursor), scope, arity=2)
            if not isinstance(after_logged_at, datetime.datetime) or not isinstance(after_id, int):
                raise InvalidInput("cursor does not hold a (logged_at, id) position")
        params |= {"after_logged_at": after_logged_at, "after_id": after_id, "limit": limit}
        rows = self._fetch(name, params)
        return make_page(
            rows, limit=limit, key=lambda r: (r.logged_at, r.id), codec=self._codec, scope=scope
        )


class StepLogsRepository(StepLogsReader):
    """Append-only log lines of steps."""

    def append(self, *, lines: Sequence[NewLogLine]) -> int:
        """Append the lines in one binary COPY (all or none); the number written. A line
        without logged_at gets this process's current time. Raises InvalidInput (bad level,
        unknown step or execution)."""
        rows = _rows(lines)
        if not rows:
            return 0
        with self._atomic() as conn, conn.cursor() as cur:
            with cur.copy(get_queries()["append_step_logs"].sql) as copy:
                # set_types fixes the jsonb dumper (msgspec, set up on the connection), so
                # the dict goes in as it is: no Jsonb wrapper to build per row.
                copy.set_types(_COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
        return len(rows)


def _rows(lines: object) -> list[tuple[Any, ...]]:
    # Every line is checked before the COPY starts: a bad one must not cut it short.
    if not isinstance(lines, list | tuple):
        raise InvalidInput(f"lines must be a list of NewLogLine, got {type(lines).__name__}")
    if len(lines) > MAX_ITEMS:
        raise InvalidInput(f"lines must hold at most {MAX_ITEMS:,} lines, got {len(lines):,}")
    now = datetime.datetime.now(datetime.UTC)
    rows = []
    for i, line in enumerate(lines):
        what = f"lines[{i}]"
        line = as_struct(line, NewLogLine, what)
        if not isinstance(line.level, str) or line.level not in LOG_LEVELS:
            raise InvalidInput(f"unknown log level {show(line.level)} in {what}")
        rows.append(
            (
                as_uuid(line.step_id, f"{what}.step_id"),
                as_uuid(line.execution_id, f"{what}.execution_id"),
                line.level,
                as_text(line.message, f"{what}.message"),
                as_json_object(line.fields, f"{what}.fields"),
                as_optional_instant(line.logged_at, f"{what}.logged_at") or now,
            )
        )
    return rows
