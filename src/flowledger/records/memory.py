"""Records of the memory aggregate: items, context modules and context packs."""

from __future__ import annotations

import datetime
import uuid
from typing import Any, Final, Literal, get_args

import msgspec

__all__ = [
    "MEMORY_KINDS",
    "MEMORY_STATUSES",
    "CreatedMemoryItem",
    "MemoryItem",
    "MemoryKind",
    "MemoryModule",
    "MemoryPack",
    "MemoryStatus",
    "NewMemoryItem",
    "NewMemoryModule",
    "PackedItem",
]

MemoryKind = Literal["decision", "constraint", "gotcha", "style_rule", "learning"]
MemoryStatus = Literal["candidate", "active", "stable", "deprecated"]
MEMORY_KINDS: Final[tuple[str, ...]] = get_args(MemoryKind)
MEMORY_STATUSES: Final[tuple[str, ...]] = get_args(MemoryStatus)


class MemoryItem(msgspec.Struct, frozen=True, gc=False):
    """One piece of project knowledge, its trust (confidence, status) and usage."""

    id: uuid.UUID
    project: str
    kind: MemoryKind
    content: str
    content_hash: bytes
    confidence: float
    status: MemoryStatus
    provenance: dict[str, Any]
    anchors: list[str]
    access_count: int
    last_accessed_at: datetime.datetime | None
    expires_at: datetime.datetime | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


class CreatedMemoryItem(MemoryItem, frozen=True, gc=False):
    """A row of an item create: the item, and whether this very call inserted it."""

    created: bool


class NewMemoryItem(msgspec.Struct, frozen=True, kw_only=True):
    """What a caller gives to create a memory item.

    A new item may start as a candidate, active or stable; never deprecated.
    """

    project: str
    kind: MemoryKind
    content: str
    confidence: float = 0.5
    status: MemoryStatus = "candidate"
    provenance: dict[str, Any] = msgspec.field(default_factory=dict)
    anchors: list[str] = msgspec.field(default_factory=list)
    expires_at: datetime.datetime | None = None


class MemoryModule(msgspec.Struct, frozen=True, gc=False):
    """A named, prioritised selection of one project's memory items."""

    id: uuid.UUID
    project: str
    name: str
    description: str
    selectors: dict[str, Any]
    priority: int
    created_at: datetime.datetime
    updated_at: datetime.datetime


class NewMemoryModule(msgspec.Struct, frozen=True, kw_only=True):
    """What a caller gives to create a context module."""

    project: str
    name: str
    description: str = ""
    selectors: dict[str, Any] = msgspec.field(default_factory=dict)
    priority: int = 0


class PackedItem(msgspec.Struct, frozen=True, gc=False):
    """A memory item as handed out in a pack: a copy, so the pack outlives edits."""

    id: uuid.UUID
    module_id: uuid.UUID
    kind: MemoryKind
    content: str
    confidence: float
    tokens: int


class MemoryPack(msgspec.Struct, frozen=True, gc=False):
    """An immutable bundle of memory items chosen from modules under a token budget."""

    id: uuid.UUID
    project: str
    token_budget: int
    token_count: int
    module_ids: list[uuid.UUID]
    items: list[PackedItem]
    created_at: datetime.datetime

    @staticmethod
    def from_row(*values: Any) -> MemoryPack:
        """A pack from its row (the query layer decodes with this)."""
        # The items column is jsonb, decoded to plain dicts; they become PackedItems here.
        pack_id, project, budget, count, module_ids, items, created_at = values
        packed = msgspec.convert(items, list[PackedItem])
        return MemoryPack(pack_id, project, budget, count, module_ids, packed, created_at)
