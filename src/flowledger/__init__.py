"""flowledger: the PostgreSQL persistence layer of a workflow-orchestration platform."""

from __future__ import annotations

from flowledger.aio.database import AsyncDatabase, AsyncPinned, AsyncTransaction, connect_async
from flowledger.database import Database, Pinned, Transaction, connect
from flowledger.errors import (
    Conflict,
    ConnectionRejected,
    DatabaseNotConfigured,
    FlowledgerError,
    InvalidCursor,
    InvalidInput,
    LeaseLost,
    NotFound,
    Retryable,
    StaleWrite,
    Unavailable,
)
from flowledger.repositories.pagination import Page
from flowledger.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AsyncDatabase",
    "AsyncPinned",
    "AsyncTransaction",
    "Conflict",
    "ConnectionRejected",
    "Database",
    "DatabaseNotConfigured",
    "FlowledgerError",
    "InvalidCursor",
    "InvalidInput",
    "LeaseLost",
    "NotFound",
    "Page",
    "Pinned",
    "Retryable",
    "Settings",
    "StaleWrite",
    "Transaction",
    "Unavailable",
    "connect",
    "connect_async",
]
