# Generated from src/flowledger/aio/repositories/workflows.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""Workflows: create, look up, edit under optimistic locking, list, and their versions.

A workflow's natural key is (owner, name); its *reference* is the string
``"<owner email>/<name>"`` (e.g. ``"dev@example.com/nightly-etl"``), which `get_by_ref`
resolves with the email matched case-insensitively. Names cannot contain "/", so the
last "/" splits a reference.
"""

from __future__ import annotations

import builtins
import datetime
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

from msgspec import UNSET, UnsetType
from psycopg.types.json import Jsonb

from flowledger.errors import InvalidInput, NotFound, StaleWrite
from flowledger.records.workflows import (
    FAILURE_MODES,
    STATUSES,
    TRIGGER_TYPES,
    NewWorkflow,
    TriggerType,
    Workflow,
    WorkflowPatch,
    WorkflowSort,
    WorkflowStatus,
    WorkflowVersion,
)
from flowledger.repositories._checks import (
    INT32_MAX,
    MAX_NAME_LENGTH,
    as_bool,
    as_cursor,
    as_instant,
    as_int,
    as_json,
    as_optional_bool,
    as_struct,
    as_text,
    as_text_list,
    show,
)
from flowledger.repositories._cron import check_rule
from flowledger.repositories.base import Repository, as_optional_uuid, as_uuid
from flowledger.repositories.pagination import (
    DEFAULT_PAGE_SIZE,
    CursorValue,
    Page,
    check_limit,
    listing_scope,
    make_page,
)

__all__ = ["WorkflowsReader", "WorkflowsRepository"]

# Mirrors workflows_name_check.
_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,62}")

# Descriptions feed the search vector (to_tsvector), which PostgreSQL caps at 1 MB.
MAX_DESCRIPTION_LENGTH: Final = 100_000


class _Sort:
    """One listing order: its query, the cursor scope and the key of a row."""

    def __init__(
        self,
        query: str,
        column: str,
        direction: str,
        key: Callable[[Workflow], tuple[CursorValue, ...]],
    ) -> None:
        self.query = query
        self.after = f"after_{column}"
        self.key = key
        # The scope names the listing and its order, so a cursor fits only its own sort;
        # listing_scope() adds the filter values.
        self.scope = f"workflows.list:{column}:{direction}"


_SORTS: Final[dict[str, _Sort]] = {
    "updated_at": _Sort(
        "list_workflows_by_updated_at", "updated_at", "desc", lambda w: (w.updated_at, w.id)
    ),
    "created_at": _Sort(
        "list_workflows_by_created_at", "created_at", "desc", lambda w: (w.created_at, w.id)
    ),
    "name": _Sort("list_workflows_by_name", "name", "asc", lambda w: (w.name, w.id)),
}


class WorkflowsReader(Repository):
    """Workflows: look up (id, owner+name, ref), filtered keyset lists, versions."""

    def get(self, *, id: uuid.UUID | str) -> Workflow:
        """The workflow with this id; raises NotFound, InvalidInput on a malformed id."""
        workflow_id = as_uuid(id, "workflow id")
        found: Workflow = self._require(
            "get_workflow_by_id", {"id": workflow_id}, _missing(workflow_id)
        )
        return found

    def get_by_name(self, *, owner_id: uuid.UUID | str, name: str) -> Workflow:
        """The owner's workflow of that name; raises NotFound, InvalidInput."""
        _check_name(name)
        params = {"owner_id": as_uuid(owner_id, "owner id"), "name": name}
        missing = f"owner {params['owner_id']} has no workflow named {name!r}"
        found: Workflow = self._require("get_workflow_by_name", params, missing)
        return found

    def get_by_ref(self, *, ref: str) -> Workflow:
        """The workflow referenced as "<owner email>/<name>"; raises NotFound, InvalidInput."""
        as_text(ref, "workflow reference", max_length=2 * MAX_NAME_LENGTH)
        email, slash, name = ref.rpartition("/")
        if not slash or "@" not in email:
            raise InvalidInput(f"workflow reference must be '<owner email>/<name>', got {ref!r}")
        _check_name(name)
        params = {"email": email, "name": name}
        found: Workflow = self._require("get_workflow_by_ref", params, f"no workflow {ref!r}")
        return found

    def list(
        self,
        *,
        status: WorkflowStatus | None = None,
        owner_id: uuid.UUID | str | None = None,
        pack_id: uuid.UUID | str | None = None,
        enabled: bool | None = None,
        trigger_type: TriggerType | None = None,
        tags_all: Sequence[str] | None = None,
        tags_any: Sequence[str] | None = None,
        search: str | None = None,
        created_from: datetime.datetime | None = None,
        created_to: datetime.datetime | None = None,
        updated_from: datetime.datetime | None = None,
        updated_to: datetime.datetime | None = None,
        sort: WorkflowSort = "updated_at",
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Workflow]:
        """A page of the workflows matching every given filter, in `sort` order (updated_at
        and created_at newest first, name A-Z); raises InvalidInput, InvalidCursor.

        tags_all: has every tag; tags_any: has at least one (an empty list filters
        nothing); search: web-search syntax over name and description; *_from inclusive,
        *_to exclusive (aware datetimes).
        """
        order = _SORTS.get(sort) if isinstance(sort, str) else None
        if order is None:
            raise InvalidInput(f"sort must be one of {', '.join(_SORTS)}; got {sort!r}")
        check_limit(limit)
        filters = {
            **_filter_params(status, trigger_type, tags_all, tags_any, search),
            "owner_id": as_optional_uuid(owner_id, "owner id"),
            "pack_id": as_optional_uuid(pack_id, "pack id"),
            "enabled": as_optional_bool(enabled, "enabled"),
            **_range("created", created_from, created_to),
            **_range("updated", updated_from, updated_to),
        }
        scope = listing_scope(order.scope, filters)
        params = {**filters, **self._after(order, scope, cursor), "limit": limit}
        rows = self._fetch(order.query, params)
        return make_page(rows, limit=limit, key=order.key, codec=self._codec, scope=scope)

    def list_by_pack(
        self, *, pack_id: uuid.UUID | str, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[Workflow]:
        """A page of the pack's workflows, most recently edited first; raises InvalidInput,
        InvalidCursor."""
        return self.list(pack_id=pack_id, limit=limit, cursor=cursor)

    def list_enabled(
        self,
        *,
        trigger_type: TriggerType | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Workflow]:
        """A page of the enabled, active workflows (optionally of one trigger type), most
        recently edited first: what a scheduler fires; raises InvalidInput, InvalidCursor."""
        return self.list(
            status="active", enabled=True, trigger_type=trigger_type, limit=limit, cursor=cursor
        )

    def list_by_tag(
        self, *, tag: str, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[Workflow]:
        """A page of the workflows carrying `tag`, most recently edited first; raises
        InvalidInput, InvalidCursor."""
        return self.list(tags_all=[tag], limit=limit, cursor=cursor)

    def versions(self, *, workflow_id: uuid.UUID | str) -> builtins.list[WorkflowVersion]:
        """Every definition version of the workflow, oldest first; raises NotFound,
        InvalidInput on a malformed id."""
        wid = as_uuid(workflow_id, "workflow id")
        found: builtins.list[WorkflowVersion] = self._fetch(
            "list_workflow_versions", {"workflow_id": wid}
        )
        # Every workflow has at least version 1 (the insert trigger writes it).
        if not found:
            raise NotFound(_missing(wid))
        return found

    def version(self, *, workflow_id: uuid.UUID | str, version: int) -> WorkflowVersion:
        """One definition version of the workflow; raises NotFound, InvalidInput."""
        wid = as_uuid(workflow_id, "workflow id")
        params = {"workflow_id": wid, "version": _version(version)}
        missing = f"workflow {wid} has no version {version}"
        found: WorkflowVersion = self._require("get_workflow_version", params, missing)
        return found

    def _after(self, order: _Sort, scope: str, cursor: str | None) -> dict[str, Any]:
        if cursor is None:
            return {order.after: None, "after_id": None}
        value, row_id = self._codec.decode(as_cursor(cursor), scope, arity=2)
        expected = str if order.after == "after_name" else datetime.datetime
        if not isinstance(value, expected) or not isinstance(row_id, uuid.UUID):
            # Signed by us, so a bug rather than tampering; still refuse it.
            raise InvalidInput(f"cursor does not hold a position of the {order.scope} listing")
        return {order.after: value, "after_id": row_id}


class WorkflowsRepository(WorkflowsReader):
    """Workflows and their immutable definition versions."""

    def create(self, *, workflow: NewWorkflow) -> Workflow:
        """The new workflow (version 1); raises Conflict when the owner already has a workflow
        of that name, InvalidInput (bad fields, unknown owner or pack)."""
        workflow = as_struct(workflow, NewWorkflow, "workflow")
        _check_name(workflow.name)
        _check_status(workflow.status)
        _check_trigger(workflow.trigger_type, workflow.schedule)
        params = {
            "owner_id": as_uuid(workflow.owner_id, "owner id"),
            "pack_id": as_optional_uuid(workflow.pack_id, "pack id"),
            "name": workflow.name,
            "description": _description(workflow.description),
            "status": workflow.status,
            "enabled": as_bool(workflow.enabled, "enabled"),
            "trigger_type": workflow.trigger_type,
            "schedule": workflow.schedule,
            "definition_yaml": as_text(workflow.definition_yaml, "definition_yaml"),
            "definition": _object("definition", workflow.definition),
            "param_schema": _object("param_schema", workflow.param_schema),
            "out_schema": _object("out_schema", workflow.out_schema),
            "tags": _tags("tags", workflow.tags),
            "failure_mode": _check_failure_mode(workflow.failure_mode),
            "max_running_executions": _max_running(workflow.max_running_executions),
        }
        created: Workflow | None = self._fetch("insert_workflow", params, context=params)
        assert created is not None  # INSERT ... RETURNING yields its row
        return created

    def update(
        self, *, id: uuid.UUID | str, patch: WorkflowPatch, expected_version: int
    ) -> Workflow:
        """The workflow after applying the patch's set fields, if its row_version still is
        `expected_version` (a raised or lifted max_running_executions starts pending
        executions in the same statement); raises StaleWrite, NotFound, Conflict (name
        taken), InvalidInput."""
        workflow_id = as_uuid(id, "workflow id")
        params = {
            "id": workflow_id,
            "expected_version": _version(expected_version),
            **_patch_params(as_struct(patch, WorkflowPatch, "patch")),
        }
        return self._compare_and_set("update_workflow", params)

    def update_definition(
        self,
        *,
        id: uuid.UUID | str,
        definition_yaml: str,
        definition: dict[str, Any],
        expected_version: int,
    ) -> Workflow:
        """The workflow with a new definition (a changed one becomes a new version), if its
        row_version still is `expected_version`; raises StaleWrite, NotFound, InvalidInput."""
        params = {
            "id": as_uuid(id, "workflow id"),
            "expected_version": _version(expected_version),
            "definition_yaml": as_text(definition_yaml, "definition_yaml"),
            "definition": _object("definition", definition),
        }
        return self._compare_and_set("update_workflow_definition", params)

    def archive(self, *, id: uuid.UUID | str, expected_version: int) -> Workflow:
        """The workflow, archived and disabled, if its row_version still is
        `expected_version`; raises StaleWrite, NotFound, InvalidInput."""
        params = {"id": as_uuid(id, "workflow id"), "expected_version": _version(expected_version)}
        return self._compare_and_set("update_workflow_archived", params)

    def delete(self, *, id: uuid.UUID | str) -> None:
        """Delete the workflow with its versions, stages and executions; raises NotFound,
        Conflict while an action is implemented by it, InvalidInput on a malformed id."""
        workflow_id = as_uuid(id, "workflow id")
        if self._fetch("delete_workflow", {"id": workflow_id}) == 0:
            raise NotFound(_missing(workflow_id))

    def _compare_and_set(self, query: str, params: dict[str, Any]) -> Workflow:
        updated: Workflow | None = self._fetch(query, params, context=params)
        if updated is not None:
            return updated
        current = self._fetch("get_workflow_row_version", {"id": params["id"]})
        if current is None:
            raise NotFound(_missing(params["id"]))
        raise StaleWrite(
            f"workflow {params['id']} changed: expected row_version "
            f"{params['expected_version']}, now {current}"
        )


def _patch_params(patch: WorkflowPatch) -> dict[str, Any]:
    if not isinstance(patch.name, UnsetType):
        _check_name(patch.name)
    if not isinstance(patch.status, UnsetType):
        _check_status(patch.status)
    schedule = _patched_schedule(patch)
    return {
        "name": _given(patch.name),
        "description": _maybe(lambda _, d: _description(d), "description", patch.description),
        "status": _given(patch.status),
        "enabled": _maybe(lambda f, v: as_bool(v, f), "enabled", patch.enabled),
        "trigger_type": _given(patch.trigger_type),
        "set_schedule": schedule is not UNSET,
        "schedule": _given(schedule),
        "set_pack_id": patch.pack_id is not UNSET,
        "pack_id": as_optional_uuid(_given(patch.pack_id), "pack id"),
        "param_schema": _maybe(_object, "param_schema", patch.param_schema),
        "out_schema": _maybe(_object, "out_schema", patch.out_schema),
        "tags": _maybe(_tags, "tags", patch.tags),
        "failure_mode": None
        if isinstance(patch.failure_mode, UnsetType)
        else _check_failure_mode(patch.failure_mode),
        "set_max_running_executions": patch.max_running_executions is not UNSET,
        "max_running_executions": _max_running(_given(patch.max_running_executions)),
    }


def _patched_schedule(patch: WorkflowPatch) -> str | UnsetType | None:
    # What the patch can tell alone is checked here; a combination with the stored row
    # (e.g. only a schedule for a manual workflow) is left to workflows_schedule_check.
    schedule = patch.schedule
    trigger = patch.trigger_type
    if not isinstance(trigger, UnsetType):
        if not isinstance(trigger, str) or trigger not in TRIGGER_TYPES:
            raise InvalidInput(_not_one_of("trigger_type", TRIGGER_TYPES, trigger))
        if trigger != "schedule" and schedule is UNSET:
            schedule = None  # leaving "schedule" drops the rule
        if (trigger == "schedule") != isinstance(schedule, str | UnsetType):
            raise InvalidInput("a schedule is required exactly when trigger_type is 'schedule'")
    if isinstance(schedule, str):
        _check_schedule(schedule)
    elif schedule is not None and schedule is not UNSET:
        raise InvalidInput(f"schedule must be a string or None, got {show(schedule)}")
    return schedule


def _filter_params(
    status: str | None,
    trigger_type: str | None,
    tags_all: Sequence[str] | None,
    tags_any: Sequence[str] | None,
    search: str | None,
) -> dict[str, Any]:
    if status is not None:
        _check_status(status)
    if trigger_type is not None and (
        not isinstance(trigger_type, str) or trigger_type not in TRIGGER_TYPES
    ):
        raise InvalidInput(_not_one_of("trigger_type", TRIGGER_TYPES, trigger_type))
    if search is not None:
        as_text(search, "search", max_length=MAX_NAME_LENGTH * 4)
    return {
        "status": status,
        "trigger_type": trigger_type,
        "tags_all": _tag_filter("tags_all", tags_all),
        "tags_any": _tag_filter("tags_any", tags_any),
        # A blank search box searches nothing, i.e. filters nothing.
        "search": (search.strip() or None) if search is not None else None,
    }


def _tag_filter(field: str, tags: Sequence[str] | None) -> builtins.list[str] | None:
    # An empty list means "no tag filter", not "no workflow".
    return (_tags(field, tags) or None) if tags is not None else None


def _range(
    column: str, start: datetime.datetime | None, end: datetime.datetime | None
) -> dict[str, datetime.datetime | None]:
    for label, value in ((f"{column}_from", start), (f"{column}_to", end)):
        if value is not None:
            as_instant(value, label)
    if start is not None and end is not None and start > end:
        raise InvalidInput(f"{column}_from ({start}) is after {column}_to ({end})")
    return {f"{column}_from": start, f"{column}_to": end}


def _given(value: Any) -> Any:
    # UNSET becomes NULL: the SQL keeps the column as it is.
    return None if value is UNSET else value


def _maybe(check: Callable[[str, Any], Any], field: str, value: Any) -> Any:
    return None if value is UNSET else check(field, value)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"workflow name {show(name)} must be lowercase letters, digits, '-' or '_', "
            "starting with a letter, at most 63 characters"
        )


def _check_status(status: str) -> None:
    if not isinstance(status, str) or status not in STATUSES:
        raise InvalidInput(_not_one_of("status", STATUSES, status))


def _check_failure_mode(mode: str) -> str:
    if not isinstance(mode, str) or mode not in FAILURE_MODES:
        raise InvalidInput(_not_one_of("failure_mode", FAILURE_MODES, mode))
    return mode


def _max_running(value: object) -> int | None:
    # The column is an int4 with a CHECK > 0; say so before the round trip.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= INT32_MAX:
        raise InvalidInput(
            f"max_running_executions must be an integer from 1 to {INT32_MAX} or None, "
            f"got {show(value)}"
        )
    return value


def _check_trigger(trigger_type: str, schedule: str | None) -> None:
    if not isinstance(trigger_type, str) or trigger_type not in TRIGGER_TYPES:
        raise InvalidInput(_not_one_of("trigger_type", TRIGGER_TYPES, trigger_type))
    if (trigger_type == "schedule") != (schedule is not None):
        raise InvalidInput("a schedule is required exactly when trigger_type is 'schedule'")
    if schedule is not None:
        _check_schedule(schedule)


def _check_schedule(schedule: str) -> None:
    # Evaluated by the evaluator the scheduler fires with, so a rule stored is one it runs.
    check_rule(schedule, "schedule")


def _object(field: str, value: Any) -> Jsonb:
    # The columns' CHECKs require a JSON object; say so before the round trip.
    return as_json(value, field, object_only=True)


def _tags(field: str, tags: Any) -> builtins.list[str]:
    if not isinstance(tags, builtins.list | tuple) or not all(
        isinstance(t, str) and t.strip() for t in tags
    ):
        raise InvalidInput(f"{field} must be a list of non-blank strings, got {show(tags)}")
    return as_text_list(tags, field)


def _description(value: object) -> str:
    # Searchable: to_tsvector refuses a vector over 1 MB, so a description stays well below.
    return as_text(value, "description", max_length=MAX_DESCRIPTION_LENGTH)


def _version(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"a version is an integer >= 1, got {show(value)}")
    return as_int(value, "version", 1, 2**31 - 1)


def _not_one_of(field: str, allowed: frozenset[str], value: object) -> str:
    return f"{field} must be one of {', '.join(sorted(allowed))}; got {show(value)}"


def _missing(workflow_id: uuid.UUID) -> str:
    return f"workflow {workflow_id} not found"
