"""Packs: the catalog's namespaces of actions."""

from __future__ import annotations

import builtins
import re
import uuid

from flowledger.aio.repositories.base import AsyncRepository, as_uuid
from flowledger.errors import InvalidCursor, InvalidInput, NotFound
from flowledger.records.catalog import NewPack, Pack, PackPatch
from flowledger.repositories._checks import (
    as_cursor,
    as_name,
    as_optional_text,
    as_struct,
    as_text,
    show,
)
from flowledger.repositories.pagination import (
    DEFAULT_PAGE_SIZE,
    Page,
    check_limit,
    listing_scope,
    make_page,
)

__all__ = ["AsyncPacksReader", "AsyncPacksRepository"]

_LIST_SCOPE = "packs.list:ref:asc"
# Mirrors packs_ref_check.
_REF = re.compile(r"[a-z][a-z0-9_]*")


class AsyncPacksReader(AsyncRepository):
    """Packs: look up by id or ref, list."""

    async def get(self, *, id: uuid.UUID | str) -> Pack:
        """The pack with this id; raises NotFound, InvalidInput on a malformed id."""
        pack_id = as_uuid(id, "pack id")
        found: Pack = await self._require(
            "get_pack_by_id", {"id": pack_id}, f"pack {pack_id} not found"
        )
        return found

    async def get_by_ref(self, *, ref: str) -> Pack:
        """The pack with this ref; raises NotFound, InvalidInput on a malformed ref."""
        _check_ref(ref)
        found: Pack = await self._require(
            "get_pack_by_ref", {"ref": ref}, f"no pack with ref {ref!r}"
        )
        return found

    async def list(
        self, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[Pack]:
        """A page of packs in ref order; raises InvalidInput (bad limit), InvalidCursor."""
        check_limit(limit)
        # No filters: the scope is the same for every listing of packs.
        scope = listing_scope(_LIST_SCOPE, {})
        after_ref = None
        if cursor is not None:
            (after_ref,) = self._codec.decode(as_cursor(cursor), scope, arity=1)
            if not isinstance(after_ref, str):
                raise InvalidCursor("cursor does not hold a ref position")
        rows: builtins.list[Pack] = await self._fetch(
            "list_packs", {"after_ref": after_ref, "limit": limit}
        )
        return make_page(rows, limit=limit, key=lambda p: (p.ref,), codec=self._codec, scope=scope)


class AsyncPacksRepository(AsyncPacksReader):
    """Packs; deleting one deletes its actions."""

    async def create(self, *, pack: NewPack) -> Pack:
        """The new pack; raises Conflict when the ref is taken, InvalidInput."""
        pack = as_struct(pack, NewPack, "pack")
        params = {
            "ref": _check_ref(pack.ref),
            "label": as_name(pack.label, "label"),
            "description": as_text(pack.description, "description"),
            "version": as_name(pack.version, "version"),
        }
        created: Pack | None = await self._fetch("insert_pack", params, context=params)
        assert created is not None  # INSERT ... RETURNING yields its row
        return created

    async def update(self, *, id: uuid.UUID | str, patch: PackPatch) -> Pack:
        """The pack after applying the patch's non-None fields; raises NotFound, InvalidInput."""
        pack_id = as_uuid(id, "pack id")
        patch = as_struct(patch, PackPatch, "patch")
        params = {
            "id": pack_id,
            "label": None if patch.label is None else as_name(patch.label, "label"),
            "description": as_optional_text(patch.description, "description"),
            "version": None if patch.version is None else as_name(patch.version, "version"),
        }
        found: Pack = await self._require("update_pack", params, f"pack {pack_id} not found")
        return found

    async def delete(self, *, id: uuid.UUID | str) -> None:
        """Delete the pack and its actions (its workflows stay, without a pack); raises NotFound."""
        pack_id = as_uuid(id, "pack id")
        if await self._fetch("delete_pack", {"id": pack_id}) == 0:
            raise NotFound(f"pack {pack_id} not found")


def _check_ref(ref: object) -> str:
    if not isinstance(ref, str) or not _REF.fullmatch(ref):
        raise InvalidInput(
            f"pack ref must be lowercase letters, digits or '_', starting with a letter; "
            f"got {show(ref)}"
        )
    return as_name(ref, "pack ref")
