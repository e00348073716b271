"""Users repository against a real PostgreSQL: CRUD, case-insensitive email, keyset pages."""

from __future__ import annotations

import datetime
import re
import uuid
from typing import Any

import psycopg
import pytest

from flowledger.database import Database
from flowledger.errors import Conflict, InvalidCursor, InvalidInput, NotFound
from flowledger.records.catalog import NewPack
from flowledger.records.identity import NewUser, User, UserPatch
from flowledger.repositories.pagination import listing_scope

Conn = psycopg.Connection[tuple[Any, ...]]


def _new(email: str = "alice@example.com", **fields: Any) -> NewUser:
    return NewUser(email=email, display_name=fields.pop("display_name", "Alice"), **fields)


def _tamper(token: str) -> str:
    # A character in the middle: the result is still well-formed base64url.
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


def _add_workflow(conn: Conn, owner_id: uuid.UUID) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO workflows (owner_id, name) VALUES (%s, 'nightly') RETURNING id", (owner_id,)
    ).fetchone()
    assert row is not None
    workflow_id: uuid.UUID = row[0]
    return workflow_id


def test_create_applies_defaults_and_returns_the_stored_row(db: Database) -> None:
    user = db.users.create(user=_new())

    assert isinstance(user.id, uuid.UUID)
    assert (user.email, user.display_name) == ("alice@example.com", "Alice")
    assert (user.role, user.is_active) == ("developer", True)
    assert user.created_at.tzinfo is not None
    assert user.updated_at == user.created_at
    assert db.users.get(id=user.id) == user


