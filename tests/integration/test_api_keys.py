"""API keys against a real PostgreSQL: issue once, verify by hash, revoke, lazy last_used_at."""

from __future__ import annotations

import datetime
import hashlib
import re
import uuid
from typing import Any

import msgspec
import psycopg
import pytest

from flowledger.database import Database
from flowledger.errors import Conflict, InvalidInput, NotFound
from flowledger.records.identity import ApiKey, IssuedApiKey, NewUser, User, UserPatch

Conn = psycopg.Connection[tuple[Any, ...]]
SECRET_FORMAT = re.compile(r"fl_([A-Za-z0-9]{12})_[A-Za-z0-9_-]{43}")


@pytest.fixture
def user(db: Database) -> User:
    return db.users.create(user=NewUser(email="dev@example.com", display_name="Dev"))


def _xmin(conn: Conn, key_id: uuid.UUID) -> str:
    # The transaction id that wrote the row's current version: unchanged means no write.
    row = conn.execute("SELECT xmin::text FROM api_keys WHERE id = %s", (key_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_issue_returns_the_secret_once_and_stores_only_its_hash(
    db: Database, conn: Conn, user: User
) -> None:
    issued = db.api_keys.issue(user_id=user.id, name="ci", scopes=["runs:read", "runs:write"])

    match = SECRET_FORMAT.fullmatch(issued.secret)
    assert match is not None
    assert match.group(1) == issued.key.prefix
    assert issued.key.user_id == user.id
    assert issued.key.scopes == ["runs:read", "runs:write"]
    assert (issued.key.revoked_at, issued.key.last_used_at, issued.key.expires_at) == (
        None,
        None,
        None,
    )
    row = conn.execute(
        "SELECT secret_hash, row_to_json(k)::text FROM api_keys AS k WHERE id = %s",
        (issued.key.id,),
    ).fetchone()
    assert row is not None
    assert row[0] == hashlib.sha256(issued.secret.encode()).digest()
    assert issued.secret.split("_", 2)[2] not in row[1]


def test_keys_never_expose_the_hash_nor_print_the_secret(db: Database, user: User) -> None:
    issued = db.api_keys.issue(user_id=user.id, name="ci")

    assert "secret_hash" not in ApiKey.__struct_fields__
    assert "secret" not in msgspec.structs.asdict(db.api_keys.get(id=issued.key.id))
    assert issued.secret not in repr(issued)
    assert f"fl_{issued.key.prefix}_***" in repr(issued)


def test_every_issue_draws_a_new_prefix_and_secret(db: Database, user: User) -> None:
    first = db.api_keys.issue(user_id=user.id, name="one")
    second = db.api_keys.issue(user_id=user.id, name="two")

    assert first.key.prefix != second.key.prefix
    assert first.secret != second.secret


def test_issue_rejects_a_duplicate_name_for_the_same_user(db: Database, user: User) -> None:
    db.api_keys.issue(user_id=user.id, name="ci")
    other = db.users.create(user=NewUser(email="ops@example.com", display_name="Ops"))

    with pytest.raises(Conflict) as caught:
        db.api_keys.issue(user_id=user.id, name="ci")

    assert caught.value.message == "this user already has an API key named 'ci'"
    assert db.api_keys.issue(user_id=other.id, name="ci").key.user_id == other.id


def test_issue_for_an_unknown_user_is_invalid_input(db: Database) -> None:
    missing = uuid.uuid4()

    with pytest.raises(InvalidInput) as caught:
        db.api_keys.issue(user_id=missing, name="ci")

    assert caught.value.message == f"user {missing} does not exist"
    assert caught.value.constraint == "api_keys_user_id_fkey"


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"name": " "}, "name must not be blank"),
        ({"scopes": "runs:read"}, "scopes must be a sequence of non-blank strings"),
        ({"scopes": ["runs:read", ""]}, "scopes must be a sequence of non-blank strings"),
        (
            {"expires_at": datetime.datetime(2030, 1, 1)},
            "expires_at must be a timezone-aware datetime",
        ),
        ({"user_id": "nope"}, "user id must be a UUID"),
    ],
)
def test_issue_validates_before_reaching_the_server(
    db: Database, user: User, arguments: dict[str, Any], fragment: str
) -> None:
    call: dict[str, Any] = {"user_id": user.id, "name": "ci", **arguments}

    with pytest.raises(InvalidInput, match=fragment) as caught:
        db.api_keys.issue(**call)

    assert caught.value.sqlstate is None


def test_verify_returns_the_key_and_its_user(db: Database, user: User) -> None:
    issued = db.api_keys.issue(user_id=user.id, name="ci", scopes=["admin"])

    verified = db.api_keys.verify(secret=issued.secret)

    assert verified is not None
    assert verified.user == user
    assert verified.key.id == issued.key.id
    assert verified.key.scopes == ["admin"]
    assert verified.key.last_used_at is not None


