"""Outbox: events appended in the caller's transaction, drained by a SKIP LOCKED relay."""

from __future__ import annotations

import builtins
import datetime
import inspect
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine

import psycopg

# sync-only: from typing import cast
from flowledger.aio.repositories.base import AsyncConnection, AsyncRepository, as_uuid
from flowledger.errors import InvalidInput
from flowledger.records.events import NewEvent, OutboxEvent, RelayResult
from flowledger.repositories._checks import (
    as_json,
    as_name,
    as_struct,
    check_batch,
    cutoff_of,
    show,
)

__all__ = ["AsyncOutboxReader", "AsyncOutboxRepository", "AsyncRelayHandler"]

# async-only: begin
AsyncRelayHandler = Callable[[list[OutboxEvent]], Awaitable[None] | None]
"""A relay handler of the async face: a coroutine function, or a plain function."""
# async-only: end
# sync-only: RelayHandler = Callable[[list[OutboxEvent]], None]
# sync-only: """A relay handler of the sync face: a plain function (not a coroutine one)."""

_EVENT_TYPE = re.compile(r"^[a-z_]+\.[a-z_]+$")
# A failing consumer is retried after 2, 4, 8... seconds, never more than this apart.
_MAX_BACKOFF_SECONDS = 300.0


class AsyncOutboxReader(AsyncRepository):
    """Outbox events: list an aggregate's."""

    async def list_by_aggregate(
        self, *, aggregate_type: str, aggregate_id: uuid.UUID | str
    ) -> list[OutboxEvent]:
        """Every event of one aggregate, oldest first; raises InvalidInput on a malformed id."""
        params = {
            "aggregate_type": as_name(aggregate_type, "aggregate_type"),
            "aggregate_id": as_uuid(aggregate_id, "aggregate id"),
        }
        found: list[OutboxEvent] = await self._fetch("list_outbox_events_by_aggregate", params)
        return found


class AsyncOutboxRepository(AsyncOutboxReader):
    """The transactional outbox: append with the state change, relay, prune."""

    async def append(self, *, event: NewEvent, conn: AsyncConnection | None = None) -> OutboxEvent:
        """The stored event, written on `conn` (the caller's transaction) when given;
        raises InvalidInput on a malformed event type or empty aggregate type."""
        event = as_struct(event, NewEvent, "event")
        event_type = event.event_type
        if not isinstance(event_type, str) or not _EVENT_TYPE.match(event_type):
            raise InvalidInput(
                f"event_type must look like 'execution.completed', got {show(event_type)}"
            )
        if conn is not None and not isinstance(conn, psycopg.AsyncConnection):
            raise InvalidInput(f"conn must be a psycopg AsyncConnection or None, got {show(conn)}")
        params = {
            "aggregate_type": as_name(event.aggregate_type, "aggregate_type"),
            "aggregate_id": as_uuid(event.aggregate_id, "aggregate id"),
            "event_type": as_name(event_type, "event_type"),
            "payload": as_json(event.payload, "payload", object_only=True),
        }
        stored: OutboxEvent | None = await self._fetch("insert_outbox_event", params, conn=conn)
        assert stored is not None  # INSERT ... RETURNING yields its row
        return stored

    async def relay(self, *, handler: AsyncRelayHandler, batch: int = 100) -> RelayResult:
        """Deliver one batch of due events to `handler` and mark them published; when the
        handler raises, the batch is retried later (attempts, last_error, backoff) and the
        error is reported in the result, not raised. Raises InvalidInput on a bad batch."""
        check_batch(batch)
        if not callable(handler):
            raise InvalidInput(f"handler must be callable, got {show(handler)}")
        # sync-only: if inspect.iscoroutinefunction(handler):
        # sync-only:     raise InvalidInput(_AWAITABLE_HANDLER)
        async with self._atomic() as conn:
            events: builtins.list[OutboxEvent] = await self._fetch(
                "claim_outbox_events", {"batch": batch}, conn=conn
            )
            if not events:
                return RelayResult(published=0, failed=0)
            ids = [e.id for e in events]
            try:
                await _deliver(handler, events)
            # The handler is the caller's code (a broker client...): whatever it raises
            # means "not delivered", and the events must be kept for a later pass.
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                params = {"ids": ids, "error": error, "max_backoff_seconds": _MAX_BACKOFF_SECONDS}
                await self._fetch("record_outbox_failure", params, conn=conn)
                return RelayResult(published=0, failed=len(ids), error=error)
            published: int = await self._fetch("publish_outbox_events", {"ids": ids}, conn=conn)
        return RelayResult(published=published, failed=0)

    async def prune(
        self, *, older_than: datetime.datetime | datetime.timedelta, batch: int = 1000
    ) -> int:
        """Delete events published before `older_than` (a time, or an age), one bounded
        transaction per batch; the number deleted. Raises InvalidInput on a bad batch."""
        check_batch(batch)
        params = {"cutoff": cutoff_of(older_than), "batch": batch}
        return await self._delete_in_batches("prune_outbox_events", params)


_AWAITABLE_HANDLER = (
    "handler is a coroutine function (or returned an awaitable): the sync face cannot"
    " await it; relay from an async database (flowledger.connect_async) instead"
)


async def _deliver(handler: AsyncRelayHandler, events: list[OutboxEvent]) -> None:
    # The sync type refuses coroutine functions; this catches what slips past a type.
    outcome = handler(events)  # sync: outcome = cast("Callable[..., object]", handler)(events)
    if inspect.isawaitable(outcome):
        await outcome  # sync: raise _refused(outcome)


def _refused(outcome: object) -> InvalidInput:
    """What the sync face raises for an awaitable a handler returned: closed unrun, and
    recorded as a failed delivery (the events stay for a later pass)."""
    if isinstance(outcome, Coroutine):
        outcome.close()
    return InvalidInput(_AWAITABLE_HANDLER)
