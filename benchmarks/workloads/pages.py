"""A keyset page of 50 executions decoded into records: flowledger `db.executions.list`
(pooled, and pinned to one connection) vs psycopg and asyncpg running the very SQL
flowledger runs for that call (`list_executions`, its optional filters NULL, which isolates
driver and decoding cost), SQLAlchemy ORM and Core running their idiomatic query, and
`pgbench -M prepared` running flowledger's SQL (the C ceiling)."""

from __future__ import annotations

import re
from itertools import starmap
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from flowledger.records.runs import Execution
from flowledger.repositories.queries import get_queries
from measure import Op, pgbench

from ._context import Context
from ._plan import Direct, Plan
from ._tables import EXECUTIONS, ExecutionRow

NAME = "pages"
TITLE = "keyset page of 50 records"
COMPARES = "db.executions.list vs psycopg, asyncpg, SQLAlchemy ORM and Core, pgbench"
MIN_SCALE = 50  # one full page
CALLS = 200  # pages per measured call


def setup(ctx: Context) -> Plan:
    """Every contender's loop of CALLS first pages, and pgbench's ceiling."""
    list_sql = get_queries()["list_executions"].sql
    # pgbench variables cannot be NULL: the filters go in as NULL literals. The body
    # without its name comment: pgbench would read `:list_executions` as a variable.
    script = (
        re.sub(r"%\((?!limit)\w+\)s", "NULL", get_queries()["list_executions"].text)
        .replace("%(limit)s", ":limit")
        .replace("%%", "%")
        + ";\n"
    )
    ceiling = Direct(lambda: pgbench(ctx.url, script, seconds=3, defines={"limit": "50"}), 3)
    contenders = {
        "flowledger": _flowledger(ctx),
        "flowledger, db.pinned()": _flowledger_pinned(ctx),
        "psycopg (tuned)": _psycopg_tuned(ctx, list_sql),
        "asyncpg + msgspec": _asyncpg(ctx, list_sql),
        "SQLAlchemy ORM (its own query)": _sa_orm(ctx),
        "SQLAlchemy Core (its own query)": _sa_core(ctx),
    }
    return Plan(contenders, direct={"pgbench -M prepared (C)": ceiling})


def _params(list_sql: str) -> tuple[list[str], dict[str, Any]]:
    """The query's parameter names in order of first use, and their values (filters NULL)."""
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", list_sql)))
    params: dict[str, Any] = dict.fromkeys(names)
    params["limit"] = 50
    return names, params


def _flowledger(ctx: Context) -> Op:
    def run() -> int:
        for _ in range(CALLS):
            ctx.db.executions.list(limit=50)
        return CALLS

    return run


def _flowledger_pinned(ctx: Context) -> Op:
    def run() -> int:
        with ctx.db.pinned() as pinned:
            for _ in range(CALLS):
                pinned.executions.list(limit=50)
        return CALLS

    return run


def _psycopg_tuned(ctx: Context, list_sql: str) -> Op:
    cur = ctx.psy.cursor()
    _, params = _params(list_sql)

    def run() -> int:
        for _ in range(CALLS):
            cur.execute(list_sql, params)
            list(starmap(Execution, cur.fetchall()))
        return CALLS

    return run


def _asyncpg(ctx: Context, list_sql: str) -> Op:
    names, params = _params(list_sql)
    apg_sql = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", list_sql).replace(
        "%%", "%"
    )

    async def loop() -> int:
        stmt = await ctx.apg.prepare(apg_sql)
        args = [params[k] for k in names]
        for _ in range(CALLS):
            list(starmap(Execution, await stmt.fetch(*args)))
        return CALLS

    return lambda: ctx.loop.run_until_complete(loop())


def _sa_orm(ctx: Context) -> Op:
    stmt = (
        sa.select(ExecutionRow)
        .order_by(ExecutionRow.created_at.desc(), ExecutionRow.id.desc())
        .limit(50)
    )

    def run() -> int:
        for _ in range(CALLS):
            with orm.Session(ctx.engine) as session:
                session.scalars(stmt).all()
        return CALLS

    return run


def _sa_core(ctx: Context) -> Op:
    stmt = (
        sa.select(EXECUTIONS)
        .order_by(EXECUTIONS.c.created_at.desc(), EXECUTIONS.c.id.desc())
        .limit(50)
    )

    def run() -> int:
        with ctx.engine.connect() as c:
            for _ in range(CALLS):
                c.execute(stmt).all()
        return CALLS

    return run
