"""Every failure of the real `flowledger` CLI is one line on stderr and a documented code."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from _migrations import write_migrations
from _roles import restricted_role
from flowledger.tools.cli import EXIT_ERROR, EXIT_OK, EXIT_PENDING, EXIT_USAGE

MIGRATIONS = {
    "0001_create_things.sql": "-- things\nCREATE TABLE things (id int PRIMARY KEY);\n",
    "0001_create_things.rollback.sql": "DROP TABLE things;\n",
}


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    return write_migrations(tmp_path, MIGRATIONS)


def fails_in_one_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The single stderr line of a failed run, after checking its exit code."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def flowledger(
    cwd: Path, *argv: str, stdout: int = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI the way a pipeline does."""
    return subprocess.run(
        [sys.executable, "-m", "flowledger.tools.cli", *argv],
        stderr=subprocess.PIPE,
        stdout=stdout,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_connection_lost_inside_a_migration_names_the_file(
    empty_db_url: str, mdir: Path, tmp_path: Path
) -> None:
    (mdir / "0002_end_session.sql").write_text(
        "-- the server ends this session\nSELECT pg_terminate_backend(pg_backend_pid());\n"
    )
    proc = flowledger(
        tmp_path, "migrate", "apply", "--database", empty_db_url, "--migrations-dir", str(mdir)
    )
    line = fails_in_one_line(proc, EXIT_ERROR)
    assert line.startswith("flowledger: error: 0002_end_session.sql:2: statement failed:")
    assert "terminating connection" in line


def test_connection_killed_from_outside_during_a_migration_names_the_file(
    empty_db_url: str, mdir: Path, tmp_path: Path
) -> None:
    (mdir / "0002_wait_long.sql").write_text("-- slow\nSELECT pg_sleep(60);\n")

    def kill_the_sleeper() -> None:
        with psycopg.connect(empty_db_url, autocommit=True) as admin:
            for _ in range(600):
                row = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep(60)%'"
                ).fetchone()
                if row:
                    return
                time.sleep(0.05)

    killer = threading.Thread(target=kill_the_sleeper)
    killer.start()
    proc = flowledger(
        tmp_path, "migrate", "apply", "--database", empty_db_url, "--migrations-dir", str(mdir)
    )
    killer.join()
    line = fails_in_one_line(proc, EXIT_ERROR)
    assert line.startswith("flowledger: error: 0002_wait_long.sql:2: statement failed:")
    with psycopg.connect(empty_db_url) as conn:
        rows = conn.execute("SELECT migration_id FROM _yoyo_migration").fetchall()
    assert rows == [("0001_create_things",)]


def public_tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}


def test_role_without_create_rights(empty_db_url: str, mdir: Path, tmp_path: Path) -> None:
    with restricted_role(empty_db_url, "GRANT CONNECT ON DATABASE {db} TO {role}") as url:
        proc = flowledger(
            tmp_path, "migrate", "apply", "--database", url, "--migrations-dir", str(mdir)
        )
    line = fails_in_one_line(proc, EXIT_ERROR)
    assert "cannot create the migration bookkeeping tables" in line
    assert "permission denied for schema public" in line and "needs CREATE" in line
    assert public_tables(empty_db_url) == set()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--lock-timeout", "banana"),
        ("--statement-timeout", "banana"),
        ("--lock-timeout", "10 parsecs"),
        ("--lock-wait", "nan"),
        ("--lock-wait", "inf"),
        ("--lock-wait", "-1"),
        ("--lock-wait", "banana"),
    ],
)
def test_bad_timeout_options_are_usage_errors(
    empty_db_url: str, mdir: Path, tmp_path: Path, option: str, value: str
) -> None:
    proc = flowledger(
        tmp_path,
        "migrate",
        "apply",
        "--database",
        empty_db_url,
        "--migrations-dir",
        str(mdir),
        f"{option}={value}",
    )
    line = fails_in_one_line(proc, EXIT_USAGE)
    assert line.startswith(f"flowledger migrate apply: usage error: argument {option}:")
    assert repr(value) in line
    assert public_tables(empty_db_url) == set()


def test_timeout_out_of_the_servers_range_names_the_option(
    empty_db_url: str, mdir: Path, tmp_path: Path
) -> None:
    proc = flowledger(
        tmp_path,
        *("migrate", "apply", "--database", empty_db_url, "--migrations-dir", str(mdir)),
        "--statement-timeout=99999999999s",
    )
    line = fails_in_one_line(proc, EXIT_ERROR)
    assert line.startswith("flowledger: error: --statement-timeout '99999999999s':")
    assert public_tables(empty_db_url) == set()


@pytest.mark.parametrize("command", ["status", "verify", "apply"])
def test_json_into_a_closed_pipe(
    empty_db_url: str, mdir: Path, tmp_path: Path, command: str
) -> None:
    """`flowledger migrate status --json | head -c0`: the reader is gone before the write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = flowledger(
            tmp_path,
            *("migrate", command, "--json", "--database", empty_db_url),
            *("--migrations-dir", str(mdir)),
            stdout=write_end,
        )
    finally:
        os.close(write_end)
    line = fails_in_one_line(proc, EXIT_ERROR)
    assert line == "flowledger: error: stdout was closed before the output was written"


def test_apply_against_a_read_only_database(empty_db_url: str, mdir: Path, tmp_path: Path) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        dbname = admin.info.dbname
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
                sql.Identifier(dbname)
            )
        )
    common = ["--database", empty_db_url, "--migrations-dir", str(mdir)]
    line = fails_in_one_line(flowledger(tmp_path, "migrate", "apply", *common), EXIT_ERROR)
    assert line == (
        "flowledger: error: the database is read-only (a standby, or"
        " default_transaction_read_only is on): run migrations against the primary"
    )
    rollback = flowledger(tmp_path, "migrate", "rollback", *common)
    assert fails_in_one_line(rollback, EXIT_ERROR) == line
    # Reading still works: a dry run and status tell what would happen.
    dry = flowledger(tmp_path, "migrate", "apply", "--dry-run", *common)
    assert dry.returncode == EXIT_OK and "would apply 0001_create_things" in dry.stdout
    status = flowledger(tmp_path, "migrate", "status", "--check", *common)
    assert status.returncode == EXIT_PENDING and "pending  0001_create_things" in status.stdout
    verify = flowledger(tmp_path, "migrate", "verify", *common)
    assert verify.returncode == EXIT_OK, verify.stderr
    assert public_tables(empty_db_url) == set()


def test_unreadable_migration_file(empty_db_url: str, mdir: Path, tmp_path: Path) -> None:
    (mdir / "0002_add_latin1.sql").write_bytes(b"-- caf\xe9\nSELECT 1;\n")
    proc = flowledger(
        tmp_path, "migrate", "status", "--database", empty_db_url, "--migrations-dir", str(mdir)
    )
    line = fails_in_one_line(proc, EXIT_ERROR)
    assert line.startswith(f"flowledger: error: {mdir / '0002_add_latin1.sql'}: cannot read")
    assert "utf-8" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["migrate", "apply", "--bogus"], "usage error: unrecognized arguments: --bogus"),
        (["migrate"], "flowledger migrate: usage error: the following arguments are required"),
        (["migrate", "rollback", "--steps"], "argument --steps: expected one argument"),
    ],
)
def test_usage_errors_are_one_line(tmp_path: Path, argv: list[str], message: str) -> None:
    line = fails_in_one_line(flowledger(tmp_path, *argv), EXIT_USAGE)
    assert message in line and line.endswith("--help)")
