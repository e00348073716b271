"""`flowledger.connect()`: the pool, its settings, transactions, health and stats."""

from __future__ import annotations

import difflib
import hashlib
import os
import select
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import msgspec
import psycopg
from psycopg.adapt import Loader
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import ConnectionPool

from flowledger import urls
from flowledger.errors import (
    DatabaseNotConfigured,
    FlowledgerError,
    InvalidInput,
    MigrationError,
    Unavailable,
    connection_error,
    translating,
)
from flowledger.repositories.base import ConnectionExecutor, PoolExecutor
from flowledger.repositories.pagination import CursorCodec, UnkeyedCodec
from flowledger.repositories.queries import get_queries
from flowledger.repositories.registry import Repositories
from flowledger.wakeups import WakeUps

_ENV_PREFIX = "FLOWLEDGER_"
# FLOWLEDGER_* variables that are not connection settings: the embedded server's home,
# and the test suite's own namespace. Any other unknown FLOWLEDGER_* variable is refused.
_OTHER_VARIABLES = frozenset({"FLOWLEDGER_HOME"})
_OTHER_PREFIXES = ("FLOWLEDGER_TEST_",)
# Settings whose values are secrets: never echoed in a message or a repr.
_SECRET_FIELDS = frozenset({"url", "cursor_secret"})

NOT_CONFIGURED = (
    "no database configured: pass connect(url=...), set FLOWLEDGER_URL or DATABASE_URL,"
    " or call connect(embedded=True) for the embedded development server"
)
_MIN_CURSOR_SECRET = 32


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Connection and pool settings; every field can come from `FLOWLEDGER_<NAME>`."""

    url: str | None = None
    min_size: int = 1
    max_size: int = 10
    pool_timeout: float = 30.0  # seconds a caller waits for a free connection
    max_idle: float = 600.0  # seconds an idle connection is kept above min_size
    max_lifetime: float = 3600.0  # seconds before a connection is recycled
    statement_timeout: float | None = 30.0  # seconds; None keeps the server's default
    application_name: str = "flowledger"
    # psycopg's server-side prepare threshold; None turns prepared statements off,
    # which PgBouncer < 1.21 in transaction mode requires.
    prepare_threshold: int | None = 5
    connect_attempts: int = 5
    connect_backoff: float = 0.25  # first wait between attempts, doubled each time
    connect_timeout: int = 10
    # Key of the HMAC that makes pagination cursors tamper-evident. None: the database's
    # own random key (table cursor_key, made by its migrations), shared by every process
    # on that database; a secret of your own lets several databases accept each other's.
    cursor_secret: str | None = None

    def __post_init__(self) -> None:
        if self.min_size < 0 or self.max_size < 1 or self.min_size > self.max_size:
            raise InvalidInput(
                "pool sizes must satisfy 0 <= min_size <= max_size, max_size >= 1:"
                f" min_size={self.min_size}, max_size={self.max_size}"
            )
        if self.pool_timeout <= 0 or self.connect_attempts < 1:
            raise InvalidInput("pool_timeout must be > 0 and connect_attempts >= 1")
        if self.cursor_secret is not None and len(self.cursor_secret) < _MIN_CURSOR_SECRET:
            # The value itself stays out of the message: it is a secret.
            raise InvalidInput(f"cursor_secret must be at least {_MIN_CURSOR_SECRET} characters")

    def __repr__(self) -> str:
        shown = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name == "url" and value:
                value = urls.redact(value)
            elif name in _SECRET_FIELDS and value:
                value = "***"
            shown.append(f"{name}={value!r}")
        return f"Settings({', '.join(shown)})"


def settings_from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from keyword arguments, else `FLOWLEDGER_*`, the URL also from `DATABASE_URL`.

    Raises InvalidInput naming an unknown setting, an unknown `FLOWLEDGER_*` variable, or
    a value of the wrong type (never echoing a URL or a secret).
    """
    env = os.environ if environ is None else environ
    fields = {f.name for f in msgspec.structs.fields(Settings)}
    for name in overrides:
        if name not in fields:
            raise InvalidInput(f"unknown setting {name!r}{_suggest(name, fields)}")
    sources: dict[str, str] = {}
    raw: dict[str, Any] = {}
    for key, value in env.items():
        if not key.startswith(_ENV_PREFIX) or key in _OTHER_VARIABLES:
            continue
        if key.startswith(_OTHER_PREFIXES):
            continue
        name = key[len(_ENV_PREFIX) :].lower()
        if name not in fields:
            raise InvalidInput(
                f"unknown environment variable {key}{_suggest(name, fields, env=True)}"
            )
        if name != "url":  # the URL is resolved below, in its documented order
            raw[name] = None if value.lower() in {"", "none", "null"} else value
            sources[name] = key
    for name, value in overrides.items():
        raw[name] = value
        sources[name] = f"setting {name!r}"
    resolved = urls.resolve(overrides.get("url"), environ=env)
    raw["url"] = resolved.url if resolved else None
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        field = str(exc).rpartition("$.")[2].strip("`' ")
        where = sources.get(field, field)
        if field in _SECRET_FIELDS:
            raise InvalidInput(f"invalid value for {where}") from None
        raise InvalidInput(f"invalid value for {where}: {exc}") from None


