"""Records of the catalog aggregate: packs and the actions they provide."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import msgspec

__all__ = ["Action", "ActionPatch", "NewAction", "NewPack", "Pack", "PackPatch"]


class Pack(msgspec.Struct, frozen=True, gc=False):
    """A pack as stored."""

    id: uuid.UUID
    ref: str
    label: str
    description: str
    version: str
    created_at: datetime.datetime
    updated_at: datetime.datetime


class NewPack(msgspec.Struct, frozen=True, kw_only=True):
    """What `packs.create` needs; `ref` is unique and names the actions' namespace."""

    ref: str
    label: str
    description: str = ""
    version: str = "0.1.0"


class PackPatch(msgspec.Struct, frozen=True, kw_only=True):
    """Fields `packs.update` changes; None leaves the stored value as it is."""

    label: str | None = None
    description: str | None = None
    version: str | None = None


class Action(msgspec.Struct, frozen=True, gc=False):
    """An action as stored; `workflow_id` is set exactly when `is_workflow` is true."""

    id: uuid.UUID
    pack_id: uuid.UUID
    ref: str
    entrypoint: str
    description: str
    param_schema: dict[str, Any]
    out_schema: dict[str, Any]
    is_workflow: bool
    workflow_id: uuid.UUID | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


class NewAction(msgspec.Struct, frozen=True, kw_only=True):
    """What `actions.create` needs; `ref` is "<pack ref>.<action>" and unique."""

    pack_id: uuid.UUID | str
    ref: str
    entrypoint: str
    description: str = ""
    param_schema: dict[str, Any] = msgspec.field(default_factory=dict)
    out_schema: dict[str, Any] = msgspec.field(default_factory=dict)


class ActionPatch(msgspec.Struct, frozen=True, kw_only=True):
    """Fields `actions.update` changes; None leaves the stored value as it is."""

    entrypoint: str | None = None
    description: str | None = None
    param_schema: dict[str, Any] | None = None
    out_schema: dict[str, Any] | None = None
