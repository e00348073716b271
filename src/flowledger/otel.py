"""OpenTelemetry tracing: a client span per repository query, named by the query.

Install the extra (``pip install 'flowledger[otel]'``), then::

    db = flowledger.connect()
    flowledger.otel.instrument(db)           # the async face: await instrument(adb)

Every repository call then runs its statement inside a span ``flowledger <query name>``
(``flowledger claim_steps``) carrying ``db.system``, ``db.name``, ``db.operation``,
``db.statement`` (the SQL text with its placeholders, never a parameter value) and
``net.peer.name`` / ``net.peer.port`` for a TCP connection. A statement the server
rejects ends its span with status ERROR and the exception recorded; a lookup that finds
nothing (NotFound) is not a database error and leaves its span OK. The error is recorded
as its class, SQLSTATE and constraint, not its message: a server's message can quote
values (``DETAIL: Key (email)=(...) already exists``).

Tracing lives in the cursor class of the pool's connections, set when a connection is
made: a database that is not instrumented runs exactly the code it ran before.
Instrumenting an open database drains its pool (psycopg_pool's ``drain()``), so every
connection handed out afterwards is a new, traced one; statements of a transaction
already open when ``instrument`` runs are not traced.

This module is not imported by ``import flowledger``: the core does not need
opentelemetry-api.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, ClassVar, Self, overload

import psycopg
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue
from psycopg.abc import Params, Query
from psycopg.copy import AsyncCopy, AsyncWriter, Copy, Writer

from flowledger import __version__
from flowledger.aio.database import AsyncDatabase
from flowledger.database import Database
from flowledger.errors import InvalidInput
from flowledger.repositories.queries import get_queries

__all__ = ["instrument", "operation"]

_PREFIX = "/* flowledger:"
_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)
_KEYWORD = re.compile(r"[A-Za-z]+")

_Attributes = dict[str, AttributeValue]
# query name -> (span name, the query's own attributes), built on a query's first span.
_SPANS: dict[str, tuple[str, _Attributes]] = {}


def operation(sql: str) -> str:
    """The statement's first SQL keyword, upper-cased (``SELECT``, ``WITH``, ``COPY``)."""
    keyword = _KEYWORD.match(_LEADING_COMMENTS.sub("", sql, count=1))
    return keyword.group(0).upper() if keyword else ""


def _span_of(statement: Query) -> tuple[str, _Attributes] | None:
    """The span name and query attributes of a flowledger query; None for other SQL."""
    if not isinstance(statement, str) or not statement.startswith(_PREFIX):
        return None
    name = statement[len(_PREFIX) : statement.find(" */")]
    found = _SPANS.get(name)
    if found is None:
        query = get_queries().get(name)
        if query is None or query.sql != statement:
            return None
        found = _SPANS[name] = (
            f"flowledger {name}",
            {"db.operation": operation(query.text), "db.statement": query.sql},
        )
    return found


def _connection_attributes(
    conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any],
) -> _Attributes:
    info = conn.info
    attributes: _Attributes = {"db.system": "postgresql", "db.name": info.dbname}
    # A host starting with "/" is a Unix-socket directory: no network peer to name.
    if info.host and not info.host.startswith("/"):
        attributes["net.peer.name"] = info.host
        attributes["net.peer.port"] = int(info.port)
    return attributes


