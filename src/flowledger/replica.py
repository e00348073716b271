# Generated from src/flowledger/aio/replica.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""`db.replica`: the read methods of every repository, served by a streaming standby.

A replica is a read-only registry (`ReadRepositories`) on a pool of its own: only
reader classes, so a method that writes does not exist on it (`db.replica.steps.claim` is
an AttributeError, and mypy refuses it). Its reads are refused with ReplicaUnavailable,
never sent to the primary instead, while the standby is down, promoted, or lags more than
`replica_max_lag_seconds`. The lag is checked on the connection a read borrows, at most
every `replica_check_seconds`, so most reads cost exactly what they cost on the primary.

This module is the one source of both faces: `flowledger.replica` is generated from it.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Any

import psycopg
import psycopg_pool

from flowledger import urls
from flowledger.errors import (
    InvalidInput,
    ReplicaUnavailable,
    ReplicaWaitTimeout,
    Unavailable,
    connection_error,
    translating,
)
from flowledger.records.replication import ReplicaStatus
from flowledger.repositories._checks import as_number, show
from flowledger.repositories.base import Connection, Cursor, _cursor, record_of
from flowledger.repositories.pagination import CursorCodec
from flowledger.repositories.queries import get_queries
from flowledger.repositories.registry import ReadRepositories
from flowledger.settings import Settings

__all__ = ["Replica", "lsn_of"]

log = logging.getLogger("flowledger.replica")
_clock = time.monotonic
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
# The longest wait_for() accepts, in seconds.
MAX_WAIT = 3600.0
# wait_for() polls the standby from this interval, doubling up to the next.
_FIRST_POLL, _LAST_POLL = 0.001, 0.05


def lsn_of(position: object, what: str = "position") -> int:
    """A WAL position ('0/3000148', as `db.wal_position()` returns it) as a number;
    raises InvalidInput naming `what` for anything else."""
    match = _LSN.fullmatch(position) if isinstance(position, str) else None
    if match is None:
        raise InvalidInput(
            f"{what} must be a WAL position such as '0/3000148' (from db.wal_position()),"
            f" got {show(position)}"
        )
    return int(match.group(1), 16) << 32 | int(match.group(2), 16)


def _status(conn: Connection) -> ReplicaStatus:
    query = get_queries()["stats_replica_status"]
    cur = _cursor(conn)
    cur.execute(query.sql)
    row = cur.fetchone()
    assert row is not None  # a SELECT without FROM yields its row
    status: ReplicaStatus = record_of(query)(*row)
    return status


class _OnReplica:
    """A replica connection for one read: borrowed (after a lag check when one is due) and
    given back; a connection lost on the way makes the error a ReplicaUnavailable."""

    __slots__ = ("_conn", "_replica")

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def __enter__(self) -> Connection:
        self._conn = self._replica._borrow(check=True)
        return self._conn

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._replica._give_back(self._conn, exc)


class _OnReplicaCursor(_OnReplica):
    """The same, handing out the connection's reusable cursor for one statement."""

    __slots__ = ()

    def __enter__(self) -> Cursor:  # type: ignore[override]
        self._conn = self._replica._borrow(check=True)
        return _cursor(self._conn)


