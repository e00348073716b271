"""Connection and pool settings, from arguments and `FLOWLEDGER_*`; shared by both faces.

Also how every pooled connection is configured (jsonb through msgspec): pure code, no I/O.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec
import psycopg
from psycopg.adapt import Loader
from psycopg.types.json import set_json_dumps, set_json_loads

from flowledger import urls
from flowledger.errors import InvalidInput

__all__ = [
    "NOT_CONFIGURED",
    "POOLERS",
    "Settings",
    "configure",
    "connection_kwargs",
    "settings_from_env",
    "startup_statements",
    "timeout_ms",
]

_ENV_PREFIX = "FLOWLEDGER_"
# FLOWLEDGER_* variables that are not connection settings: the embedded server's home,
# and the test suite's own namespace. Any other unknown FLOWLEDGER_* variable is refused.
_OTHER_VARIABLES = frozenset({"FLOWLEDGER_HOME"})
_OTHER_PREFIXES = ("FLOWLEDGER_TEST_",)
# Settings whose values are secrets: never echoed in a message or a repr.
_SECRET_FIELDS = frozenset({"url", "listen_url", "replica_url", "cursor_secret"})
# Settings holding a database URL: shown redacted (the password as ***).
_URL_FIELDS = frozenset({"url", "listen_url", "replica_url"})
POOLERS = ("session", "transaction")

NOT_CONFIGURED = (
    "no database configured: pass connect(url=...), set FLOWLEDGER_URL or DATABASE_URL,"
    " or call connect(embedded=True) for the embedded development server"
)
_MIN_CURSOR_SECRET = 32
# A day: a bound on lag or a check interval beyond it is a mistake (NaN is refused too).
_MAX_REPLICA_SECONDS = 86_400


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
    # psycopg's server-side prepare threshold; None turns prepared statements off.
    # With pooler="transaction" it must be None (connect() makes it so when unset).
    prepare_threshold: int | None = 5
    # What sits between this process and PostgreSQL: None (a direct connection),
    # "session" (a session-mode pooler: a client keeps its server connection, so nothing
    # changes) or "transaction" (PgBouncer pool_mode=transaction and the like: no
    # prepared statements, nothing session-scoped in the startup packet, the statement
    # timeout applied with each statement). A pooler found while this is None is refused.
    pooler: str | None = None
    # Where `wake_ups()` LISTENs: a URL of the same database that keeps a session (a
    # direct connection). None: `url`, which a transaction pooler cannot serve.
    listen_url: str | None = None
    connect_attempts: int = 5
    connect_backoff: float = 0.25  # first wait between attempts, doubled each time
    connect_timeout: int = 10
    # Key of the HMAC that makes pagination cursors tamper-evident. None: the database's
    # own random key (table cursor_key, made by its migrations), shared by every process
    # on that database; a secret of your own lets several databases accept each other's.
    cursor_secret: str | None = None
    # A repository call taking longer than this many seconds (pool wait included) is
    # logged on `flowledger.query` at WARNING: its query name, duration and row count,
    # never its parameters. None turns it off.
    slow_query_seconds: float | None = 1.0
    # A borrow that waited longer than this for a free pooled connection is logged on
    # `flowledger.pool` at WARNING, with the pool's size and its waiting callers.
    pool_wait_warning_seconds: float = 1.0
    # A streaming standby of the database, for `db.replica` (its own pool, of the same
    # sizes). None: no replica, and `db.replica` raises DatabaseNotConfigured.
    replica_url: str | None = None
    # A replica further behind than this many seconds is refused (ReplicaUnavailable).
    replica_max_lag_seconds: float = 5.0
    # How often, at most, a replica read first checks the standby's lag (one extra round
    # trip on the connection it borrowed); 0 checks before every read.
    replica_check_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.pooler is not None and self.pooler not in POOLERS:
            raise InvalidInput(
                f"pooler must be None, 'session' or 'transaction', got {self.pooler!r}"
            )
        if self.pooler == "transaction" and self.prepare_threshold is not None:
            raise InvalidInput(
                "prepare_threshold must be None with pooler='transaction': a prepared"
                " statement lives on one server connection, and a transaction pooler hands"
                " the next statement to another"
            )
        if self.min_size < 0 or self.max_size < 1 or self.min_size > self.max_size:
            raise InvalidInput(
                "pool sizes must satisfy 0 <= min_size <= max_size, max_size >= 1:"
                f" min_size={self.min_size}, max_size={self.max_size}"
            )
        if self.slow_query_seconds is not None and not self.slow_query_seconds >= 0:
            raise InvalidInput("slow_query_seconds must be >= 0 (or None to turn it off)")
        if not self.pool_wait_warning_seconds >= 0:
            raise InvalidInput("pool_wait_warning_seconds must be >= 0")
        if self.pool_timeout <= 0 or self.connect_attempts < 1:
            raise InvalidInput("pool_timeout must be > 0 and connect_attempts >= 1")
        for name in ("replica_max_lag_seconds", "replica_check_seconds"):
            value = getattr(self, name)
            if not 0 <= value <= _MAX_REPLICA_SECONDS:
                raise InvalidInput(f"{name} must be between 0 and {_MAX_REPLICA_SECONDS:,}")
        if self.cursor_secret is not None and len(self.cursor_secret) < _MIN_CURSOR_SECRET:
            # The value itself stays out of the message: it is a secret.
            raise InvalidInput(f"cursor_secret must be at least {_MIN_CURSOR_SECRET} characters")

    def __repr__(self) -> str:
        shown = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name in _URL_FIELDS and value:
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
    if raw.get("pooler") == "transaction" and "prepare_threshold" not in raw:
        # Prepared statements cannot work through a transaction pooler: off, unless the
        # caller asked for them, which __post_init__ then refuses by name.
        raw["prepare_threshold"] = None
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


def configure(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Set up a new pooled connection: jsonb in and out through msgspec."""
    # jsonb in and out through msgspec (PERF-NOTES: +79 % on pages over the stdlib);
    # set_json_loads still serves the binary format, the loader above the text one.
    set_json_loads(msgspec.json.decode, conn)
    set_json_dumps(msgspec.json.encode, conn)
    conn.adapters.register_loader("jsonb", _JsonTextLoader)
    conn.adapters.register_loader("json", _JsonTextLoader)


