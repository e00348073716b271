"""Point lookup of an execution by id: flowledger `db.executions.get` (pooled, and pinned to
one connection) vs hand-written psycopg (its fastest settings, and through psycopg_pool),
asyncpg, SQLAlchemy 2 ORM `Session.get` and Core, and `pgbench -M prepared` running the
same SQL (the C ceiling). Each call looks up the same sample of up to 2,000 ids."""

from __future__ import annotations

from typing import Any

import msgspec
import sqlalchemy as sa
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool
from sqlalchemy import orm

from flowledger.records.runs import Execution
from measure import Op, pgbench

from ._context import Context
from ._plan import Direct, Plan
from ._tables import COLUMNS, EXECUTIONS, ExecutionRow

NAME = "lookups"
TITLE = "point lookup by id"
COMPARES = "db.executions.get vs psycopg, psycopg_pool, asyncpg, SQLAlchemy ORM and Core, pgbench"
# Its sample of up to 2,000 ids is drawn from 5 % of the table's pages: enough to fill it.
MIN_SCALE = 40_000
LOOKUP_SQL = f"SELECT {COLUMNS} FROM workflow_executions WHERE id = %s"


def setup(ctx: Context) -> Plan:
    """Every contender's lookup loop; the pool opened for psycopg_pool closes at the end."""
    pool = _pool(ctx.url)
    script = LOOKUP_SQL.replace("%s", ":id::uuid") + ";\n"
    ceiling = Direct(
        lambda: pgbench(ctx.url, script, seconds=3, defines={"id": str(ctx.ids[0])}), samples=3
    )
    contenders = {
        "flowledger": _flowledger(ctx),
        "flowledger, db.pinned()": _flowledger_pinned(ctx),
        "psycopg (tuned)": _psycopg_tuned(ctx),
        "psycopg + psycopg_pool": _psycopg_pool(ctx, pool),
        "asyncpg + msgspec": _asyncpg(ctx),
        "SQLAlchemy ORM Session.get": _sa_orm(ctx),
        "SQLAlchemy Core": _sa_core(ctx),
    }
    return Plan(contenders, finish=pool.close, direct={"pgbench -M prepared (C)": ceiling})


def _pool(url: str) -> ConnectionPool[Any]:
    pool: ConnectionPool[Any] = ConnectionPool(
        url,
        min_size=1,
        max_size=1,
        kwargs={"autocommit": True, "options": "-c TimeZone=UTC"},
        configure=lambda c: set_json_loads(msgspec.json.decode, c),
    )
    pool.wait()
    return pool


def _flowledger(ctx: Context) -> Op:
    def run() -> int:
        get = ctx.db.executions.get
        for i in ctx.ids:
            get(id=i)
        return len(ctx.ids)

    return run


def _flowledger_pinned(ctx: Context) -> Op:
    def run() -> int:
        with ctx.db.pinned() as pinned:
            get = pinned.executions.get
            for i in ctx.ids:
                get(id=i)
        return len(ctx.ids)

    return run


def _psycopg_tuned(ctx: Context) -> Op:
    cur = ctx.psy.cursor(row_factory=lambda _c: lambda values: Execution(*values))

    def run() -> int:
        for i in ctx.ids:
            cur.execute(LOOKUP_SQL, (i,))
            cur.fetchone()
        return len(ctx.ids)

    return run


def _psycopg_pool(ctx: Context, pool: ConnectionPool[Any]) -> Op:
    def run() -> int:
        for i in ctx.ids:
            with pool.connection() as c:
                c.cursor().execute(LOOKUP_SQL, (i,)).fetchone()
        return len(ctx.ids)

    return run


def _asyncpg(ctx: Context) -> Op:
    async def loop() -> int:
        stmt = await ctx.apg.prepare(LOOKUP_SQL.replace("%s", "$1"))
        for i in ctx.ids:
            Execution(*(await stmt.fetchrow(i)))
        return len(ctx.ids)

    return lambda: ctx.loop.run_until_complete(loop())


def _sa_orm(ctx: Context) -> Op:
    def run() -> int:
        with orm.Session(ctx.engine) as session:
            for i in ctx.ids:
                session.get(ExecutionRow, i)
        return len(ctx.ids)

    return run


def _sa_core(ctx: Context) -> Op:
    stmt = sa.select(EXECUTIONS).where(EXECUTIONS.c.id == sa.bindparam("id"))

    def run() -> int:
        with ctx.engine.connect() as c:
            for i in ctx.ids:
                c.execute(stmt, {"id": i}).one()
        return len(ctx.ids)

    return run
