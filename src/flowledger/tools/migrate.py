"""Migrations a deployment pipeline can trust, kept in yoyo's format.

yoyo's parser reads the migration files, and the bookkeeping lives in yoyo's own tables
(`_yoyo_migration`, `_yoyo_log`, `_yoyo_version`), so the plain `yoyo` command still
understands a flowledger database. flowledger writes those tables itself, on its own
connection, instead of going through yoyo's backend: yoyo's backend creates tables as soon
as it connects (a dry run or a read-only role would write or fail), keeps its own lock
table, and records a migration in a second transaction. On top of that this module adds
what a release job needs:

* each migration runs in ONE transaction together with its bookkeeping row, so a crash
  can never leave a migration applied but unrecorded;
* a session-level advisory lock serialises concurrent runs for the whole run, including
  `CREATE INDEX CONCURRENTLY` migrations; it dies with the connection, so a crashed run
  leaves no lock behind; a connection that cannot hold it (a transaction-mode pooler) is
  refused;
* an index built concurrently is recorded only once PostgreSQL marks it valid;
* SHA-256 checksums of applied files: an edited applied migration is reported and
  blocks `apply` unless explicitly overridden;
* `lock_timeout` / `statement_timeout` while migrating, and errors that name the file
  and the statement that failed.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import math
import os
import re
import socket
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from flowledger._resources import migrations_dir
from flowledger.errors import MigrationError, connection_error
from flowledger.urls import validate

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from yoyo.migrations import read_sql_migration

# Arbitrary but fixed: every flowledger migration run, whatever the database, takes it.
log = logging.getLogger("flowledger.migrate")
ADVISORY_LOCK_KEY = 0x666C6F776C6467  # "flowldg"
# pg_locks shows a bigint advisory key as two oids: the high and the low 32 bits.
_LOCK_CLASSID, _LOCK_OBJID = ADVISORY_LOCK_KEY >> 32, ADVISORY_LOCK_KEY & 0xFFFFFFFF
_CHECKSUM_TABLE = "_flowledger_migration_checksum"
_NAME_RE = re.compile(r"^(\d{4})_([a-z][a-z0-9]*(?:_[a-z0-9]+)+)$")

# flowledger depends on two things of yoyo that are not a stable API: `read_sql_migration`
# (how a file is split into statements and directives) and the layout of yoyo's
# bookkeeping tables, internal schema version 2, which flowledger writes itself so that
# the `yoyo` command keeps reading a flowledger database. Both are pinned to the yoyo
# versions the test suite ran against (pyproject.toml says the same); a newer yoyo is
# refused with a clear error instead of being trusted blindly.
YOYO_TESTED = ((9, 0), (9, 1))  # >= 9.0, < 9.1
YOYO_SCHEMA_VERSION = 2

# A PostgreSQL duration as lock_timeout and statement_timeout accept it.
_DURATION_RE = re.compile(r"^\s*\d+(\.\d+)?\s*(us|ms|s|min|h|d)?\s*$")
# Index builds whose validity is checked before the migration is recorded.
_CONCURRENT_INDEX_RE = re.compile(
    r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"(\"(?:[^\"]|\"\")+\"|[A-Za-z_][A-Za-z0-9_$]*)",
    re.IGNORECASE,
)
# The advisory lock is polled with pg_try_advisory_lock rather than waited for inside
# pg_advisory_lock: a waiting statement holds a snapshot, `CREATE INDEX CONCURRENTLY` in
# the run that holds the lock waits for every older snapshot, and the two deadlock.
_POLL_FIRST, _POLL_MAX = 0.05, 0.5


class EditedMigrations(MigrationError):
    """An applied migration's file was edited or deleted since it was applied."""


class InvalidIndexes(MigrationError):
    """The schema holds an index PostgreSQL marks invalid (a failed concurrent build)."""


State = Literal["applied", "pending", "edited", "missing"]


