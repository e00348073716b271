"""flowledger: the PostgreSQL persistence layer of a workflow-orchestration platform."""

from __future__ import annotations

from flowledger.aio.database import AsyncDatabase, AsyncPinned, AsyncTransaction, connect_async
from flowledger.aio.replica import AsyncReplica
from flowledger.database import Database, Pinned, Transaction, connect
from flowledger.errors import (
    Conflict,
    ConnectionRejected,
    DatabaseNotConfigured,
    ExtraNotInstalled,
    FlowledgerError,
    InvalidCursor,
    InvalidInput,
    LeaseLost,
    NotFound,
    ReplicaUnavailable,
    ReplicaWaitTimeout,
    Retryable,
    StaleWrite,
    Unavailable,
)
from flowledger.replica import Replica
from flowledger.repositories.pagination import Page
from flowledger.settings import Settings

# The one place the version is written: pyproject.toml reads it from here (hatch).
__version__ = "0.2.0"

__all__ = [
    "AsyncDatabase",
    "AsyncPinned",
    "AsyncReplica",
    "AsyncTransaction",
    "Conflict",
    "ConnectionRejected",
    "Database",
    "DatabaseNotConfigured",
    "ExtraNotInstalled",
    "FlowledgerError",
    "InvalidCursor",
    "InvalidInput",
    "LeaseLost",
    "NotFound",
    "Page",
    "Pinned",
    "Replica",
    "ReplicaUnavailable",
    "ReplicaWaitTimeout",
    "Retryable",
    "Settings",
    "StaleWrite",
    "Transaction",
    "Unavailable",
    "connect",
    "connect_async",
]
