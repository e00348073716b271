# Generated from src/flowledger/aio/repositories/base.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""What every repository shares: where its connection comes from, and row decoding.

A repository method names its query and binds parameters; the query's own annotations
(``-- returns:`` and ``-- record:`` in sql/) decide how its rows are fetched and decoded.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from itertools import starmap
from typing import TYPE_CHECKING, Any, Protocol
from weakref import WeakKeyDictionary

import psycopg

from flowledger.errors import NotFound, translate_error, translating
from flowledger.repositories._checks import as_optional_uuid, as_uuid
from flowledger.repositories.pagination import CursorCodec
from flowledger.repositories.queries import Query, get_queries, lookup_query

if TYPE_CHECKING:
    from flowledger.repositories.registry import ReadRepositories

__all__ = [
    "Connection",
    "ConnectionExecutor",
    "Executor",
    "PoolExecutor",
    "Repository",
    "as_optional_uuid",
    "as_uuid",
]

Params = Mapping[str, Any]
query_log = logging.getLogger("flowledger.query")
pool_log = logging.getLogger("flowledger.pool")
_clock = time.perf_counter
Connection = psycopg.Connection[Any]
Cursor = psycopg.Cursor[Any]


class Executor(Protocol):
    """Hands out the connection (or a ready cursor) a repository call runs on."""

    def connection(self) -> AbstractContextManager[Connection]:
        """A connection: from the pool (committed on exit) or the enclosing transaction's."""
        ...

    def cursor(self) -> AbstractContextManager[Cursor]:
        """A cursor on that connection, for one statement and its rows."""
        ...


# One reusable cursor per pooled connection: building a cursor per call cost ~12 % of a
# point lookup. A borrowed connection serves one caller at a time, so does its cursor.
_CURSORS: WeakKeyDictionary[Connection, Cursor] = WeakKeyDictionary()


def _cursor(conn: Connection) -> Cursor:
    cur = _CURSORS.get(conn)
    if cur is None or cur.closed:
        cur = _CURSORS[conn] = conn.cursor()
    return cur


class _Borrowed:
    """Borrow a pool connection for one call and give it back (a class, not a generator:
    this runs on every repository call)."""

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def __enter__(self) -> Connection:
        started = _clock()
        conn: Connection = self._pool.getconn()
        if _clock() - started > self._pool.wait_warning:
            _waited(self._pool, _clock() - started)
        self._conn = conn
        return conn

    def __exit__(self, *exc: object) -> None:
        # Connections are in autocommit mode; one returned inside a transaction (an
        # exception escaped an explicit block) is rolled back by the pool.
        self._pool.putconn(self._conn)


class _BorrowedCursor(_Borrowed):
    """Borrow a pool connection for one statement; hands out its reusable cursor."""

    __slots__ = ()

    def __enter__(self) -> Cursor:  # type: ignore[override]
        started = _clock()
        conn: Connection = self._pool.getconn()
        if _clock() - started > self._pool.wait_warning:
            _waited(self._pool, _clock() - started)
        self._conn = conn
        return _cursor(conn)


def _waited(pool: Any, seconds: float) -> None:
    stats = pool.get_stats()
    pool_log.warning(
        "waited %.3f s for a pooled connection (size %d of max %d, %d callers waiting)",
        seconds,
        stats.get("pool_size", 0),
        pool.max_size,
        stats.get("requests_waiting", 0),
    )


class _Fixed:
    """The one connection of an enclosing transaction."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def __enter__(self) -> Connection:
        return self._conn

    def __exit__(self, *exc: object) -> None:
        return None


class _FixedCursor(_Fixed):
    """A cursor on the transaction's connection. Tasks sharing one transaction share its
    connection, never a cursor: each statement gets its own, so one task's rows cannot be
    replaced by another's statement between execute and fetch. (A thread-confined sync
    transaction keeps the reusable cursor.)"""

    __slots__ = ()

    def __enter__(self) -> Cursor:  # type: ignore[override]
        return _cursor(self._conn)


class PoolExecutor:
    """Each call borrows a pool connection and returns it when done."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def connection(self) -> AbstractContextManager[Connection]:
        """A pooled connection for one repository call."""
        return _Borrowed(self._pool)

    def cursor(self) -> AbstractContextManager[Cursor]:
        """The reusable cursor of a pooled connection, for one statement."""
        return _BorrowedCursor(self._pool)


class ConnectionExecutor:
    """Every call runs on one connection, inside the transaction its owner opened."""

    def __init__(self, conn: Connection) -> None:
        self._fixed = _Fixed(conn)
        self._fixed_cursor = _FixedCursor(conn)

    def connection(self) -> AbstractContextManager[Connection]:
        """The transaction's connection."""
        return self._fixed

    def cursor(self) -> AbstractContextManager[Cursor]:
        """A cursor on the transaction's connection."""
        return self._fixed_cursor


def _fetch_one(cur: Cursor, record: Callable[..., Any]) -> Any:
    row = cur.fetchone()
    return None if row is None else record(*row)


