"""`flowledger.connect_async()`: the pool, transactions, health and stats, for asyncio.

This module is the one source of both faces: `flowledger.database` (`connect()`,
`Database`) is generated from it by .ci/async_to_sync.py.
"""

from __future__ import annotations

import asyncio  # sync: import time
import hashlib
import logging
import select
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from flowledger import urls
from flowledger.aio.replica import AsyncReplica
from flowledger.aio.repositories.base import (
    AsyncConnectionExecutor,
    AsyncPoolExecutor,
    slow_threshold,
)
from flowledger.aio.repositories.registry import AsyncRepositories
from flowledger.aio.wakeups import AsyncWakeUps
from flowledger.errors import (
    DatabaseNotConfigured,
    FlowledgerError,
    InvalidInput,
    MigrationError,
    Unavailable,
    connection_error,
    translating,
)
from flowledger.repositories.pagination import CursorCodec, UnkeyedCodec
from flowledger.repositories.queries import get_queries
from flowledger.settings import (
    NOT_CONFIGURED,
    Settings,
    configure,
    connection_kwargs,
    settings_from_env,
)

__all__ = [
    "AsyncDatabase",
    "AsyncPinned",
    "AsyncReplica",
    "AsyncTransaction",
    "Settings",
    "connect_async",
    "settings_from_env",
]


log = logging.getLogger("flowledger.pool")


class _AsyncOnConnection(AsyncRepositories):
    """The repositories bound to one connection, which `connection` exposes."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], codec: CursorCodec, slow: float) -> None:
        super().__init__(AsyncConnectionExecutor(conn), codec, slow)
        self.connection = conn


class AsyncTransaction(_AsyncOnConnection):
    """The same repositories, every call on one connection inside one transaction."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncTransaction]:
        """A nested block: a savepoint, rolled back alone when the block raises."""
        with translating():
            async with self.connection.transaction():
                yield self


