"""`flowledger.connect()`: the pool, its settings, transactions, health and stats."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import msgspec
import psycopg
from psycopg.adapt import Loader
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import ConnectionPool

from flowledger.errors import (
    FlowledgerError,
    InvalidInput,
    MigrationError,
    Unavailable,
    translating,
)
from flowledger.migrate import redact, to_libpq_url
from flowledger.repositories.base import ConnectionExecutor, PoolExecutor
from flowledger.repositories.pagination import CursorCodec, UnkeyedCodec
from flowledger.repositories.queries import get_queries
from flowledger.repositories.registry import Repositories

_ENV_PREFIX = "FLOWLEDGER_"
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
            raise InvalidInput(f"pool sizes must satisfy 0 <= min_size <= max_size, >= 1: {self}")
        if self.pool_timeout <= 0 or self.connect_attempts < 1:
            raise InvalidInput("pool_timeout must be > 0 and connect_attempts >= 1")
        if self.cursor_secret is not None and len(self.cursor_secret) < _MIN_CURSOR_SECRET:
            # The value itself stays out of the message: it is a secret.
            raise InvalidInput(f"cursor_secret must be at least {_MIN_CURSOR_SECRET} characters")


def settings_from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from `DATABASE_URL` and `FLOWLEDGER_*`, overridden by keyword arguments."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if env.get("DATABASE_URL"):
        raw["url"] = env["DATABASE_URL"]
    for field in msgspec.structs.fields(Settings):
        value = env.get(_ENV_PREFIX + field.name.upper())
        if value is not None:
            raw[field.name] = None if value.lower() in {"", "none", "null"} else value
    raw.update({k: v for k, v in overrides.items()})
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid flowledger setting: {exc}") from exc


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


class Database(Repositories):
    """A pool of connections and the repositories that use it. Thread-safe."""

    def __init__(self, settings: Settings) -> None:
        url = settings.url
        if not url:
            from flowledger.devserver import EmbeddedServer

            url = EmbeddedServer().ensure_running()
        self.settings = settings
        self.url = to_libpq_url(url)
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
            open=False,
            name="flowledger",
        )
        # Without a secret of its own, the key is the database's, read by open().
        codec: CursorCodec = UnkeyedCodec()
        if settings.cursor_secret is not None:
            codec = CursorCodec(hashlib.sha256(settings.cursor_secret.encode()).digest())
        super().__init__(PoolExecutor(self._pool), codec)

    def open(self) -> Database:
        """Wait until the server answers (bounded retries with backoff), then fill the pool."""
        s = self.settings
        delay = s.connect_backoff
        for attempt in range(1, s.connect_attempts + 1):
            try:
                psycopg.connect(self.url, **self._conn_kwargs).close()
                break
            except psycopg.OperationalError as exc:
                if attempt == s.connect_attempts:
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                    raise Unavailable(
                        f"cannot connect to {redact(self.url)} after {attempt} attempts: {reason}"
                    ) from exc
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

    def _cursor_key(self) -> bytes:
        with translating(), self._pool.connection() as conn:
            try:
                row = conn.execute(get_queries()["get_cursor_key"].sql).fetchone()
            except psycopg.errors.UndefinedTable:
                row = None
        if row is None:
            raise MigrationError(
                f"{redact(self.url)} has no cursor key (table cursor_key missing or empty):"
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

    def health(self, timeout: float = 2.0) -> dict[str, str]:
        """`{"postgres": "ok"}` or `{"postgres": "error: <message>"}`; never raises."""
        try:
            with self._pool.connection(timeout=timeout) as conn:
                conn.execute("SELECT 1")
        except (psycopg.Error, OSError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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


def connect(url: str | None = None, **settings: Any) -> Database:
    """Open a Database: `url`, else `DATABASE_URL`, else the embedded server.

    Settings come from keyword arguments, then `FLOWLEDGER_*` environment variables.
    Raises Unavailable when the server cannot be reached after the configured retries.
    """
    if url is not None:
        settings["url"] = url
    return Database(settings_from_env(**settings)).open()
