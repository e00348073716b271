# Generated from src/flowledger/aio/repositories/schedules.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""Schedules: firing the workflows whose trigger_type is "schedule", once per tick.

Each scheduled workflow has one `workflow_schedules` row, kept by triggers on workflows:
made when the workflow gets a cron rule, planned afresh when the rule changes, removed
with the rule. `fire_due` claims the due rows with ``FOR NO KEY UPDATE SKIP LOCKED``,
starts one execution per due tick (idempotency key ``schedule:<tick>``, so a tick can
start at most one execution of its workflow whatever happens), and moves each row to its
next tick, all in one transaction: any number of schedulers can run at once, and each tick
fires exactly once. Rules are evaluated in UTC (`flowledger.repositories._cron`).
"""

from __future__ import annotations

import builtins
import datetime
import logging
import uuid
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from cronsim import CronSimError
from psycopg.types.json import Jsonb

from flowledger.errors import InvalidCursor, NotFound
from flowledger.records.schedules import (
    CATCH_UP_POLICIES,
    CatchUp,
    DueSchedule,
    FiredTick,
    Schedule,
    UnplannedSchedule,
)
from flowledger.repositories._checks import as_choice, as_cursor, as_instant, as_int
from flowledger.repositories._cron import latest_ticks, next_tick
from flowledger.repositories.base import Connection, Repository, as_uuid
from flowledger.repositories.pagination import (
    DEFAULT_PAGE_SIZE,
    Page,
    check_limit,
    listing_scope,
    make_page,
)

if TYPE_CHECKING:
    from flowledger.repositories.registry import Repositories

__all__ = [
    "MAX_CATCH_UP",
    "MAX_FIRE_LIMIT",
    "SchedulesReader",
    "SchedulesRepository",
    "idempotency_key",
]

engine_log = logging.getLogger("flowledger.engine")
# Mirrors workflow_schedules_max_catch_up_check.
MAX_CATCH_UP: Final = 1000
MAX_FIRE_LIMIT: Final = 1000
_LIST_SCOPE = "schedules.list:workflow_id:asc"
_KEY_PREFIX: Final = "schedule:"


def idempotency_key(tick: datetime.datetime) -> str:
    """The idempotency key of the execution a tick starts: ``schedule:`` and the tick in
    UTC, e.g. ``schedule:2026-01-01T02:00:00Z``."""
    return f"{_KEY_PREFIX}{tick.astimezone(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}"


class SchedulesReader(Repository):
    """Schedules: the next planned tick, look up, list."""

    def next_fire_at(self) -> datetime.datetime | None:
        """The earliest tick any schedule has planned (None: nothing planned)."""
        found: datetime.datetime | None = self._fetch("get_schedules_next_fire_at", {})
        return found

    def get(self, *, workflow_id: uuid.UUID | str) -> Schedule:
        """The workflow's schedule; raises NotFound (no such workflow, or its trigger_type
        is not "schedule"), InvalidInput."""
        wid = as_uuid(workflow_id, "workflow id")
        found: Schedule = self._require(
            "get_schedule", {"workflow_id": wid}, f"workflow {wid} has no schedule"
        )
        return found

    def list(self, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None) -> Page[Schedule]:
        """A page of the schedules, oldest workflow first; raises InvalidInput,
        InvalidCursor."""
        check_limit(limit)
        scope = listing_scope(_LIST_SCOPE, {})
        after_id = None
        if cursor is not None:
            (after_id,) = self._codec.decode(as_cursor(cursor), scope, arity=1)
            if not isinstance(after_id, uuid.UUID):
                # Signed by us, so a bug rather than tampering; still refuse it.
                raise InvalidCursor("cursor does not hold a workflow id")
        rows: builtins.list[Schedule] = self._fetch(
            "list_schedules", {"after_id": after_id, "limit": limit}
        )
        return make_page(
            rows, limit=limit, key=lambda s: (s.workflow_id,), codec=self._codec, scope=scope
        )


class SchedulesRepository(SchedulesReader):
    """Schedules of workflows triggered by cron rules: fire the due ticks, read, set the
    catch-up policy."""

    # Its neighbours are full repositories: it starts executions through them.
    _repos: Repositories

    def fire_due(
        self, *, now: datetime.datetime | None = None, limit: int = 100
    ) -> builtins.list[FiredTick]:
        """The executions started for the ticks due at `now` (default: the database's
        clock) of at most `limit` schedules, oldest tick first: one per tick of an enabled,
        active workflow, after downtime as its catch-up policy says; the ticks of other
        workflows pass unfired. Raises InvalidInput, Retryable (a rule changed while its
        workflow fired: run it again)."""
        at = None if now is None else as_instant(now, "now")
        as_int(limit, "limit", 1, MAX_FIRE_LIMIT)
        with self._atomic() as conn:
            if at is None:
                at = self._fetch("get_database_now", {}, conn=conn)
            assert at is not None  # SELECT now() yields its row
            self._plan(limit, conn)
            due: builtins.list[DueSchedule] = self._fetch(
                "claim_due_schedules", {"now": at, "limit": limit}, conn=conn
            )
            moves = [_advance(s, at) for s in due]
            self._record(moves, conn)
            ticks = [(m.workflow_id, tick) for m in moves for tick in m.fired]
            requests = [
                {
                    "workflow_id": workflow_id,
                    "parameters": Jsonb({}),
                    "idempotency_key": idempotency_key(tick),
                    "triggered_by": None,
                }
                for workflow_id, tick in ticks
            ]
            started = self._repos.executions._start(requests, conn) if requests else []
        fired = [
            FiredTick(workflow_id=w, tick=t, execution=e)
            for (w, t), (e, _) in zip(ticks, started, strict=True)
        ]
        return sorted(fired, key=lambda f: (f.tick, f.workflow_id))

    def set_policy(
        self,
        *,
        workflow_id: uuid.UUID | str,
        catch_up: CatchUp | None = None,
        max_catch_up: int | None = None,
    ) -> Schedule:
        """The schedule with its catch-up policy changed (None keeps a value): "latest"
        fires only the most recent missed tick, "all" every missed tick, at most
        `max_catch_up` (1..1000, the most recent); raises NotFound, InvalidInput."""
        wid = as_uuid(workflow_id, "workflow id")
        params: dict[str, Any] = {
            "workflow_id": wid,
            "catch_up": None
            if catch_up is None
            else as_choice(catch_up, "catch_up", CATCH_UP_POLICIES),
            "max_catch_up": None
            if max_catch_up is None
            else as_int(max_catch_up, "max_catch_up", 1, MAX_CATCH_UP),
        }
        if self._fetch("update_schedule_policy", params) == 0:
            raise NotFound(f"workflow {wid} has no schedule")
        return self.get(workflow_id=wid)

    def _plan(self, limit: int, conn: Connection) -> None:
        """Compute the first tick of new or changed rules: the first one after the rule
        was set, so a tick that fell while no scheduler ran is caught up like any other."""
        found: builtins.list[UnplannedSchedule] = self._fetch(
            "claim_unplanned_schedules", {"limit": limit}, conn=conn
        )
        self._record([_first(s) for s in found], conn)

    def _record(self, moves: builtins.list[_Move], conn: Connection) -> None:
        if not moves:
            return
        params = {
            "workflow_ids": [m.workflow_id for m in moves],
            "next_fire_ats": [m.next_fire_at for m in moves],
            "last_fired_ats": [m.fired[-1] if m.fired else None for m in moves],
            "errors": [m.error for m in moves],
        }
        self._fetch("update_schedules_fired", params, conn=conn)


class _Move(NamedTuple):
    """What a scheduler does with one claimed schedule."""

    workflow_id: uuid.UUID
    next_fire_at: datetime.datetime | None
    fired: builtins.list[datetime.datetime]
    error: str | None


def _first(s: UnplannedSchedule) -> _Move:
    try:
        return _moved(s.workflow_id, next_tick(s.rule, s.rule_set_at), [])
    except CronSimError as exc:
        return _Move(s.workflow_id, None, [], _unusable(s.workflow_id, s.rule, exc))


def _advance(s: DueSchedule, at: datetime.datetime) -> _Move:
    """A claimed schedule moved past `at`, with the ticks to fire (none when its workflow
    is disabled or not active: those ticks pass)."""
    count = 1 if s.catch_up == "latest" else s.max_catch_up
    try:
        ticks = latest_ticks(s.rule, s.next_fire_at, at, count)
        return _moved(s.workflow_id, next_tick(s.rule, at), ticks if s.startable else [])
    except CronSimError as exc:
        return _Move(s.workflow_id, None, [], _unusable(s.workflow_id, s.rule, exc))


def _moved(
    workflow_id: uuid.UUID,
    next_fire_at: datetime.datetime | None,
    fired: builtins.list[datetime.datetime],
) -> _Move:
    # A rule whose ticks run out (past year 9999) stops like one that cannot be evaluated.
    error = None if next_fire_at is not None else "the rule has no tick before the year 10000"
    return _Move(workflow_id, next_fire_at, fired, error)


def _unusable(workflow_id: uuid.UUID, rule: str, exc: CronSimError) -> str:
    # Only a rule written before rules were checked (or by SQL) gets here: say so loudly.
    error = f"cron rule {rule!r} cannot be evaluated: {exc}"
    engine_log.warning("schedule of workflow %s stopped: %s", workflow_id, error)
    return error
