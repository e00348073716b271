"""Sessions repository against a real PostgreSQL: open/reopen, heartbeats, stale cleanup."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import psycopg
import pytest

from flowledger.database import Database
from flowledger.errors import Conflict, InvalidCursor, InvalidInput, NotFound
from flowledger.records.identity import NewUser

Conn = psycopg.Connection[tuple[Any, ...]]


def _age(conn: Conn, session_id: uuid.UUID, *, minutes: int) -> None:
    conn.execute(
        "UPDATE sessions SET last_heartbeat = now() - make_interval(mins => %s) WHERE id = %s",
        (minutes, session_id),
    )


def _tamper(token: str) -> str:
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


def test_open_returns_an_active_session_with_defaults(db: Database) -> None:
    session = db.sessions.open(client_id="cli-1")

    assert session.client_id == "cli-1"
    assert (session.user_id, session.metadata, session.is_active) == (None, {}, True)
    assert session.last_heartbeat.tzinfo is not None
    assert db.sessions.get(id=session.id) == session


def test_open_stores_user_and_metadata(db: Database) -> None:
    user = db.users.create(user=NewUser(email="a@example.com", display_name="A"))

    session = db.sessions.open(
        client_id="cli-1", user_id=str(user.id), metadata={"agent": "x", "n": [1, 2]}
    )

    assert session.user_id == user.id
    assert db.sessions.get(id=session.id).metadata == {"agent": "x", "n": [1, 2]}


def test_open_refuses_a_client_with_an_active_session(db: Database) -> None:
    db.sessions.open(client_id="cli-1")

    with pytest.raises(Conflict) as caught:
        db.sessions.open(client_id="cli-1")

    assert caught.value.message == "a session for client 'cli-1' already exists"
    assert caught.value.constraint == "sessions_client_id_key"


def test_open_reopens_the_inactive_session_of_a_client(db: Database, conn: Conn) -> None:
    first = db.sessions.open(client_id="cli-1", metadata={"run": 1})
    db.sessions.close(id=first.id)
    _age(conn, first.id, minutes=30)

    again = db.sessions.open(client_id="cli-1", metadata={"run": 2})

    assert again.id == first.id
    assert again.is_active
    assert again.metadata == {"run": 2}
    assert again.last_heartbeat > first.last_heartbeat


def test_open_reports_an_unknown_user(db: Database) -> None:
    missing = uuid.uuid4()

    with pytest.raises(InvalidInput) as caught:
        db.sessions.open(client_id="cli-1", user_id=missing)

    assert caught.value.message == f"user {missing} does not exist"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"client_id": "  "}, "client_id must be a non-blank string"),
        ({"client_id": "c", "user_id": "not-a-uuid"}, "user id must be a UUID"),
        ({"client_id": "c", "metadata": ["a"]}, "metadata must be a JSON object"),
    ],
)
def test_open_validates_its_input(db: Database, kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        db.sessions.open(**kwargs)

    assert fragment in caught.value.message


def test_get_and_get_by_client_raise_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        db.sessions.get(id=uuid.uuid4())
    with pytest.raises(NotFound, match="no session for client 'ghost'"):
        db.sessions.get_by_client(client_id="ghost")
    with pytest.raises(InvalidInput):
        db.sessions.get(id="nope")


def test_get_by_client_finds_active_and_inactive_sessions(db: Database) -> None:
    session = db.sessions.open(client_id="cli-1")
    assert db.sessions.get_by_client(client_id="cli-1") == session

    closed = db.sessions.close(id=session.id)

    assert db.sessions.get_by_client(client_id="cli-1") == closed


def test_heartbeat_moves_last_heartbeat_to_now(db: Database, conn: Conn) -> None:
    session = db.sessions.open(client_id="cli-1")
    _age(conn, session.id, minutes=10)
    aged = db.sessions.get(id=session.id)

    beaten = db.sessions.heartbeat(id=session.id)

    assert beaten.last_heartbeat > aged.last_heartbeat
    assert beaten.is_active


def test_heartbeat_refuses_an_inactive_session_with_conflict(db: Database) -> None:
    session = db.sessions.open(client_id="cli-1")
    db.sessions.close(id=session.id)

    with pytest.raises(Conflict, match="is inactive; open a new session"):
        db.sessions.heartbeat(id=session.id)


def test_heartbeat_raises_not_found_for_an_unknown_session(db: Database) -> None:
    with pytest.raises(NotFound):
        db.sessions.heartbeat(id=uuid.uuid4())
    with pytest.raises(InvalidInput):
        db.sessions.heartbeat(id="xyz")


def test_close_deactivates_and_is_idempotent(db: Database) -> None:
    session = db.sessions.open(client_id="cli-1")

    closed = db.sessions.close(id=session.id)
    again = db.sessions.close(id=session.id)

    assert not closed.is_active
    assert again == closed
    with pytest.raises(NotFound):
        db.sessions.close(id=uuid.uuid4())


def test_deactivate_stale_deactivates_exactly_the_old_active_sessions(
    db: Database, conn: Conn
) -> None:
    old = [db.sessions.open(client_id=f"old-{i}") for i in range(3)]
    fresh = db.sessions.open(client_id="fresh")
    closed_old = db.sessions.open(client_id="closed-old")
    db.sessions.close(id=closed_old.id)
    for s in [*old, closed_old]:
        _age(conn, s.id, minutes=20)

    ids = db.sessions.deactivate_stale(older_than=datetime.timedelta(minutes=5))

    assert ids == sorted(s.id for s in old)
    assert all(not db.sessions.get(id=s.id).is_active for s in old)
    assert db.sessions.get(id=fresh.id).is_active
    assert db.sessions.deactivate_stale(older_than=datetime.timedelta(minutes=5)) == []


def test_deactivate_stale_spares_sessions_younger_than_the_age(db: Database, conn: Conn) -> None:
    session = db.sessions.open(client_id="cli-1")
    _age(conn, session.id, minutes=3)

    assert db.sessions.deactivate_stale(older_than=datetime.timedelta(minutes=5)) == []
    assert db.sessions.deactivate_stale(older_than=datetime.timedelta(minutes=2)) == [session.id]


@pytest.mark.parametrize("age", [datetime.timedelta(0), datetime.timedelta(seconds=-1), 5])
def test_deactivate_stale_requires_a_positive_timedelta(db: Database, age: Any) -> None:
    with pytest.raises(InvalidInput, match="older_than must be a positive timedelta"):
        db.sessions.deactivate_stale(older_than=age)


def test_list_active_on_no_sessions_is_one_empty_page(db: Database) -> None:
    page = db.sessions.list_active()

    assert (page.items, page.next_cursor) == ([], None)


def test_list_active_with_exactly_one_page_has_no_next_cursor(db: Database) -> None:
    opened = [db.sessions.open(client_id=f"c{i}") for i in range(3)]

    page = db.sessions.list_active(limit=3)

    assert [s.id for s in page.items] == [s.id for s in reversed(opened)]
    assert page.next_cursor is None


def test_list_active_pages_through_ties_without_gaps_and_skips_inactive(
    db: Database, conn: Conn
) -> None:
    opened = [db.sessions.open(client_id=f"c{i}") for i in range(7)]
    # Equal created_at everywhere: the id alone must order and split the pages.
    conn.execute("UPDATE sessions SET created_at = '2024-01-01T00:00:00Z'")
    db.sessions.close(id=opened[2].id)

    seen: list[uuid.UUID] = []
    cursor: str | None = None
    while True:
        page = db.sessions.list_active(limit=2, cursor=cursor)
        seen.extend(s.id for s in page.items)
        assert all(s.is_active for s in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    expected = sorted((s.id for s in opened if s.id != opened[2].id), reverse=True)
    assert seen == expected


def test_list_active_refuses_bad_limits_and_cursors(db: Database) -> None:
    for i in range(2):
        db.sessions.open(client_id=f"c{i}")
    cursor = db.sessions.list_active(limit=1).next_cursor
    assert cursor is not None

    with pytest.raises(InvalidInput):
        db.sessions.list_active(limit=0)
    with pytest.raises(InvalidCursor):
        db.sessions.list_active(cursor=_tamper(cursor))
    # A cursor is bound to its listing: a sessions cursor means nothing to packs.
    with pytest.raises(InvalidCursor):
        db.memory_packs.list(project="p", cursor=cursor)


def test_open_inside_a_rolled_back_transaction_leaves_nothing(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.sessions.open(client_id="cli-1")
        raise RuntimeError("abort")

    with pytest.raises(NotFound):
        db.sessions.get_by_client(client_id="cli-1")
