"""What every repository shares: where its connection comes from, and row decoding."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from itertools import starmap
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg.rows import RowMaker

from flowledger.errors import NotFound, translating
from flowledger.repositories.pagination import CursorCodec
from flowledger.repositories.queries import Query, get_queries, lookup_query

T = TypeVar("T")
Params = Mapping[str, Any]
Connection = psycopg.Connection[Any]


class Executor(Protocol):
    """Hands out the connection a repository call runs on."""

    def connection(self) -> AbstractContextManager[Connection]:
        """A connection: from the pool (committed on exit) or the enclosing transaction's."""
        ...


class PoolExecutor:
    """Each call borrows a pool connection and commits (or rolls back) when it returns it."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def connection(self) -> AbstractContextManager[Connection]:
        """A pooled connection for one repository call."""
        cm: AbstractContextManager[Connection] = self._pool.connection()
        return cm


class ConnectionExecutor:
    """Every call runs on one connection, inside the transaction its owner opened."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """The transaction's connection."""
        yield self._conn


def struct_row(cls: Callable[..., T]) -> Callable[[Any], RowMaker[T]]:
    """A psycopg row factory building `cls` positionally: struct fields are in SELECT order."""

    def factory(cursor: Any) -> RowMaker[T]:
        return lambda values: cls(*values)

    return factory


class Repository:
    """Base of the repositories: a method names its query, binds parameters, decodes."""

    def __init__(self, executor: Executor, codec: CursorCodec) -> None:
        self._executor = executor
        self._codec = codec
        self._queries = get_queries()

    def _query(self, name: str) -> Query:
        return lookup_query(self._queries, name)

    @contextmanager
    def _connection(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self._executor.connection() as pooled:
                yield pooled

    @contextmanager
    def _atomic(self, context: Params | None = None) -> Iterator[Connection]:
        """One connection in a transaction (a savepoint inside `db.transaction()`)."""
        with translating(context), self._executor.connection() as conn, conn.transaction():
            yield conn

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
        sql = self._query(name).sql
        with translating(context), self._connection(conn) as c:
            cur = c.cursor(row_factory=struct_row(record))
            cur.execute(sql, params)
            return cur.fetchone()

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
        sql = self._query(name).sql
        with translating(context), self._connection(conn) as c:
            cur = c.cursor()
            cur.execute(sql, params)
            rows: Sequence[Sequence[Any]] = cur.fetchall()
        return list(starmap(record, rows))

    def _scalar(
        self,
        name: str,
        params: Params,
        *,
        context: Params | None = None,
        conn: Connection | None = None,
    ) -> Any:
        """The first column of the first row (None when there is no row)."""
        sql = self._query(name).sql
        with translating(context), self._connection(conn) as c:
            cur = c.cursor()
            cur.execute(sql, params)
            row = cur.fetchone()
        return None if row is None else row[0]

    def _execute(
        self,
        name: str,
        params: Params,
        *,
        context: Params | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Run query `name`; the number of rows it affected."""
        sql = self._query(name).sql
        with translating(context), self._connection(conn) as c:
            cur = c.cursor()
            cur.execute(sql, params)
            return cur.rowcount