def test_create_rejects_a_duplicate_email_in_any_case(db: Database) -> None:
    db.users.create(user=_new("alice@example.com"))

    with pytest.raises(Conflict) as caught:
        db.users.create(user=_new("ALICE@Example.COM", display_name="Other Alice"))

    assert caught.value.message == "a user with email 'ALICE@Example.COM' already exists"
    assert caught.value.constraint == "users_email_key"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"email": "no-at-sign"}, "email must look like"),
        ({"email": "@example.com"}, "email must look like"),
        ({"email": "alice@"}, "email must look like"),
        ({"email": "a@b@c"}, "email must look like"),
        ({"email": "al ice@example.com"}, "email must look like"),
        ({"email": "a" * 250 + "@x.io"}, "at most 254"),
        ({"role": "root"}, "role must be one of admin, developer, viewer"),
        ({"display_name": "  "}, "display_name must not be blank"),
    ],
)
def test_create_validates_before_reaching_the_server(
    db: Database, fields: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        db.users.create(user=_new(**fields))

    assert fragment in caught.value.message
    assert caught.value.sqlstate is None  # raised in Python, not by a CHECK


def test_get_accepts_a_string_id(db: Database) -> None:
    user = db.users.create(user=_new())

    assert db.users.get(id=str(user.id)) == user


def test_get_raises_not_found_for_an_unknown_id(db: Database) -> None:
    missing = uuid.uuid4()

    with pytest.raises(NotFound, match=f"user {missing} not found"):
        db.users.get(id=missing)


def test_get_rejects_a_malformed_id(db: Database) -> None:
    with pytest.raises(InvalidInput, match="user id must be a UUID") as caught:
        db.users.get(id="42")

    assert caught.value.sqlstate is None


def test_get_by_email_ignores_letter_case(db: Database) -> None:
    user = db.users.create(user=_new("Bob.Smith@Example.com", display_name="Bob"))

    assert db.users.get_by_email(email="bob.smith@example.COM") == user


def test_get_by_email_raises_not_found_and_validates(db: Database) -> None:
    with pytest.raises(NotFound, match=re.escape("no user with email 'nobody@example.com'")):
        db.users.get_by_email(email="nobody@example.com")
    with pytest.raises(InvalidInput):
        db.users.get_by_email(email="not an email")


def _create_many(db: Database, count: int, *, start: int = 0, **fields: Any) -> list[User]:
    # One transaction: now() is the same for every row, so created_at ties and only the
    # id keeps the order stable.
    with db.transaction() as tx:
        return [
            tx.users.create(user=_new(f"user{i}@example.com", display_name=f"U{i}", **fields))
            for i in range(start, start + count)
        ]


def _walk(db: Database, *, limit: int, **filters: Any) -> tuple[list[User], int]:
    users: list[User] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = db.users.list(limit=limit, cursor=cursor, **filters)
        pages += 1
        users.extend(page.items)
        if page.next_cursor is None:
            return users, pages
        assert len(page.items) == limit
        cursor = page.next_cursor


def test_list_pages_through_ties_on_created_at_newest_first(db: Database) -> None:
    older = _create_many(db, 4)
    tied = _create_many(db, 7, start=4)
    assert len({u.created_at for u in tied}) == 1

    seen, pages = _walk(db, limit=3)

    assert pages == 4
    assert len(seen) == len({u.id for u in seen}) == 11
    expected = sorted(older + tied, key=lambda u: (u.created_at, u.id), reverse=True)
    assert seen == expected


def test_list_returns_one_page_when_everything_fits(db: Database) -> None:
    users = _create_many(db, 2)

    page = db.users.list()

    assert page.next_cursor is None
    assert {u.id for u in page.items} == {u.id for u in users}


def test_list_filters_by_role_and_activity(db: Database) -> None:
    admins = _create_many(db, 3, role="admin")
    _create_many(db, 2, start=3, role="viewer")
    retired = db.users.update(id=admins[0].id, patch=UserPatch(is_active=False))

    role_only, _ = _walk(db, limit=2, role="admin")
    active_admins, _ = _walk(db, limit=1, role="admin", is_active=True)
    inactive, _ = _walk(db, limit=10, is_active=False)

    assert {u.id for u in role_only} == {u.id for u in admins}
    assert {u.id for u in active_admins} == {admins[1].id, admins[2].id}
    assert inactive == [retired]


def test_list_validates_limit_and_role(db: Database) -> None:
    for bad_limit in (0, -1, 501):
        with pytest.raises(InvalidInput, match="limit must be between 1 and 500"):
            db.users.list(limit=bad_limit)
    with pytest.raises(InvalidInput, match="role must be one of"):
        db.users.list(role="owner")  # type: ignore[arg-type]


def test_list_rejects_a_tampered_or_foreign_cursor(db: Database) -> None:
    _create_many(db, 3)
    cursor = db.users.list(limit=1).next_cursor
    assert cursor is not None
    db.packs.create(pack=NewPack(ref="a", label="A"))
    db.packs.create(pack=NewPack(ref="b", label="B"))
    foreign = db.packs.list(limit=1).next_cursor
    assert foreign is not None

    for bad in (_tamper(cursor), cursor[:-3], "not a cursor!", foreign):
        with pytest.raises(InvalidCursor):
            db.users.list(limit=1, cursor=bad)


def test_list_rejects_a_signed_cursor_holding_the_wrong_types(db: Database) -> None:
    scope = listing_scope("users.list:created_at:desc", {"role": None, "is_active": None})
    forged = db._codec.encode(scope, ["yesterday", 1])

    with pytest.raises(InvalidCursor, match=r"\(created_at, id\)"):
        db.users.list(cursor=forged)


def test_update_changes_only_the_given_fields(db: Database) -> None:
    user = db.users.create(user=_new())

    updated = db.users.update(id=user.id, patch=UserPatch(role="admin", is_active=False))

    assert (updated.role, updated.is_active) == ("admin", False)
    assert (updated.email, updated.display_name) == (user.email, user.display_name)
    assert updated.updated_at > user.updated_at
    assert db.users.get(id=user.id) == updated


def test_update_with_an_empty_patch_leaves_the_row_untouched(db: Database) -> None:
    user = db.users.create(user=_new())

    assert db.users.update(id=user.id, patch=UserPatch()) == user


def test_update_raises_not_found_and_validates(db: Database) -> None:
    with pytest.raises(NotFound):
        db.users.update(id=uuid.uuid4(), patch=UserPatch(display_name="X"))
    user = db.users.create(user=_new())
    with pytest.raises(InvalidInput, match="role must be one of") as caught:
        db.users.update(id=user.id, patch=UserPatch(role="superuser"))  # type: ignore[arg-type]
    assert caught.value.sqlstate is None
    with pytest.raises(InvalidInput, match="display_name must not be blank"):
        db.users.update(id=user.id, patch=UserPatch(display_name=""))


def test_delete_removes_the_user_and_cascades_to_api_keys(db: Database, conn: Conn) -> None:
    user = db.users.create(user=_new())
    issued = db.api_keys.issue(user_id=user.id, name="ci")
    other = db.users.create(user=_new("bob@example.com", display_name="Bob"))
    kept = db.api_keys.issue(user_id=other.id, name="ci")

    db.users.delete(id=user.id)

    with pytest.raises(NotFound):
        db.users.get(id=user.id)
    with pytest.raises(NotFound):
        db.api_keys.get(id=issued.key.id)
    assert db.api_keys.verify(secret=issued.secret) is None
    remaining = conn.execute("SELECT id FROM api_keys").fetchall()
    assert remaining == [(kept.key.id,)]


def test_delete_raises_not_found_for_an_unknown_user(db: Database) -> None:
    user = db.users.create(user=_new())
    db.users.delete(id=user.id)

    with pytest.raises(NotFound, match=f"user {user.id} not found"):
        db.users.delete(id=user.id)


def test_delete_refuses_a_user_who_owns_workflows(db: Database, conn: Conn) -> None:
    user = db.users.create(user=_new())
    _add_workflow(conn, user.id)

    with pytest.raises(Conflict, match="workflows") as caught:
        db.users.delete(id=user.id)

    assert caught.value.constraint == "workflows_owner_id_fkey"
    assert db.users.get(id=user.id) == user


def test_writes_in_a_failed_transaction_are_rolled_back(db: Database) -> None:
    with pytest.raises(Conflict), db.transaction() as tx:
        tx.users.create(user=_new("carol@example.com", display_name="Carol"))
        tx.users.create(user=_new("CAROL@example.com", display_name="Carol again"))

    with pytest.raises(NotFound):
        db.users.get_by_email(email="carol@example.com")


def test_timestamps_are_utc(db: Database) -> None:
    user = db.users.create(user=_new())

    assert user.created_at.utcoffset() == datetime.timedelta(0)
