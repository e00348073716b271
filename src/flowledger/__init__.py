"""flowledger: the PostgreSQL persistence layer of a workflow-orchestration platform."""

from __future__ import annotations

from flowledger.database import Database, Pinned, Settings, Transaction, connect
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

__version__ = "0.1.0"

__all__ = [
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
]
