"""Client sessions: open, heartbeat, close, stale-session cleanup, listing."""

from __future__ import annotations

import builtins
import datetime
import uuid
from collections.abc import Mapping
from typing import Any

from flowledger.aio.repositories.base import AsyncRepository, as_optional_uuid, as_uuid
from flowledger.errors import CONSTRAINT_MESSAGES, Conflict, InvalidInput
from flowledger.records.agents import Session
from flowledger.repositories._checks import MAX_AGE, as_cursor, as_interval, as_json, as_name, show
from flowledger.repositories.pagination import (
    DEFAULT_PAGE_SIZE,
    Page,
    check_limit,
    listing_scope,
    make_page,
)

__all__ = ["AsyncSessionsReader", "AsyncSessionsRepository"]

_LIST_SCOPE = "sessions.list_active:created_at:desc"
_CLIENT_TAKEN = "sessions_client_id_key"


class AsyncSessionsReader(AsyncRepository):
    """Client sessions: look up by id or client, list active ones."""

    async def get(self, *, id: uuid.UUID | str) -> Session:
        """The session with this id; raises NotFound, InvalidInput on a malformed id."""
        session_id = as_uuid(id, "session id")
        found: Session = await self._require(
            "get_session", {"id": session_id}, f"session {session_id} not found"
        )
        return found

    async def get_by_client(self, *, client_id: str) -> Session:
        """The session of this client, active or not; raises NotFound, InvalidInput."""
        _check_client_id(client_id)
        found: Session = await self._require(
            "get_session_by_client",
            {"client_id": client_id},
            f"no session for client {client_id!r}",
        )
        return found

    async def list_active(
        self, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[Session]:
        """A page of active sessions, newest first; raises InvalidInput, InvalidCursor."""
        check_limit(limit)
        scope = listing_scope(_LIST_SCOPE, {})
        after_created_at, after_id = self._after(cursor, scope)
        params = {"after_created_at": after_created_at, "after_id": after_id, "limit": limit}
        rows: builtins.list[Session] = await self._fetch("list_active_sessions", params)
        return make_page(
            rows,
            limit=limit,
            key=lambda s: (s.created_at, s.id),
            codec=self._codec,
            scope=scope,
        )

    def _after(
        self, cursor: str | None, scope: str
    ) -> tuple[datetime.datetime | None, uuid.UUID | None]:
        if cursor is None:
            return None, None
        created_at, session_id = self._codec.decode(as_cursor(cursor), scope, arity=2)
        if not isinstance(created_at, datetime.datetime) or not isinstance(session_id, uuid.UUID):
            # Signed by us, so this is a bug rather than tampering; still refuse it.
            raise InvalidInput("cursor does not hold a (created_at, id) position")
        return created_at, session_id


class AsyncSessionsRepository(AsyncSessionsReader):
    """One session per client id; active until closed or found stale.

    A heartbeat on an inactive session raises Conflict: the session still exists but its
    state forbids the call, and the client should open a new one. Opening a client id whose
    session is inactive reopens that session (same id, fresh heartbeat).
    """

    async def open(
        self,
        *,
        client_id: str,
        user_id: uuid.UUID | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Session:
        """The client's new (or reopened) active session; raises Conflict when the client
        already has an active session, InvalidInput (blank client id, unknown user)."""
        _check_client_id(client_id)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidInput("session metadata must be a JSON object (a mapping)")
        user = as_optional_uuid(user_id, "user id")
        params = {
            "client_id": client_id,
            "user_id": user,
            "metadata": as_json(dict(metadata or {}), "metadata"),
        }
        session: Session | None = await self._fetch("open_session", params, context=params)
        if session is None:
            message = CONSTRAINT_MESSAGES[_CLIENT_TAKEN].format(client_id=client_id)
            raise Conflict(message, constraint=_CLIENT_TAKEN)
        return session

    async def heartbeat(self, *, id: uuid.UUID | str) -> Session:
        """The session with its heartbeat set to now; raises NotFound, Conflict when the
        session is inactive (closed, or deactivated as stale)."""
        session_id = as_uuid(id, "session id")
        session: Session | None = await self._fetch("heartbeat_session", {"id": session_id})
        if session is not None:
            return session
        await self.get(id=session_id)  # raises NotFound when the session does not exist
        raise Conflict(f"session {session_id} is inactive; open a new session")

    async def close(self, *, id: uuid.UUID | str) -> Session:
        """The session, now inactive (closing twice is harmless); raises NotFound."""
        session_id = as_uuid(id, "session id")
        found: Session = await self._require(
            "close_session", {"id": session_id}, f"session {session_id} not found"
        )
        return found

    async def deactivate_stale(self, *, older_than: datetime.timedelta) -> list[uuid.UUID]:
        """Ids of the active sessions without a heartbeat for `older_than`, now deactivated
        (sorted); raises InvalidInput unless `older_than` is positive."""
        if not isinstance(older_than, datetime.timedelta) or older_than <= datetime.timedelta(0):
            raise InvalidInput(f"older_than must be a positive timedelta, got {show(older_than)}")
        as_interval(older_than, "older_than", datetime.timedelta(microseconds=1), MAX_AGE)
        ids: list[uuid.UUID] = await self._fetch(
            "deactivate_stale_sessions", {"older_than": older_than}
        )
        return ids


def _check_client_id(client_id: str) -> None:
    if not isinstance(client_id, str) or not client_id.strip():
        raise InvalidInput("client_id must be a non-blank string")
    as_name(client_id, "client_id")
