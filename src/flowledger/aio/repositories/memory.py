"""The memory store: deduplicated project knowledge, context modules, context packs.

Deduplication: an item's ``content_hash`` is the SHA-256 of its normalised content:
Unicode NFC, then every run of whitespace collapsed to one space, leading and trailing
whitespace removed (``normalise_content``). Letter case is kept: code is case-sensitive.
The content itself is stored as given.
"""

from __future__ import annotations

import builtins
import datetime
import hashlib
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec
from psycopg.types.json import Jsonb

from flowledger.aio.repositories.base import AsyncConnection, AsyncRepository, as_uuid
from flowledger.errors import InvalidInput, NotFound
from flowledger.records.memory import (
    MEMORY_KINDS,
    MEMORY_STATUSES,
    CreatedMemoryItem,
    MemoryItem,
    MemoryKind,
    MemoryModule,
    MemoryPack,
    MemoryStatus,
    NewMemoryItem,
    NewMemoryModule,
    PackedItem,
)
from flowledger.repositories._checks import (
    as_bool,
    as_cursor,
    as_json,
    as_name,
    as_optional_instant,
    as_optional_text,
    as_struct,
    as_text,
    as_text_list,
    as_uuid_list,
    show,
)
from flowledger.repositories.pagination import (
    DEFAULT_PAGE_SIZE,
    Page,
    check_limit,
    listing_scope,
    make_page,
)

__all__ = [
    "CHARS_PER_TOKEN",
    "AsyncMemoryItemsReader",
    "AsyncMemoryItemsRepository",
    "AsyncMemoryModulesReader",
    "AsyncMemoryModulesRepository",
    "AsyncMemoryPacksReader",
    "AsyncMemoryPacksRepository",
    "content_hash",
    "estimate_tokens",
    "normalise_content",
]

# The token estimate of an item is ceil(characters / 4), computed in SQL when packing.
CHARS_PER_TOKEN: Final = 4
_ITEMS_SCOPE = "memory_items.list:confidence,created_at,id:desc"
_PACKS_SCOPE = "memory_packs.list:created_at,id:desc"
_INITIAL_STATUSES: Final = frozenset({"candidate", "active", "stable"})
_INT32_MAX: Final = 2**31 - 1


def normalise_content(content: str) -> str:
    """The form of `content` that is hashed: NFC, whitespace runs collapsed, stripped."""
    return " ".join(unicodedata.normalize("NFC", content).split())


def content_hash(content: str) -> bytes:
    """The 32-byte dedupe key of `content` within a project."""
    return hashlib.sha256(normalise_content(content).encode("utf-8")).digest()


