"""Memory item dedupe under real concurrency: threads on their own connections create the
same content at the same moment, and exactly one of them creates the item."""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
import pytest

from flowledger.database import Database
from flowledger.records.memory import NewMemoryItem

pytestmark = pytest.mark.concurrency

Conn = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")

THREADS = 6  # below the db fixture's pool size (8): every thread holds its own connection
ROUNDS = 5


def _race(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run the calls on threads released together by a barrier; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[T | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = calls[i]()
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert errors == []
    return [r for r in results if r is not None]


def _warm_pool(db: Database) -> None:
    # Open every connection before the race so that no thread starts late waiting for one.
    _race([db.health] * THREADS)


def test_concurrent_creates_of_one_content_make_exactly_one_item(db: Database, conn: Conn) -> None:
    _warm_pool(db)
    for round_no in range(ROUNDS):
        # Whitespace differs per caller; the normalised content is the same.
        items = [
            NewMemoryItem(project="p", kind="learning", content=f"rule {round_no}" + " " * n)
            for n in range(THREADS)
        ]
        calls = [functools.partial(db.memory_items.create, item=item) for item in items]

        outcomes = _race(calls)

        assert len(outcomes) == THREADS
        ids = {item.id for item, _ in outcomes}
        assert len(ids) == 1, f"round {round_no}: several items for one content: {ids}"
        assert [created for _, created in outcomes].count(True) == 1
        (item_id,) = ids
        rows = conn.execute(
            "SELECT id FROM memory_items WHERE project = 'p' AND content LIKE %s",
            (f"rule {round_no}%",),
        ).fetchall()
        assert rows == [(item_id,)]


def test_concurrent_creates_raising_confidence_keep_the_highest(db: Database, conn: Conn) -> None:
    _warm_pool(db)
    confidences = [0.1 * (n + 1) for n in range(THREADS)]
    calls = [
        functools.partial(
            db.memory_items.create,
            item=NewMemoryItem(project="p", kind="decision", content="same", confidence=c),
            raise_confidence=True,
        )
        for c in confidences
    ]

    outcomes = _race(calls)

    assert [created for _, created in outcomes].count(True) == 1
    (item_id,) = {item.id for item, _ in outcomes}
    assert isinstance(item_id, uuid.UUID)
    row = conn.execute("SELECT confidence FROM memory_items WHERE id = %s", (item_id,)).fetchone()
    assert row == (pytest.approx(max(confidences)),)
