"""The real migrations: round trip, equivalence with sql/schema.sql, naming, lint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flowledger._resources import migrations_dir, sql_dir
from flowledger.tools.migrate import Migrator, load_migrations

BOOKKEEPING = (
    "_yoyo_migration",
    "_yoyo_log",
    "_yoyo_version",
    "yoyo_lock",
    "_flowledger_migration_checksum",
)


def snapshot(url: str) -> dict[str, Any]:
    """A normalised description of the public schema, comparable across databases."""
    with psycopg.connect(url) as conn:

        def rows(query: str) -> list[tuple[Any, ...]]:
            return sorted(conn.execute(query, {"skip": list(BOOKKEEPING)}).fetchall())

        return {
            "columns": rows(
                """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                          pg_get_expr(d.adbin, d.adrelid), a.attgenerated, a.attidentity
                     FROM pg_attribute a
                     JOIN pg_class c ON c.oid = a.attrelid
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
                      AND a.attnum > 0 AND NOT a.attisdropped AND c.relname <> ALL(%(skip)s)"""
            ),
            "column_order": rows(
                """SELECT c.relname, string_agg(a.attname, ',' ORDER BY a.attnum)
                     FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                      AND a.attnum > 0 AND NOT a.attisdropped AND c.relname <> ALL(%(skip)s)
                    GROUP BY c.relname"""
            ),
            "constraints": rows(
                """SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid),
                          k.condeferrable, k.condeferred
                     FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'public' AND c.relname <> ALL(%(skip)s)"""
            ),
            "indexes": rows(
                """SELECT tablename, indexname, indexdef FROM pg_indexes
                    WHERE schemaname = 'public' AND tablename <> ALL(%(skip)s)"""
            ),
            "triggers": rows(
                """SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
                     FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'public' AND NOT t.tgisinternal"""
            ),
            "functions": rows(
                """SELECT p.proname, pg_get_function_identity_arguments(p.oid),
                          pg_get_function_result(p.oid), p.provolatile,
                          (SELECT lanname FROM pg_language l WHERE l.oid = p.prolang),
                          md5(regexp_replace(p.prosrc, '\\s+', ' ', 'g'))
                     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE n.nspname = 'public'"""
            ),
            "sequences": rows(
                """SELECT sequencename, data_type::text FROM pg_sequences
                    WHERE schemaname = 'public'"""
            ),
            "extensions": rows("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql'"),
        }


def test_migrations_produce_exactly_schema_sql(db_url: str, empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        # No parameters: psycopg sends the file with the simple protocol, many statements at once.
        conn.execute((sql_dir() / "schema.sql").read_text().encode())
    migrated, from_file = snapshot(db_url), snapshot(empty_db_url)
    assert migrated["columns"], "the migrated schema is empty"
    for part in migrated:
        assert migrated[part] == from_file[part], (
            f"sql/schema.sql differs from the migrations in {part}"
        )


def test_apply_rollback_all_apply_round_trip(empty_db_url: str) -> None:
    with Migrator(empty_db_url) as mig:
        applied = mig.apply().migrations
        assert applied == [m.id for m in mig.migrations]
        first = snapshot(empty_db_url)
        rolled = mig.rollback(all_=True).migrations
        assert rolled == list(reversed(applied))
        empty = snapshot(empty_db_url)
        assert all(not empty[part] for part in ("columns", "indexes", "triggers", "functions"))
        mig.apply()
        assert snapshot(empty_db_url) == first
        assert all(s.state == "applied" for s in mig.status())


def test_every_migration_can_be_rolled_back_one_by_one(empty_db_url: str) -> None:
    with Migrator(empty_db_url) as mig:
        mig.apply()
        for _ in mig.migrations:
            assert len(mig.rollback(steps=1).migrations) == 1
        assert snapshot(empty_db_url)["columns"] == []


def test_migration_files_are_named_and_paired() -> None:
    migrations = load_migrations()
    assert migrations, "no migrations found"
    numbers = [int(m.id[:4]) for m in migrations]
    assert numbers == list(range(1, len(numbers) + 1)), "migration numbers must be contiguous"
    for m in migrations:
        assert re.fullmatch(r"\d{4}_[a-z]+(_[a-z0-9]+)+", m.id)
        assert m.rollback_path is not None, f"{m.id} has no .rollback.sql"
        first_line = m.path.read_text().splitlines()[0]
        assert first_line.startswith("--"), f"{m.id} must open with a comment saying what it does"
    stray = {p.name for p in migrations_dir().iterdir()} - {
        n
        for m in migrations
        for n in (m.path.name, m.rollback_path.name if m.rollback_path else "")
    }
    assert stray == set(), f"unexpected files in migrations/: {stray}"


def test_migrations_pass_squawk() -> None:
    squawk = shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
    if not Path(squawk).exists():
        pytest.fail("squawk (squawk-cli) is not installed: pip install -e '.[dev]'")
    files = [str(m.path) for m in load_migrations()]
    config = Path(__file__).resolve().parents[2] / ".squawk.toml"
    proc = subprocess.run(
        [squawk, "--config", str(config), *files], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
