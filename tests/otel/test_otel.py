"""flowledger.otel: a span per repository query on both faces, on a real server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from psycopg.conninfo import conninfo_to_dict

import flowledger
from _runs_factories import add_stage, make_workflow
from flowledger.errors import Conflict, InvalidInput, NotFound
from flowledger.otel import instrument, operation
from flowledger.records.identity import NewUser
from flowledger.records.runs import NewLogLine
from flowledger.repositories.queries import query

EMAIL = "Ada.Secret@example.com"
NAME = "Ada Parameter-Value"
SETTINGS: dict[str, Any] = {"min_size": 1, "max_size": 2, "connect_attempts": 1}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exported = InMemorySpanExporter()
    yield exported
    exported.shutdown()


def _provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _sync_calls(db_url: str, provider: TracerProvider) -> uuid.UUID:
    with flowledger.connect(db_url, **SETTINGS) as db:
        instrument(db, tracer_provider=provider)
        created = db.users.create(user=NewUser(email=EMAIL, display_name=NAME))
        db.users.get(id=created.id)
        with pytest.raises(NotFound):
            db.users.get(id=uuid.uuid4())
        with pytest.raises(Conflict):
            db.users.create(user=NewUser(email=EMAIL, display_name=NAME))
        with db.transaction() as tx:
            tx.users.get_by_email(email=EMAIL)
        return created.id


def _async_calls(db_url: str, provider: TracerProvider) -> uuid.UUID:
    async def main() -> uuid.UUID:
        async with await flowledger.connect_async(db_url, **SETTINGS) as db:
            await instrument(db, tracer_provider=provider)
            created = await db.users.create(user=NewUser(email=EMAIL, display_name=NAME))
            await db.users.get(id=created.id)
            with pytest.raises(NotFound):
                await db.users.get(id=uuid.uuid4())
            with pytest.raises(Conflict):
                await db.users.create(user=NewUser(email=EMAIL, display_name=NAME))
            async with db.transaction() as tx:
                await tx.users.get_by_email(email=EMAIL)
            return created.id

    return asyncio.run(main())


def _flowledger_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    # get_cursor_key runs on open, before instrument(): only the calls above are traced.
    return [s for s in exporter.get_finished_spans() if s.name.startswith("flowledger ")]


@pytest.mark.parametrize("face", ["sync", "async"])
def test_every_repository_query_is_a_span_named_by_the_query(
    db_url: str, face: str, exporter: InMemorySpanExporter
) -> None:
    calls = _sync_calls if face == "sync" else _async_calls
    user_id = calls(db_url, _provider(exporter))
    spans = _flowledger_spans(exporter)
    assert [s.name for s in spans] == [
        "flowledger insert_user",
        "flowledger get_user_by_id",
        "flowledger get_user_by_id",
        "flowledger insert_user",
        "flowledger get_user_by_email",
    ]
    dbname = conninfo_to_dict(db_url)["dbname"]
    for span in spans:
        name = span.name.removeprefix("flowledger ")
        attributes = dict(span.attributes or {})
        assert span.kind is SpanKind.CLIENT
        assert attributes["db.system"] == "postgresql"
        assert attributes["db.name"] == dbname
        assert attributes["db.statement"] == query(name).sql
        assert attributes["db.operation"] == ("INSERT" if name == "insert_user" else "SELECT")
        # Over a Unix socket (the embedded test server) there is no network peer; over TCP
        # (a server given with --postgresql-host) the peer is the host and port.
        peer = {k: v for k, v in attributes.items() if k.startswith("net.peer.")}
        assert peer == {} or set(peer) == {"net.peer.name", "net.peer.port"}
        values = " ".join(str(v) for v in attributes.values())
        for secret in (EMAIL, EMAIL.lower(), NAME, str(user_id)):
            assert secret not in values
        for event in span.events:
            assert all(s not in str(event.attributes) for s in (EMAIL.lower(), NAME))

    ok = [s for i, s in enumerate(spans) if i != 3]
    assert all(s.status.status_code is StatusCode.UNSET for s in ok)
    assert not any(s.events for s in ok)
    failed = spans[3]
    assert failed.status.status_code is StatusCode.ERROR
    [event] = failed.events
    assert event.name == "exception"
    recorded = dict(event.attributes or {})
    assert recorded["exception.type"] == "psycopg.errors.UniqueViolation"
    message = "UniqueViolation (SQLSTATE 23505) on constraint users_email_key"
    assert recorded["exception.message"] == message
    assert failed.status.description == message


def test_spans_are_children_of_the_callers_span(
    db_url: str, exporter: InMemorySpanExporter
) -> None:
    provider = _provider(exporter)
    with flowledger.connect(db_url, **SETTINGS) as db:
        instrument(db, tracer_provider=provider)
        with provider.get_tracer("app").start_as_current_span("handler") as parent:
            db.users.list()
    [span] = _flowledger_spans(exporter)
    assert span.name == "flowledger list_users"
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id


def test_an_uninstrumented_database_makes_no_spans(
    db_url: str, exporter: InMemorySpanExporter
) -> None:
    provider = _provider(exporter)
    with flowledger.connect(db_url, **SETTINGS) as db:
        db.users.list()
        with db.pinned() as pinned:
            # Not a subclass: the very cursor class, whose execute runs unchanged.
            assert type(pinned.connection.cursor()) is psycopg.Cursor
        with flowledger.connect(db_url, **SETTINGS) as traced:
            instrument(traced, tracer_provider=provider)
            traced.users.list()
        db.users.list()
    assert [s.name for s in _flowledger_spans(exporter)] == ["flowledger list_users"]


def test_instrument_refuses_other_objects() -> None:
    with pytest.raises(
        InvalidInput, match=r"^db: expected a Database or an AsyncDatabase, not str$"
    ):
        instrument("postgresql://x/y")  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", "SELECT"),
        ("/* flowledger:get_x */ -- a comment\n  with x AS (SELECT 1) SELECT 2", "WITH"),
        ("/* a */ /* b\n c */\nCOPY t FROM STDIN", "COPY"),
        ("-- only a comment", ""),
    ],
)
def test_operation_is_the_first_keyword(sql: str, expected: str) -> None:
    assert operation(sql) == expected


def _steps(db_url: str) -> tuple[uuid.UUID, uuid.UUID]:
    with psycopg.connect(db_url, autocommit=True) as conn, flowledger.connect(db_url) as db:
        workflow = make_workflow(conn)
        add_stage(conn, workflow, "s")
        execution = db.executions.start(workflow_id=workflow)
        [step] = db.steps.list_by_execution(execution_id=execution.id)
        return execution.id, step.id


@pytest.mark.parametrize("face", ["sync", "async"])
def test_claims_and_copy_appends_are_spans(
    db_url: str, face: str, exporter: InMemorySpanExporter
) -> None:
    execution_id, step_id = _steps(db_url)
    lines = [NewLogLine(step_id=step_id, execution_id=execution_id, message="secret-line")]
    provider = _provider(exporter)
    if face == "sync":
        with flowledger.connect(db_url, **SETTINGS) as db:
            instrument(db, tracer_provider=provider)
            assert len(db.steps.claim(worker_id="w1", limit=10)) == 1
            assert db.step_logs.append(lines=lines) == 1
    else:

        async def main() -> None:
            async with await flowledger.connect_async(db_url, **SETTINGS) as db:
                await instrument(db, tracer_provider=provider)
                assert len(await db.steps.claim(worker_id="w1", limit=10)) == 1
                assert await db.step_logs.append(lines=lines) == 1

        asyncio.run(main())
    spans = _flowledger_spans(exporter)
    assert [s.name for s in spans] == ["flowledger claim_steps", "flowledger append_step_logs"]
    claim, append = (dict(s.attributes or {}) for s in spans)
    assert claim["db.operation"] == "WITH"
    assert (append["db.operation"], append["db.statement"]) == (
        "COPY",
        query("append_step_logs").sql,
    )
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)
    assert "secret-line" not in str(append)