def estimate_tokens(content: str) -> int:
    """The token estimate packs use: ceil(len(content) / 4) (the SQL does the same)."""
    return -(-len(content) // CHARS_PER_TOKEN)


class AsyncMemoryItemsReader(AsyncRepository):
    """Memory items: look up, recall lists."""

    async def get(self, *, id: uuid.UUID | str) -> MemoryItem:
        """The item with this id; raises NotFound, InvalidInput on a malformed id."""
        item_id = as_uuid(id, "memory item id")
        found: MemoryItem = await self._require(
            "get_memory_item", {"id": item_id}, f"memory item {item_id} not found"
        )
        return found

    async def list(
        self,
        *,
        project: str,
        status: MemoryStatus | None = None,
        kind: MemoryKind | None = None,
        min_confidence: float | None = None,
        anchor: str | None = None,
        created_from: datetime.datetime | None = None,
        created_to: datetime.datetime | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[MemoryItem]:
        """A page of the project's items, by confidence, then newest, then id (all
        descending); created_from <= created_at < created_to. Raises InvalidInput,
        InvalidCursor."""
        _check_project(project)
        _check_status(status, MEMORY_STATUSES)
        _check_kind(kind)
        if min_confidence is not None:
            _check_confidence(min_confidence, "min_confidence")
        if anchor is not None:
            as_name(anchor, "anchor", blank=True)
        _check_aware(created_from, "created_from")
        _check_aware(created_to, "created_to")
        check_limit(limit)
        filters = {
            "project": project,
            "status": status,
            "kind": kind,
            "min_confidence": None if min_confidence is None else float(min_confidence),
            "anchor": anchor,
            "created_from": created_from,
            "created_to": created_to,
        }
        scope = listing_scope(_ITEMS_SCOPE, filters)
        after = self._after(cursor, scope)
        params = {
            **filters,
            "after_confidence": after[0],
            "after_created_at": after[1],
            "after_id": after[2],
            "limit": limit,
        }
        rows: builtins.list[MemoryItem] = await self._fetch("list_memory_items", params)
        return make_page(
            rows,
            limit=limit,
            key=lambda i: (i.confidence, i.created_at, i.id),
            codec=self._codec,
            scope=scope,
        )

    def _after(self, cursor: str | None, scope: str) -> tuple[Any, Any, Any]:
        if cursor is None:
            return None, None, None
        confidence, created_at, item_id = self._codec.decode(as_cursor(cursor), scope, arity=3)
        if (
            not isinstance(confidence, int | float)
            or not isinstance(created_at, datetime.datetime)
            or not isinstance(item_id, uuid.UUID)
        ):
            # Signed by us, so this is a bug rather than tampering; still refuse it.
            raise InvalidInput("cursor does not hold a (confidence, created_at, id) position")
        return float(confidence), created_at, item_id


class AsyncMemoryItemsRepository(AsyncMemoryItemsReader):
    """Memory items: create (deduplicated), read, recall lists, lifecycle, usage, expiry.

    Lifecycle: candidate -> active -> stable, and any of them -> deprecated, which is
    final (a database trigger refuses other moves). Creating content a project already
    holds returns the existing item, deprecated or not. Expiry deprecates, it does not
    delete: the item keeps its provenance and keeps blocking re-creation.
    """

    async def create(
        self, *, item: NewMemoryItem, raise_confidence: bool = False
    ) -> tuple[MemoryItem, bool]:
        """(the item, True) when created, or (the project's existing item with the same
        normalised content, False), its confidence raised to the larger of both when
        `raise_confidence`; race-free. Raises InvalidInput."""
        item = as_struct(item, NewMemoryItem, "item")
        _check_new_item(item)
        params = {
            "project": item.project,
            "kind": item.kind,
            "content": item.content,
            "content_hash": content_hash(item.content),
            "confidence": float(item.confidence),
            "status": item.status,
            "provenance": as_json(dict(item.provenance), "provenance"),
            "anchors": as_text_list(item.anchors, "anchors", blank=True),
            "expires_at": item.expires_at,
            "raise_confidence": as_bool(raise_confidence, "raise_confidence"),
        }
        row: CreatedMemoryItem | None = await self._fetch(
            "insert_memory_item", params, context=params
        )
        assert row is not None  # INSERT ... ON CONFLICT DO UPDATE always yields its row
        return MemoryItem(*msgspec.structs.astuple(row)[:-1]), row.created

    async def set_status(self, *, id: uuid.UUID | str, status: MemoryStatus) -> MemoryItem:
        """The item in its new status (setting the current one changes nothing); raises
        NotFound, InvalidInput (unknown status, or a move the lifecycle forbids)."""
        item_id = as_uuid(id, "memory item id")
        _check_status(status, MEMORY_STATUSES)
        found: MemoryItem = await self._require(
            "set_memory_item_status",
            {"id": item_id, "status": status},
            f"memory item {item_id} not found",
        )
        return found

    async def touch(self, *, ids: Iterable[uuid.UUID | str]) -> int:
        """How many of the items exist and were counted as read once more (access_count + 1,
        last_accessed_at = now), in one statement; raises InvalidInput on a malformed id."""
        item_ids = as_uuid_list(ids, "memory item id")
        if not item_ids:
            return 0
        found: int = await self._fetch("touch_memory_items", {"ids": item_ids})
        return found

    async def expire(self, *, now: datetime.datetime | None = None) -> builtins.list[uuid.UUID]:
        """Ids (sorted) of the items whose expires_at is at or before `now` (default: the
        server's clock), now deprecated; raises InvalidInput on a naive `now`."""
        _check_aware(now, "now")
        ids: builtins.list[uuid.UUID] = await self._fetch("expire_memory_items", {"now": now})
        return ids


class AsyncMemoryModulesReader(AsyncRepository):
    """Context modules: look up, list a project's, their ordered items."""

    async def get(self, *, id: uuid.UUID | str) -> MemoryModule:
        """The module with this id; raises NotFound, InvalidInput on a malformed id."""
        module_id = as_uuid(id, "context module id")
        found: MemoryModule = await self._require(
            "get_memory_module", {"id": module_id}, _missing_module(module_id)
        )
        return found

    async def list(self, *, project: str) -> builtins.list[MemoryModule]:
        """The project's modules, highest priority first, then by name; raises InvalidInput."""
        _check_project(project)
        found: builtins.list[MemoryModule] = await self._fetch(
            "list_memory_modules", {"project": project}
        )
        return found

    async def items(self, *, module_id: uuid.UUID | str) -> builtins.list[MemoryItem]:
        """The module's items in membership order; raises NotFound, InvalidInput."""
        module = as_uuid(module_id, "context module id")
        found: builtins.list[MemoryItem] = await self._fetch(
            "list_memory_module_items", {"module_id": module}
        )
        if not found:
            await self.get(id=module)  # raises NotFound for an unknown module; else it is empty
        return found


class AsyncMemoryModulesRepository(AsyncMemoryModulesReader):
    """Context modules of a project and their ordered membership.

    Positions of a module's items run from 0 without gaps; every membership change locks
    the module row, so concurrent changes to one module queue up instead of colliding.
    """

    async def create(self, *, module: NewMemoryModule) -> MemoryModule:
        """The new module; raises Conflict (name taken in the project), InvalidInput."""
        module = as_struct(module, NewMemoryModule, "module")
        _check_project(module.project)
        _check_name(module.name)
        _check_mapping(module.selectors, "selectors")
        _check_priority(module.priority)
        params = {
            "project": module.project,
            "name": module.name,
            "description": as_text(module.description, "description"),
            "selectors": as_json(dict(module.selectors), "selectors"),
            "priority": module.priority,
        }
        created: MemoryModule | None = await self._fetch(
            "insert_memory_module", params, context=params
        )
        assert created is not None  # INSERT ... RETURNING yields its row
        return created

    async def update(
        self,
        *,
        id: uuid.UUID | str,
        name: str | None = None,
        description: str | None = None,
        selectors: Mapping[str, Any] | None = None,
        priority: int | None = None,
    ) -> MemoryModule:
        """The module with the given (non-None) fields changed; raises NotFound, Conflict
        (name taken in the project), InvalidInput."""
        module_id = as_uuid(id, "context module id")
        if name is not None:
            _check_name(name)
        if selectors is not None:
            _check_mapping(selectors, "selectors")
        if priority is not None:
            _check_priority(priority)
        params = {
            "id": module_id,
            "name": name,
            "description": as_optional_text(description, "description"),
            "selectors": None if selectors is None else as_json(dict(selectors), "selectors"),
            "priority": priority,
        }
        found: MemoryModule = await self._require(
            "update_memory_module",
            params,
            _missing_module(module_id),
            context=params,
        )
        return found

    async def delete(self, *, id: uuid.UUID | str) -> None:
        """Delete the module and its membership (the items stay); raises NotFound."""
        module_id = as_uuid(id, "context module id")
        if await self._fetch("delete_memory_module", {"id": module_id}) == 0:
            raise NotFound(_missing_module(module_id))

    async def add_item(
        self, *, module_id: uuid.UUID | str, item_id: uuid.UUID | str, position: int | None = None
    ) -> int:
        """The position the item now holds: `position` (later items move down one) or the
        end; raises NotFound, Conflict (already a member), InvalidInput (position out of
        0..size, item of another project)."""
        module, item = as_uuid(module_id, "context module id"), as_uuid(item_id, "memory item id")
        if position is not None and (
            isinstance(position, bool) or not isinstance(position, int) or position < 0
        ):
            raise InvalidInput(f"position must be an integer >= 0, got {show(position)}")
        context = {"module_id": module, "item_id": item, "position": position}
        async with self._atomic(context) as conn:
            project = await self._lock(module, conn)
            member: MemoryItem = await self._require(
                "get_memory_item",
                {"id": item},
                f"memory item {item} not found",
                conn=conn,
            )
            if member.project != project:
                raise InvalidInput(
                    f"memory item {item} belongs to project {member.project!r}, "
                    f"not to the module's project {project!r}"
                )
            size: int = await self._fetch(
                "count_memory_module_items", {"module_id": module}, conn=conn
            )
            at = size if position is None else position
            if at > size:
                raise InvalidInput(f"position {at} is past the end of the module (size {size})")
            await self._shift(module, at, 1, conn)
            params = {"module_id": module, "item_id": item, "position": at}
            await self._fetch("add_memory_module_item", params, context=context, conn=conn)
        return at

    async def remove_item(self, *, module_id: uuid.UUID | str, item_id: uuid.UUID | str) -> None:
        """Take the item out of the module, closing the gap; raises NotFound (module, or
        item not a member), InvalidInput."""
        module, item = as_uuid(module_id, "context module id"), as_uuid(item_id, "memory item id")
        async with self._atomic() as conn:
            await self._lock(module, conn)
            params = {"module_id": module, "item_id": item}
            removed = await self._fetch("remove_memory_module_item", params, conn=conn)
            if removed is None:
                raise NotFound(f"memory item {item} is not in context module {module}")
            await self._shift(module, removed + 1, -1, conn)

    async def reorder(
        self, *, module_id: uuid.UUID | str, item_ids: Sequence[uuid.UUID | str]
    ) -> None:
        """Give the module's items the order of `item_ids` (one statement); raises NotFound,
        InvalidInput unless `item_ids` lists every member exactly once."""
        module = as_uuid(module_id, "context module id")
        ordered = as_uuid_list(item_ids, "memory item id")
        if len(set(ordered)) != len(ordered):
            raise InvalidInput("item_ids lists an item more than once")
        async with self._atomic() as conn:
            await self._lock(module, conn)
            size = await self._fetch("count_memory_module_items", {"module_id": module}, conn=conn)
            params = {"module_id": module, "item_ids": ordered}
            if size != len(ordered) or (
                size and await self._fetch("reorder_memory_module_items", params, conn=conn) != size
            ):
                raise InvalidInput(
                    f"item_ids must list each of the module's {size} items exactly once"
                )

    async def _lock(self, module: uuid.UUID, conn: AsyncConnection) -> str:
        project: str | None = await self._fetch("lock_memory_module", {"id": module}, conn=conn)
        if project is None:
            raise NotFound(_missing_module(module))
        return project

    async def _shift(
        self, module: uuid.UUID, from_position: int, delta: int, conn: AsyncConnection
    ) -> None:
        params = {"module_id": module, "from_position": from_position, "delta": delta}
        await self._fetch("shift_memory_module_items", params, conn=conn)


class AsyncMemoryPacksReader(AsyncRepository):
    """Context packs: look up, list a project's."""

    async def get(self, *, id: uuid.UUID | str) -> MemoryPack:
        """The pack with this id; raises NotFound, InvalidInput on a malformed id."""
        pack_id = as_uuid(id, "context pack id")
        found: MemoryPack = await self._require(
            "get_memory_pack", {"id": pack_id}, f"context pack {pack_id} not found"
        )
        return found

    async def list(
        self, *, project: str, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[MemoryPack]:
        """A page of the project's packs, newest first; raises InvalidInput, InvalidCursor."""
        _check_project(project)
        check_limit(limit)
        scope = listing_scope(_PACKS_SCOPE, {"project": project})
        after_created_at, after_id = self._after(cursor, scope)
        params = {
            "project": project,
            "after_created_at": after_created_at,
            "after_id": after_id,
            "limit": limit,
        }
        rows: builtins.list[MemoryPack] = await self._fetch("list_memory_packs", params)
        return make_page(
            rows,
            limit=limit,
            key=lambda p: (p.created_at, p.id),
            codec=self._codec,
            scope=scope,
        )

    def _after(self, cursor: str | None, scope: str) -> tuple[Any, Any]:
        if cursor is None:
            return None, None
        created_at, pack_id = self._codec.decode(as_cursor(cursor), scope, arity=2)
        if not isinstance(created_at, datetime.datetime) or not isinstance(pack_id, uuid.UUID):
            # Signed by us, so this is a bug rather than tampering; still refuse it.
            raise InvalidInput("cursor does not hold a (created_at, id) position")
        return created_at, pack_id


class AsyncMemoryPacksRepository(AsyncMemoryPacksReader):
    """Immutable context packs built from modules under a token budget.

    Selection: the active and stable, unexpired items of the modules, each once, highest
    confidence first (ties: module priority, order of `module_ids`, membership position).
    Each item that still fits the remaining budget is taken, so a large item is skipped
    rather than ending the pack. An item's tokens are ceil(characters / 4).
    """

    async def build(
        self, *, project: str, module_ids: Sequence[uuid.UUID | str], token_budget: int
    ) -> MemoryPack:
        """The new pack, written in one transaction; raises NotFound (unknown module),
        InvalidInput (no modules, a module of another project, budget not in 1..2^31-1)."""
        _check_project(project)
        modules = builtins.list(dict.fromkeys(as_uuid_list(module_ids, "context module id")))
        if not modules:
            raise InvalidInput("a pack needs at least one module")
        if (
            isinstance(token_budget, bool)
            or not isinstance(token_budget, int)
            or not 1 <= token_budget <= _INT32_MAX
        ):
            raise InvalidInput(f"token_budget must be between 1 and {_INT32_MAX}")
        async with self._atomic() as conn:
            found: builtins.list[MemoryModule] = await self._fetch(
                "lock_memory_modules_for_pack", {"module_ids": modules}, conn=conn
            )
            _check_pack_modules(project, modules, found)
            params = {"project": project, "module_ids": modules}
            candidates: builtins.list[PackedItem] = await self._fetch(
                "list_memory_pack_candidates", params, conn=conn
            )
            chosen = _fill(candidates, token_budget)
            pack_params = {
                "project": project,
                "token_budget": token_budget,
                "token_count": sum(c.tokens for c in chosen),
                "module_ids": modules,
                "items": Jsonb(chosen, dumps=msgspec.json.encode),
            }
            pack: MemoryPack | None = await self._fetch(
                "insert_memory_pack", pack_params, conn=conn
            )
        assert pack is not None  # INSERT ... RETURNING yields its row
        return pack


def _fill(candidates: Iterable[PackedItem], budget: int) -> builtins.list[PackedItem]:
    chosen: builtins.list[PackedItem] = []
    used = 0
    for candidate in candidates:
        if used + candidate.tokens <= budget:
            chosen.append(candidate)
            used += candidate.tokens
    return chosen


def _check_pack_modules(
    project: str, wanted: Sequence[uuid.UUID], found: Sequence[MemoryModule]
) -> None:
    by_id = {m.id: m for m in found}
    missing = [str(m) for m in wanted if m not in by_id]
    if missing:
        raise NotFound(f"context modules not found: {', '.join(missing)}")
    foreign = [str(m.id) for m in found if m.project != project]
    if foreign:
        raise InvalidInput(
            f"context modules {', '.join(foreign)} do not belong to project {project!r}"
        )


def _check_new_item(item: NewMemoryItem) -> None:
    _check_project(item.project)
    _check_kind(item.kind)
    if not isinstance(item.content, str) or not item.content.strip():
        raise InvalidInput("memory item content must not be blank")
    as_text(item.content, "content")
    _check_confidence(item.confidence, "confidence")
    _check_status(item.status, _INITIAL_STATUSES)
    _check_mapping(item.provenance, "provenance")
    if not isinstance(item.anchors, list | tuple) or not all(
        isinstance(a, str) for a in item.anchors
    ):
        raise InvalidInput("anchors must be a list of strings")
    _check_aware(item.expires_at, "expires_at")


def _check_project(project: str) -> None:
    if not isinstance(project, str) or not project.strip():
        raise InvalidInput("project must be a non-blank string")
    as_name(project, "project")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("context module name must be a non-blank string")
    as_name(name, "context module name")


def _check_kind(kind: str | None) -> None:
    if kind is not None and (not isinstance(kind, str) or kind not in MEMORY_KINDS):
        raise InvalidInput(f"kind must be one of {', '.join(MEMORY_KINDS)}; got {show(kind)}")


def _check_status(status: str | None, allowed: Iterable[str]) -> None:
    allowed = builtins.list(allowed)
    if status is not None and (not isinstance(status, str) or status not in allowed):
        choices = ", ".join(s for s in MEMORY_STATUSES if s in allowed)
        raise InvalidInput(f"status must be one of {choices}; got {show(status)}")


def _check_confidence(value: float, what: str) -> None:
    # `not 0 <= value <= 1` also refuses NaN.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidInput(f"{what} must be a number between 0 and 1, got {show(value)}")


def _check_priority(priority: int) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidInput(f"priority must be a 32-bit integer, got {show(priority)}")
    if not -_INT32_MAX - 1 <= priority <= _INT32_MAX:
        raise InvalidInput(f"priority must be a 32-bit integer, got {show(priority)}")


def _check_mapping(value: object, what: str) -> None:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{what} must be a JSON object (a mapping)")


def _check_aware(value: datetime.datetime | None, what: str) -> None:
    as_optional_instant(value, what)


def _missing_module(module_id: uuid.UUID) -> str:
    return f"context module {module_id} not found"
