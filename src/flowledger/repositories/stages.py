# Generated from src/flowledger/aio/repositories/stages.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""Workflow stages: the ordered steps of a workflow, kept at positions 0..n-1.

Every write locks the workflow row first, so stage edits of one workflow run one after the
other and positions stay contiguous; it ends by snapshotting the stages as the workflow's
new version (snapshot_workflow_stages), in the same transaction: that checks the dependency
graph (unknown names, cycles, removing a stage others depend on) and is what executions
pin. A trigger does the same at commit for writes that bypass this module.
"""

from __future__ import annotations

import builtins
import re
import uuid
from collections.abc import Sequence
from typing import Any, Final

import msgspec
from msgspec import UNSET, UnsetType
from psycopg.types.json import Jsonb

from flowledger.errors import InvalidInput, NotFound
from flowledger.records.workflows import (
    Concurrency,
    NewStage,
    RateLimit,
    RetryPolicy,
    Stage,
    StagePatch,
)
from flowledger.repositories._checks import (
    INT32_MAX,
    as_int,
    as_json,
    as_name,
    as_number,
    as_queue,
    as_struct,
    as_text,
    as_text_list,
    as_uuid_list,
    show,
)
from flowledger.repositories.base import Connection, Repository, as_uuid

__all__ = ["StagesReader", "StagesRepository"]

# Mirrors workflow_stages_name_check.
_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_MAX_TIMEOUT_SECONDS: Final = 2**31 - 1
# Mirrors workflow_stages_concurrency_check and workflow_stages_rate_limit_check.
_KEY_TEMPLATE: Final = re.compile(r"(?:[^{}]|\{[a-z_][a-z0-9_]{0,62}\})+")
_MAX_KEY_LENGTH: Final = 200
MAX_FLOW_LIMIT: Final = 10_000
MAX_RATE_WINDOW_SECONDS: Final = 31_622_400.0
MIN_RATE_WINDOW_SECONDS: Final = 0.001
# A retry waits at most a year: the wait is added to now() when a step fails, and must
# stay a valid timestamp.
MAX_BACKOFF_SECONDS: Final = 31_536_000.0


class StagesReader(Repository):
    """Stages: a workflow's in position order, one by id."""

    def list(self, *, workflow_id: uuid.UUID | str) -> builtins.list[Stage]:
        """The workflow's stages in position order (empty for an unknown workflow);
        raises InvalidInput on a malformed id."""
        params = {"workflow_id": as_uuid(workflow_id, "workflow id")}
        found: builtins.list[Stage] = self._fetch("list_workflow_stages", params)
        return found

    def get(self, *, id: uuid.UUID | str) -> Stage:
        """The stage with this id; raises NotFound, InvalidInput on a malformed id."""
        stage_id = as_uuid(id, "stage id")
        found: Stage = self._require("get_stage_by_id", {"id": stage_id}, _missing(stage_id))
        return found