def _suggest(name: str, fields: set[str], *, env: bool = False) -> str:
    close = difflib.get_close_matches(name, sorted(fields), n=1)
    if not close:
        return ""
    hint = _ENV_PREFIX + close[0].upper() if env else close[0]
    return f" (did you mean {hint}?)"


_decode_json: Callable[[bytes | bytearray | memoryview], Any] = msgspec.json.decode


class _JsonTextLoader(Loader):
    """json/jsonb in text format, decoded by msgspec with no Python frame per value.

    psycopg's C row loader caches `loader.load`; as a staticmethod that is msgspec's
    builtin decoder itself, called straight on the value's buffer. `set_json_loads` wraps
    it in a Python method instead: measured +23 % on 50-row pages of executions (3 jsonb
    columns a row) over `set_json_loads(msgspec.json.decode)`.
    """

    # The override is deliberate: a plain function, not a method, is the point.
    load = staticmethod(_decode_json)  # type: ignore[assignment]


def _configure(conn: psycopg.Connection[Any]) -> None:
    # jsonb in and out through msgspec (PERF-NOTES: +79 % on pages over the stdlib);
    # set_json_loads still serves the binary format, the loader above the text one.
    set_json_loads(msgspec.json.decode, conn)
    set_json_dumps(msgspec.json.encode, conn)
    conn.adapters.register_loader("jsonb", _JsonTextLoader)
    conn.adapters.register_loader("json", _JsonTextLoader)


class _OnConnection(Repositories):
    """The repositories bound to one connection, which `connection` exposes."""

    def __init__(self, conn: psycopg.Connection[Any], codec: CursorCodec) -> None:
        super().__init__(ConnectionExecutor(conn), codec)
        self.connection = conn


class Transaction(_OnConnection):
    """The same repositories, every call on one connection inside one transaction."""

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A nested block: a savepoint, rolled back alone when the block raises."""
        with translating(), self.connection.transaction():
            yield self


class Pinned(_OnConnection):
    """The same repositories, every call on one borrowed connection and no transaction:
    each statement commits on its own, as with the pool, minus the borrow per call."""

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A transaction on the pinned connection: commit on success, rollback on error."""
        with translating(), self.connection.transaction():
            yield Transaction(self.connection, self._codec)


def _check_on_borrow(conn: psycopg.Connection[Any]) -> None:
    # A round trip per borrow (ConnectionPool.check_connection) would double the cost of
    # a point lookup. A server that restarted or terminated the backend has already sent
    # its FATAL message and closed the socket, so an idle connection whose socket is
    # readable is the one worth a real check; a healthy idle one has nothing to read.
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN)
    if poller.poll(0):
        ConnectionPool.check_connection(conn)


