"""Outbox: append in the caller's transaction, wake-up hint, relay with retries, prune."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import psycopg
import pytest

from flowledger.database import Database
from flowledger.errors import InvalidInput
from flowledger.records.events import NewEvent, OutboxEvent

Conn = psycopg.Connection[Any]


def _event(n: int = 0) -> NewEvent:
    return NewEvent(
        aggregate_type="thing", aggregate_id=uuid.uuid4(), event_type="thing.made",
        payload={"n": n},
    )  # fmt: skip


def test_append_is_part_of_the_callers_transaction(db: Database) -> None:
    kept = db.outbox.append(event=_event(1))
    assert (kept.published_at, kept.attempts, kept.payload) == (None, 0, {"n": 1})
    lost = _event(2)
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.outbox.append(event=lost)
        raise RuntimeError("rollback")
    assert db.outbox.list_by_aggregate(aggregate_type="thing", aggregate_id=lost.aggregate_id) == []
    found = db.outbox.list_by_aggregate(aggregate_type="thing", aggregate_id=kept.aggregate_id)
    assert found == [kept]


def test_a_transaction_appending_events_sends_one_wake_up(db: Database, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN flowledger_outbox")
        with db.transaction() as tx:
            for n in range(3):
                tx.outbox.append(event=_event(n))
        hints = list(listener.notifies(timeout=1.0))
    assert len(hints) == 1 and hints[0].channel == "flowledger_outbox"


def test_append_validates(db: Database) -> None:
    with pytest.raises(InvalidInput):
        db.outbox.append(
            event=NewEvent(aggregate_type="t", aggregate_id=uuid.uuid4(), event_type="Bad")
        )
    with pytest.raises(InvalidInput):
        db.outbox.append(
            event=NewEvent(aggregate_type=" ", aggregate_id=uuid.uuid4(), event_type="a.b")
        )


def test_relay_publishes_in_order_in_batches(db: Database) -> None:
    made = [db.outbox.append(event=_event(n)) for n in range(5)]
    delivered: list[list[OutboxEvent]] = []
    assert db.outbox.relay(handler=delivered.append, batch=3).published == 3
    assert db.outbox.relay(handler=delivered.append, batch=3).published == 2
    assert db.outbox.relay(handler=delivered.append).published == 0
    assert [e.id for batch in delivered for e in batch] == [e.id for e in made]
    assert [len(batch) for batch in delivered] == [3, 2]
    [stored] = db.outbox.list_by_aggregate(
        aggregate_type="thing", aggregate_id=made[0].aggregate_id
    )
    assert stored.published_at is not None and stored.attempts == 1


def test_relay_keeps_events_when_the_handler_fails(db: Database, conn: Conn) -> None:
    event = db.outbox.append(event=_event())

    def broken(_: list[OutboxEvent]) -> None:
        raise ConnectionError("broker down")

    result = db.outbox.relay(handler=broken)
    assert (result.published, result.failed) == (0, 1)
    assert result.error == "ConnectionError: broker down"
    [stored] = db.outbox.list_by_aggregate(aggregate_type="thing", aggregate_id=event.aggregate_id)
    assert (stored.attempts, stored.last_error, stored.published_at) == (
        1, "ConnectionError: broker down", None
    )  # fmt: skip
    assert stored.available_at > event.available_at  # backed off: not due yet
    assert db.outbox.relay(handler=broken).failed == 0
    conn.execute("UPDATE outbox SET available_at = now()")
    assert db.outbox.relay(handler=lambda _: None).published == 1


def test_prune_deletes_old_published_events_only(db: Database, conn: Conn) -> None:
    for n in range(5):
        db.outbox.append(event=_event(n))
    unpublished = db.outbox.append(event=_event(9))
    conn.execute(
        "UPDATE outbox SET published_at = now() - interval '2 days' WHERE id <> %s",
        (unpublished.id,),
    )
    assert db.outbox.prune(older_than=datetime.timedelta(days=1), batch=2) == 5
    assert conn.execute("SELECT id FROM outbox").fetchall() == [(unpublished.id,)]
    with pytest.raises(InvalidInput):
        db.outbox.prune(older_than=datetime.datetime(2024, 1, 1))
