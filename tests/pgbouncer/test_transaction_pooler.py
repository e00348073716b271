"""flowledger through a real PgBouncer in pool_mode=transaction (Debian's package): the
engine workload with more client connections than server connections, exactly once and
without an error; the statement timeout and the UTC time zone held on every server
connection; a pooler refused until the setting names it; nothing left behind by
check-plans."""

from __future__ import annotations

import asyncio
import datetime
import functools
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import flowledger
from _pgbouncer import dbname_of, pgbouncer
from _runs_factories import add_stage, make_user, make_workflow
from _threads import run_threads
from conftest import PgServer
from flowledger.database import Database
from flowledger.errors import FlowledgerError, InvalidInput, LeaseLost, Unavailable
from flowledger.otel import instrument
from flowledger.records.events import OutboxEvent
from flowledger.records.identity import NewUser
from flowledger.records.runs import NewLogLine, StartRequest, StepCompletion, StepFailure

pytestmark = pytest.mark.pgbouncer

Conn = psycopg.Connection[Any]
SERVER_CONNECTIONS = 3


@pytest.fixture
def bouncer(pg_server: PgServer, db_url: str) -> Iterator[str]:
    """The test database through a PgBouncer in transaction mode with 3 server
    connections, which ignores the startup `options` (so that a missing setting is found
    by flowledger, not by PgBouncer's refusal)."""
    settings = "ignore_startup_parameters = options"
    with pgbouncer(
        pg_server, dbname_of(db_url), pool_size=SERVER_CONNECTIONS, settings=settings
    ) as url:
        yield url


def _pooled(url: str, **settings: Any) -> Database:
    return flowledger.connect(url, pooler="transaction", connect_attempts=1, **settings)


# -- a pooler is refused until the setting names it ---------------------------------------


def test_a_pooler_that_refuses_the_startup_options_is_named(
    pg_server: PgServer, db_url: str
) -> None:
    with pgbouncer(pg_server, dbname_of(db_url)) as url:
        with pytest.raises(InvalidInput) as refused:
            flowledger.connect(url, connect_attempts=1)
        assert "unsupported startup parameter" in str(refused.value)
        assert "pooler='transaction'" in str(refused.value)
        # The setting is all it takes.
        with _pooled(url) as db:
            assert db.health() == {"postgres": "ok"}


