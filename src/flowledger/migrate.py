"""A thin layer over yoyo-migrations that a deployment pipeline can trust.

yoyo reads the migration files and keeps its bookkeeping tables (`_yoyo_migration`,
`_yoyo_log`), so the plain `yoyo` command still understands a flowledger database. On
top of it this module adds what a release job needs and yoyo lacks:

* each migration runs in ONE transaction together with its bookkeeping row, so a crash
  can never leave a migration applied but unrecorded (yoyo marks in a second one);
* a session-level advisory lock serialises concurrent runs; it dies with the
  connection, so a crashed run leaves no lock behind (yoyo's lock table would);
* SHA-256 checksums of applied files: an edited applied migration is reported and
  blocks `apply` unless explicitly overridden;
* `lock_timeout` / `statement_timeout` while migrating, and errors that name the file
  and the statement that failed.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from flowledger._resources import migrations_dir
from flowledger.errors import MigrationError, connection_error
from flowledger.urls import to_yoyo_url, validate

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from yoyo.backends.base import DatabaseBackend
    from yoyo.connections import get_backend
    from yoyo.migrations import get_migration_hash, read_sql_migration

# Arbitrary but fixed: every flowledger migration run, whatever the database, takes it.
ADVISORY_LOCK_KEY = 0x666C6F776C6467  # "flowldg"
_CHECKSUM_TABLE = "_flowledger_migration_checksum"
_NAME_RE = re.compile(r"^(\d{4})_([a-z][a-z0-9]*(?:_[a-z0-9]+)+)$")


class EditedMigrations(MigrationError):
    """An applied migration's file was edited or deleted since it was applied."""


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
        """The key yoyo uses for this migration in `_yoyo_migration`."""
        return str(get_migration_hash(self.id))


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
class Settings:
    """Timeouts of a migration run (PostgreSQL interval strings)."""

    wait_timeout: float = 60.0
    lock_timeout: str = "10s"
    statement_timeout: str = "15min"


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
    directives, _, statements = read_sql_migration(str(path))
    _, _, rollback_statements = (
        read_sql_migration(str(rollback)) if rollback.exists() else ({}, "", [])
    )
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