@dataclass(frozen=True)
class MigrationFile:
    """One migration on disk: its id, files, checksum and statements."""

    id: str
    path: Path
    rollback_path: Path | None
    checksum: str
    transactional: bool
    statements: tuple[str, ...]
    rollback_statements: tuple[str, ...]

    @property
    def yoyo_hash(self) -> str:
        """The key yoyo uses for this migration in `_yoyo_migration` (SHA-256 of the id)."""
        return hashlib.sha256(self.id.encode()).hexdigest()

    def concurrent_indexes(self, direction: Literal["apply", "rollback"]) -> list[str]:
        """Names of the indexes this migration builds with CREATE INDEX CONCURRENTLY."""
        stmts = self.statements if direction == "apply" else self.rollback_statements
        return [name for stmt in stmts for name in _CONCURRENT_INDEX_RE.findall(stmt)]


@dataclass(frozen=True)
class MigrationState:
    """A migration as `status` reports it."""

    id: str
    state: State
    applied_at: datetime | None = None
    recorded_checksum: str | None = None
    file_checksum: str | None = None

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "state": self.state,
            "applied_at": self.applied_at.isoformat() if self.applied_at else None,
            "recorded_checksum": self.recorded_checksum,
            "file_checksum": self.file_checksum,
        }


@dataclass(frozen=True)
class InvalidIndex:
    """An index of the schema that PostgreSQL marks invalid."""

    name: str
    table: str

    def __str__(self) -> str:
        return f"index {self.name} on {self.table} is invalid (a failed concurrent build)"


@dataclass(frozen=True)
class Settings:
    """Timeouts of a migration run; raises MigrationError naming a bad value."""

    wait_timeout: float = 60.0
    lock_timeout: str = "10s"
    statement_timeout: str = "15min"

    def __post_init__(self) -> None:
        check_seconds("--lock-wait", self.wait_timeout)
        check_duration("--lock-timeout", self.lock_timeout)
        check_duration("--statement-timeout", self.statement_timeout)


def check_seconds(name: str, value: float) -> float:
    """`value` when it is a finite number of seconds >= 0; else MigrationError naming `name`."""
    if not math.isfinite(value) or value < 0:
        raise MigrationError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return value


def check_duration(name: str, value: str) -> str:
    """`value` when it reads as a PostgreSQL duration; else MigrationError naming `name`."""
    if not _DURATION_RE.match(value):
        raise MigrationError(
            f"{name} must be a PostgreSQL duration such as 500ms, 10s or 15min, got {value!r}"
        )
    return value


def check_yoyo_version(found: str | None = None) -> None:
    """Return when the installed yoyo-migrations is a tested version; else MigrationError."""
    if found is None:
        try:
            found = installed_version("yoyo-migrations")
        except PackageNotFoundError as exc:
            raise MigrationError("yoyo-migrations is not installed") from exc
    parts = tuple(int(p) for p in re.findall(r"\d+", found)[:2])
    (lo_major, lo_minor), (hi_major, hi_minor) = YOYO_TESTED
    if not (lo_major, lo_minor) <= parts < (hi_major, hi_minor):
        raise MigrationError(
            f"yoyo-migrations {found} is installed, but flowledger is tested with "
            f">={lo_major}.{lo_minor},<{hi_major}.{hi_minor} only (it writes yoyo's "
            "bookkeeping tables and uses yoyo's file parser): install a tested version"
        )


@dataclass
class RunResult:
    """What `apply` or `rollback` did (or would do, on a dry run)."""

    action: Literal["apply", "rollback"]
    migrations: list[str] = field(default_factory=list)
    dry_run: bool = False


def load_migrations(directory: Path | None = None) -> list[MigrationFile]:
    """Read and validate the migration files of `directory`, ordered by id."""
    directory = directory or migrations_dir()
    if not directory.is_dir():
        raise MigrationError(f"migrations directory not found: {directory}")
    found: list[MigrationFile] = []
    for path in sorted(directory.glob("*.sql")):
        if path.name.endswith(".rollback.sql"):
            if not path.with_name(path.name.replace(".rollback.sql", ".sql")).exists():
                raise MigrationError(f"{path}: rollback file without a migration")
            continue
        found.append(_read_migration(path))
    seen: dict[str, str] = {}
    for m in found:
        number = m.id[:4]
        if number in seen:
            raise MigrationError(f"migrations {seen[number]} and {m.id} share the number {number}")
        seen[number] = m.id
    return found