def test_verify_rejects_unknown_and_malformed_secrets(db: Database, user: User) -> None:
    issued = db.api_keys.issue(user_id=user.id, name="ci")
    token = issued.secret[len("fl_") + 12 + 1 :]
    wrong_token = f"fl_{issued.key.prefix}_{'B' * 43}"
    unknown_prefix = f"fl_{'Z' * 12}_{token}"

    for secret in (
        wrong_token,
        unknown_prefix,
        "",
        "fl_",
        issued.secret + "x",
        issued.secret[:-1],
        issued.secret.replace("fl_", "xx_", 1),
        issued.secret.upper(),
        f" {issued.secret}",
    ):
        assert db.api_keys.verify(secret=secret) is None, secret
    assert db.api_keys.get(id=issued.key.id).last_used_at is None


def test_verify_rejects_a_revoked_key(db: Database, user: User) -> None:
    issued = db.api_keys.issue(user_id=user.id, name="ci")
    db.api_keys.revoke(id=issued.key.id)

    assert db.api_keys.verify(secret=issued.secret) is None


def test_verify_rejects_an_expired_key_and_accepts_one_not_yet_expired(
    db: Database, user: User
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = db.api_keys.issue(
        user_id=user.id, name="old", expires_at=now - datetime.timedelta(seconds=1)
    )
    current = db.api_keys.issue(
        user_id=user.id, name="new", expires_at=now + datetime.timedelta(hours=1)
    )

    assert db.api_keys.verify(secret=expired.secret) is None
    assert db.api_keys.verify(secret=current.secret) is not None


def test_verify_rejects_keys_of_an_inactive_user_until_reactivated(
    db: Database, user: User
) -> None:
    issued = db.api_keys.issue(user_id=user.id, name="ci")
    db.users.update(id=user.id, patch=UserPatch(is_active=False))

    assert db.api_keys.verify(secret=issued.secret) is None

    db.users.update(id=user.id, patch=UserPatch(is_active=True))
    assert db.api_keys.verify(secret=issued.secret) is not None


def test_verify_writes_last_used_at_at_most_once_a_minute(
    db: Database, conn: Conn, user: User
) -> None:
    issued = db.api_keys.issue(user_id=user.id, name="ci")

    first = db.api_keys.verify(secret=issued.secret)
    written = _xmin(conn, issued.key.id)
    second = db.api_keys.verify(secret=issued.secret)

    assert first is not None and second is not None
    assert second.key.last_used_at == first.key.last_used_at
    assert _xmin(conn, issued.key.id) == written  # the second verify did not write
    assert db.api_keys.get(id=issued.key.id) == first.key

    conn.execute(
        "UPDATE api_keys SET last_used_at = last_used_at - interval '61 seconds' WHERE id = %s",
        (issued.key.id,),
    )
    third = db.api_keys.verify(secret=issued.secret)
    assert third is not None and third.key.last_used_at is not None
    assert first.key.last_used_at is not None
    assert third.key.last_used_at > first.key.last_used_at
    assert _xmin(conn, issued.key.id) != written


def test_revoke_sets_revoked_at_once(db: Database, user: User) -> None:
    issued = db.api_keys.issue(user_id=user.id, name="ci")

    revoked = db.api_keys.revoke(id=issued.key.id)
    again = db.api_keys.revoke(id=str(issued.key.id))

    assert revoked.revoked_at is not None
    assert again == revoked  # same revoked_at, and updated_at untouched
    assert db.api_keys.get(id=issued.key.id) == revoked


def test_revoke_raises_not_found_and_validates_the_id(db: Database) -> None:
    missing = uuid.uuid4()

    with pytest.raises(NotFound, match=f"API key {missing} not found"):
        db.api_keys.revoke(id=missing)
    with pytest.raises(InvalidInput, match="API key id must be a UUID"):
        db.api_keys.revoke(id="key-1")


def test_get_raises_not_found_and_validates_the_id(db: Database) -> None:
    with pytest.raises(NotFound):
        db.api_keys.get(id=uuid.uuid4())
    with pytest.raises(InvalidInput):
        db.api_keys.get(id="")


def test_list_by_user_returns_the_users_keys_oldest_first(db: Database, user: User) -> None:
    keys: list[IssuedApiKey] = [
        db.api_keys.issue(user_id=user.id, name=name) for name in ("zeta", "alpha", "mid")
    ]
    revoked = db.api_keys.revoke(id=keys[1].key.id)
    other = db.users.create(user=NewUser(email="ops@example.com", display_name="Ops"))
    db.api_keys.issue(user_id=other.id, name="zeta")

    listed = db.api_keys.list_by_user(user_id=user.id)

    assert listed == [keys[0].key, revoked, keys[2].key]


def test_list_by_user_is_empty_for_an_unknown_user_and_validates(db: Database) -> None:
    assert db.api_keys.list_by_user(user_id=uuid.uuid4()) == []
    with pytest.raises(InvalidInput):
        db.api_keys.list_by_user(user_id="me")
