"""Records of the events aggregate: the transactional outbox."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import msgspec

__all__ = ["NewEvent", "OutboxEvent", "RelayResult"]


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event to announce; `event_type` is "<aggregate>.<event>", e.g. "execution.completed"."""

    aggregate_type: str
    aggregate_id: uuid.UUID
    event_type: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)


class OutboxEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as stored in the outbox."""

    id: uuid.UUID
    aggregate_type: str
    aggregate_id: uuid.UUID
    event_type: str
    payload: dict[str, Any]
    created_at: datetime.datetime
    available_at: datetime.datetime
    published_at: datetime.datetime | None
    attempts: int
    last_error: str | None


class RelayResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one relay pass did: events published, or put back after the handler failed."""

    published: int
    failed: int
    error: str | None = None
