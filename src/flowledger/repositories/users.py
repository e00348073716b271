# Generated from src/flowledger/aio/repositories/users.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""Users: create, look up (by id or case-insensitive email), list, update, delete."""

from __future__ import annotations

import builtins
import datetime
import uuid
from typing import Any

from flowledger.errors import InvalidCursor, InvalidInput, NotFound
from flowledger.records.identity import ROLES, NewUser, Role, User, UserPatch
from flowledger.repositories._checks import (
    as_bool,
    as_choice,
    as_cursor,
    as_name,
    as_optional_bool,
    as_struct,
    show,
)
from flowledger.repositories.base import Repository, as_uuid
from flowledger.repositories.pagination import (
    DEFAULT_PAGE_SIZE,
    Page,
    check_limit,
    listing_scope,
    make_page,
)

__all__ = ["UsersReader", "UsersRepository"]

_LIST_SCOPE = "users.list:created_at:desc"
# RFC 5321 caps a forward path at 256 octets, i.e. 254 characters of address.
_MAX_EMAIL_LENGTH = 254


class UsersReader(Repository):
    """Users: look up by id or email (any case), list."""

    def get(self, *, id: uuid.UUID | str) -> User:
        """The user with this id; raises NotFound, InvalidInput on a malformed id."""
        user_id = as_uuid(id, "user id")
        found: User = self._require("get_user_by_id", {"id": user_id}, f"user {user_id} not found")
        return found

    def get_by_email(self, *, email: str) -> User:
        """The user with this email, whatever its letter case; raises NotFound, InvalidInput."""
        _check_email(email)
        found: User = self._require(
            "get_user_by_email", {"email": email}, f"no user with email {email!r}"
        )
        return found

    def list(
        self,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
        role: Role | None = None,
        is_active: bool | None = None,
    ) -> Page[User]:
        """A page of users, newest first; raises InvalidInput (bad limit/role), InvalidCursor."""
        check_limit(limit)
        if role is not None:
            _check_role(role)
        as_optional_bool(is_active, "is_active")
        filters = {"role": role, "is_active": is_active}
        scope = listing_scope(_LIST_SCOPE, filters)
        after_created_at, after_id = self._after(cursor, scope)
        params = {
            **filters,
            "after_created_at": after_created_at,
            "after_id": after_id,
            "limit": limit,
        }
        rows: builtins.list[User] = self._fetch("list_users", params)
        return make_page(
            rows,
            limit=limit,
            key=lambda u: (u.created_at, u.id),
            codec=self._codec,
            scope=scope,
        )

    def _after(self, cursor: str | None, scope: str) -> tuple[Any, Any]:
        if cursor is None:
            return None, None
        created_at, user_id = self._codec.decode(as_cursor(cursor), scope, arity=2)
        if not isinstance(created_at, datetime.datetime) or not isinstance(user_id, uuid.UUID):
            # Signed by us, so this is a bug rather than tampering; still refuse it.
            raise InvalidCursor("cursor does not hold a (created_at, id) position")
        return created_at, user_id


class UsersRepository(UsersReader):
    """Users and their roles; deleting a user deletes their API keys."""

    def create(self, *, user: NewUser) -> User:
        """The new user; raises Conflict when the email (any case) is taken, InvalidInput."""
        user = as_struct(user, NewUser, "user")
        params = {
            "email": _check_email(user.email),
            "display_name": _check_display_name(user.display_name),
            "role": _check_role(user.role),
            "is_active": as_bool(user.is_active, "user.is_active"),
        }
        created: User | None = self._fetch("insert_user", params, context=params)
        assert created is not None  # INSERT ... RETURNING yields its row
        return created

    def update(self, *, id: uuid.UUID | str, patch: UserPatch) -> User:
        """The user after applying the patch's non-None fields; raises NotFound, InvalidInput."""
        user_id = as_uuid(id, "user id")
        patch = as_struct(patch, UserPatch, "patch")
        params = {
            "id": user_id,
            "display_name": None
            if patch.display_name is None
            else _check_display_name(patch.display_name),
            "role": None if patch.role is None else _check_role(patch.role),
            "is_active": as_optional_bool(patch.is_active, "patch.is_active"),
        }
        found: User = self._require("update_user", params, f"user {user_id} not found")
        return found

    def delete(self, *, id: uuid.UUID | str) -> None:
        """Delete the user and their API keys; raises NotFound, Conflict while they own
        workflows (deactivate such a user instead)."""
        user_id = as_uuid(id, "user id")
        if self._fetch("delete_user", {"id": user_id}) == 0:
            raise NotFound(f"user {user_id} not found")


def _check_email(email: object) -> str:
    if not isinstance(email, str):
        raise InvalidInput(f"email must be a string, got {type(email).__name__}")
    local, at, domain = email.partition("@")
    if (
        not at
        or not local
        or not domain
        or "@" in domain
        or len(email) > _MAX_EMAIL_LENGTH
        or any(c.isspace() for c in email)
    ):
        raise InvalidInput(
            f"email must look like name@domain, without spaces, at most "
            f"{_MAX_EMAIL_LENGTH} characters; got {show(email)}"
        )
    return as_name(email, "email")


def _check_display_name(name: object) -> str:
    return as_name(name, "display_name")


def _check_role(role: object) -> str:
    return as_choice(role, "role", ROLES)