class AsyncPinned(_AsyncOnConnection):
    """The same repositories, every call on one borrowed connection and no transaction:
    each statement commits on its own, as with the pool, minus the borrow per call."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncTransaction]:
        """A transaction on the pinned connection: commit on success, rollback on error."""
        with translating():
            async with self.connection.transaction():
                yield AsyncTransaction(self.connection, self._codec, self._slow)


async def _check_on_borrow(conn: psycopg.AsyncConnection[Any]) -> None:
    # A round trip per borrow (the pool's check_connection) would double the cost of a
    # point lookup. A server that restarted or terminated the backend has already sent
    # its FATAL message and closed the socket, so an idle connection whose socket is
    # readable is the one worth a real check; a healthy idle one has nothing to read.
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN)
    if poller.poll(0):
        try:
            await AsyncConnectionPool.check_connection(conn)
        except psycopg.Error as exc:
            log.warning(
                "a pooled connection was lost (%s); the pool replaces it", type(exc).__name__
            )
            raise


class _AsyncPool(AsyncConnectionPool):
    """The pool, knowing after how long a wait for a connection is worth a warning."""

    wait_warning = 1.0


class AsyncDatabase(AsyncRepositories):
    """A pool of connections and the repositories that use it. Safe to share between
    tasks (the sync face: between threads)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.url:
            raise DatabaseNotConfigured(NOT_CONFIGURED)
        self.settings = settings
        self.url = urls.validate(settings.url)
        self._conn_kwargs = connection_kwargs(settings)
        # The cursor class of every pooled connection: flowledger.otel's traced one once
        # instrumented. Set when a connection is made, so a call pays nothing for it.
        self._cursor_factory: type[psycopg.AsyncCursor[Any]] | None = None
        self._pool = self._new_pool(self.url, "flowledger")
        self._replica_url = _replica_url(settings.replica_url)
        # Made by open(), once the cursor key (which the replica shares) is known.
        self._replica: AsyncReplica | None = None
        # Without a secret of its own, the key is the database's, read by open().
        codec: CursorCodec = UnkeyedCodec()
        if settings.cursor_secret is not None:
            codec = CursorCodec(hashlib.sha256(settings.cursor_secret.encode()).digest())
        super().__init__(
            AsyncPoolExecutor(self._pool), codec, slow_threshold(settings.slow_query_seconds)
        )

    def _new_pool(self, url: str, name: str) -> _AsyncPool:
        s = self.settings
        pool = _AsyncPool(
            url,
            min_size=s.min_size,
            max_size=s.max_size,
            timeout=s.pool_timeout,
            max_idle=s.max_idle,
            max_lifetime=s.max_lifetime,
            kwargs=self._conn_kwargs,
            configure=self._configure,
            check=_check_on_borrow,
            open=False,
            name=name,
        )
        pool.wait_warning = s.pool_wait_warning_seconds
        return pool

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"<{name} {urls.redact(self.url)} max_size={self.settings.max_size}>"

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        configure(conn)
        if self._cursor_factory is not None:
            conn.cursor_factory = self._cursor_factory

    async def open(self) -> AsyncDatabase:
        """Wait until the server answers (bounded retries with backoff), then fill the pool.

        Raises Unavailable after the last attempt, ConnectionRejected at once when the
        server refuses the login, InvalidInput at once for an invalid connection option.
        """
        s = self.settings
        delay = s.connect_backoff
        for attempt in range(1, s.connect_attempts + 1):
            error = await self._try_connect()
            if error is None:
                break
            if not isinstance(error, Unavailable):
                raise error
            if attempt == s.connect_attempts:
                raise Unavailable(f"{error.message} (after {attempt} attempts)")
            log.warning(
                "attempt %d of %d to reach %s failed (%s); retrying in %.2f s",
                attempt,
                s.connect_attempts,
                urls.redact(self.url),
                error.message,
                delay,
            )
            await asyncio.sleep(delay)  # sync: time.sleep(delay)
            delay *= 2
        with translating():
            await self._pool.open(wait=True, timeout=s.pool_timeout)
        try:
            if s.cursor_secret is None:
                self._codec = CursorCodec(await self._cursor_key())
            if self._replica_url is not None:
                self._replica = await self._open_replica(self._replica_url)
        except FlowledgerError:
            # A database that failed to open holds no connections.
            await self._pool.close()
            raise
        return self

    async def _open_replica(self, url: str) -> AsyncReplica:
        pool = self._new_pool(url, "flowledger-replica")
        replica = AsyncReplica(pool, url, self.settings, self._codec, self._slow)
        try:
            return await replica.open(self._conn_kwargs)
        except FlowledgerError:
            await pool.close()
            raise

    @property
    def replica(self) -> AsyncReplica:
        """The read methods of every repository on the streaming standby `replica_url`
        (no method that writes); raises DatabaseNotConfigured without one: reads are never
        sent to the primary in its place."""
        if self._replica is None:
            raise DatabaseNotConfigured(
                "no read replica configured: pass connect(..., replica_url=...) or set"
                " FLOWLEDGER_REPLICA_URL"
            )
        return self._replica

    async def wal_position(self) -> str:
        """The primary's WAL position now, e.g. '0/3000148'. Taken after a write committed
        and given to `db.replica.wait_for()`, it makes the replica's reads see that write.
        Raises Unavailable."""
        with translating():
            async with self._pool.connection() as conn:
                cur = await conn.execute(get_queries()["select_wal_position"].sql)
                row = await cur.fetchone()
        assert row is not None  # a SELECT without FROM yields its row
        return str(row[0])

    async def _try_connect(self) -> FlowledgerError | None:
        try:
            conn = await psycopg.AsyncConnection.connect(self.url, **self._conn_kwargs)
            await conn.close()
        except psycopg.Error as exc:
            # Returned, not raised from exc: libpq's own text may quote the URL, password
            # included, and a chained exception would carry it into tracebacks and logs.
            return connection_error(exc, self.url)
        return None

    async def _cursor_key(self) -> bytes:
        with translating():
            async with self._pool.connection() as conn:
                try:
                    cur = await conn.execute(get_queries()["get_cursor_key"].sql)
                    row = await cur.fetchone()
                except psycopg.errors.UndefinedTable:
                    row = None
        if row is None:
            raise MigrationError(
                f"{urls.redact(self.url)} has no cursor key (table cursor_key missing or empty):"
                " run flowledger migrate apply; if the row was deleted, INSERT INTO cursor_key"
                " DEFAULT VALUES makes a new key (cursors issued before are then refused);"
                " or set cursor_secret"
            )
        return bytes(row[0])

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncTransaction]:
        """A block whose repository calls share one transaction: commit on success,
        rollback on any exception; `tx.transaction()` nests as a savepoint."""
        with translating():
            async with self._pool.connection() as conn, conn.transaction():
                yield AsyncTransaction(conn, self._codec, self._slow)

    @asynccontextmanager
    async def pinned(self) -> AsyncIterator[AsyncPinned]:
        """A block whose repository calls all run on one pooled connection, outside any
        transaction: for loops of many small calls (a request handler, a worker batch)."""
        with translating():
            async with self._pool.connection() as conn:
                yield AsyncPinned(conn, self._codec, self._slow)

    async def wake_ups(self) -> AsyncWakeUps:
        """A connection of its own LISTENing for claimable steps: `wait(timeout)` returns
        when a start, completion, resume, retry or reaper pass made steps claimable, or
        after the timeout. Close it when done. Raises Unavailable."""
        return await AsyncWakeUps.open(self.url, self._conn_kwargs)

    async def health(self, timeout: float = 2.0) -> dict[str, str]:
        """`{"postgres": "ok"}` or `{"postgres": "error: <message>"}`; never raises."""
        try:
            async with self._pool.connection(timeout=timeout) as conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, OSError) as exc:
            text = urls.scrub(str(exc), self.url).strip()
            message = text.splitlines()[0] if text else type(exc).__name__
            return {"postgres": f"error: {message}"}
        return {"postgres": "ok"}

    def stats(self) -> dict[str, int]:
        """Pool metrics: size, idle, waiting, connections made/lost, wait time (ms)..."""
        raw = self._pool.get_stats()
        return {
            "size": raw.get("pool_size", 0),
            "idle": raw.get("pool_available", 0),
            "waiting": raw.get("requests_waiting", 0),
            "min_size": raw.get("pool_min", self.settings.min_size),
            "max_size": raw.get("pool_max", self.settings.max_size),
            "connections_made": raw.get("connections_num", 0),
            "connections_lost": raw.get("connections_lost", 0),
            "connection_errors": raw.get("connections_errors", 0),
            "requests": raw.get("requests_num", 0),
            "requests_queued": raw.get("requests_queued", 0),
            "requests_timed_out": raw.get("requests_errors", 0),
            "wait_ms": raw.get("requests_wait_ms", 0),
            "usage_ms": raw.get("usage_ms", 0),
        }

    async def close(self, timeout: float = 5.0) -> None:
        """Drain: wait up to `timeout` for borrowed connections, then close the pool (and
        the replica's)."""
        if self._replica is not None:
            await self._replica.close(timeout=timeout)
        await self._pool.close(timeout=timeout)

    async def __aenter__(self) -> AsyncDatabase:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _replica_url(url: str | None) -> str | None:
    """The libpq form of the replica's URL; InvalidInput naming replica_url when malformed."""
    if url is None:
        return None
    try:
        return urls.validate(url)
    except InvalidInput as exc:
        raise InvalidInput(f"replica_url: {exc.message}") from None


async def connect_async(
    url: str | None = None, *, embedded: bool = False, **settings: Any
) -> AsyncDatabase:
    """Open a database on `url`, else `FLOWLEDGER_URL`, else `DATABASE_URL`; with
    `embedded=True` (and no URL) on the embedded server, started when needed.

    Settings come from keyword arguments, then `FLOWLEDGER_*` environment variables;
    `replica_url` (`FLOWLEDGER_REPLICA_URL`) adds `db.replica`, refused (InvalidInput)
    when that server is not a standby.
    Raises DatabaseNotConfigured without a URL, InvalidInput for an unknown setting or a
    malformed URL, ConnectionRejected when the login is refused, and Unavailable when the
    server cannot be reached after the configured retries.
    """
    if url is not None:
        settings["url"] = url
    if embedded:
        if settings.get("url"):
            raise InvalidInput("pass either url or embedded=True, not both")
        from flowledger.tools.devserver import EmbeddedServer

        settings["url"] = EmbeddedServer().ensure_running()
    return await AsyncDatabase(settings_from_env(**settings)).open()
