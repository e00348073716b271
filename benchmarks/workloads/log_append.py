"""Appending 100,000 step-log lines: flowledger's COPY path (`step_logs.append`) vs psycopg
binary COPY and executemany, asyncpg `copy_records_to_table`, SQLAlchemy ORM `add_all` and
Core insert; then the peak Python memory of each, in a separate untimed pass. Each call
starts from an empty step_logs; the table is left empty. flowledger appends in calls of its
maximum, 10,000 lines (one COPY each); the peers write all 100,000 rows in one go."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import sqlalchemy as sa
from psycopg.types.json import Jsonb
from sqlalchemy import orm

from flowledger.records.runs import NewLogLine
from flowledger.repositories._checks import MAX_ITEMS
from measure import Op

from ._context import Context
from ._plan import Plan
from ._tables import LOG_COLUMNS, LogRow

NAME = "log_append"
TITLE = "append 100,000 log lines (rows/s)"
COMPARES = "step_logs.append vs psycopg COPY and executemany, asyncpg COPY, SQLAlchemy"
MIN_SCALE = 34  # 100 steps to log to (3 per execution)
TOTAL = 100_000
MEMORY = "peak Python memory of the append (MiB)"
Row = tuple[uuid.UUID, uuid.UUID, str, str, dict[str, Any], datetime.datetime]


def setup(ctx: Context) -> Plan:
    """Every contender's append of the same TOTAL rows, fewer rounds (they are heavy)."""
    raw = _rows(ctx)
    contenders = {
        "flowledger step_logs.append": _flowledger(ctx, raw),
        "psycopg binary COPY": _psycopg_copy(ctx, raw),
        "psycopg executemany": _psycopg_executemany(ctx, raw),
        "asyncpg copy_records_to_table": _asyncpg_copy(ctx, raw),
        "SQLAlchemy ORM add_all": _sa_orm(ctx, raw),
        "SQLAlchemy Core insert": _sa_core(ctx, raw),
    }
    return Plan(
        contenders,
        repeats=lambda repeats: max(3, repeats // 2),
        memory=MEMORY,
        finish=lambda: _truncate(ctx),
    )


def _rows(ctx: Context) -> list[Row]:
    """TOTAL log lines spread over 100 existing steps."""
    steps = ctx.psy.execute("SELECT id, execution_id FROM execution_steps LIMIT 100").fetchall()
    now = datetime.datetime.now(datetime.UTC)
    return [
        (s, e, "info", f"line {k} of the benchmark", {"k": k}, now)
        for k, (s, e) in ((k, steps[k % 100]) for k in range(TOTAL))
    ]


def _truncate(ctx: Context) -> None:
    ctx.psy.execute("TRUNCATE step_logs")


def _flowledger(ctx: Context, raw: list[Row]) -> Op:
    def run() -> int:
        _truncate(ctx)
        lines = [
            NewLogLine(step_id=s, execution_id=e, message=m, level="info", fields=f, logged_at=t)
            for s, e, _, m, f, t in raw
        ]
        # step_logs.append takes at most MAX_ITEMS lines a call (one COPY each).
        return sum(
            ctx.db.step_logs.append(lines=lines[i : i + MAX_ITEMS])
            for i in range(0, TOTAL, MAX_ITEMS)
        )

    return run


def _psycopg_copy(ctx: Context, raw: list[Row]) -> Op:
    sql = f"COPY step_logs ({', '.join(LOG_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

    def run() -> int:
        _truncate(ctx)
        with ctx.psy.transaction(), ctx.psy.cursor() as c, c.copy(sql) as cp:
            cp.set_types(["uuid", "uuid", "text", "text", "jsonb", "timestamptz"])
            for row in raw:  # set_types fixes the jsonb dumper: dicts go in as they are
                cp.write_row(row)
        return TOTAL

    return run


def _psycopg_executemany(ctx: Context, raw: list[Row]) -> Op:
    sql = f"INSERT INTO step_logs ({', '.join(LOG_COLUMNS)}) VALUES (%s, %s, %s, %s, %s, %s)"

    def run() -> int:
        _truncate(ctx)
        with ctx.psy.transaction(), ctx.psy.cursor() as c:
            c.executemany(sql, [(s, e, lv, m, Jsonb(f), t) for s, e, lv, m, f, t in raw])
        return TOTAL

    return run


def _asyncpg_copy(ctx: Context, raw: list[Row]) -> Op:
    async def copy() -> int:
        await ctx.apg_copy.execute("TRUNCATE step_logs")
        await ctx.apg_copy.copy_records_to_table(
            "step_logs", records=raw, columns=list(LOG_COLUMNS)
        )
        return TOTAL

    return lambda: ctx.loop.run_until_complete(copy())


def _sa_orm(ctx: Context, raw: list[Row]) -> Op:
    def run() -> int:
        _truncate(ctx)
        with orm.Session(ctx.engine) as session:
            session.add_all(
                LogRow(step_id=s, execution_id=e, level=lv, message=m, fields=f, logged_at=t)
                for s, e, lv, m, f, t in raw
            )
            session.commit()
        return TOTAL

    return run


def _sa_core(ctx: Context, raw: list[Row]) -> Op:
    def run() -> int:
        _truncate(ctx)
        with ctx.engine.begin() as c:
            c.execute(sa.insert(LogRow), [dict(zip(LOG_COLUMNS, r, strict=True)) for r in raw])
        return TOTAL

    return run
