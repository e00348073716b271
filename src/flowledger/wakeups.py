# Generated from src/flowledger/aio/wakeups.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""Wake-ups for waiting workers: a connection of its own that LISTENs on the channel the
engine notifies when steps become claimable.

Every transaction that makes steps claimable (a start, a completion that promotes, a
resume, a retry, a reaper pass that requeues) sends one `NOTIFY flowledger_steps`
(PostgreSQL folds the identical notifications of one transaction into one). A worker
with nothing to claim waits for it instead of sleeping a fixed poll interval. The
notification is a hint: polling stays the truth, a missed one costs latency, never work.
"""

from __future__ import annotations

import math
from typing import Any

import psycopg

from flowledger.errors import InvalidInput, connection_error, translating

__all__ = ["STEPS_CHANNEL", "WakeUps"]

STEPS_CHANNEL = "flowledger_steps"
"""The channel the engine notifies when steps become claimable."""


class WakeUps:
    """A LISTEN connection for one waiting worker; close it (or use it as a context
    manager) when done. One waiter per instance."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    @classmethod
    def open(cls, url: str, conn_kwargs: dict[str, Any]) -> WakeUps:
        """Connect with the pool's settings and LISTEN; raises Unavailable,
        ConnectionRejected."""
        error = None
        try:
            conn = psycopg.Connection.connect(url, **(conn_kwargs | {"autocommit": True}))
        except psycopg.OperationalError as exc:
            error = connection_error(exc, url)  # not chained: libpq's text may hold the password
        if error is not None:
            raise error
        with translating():
            conn.execute(f"LISTEN {STEPS_CHANNEL}")
        return cls(conn)

    def wait(self, timeout: float) -> bool:
        """True as soon as steps may have become claimable (a notification, including one
        that arrived since the last call), False after `timeout` seconds without one.
        Raises InvalidInput (timeout), Unavailable (connection lost)."""
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout < 0
        ):
            raise InvalidInput(f"timeout must be a finite number of seconds >= 0, got {timeout!r}")
        with translating():
            for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                return True
        return False

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> WakeUps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