def _fetch_many(cur: Cursor, record: Callable[..., Any]) -> list[Any]:
    return list(starmap(record, cur.fetchall()))


def _fetch_scalar(cur: Cursor, record: Callable[..., Any]) -> Any:
    row = cur.fetchone()
    return None if row is None else row[0]


def _fetch_rowcount(cur: Cursor, record: Callable[..., Any]) -> int:
    return cur.rowcount


def _fetch_none(cur: Cursor, record: Callable[..., Any]) -> None:
    return None


_FETCHES = {
    "one": _fetch_one,
    "many": _fetch_many,
    "scalar": _fetch_scalar,
    "rowcount": _fetch_rowcount,
    "none": _fetch_none,
}
# (sql, fetch, record, prepare): prepare False for a query never prepared, else None
# (psycopg's prepare_threshold decides).
_Plan = tuple[str, Callable[..., Any], Callable[..., Any], bool | None]
# name -> its _Plan, built from the query's annotations on first use.
_PLANS: dict[str, _Plan] = {}


def _slow_call(name: str, seconds: float, rows: int) -> None:
    # The name and the figures only: parameters may hold personal data or secrets.
    query_log.warning(
        "slow query %s: %.3f s, %d rows",
        name,
        seconds,
        rows,
        extra={"query": name, "duration_s": round(seconds, 6), "rows": rows},
    )


def slow_threshold(seconds: float | None) -> float:
    """The threshold `_fetch` compares with: infinity when slow-call logging is off."""
    return math.inf if seconds is None else seconds


def record_of(query: Query) -> Callable[..., Any]:
    """What decodes a row of the query: the struct its ``-- record:`` names, or that
    struct's ``from_row`` when it has one (a field needing more than a positional copy);
    ``tuple`` when the query names no record."""
    if query.record is None:
        return tuple
    module, _, name = query.record.rpartition(".")
    struct = getattr(importlib.import_module(f"flowledger.records.{module}"), name)
    decode: Callable[..., Any] = getattr(struct, "from_row", struct)
    return decode


def _plan(name: str) -> _Plan:
    queries = get_queries()
    query = queries.get(name) or lookup_query(queries, name)
    if query.returns is None:
        raise LookupError(f"query {name} has no '-- returns:' annotation")
    prepare = None if query.prepared else False
    plan = _PLANS[name] = (query.sql, _FETCHES[query.returns], record_of(query), prepare)
    return plan


class Repository:
    """Base of the repositories: a method names its query, binds parameters; the query's
    annotations decode. Neighbouring repositories come from `self._repos`, the registry
    this repository belongs to."""

    def __init__(self, repos: ReadRepositories) -> None:
        self._repos = repos
        self._executor = repos._executor
        self._slow = repos._slow

    @property
    def _codec(self) -> CursorCodec:
        return self._repos._codec

    def _fetch(
        self,
        name: str,
        params: Params,
        *,
        context: Params | None = None,
        conn: Connection | None = None,
    ) -> Any:
        """Run query `name`: what its ``-- returns:`` says (one record or None, a list of
        records, a scalar, a row count, None), rows decoded into its ``-- record:``."""
        # The hot path of every repository call: no generator-based context managers,
        # and the slow-call check costs two clock reads.
        sql, fetch, record, prepare = _PLANS.get(name) or _plan(name)
        started = _clock()
        try:
            if conn is not None:
                cur = _cursor(conn)
                cur.execute(sql, params, prepare=prepare)
                result = fetch(cur, record)
            else:
                with self._executor.cursor() as cur:
                    cur.execute(sql, params, prepare=prepare)
                    result = fetch(cur, record)
        except psycopg.Error as exc:
            raise translate_error(exc, context=context) from exc
        if _clock() - started > self._slow:
            _slow_call(name, _clock() - started, cur.rowcount)
        return result

    def _require(
        self,
        name: str,
        params: Params,
        missing: str,
        *,
        context: Params | None = None,
        conn: Connection | None = None,
    ) -> Any:
        """The one record of query `name`; raises NotFound(`missing`) when there is none."""
        found = self._fetch(name, params, context=context, conn=conn)
        if found is None:
            raise NotFound(missing)
        return found

    @contextmanager
    def _atomic(
        self, context: Params | None = None, *, conn: Connection | None = None
    ) -> Iterator[Connection]:
        """One connection in a transaction (a savepoint inside `db.transaction()`); with
        `conn`, the caller's own transaction, whose commit or rollback decides."""
        if conn is not None:
            yield conn
            return
        with translating(context):
            with self._executor.connection() as borrowed, borrowed.transaction():
                yield borrowed

    def _delete_in_batches(self, name: str, params: Params) -> int:
        """Run the batched delete `name` (LIMIT `params["batch"]`) until a batch comes back
        short, each batch its own short transaction; the number of rows deleted."""
        total = 0
        while True:
            deleted: int = self._fetch(name, params)
            total += deleted
            if deleted < params["batch"]:
                return total