class _ReplicaExecutor:
    """Each read borrows a replica connection and gives it back when done."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def connection(self) -> _OnReplica:
        """A replica connection for one repository call."""
        return _OnReplica(self._replica)

    def cursor(self) -> _OnReplicaCursor:
        """The reusable cursor of a replica connection, for one statement."""
        return _OnReplicaCursor(self._replica)


class Replica(ReadRepositories):
    """The read methods of every repository on a streaming standby (`db.replica`): no
    method that writes exists here. A read raises ReplicaUnavailable while the standby is
    down, promoted, or further behind than `replica_max_lag_seconds`."""

    def __init__(
        self, pool: Any, url: str, settings: Settings, codec: CursorCodec, slow: float
    ) -> None:
        self.url = url
        self._pool = pool
        self._max_lag = settings.replica_max_lag_seconds
        self._check_every = settings.replica_check_seconds
        self._borrow_timeout = settings.pool_timeout
        # (when the standby was last checked, why it is unusable or None). Replaced as a
        # whole, so threads sharing the replica never see half an update.
        self._state: tuple[float, str | None] = (-math.inf, None)
        # When a check last found the standby caught up (this process's clock).
        self._caught_up_at = -math.inf
        super().__init__(_ReplicaExecutor(self), codec, slow)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {urls.redact(self.url)}>"

    def open(self, conn_kwargs: dict[str, Any]) -> Replica:
        """Check the server is a standby and fill the pool. Raises InvalidInput (not a
        standby), ConnectionRejected; a standby that cannot be reached is logged and
        its reads raise ReplicaUnavailable until it can."""
        try:
            conn = psycopg.Connection.connect(self.url, **conn_kwargs)
        except psycopg.Error as exc:
            # Returned, not chained: libpq's text may quote the URL, password included.
            error = connection_error(exc, self.url)
        else:
            with conn:
                with translating():
                    status = _status(conn)
            if not status.in_recovery:
                raise InvalidInput(
                    f"replica_url {urls.redact(self.url)} is not a standby (pg_is_in_recovery()"
                    " is false there): give the URL of a streaming replica of the database"
                )
            with translating():
                self._pool.open(wait=True, timeout=self._borrow_timeout)
            return self
        if not isinstance(error, Unavailable):
            raise error
        self._unusable(f"it is unreachable ({error.message})")
        self._pool.open(wait=False)
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Close the replica's pool (`db.close()` does)."""
        self._pool.close(timeout=timeout)

    def status(self) -> ReplicaStatus:
        """The standby's state now (whether it is one, its lag, what it replayed), whatever
        the lag bound; raises ReplicaUnavailable when it cannot be reached."""
        with _Waiting(self) as conn:
            with translating():
                status = _status(conn)
        self._note_caught_up(status)
        return status

    def _note_caught_up(self, status: ReplicaStatus) -> None:
        # Caught up now: what the lag checks bound a later lag by, as their own finding.
        if status.in_recovery and status.lag_seconds == 0:
            self._caught_up_at = _clock()

    def wait_for(self, position: str, *, timeout: float = 5.0) -> None:
        """Return once the standby has replayed `position` (from `db.wal_position()`), so
        that its reads see every write committed before it was taken. Raises
        ReplicaWaitTimeout after `timeout` seconds, ReplicaUnavailable (down, promoted),
        InvalidInput (position, timeout)."""
        target = lsn_of(position)
        deadline = _clock() + as_number(timeout, "timeout", 0, MAX_WAIT)
        with _Waiting(self) as conn:
            delay = _FIRST_POLL
            while True:
                with translating():
                    status = _status(conn)
                if not status.in_recovery or status.replayed is None:
                    raise self._unusable(self._not_standby())
                if lsn_of(status.replayed, "replayed") >= target:
                    self._note_caught_up(status)
                    return
                if _clock() >= deadline:
                    raise ReplicaWaitTimeout(
                        f"the replica had not replayed {position} within {timeout:g} s"
                        f" (replayed up to {status.replayed}): read from the primary"
                    )
                time.sleep(delay)
                delay = min(delay * 2, _LAST_POLL)

    def _borrow(self, *, check: bool) -> Connection:
        checked_at, problem = self._state
        due = _clock() - checked_at >= self._check_every
        if check and problem is not None and not due:
            raise ReplicaUnavailable(problem)
        try:
            conn: Connection = self._pool.getconn(timeout=self._borrow_timeout)
        except psycopg_pool.PoolTimeout as exc:
            problem = f"no connection to it within {self._borrow_timeout:g} s"
            raise self._unusable(problem) from exc
        if check and due:
            try:
                self._check(conn)
            except BaseException:
                self._pool.putconn(conn)
                raise
        return conn

    def _give_back(self, conn: Connection, exc: BaseException | None) -> None:
        lost = exc is not None and conn.broken
        self._pool.putconn(conn)
        if lost:
            raise self._unusable("the connection to it was lost") from exc

    def _check(self, conn: Connection) -> None:
        try:
            status = _status(conn)
        except psycopg.Error as exc:
            text = urls.scrub(str(exc), self.url).strip()
            reason = text.splitlines()[0] if text else type(exc).__name__
            raise self._unusable(f"its lag could not be read ({reason})") from exc
        problem = self._problem(status)
        if problem is not None:
            raise self._unusable(problem)
        if self._state[1] is not None:
            log.info("the replica %s is usable again", urls.redact(self.url))
        self._state = (_clock(), None)

    def _problem(self, status: ReplicaStatus) -> str | None:
        if not status.in_recovery:
            return self._not_standby()
        if status.lag_seconds == 0:
            self._caught_up_at = _clock()
            return None
        # The age of the last replayed transaction overstates the lag of a standby whose
        # primary was idle before its latest write: caught up when last checked, it cannot
        # be further behind than the time since then.
        since_caught_up = _clock() - self._caught_up_at
        lag = min(since_caught_up, math.inf if status.lag_seconds is None else status.lag_seconds)
        if lag == math.inf:
            return "it is not caught up and has replayed no transaction since it started"
        if lag > self._max_lag:
            return (
                f"it is {lag:.1f} s behind its primary, more than"
                f" replica_max_lag_seconds={self._max_lag:g}"
            )
        return None

    def _not_standby(self) -> str:
        return "it is no longer a standby (pg_is_in_recovery() is false: promoted?)"

    def _unusable(self, problem: str) -> ReplicaUnavailable:
        """The error to raise for `problem`, remembered until the next check is due and
        logged when the replica was usable until now."""
        message = f"the replica {urls.redact(self.url)} cannot serve reads: {problem}"
        if self._state[1] is None:
            log.warning(
                "%s; its reads raise ReplicaUnavailable until it recovers (checked at most"
                " every %g s)",
                message,
                self._check_every,
            )
        self._state = (_clock(), message)
        return ReplicaUnavailable(message)


class _Waiting(_OnReplica):
    """A replica connection for wait_for() and status(): no lag check (they are checks)."""

    __slots__ = ()

    def __enter__(self) -> Connection:
        self._conn = self._replica._borrow(check=False)
        return self._conn
