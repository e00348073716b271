"""Outbox: events appended in the caller's transaction, drained by a SKIP LOCKED relay."""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Callable

import psycopg

from flowledger.errors import InvalidInput
from flowledger.records.events import NewEvent, OutboxEvent, RelayResult
from flowledger.repositories._checks import (
    as_instant,
    as_int,
    as_interval,
    as_json,
    as_name,
    as_struct,
    show,
)
from flowledger.repositories.base import Connection, Repository, as_uuid

__all__ = ["MAX_AGE", "OutboxRepository", "RelayHandler", "check_batch", "cutoff_of"]

RelayHandler = Callable[[list[OutboxEvent]], object]

_EVENT_TYPE = re.compile(r"^[a-z_]+\.[a-z_]+$")
# A failing consumer is retried after 2, 4, 8... seconds, never more than this apart.
_MAX_BACKOFF_SECONDS = 300.0
_MAX_BATCH = 10_000
# Retention ages and staleness thresholds: a century either way is beyond any real use,
# and keeps now() - age inside the range of a datetime.
MAX_AGE = datetime.timedelta(days=36_525)


class OutboxRepository(Repository):
    """The transactional outbox: append with the state change, relay, prune."""

    def append(self, *, event: NewEvent, conn: Connection | None = None) -> OutboxEvent:
        """The stored event, written on `conn` (the caller's transaction) when given;
        raises InvalidInput on a malformed event type or empty aggregate type."""
        event = as_struct(event, NewEvent, "event")
        event_type = event.event_type
        if not isinstance(event_type, str) or not _EVENT_TYPE.match(event_type):
            raise InvalidInput(
                f"event_type must look like 'execution.completed', got {show(event_type)}"
            )
        if conn is not None and not isinstance(conn, psycopg.Connection):
            raise InvalidInput(f"conn must be a psycopg Connection or None, got {show(conn)}")
        params = {
            "aggregate_type": as_name(event.aggregate_type, "aggregate_type"),
            "aggregate_id": as_uuid(event.aggregate_id, "aggregate id"),
            "event_type": as_name(event_type, "event_type"),
            "payload": as_json(event.payload, "payload", object_only=True),
        }
        stored = self._one("insert_outbox_event", params, OutboxEvent, conn=conn)
        assert stored is not None  # INSERT ... RETURNING yields its row
        return stored

    def relay(self, *, handler: RelayHandler, batch: int = 100) -> RelayResult:
        """Deliver one batch of due events to `handler` and mark them published; when the
        handler raises, the batch is retried later (attempts, last_error, backoff) and the
        error is reported in the result, not raised. Raises InvalidInput on a bad batch."""
        check_batch(batch)
        if not callable(handler):
            raise InvalidInput(f"handler must be callable, got {show(handler)}")
        with self._atomic() as conn:
            events = self._many("claim_outbox_events", {"batch": batch}, OutboxEvent, conn=conn)
            if not events:
                return RelayResult(published=0, failed=0)
            ids = [e.id for e in events]
            try:
                handler(events)
            # The handler is the caller's code (a broker client...): whatever it raises
            # means "not delivered", and the events must be kept for a later pass.
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                params = {"ids": ids, "error": error, "max_backoff_seconds": _MAX_BACKOFF_SECONDS}
                self._execute("record_outbox_failure", params, conn=conn)
                return RelayResult(published=0, failed=len(ids), error=error)
            published = self._execute("publish_outbox_events", {"ids": ids}, conn=conn)
        return RelayResult(published=published, failed=0)

    def list_by_aggregate(
        self, *, aggregate_type: str, aggregate_id: uuid.UUID | str
    ) -> list[OutboxEvent]:
        """Every event of one aggregate, oldest first; raises InvalidInput on a malformed id."""
        params = {
            "aggregate_type": as_name(aggregate_type, "aggregate_type"),
            "aggregate_id": as_uuid(aggregate_id, "aggregate id"),
        }
        return self._many("list_outbox_events_by_aggregate", params, OutboxEvent)

    def prune(
        self, *, older_than: datetime.datetime | datetime.timedelta, batch: int = 1000
    ) -> int:
        """Delete events published before `older_than` (a time, or an age), one bounded
        transaction per batch; the number deleted. Raises InvalidInput on a bad batch."""
        check_batch(batch)
        params = {"cutoff": cutoff_of(older_than), "batch": batch}
        return self._delete_in_batches("prune_outbox_events", params)


def cutoff_of(older_than: datetime.datetime | datetime.timedelta) -> datetime.datetime:
    """The instant meant by `older_than`: itself (timezone-aware), or now minus the age (at
    most MAX_AGE either way); InvalidInput otherwise."""
    if isinstance(older_than, datetime.timedelta):
        age = as_interval(older_than, "older_than", -MAX_AGE, MAX_AGE)
        return datetime.datetime.now(datetime.UTC) - age
    return as_instant(older_than, "older_than")


def check_batch(batch: int) -> None:
    """Refuse a batch size outside 1..10,000 with InvalidInput."""
    as_int(batch, "batch", 1, _MAX_BATCH)
