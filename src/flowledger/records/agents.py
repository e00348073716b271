"""Records of the agents aggregate: client sessions and configuration entries."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import msgspec

__all__ = ["Configuration", "Session"]


class Session(msgspec.Struct, frozen=True, gc=False):
    """A client's session: active until closed or deactivated for a stale heartbeat."""

    id: uuid.UUID
    client_id: str
    user_id: uuid.UUID | None
    is_active: bool
    last_heartbeat: datetime.datetime
    metadata: dict[str, Any]
    created_at: datetime.datetime
    updated_at: datetime.datetime


class Configuration(msgspec.Struct, frozen=True, gc=False):
    """One configuration entry: a dotted key, its JSON value and the version it is at."""

    key: str
    value: Any
    version: int
    description: str
    created_at: datetime.datetime
    updated_at: datetime.datetime