class Database(Repositories):
    """A pool of connections and the repositories that use it. Thread-safe."""

    def __init__(self, settings: Settings) -> None:
        if not settings.url:
            raise DatabaseNotConfigured(NOT_CONFIGURED)
        self.settings = settings
        self.url = urls.validate(settings.url)
        options = "-c TimeZone=UTC"  # psycopg maps only the literal name UTC to timezone.utc
        if settings.statement_timeout is not None:
            options += f" -c statement_timeout={int(settings.statement_timeout * 1000)}"
        self._conn_kwargs: dict[str, Any] = {
            # A lone statement needs no BEGIN/COMMIT round trips; multi-statement work
            # opens an explicit transaction (`_atomic()`, `db.transaction()`).
            "autocommit": True,
            "options": options,
            "application_name": settings.application_name,
            "prepare_threshold": settings.prepare_threshold,
            "connect_timeout": settings.connect_timeout,
        }
        self._pool = ConnectionPool(
            self.url,
            min_size=settings.min_size,
            max_size=settings.max_size,
            timeout=settings.pool_timeout,
            max_idle=settings.max_idle,
            max_lifetime=settings.max_lifetime,
            kwargs=self._conn_kwargs,
            configure=_configure,
            check=_check_on_borrow,
            open=False,
            name="flowledger",
        )
        # Without a secret of its own, the key is the database's, read by open().
        codec: CursorCodec = UnkeyedCodec()
        if settings.cursor_secret is not None:
            codec = CursorCodec(hashlib.sha256(settings.cursor_secret.encode()).digest())
        super().__init__(PoolExecutor(self._pool), codec)

    def __repr__(self) -> str:
        return f"<Database {urls.redact(self.url)} max_size={self.settings.max_size}>"

    def open(self) -> Database:
        """Wait until the server answers (bounded retries with backoff), then fill the pool.

        Raises Unavailable after the last attempt, ConnectionRejected at once when the
        server refuses the login, InvalidInput at once for an invalid connection option.
        """
        s = self.settings
        delay = s.connect_backoff
        for attempt in range(1, s.connect_attempts + 1):
            error = self._try_connect()
            if error is None:
                break
            if not isinstance(error, Unavailable):
                raise error
            if attempt == s.connect_attempts:
                raise Unavailable(f"{error.message} (after {attempt} attempts)")
            time.sleep(delay)
            delay *= 2
        with translating():
            self._pool.open(wait=True, timeout=s.pool_timeout)
        if s.cursor_secret is None:
            try:
                self._codec = CursorCodec(self._cursor_key())
            except FlowledgerError:
                # A Database that failed to open holds no connections.
                self._pool.close()
                raise
        return self

    def _try_connect(self) -> FlowledgerError | None:
        try:
            psycopg.connect(self.url, **self._conn_kwargs).close()
        except psycopg.Error as exc:
            # Returned, not raised from exc: libpq's own text may quote the URL, password
            # included, and a chained exception would carry it into tracebacks and logs.
            return connection_error(exc, self.url)
        return None

    def _cursor_key(self) -> bytes:
        with translating(), self._pool.connection() as conn:
            try:
                row = conn.execute(get_queries()["get_cursor_key"].sql).fetchone()
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

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A block whose repository calls share one transaction: commit on success,
        rollback on any exception; `tx.transaction()` nests as a savepoint."""
        with translating(), self._pool.connection() as conn, conn.transaction():
            yield Transaction(conn, self._codec)

    @contextmanager
    def pinned(self) -> Iterator[Pinned]:
        """A block whose repository calls all run on one pooled connection, outside any
        transaction: for loops of many small calls (a request handler, a worker batch)."""
        with translating(), self._pool.connection() as conn:
            yield Pinned(conn, self._codec)

    def wake_ups(self) -> WakeUps:
        """A connection of its own LISTENing for claimable steps: `wait(timeout)` returns
        when a start, completion, resume, retry or reaper pass made steps claimable, or
        after the timeout. Close it when done. Raises Unavailable."""
        return WakeUps.open(self.url, self._conn_kwargs)

    def health(self, timeout: float = 2.0) -> dict[str, str]:
        """`{"postgres": "ok"}` or `{"postgres": "error: <message>"}`; never raises."""
        try:
            with self._pool.connection(timeout=timeout) as conn:
                conn.execute("SELECT 1")
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

    def close(self, timeout: float = 5.0) -> None:
        """Drain: wait up to `timeout` for borrowed connections, then close the pool."""
        self._pool.close(timeout=timeout)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(url: str | None = None, *, embedded: bool = False, **settings: Any) -> Database:
    """Open a Database on `url`, else `FLOWLEDGER_URL`, else `DATABASE_URL`; with
    `embedded=True` (and no URL) on the embedded server, started when needed.

    Settings come from keyword arguments, then `FLOWLEDGER_*` environment variables.
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
    return Database(settings_from_env(**settings)).open()