def test_a_pooler_that_drops_the_startup_options_is_refused(bouncer: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        flowledger.connect(bouncer, connect_attempts=1)
    message = str(refused.value)
    assert "is a connection pooler" in message
    assert "FLOWLEDGER_POOLER=transaction" in message


def test_a_session_pooler_is_refused_unless_named_and_then_works(
    pg_server: PgServer, db_url: str
) -> None:
    with pgbouncer(pg_server, dbname_of(db_url), pool_mode="session") as url:
        with pytest.raises(InvalidInput, match="pooler='session'"):
            flowledger.connect(url, connect_attempts=1)
        with flowledger.connect(url, pooler="session", connect_attempts=1) as db:
            user = db.users.create(user=NewUser(email="s@example.com", display_name="S"))
            assert db.users.get(id=user.id) == user
            with db.pinned() as pinned:
                row = pinned.connection.execute(
                    "SELECT current_setting('statement_timeout'), current_setting('TimeZone')"
                ).fetchone()
            assert row == ("30s", "UTC")  # the startup options reached the server


# -- the engine workload, exactly once ------------------------------------------------------


def test_the_engine_workload_runs_exactly_once_through_pgbouncer(bouncer: str, conn: Conn) -> None:
    """6 workers with their own pools (18 client connections) and a starter, a reaper, a
    relay, a lister and a savepoint user, over 3 server connections: every step of every
    execution completed exactly once, no attempt handed to two workers, no error."""
    workflow_id = make_workflow(conn)
    for name in ("a", "b"):
        add_stage(conn, workflow_id, name, max_attempts=4, backoff_base_seconds=0.01)
    executions, workers = 240, 6
    claims: Counter[tuple[uuid.UUID, int]] = Counter()
    lock = threading.Lock()
    done = threading.Event()
    unexpected: list[BaseException] = []
    relayed: list[uuid.UUID] = []
    pages: list[int] = []

    def guard(body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except FlowledgerError as exc:
                unexpected.append(exc)

        return run

    def starter() -> None:
        with _pooled(bouncer, max_size=2) as db:
            for batch in range(executions // 40):
                requests = [
                    StartRequest(
                        workflow_id=workflow_id,
                        parameters={"n": batch * 40 + i},
                        idempotency_key=f"k{batch * 40 + i}",
                    )
                    for i in range(40)
                ]
                db.executions.start_many(requests=requests)
                # The same keys again: no second execution.
                db.executions.start(workflow_id=workflow_id, idempotency_key=f"k{batch * 40}")

    def worker(n: int) -> None:
        rng = random.Random(n)
        name = f"w{n}"
        with _pooled(bouncer, max_size=3) as db:
            while not done.is_set():
                claimed = db.steps.claim(
                    worker_id=name, limit=8, lease=datetime.timedelta(seconds=1)
                )
                if not claimed:
                    time.sleep(0.01)
                    continue
                with lock:
                    claims.update((s.id, s.attempt) for s in claimed)
                completions, failures = [], []
                for step in claimed:
                    roll = rng.random()
                    if roll < 0.03 and step.attempt == 1:
                        continue  # this worker "dies" with it: the reaper requeues it
                    if roll < 0.15 and step.attempt < 3:
                        failures.append(
                            StepFailure(step_id=step.id, attempt=step.attempt, error="boom")
                        )
                    else:
                        completions.append(
                            StepCompletion(step_id=step.id, attempt=step.attempt, outputs={})
                        )
                if completions[:1]:
                    first = completions[0]
                    try:  # one by one for the first, in a batch for the rest
                        db.steps.complete(
                            step_id=first.step_id, worker_id=name, attempt=first.attempt
                        )
                    except LeaseLost:
                        pass
                    db.steps.complete_many(worker_id=name, completions=completions[1:])
                db.steps.fail_many(worker_id=name, failures=failures)

    def reaper() -> None:
        with _pooled(bouncer, max_size=1) as db:
            while not done.is_set():
                db.steps.reap(batch=50)
                time.sleep(0.2)

    def relay() -> None:
        def handler(events: list[OutboxEvent]) -> None:
            relayed.extend(e.id for e in events)

        with _pooled(bouncer, max_size=1) as db:
            while not done.is_set():
                db.outbox.relay(handler=handler, batch=100)
                time.sleep(0.05)

    def lister() -> None:
        # Keyset pages: each page may come from another server connection.
        with _pooled(bouncer, max_size=1) as db:
            while not done.is_set():
                cursor, seen = None, 0
                while True:
                    page = db.executions.list(workflow_id=workflow_id, limit=25, cursor=cursor)
                    seen += len(page.items)
                    if page.next_cursor is None:
                        break
                    cursor = page.next_cursor
                pages.append(seen)
                time.sleep(0.1)

    def savepoints() -> None:
        owner = make_user(conn)
        with _pooled(bouncer, max_size=1) as db:
            for i in range(20):
                with db.transaction() as tx:
                    tx.users.get(id=owner)
                    try:
                        with tx.transaction() as inner:
                            inner.users.create(
                                user=NewUser(email=f"sp{i}@example.com", display_name="x")
                            )
                            raise RuntimeError("roll the savepoint back")
                    except RuntimeError:
                        pass
                    tx.users.create(user=NewUser(email=f"kept{i}@example.com", display_name="k"))

    def watcher() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'completed'), count(*)"
                " FROM workflow_executions"
            ).fetchone()
            assert row is not None
            if row[1] == executions and row[0] == executions:
                break
            time.sleep(0.1)
        done.set()

    bodies = [starter, reaper, relay, lister, savepoints, watcher]
    bodies += [functools.partial(worker, n) for n in range(workers)]
    run_threads([guard(b) for b in bodies])

    assert not unexpected, f"errors through PgBouncer: {unexpected[:3]}"
    status = dict(conn.execute("SELECT status, count(*) FROM workflow_executions GROUP BY 1"))
    assert status == {"completed": executions}
    steps = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'completed') FROM execution_steps"
    ).fetchone()
    assert steps == (2 * executions, 2 * executions)
    # No (step, attempt) was ever handed to two workers; each attempt has its row.
    assert max(claims.values()) == 1
    attempts = conn.execute("SELECT count(*) FROM step_attempts").fetchone()
    assert attempts == (len(claims),)
    assert len(claims) > 2 * executions  # failures and reaped steps were retried
    assert len(relayed) == len(set(relayed))
    assert pages and max(pages) <= executions
    kept = conn.execute("SELECT count(*) FROM users WHERE email LIKE 'kept%'").fetchone()
    rolled = conn.execute("SELECT count(*) FROM users WHERE email LIKE 'sp%'").fetchone()
    assert (kept, rolled) == ((20,), (0,))


