"""Concurrent, interrupted and read-only migration runs, through the real `flowledger` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from _migrations import write_migrations
from _pgbouncer import dbname_of, pgbouncer
from _roles import restricted_role
from conftest import PgServer
from flowledger.errors import MigrationError
from flowledger.tools.cli import EXIT_EDITED, EXIT_ERROR, EXIT_INVALID_INDEX, EXIT_OK
from flowledger.tools.migrate import (
    ADVISORY_LOCK_KEY,
    YOYO_TESTED,
    Settings,
    check_yoyo_version,
    load_migrations,
    verify_session_lock,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [m.id for m in load_migrations()]

INDEXED = {
    "0001_create_things.sql": "-- things\nCREATE TABLE things (id int PRIMARY KEY, name text);\n",
    "0001_create_things.rollback.sql": "DROP TABLE things;\n",
    "0002_add_things_name_index.sql": "-- transactional: false\n"
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS things_name_idx ON things (name);\n",
    "0002_add_things_name_index.rollback.sql": "-- transactional: false\n"
    "DROP INDEX CONCURRENTLY IF EXISTS things_name_idx;\n",
}


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    return write_migrations(tmp_path, INDEXED)


def flowledger(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI the way a pipeline does."""
    return subprocess.run(
        [sys.executable, "-m", "flowledger.tools.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def public_tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}


def index_validity(url: str) -> dict[str, bool]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c"
            " ON c.oid = i.indexrelid WHERE c.relnamespace = 'public'::regnamespace"
        )
        return dict(rows.fetchall())


# -- concurrency --------------------------------------------------------------------------


@pytest.mark.concurrency
@pytest.mark.slow
@pytest.mark.parametrize("round_", range(3))
def test_four_applies_at_once_all_succeed_and_apply_each_migration_once(
    empty_db_url: str, tmp_path: Path, round_: int
) -> None:
    """The shipped migrations include CREATE INDEX CONCURRENTLY outside a transaction."""
    argv = [sys.executable, "-m", "flowledger.tools.cli", "migrate", "apply"]
    procs = [
        subprocess.Popen(
            [*argv, "--database", empty_db_url, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        for _ in range(4)
    ]
    outcomes = [(*p.communicate(timeout=300), p.returncode) for p in procs]
    for _out, err, code in outcomes:
        assert code == EXIT_OK, err
        assert err == ""
    applied = [mid for out, _, _ in outcomes for mid in json.loads(out)["migrations"]]
    assert sorted(applied) == SHIPPED  # each migration applied by exactly one run
    assert sum(1 for out, _, _ in outcomes if json.loads(out)["migrations"]) == 1
    with psycopg.connect(empty_db_url) as conn:
        recorded = conn.execute(
            "SELECT migration_id, count(*) FROM _yoyo_migration GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert recorded == [(mid, 1) for mid in SHIPPED]
    validity = index_validity(empty_db_url)
    assert {"users_created_idx", "workflows_name_idx"} <= validity.keys()
    assert all(validity.values()), validity


# -- interrupted index builds -------------------------------------------------------------


def interrupt_index_build(url: str, mdir: Path, cwd: Path) -> list[str]:
    """Apply 0001, then make 0002's concurrent build fail: an open writing transaction
    makes it wait past --lock-timeout, which leaves an invalid index behind."""
    common = ["--database", url, "--migrations-dir", str(mdir)]
    first = flowledger(cwd, "migrate", "apply", "--to", "0001_create_things", *common)
    assert first.returncode == EXIT_OK, first.stderr
    with psycopg.connect(url) as writer:
        writer.execute("INSERT INTO things VALUES (1, 'a')")
        failed = flowledger(cwd, "migrate", "apply", "--lock-timeout", "300ms", *common)
        writer.rollback()
    assert failed.returncode == EXIT_ERROR
    assert failed.stderr.startswith("flowledger: error: 0002_add_things_name_index.sql:2:")
    assert "lock timeout" in failed.stderr and len(failed.stderr.splitlines()) == 1
    assert index_validity(url)["things_name_idx"] is False
    return common


def test_interrupted_index_build_is_not_recorded_and_is_rebuilt(
    empty_db_url: str, mdir: Path, tmp_path: Path
) -> None:
    common = interrupt_index_build(empty_db_url, mdir, tmp_path)
    retry = flowledger(tmp_path, "migrate", "apply", *common)
    assert retry.returncode == EXIT_OK, retry.stderr
    assert retry.stdout.split() == ["applied", "0002_add_things_name_index"]
    assert index_validity(empty_db_url)["things_name_idx"] is True
    assert flowledger(tmp_path, "migrate", "status", "--check", *common).returncode == EXIT_OK
    assert flowledger(tmp_path, "migrate", "verify", *common).returncode == EXIT_OK


def test_status_and_verify_report_an_interrupted_index_build(
    empty_db_url: str, mdir: Path, tmp_path: Path
) -> None:
    common = interrupt_index_build(empty_db_url, mdir, tmp_path)
    status = flowledger(tmp_path, "migrate", "status", "--check", "--json", *common)
    assert status.returncode == EXIT_INVALID_INDEX
    doc = json.loads(status.stdout)
    assert doc["invalid_indexes"] == [{"name": "things_name_idx", "table": "things"}]
    assert doc["counts"]["pending"] == 1  # not recorded as applied
    verify = flowledger(tmp_path, "migrate", "verify", *common)
    assert verify.returncode == EXIT_INVALID_INDEX
    assert verify.stdout.strip() == (
        "index things_name_idx on things is invalid (a failed concurrent build)"
    )


def test_an_index_still_invalid_after_its_build_is_not_recorded(
    empty_db_url: str, mdir: Path, tmp_path: Path
) -> None:
    """A build that reports success but leaves the index invalid (here a second statement
    of the migration marks it so, as an interrupted build would) is not recorded."""
    (mdir / "0002_add_things_name_index.sql").write_text(
        INDEXED["0002_add_things_name_index.sql"] + "UPDATE pg_index SET indisvalid = false"
        " WHERE indexrelid = 'things_name_idx'::regclass;\n"
    )
    common = ["--database", empty_db_url, "--migrations-dir", str(mdir)]
    proc = flowledger(tmp_path, "migrate", "apply", *common)
    assert proc.returncode == EXIT_ERROR
    assert proc.stderr == (
        "flowledger: error: 0002_add_things_name_index.sql: index things_name_idx was built"
        " but is invalid; 0002_add_things_name_index is not recorded as applied"
        " (run apply again to rebuild it)\n"
    )
    status = flowledger(tmp_path, "migrate", "status", "--json", *common)
    assert json.loads(status.stdout)["counts"] == {
        "applied": 1,
        "pending": 1,
        "edited": 0,
        "missing": 0,
    }


def test_status_reports_any_invalid_index_of_the_schema(
    empty_db_url: str, mdir: Path, tmp_path: Path
) -> None:
    common = ["--database", empty_db_url, "--migrations-dir", str(mdir)]
    assert flowledger(tmp_path, "migrate", "apply", *common).returncode == EXIT_OK
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO things VALUES (1, 'a'), (2, 'a')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY things_name_key ON things (name)")
    status = flowledger(tmp_path, "migrate", "status", "--check", *common)
    assert status.returncode == EXIT_INVALID_INDEX
    assert "invalid  index things_name_key on things is invalid" in status.stdout
    plain = flowledger(tmp_path, "migrate", "status", *common)
    assert plain.returncode == EXIT_OK and "things_name_key" in plain.stdout
    # An edited migration is the graver finding: exit 4 wins over 5.
    (mdir / "0001_create_things.sql").write_text(INDEXED["0001_create_things.sql"] + "-- edit\n")
    assert flowledger(tmp_path, "migrate", "status", "--check", *common).returncode == EXIT_EDITED
    assert flowledger(tmp_path, "migrate", "verify", *common).returncode == EXIT_EDITED


# -- dry runs write nothing ---------------------------------------------------------------


def test_dry_run_on_a_fresh_database_creates_no_table(
    empty_db_url: str, mdir: Path, tmp_path: Path
) -> None:
    common = ["--database", empty_db_url, "--migrations-dir", str(mdir)]
    dry = flowledger(tmp_path, "migrate", "apply", "--dry-run", *common)
    assert dry.returncode == EXIT_OK, dry.stderr
    assert "would apply 0002_add_things_name_index" in dry.stdout
    assert public_tables(empty_db_url) == set()


def test_dry_run_and_status_work_for_a_read_only_role(
    empty_db_url: str, mdir: Path, tmp_path: Path
) -> None:
    admin = ["--database", empty_db_url, "--migrations-dir", str(mdir)]
    flowledger(tmp_path, "migrate", "apply", "--to", "0001_create_things", *admin)
    before = public_tables(empty_db_url)
    with restricted_role(
        empty_db_url,
        "GRANT CONNECT ON DATABASE {db} TO {role}",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
    ) as reader_url:
        _dry_run_and_status(reader_url, mdir, tmp_path)
    assert public_tables(empty_db_url) == before
    assert "things_name_idx" not in index_validity(empty_db_url)


def _dry_run_and_status(reader_url: str, mdir: Path, tmp_path: Path) -> None:
    common = ["--database", reader_url, "--migrations-dir", str(mdir)]
    dry = flowledger(tmp_path, "migrate", "apply", "--dry-run", "--json", *common)
    assert dry.returncode == EXIT_OK, dry.stderr
    assert json.loads(dry.stdout)["migrations"] == ["0002_add_things_name_index"]
    status = flowledger(tmp_path, "migrate", "status", "--check", *common)
    assert status.returncode == 3 and "pending  0002_add_things_name_index" in status.stdout
    rollback = flowledger(tmp_path, "migrate", "rollback", "--dry-run", *common)
    assert rollback.stdout.strip().endswith("would roll back 0001_create_things")


# -- transaction-mode poolers -------------------------------------------------------------


def test_session_lock_check_passes_on_the_backend_that_holds_the_lock(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        verify_session_lock(conn, conn.info.backend_pid)


def test_session_lock_check_refuses_another_backend_or_a_lost_lock(empty_db_url: str) -> None:
    """What a transaction-mode pooler does: the lock was taken on one server connection,
    the next statement runs on another one."""
    with (
        psycopg.connect(empty_db_url, autocommit=True) as first,
        psycopg.connect(empty_db_url, autocommit=True) as second,
    ):
        first.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        pid = first.info.backend_pid
        with pytest.raises(MigrationError, match="transaction-mode pooler") as moved:
            verify_session_lock(second, pid)
        assert f"server process {pid} took it, {second.info.backend_pid} answers now" in str(
            moved.value
        )
        first.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
        with pytest.raises(MigrationError, match=f"server process {pid} does not hold it"):
            verify_session_lock(first, pid)


# -- settings given to the library ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"wait_timeout": float("nan")}, "--lock-wait"),
        ({"wait_timeout": float("inf")}, "--lock-wait"),
        ({"wait_timeout": -1.0}, "--lock-wait"),
        ({"lock_timeout": "banana"}, "--lock-timeout"),
        ({"statement_timeout": "5 fortnights"}, "--statement-timeout"),
    ],
)
def test_settings_refuse_bad_values_naming_them(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(MigrationError, match=f"^{named} must be"):
        Settings(**kwargs)


# -- the yoyo pin -------------------------------------------------------------------------


def test_yoyo_pin_matches_pyproject_and_refuses_untested_versions() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (lo_major, lo_minor), (hi_major, hi_minor) = YOYO_TESTED
    pin = f"yoyo-migrations>={lo_major}.{lo_minor},<{hi_major}.{hi_minor}"
    assert pin in pyproject["project"]["dependencies"]
    check_yoyo_version()  # the installed one
    check_yoyo_version("9.0.3")
    for untested in ("9.1.0", "10.0", "8.2.0"):
        with pytest.raises(MigrationError, match=f"yoyo-migrations {untested} is installed"):
            check_yoyo_version(untested)


def test_yoyo_reads_the_bookkeeping_flowledger_writes(
    empty_db_url: str, mdir: Path, tmp_path: Path
) -> None:
    from yoyo import get_backend, read_migrations

    common = ["--database", empty_db_url, "--migrations-dir", str(mdir)]
    assert flowledger(tmp_path, "migrate", "apply", *common).returncode == EXIT_OK
    backend = get_backend(empty_db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        migrations = read_migrations(str(mdir))
        assert not backend.to_apply(migrations)
        assert [m.id for m in backend.to_rollback(migrations)] == [
            "0002_add_things_name_index",
            "0001_create_things",
        ]
    finally:
        backend.connection.close()


@pytest.fixture
def transaction_pooler(pg_server: PgServer, empty_db_url: str) -> Iterator[str]:
    """A PgBouncer in pool_mode=transaction in front of the test server; yields the URL of
    the test database through it."""
    with pgbouncer(pg_server, dbname_of(empty_db_url)) as url:
        yield url


def test_a_transaction_mode_pooler_is_refused_and_leaves_no_lock(
    transaction_pooler: str, empty_db_url: str, mdir: Path, tmp_path: Path
) -> None:
    # Three server connections in the pool, so consecutive transactions rotate among them.
    clients = [psycopg.connect(transaction_pooler, prepare_threshold=None) for _ in range(3)]
    for client in clients:
        client.execute("SELECT 1")
    for client in clients:
        client.rollback()
    common = ["--database", transaction_pooler, "--migrations-dir", str(mdir)]
    proc = flowledger(tmp_path, "migrate", "apply", *common)
    for client in clients:
        client.close()
    assert proc.returncode == EXIT_ERROR
    assert proc.stderr.startswith("flowledger: error: refusing to migrate:"), proc.stderr
    assert "transaction-mode pooler" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert public_tables(empty_db_url) == set()
    with psycopg.connect(empty_db_url) as conn:
        held = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND classid::bigint = %s AND objid::bigint = %s",
            (ADVISORY_LOCK_KEY >> 32, ADVISORY_LOCK_KEY & 0xFFFFFFFF),
        ).fetchone()
    assert held == (0,)
