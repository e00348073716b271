"""Actions: what workflow stages run, grouped in packs; some are implemented by a workflow."""

from __future__ import annotations

import re
import uuid
from typing import Any

from psycopg.types.json import Jsonb

from flowledger.aio.repositories.base import AsyncRepository, as_uuid
from flowledger.errors import InvalidInput, NotFound
from flowledger.records.catalog import Action, ActionPatch, NewAction
from flowledger.repositories._checks import (
    as_json,
    as_name,
    as_optional_text,
    as_struct,
    as_text,
    show,
)

__all__ = ["AsyncActionsReader", "AsyncActionsRepository"]

# Mirrors actions_ref_check: "<pack ref>.<action name>".
_REF = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")


class AsyncActionsReader(AsyncRepository):
    """Actions: look up by id, ref or workflow, list by pack."""

    async def get(self, *, id: uuid.UUID | str) -> Action:
        """The action with this id; raises NotFound, InvalidInput on a malformed id."""
        action_id = as_uuid(id, "action id")
        found: Action = await self._require(
            "get_action_by_id", {"id": action_id}, f"action {action_id} not found"
        )
        return found

    async def get_by_ref(self, *, ref: str) -> Action:
        """The action with this ref ("pack.name"); raises NotFound, InvalidInput."""
        _check_ref(ref)
        found: Action = await self._require(
            "get_action_by_ref", {"ref": ref}, f"no action with ref {ref!r}"
        )
        return found

    async def list_by_pack(self, *, pack_id: uuid.UUID | str) -> list[Action]:
        """Every action of the pack in ref order (empty for an unknown pack); InvalidInput."""
        pack = as_uuid(pack_id, "pack id")
        found: list[Action] = await self._fetch("list_actions_by_pack", {"pack_id": pack})
        return found

    async def list_workflow_actions(self) -> list[Action]:
        """Every action implemented by a workflow, in ref order."""
        found: list[Action] = await self._fetch("list_workflow_actions", {})
        return found

    async def get_by_workflow(self, *, workflow_id: uuid.UUID | str) -> Action:
        """The action that runs the workflow as a step (the first by ref when several link
        it); raises NotFound when none does, InvalidInput on a malformed id."""
        wid = as_uuid(workflow_id, "workflow id")
        missing = f"no action is implemented by workflow {wid}"
        found: Action = await self._require("get_action_by_workflow", {"workflow_id": wid}, missing)
        return found


class AsyncActionsRepository(AsyncActionsReader):
    """Actions of packs, and their link to the workflow implementing them."""

    async def create(self, *, action: NewAction) -> Action:
        """The new action; raises Conflict when the ref is taken, InvalidInput (bad fields,
        unknown pack)."""
        action = as_struct(action, NewAction, "action")
        params = {
            "pack_id": as_uuid(action.pack_id, "pack id"),
            "ref": _check_ref(action.ref),
            "entrypoint": _check_entrypoint(action.entrypoint),
            "description": as_text(action.description, "description"),
            "param_schema": _schema("param_schema", action.param_schema),
            "out_schema": _schema("out_schema", action.out_schema),
        }
        created: Action | None = await self._fetch("insert_action", params, context=params)
        assert created is not None  # INSERT ... RETURNING yields its row
        return created

    async def update(self, *, id: uuid.UUID | str, patch: ActionPatch) -> Action:
        """The action after applying the patch's non-None fields; raises NotFound, InvalidInput."""
        action_id = as_uuid(id, "action id")
        patch = as_struct(patch, ActionPatch, "patch")
        params = {
            "id": action_id,
            "entrypoint": None if patch.entrypoint is None else _check_entrypoint(patch.entrypoint),
            "description": as_optional_text(patch.description, "description"),
            "param_schema": _optional_schema("param_schema", patch.param_schema),
            "out_schema": _optional_schema("out_schema", patch.out_schema),
        }
        found: Action = await self._require(
            "update_action", params, f"action {action_id} not found"
        )
        return found

    async def delete(self, *, id: uuid.UUID | str) -> None:
        """Delete the action; raises NotFound, InvalidInput on a malformed id."""
        action_id = as_uuid(id, "action id")
        if await self._fetch("delete_action", {"id": action_id}) == 0:
            raise NotFound(f"action {action_id} not found")

    async def link_workflow(
        self, *, action_id: uuid.UUID | str, workflow_id: uuid.UUID | str
    ) -> Action:
        """The action, now implemented by the workflow; raises NotFound, InvalidInput (unknown
        workflow)."""
        workflow = as_uuid(workflow_id, "workflow id")
        return await self._set_workflow(as_uuid(action_id, "action id"), workflow)

    async def unlink_workflow(self, *, action_id: uuid.UUID | str) -> Action:
        """The action, no longer implemented by a workflow; raises NotFound, InvalidInput."""
        return await self._set_workflow(as_uuid(action_id, "action id"), None)

    async def _set_workflow(self, action_id: uuid.UUID, workflow_id: uuid.UUID | None) -> Action:
        params = {"id": action_id, "workflow_id": workflow_id}
        found: Action = await self._require(
            "set_action_workflow",
            params,
            f"action {action_id} not found",
            context=params,
        )
        return found


def _check_ref(ref: object) -> str:
    if not isinstance(ref, str) or not _REF.fullmatch(ref):
        raise InvalidInput(
            f"action ref must be '<pack>.<name>', each part lowercase letters, digits or '_' "
            f"starting with a letter; got {show(ref)}"
        )
    return as_name(ref, "action ref")


def _check_entrypoint(entrypoint: object) -> str:
    return as_text(entrypoint, "entrypoint", blank=False)


def _schema(field: str, value: dict[str, Any]) -> Jsonb:
    # The columns' CHECKs require a JSON object; say so before the round trip.
    return as_json(value, field, object_only=True)


def _optional_schema(field: str, value: dict[str, Any] | None) -> Jsonb | None:
    # None means "keep", not JSON null.
    return None if value is None else _schema(field, value)