# -- what the startup packet cannot carry ---------------------------------------------------


def _pollute(bouncer: str, setting: str) -> None:
    """Leave `setting` on every server connection: one client per server connection,
    each inside a transaction (so that each holds a different one), runs a session SET."""
    clients = [psycopg.connect(bouncer, prepare_threshold=None) for _ in range(SERVER_CONNECTIONS)]
    try:
        for client in clients:
            client.execute(setting)  # opens a transaction: the server connection is held
        for client in clients:
            client.commit()
    finally:
        for client in clients:
            client.close()


def test_the_statement_timeout_holds_on_every_server_connection(bouncer: str) -> None:
    _pollute(bouncer, "SET statement_timeout = 0")
    with _pooled(bouncer, statement_timeout=0.2, max_size=2) as db:
        for _ in range(6):
            started = time.monotonic()
            with db.pinned() as pinned, pytest.raises(psycopg.errors.QueryCanceled):
                pinned.connection.execute("SELECT pg_sleep(2)")
            # Inside a transaction block, as flowledger reports it.
            with pytest.raises(Unavailable, match="statement timeout"), db.transaction() as tx:
                tx.connection.execute("SELECT 1")
                tx.connection.execute("SELECT pg_sleep(2)")
            assert time.monotonic() - started < 1.5
        # The timeout is local to each statement's transaction: nothing leaks to the
        # server connections, which other clients of the pooler share.
        with psycopg.connect(bouncer, prepare_threshold=None, autocommit=True) as other:
            row = other.execute("SELECT current_setting('statement_timeout')").fetchone()
            assert row == ("0",)


def test_time_zone_is_utc_on_every_server_connection(bouncer: str) -> None:
    _pollute(bouncer, "SET TimeZone = 'Asia/Tokyo'")
    with _pooled(bouncer, max_size=2) as db:
        for i in range(30):
            with db.pinned() as pinned:
                zone, now = pinned.connection.execute(
                    "SELECT current_setting('TimeZone'), now()"
                ).fetchone() or (None, None)
            assert zone == "UTC" and now is not None and now.tzinfo == datetime.UTC
            user = db.users.create(user=NewUser(email=f"tz{i}@example.com", display_name="z"))
            assert user.created_at.tzinfo == datetime.UTC
            _pollute(bouncer, "SET TimeZone = 'America/Lima'")


# -- the wrong statement, prepared statements and LISTEN ------------------------------------


def test_no_client_runs_another_clients_statement(bouncer: str, conn: Conn) -> None:
    """The regression of a lookup that ran another client's prepared `revoke`: lookups and
    revocations interleaved from 8 clients over 3 server connections revoke exactly the
    keys revoked, and every lookup returns its own key."""
    with _pooled(bouncer, max_size=1) as setup:
        owner = setup.users.create(user=NewUser(email="k@example.com", display_name="K"))
        keys = [setup.api_keys.issue(user_id=owner.id, name=f"k{i}").key.id for i in range(8)]
    revoked = set(keys[::2])

    def client(n: int) -> None:
        with _pooled(bouncer, max_size=1) as db:
            for round_ in range(25):  # far past psycopg's prepare threshold of 5
                key = db.api_keys.get(id=keys[n])
                assert key.id == keys[n]
                if keys[n] in revoked and round_ % 5 == 0:
                    db.api_keys.revoke(id=keys[n])

    run_threads([functools.partial(client, n) for n in range(8)])
    rows = dict(conn.execute("SELECT id, revoked_at IS NOT NULL FROM api_keys"))
    assert {k for k, gone in rows.items() if gone} == revoked


def test_prepared_statements_cannot_be_turned_on_behind_a_transaction_pooler(
    bouncer: str,
) -> None:
    with pytest.raises(InvalidInput, match="prepare_threshold must be None"):
        flowledger.connect(bouncer, pooler="transaction", prepare_threshold=5)
    with _pooled(bouncer) as db:
        assert db.settings.prepare_threshold is None
        with db.pinned() as pinned:
            for _ in range(20):
                pinned.users.list(limit=5)
            prepared = pinned.connection.execute(
                "SELECT count(*) FROM pg_prepared_statements"
            ).fetchone()
        assert prepared == (0,)