class StagesRepository(StagesReader):
    """Stages of workflows: add, reorder, remove, update; positions stay contiguous."""

    def add(
        self, *, workflow_id: uuid.UUID | str, stage: NewStage, position: int | None = None
    ) -> Stage:
        """The new stage, at the end or at `position` (later stages move up by one); raises
        NotFound (workflow), Conflict (name taken), InvalidInput (bad fields or position)."""
        wid = as_uuid(workflow_id, "workflow id")
        stage = as_struct(stage, NewStage, "stage")
        params = {
            "workflow_id": wid,
            "name": _check_name(stage.name),
            "action_ref": _check_action_ref(stage.action_ref),
            "depends_on": _depends_on(stage.depends_on, stage.name),
            "config": _object("config", stage.config),
            "with_items": _with_items(stage.with_items),
            "retry_policy": _retry_policy(stage.retry_policy),
            "timeout_seconds": _timeout(stage.timeout_seconds),
            "queue": as_queue(stage.queue, "queue"),
            "concurrency": _concurrency(stage.concurrency),
            "rate_limit": _rate_limit(stage.rate_limit),
        }
        if position is not None and (
            isinstance(position, bool) or not isinstance(position, int) or position < 0
        ):
            raise InvalidInput(f"position must be an integer >= 0, got {show(position)}")
        if position is not None:
            as_int(position, "position", 0, INT32_MAX)
        with self._atomic(params) as conn:
            count = self._lock_workflow(wid, conn)
            if position is not None and position > count:
                raise InvalidInput(f"position {position} is beyond the end (0..{count})")
            at = count if position is None else position
            self._fetch("shift_stages_up", {"workflow_id": wid, "position": at}, conn=conn)
            values = {**params, "position": at}
            created: Stage | None = self._fetch("insert_stage", values, context=values, conn=conn)
            self._snapshot(wid, conn)
        assert created is not None  # INSERT ... RETURNING yields its row
        return created

    def reorder(
        self, *, workflow_id: uuid.UUID | str, stage_ids: Sequence[uuid.UUID | str]
    ) -> builtins.list[Stage]:
        """The workflow's stages in the new order, stage_ids[i] now at position i; raises
        NotFound (workflow), InvalidInput unless stage_ids are exactly its stages."""
        wid = as_uuid(workflow_id, "workflow id")
        ids = as_uuid_list(stage_ids, "stage id")
        if len(set(ids)) != len(ids):
            raise InvalidInput("stage_ids must not repeat a stage")
        mismatch = f"stage_ids must be exactly the {{}} stages of workflow {wid}"
        with self._atomic() as conn:
            count = self._lock_workflow(wid, conn)
            if len(ids) != count:
                raise InvalidInput(mismatch.format(count))
            params = {"workflow_id": wid, "ids": ids}
            moved: builtins.list[Stage] = self._fetch("reorder_stages", params, conn=conn)
            if len(moved) != count:
                # Some ids belong elsewhere: raising rolls the partial renumbering back.
                raise InvalidInput(mismatch.format(count))
            self._snapshot(wid, conn)
        return moved

    def remove(self, *, id: uuid.UUID | str) -> None:
        """Delete the stage and close the gap (later stages move down by one); raises
        NotFound, InvalidInput on a malformed id."""
        stage_id = as_uuid(id, "stage id")
        with self._atomic() as conn:
            wid = self._fetch("lock_stage_workflow", {"id": stage_id}, conn=conn)
            # None twice: no such stage, or a concurrent remove deleted it while we waited.
            position = (
                None if wid is None else self._fetch("delete_stage", {"id": stage_id}, conn=conn)
            )
            if position is None:
                raise NotFound(_missing(stage_id))
            self._fetch("shift_stages_down", {"workflow_id": wid, "position": position}, conn=conn)
            self._snapshot(wid, conn)

    def update(self, *, id: uuid.UUID | str, patch: StagePatch) -> Stage:
        """The stage after applying the patch's set fields; raises NotFound, InvalidInput
        (bad fields, unknown dependency, a cycle)."""
        stage_id = as_uuid(id, "stage id")
        params = {"id": stage_id, **_patch_params(patch)}
        with self._atomic(params) as conn:
            wid = self._fetch("lock_stage_workflow", {"id": stage_id}, conn=conn)
            updated: Stage | None = (
                None
                if wid is None
                else self._fetch("update_stage", params, context=params, conn=conn)
            )
            if updated is None:
                raise NotFound(_missing(stage_id))
            self._snapshot(wid, conn)
        return updated

    def _snapshot(self, workflow_id: uuid.UUID, conn: Connection) -> None:
        self._fetch("snapshot_workflow_stages", {"workflow_id": workflow_id}, conn=conn)

    def _lock_workflow(self, workflow_id: uuid.UUID, conn: Connection) -> int:
        """Lock the workflow against other stage edits, then count its stages (a statement
        of its own: one that waited for the lock would count with its older snapshot)."""
        params = {"workflow_id": workflow_id}
        if self._fetch("lock_stages_workflow", params, conn=conn) is None:
            raise NotFound(f"workflow {workflow_id} not found")
        count: int = self._fetch("count_workflow_stages", params, conn=conn)
        return count


def _patch_params(patch: StagePatch) -> dict[str, Any]:
    patch = as_struct(patch, StagePatch, "patch")
    return {
        "action_ref": _maybe(_check_action_ref, patch.action_ref),
        # A stage's own name is checked by workflow_stages_depends_on_check.
        "set_depends_on": patch.depends_on is not UNSET,
        "depends_on": _maybe(lambda d: _depends_on(d, None), patch.depends_on),
        "config": _maybe(lambda c: _object("config", c), patch.config),
        "set_with_items": patch.with_items is not UNSET,
        "with_items": _maybe(_with_items, patch.with_items),
        "retry_policy": _maybe(_retry_policy, patch.retry_policy),
        "timeout_seconds": _maybe(_timeout, patch.timeout_seconds),
        "queue": _maybe(lambda q: as_queue(q, "queue"), patch.queue),
        "set_concurrency": patch.concurrency is not UNSET,
        "concurrency": _maybe(_concurrency, patch.concurrency),
        "set_rate_limit": patch.rate_limit is not UNSET,
        "rate_limit": _maybe(_rate_limit, patch.rate_limit),
    }


