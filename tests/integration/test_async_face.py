"""The async face on its own terms: asyncio tasks sharing a transaction, claims raced by
tasks, relay handlers that are coroutines, and the sync face refusing them."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections import Counter
from typing import Any

import psycopg
import pytest

import flowledger
from flowledger.aio.database import AsyncDatabase
from flowledger.aio.repositories.base import AsyncConnectionExecutor, AsyncPoolExecutor
from flowledger.errors import InvalidInput, NotFound
from flowledger.records.events import NewEvent, OutboxEvent
from flowledger.records.identity import NewUser
from flowledger.records.runs import StepCompletion

Conn = psycopg.Connection[Any]
LEASE = datetime.timedelta(minutes=5)


def _run(db_url: str, body: Any) -> Any:
    async def main() -> Any:
        db = await flowledger.connect_async(db_url, max_size=8, connect_attempts=1)
        try:
            return await body(db)
        finally:
            await db.close()

    return asyncio.run(main())


def test_tasks_sharing_a_transaction_each_get_their_own_cursor(db_url: str) -> None:
    async def body(db: AsyncDatabase) -> None:
        async with db.transaction() as tx:
            executor = tx.users._executor
            assert isinstance(executor, AsyncConnectionExecutor)
            async with executor.cursor() as first, executor.cursor() as second:
                assert first is not second
                assert first.connection is second.connection is tx.connection
        # The pool's borrowed connection serves one task at a time: its cursor is reused.
        pooled = db.users._executor
        assert isinstance(pooled, AsyncPoolExecutor)
        async with pooled.cursor() as a:
            pass
        async with pooled.cursor() as b:
            pass
        assert a is b or a.connection is not b.connection

    _run(db_url, body)


def test_concurrent_tasks_in_one_transaction_read_their_own_rows(db_url: str) -> None:
    async def body(db: AsyncDatabase) -> None:
        async with db.transaction() as tx:
            users = [
                await tx.users.create(user=NewUser(email=f"t{i}@example.com", display_name=f"T{i}"))
                for i in range(40)
            ]
            # Lookups, a listing and misses interleaved as tasks on the one connection.
            lookups = asyncio.gather(*(tx.users.get(id=u.id) for u in users))
            found, page = await asyncio.gather(lookups, tx.users.list(limit=100))
            assert [u.id for u in found] == [u.id for u in users]
            assert {u.id for u in page.items} == {u.id for u in users}
            misses = await asyncio.gather(
                *(tx.users.get(id=uuid.uuid4()) for _ in range(10)), return_exceptions=True
            )
            assert all(isinstance(m, NotFound) for m in misses)
        assert len((await db.users.list(limit=100)).items) == 40

    _run(db_url, body)


def test_a_transaction_rolls_back_when_its_block_raises(db_url: str) -> None:
    async def body(db: AsyncDatabase) -> None:
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await tx.users.create(user=NewUser(email="gone@example.com", display_name="G"))
                async with tx.transaction() as inner:
                    await inner.users.create(user=NewUser(email="in@example.com", display_name="I"))
                raise RuntimeError("abort")
        assert (await db.users.list(limit=10)).items == []

    _run(db_url, body)


def _queued_steps(conn: Conn, count: int) -> None:
    row = conn.execute(
        """
        WITH u AS (INSERT INTO users (email, display_name)
                   VALUES ('a-' || gen_random_uuid() || '@example.com', 'A') RETURNING id),
             w AS (INSERT INTO workflows (owner_id, name)
                   SELECT id, 'wf-' || left(md5(random()::text), 10) FROM u RETURNING id)
        INSERT INTO workflow_executions (workflow_id, workflow_version, status, started_at)
        SELECT id, 1, 'running', now() FROM w RETURNING id
        """
    ).fetchone()
    assert row is not None
    conn.execute(
        """
        INSERT INTO execution_steps (execution_id, task_name, task_index, status)
        SELECT %s, 'bulk', g, 'queued' FROM generate_series(0, %s - 1) AS g
        """,
        (row[0], count),
    )


@pytest.mark.concurrency
@pytest.mark.parametrize("round_", range(5))
def test_tasks_claiming_at_once_claim_every_step_exactly_once(
    db_url: str, conn: Conn, round_: int
) -> None:
    total = 600
    _queued_steps(conn, total)

    async def worker(db: AsyncDatabase, n: int) -> list[uuid.UUID]:
        mine: list[uuid.UUID] = []
        while True:
            claimed = await db.steps.claim(worker_id=f"w{n}", limit=7, lease=LEASE)
            if not claimed:
                return mine
            mine += [s.id for s in claimed]
            done = [StepCompletion(step_id=s.id, attempt=s.attempt) for s in claimed]
            result = await db.steps.complete_many(worker_id=f"w{n}", completions=done)
            assert result.lost == []

    async def body(db: AsyncDatabase) -> list[list[uuid.UUID]]:
        return list(await asyncio.gather(*(worker(db, n) for n in range(8))))

    claimed = _run(db_url, body)
    counts = Counter(i for ids in claimed for i in ids)
    assert len(counts) == total
    assert max(counts.values()) == 1
    assert sum(1 for ids in claimed if ids) > 1, "the tasks did not run concurrently"
    left = conn.execute("SELECT count(*) FROM execution_steps WHERE status <> 'completed'")
    assert left.fetchone() == (0,)


def _event(i: int) -> NewEvent:
    return NewEvent(
        aggregate_type="order",
        aggregate_id=uuid.uuid4(),
        event_type="order.placed",
        payload={"n": i},
    )


def test_relay_awaits_a_coroutine_handler(db_url: str) -> None:
    delivered: list[int] = []

    async def handler(events: list[OutboxEvent]) -> None:
        await asyncio.sleep(0)
        delivered.extend(e.payload["n"] for e in events)

    async def body(db: AsyncDatabase) -> Any:
        for i in range(14):
            await db.outbox.append(event=_event(i))
        return await db.outbox.relay(handler=handler, batch=100)

    result = _run(db_url, body)
    assert (result.published, result.failed) == (14, 0)
    assert sorted(delivered) == list(range(14))


def test_relay_records_a_failing_coroutine_handler(db_url: str, conn: Conn) -> None:
    async def handler(events: list[OutboxEvent]) -> None:
        await asyncio.sleep(0)
        raise ConnectionError("broker down")

    async def body(db: AsyncDatabase) -> Any:
        await db.outbox.append(event=_event(0))
        return await db.outbox.relay(handler=handler)

    result = _run(db_url, body)
    assert (result.published, result.failed) == (0, 1)
    assert result.error == "ConnectionError: broker down"
    row = conn.execute("SELECT published_at, attempts FROM outbox").fetchone()
    assert row == (None, 1)


def test_the_sync_face_refuses_a_coroutine_handler(db_url: str, conn: Conn) -> None:
    async def handler(events: list[OutboxEvent]) -> None:
        return None

    with flowledger.connect(db_url, connect_attempts=1) as db:
        for i in range(14):
            db.outbox.append(event=_event(i))
        with pytest.raises(InvalidInput, match="coroutine function"):
            db.outbox.relay(handler=handler)  # type: ignore[arg-type]
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE published_at IS NULL), max(attempts) FROM outbox"
    ).fetchone()
    assert row == (14, 0)


def test_the_sync_face_keeps_events_when_a_handler_returns_an_awaitable(
    db_url: str, conn: Conn
) -> None:
    async def deliver(events: list[OutboxEvent]) -> None:
        raise AssertionError("never run")

    with flowledger.connect(db_url, connect_attempts=1) as db:
        db.outbox.append(event=_event(0))
        result = db.outbox.relay(handler=lambda events: deliver(events))  # type: ignore[arg-type]
    assert (result.published, result.failed) == (0, 1)
    assert result.error is not None and "awaitable" in result.error
    row = conn.execute("SELECT published_at, attempts FROM outbox").fetchone()
    assert row == (None, 1)
