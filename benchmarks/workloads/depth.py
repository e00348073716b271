"""A page at depth 100,000: flowledger's keyset page there vs its first page, and the same
keyset SQL by hand vs OFFSET 100,000 (which reads and discards every row before it)."""

from __future__ import annotations

import datetime
import uuid

from flowledger.records.runs import Execution
from flowledger.repositories.pagination import Page
from measure import Op

from ._context import Context
from ._plan import Plan
from ._tables import COLUMNS

NAME = "depth"
TITLE = "page at depth 100,000"
COMPARES = "flowledger's page at depth 100,000 vs its first page; keyset SQL vs OFFSET"
DEPTH = 100_000
MIN_SCALE = DEPTH + 50
CALLS = 100  # pages per measured call (a tenth of that for OFFSET)
KEYSET_SQL = (
    f"SELECT {COLUMNS} FROM workflow_executions WHERE (created_at, id) < (%s, %s)"
    " ORDER BY created_at DESC, id DESC LIMIT 50"
)
OFFSET_SQL = (
    f"SELECT {COLUMNS} FROM workflow_executions ORDER BY created_at DESC, id DESC"
    " OFFSET %s LIMIT 50"
)


def setup(ctx: Context) -> Plan:
    """The four contenders, after walking flowledger's pages (untimed) down to DEPTH."""
    page = _page_at_depth(ctx)
    last = page.items[-1]
    deep_cursor = page.next_cursor
    assert deep_cursor
    contenders = {
        "flowledger first page": _first_page(ctx),
        "flowledger page at depth 100,000": _deep_page(ctx, deep_cursor),
        "keyset SQL at depth 100,000": _keyset_sql(ctx, last.created_at, last.id),
        "OFFSET 100,000 SQL": _offset_sql(ctx),
    }
    return Plan(contenders)


def _page_at_depth(ctx: Context) -> Page[Execution]:
    page = ctx.db.executions.list(limit=500)
    for _ in range(DEPTH // 500 - 1):
        assert page.next_cursor
        page = ctx.db.executions.list(limit=500, cursor=page.next_cursor)
    return page


def _first_page(ctx: Context) -> Op:
    def run() -> int:
        for _ in range(CALLS):
            ctx.db.executions.list(limit=50)
        return CALLS

    return run


def _deep_page(ctx: Context, cursor: str) -> Op:
    def run() -> int:
        for _ in range(CALLS):
            ctx.db.executions.list(limit=50, cursor=cursor)
        return CALLS

    return run


def _keyset_sql(ctx: Context, created_at: datetime.datetime, id: uuid.UUID) -> Op:
    cur = ctx.psy.cursor()

    def run() -> int:
        for _ in range(CALLS):
            cur.execute(KEYSET_SQL, (created_at, id))
            cur.fetchall()
        return CALLS

    return run


def _offset_sql(ctx: Context) -> Op:
    cur = ctx.psy.cursor()

    def run() -> int:
        for _ in range(CALLS // 10):
            cur.execute(OFFSET_SQL, (DEPTH,))
            cur.fetchall()
        return CALLS // 10

    return run