class Migrator:
    """Apply, roll back and inspect the migrations of one database."""

    def __init__(
        self,
        url: str,
        *,
        directory: Path | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.url = url
        self.settings = settings or Settings()
        self.migrations = load_migrations(directory)
        self._backend: DatabaseBackend | None = None

    # -- connection -------------------------------------------------------------------

    def _connect(self) -> DatabaseBackend:
        if self._backend is None:
            yoyo_url = to_yoyo_url(self.url)
            check_connection(self.url)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._backend = get_backend(yoyo_url)
        return self._backend

    @property
    def _conn(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] = self._connect().connection
        return conn

    def close(self) -> None:
        """Close the connection (which also releases the advisory lock)."""
        if self._backend is not None:
            self._backend.connection.close()
            self._backend = None

    def __enter__(self) -> Migrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        conn = self._conn
        wait_ms = max(1, int(self.settings.wait_timeout * 1000))
        try:
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{wait_ms}ms")))
            conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        except psycopg.errors.LockNotAvailable as exc:
            raise MigrationError(
                f"another migration run holds the migration lock; gave up after "
                f"{self.settings.wait_timeout:g}s (raise --lock-wait to wait longer)"
            ) from exc
        finally:
            conn.execute("RESET lock_timeout")
        try:
            self._prepare_bookkeeping()
            yield
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))

    def _prepare_bookkeeping(self) -> None:
        backend = self._connect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backend.ensure_internal_schema_updated()
        self._conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " migration_id text PRIMARY KEY,"
                " checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(sql.Identifier(_CHECKSUM_TABLE))
        )

    # -- inspection -------------------------------------------------------------------

    def _applied(self) -> dict[str, tuple[datetime | None, str | None]]:
        """migration id -> (applied_at, recorded checksum) for every applied migration."""
        conn = self._conn
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename = ANY(%s)",
                (["_yoyo_migration", _CHECKSUM_TABLE],),
            )
        }
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
        """Apply pending migrations (up to and including `to`) in order."""
        self._check_target(to)
        result = RunResult("apply", dry_run=dry_run)
        with self._locked():
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
                        self._run(m, "apply")
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
        with self._locked():
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
                    self._run(m, "rollback")
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

    def _run(self, m: MigrationFile, direction: Literal["apply", "rollback"]) -> None:
        conn = self._conn
        statements = m.statements if direction == "apply" else m.rollback_statements
        path = m.path if direction == "apply" else (m.rollback_path or m.path)
        if direction == "rollback" and not statements:
            raise MigrationError(f"{m.id} has no rollback file; it cannot be rolled back")
        timeouts = sql.SQL("SET {} lock_timeout = {}; SET {} statement_timeout = {}")
        if m.transactional:
            conn.execute("BEGIN")
            try:
                conn.execute(
                    timeouts.format(
                        sql.SQL("LOCAL"),
                        sql.Literal(self.settings.lock_timeout),
                        sql.SQL("LOCAL"),
                        sql.Literal(self.settings.statement_timeout),
                    )
                )
                self._execute_all(path, statements)
                self._record(m, direction)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        else:
            conn.execute(
                timeouts.format(
                    sql.SQL("SESSION"),
                    sql.Literal(self.settings.lock_timeout),
                    sql.SQL("SESSION"),
                    sql.Literal(self.settings.statement_timeout),
                )
            )
            try:
                self._execute_all(path, statements)
                conn.execute("BEGIN")
                self._record(m, direction)
                conn.execute("COMMIT")
            finally:
                conn.execute("RESET lock_timeout; RESET statement_timeout")

    def _execute_all(self, path: Path, statements: Sequence[str]) -> None:
        source = path.read_text()
        for stmt in statements:
            try:
                self._conn.execute(stmt.encode())
            except psycopg.Error as exc:
                raise MigrationError(_describe_failure(path, source, stmt, exc)) from exc

    def _record(self, m: MigrationFile, direction: Literal["apply", "rollback"]) -> None:
        backend = self._connect()
        table = sql.Identifier(_CHECKSUM_TABLE)
        if direction == "apply":
            backend.execute(
                backend.format_sql(backend.mark_migration_sql),
                {
                    "migration_hash": m.yoyo_hash,
                    "migration_id": m.id,
                    "when": datetime.now(UTC).replace(tzinfo=None),
                },
            )
            self._conn.execute(
                sql.SQL(
                    "INSERT INTO {} (migration_id, checksum) VALUES (%s, %s)"
                    " ON CONFLICT (migration_id) DO UPDATE"
                    " SET checksum = EXCLUDED.checksum, applied_at = now()"
                ).format(table),
                (m.id, m.checksum),
            )
        else:
            backend.execute(
                backend.format_sql(backend.unmark_migration_sql), {"migration_hash": m.yoyo_hash}
            )
            self._conn.execute(
                sql.SQL("DELETE FROM {} WHERE migration_id = %s").format(table), (m.id,)
            )
        backend.execute(
            backend.format_sql(backend.log_migration_sql),
            backend.get_log_data(m_to_yoyo(m), direction),
        )


@dataclass(frozen=True)
class _YoyoMigrationView:
    """The two attributes yoyo's log row needs from a migration."""

    id: str
    hash: str


def m_to_yoyo(m: MigrationFile) -> _YoyoMigrationView:
    """Adapt a MigrationFile for yoyo's `get_log_data`."""
    return _YoyoMigrationView(m.id, m.yoyo_hash)


def _describe_failure(path: Path, source: str, stmt: str, exc: psycopg.Error) -> str:
    head = stmt.strip()
    offset = source.find(head)
    line = source.count("\n", 0, offset) + 1 if offset >= 0 else None
    first = " ".join(head.split())
    if len(first) > 100:
        first = first[:97] + "..."
    where = f"{path.name}:{line}" if line else path.name
    reason = (exc.diag.message_primary or str(exc)).strip().splitlines()[0]
    return f"{where}: statement failed: {first}: {reason}"


def check_connection(url: str, *, connect_timeout: int = 10) -> None:
    """Connect once so that a bad URL, password or host becomes a one-line error."""
    libpq = validate(url)
    error = None
    try:
        with psycopg.connect(libpq, connect_timeout=connect_timeout):
            pass
    except psycopg.OperationalError as exc:
        error = connection_error(exc, url)  # not chained: libpq's text may hold the password
    if error is not None:
        raise error


def _first_line(exc: BaseException) -> str:
    # libpq repeats "connection to server at ... failed:" before the reason; keep the reason.
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    return re.sub(r"^(connection failed: )?connection to server .*? failed: ", "", lines[0])