@contextmanager
def _traced(tracer: Tracer, name: str, attributes: _Attributes) -> Iterator[None]:
    with tracer.start_as_current_span(
        name,
        kind=SpanKind.CLIENT,
        attributes=attributes,
        # The SDK's own recording keeps the message and traceback, and a server's
        # message quotes values (DETAIL: Key (email)=(...) already exists).
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except psycopg.Error as exc:
            _record_error(span, exc)
            raise


def _record_error(span: Span, exc: psycopg.Error) -> None:
    """Mark the span failed with what identifies the error and quotes no value: the
    exception's class, SQLSTATE and constraint."""
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    summary = f"{type(exc).__name__} (SQLSTATE {exc.sqlstate})" if exc.sqlstate else kind
    if exc.diag.constraint_name:
        summary += f" on constraint {exc.diag.constraint_name}"
    span.add_event("exception", {"exception.type": kind, "exception.message": summary})
    span.set_status(Status(StatusCode.ERROR, summary))


class _TracedCursor(psycopg.Cursor[Any]):
    """A cursor whose flowledger statements each run in a span."""

    _tracer: ClassVar[Tracer]
    # The execute of the database's own cursor class, which this one derives from too
    # (behind a transaction pooler it sends the statement timeout). psycopg's execute is
    # overloaded on the query's type (template strings take no params); a traced cursor
    # passes on whatever it was given, which the implementation accepts.
    _execute: ClassVar[Callable[..., Any]]

    def __init__(self, connection: psycopg.Connection[Any], **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self._span_attributes = _connection_attributes(connection)

    def execute(
        self,
        query: Query,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Self:
        span = _span_of(query)
        if span is None:
            self._execute(self, query, params, prepare=prepare, binary=binary)
            return self
        name, attributes = span
        with _traced(self._tracer, name, {**self._span_attributes, **attributes}):
            self._execute(self, query, params, prepare=prepare, binary=binary)
            return self

    @contextmanager
    def copy(
        self, statement: Query, params: Params | None = None, *, writer: Writer | None = None
    ) -> Iterator[Copy]:
        span = _span_of(statement)
        if span is None:
            with super().copy(statement, params, writer=writer) as copy:
                yield copy
            return
        name, attributes = span
        with (
            _traced(self._tracer, name, {**self._span_attributes, **attributes}),
            super().copy(statement, params, writer=writer) as copy,
        ):
            yield copy


class _AsyncTracedCursor(psycopg.AsyncCursor[Any]):
    """A cursor whose flowledger statements each run in a span (the async face)."""

    _tracer: ClassVar[Tracer]
    _execute: ClassVar[Callable[..., Awaitable[Any]]]  # as `_TracedCursor._execute`

    def __init__(self, connection: psycopg.AsyncConnection[Any], **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self._span_attributes = _connection_attributes(connection)

    async def execute(
        self,
        query: Query,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Self:
        span = _span_of(query)
        if span is None:
            await self._execute(self, query, params, prepare=prepare, binary=binary)
            return self
        name, attributes = span
        with _traced(self._tracer, name, {**self._span_attributes, **attributes}):
            await self._execute(self, query, params, prepare=prepare, binary=binary)
            return self

    @asynccontextmanager
    async def copy(
        self,
        statement: Query,
        params: Params | None = None,
        *,
        writer: AsyncWriter | None = None,
    ) -> AsyncIterator[AsyncCopy]:
        span = _span_of(statement)
        if span is None:
            async with super().copy(statement, params, writer=writer) as copy:
                yield copy
            return
        name, attributes = span
        with _traced(self._tracer, name, {**self._span_attributes, **attributes}):
            async with super().copy(statement, params, writer=writer) as copy:
                yield copy


def _tracer(provider: TracerProvider | None) -> Tracer:
    return trace.get_tracer("flowledger", __version__, tracer_provider=provider)


@overload
def instrument(db: Database, *, tracer_provider: TracerProvider | None = None) -> None: ...


@overload
def instrument(
    db: AsyncDatabase, *, tracer_provider: TracerProvider | None = None
) -> Coroutine[Any, Any, None]: ...


def instrument(
    db: Database | AsyncDatabase, *, tracer_provider: TracerProvider | None = None
) -> Coroutine[Any, Any, None] | None:
    """Trace every repository query of `db` from now on, with `tracer_provider` (default:
    the global one); the async face's is awaited. Raises InvalidInput for anything else."""
    tracer = _tracer(tracer_provider)
    if isinstance(db, AsyncDatabase):
        base = db._cursor_base
        db._cursor_factory = type(
            "AsyncTracedCursor",
            (_AsyncTracedCursor, base),
            {"_tracer": tracer, "_execute": staticmethod(base.execute)},
        )
        return _drain_async(db)
    if isinstance(db, Database):
        sync_base = db._cursor_base
        db._cursor_factory = type(
            "TracedCursor",
            (_TracedCursor, sync_base),
            {"_tracer": tracer, "_execute": staticmethod(sync_base.execute)},
        )
        if not db._pool.closed:
            db._pool.drain()
        return None
    raise InvalidInput(f"db: expected a Database or an AsyncDatabase, not {type(db).__name__}")


async def _drain_async(db: AsyncDatabase) -> None:
    if not db._pool.closed:
        await db._pool.drain()