def _maybe(check: Any, value: Any) -> Any:
    # UNSET becomes NULL: the SQL keeps the column as it is.
    return None if isinstance(value, UnsetType) else check(value)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"stage name {show(name)} must be lowercase letters, digits, '-' or '_', "
            "starting with a letter, at most 63 characters"
        )
    return name


def _check_action_ref(ref: str) -> str:
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidInput("action_ref must not be blank")
    return as_name(ref, "action_ref")


def _depends_on(names: Sequence[str] | None, own_name: str | None) -> builtins.list[str] | None:
    if names is None:
        return None
    if (
        isinstance(names, str)
        or not isinstance(names, Sequence)
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise InvalidInput(f"depends_on must be a list of stage names, got {show(names)}")
    as_text_list(builtins.list(names), "depends_on")
    if own_name is not None and own_name in names:
        raise InvalidInput(f"stage {own_name!r} cannot depend on itself")
    if len(set(names)) != len(names):
        raise InvalidInput(f"depends_on must not repeat a stage, got {show(builtins.list(names))}")
    return builtins.list(names)


def _object(field: str, value: Any) -> Jsonb:
    # The column's CHECK requires a JSON object; say so before the round trip.
    return as_json(value, field, object_only=True)


def _with_items(items: builtins.list[Any] | None) -> Jsonb | None:
    if items is None:
        return None
    if not isinstance(items, builtins.list):
        raise InvalidInput(f"with_items must be a list or None, got {type(items).__name__}")
    return as_json(items, "with_items")


def _retry_policy(policy: RetryPolicy) -> Jsonb:
    if not isinstance(policy, RetryPolicy):
        raise InvalidInput(f"retry_policy must be a RetryPolicy, got {type(policy).__name__}")
    attempts, base, cap = (
        policy.max_attempts,
        policy.backoff_base_seconds,
        policy.backoff_max_seconds,
    )
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise InvalidInput(
            f"retry_policy.max_attempts must be an integer >= 1, got {show(attempts)}"
        )
    as_int(attempts, "retry_policy.max_attempts", 1, INT32_MAX)
    base = as_number(base, "retry_policy.backoff_base_seconds", 0, MAX_BACKOFF_SECONDS)
    cap = as_number(cap, "retry_policy.backoff_max_seconds", 0, MAX_BACKOFF_SECONDS)
    if not base <= cap:
        raise InvalidInput(
            "retry_policy needs 0 <= backoff_base_seconds <= backoff_max_seconds, "
            f"got {base!r} and {cap!r}"
        )
    return as_json(msgspec.to_builtins(policy), "retry_policy")


def _concurrency(concurrency: Concurrency | None) -> Jsonb | None:
    if concurrency is None:
        return None
    if not isinstance(concurrency, Concurrency):
        raise InvalidInput(
            f"concurrency must be a Concurrency or None, got {type(concurrency).__name__}"
        )
    return as_json(
        {
            "key": _key_template(concurrency.key, "concurrency.key"),
            "limit": as_int(concurrency.limit, "concurrency.limit", 1, MAX_FLOW_LIMIT),
        },
        "concurrency",
    )


def _rate_limit(rate_limit: RateLimit | None) -> Jsonb | None:
    if rate_limit is None:
        return None
    if not isinstance(rate_limit, RateLimit):
        raise InvalidInput(
            f"rate_limit must be a RateLimit or None, got {type(rate_limit).__name__}"
        )
    return as_json(
        {
            "key": _key_template(rate_limit.key, "rate_limit.key"),
            "limit": as_int(rate_limit.limit, "rate_limit.limit", 1, MAX_FLOW_LIMIT),
            "per_seconds": as_number(
                rate_limit.per_seconds,
                "rate_limit.per_seconds",
                MIN_RATE_WINDOW_SECONDS,
                MAX_RATE_WINDOW_SECONDS,
            ),
        },
        "rate_limit",
    )


def _key_template(key: str, what: str) -> str:
    key = as_text(key, what, max_length=_MAX_KEY_LENGTH)
    if not _KEY_TEMPLATE.fullmatch(key):
        raise InvalidInput(
            f"{what} must be text with {{name}} placeholders (a name: lowercase letters, "
            f"digits or '_', not starting with a digit) and no other braces, got {show(key)}"
        )
    return key


def _timeout(seconds: int) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise InvalidInput(f"timeout_seconds must be an integer, got {show(seconds)}")
    if not 0 < seconds <= _MAX_TIMEOUT_SECONDS:
        raise InvalidInput(f"timeout_seconds must be between 1 and {_MAX_TIMEOUT_SECONDS}")
    return seconds


def _missing(stage_id: uuid.UUID) -> str:
    return f"stage {stage_id} not found"
