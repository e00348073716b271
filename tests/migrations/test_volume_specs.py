"""The volume generator's table specs match the migrated tables they are copied into.

A migration that adds, drops or retypes a column of such a table, or makes a column the
generator leaves out NOT NULL without a default, fails here until the spec says how the
column is filled: a value per row (with its type), or left to the database.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg
import pytest

from flowledger.tools.volume import OUTBOX, PLAN, Table, columns, family

TABLES = [table for top in PLAN for table in family(top.table)]


def _live_columns(conn: psycopg.Connection[Any], table: str) -> dict[str, tuple[str, bool]]:
    """Per column: its type (udt name, arrays as text[]) and whether the database fills it."""
    rows = conn.execute(
        """SELECT column_name, udt_name,
                  column_default IS NOT NULL OR is_identity = 'YES'
                  OR is_generated = 'ALWAYS' OR is_nullable = 'YES'
             FROM information_schema.columns
            WHERE table_schema = 'public' AND table_name = %s""",
        (table,),
    )
    return {
        name: (f"{udt[1:]}[]" if udt.startswith("_") else udt, fillable)
        for name, udt, fillable in rows
    }


def mismatches(conn: psycopg.Connection[Any], table: Table[Any, Any]) -> list[str]:
    """How `table`'s spec and the live table differ, one line each (none: they match)."""
    live = _live_columns(conn, table.name)
    problems = []
    for column in table.columns:
        if column.name not in live:
            problems.append(f"{table.name}.{column.name}: no such column")
        elif live[column.name][0] != column.type:
            problems.append(
                f"{table.name}.{column.name}: the spec says {column.type},"
                f" the table has {live[column.name][0]}"
            )
    for name in sorted(table.by_database):
        if name not in live:
            problems.append(f"{table.name}.{name}: no such column")
        elif not live[name][1]:
            problems.append(f"{table.name}.{name}: left to the database but NOT NULL, no default")
    specified = {column.name for column in table.columns} | table.by_database
    problems += [
        f"{table.name}.{name}: not in the spec" for name in sorted(live.keys() - specified)
    ]
    return problems


def test_every_spec_matches_its_migrated_table(conn: psycopg.Connection[Any]) -> None:
    assert [problem for table in TABLES for problem in mismatches(conn, table)] == []


def test_tables_are_loaded_after_the_tables_they_reference() -> None:
    names = [table.name for table in TABLES]
    for position, table in enumerate(TABLES):
        assert table.refs.isdisjoint(names[position:]), table.name


def test_no_column_is_both_written_and_left_to_the_database() -> None:
    for table in TABLES:
        assert {column.name for column in table.columns}.isdisjoint(table.by_database)


def test_refs_are_the_tables_the_written_columns_reference(
    conn: psycopg.Connection[Any],
) -> None:
    for table in TABLES:
        written = {column.name for column in table.columns}
        keys = conn.execute(
            """SELECT k.confrelid::regclass::text, array_agg(a.attname::text)
                 FROM pg_constraint AS k
                 JOIN pg_attribute AS a ON a.attrelid = k.conrelid AND a.attnum = ANY(k.conkey)
                WHERE k.contype = 'f' AND k.conrelid = %s::regclass
                GROUP BY k.oid, k.confrelid""",
            (table.name,),
        ).fetchall()
        referenced = {target for target, cols in keys if written.issuperset(cols)}
        assert table.refs == referenced, table.name


@pytest.mark.parametrize(
    ("migration", "problem"),
    [
        ("ADD COLUMN region text NOT NULL", "outbox.region: not in the spec"),
        ("ADD COLUMN region text NOT NULL DEFAULT 'eu'", "outbox.region: not in the spec"),
        ("DROP COLUMN published_at", "outbox.published_at: no such column"),
        (
            "ALTER COLUMN aggregate_type TYPE varchar(40)",
            "outbox.aggregate_type: the spec says text, the table has varchar",
        ),
        (
            "ALTER COLUMN last_error SET NOT NULL",
            "outbox.last_error: left to the database but NOT NULL, no default",
        ),
    ],
)
def test_a_migration_the_spec_does_not_follow_is_reported(
    conn: psycopg.Connection[Any], migration: str, problem: str
) -> None:
    conn.execute(f"ALTER TABLE outbox {migration}")

    assert mismatches(conn, OUTBOX) == [problem]


def test_a_spec_missing_a_column_is_reported(conn: psycopg.Connection[Any]) -> None:
    short = dataclasses.replace(OUTBOX, columns=OUTBOX.columns[:-1])

    assert mismatches(conn, short) == ["outbox.published_at: not in the spec"]


def test_columns_reads_name_type_pairs_and_refuses_anything_else() -> None:
    assert columns("id uuid, tags text[]") == (("id", "uuid"), ("tags", "text[]"))
    with pytest.raises(ValueError):
        columns("id uuid, confidence double precision")