def _read_migration(path: Path) -> MigrationFile:
    mid = path.name[: -len(".sql")]
    if not _NAME_RE.match(mid):
        raise MigrationError(f"{path}: migration files are named NNNN_verb_object.sql")
    rollback = path.with_name(f"{mid}.rollback.sql")
    directives, _, statements = _parse(path)
    _, _, rollback_statements = _parse(rollback) if rollback.exists() else ({}, "", [])
    digest = hashlib.sha256(path.read_bytes())
    if rollback.exists():
        digest.update(b"\0rollback\0" + rollback.read_bytes())
    transactional = directives.get("transactional", "true").strip().lower() != "false"
    if not statements:
        raise MigrationError(f"{path}: migration has no statements")
    return MigrationFile(
        id=mid,
        path=path,
        rollback_path=rollback if rollback.exists() else None,
        checksum=digest.hexdigest(),
        transactional=transactional,
        statements=tuple(statements),
        rollback_statements=tuple(rollback_statements),
    )


def _parse(path: Path) -> tuple[dict[str, str], str, list[str]]:
    try:
        directives, comment, statements = read_sql_migration(str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationError(f"{path}: cannot read the migration: {exc}") from exc
    return dict(directives), str(comment), list(statements)


def verify_session_lock(conn: psycopg.Connection[Any], backend_pid: int) -> None:
    """Return when `conn` still talks to `backend_pid` and that backend holds the migration
    lock; else MigrationError (the connection goes through a transaction-mode pooler)."""
    row = conn.execute(
        "SELECT pg_backend_pid(), EXISTS (SELECT 1 FROM pg_locks"
        " WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()"
        " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1)",
        (_LOCK_CLASSID, _LOCK_OBJID),
    ).fetchone()
    assert row is not None
    pid, held = row
    if pid != backend_pid or not held:
        if pid != backend_pid:
            moved = f"server process {backend_pid} took it, {pid} answers now"
        else:
            moved = f"server process {pid} does not hold it"
        raise MigrationError(
            f"refusing to migrate: the migration lock is not held by this session ({moved});"
            " the connection goes through a transaction-mode pooler (e.g. PgBouncer"
            " pool_mode=transaction): connect directly to PostgreSQL or via a session-mode pool"
        )


class Migrator:
    """Apply, roll back and inspect the migrations of one database."""

    def __init__(
        self,
        url: str,
        *,
        directory: Path | None = None,
        settings: Settings | None = None,
    ) -> None:
        check_yoyo_version()
        self.url = url
        self.settings = settings or Settings()
        self.migrations = load_migrations(directory)
        self._connection: psycopg.Connection[Any] | None = None

    # -- connection -------------------------------------------------------------------

    @property
    def _conn(self) -> psycopg.Connection[Any]:
        if self._connection is None:
            self._connection = _connect(self.url)
        return self._connection

    def _alive(self) -> bool:
        return self._connection is not None and not self._connection.closed

    def close(self) -> None:
        """Close the connection (which also releases the advisory lock)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> Migrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _locked(self, *, write: bool) -> Iterator[int]:
        """Hold the migration lock for the block; yields the backend pid that holds it."""
        conn = self._conn
        pid = self._acquire_lock()
        try:
            self._check_session(pid)
            if write:
                self._check_writable()
                self._check_timeouts()
                self._prepare_bookkeeping()
            yield pid
        finally:
            # A lost connection took the session lock with it: nothing left to release.
            if self._alive():
                conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))

    def _acquire_lock(self) -> int:
        wait = self.settings.wait_timeout
        deadline = time.monotonic() + wait
        pause = _POLL_FIRST
        while True:
            row = self._conn.execute(
                "SELECT pg_try_advisory_lock(%s), pg_backend_pid()", (ADVISORY_LOCK_KEY,)
            ).fetchone()
            assert row is not None
            if row[0]:
                return int(row[1])
            left = deadline - time.monotonic()
            if left <= 0:
                raise MigrationError(
                    f"another migration run holds the migration lock; gave up after "
                    f"{wait:g}s (raise --lock-wait to wait longer)"
                )
            time.sleep(min(pause, left))
            pause = min(pause * 2, _POLL_MAX)

    def _check_session(self, pid: int) -> None:
        try:
            verify_session_lock(self._conn, pid)
        except MigrationError:
            # Through a pooler the lock sits on whichever server connection took it; a
            # few unlocks give the pooler the chance to route one there.
            for _ in range(10):
                row = self._conn.execute(
                    "SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,)
                ).fetchone()
                if row is not None and row[0]:
                    break
            raise

    def _check_writable(self) -> None:
        row = self._conn.execute("SELECT current_setting('transaction_read_only')").fetchone()
        if row is not None and row[0] == "on":
            raise MigrationError(
                "the database is read-only (a standby, or default_transaction_read_only is"
                " on): run migrations against the primary"
            )

    def _check_timeouts(self) -> None:
        # The server has the last word on a duration (its range, its units).
        for name, setting, value in (
            ("--lock-timeout", "lock_timeout", self.settings.lock_timeout),
            ("--statement-timeout", "statement_timeout", self.settings.statement_timeout),
        ):
            try:
                self._conn.execute("SELECT set_config(%s, %s, true)", (setting, value))
            except psycopg.DataError as exc:
                raise MigrationError(f"{name} {value!r}: {_reason(exc)}") from exc

    def _prepare_bookkeeping(self) -> None:
        existing = self._existing_tables()
        ddl = {
            "_yoyo_migration": "CREATE TABLE _yoyo_migration ("
            " migration_hash VARCHAR(64), migration_id VARCHAR(255),"
            " applied_at_utc TIMESTAMP, PRIMARY KEY (migration_hash))",
            "_yoyo_log": "CREATE TABLE _yoyo_log ("
            " id VARCHAR(36), migration_hash VARCHAR(64), migration_id VARCHAR(255),"
            " operation VARCHAR(10), username VARCHAR(255), hostname VARCHAR(255),"
            " comment VARCHAR(255), created_at_utc TIMESTAMP, PRIMARY KEY (id))",
            "_yoyo_version": "CREATE TABLE _yoyo_version ("
            " version INT NOT NULL PRIMARY KEY, installed_at_utc TIMESTAMP)",
            _CHECKSUM_TABLE: f"CREATE TABLE {_CHECKSUM_TABLE} ("
            " migration_id text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())",
        }
        missing = [name for name in ddl if name not in existing]
        if not missing:
            self._check_yoyo_schema()
            return
        conn = self._conn
        try:
            with conn.transaction():
                for name in missing:
                    conn.execute(ddl[name].encode())
                if "_yoyo_version" in missing:
                    conn.execute(
                        "INSERT INTO _yoyo_version VALUES (%s, now() AT TIME ZONE 'UTC')",
                        (YOYO_SCHEMA_VERSION,),
                    )
        except psycopg.errors.InsufficientPrivilege as exc:
            raise MigrationError(
                f"cannot create the migration bookkeeping tables ({', '.join(missing)}):"
                f" {_reason(exc)}; the migrating role needs CREATE on the schema"
            ) from exc
        except psycopg.Error as exc:
            raise MigrationError(
                f"cannot create the migration bookkeeping tables: {_reason(exc)}"
            ) from exc
        self._check_yoyo_schema()

    def _check_yoyo_schema(self) -> None:
        row = self._conn.execute("SELECT max(version) FROM _yoyo_version").fetchone()
        found = row[0] if row else None
        if found != YOYO_SCHEMA_VERSION:
            raise MigrationError(
                f"yoyo's bookkeeping tables are at internal schema version {found},"
                f" flowledger writes version {YOYO_SCHEMA_VERSION} only"
            )

    def _existing_tables(self) -> set[str]:
        names = ["_yoyo_migration", "_yoyo_log", "_yoyo_version", _CHECKSUM_TABLE]
        rows = self._conn.execute(
            "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(quote_ident(name))"
            " IS NOT NULL",
            (names,),
        ).fetchall()
        return {r[0] for r in rows}

    # -- inspection -------------------------------------------------------------------

    def _applied(self) -> dict[str, tuple[datetime | None, str | None]]:
        """migration id -> (applied_at, recorded checksum) for every applied migration."""
        conn = self._conn
        tables = self._existing_tables()
        if "_yoyo_migration" not in tables:
            return {}
        rows = conn.execute(
            "SELECT migration_id, applied_at_utc FROM _yoyo_migration ORDER BY applied_at_utc"
        ).fetchall()
        checksums: dict[str, str] = {}
        if _CHECKSUM_TABLE in tables:
            checksums = dict(
                conn.execute(
                    sql.SQL("SELECT migration_id, checksum FROM {}").format(
                        sql.Identifier(_CHECKSUM_TABLE)
                    )
                ).fetchall()
            )
        return {mid: (applied_at, checksums.get(mid)) for mid, applied_at in rows}

    def status(self) -> list[MigrationState]:
        """Every known migration with its state: applied, pending, edited or missing."""
        applied = self._applied()
        states: list[MigrationState] = []
        for m in self.migrations:
            if m.id not in applied:
                states.append(MigrationState(m.id, "pending", file_checksum=m.checksum))
                continue
            applied_at, recorded = applied[m.id]
            edited = recorded is not None and recorded != m.checksum
            states.append(
                MigrationState(
                    m.id, "edited" if edited else "applied", applied_at, recorded, m.checksum
                )
            )
        on_disk = {m.id for m in self.migrations}
        for mid, (applied_at, recorded) in applied.items():
            if mid not in on_disk:
                states.append(MigrationState(mid, "missing", applied_at, recorded, None))
        return states

    def invalid_indexes(self) -> list[InvalidIndex]:
        """Every index of the current schema that PostgreSQL marks invalid, by name."""
        rows = self._conn.execute(
            "SELECT c.relname, t.relname FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_class t ON t.oid = i.indrelid"
            " WHERE NOT i.indisvalid AND c.relnamespace = current_schema()::regnamespace"
            " ORDER BY c.relname"
        ).fetchall()
        return [InvalidIndex(name, table) for name, table in rows]

    def problems(self) -> list[str]:
        """Human-readable reasons why the applied history does not match the files."""
        out = []
        for s in self.status():
            if s.state == "edited":
                out.append(f"{s.id}: file changed since it was applied")
            elif s.state == "missing":
                out.append(f"{s.id}: applied but its file is missing")
        return out

    # -- apply / rollback -------------------------------------------------------------

    def apply(
        self, *, to: str | None = None, dry_run: bool = False, allow_edited: bool = False
    ) -> RunResult:
        """Apply pending migrations (up to and including `to`) in order; a dry run writes
        nothing. Raises MigrationError (EditedMigrations when history was edited)."""
        self._check_target(to)
        result = RunResult("apply", dry_run=dry_run)
        with self._locked(write=not dry_run) as pid:
            problems = self.problems()
            if problems and not allow_edited:
                raise EditedMigrations(
                    "refusing to apply: " + "; ".join(problems) + " (override with --allow-edited)"
                )
            applied = self._applied()
            for m in self.migrations:
                if m.id not in applied:
                    result.migrations.append(m.id)
                    if not dry_run:
                        self._run(m, "apply", pid)
                if m.id == to:
                    break
        return result

    def rollback(
        self,
        *,
        steps: int | None = None,
        to: str | None = None,
        all_: bool = False,
        dry_run: bool = False,
    ) -> RunResult:
        """Roll back the newest applied migrations: `steps` of them, down to `to`, or all."""
        self._check_target(to)
        if steps is not None and steps < 1:
            raise MigrationError("--steps must be at least 1")
        result = RunResult("rollback", dry_run=dry_run)
        with self._locked(write=not dry_run) as pid:
            applied = self._applied()
            by_id = {m.id: m for m in self.migrations}
            missing = [mid for mid in applied if mid not in by_id]
            if missing:
                raise MigrationError(
                    f"cannot roll back: applied migration(s) {', '.join(missing)} have no file"
                )
            if to is not None and to not in applied:
                raise MigrationError(f"cannot roll back to {to}: it is not applied")
            newest_first = [m for m in reversed(self.migrations) if m.id in applied]
            if to is not None:
                chosen = [m for m in newest_first if m.id > to]
            elif all_:
                chosen = newest_first
            else:
                chosen = newest_first[: steps or 1]
            for m in chosen:
                result.migrations.append(m.id)
                if not dry_run:
                    self._run(m, "rollback", pid)
        return result

    def sql_of(self, migration_id: str, direction: Literal["apply", "rollback"]) -> str:
        """The SQL a dry run prints for one migration."""
        m = self._by_id(migration_id)
        stmts = m.statements if direction == "apply" else m.rollback_statements
        return ";\n".join(s.strip().rstrip(";") for s in stmts) + ";"

    def _by_id(self, migration_id: str) -> MigrationFile:
        for m in self.migrations:
            if m.id == migration_id:
                return m
        raise MigrationError(f"unknown migration id {migration_id!r}")

    def _check_target(self, to: str | None) -> None:
        if to is not None:
            self._by_id(to)

    def _run(self, m: MigrationFile, direction: Literal["apply", "rollback"], pid: int) -> None:
        statements = m.statements if direction == "apply" else m.rollback_statements
        path = m.path if direction == "apply" else (m.rollback_path or m.path)
        if direction == "rollback" and not statements:
            raise MigrationError(f"{m.id} has no rollback file; it cannot be rolled back")
        # Each run checks again: a pooler may hand the next statement to another server.
        self._check_session(pid)
        started = time.monotonic()
        if m.transactional:
            self._run_in_transaction(m, direction, path, statements)
        else:
            self._run_outside_transaction(m, direction, path, statements)
        done = "applied" if direction == "apply" else "rolled back"
        log.info("%s %s (%.2f s)", done, m.id, time.monotonic() - started)

    def _timeouts(self, scope: str) -> sql.Composed:
        return sql.SQL("SET {scope} lock_timeout = {}; SET {scope} statement_timeout = {}").format(
            sql.Literal(self.settings.lock_timeout),
            sql.Literal(self.settings.statement_timeout),
            scope=sql.SQL(scope),
        )

    def _run_in_transaction(
        self,
        m: MigrationFile,
        direction: Literal["apply", "rollback"],
        path: Path,
        statements: Sequence[str],
    ) -> None:
        conn = self._conn
        conn.execute("BEGIN")
        try:
            conn.execute(self._timeouts("LOCAL"))
            self._execute_all(path, statements)
            self._record(m, direction, path)
            conn.execute("COMMIT")
        except BaseException:
            # A lost connection rolled the transaction back already; the error that
            # explains why (file, line, statement) is the one to report.
            if self._alive():
                conn.execute("ROLLBACK")
            raise

    def _run_outside_transaction(
        self,
        m: MigrationFile,
        direction: Literal["apply", "rollback"],
        path: Path,
        statements: Sequence[str],
    ) -> None:
        conn = self._conn
        indexes = m.concurrent_indexes(direction)
        self._drop_invalid(indexes)
        conn.execute(self._timeouts("SESSION"))
        try:
            self._execute_all(path, statements)
        finally:
            if self._alive():
                conn.execute("RESET lock_timeout; RESET statement_timeout")
        invalid = [name for name in indexes if self._index_valid(name) is False]
        if invalid:
            raise MigrationError(
                f"{path.name}: index {', '.join(invalid)} was built but is invalid;"
                f" {m.id} is not recorded as applied (run apply again to rebuild it)"
            )
        with conn.transaction():
            self._record(m, direction, path)

    def _index_valid(self, name: str) -> bool | None:
        """Whether the index is valid; None when there is no such index."""
        row = self._conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,)
        ).fetchone()
        return None if row is None else bool(row[0])

    def _drop_invalid(self, indexes: Sequence[str]) -> None:
        # A failed or interrupted concurrent build leaves an invalid index behind, which
        # `CREATE INDEX CONCURRENTLY IF NOT EXISTS` would then skip: drop it and rebuild.
        for name in indexes:
            if self._index_valid(name) is False:
                row = self._conn.execute("SELECT to_regclass(%s)::text", (name,)).fetchone()
                assert row is not None
                self._conn.execute(
                    sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.SQL(row[0]))
                )

    def _execute_all(self, path: Path, statements: Sequence[str]) -> None:
        source = path.read_text()
        for stmt in statements:
            try:
                self._conn.execute(stmt.encode())
            except psycopg.Error as exc:
                raise MigrationError(_describe_failure(path, source, stmt, exc)) from exc

    def _record(
        self, m: MigrationFile, direction: Literal["apply", "rollback"], path: Path
    ) -> None:
        conn = self._conn
        table = sql.Identifier(_CHECKSUM_TABLE)
        try:
            if direction == "apply":
                conn.execute(
                    "INSERT INTO _yoyo_migration (migration_hash, migration_id, applied_at_utc)"
                    " VALUES (%s, %s, now() AT TIME ZONE 'UTC')",
                    (m.yoyo_hash, m.id),
                )
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (migration_id, checksum) VALUES (%s, %s)"
                        " ON CONFLICT (migration_id) DO UPDATE"
                        " SET checksum = EXCLUDED.checksum, applied_at = now()"
                    ).format(table),
                    (m.id, m.checksum),
                )
            else:
                conn.execute(
                    "DELETE FROM _yoyo_migration WHERE migration_hash = %s", (m.yoyo_hash,)
                )
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE migration_id = %s").format(table), (m.id,)
                )
            conn.execute(
                "INSERT INTO _yoyo_log (id, migration_hash, migration_id, operation,"
                " username, hostname, created_at_utc)"
                " VALUES (%s, %s, %s, %s, %s, %s, now() AT TIME ZONE 'UTC')",
                (str(uuid.uuid1()), m.yoyo_hash, m.id, direction, _username(), socket.getfqdn()),
            )
        except psycopg.Error as exc:
            raise MigrationError(
                f"{path.name}: recording the migration failed: {_reason(exc)}"
            ) from exc


def _connect(url: str, *, connect_timeout: int = 10) -> psycopg.Connection[Any]:
    libpq = validate(url)
    error = None
    try:
        return psycopg.connect(libpq, autocommit=True, connect_timeout=connect_timeout)
    except psycopg.OperationalError as exc:
        error = connection_error(exc, url)  # not chained: libpq's text may hold the password
    raise error


def _username() -> str:
    # yoyo logs the OS user; a container may run as a uid without a passwd entry.
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _reason(exc: psycopg.Error) -> str:
    return (exc.diag.message_primary or str(exc)).strip().splitlines()[0]


def _describe_failure(path: Path, source: str, stmt: str, exc: psycopg.Error) -> str:
    head = stmt.strip()
    offset = source.find(head)
    line = source.count("\n", 0, offset) + 1 if offset >= 0 else None
    first = " ".join(head.split())
    if len(first) > 100:
        first = first[:97] + "..."
    where = f"{path.name}:{line}" if line else path.name
    reason = _reason(exc) if exc.sqlstate else _first_line(exc)
    return f"{where}: statement failed: {first}: {reason}"


def check_connection(url: str, *, connect_timeout: int = 10) -> None:
    """Connect once so that a bad URL, password or host becomes a one-line error."""
    _connect(url, connect_timeout=connect_timeout).close()


def _first_line(exc: BaseException) -> str:
    # libpq repeats "connection to server at ... failed:" before the reason; keep the reason.
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    return re.sub(r"^(connection failed: )?connection to server .*? failed: ", "", lines[0])