def test_wake_ups_need_a_session_and_listen_on_listen_url(
    bouncer: str, db_url: str, conn: Conn
) -> None:
    workflow_id = make_workflow(conn)
    add_stage(conn, workflow_id, "only")
    with _pooled(bouncer) as db, pytest.raises(InvalidInput, match="listen_url"):
        db.wake_ups()
    with _pooled(bouncer, listen_url=db_url) as db, db.wake_ups() as wake:
        assert not wake.wait(0)
        db.executions.start(workflow_id=workflow_id)  # through the pooler
        assert wake.wait(5)


def test_check_plans_leaves_no_setting_on_the_pooled_server_connections(
    bouncer: str,
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flowledger", "check-plans", "--database", bouncer, "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # One client per server connection, each holding its own inside a transaction.
    clients = [psycopg.connect(bouncer, prepare_threshold=None) for _ in range(SERVER_CONNECTIONS)]
    try:
        seen: set[tuple[Any, ...]] = set()
        for client in clients:
            row = client.execute(
                "SELECT pg_backend_pid(), current_setting('enable_seqscan'),"
                " current_setting('plan_cache_mode')"
            ).fetchone()
            assert row is not None
            seen.add(row)
        assert len({pid for pid, _, _ in seen}) == SERVER_CONNECTIONS
        assert {(s, m) for _, s, m in seen} == {("on", "auto")}
    finally:
        for client in clients:
            client.close()


# -- the async face, and tracing on top ---------------------------------------------------


def test_the_async_face_holds_timeout_and_time_zone_and_traces(bouncer: str) -> None:
    _pollute(bouncer, "SET statement_timeout = 0")
    _pollute(bouncer, "SET TimeZone = 'Asia/Tokyo'")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def main() -> None:
        async with await flowledger.connect_async(
            bouncer, pooler="transaction", statement_timeout=0.2, connect_attempts=1
        ) as db:
            await instrument(db, tracer_provider=provider)
            for i in range(5):
                user = await db.users.create(
                    user=NewUser(email=f"a{i}@example.com", display_name="A")
                )
                assert user.created_at.tzinfo == datetime.UTC
                assert await db.users.get(id=user.id) == user
                async with db.pinned() as pinned:
                    with pytest.raises(psycopg.errors.QueryCanceled):
                        await pinned.connection.execute("SELECT pg_sleep(2)")
            with pytest.raises(InvalidInput, match="listen_url"):
                await db.wake_ups()

    asyncio.run(main())
    names = {s.name for s in exporter.get_finished_spans()}
    assert {"flowledger insert_user", "flowledger get_user_by_id"} <= names, names
    exporter.shutdown()


def test_the_pooler_benchmark_runs(
    bouncer: str, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        import pooler  # benchmarks/pooler.py

        assert (
            pooler.main(
                ["--direct", db_url, "--bouncer", bouncer, "--calls", "20", "--rounds", "1"]
            )
            == 0
        )
    finally:
        sys.path.pop(0)
    out = capsys.readouterr().out
    assert "PgBouncer, pooler=transaction" in out and "psycopg by hand" in out


def test_log_lines_and_partition_maintenance_through_pgbouncer(bouncer: str, conn: Conn) -> None:
    """COPY of log lines (the timeout sent first, inside its transaction), and partition
    DDL under a transaction-level advisory lock, through the pooler."""
    workflow_id = make_workflow(conn)
    add_stage(conn, workflow_id, "only")
    with _pooled(bouncer, max_size=2) as db:
        execution = db.executions.start(workflow_id=workflow_id)
        (step,) = db.steps.claim(worker_id="w", limit=1)
        lines = [
            NewLogLine(step_id=step.id, execution_id=execution.id, message=f"line {i}")
            for i in range(50)
        ]
        assert db.step_logs.append(lines=lines) == 50
        page = db.step_logs.list_by_step(step_id=step.id, limit=100)
        assert [line.message for line in page.items] == [f"line {i}" for i in range(50)]
        future = datetime.datetime(2031, 1, 1, tzinfo=datetime.UTC)
        made = db.step_logs.ensure_partitions(months_ahead=2, now=future)
        assert [p.name for p in made] == [
            "step_logs_2031_01",
            "step_logs_2031_02",
            "step_logs_2031_03",
        ]
        assert {p.name for p in db.step_logs.partitions()} >= {p.name for p in made}
