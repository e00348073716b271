"""What every repository shares: where its connection comes from, and row decoding."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from itertools import starmap
from typing import Any, Protocol, TypeVar
from weakref import WeakKeyDictionary

import psycopg

from flowledger.errors import NotFound, translate_error, translating
from flowledger.repositories._checks import as_optional_uuid, as_uuid
from flowledger.repositories.pagination import CursorCodec
from flowledger.repositories.queries import Query, get_queries, lookup_query

__all__ = [
    "Connection",
    "ConnectionExecutor",
    "Executor",
    "PoolExecutor",
    "Repository",
    "as_optional_uuid",
    "as_uuid",
]

T = TypeVar("T")
R = TypeVar("R")
Params = Mapping[str, Any]
Connection = psycopg.Connection[Any]


class Executor(Protocol):
    """Hands out the connection a repository call runs on."""

    def connection(self) -> AbstractContextManager[Connection]:
        """A connection: from the pool (committed on exit) or the enclosing transaction's."""
        ...


class _Borrowed:
    """Borrow a pool connection for one call and give it back (a class, not a generator:
    this runs on every repository call)."""

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def __enter__(self) -> Connection:
        conn: Connection = self._pool.getconn()
        self._conn = conn
        return conn

    def __exit__(self, *exc: object) -> None:
        # Connections are in autocommit mode; one returned inside a transaction (an
        # exception escaped an explicit block) is rolled back by the pool.
        self._pool.putconn(self._conn)


class _Fixed:
    """The one connection of an enclosing transaction."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def __enter__(self) -> Connection:
        return self._conn

    def __exit__(self, *exc: object) -> None:
        return None


class PoolExecutor:
    """Each call borrows a pool connection and returns it when done."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def connection(self) -> AbstractContextManager[Connection]:
        """A pooled connection for one repository call."""
        return _Borrowed(self._pool)


class ConnectionExecutor:
    """Every call runs on one connection, inside the transaction its owner opened."""

    def __init__(self, conn: Connection) -> None:
        self._fixed = _Fixed(conn)

    def connection(self) -> AbstractContextManager[Connection]:
        """The transaction's connection."""
        return self._fixed


# One reusable cursor per connection: building a cursor per call cost ~12 % of a point
# lookup (PERF-NOTES). A pooled connection serves one thread at a time, so does its cursor.
_CURSORS: WeakKeyDictionary[Connection, psycopg.Cursor[Any]] = WeakKeyDictionary()


def _cursor(conn: Connection) -> psycopg.Cursor[Any]:
    cur = _CURSORS.get(conn)
    if cur is None or cur.closed:
        cur = _CURSORS[conn] = conn.cursor()
    return cur


class Repository:
    """Base of the repositories: a method names its query, binds parameters, decodes."""

    def __init__(self, executor: Executor, codec: CursorCodec) -> None:
        self._executor = executor
        self._codec = codec
        self._queries = get_queries()

    def _query(self, name: str) -> Query:
        query = self._queries.get(name)
        return query if query is not None else lookup_query(self._queries, name)

    def _run(
        self,
        name: str,
        params: Params,
        fetch: Callable[[psycopg.Cursor[Any]], R],
        context: Params | None,
        conn: Connection | None,
    ) -> R:
        # The hot path of every repository call: no generator-based context managers.
        sql = self._query(name).sql
        try:
            if conn is not None:
                cur = _cursor(conn)
                cur.execute(sql, params)
                return fetch(cur)
            with self._executor.connection() as borrowed:
                cur = _cursor(borrowed)
                cur.execute(sql, params)
                return fetch(cur)
        except psycopg.Error as exc:
            raise translate_error(exc, context=context) from exc

    @contextmanager
    def _atomic(
        self, context: Params | None = None, *, conn: Connection | None = None
    ) -> Iterator[Connection]:
        """One connection in a transaction (a savepoint inside `db.transaction()`); with
        `conn`, the caller's own transaction, whose commit or rollback decides."""
        if conn is not None:
            yield conn
            return
        with translating(context), self._executor.connection() as borrowed:
            with borrowed.transaction():
                yield borrowed

    def _one(
        self,
        name: str,
        params: Params,
        record: Callable[..., T],
        *,
        context: Params | None = None,
        conn: Connection | None = None,
    ) -> T | None:
        """The single row of query `name` as `record`, or None."""

        def fetch(cur: psycopg.Cursor[Any]) -> T | None:
            row = cur.fetchone()
            return None if row is None else record(*row)

        return self._run(name, params, fetch, context, conn)

    def _one_or_raise(
        self,
        name: str,
        params: Params,
        record: Callable[..., T],
        missing: str,
        *,
        context: Params | None = None,
        conn: Connection | None = None,
    ) -> T:
        """Like `_one`, raising NotFound(`missing`) when there is no row."""
        row = self._one(name, params, record, context=context, conn=conn)
        if row is None:
            raise NotFound(missing)
        return row

    def _many(
        self,
        name: str,
        params: Params,
        record: Callable[..., T],
        *,
        context: Params | None = None,
        conn: Connection | None = None,
    ) -> list[T]:
        """Every row of query `name`, each as `record`."""

        def fetch(cur: psycopg.Cursor[Any]) -> list[T]:
            return list(starmap(record, cur.fetchall()))

        return self._run(name, params, fetch, context, conn)

    def _scalar(
        self,
        name: str,
        params: Params,
        *,
        context: Params | None = None,
        conn: Connection | None = None,
    ) -> Any:
        """The first column of the first row (None when there is no row)."""
        return self._run(name, params, _first_value, context, conn)

    def _delete_in_batches(self, name: str, params: Params) -> int:
        """Run the batched delete `name` (LIMIT `params["batch"]`) until a batch comes back
        short, each batch its own short transaction; the number of rows deleted."""
        total = 0
        while True:
            deleted = self._execute(name, params)
            total += deleted
            if deleted < params["batch"]:
                return total

    def _execute(
        self,
        name: str,
        params: Params,
        *,
        context: Params | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Run query `name`; the number of rows it affected."""
        return self._run(name, params, _rowcount, context, conn)


def _first_value(cur: psycopg.Cursor[Any]) -> Any:
    row = cur.fetchone()
    return None if row is None else row[0]


def _rowcount(cur: psycopg.Cursor[Any]) -> int:
    return cur.rowcount
