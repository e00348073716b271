"""Records of the identity aggregate: users and their API keys."""

from __future__ import annotations

import datetime
import uuid
from typing import Literal

import msgspec

__all__ = [
    "ROLES",
    "ApiKey",
    "ApiKeyCredential",
    "IssuedApiKey",
    "NewUser",
    "Role",
    "User",
    "UserPatch",
    "VerifiedKey",
]

Role = Literal["admin", "developer", "viewer"]
ROLES: frozenset[str] = frozenset({"admin", "developer", "viewer"})


class User(msgspec.Struct, frozen=True, gc=False):
    """A user as stored."""

    id: uuid.UUID
    email: str
    display_name: str
    role: Role
    is_active: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime


class NewUser(msgspec.Struct, frozen=True, kw_only=True):
    """What `users.create` needs; the email is unique regardless of case."""

    email: str
    display_name: str
    role: Role = "developer"
    is_active: bool = True


class UserPatch(msgspec.Struct, frozen=True, kw_only=True):
    """Fields `users.update` changes; None leaves the stored value as it is."""

    display_name: str | None = None
    role: Role | None = None
    is_active: bool | None = None


class ApiKey(msgspec.Struct, frozen=True, gc=False):
    """An API key as callers see it: no secret and no hash of it."""

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    expires_at: datetime.datetime | None
    revoked_at: datetime.datetime | None
    last_used_at: datetime.datetime | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


class IssuedApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """A freshly issued key and its plaintext secret, which is shown this once only."""

    key: ApiKey
    secret: str

    def __repr__(self) -> str:
        # Keeps the secret out of logs and tracebacks that print the value.
        return f"IssuedApiKey(key={self.key!r}, secret='fl_{self.key.prefix}_***')"


class VerifiedKey(msgspec.Struct, frozen=True, kw_only=True):
    """A key that authenticated a request, and the (active) user it belongs to."""

    key: ApiKey
    user: User


class ApiKeyCredential(msgspec.Struct, frozen=True, gc=False):
    """A usable key, its stored hash and its user, as `api_keys.verify` reads them in one row."""

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    expires_at: datetime.datetime | None
    revoked_at: datetime.datetime | None
    last_used_at: datetime.datetime | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    secret_hash: bytes
    user_email: str
    user_display_name: str
    user_role: Role
    user_is_active: bool
    user_created_at: datetime.datetime
    user_updated_at: datetime.datetime

    def key(self) -> ApiKey:
        """The key part of the row."""
        return ApiKey(
            self.id,
            self.user_id,
            self.name,
            self.prefix,
            self.scopes,
            self.expires_at,
            self.revoked_at,
            self.last_used_at,
            self.created_at,
            self.updated_at,
        )

    def user(self) -> User:
        """The user part of the row."""
        return User(
            self.user_id,
            self.user_email,
            self.user_display_name,
            self.user_role,
            self.user_is_active,
            self.user_created_at,
            self.user_updated_at,
        )