def timeout_ms(settings: Settings) -> int | None:
    """The statement timeout in whole milliseconds, as PostgreSQL takes it; None: none."""
    if settings.statement_timeout is None:
        return None
    return int(settings.statement_timeout * 1000)


# A prepared statement runs its generic plan from its first prepared execution on, never
# a plan made for the values at hand. With PostgreSQL's default (auto), a statement whose
# generic plan the planner estimates dearer than its custom ones is planned again on every
# call, for good: the claim (its optional queue list) and the lock of a batch's executions
# (an array of ids) were, and planning them cost more than running them. Every query's
# generic plan is checked too (`flowledger check-plans`, variant "generic plan").
PLAN_CACHE_MODE: Final = "force_generic_plan"


def startup_statements(settings: Settings) -> list[str]:
    """What a new pooled connection runs first behind a pooler, for what a direct one gets
    in its startup packet: `SET TimeZone` (PgBouncer tracks it per client and replays it
    on every server connection it lends); behind a session pooler also the timeout."""
    if settings.pooler is None:
        return []
    statements = ["SET TimeZone TO 'UTC'"]
    if settings.pooler == "session":
        # Prepared statements live on a session pooler's connections: see PLAN_CACHE_MODE.
        statements.append(f"SET plan_cache_mode TO {PLAN_CACHE_MODE}")
        timeout = timeout_ms(settings)
        if timeout is not None:
            statements.append(f"SET statement_timeout TO {timeout}")
    return statements


def connection_kwargs(settings: Settings, *, session: bool = False) -> dict[str, Any]:
    """The keyword arguments of every connection the pool opens; `session=True`: of a
    connection that keeps its session whatever `pooler` says (a wake-up listener's)."""
    kwargs: dict[str, Any] = {
        # A lone statement needs no BEGIN/COMMIT round trips; multi-statement work
        # opens an explicit transaction (`_atomic()`, `db.transaction()`).
        "autocommit": True,
        "application_name": settings.application_name,
        "prepare_threshold": settings.prepare_threshold,
        "connect_timeout": settings.connect_timeout,
    }
    if settings.pooler is not None and not session:
        # PgBouncer refuses (or, told to ignore it, drops) the startup packet's
        # `options`, in either pool mode: the settings are SET once the connection is
        # made (`startup_statements`), except a transaction pooler's timeout, which
        # travels with each statement (`AsyncPooledCursor`).
        return kwargs
    # psycopg maps only the literal name UTC to timezone.utc.
    options = f"-c TimeZone=UTC -c plan_cache_mode={PLAN_CACHE_MODE}"
    timeout = timeout_ms(settings)
    if timeout is not None:
        options += f" -c statement_timeout={timeout}"
    return kwargs | {"options": options}
