# Generated from src/flowledger/aio/repositories/api_keys.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""API keys: issue (the secret is shown once), verify, revoke, list.

A secret reads ``fl_<prefix>_<token>``: the prefix (12 letters and digits) is public and
finds the row; the token is 32 random bytes in unpadded base64url. Only the SHA-256 of
the whole secret is stored, so a leaked table does not leak usable keys. A plain (not
slow) hash is enough because the token has 256 bits of entropy: nothing to brute-force.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import secrets
import string
import uuid
from collections.abc import Sequence

from flowledger.errors import InvalidInput
from flowledger.records.identity import ApiKey, ApiKeyCredential, IssuedApiKey, VerifiedKey
from flowledger.repositories._checks import (
    as_name,
    as_optional_instant,
    as_text_list,
    show,
)
from flowledger.repositories.base import Repository, as_uuid

__all__ = ["ApiKeysReader", "ApiKeysRepository"]

_PREFIX_ALPHABET = string.ascii_letters + string.digits
_PREFIX_LENGTH = 12
_TOKEN_BYTES = 32
# 32 bytes are 43 characters of unpadded base64url.
_SECRET = re.compile(r"fl_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})")
# A key used on every request records its use at most this often.
_TOUCH_INTERVAL = datetime.timedelta(seconds=60)


class ApiKeysReader(Repository):
    """API keys: verify (without recording the use), look up, list a user's keys."""

    def verify(self, *, secret: str) -> VerifiedKey | None:
        """The key and its user when `secret` is a valid, unrevoked, unexpired key of an
        active user; None otherwise (never raises for a bad secret). Writes nothing: the
        key's `last_used_at` stays as it was."""
        found = self._credential(secret)
        return None if found is None else VerifiedKey(key=found.key(), user=found.user())

    def get(self, *, id: uuid.UUID | str) -> ApiKey:
        """The key with this id (no secret, no hash); raises NotFound, InvalidInput."""
        key_id = as_uuid(id, "API key id")
        found: ApiKey = self._require(
            "get_api_key_by_id", {"id": key_id}, f"API key {key_id} not found"
        )
        return found

    def list_by_user(self, *, user_id: uuid.UUID | str) -> list[ApiKey]:
        """Every key of the user, oldest first, revoked ones included; raises InvalidInput."""
        owner = as_uuid(user_id, "user id")
        found: list[ApiKey] = self._fetch("list_api_keys_by_user", {"user_id": owner})
        return found

    def _credential(self, secret: object) -> ApiKeyCredential | None:
        """The usable key whose secret this is, or None."""
        # Whatever a client sends (None, bytes, junk) is simply not a key.
        match = _SECRET.fullmatch(secret) if isinstance(secret, str) else None
        if match is None:
            return None
        found: ApiKeyCredential | None = self._fetch(
            "get_api_key_credential_by_prefix", {"prefix": match.group(1)}
        )
        if found is None or not hmac.compare_digest(found.secret_hash, _digest(match.group(0))):
            return None
        return found


class ApiKeysRepository(ApiKeysReader):
    """API keys of users: only a hash of each secret is stored."""

    def issue(
        self,
        *,
        user_id: uuid.UUID | str,
        name: str,
        scopes: Sequence[str] = (),
        expires_at: datetime.datetime | None = None,
    ) -> IssuedApiKey:
        """A new key and its plaintext secret (never retrievable again); raises InvalidInput
        (bad arguments, unknown user), Conflict when the user has a key of that name."""
        owner = as_uuid(user_id, "user id")
        name = as_name(name, "name")
        # A lone string is a Sequence[str] too, and would become one scope per character.
        if not isinstance(scopes, list | tuple) or not all(
            isinstance(s, str) and s.strip() for s in scopes
        ):
            raise InvalidInput(
                f"scopes must be a sequence of non-blank strings, got {show(scopes)}"
            )
        scopes = as_text_list(scopes, "scopes")
        expires_at = as_optional_instant(expires_at, "expires_at")
        prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(_PREFIX_LENGTH))
        secret = f"fl_{prefix}_{secrets.token_urlsafe(_TOKEN_BYTES)}"
        params = {
            "user_id": owner,
            "name": name,
            "prefix": prefix,
            "secret_hash": _digest(secret),
            "scopes": list(scopes),
            "expires_at": expires_at,
        }
        key: ApiKey | None = self._fetch("insert_api_key", params, context=params)
        assert key is not None  # INSERT ... RETURNING yields its row
        return IssuedApiKey(key=key, secret=secret)

    def verify(self, *, secret: str) -> VerifiedKey | None:
        """The key and its user when `secret` is a valid, unrevoked, unexpired key of an
        active user, its `last_used_at` recorded (at most once a minute); None otherwise
        (never raises for a bad secret)."""
        found = self._credential(secret)
        if found is None:
            return None
        touched: ApiKey | None = self._fetch(
            "touch_api_key_last_used", {"id": found.id, "interval": _TOUCH_INTERVAL}
        )
        return VerifiedKey(key=touched or found.key(), user=found.user())

    def revoke(self, *, id: uuid.UUID | str) -> ApiKey:
        """The revoked key; revoking again keeps the first revoked_at. Raises NotFound."""
        key_id = as_uuid(id, "API key id")
        found: ApiKey = self._require(
            "revoke_api_key", {"id": key_id}, f"API key {key_id} not found"
        )
        return found


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
