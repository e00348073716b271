"""`flowledger.connect_async()`: the pool, transactions, health and stats, for asyncio.

This module is the one source of both faces: `flowledger.database` (`connect()`,
`Database`) is generated from it by .ci/async_to_sync.py.
"""

from __future__ import annotations

import asyncio  # sync: import time
import hashlib
import logging
import select
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Self

import psycopg
from psycopg.abc import Params, Query
from psycopg.copy import AsyncCopy, AsyncWriter
from psycopg.sql import SQL, Composable, Composed
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
    startup_statements,
    timeout_ms,
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

# What PgBouncer answers a login that carries `options` it was not told to ignore.
_REFUSED_OPTIONS = "unsupported startup parameter"
_POOLER_HINT = (
    "behind a transaction-mode pooler (PgBouncer pool_mode=transaction) set"
    " pooler='transaction' (FLOWLEDGER_POOLER=transaction); behind a session-mode one,"
    " pooler='session'"
)


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


# psycopg's execute is overloaded on the query's type (template strings take no params);
# the pooled cursor passes on whatever it was given, which the implementation accepts.
_EXECUTE: Callable[..., Any] = psycopg.AsyncClientCursor.execute


def _behind(prefix: str, query: Query) -> Query:
    """`query` preceded by the statement `prefix`, in the query's own type."""
    if isinstance(query, str):
        return prefix + query
    if isinstance(query, bytes):
        return prefix.encode() + query
    if isinstance(query, Composable):
        return Composed([SQL(prefix), query])
    raise InvalidInput(
        "behind a transaction pooler a statement is a str, bytes or psycopg.sql object,"
        f" not {type(query).__name__}"
    )


class AsyncPooledCursor(psycopg.AsyncClientCursor[Any]):
    """The cursor of a connection behind a transaction pooler (pooler="transaction"): each
    statement goes out behind `SELECT set_config('statement_timeout', ..., true)` (a `SET
    LOCAL`) in one simple-protocol query, its parameters bound client-side as psycopg's
    ClientCursor binds them: the two run in one transaction on whichever server connection
    the pooler lends, in one round trip, and nothing outlives it. (A pipeline of the two as
    separate statements measured 2.1x a plain lookup; this, 1.5x.) A COPY gets the
    timeout first, inside the transaction it runs in."""

    timeout_sql: ClassVar[str] = ""

    @classmethod
    def bound(cls, milliseconds: int) -> type[AsyncPooledCursor]:
        """This class, sending a timeout of `milliseconds` with each statement."""
        sql = f"SELECT set_config('statement_timeout', '{int(milliseconds)}', true);"
        return type(cls.__name__, (cls,), {"timeout_sql": sql})

    async def execute(
        self,
        query: Query,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Self:
        await _EXECUTE(
            self, _behind(self.timeout_sql, query), params, prepare=prepare, binary=binary
        )
        self.nextset()  # the statement's own result, after set_config's
        return self

    @asynccontextmanager
    async def copy(
        self,
        statement: Query,
        params: Params | None = None,
        *,
        writer: AsyncWriter | None = None,
    ) -> AsyncIterator[AsyncCopy]:
        # A plain cursor: this class's execute would send the timeout twice.
        await psycopg.AsyncCursor(self.connection).execute(self.timeout_sql.encode())
        async with super().copy(statement, params, writer=writer) as copy:
            yield copy


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
        self._startup = startup_statements(settings)
        self.listen_url = _named_url("listen_url", settings.listen_url)
        # The cursor class of every pooled connection: behind a transaction pooler one
        # that sends the statement timeout with each statement; flowledger.otel's traced
        # one (derived from it) once instrumented. Set when a connection is made, so a
        # call pays nothing for the choice.
        self._cursor_base: type[psycopg.AsyncCursor[Any]] = psycopg.AsyncCursor
        timeout = timeout_ms(settings)
        if settings.pooler == "transaction" and timeout is not None:
            self._cursor_base = AsyncPooledCursor.bound(timeout)
        self._cursor_factory: type[psycopg.AsyncCursor[Any]] | None = None
        if self._cursor_base is not psycopg.AsyncCursor:
            self._cursor_factory = self._cursor_base
        self._pool = self._new_pool(self.url, "flowledger")
        self._replica_url = _named_url("replica_url", settings.replica_url)
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
        for statement in self._startup:
            await psycopg.AsyncCursor(conn).execute(statement.encode())
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
            try:
                return await self._check_route(conn)
            finally:
                await conn.close()
        except psycopg.Error as exc:
            # Returned, not raised from exc: libpq's own text may quote the URL, password
            # included, and a chained exception would carry it into tracebacks and logs.
            error = connection_error(exc, self.url)
            if _REFUSED_OPTIONS in str(exc) and self.settings.pooler is None:
                return InvalidInput(f"{error.message}; {_POOLER_HINT}")
            return error

    async def _check_route(self, conn: psycopg.AsyncConnection[Any]) -> FlowledgerError | None:
        """None when `conn` reaches PostgreSQL as the settings assume; else the error that
        says what to set. Best effort, one round trip when the pool opens."""
        # pg_settings gives the timeout in its unit (ms) as a number, not '30s'.
        cur = await conn.execute(
            "SELECT pg_backend_pid(), current_setting('TimeZone'), setting::bigint"
            " FROM pg_settings WHERE name = 'statement_timeout'"
        )
        row = await cur.fetchone()
        assert row is not None
        pid, zone, timeout = row
        where = urls.redact(self.url)
        if self.settings.pooler is None and pid != conn.info.backend_pid:
            # A pooler answers the login itself, with a process id of its own.
            return InvalidInput(
                f"{where} is a connection pooler (the server process {pid} is not the"
                f" {conn.info.backend_pid} the login reported); {_POOLER_HINT}"
            )
        if "options" not in self._conn_kwargs:
            return None
        wanted = timeout_ms(self.settings)
        if zone != "UTC" or (wanted is not None and timeout != wanted):
            return InvalidInput(
                f"{where} dropped the connection's startup options (TimeZone {zone!r},"
                f" statement_timeout {timeout} ms): a pooler told to ignore them;"
                f" {_POOLER_HINT}"
            )
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
        after the timeout. Close it when done. It connects to `listen_url` when set.
        Raises Unavailable; InvalidInput behind a transaction pooler without
        `listen_url` (LISTEN needs a session)."""
        if self.listen_url is not None:
            return await AsyncWakeUps.open(
                self.listen_url, connection_kwargs(self.settings, session=True)
            )
        if self.settings.pooler == "transaction":
            raise InvalidInput(
                "wake-ups LISTEN, which needs a session of its own: a transaction pooler"
                " hands the connection to others between statements, and notifications"
                " would go to whoever holds it; set listen_url (FLOWLEDGER_LISTEN_URL) to"
                " a direct URL of the same database"
            )
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


def _named_url(name: str, url: str | None) -> str | None:
    """The libpq form of the URL of setting `name`; InvalidInput naming it when malformed."""
    if url is None:
        return None
    try:
        return urls.validate(url)
    except InvalidInput as exc:
        raise InvalidInput(f"{name}: {exc.message}") from None


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
