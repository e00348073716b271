# Generated from src/flowledger/aio/repositories/step_logs.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""Step logs: lines appended in bulk with binary COPY, read back by step or by execution;
the monthly partitions of the table made ahead and dropped for retention."""

from __future__ import annotations

import datetime
import itertools
import uuid
from collections.abc import Sequence
from typing import Any, Final

from psycopg import sql

from flowledger.errors import Conflict, InvalidInput
from flowledger.records.runs import LOG_LEVELS, LogLine, LogPartition, NewLogLine
from flowledger.repositories._checks import (
    MAX_ITEMS,
    as_cursor,
    as_instant,
    as_int,
    as_json_object,
    as_optional_instant,
    as_struct,
    as_text,
    show,
)
from flowledger.repositories.base import Connection, Repository, as_uuid
from flowledger.repositories.pagination import (
    DEFAULT_PAGE_SIZE,
    Page,
    check_limit,
    listing_scope,
    make_page,
)
from flowledger.repositories.queries import get_queries

__all__ = ["MAX_MONTHS_AHEAD", "StepLogsReader", "StepLogsRepository"]

# Five years of partitions ahead is beyond any real schedule of `flowledger maintain`.
MAX_MONTHS_AHEAD: Final = 60
_UTC = datetime.UTC
_COLUMNS = sql.SQL("id, step_id, execution_id, level, message, fields, logged_at")
# A month's partition is built beside the table, filled with the month's lines moved out of
# the default partition, then attached: ATTACH takes a SHARE UPDATE EXCLUSIVE lock on
# step_logs (appends and reads go on), where CREATE TABLE ... PARTITION OF would take an
# ACCESS EXCLUSIVE one, and PostgreSQL refuses a partition whose lines sit in the default.
_CREATE = sql.SQL("CREATE TABLE {} (LIKE step_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
# Appends that route a line to the default partition wait until the month is attached, so
# no line of that month can slip in between the move and the ATTACH's check.
_LOCK_DEFAULT = sql.SQL("LOCK TABLE step_logs_default IN SHARE ROW EXCLUSIVE MODE")
_MOVE = sql.SQL(
    "WITH moved AS (DELETE FROM step_logs_default"
    " WHERE logged_at >= %(starts_at)s AND logged_at < %(ends_at)s RETURNING {columns})"
    " INSERT INTO {partition} ({columns}) SELECT {columns} FROM moved"
)
_ATTACH = sql.SQL("ALTER TABLE step_logs ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})")
_DROP = sql.SQL("DROP TABLE {}")
_EXISTS = "SELECT to_regclass(%(name)s) IS NOT NULL"

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

    def partitions(self) -> list[LogPartition]:
        """Every partition of step_logs, oldest month first, the default partition last."""
        found: list[LogPartition] = self._fetch("list_step_log_partitions", {})
        return found

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

    def ensure_partitions(
        self, *, months_ahead: int = 3, now: datetime.datetime | None = None
    ) -> list[LogPartition]:
        """The monthly partitions made so that every UTC month from the one of `now` (default:
        the current time) to `months_ahead` months later has one; lines of those months
        waiting in the default partition are moved into them, in the same transaction.
        Idempotent; concurrent runs take turns. Raises InvalidInput (months_ahead not in
        0..MAX_MONTHS_AHEAD, now not a timezone-aware datetime), Conflict (a table of that
        name that is not the month's partition, or a partition overlapping the month)."""
        ahead = as_int(months_ahead, "months_ahead", 0, MAX_MONTHS_AHEAD)
        start = now if now is None else as_instant(now, "now")
        months = _months(start or datetime.datetime.now(_UTC), ahead)
        made: list[str] = []
        with self._atomic() as conn:
            self._fetch("lock_step_log_partitions", {}, conn=conn)
            existing = self._fetch("list_step_log_partitions", {}, conn=conn)
            for starts_at, ends_at in months:
                if _covered(existing, starts_at, ends_at):
                    continue
                if not made:
                    conn.execute(_LOCK_DEFAULT)
                made.append(_make_partition(conn, starts_at, ends_at))
            if not made:
                return []
            after = self._fetch("list_step_log_partitions", {}, conn=conn)
        return [p for p in after if p.name in made]

    def drop_partitions(self, *, older_than: datetime.datetime) -> list[LogPartition]:
        """The monthly partitions dropped (as they were just before): those whose every line
        is older than `older_than`, i.e. whose upper bound is at or before it. Retention of
        step_logs is this drop of whole months, never a DELETE: the default partition and a
        partition that may hold lines at or after the cutoff are kept. Raises InvalidInput
        (older_than not a timezone-aware datetime)."""
        cutoff = as_instant(older_than, "older_than")
        with self._atomic() as conn:
            self._fetch("lock_step_log_partitions", {}, conn=conn)
            existing: list[LogPartition] = self._fetch("list_step_log_partitions", {}, conn=conn)
            doomed = [
                p
                for p in existing
                if not p.is_default and p.ends_at is not None and p.ends_at <= cutoff
            ]
            for p in doomed:
                conn.execute(_DROP.format(sql.Identifier(p.name)))
        return doomed


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


def _months(
    start: datetime.datetime, ahead: int
) -> list[tuple[datetime.datetime, datetime.datetime]]:
    """[first instant, first instant of the next month) of the UTC month of `start` and of
    the `ahead` months after it."""
    utc = start.astimezone(_UTC)
    first = utc.year * 12 + utc.month - 1
    bounds = [_month_start(first + i, start) for i in range(ahead + 2)]
    return list(itertools.pairwise(bounds))


def _month_start(index: int, start: datetime.datetime) -> datetime.datetime:
    year, month = divmod(index, 12)
    if year > 9999:
        raise InvalidInput(
            f"now is too late for months_ahead: the partitions would end after 9999-12-31,"
            f" from {start}"
        )
    return datetime.datetime(year, month + 1, 1, tzinfo=_UTC)


def _covered(
    existing: list[LogPartition], starts_at: datetime.datetime, ends_at: datetime.datetime
) -> bool:
    """Whether the month already has its partition; Conflict when another partition
    overlaps it (one not made by flowledger, with other bounds)."""
    for p in existing:
        if p.is_default:
            continue
        if (p.starts_at, p.ends_at) == (starts_at, ends_at):
            return True
        low = p.starts_at is None or p.starts_at < ends_at
        high = p.ends_at is None or p.ends_at > starts_at
        if low and high:
            raise Conflict(
                f"partition {p.name} of step_logs overlaps the month from {starts_at:%Y-%m-%d}"
            )
    return False


def _make_partition(
    conn: Connection, starts_at: datetime.datetime, ends_at: datetime.datetime
) -> str:
    """Make the month's partition on `conn` (inside the caller's transaction), moving the
    month's lines out of the default partition into it; its name."""
    name = f"step_logs_{starts_at.year:04d}_{starts_at.month:02d}"
    cur = conn.execute(_EXISTS, {"name": name})
    row = cur.fetchone()
    if row is not None and row[0]:
        raise Conflict(f"table {name} exists but is not the partition of step_logs it names")
    partition = sql.Identifier(name)
    conn.execute(_CREATE.format(partition))
    bounds = {"starts_at": starts_at, "ends_at": ends_at}
    conn.execute(_MOVE.format(columns=_COLUMNS, partition=partition), bounds)
    conn.execute(_ATTACH.format(partition, sql.Literal(starts_at), sql.Literal(ends_at)))
    return name
