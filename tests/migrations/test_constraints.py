"""The migrated schema enforces the domain rules itself: CHECKs, keys, cascades, triggers.

Every test runs on its own freshly migrated, empty database (the ``conn`` fixture).
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg
import psycopg.errors
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

Conn = psycopg.Connection[tuple[Any, ...]]
Row = dict[str, Any]

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
_serial = itertools.count(1)


@dataclass(frozen=True)
class Derived:
    """A column value computed from the row being built (and the connection)."""

    label: str
    compute: Callable[[Conn, Row], Any]

    def __repr__(self) -> str:
        return f"<{self.label}>"


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def insert(conn: Conn, table: str, row: Mapping[str, Any]) -> Any:
    """Insert one row and return its key (the first key column for composite keys)."""
    returning = {
        "configurations": "key",
        "memory_module_items": "module_id",
        "workflow_tasks": "workflow_id",
        "workflow_schedules": "workflow_id",
        "workflow_run_slots": "workflow_id",
        "cursor_key": "singleton",
        "queue_states": "name",
        "concurrency_slots": "key",
        "rate_slots": "key",
    }.get(table, "id")
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING {}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)),
        sql.Identifier(returning),
    )
    fetched = conn.execute(query, list(row.values())).fetchone()
    assert fetched is not None
    return fetched[0]


def build(conn: Conn, table: str, overrides: Mapping[str, Any] | None = None) -> Row:
    """A valid row for ``table`` with ``overrides`` applied; missing parents are inserted."""
    given = dict(overrides or {})
    row = BUILDERS[table](conn, given)
    for column, value in given.items():
        row[column] = value.compute(conn, row) if isinstance(value, Derived) else value
    return row


def make(conn: Conn, table: str, **overrides: Any) -> Any:
    """Insert a valid row for ``table`` and return its key."""
    return insert(conn, table, build(conn, table, overrides))


def scalar(conn: Conn, query: LiteralString | sql.Composed, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def count(conn: Conn, table: str) -> int:
    return int(scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))))


def parent(conn: Conn, given: Row, column: str, table: str) -> Any:
    """The parent key the caller gave, else the key of a new parent row."""
    return given[column] if column in given else make(conn, table)


def _user(conn: Conn, given: Row) -> Row:
    n = next(_serial)
    return {"email": f"user{n}@example.com", "display_name": f"User {n}"}


def _api_key(conn: Conn, given: Row) -> Row:
    n = next(_serial)
    return {
        "user_id": parent(conn, given, "user_id", "users"),
        "name": f"key-{n}",
        "prefix": f"fl_key_{n:06d}",
        "secret_hash": _sha256(f"secret-{n}"),
    }


def _pack(conn: Conn, given: Row) -> Row:
    return {"ref": f"pack{next(_serial)}", "label": "Pack"}


def _action(conn: Conn, given: Row) -> Row:
    return {
        "pack_id": parent(conn, given, "pack_id", "packs"),
        "ref": f"pack{next(_serial)}.run",
        "entrypoint": "run.py",
    }


def _workflow(conn: Conn, given: Row) -> Row:
    return {"owner_id": parent(conn, given, "owner_id", "users"), "name": f"flow-{next(_serial)}"}


def _workflow_version(conn: Conn, given: Row) -> Row:
    return {
        "workflow_id": parent(conn, given, "workflow_id", "workflows"),
        "version": 2,
        "definition_yaml": "steps: []\n",
        "definition": Jsonb({"steps": []}),
    }


def _stage(conn: Conn, given: Row) -> Row:
    return {
        "workflow_id": parent(conn, given, "workflow_id", "workflows"),
        "position": 0,
        "name": "build",
        "action_ref": "core.run",
    }


def _execution(conn: Conn, given: Row) -> Row:
    return {
        "id": uuid.uuid4(),
        "workflow_id": parent(conn, given, "workflow_id", "workflows"),
        "workflow_version": 1,
    }


def _step(conn: Conn, given: Row) -> Row:
    return {
        "execution_id": parent(conn, given, "execution_id", "workflow_executions"),
        "task_name": "build",
    }


def _step_child(conn: Conn, given: Row) -> Row:
    execution_id = parent(conn, given, "execution_id", "workflow_executions")
    step_id = given.get("step_id") or make(conn, "execution_steps", execution_id=execution_id)
    return {"step_id": step_id, "execution_id": execution_id}


def _attempt(conn: Conn, given: Row) -> Row:
    return {**_step_child(conn, given), "attempt": 1, "worker_id": "worker-1"}


def _log(conn: Conn, given: Row) -> Row:
    return {**_step_child(conn, given), "message": "started"}


def _tool_execution(conn: Conn, given: Row) -> Row:
    return {"tool_name": "grep"}


def _outbox(conn: Conn, given: Row) -> Row:
    return {
        "aggregate_type": "workflow",
        "aggregate_id": uuid.uuid4(),
        "event_type": "workflow.created",
    }


def _session(conn: Conn, given: Row) -> Row:
    return {"client_id": f"client-{next(_serial)}"}


def _configuration(conn: Conn, given: Row) -> Row:
    return {"key": f"scheduler.max_workers_{next(_serial)}", "value": Jsonb(4)}


def _memory_item(conn: Conn, given: Row) -> Row:
    content = f"Keys are UUIDv7 ({next(_serial)})."
    return {
        "project": "flowledger",
        "kind": "decision",
        "content": content,
        "content_hash": _sha256(content),
    }


def _module(conn: Conn, given: Row) -> Row:
    return {"project": "flowledger", "name": f"module-{next(_serial)}"}


def _module_item(conn: Conn, given: Row) -> Row:
    return {
        "module_id": parent(conn, given, "module_id", "memory_context_modules"),
        "item_id": parent(conn, given, "item_id", "memory_items"),
        "position": 0,
    }


def _cursor_key(conn: Conn, given: Row) -> Row:
    # The migration made the one row the table allows; the caller's transaction is rolled
    # back (attempt_insert), which restores it.
    conn.execute("DELETE FROM cursor_key")
    return {"singleton": True}


def _context_pack(conn: Conn, given: Row) -> Row:
    return {
        "project": "flowledger",
        "token_budget": 1000,
        "token_count": 800,
        "module_ids": [uuid.uuid4()],
        "items": Jsonb([{"id": "a", "tokens": 800}]),
    }


def _task(conn: Conn, given: Row) -> Row:
    return {"title": f"Task {next(_serial)}", "task_type": "docs"}


def _workflow_task(conn: Conn, given: Row) -> Row:
    return {
        "workflow_id": parent(conn, given, "workflow_id", "workflows"),
        "task_id": parent(conn, given, "task_id", "tasks"),
        "sequence": 0,
    }


def _schedule(conn: Conn, given: Row) -> Row:
    # A manual workflow: a scheduled one gets its schedule row from a trigger.
    return {"workflow_id": parent(conn, given, "workflow_id", "workflows")}


def _queue_state(conn: Conn, given: Row) -> Row:
    return {"name": f"queue-{next(_serial)}", "paused": True}


def _concurrency_slot(conn: Conn, given: Row) -> Row:
    return {"key": f"tenant:{next(_serial)}", "slot": 1}


def _rate_slot(conn: Conn, given: Row) -> Row:
    return {"key": f"api:{next(_serial)}", "slot": 10_000}


def _signal(conn: Conn, given: Row) -> Row:
    return {
        "execution_id": parent(conn, given, "execution_id", "workflow_executions"),
        "name": "go",
    }


def _run_slots(conn: Conn, given: Row) -> Row:
    # A workflow gets its slot row on insert (workflows_run_slots_on_insert): take it away,
    # so that the row under test is the only one.
    workflow_id = parent(conn, given, "workflow_id", "workflows")
    conn.execute("DELETE FROM workflow_run_slots WHERE workflow_id = %s", (workflow_id,))
    return {"workflow_id": workflow_id, "running": 0}


BUILDERS: dict[str, Callable[[Conn, Row], Row]] = {
    "users": _user,
    "api_keys": _api_key,
    "packs": _pack,
    "actions": _action,
    "workflows": _workflow,
    "workflow_versions": _workflow_version,
    "workflow_stages": _stage,
    "workflow_executions": _execution,
    "execution_steps": _step,
    "step_attempts": _attempt,
    "step_logs": _log,
    "tool_executions": _tool_execution,
    "outbox": _outbox,
    "sessions": _session,
    "configurations": _configuration,
    "memory_items": _memory_item,
    "memory_context_modules": _module,
    "memory_module_items": _module_item,
    "memory_context_packs": _context_pack,
    "cursor_key": _cursor_key,
    "tasks": _task,
    "workflow_tasks": _workflow_task,
    "workflow_schedules": _schedule,
    "queue_states": _queue_state,
    "execution_signals": _signal,
    "concurrency_slots": _concurrency_slot,
    "rate_slots": _rate_slot,
    "workflow_run_slots": _run_slots,
}

SAME_ID = Derived("its own id", lambda conn, row: row["id"])
A_WORKFLOW = Derived("a workflow", lambda conn, row: make(conn, "workflows"))
NOT_OBJECT = Jsonb([])
NOT_ARRAY = Jsonb({})


def _case(constraint: str, table: str, **overrides: Any) -> tuple[str, str, Row]:
    return constraint, table, overrides


# One bad row per CHECK (several where the rule has several ways to fail). Each breaks
# exactly one rule, so the constraint the server names is the one under test.
CHECK_CASES: list[tuple[str, str, Row]] = [
    _case("users_email_check", "users", email="ada.example.com"),
    _case("users_email_check", "users", email="ada @example.com"),
    _case("users_display_name_check", "users", display_name="  "),
    _case("users_role_check", "users", role="root"),
    _case("api_keys_name_check", "api_keys", name=""),
    _case("api_keys_prefix_check", "api_keys", prefix="short"),
    _case("api_keys_prefix_check", "api_keys", prefix="has-dash-1"),
    _case("api_keys_prefix_check", "api_keys", prefix="x" * 33),
    _case("api_keys_secret_hash_check", "api_keys", secret_hash=b"\x00" * 31),
    _case("api_keys_scopes_check", "api_keys", scopes=["read", None]),
    _case("packs_ref_check", "packs", ref="Core"),
    _case("packs_label_check", "packs", label=" "),
    _case("packs_version_check", "packs", version=""),
    _case("actions_ref_check", "actions", ref="core"),
    _case("actions_ref_check", "actions", ref="core.Run"),
    _case("actions_entrypoint_check", "actions", entrypoint=" "),
    _case("actions_param_schema_check", "actions", param_schema=NOT_OBJECT),
    _case("actions_out_schema_check", "actions", out_schema=Jsonb("string")),
    _case("actions_workflow_link_check", "actions", is_workflow=True),
    _case("actions_workflow_link_check", "actions", workflow_id=A_WORKFLOW),
    _case("workflows_name_check", "workflows", name="Nightly Build"),
    _case("workflows_name_check", "workflows", name="9lives"),
    _case("workflows_name_check", "workflows", name="a" * 64),
    _case("workflows_status_check", "workflows", status="deleted"),
    _case("workflows_trigger_type_check", "workflows", trigger_type="cron"),
    _case("workflows_schedule_check", "workflows", trigger_type="schedule"),
    _case("workflows_schedule_check", "workflows", schedule="0 * * * *"),
    _case("workflows_definition_check", "workflows", definition=NOT_OBJECT),
    _case("workflows_param_schema_check", "workflows", param_schema=NOT_OBJECT),
    _case("workflows_out_schema_check", "workflows", out_schema=NOT_OBJECT),
    _case("workflows_tags_check", "workflows", tags=["nightly", None]),
    _case("workflows_version_check", "workflows", version=0),
    _case("workflows_row_version_check", "workflows", row_version=0),
    _case("workflows_max_running_executions_check", "workflows", max_running_executions=0),
    _case("workflow_run_slots_running_check", "workflow_run_slots", running=-1),
    _case("workflow_versions_version_check", "workflow_versions", version=0),
    _case("workflow_versions_definition_check", "workflow_versions", definition=NOT_OBJECT),
    _case("workflow_stages_position_check", "workflow_stages", position=-1),
    _case("workflow_stages_name_check", "workflow_stages", name="Build"),
    _case("workflow_stages_action_ref_check", "workflow_stages", action_ref=" "),
    _case("workflow_stages_depends_on_check", "workflow_stages", depends_on=["build"]),
    _case("workflow_stages_depends_on_check", "workflow_stages", depends_on=["lint", None]),
    _case("workflow_stages_config_check", "workflow_stages", config=NOT_OBJECT),
    _case("workflow_stages_with_items_check", "workflow_stages", with_items=NOT_ARRAY),
    _case("workflow_stages_retry_policy_check", "workflow_stages", retry_policy=Jsonb({})),
    _case(
        "workflow_stages_retry_policy_check",
        "workflow_stages",
        retry_policy=Jsonb({"max_attempts": 0}),
    ),
    _case(
        "workflow_stages_retry_policy_check",
        "workflow_stages",
        retry_policy=Jsonb({"max_attempts": "3"}),
    ),
    _case(
        "workflow_stages_retry_policy_check",
        "workflow_stages",
        retry_policy=Jsonb({"max_attempts": 1.5}),
    ),
    _case("workflow_stages_retry_policy_check", "workflow_stages", retry_policy=Jsonb([3])),
    _case("workflow_stages_timeout_seconds_check", "workflow_stages", timeout_seconds=0),
    _case("workflow_executions_status_check", "workflow_executions", status="done"),
    _case("workflow_executions_attempt_check", "workflow_executions", attempt=0),
    _case("workflow_executions_parent_check", "workflow_executions", parent_execution_id=SAME_ID),
    _case("workflow_executions_idempotency_key_check", "workflow_executions", idempotency_key=""),
    _case("workflow_executions_parameters_check", "workflow_executions", parameters=NOT_OBJECT),
    _case("workflow_executions_variables_check", "workflow_executions", variables=NOT_OBJECT),
    _case("workflow_executions_task_graph_check", "workflow_executions", task_graph=NOT_OBJECT),
    _case(
        "workflow_executions_pause_reason_check",
        "workflow_executions",
        status="running",
        started_at=T0,
        pause_reason="waiting for approval",
    ),
    _case("workflow_executions_started_check", "workflow_executions", status="running"),
    _case("workflow_executions_started_check", "workflow_executions", status="paused"),
    _case(
        "workflow_executions_started_check",
        "workflow_executions",
        status="failed",
        finished_at=T0,
    ),
    _case(
        "workflow_executions_finished_check",
        "workflow_executions",
        status="completed",
        started_at=T0,
    ),
    _case(
        "workflow_executions_finished_check",
        "workflow_executions",
        status="running",
        started_at=T0,
        finished_at=T1,
    ),
    _case(
        "workflow_executions_timing_check",
        "workflow_executions",
        status="completed",
        started_at=T1,
        finished_at=T0,
    ),
    _case("workflow_executions_row_version_check", "workflow_executions", row_version=0),
    _case("execution_steps_task_name_check", "execution_steps", task_name=""),
    _case("execution_steps_task_index_check", "execution_steps", task_index=-1),
    _case("execution_steps_status_check", "execution_steps", status="done"),
    _case("execution_steps_priority_check", "execution_steps", priority=1001),
    _case("execution_steps_priority_check", "execution_steps", priority=-1001),
    _case("execution_steps_attempt_check", "execution_steps", attempt=-1),
    _case("execution_steps_max_attempts_check", "execution_steps", max_attempts=0),
    _case("execution_steps_attempt_limit_check", "execution_steps", attempt=4, max_attempts=3),
    _case("execution_steps_timeout_seconds_check", "execution_steps", timeout_seconds=0),
    _case("execution_steps_lease_check", "execution_steps", status="running"),
    _case(
        "execution_steps_lease_check",
        "execution_steps",
        status="running",
        lease_owner="worker-1",
    ),
    _case(
        "execution_steps_lease_check",
        "execution_steps",
        status="queued",
        lease_owner="worker-1",
        lease_expires_at=T1,
    ),
    _case("execution_steps_duration_ms_check", "execution_steps", duration_ms=-1),
    _case("execution_steps_deps_remaining_check", "execution_steps", deps_remaining=-1),
    _case("execution_steps_queue_check", "execution_steps", queue="GPU"),
    _case("execution_steps_queue_check", "execution_steps", queue="a" * 64),
    _case("workflow_stages_queue_check", "workflow_stages", queue="no way"),
    _case("queue_states_name_check", "queue_states", name="9lives"),
    _case("workflow_stages_concurrency_check", "workflow_stages", concurrency=NOT_OBJECT),
    _case(
        "workflow_stages_concurrency_check",
        "workflow_stages",
        concurrency=Jsonb({"key": "k", "limit": 0}),
    ),
    _case(
        "workflow_stages_concurrency_check",
        "workflow_stages",
        concurrency=Jsonb({"key": "k", "limit": 1.5}),
    ),
    _case(
        "workflow_stages_concurrency_check",
        "workflow_stages",
        concurrency=Jsonb({"key": "k", "limit": "1"}),
    ),
    _case(
        "workflow_stages_concurrency_check",
        "workflow_stages",
        concurrency=Jsonb({"key": "a{b}c{", "limit": 1}),
    ),
    _case(
        "workflow_stages_concurrency_check",
        "workflow_stages",
        concurrency=Jsonb({"key": "k", "limit": 1, "per_seconds": 1}),
    ),
    _case(
        "workflow_stages_concurrency_check",
        "workflow_stages",
        concurrency=Jsonb({"key": "k" * 201, "limit": 1}),
    ),
    _case("workflow_stages_concurrency_check", "workflow_stages", concurrency=Jsonb({"key": "k"})),
    _case(
        "workflow_stages_rate_limit_check",
        "workflow_stages",
        rate_limit=Jsonb({"key": "k", "limit": 1, "per_seconds": 0}),
    ),
    _case(
        "workflow_stages_rate_limit_check",
        "workflow_stages",
        rate_limit=Jsonb({"key": "k", "limit": 1}),
    ),
    _case(
        "workflow_stages_rate_limit_check",
        "workflow_stages",
        rate_limit=Jsonb({"key": "k", "limit": 10_001, "per_seconds": 1}),
    ),
    _case(
        "workflow_stages_rate_limit_check",
        "workflow_stages",
        rate_limit=Jsonb({"key": "{X}", "limit": 1, "per_seconds": 1}),
    ),
    _case("execution_steps_concurrency_check", "execution_steps", concurrency_key="k"),
    _case(
        "execution_steps_concurrency_check",
        "execution_steps",
        concurrency_key="k",
        concurrency_limit=0,
    ),
    _case(
        "execution_steps_rate_limit_check",
        "execution_steps",
        rate_key="k",
        rate_limit=1,
    ),
    _case(
        "execution_steps_rate_limit_check",
        "execution_steps",
        rate_key="k",
        rate_limit=1,
        rate_window=timedelta(0),
    ),
    _case("concurrency_slots_slot_check", "concurrency_slots", slot=0),
    _case("rate_slots_slot_check", "rate_slots", slot=10_001),
    _case("execution_signals_name_check", "execution_signals", name="Go"),
    _case("execution_signals_consumed_check", "execution_signals", consumed_at=T0),
    _case("workflows_failure_mode_check", "workflows", failure_mode="ignore"),
    _case("workflow_executions_failure_mode_check", "workflow_executions", failure_mode="x"),
    _case(
        "workflow_executions_parent_step_check",
        "workflow_executions",
        parent_step_id=uuid.UUID(int=7),
    ),
    _case("step_attempts_attempt_check", "step_attempts", attempt=0),
    _case("step_attempts_worker_id_check", "step_attempts", worker_id=" "),
    _case(
        "step_attempts_outcome_check",
        "step_attempts",
        outcome="ok",
        started_at=T0,
        finished_at=T1,
    ),
    _case("step_attempts_finished_check", "step_attempts", outcome="completed"),
    _case("step_attempts_finished_check", "step_attempts", started_at=T0, finished_at=T1),
    _case(
        "step_attempts_timing_check",
        "step_attempts",
        started_at=T1,
        finished_at=T0,
        outcome="failed",
    ),
    _case("step_logs_level_check", "step_logs", level="trace"),
    _case("step_logs_fields_check", "step_logs", fields=NOT_OBJECT),
    _case("tool_executions_tool_name_check", "tool_executions", tool_name=""),
    _case("tool_executions_input_check", "tool_executions", input=NOT_OBJECT),
    _case(
        "tool_executions_status_check",
        "tool_executions",
        status="done",
        started_at=T0,
        finished_at=T1,
    ),
    _case("tool_executions_finished_check", "tool_executions", status="succeeded"),
    _case("tool_executions_finished_check", "tool_executions", started_at=T0, finished_at=T1),
    _case(
        "tool_executions_timing_check",
        "tool_executions",
        status="failed",
        started_at=T1,
        finished_at=T0,
    ),
    _case("tool_executions_duration_ms_check", "tool_executions", duration_ms=-1),
    _case("outbox_aggregate_type_check", "outbox", aggregate_type=" "),
    _case("outbox_event_type_check", "outbox", event_type="WorkflowCreated"),
    _case("outbox_event_type_check", "outbox", event_type="workflow.created.v2"),
    _case("outbox_payload_check", "outbox", payload=NOT_OBJECT),
    _case("outbox_attempts_check", "outbox", attempts=-1),
    _case("sessions_client_id_check", "sessions", client_id=""),
    _case("sessions_metadata_check", "sessions", metadata=NOT_OBJECT),
    _case("configurations_key_check", "configurations", key="Scheduler.max"),
    _case("configurations_key_check", "configurations", key="scheduler..max"),
    _case("configurations_key_check", "configurations", key="scheduler.max."),
    _case("configurations_version_check", "configurations", version=0),
    _case("memory_items_project_check", "memory_items", project=" "),
    _case("memory_items_kind_check", "memory_items", kind="note"),
    _case("memory_items_content_check", "memory_items", content="   "),
    _case("memory_items_content_hash_check", "memory_items", content_hash=b"\x01" * 20),
    _case("memory_items_confidence_check", "memory_items", confidence=1.01),
    _case("memory_items_confidence_check", "memory_items", confidence=-0.01),
    _case("memory_items_status_check", "memory_items", status="new"),
    _case("memory_items_provenance_check", "memory_items", provenance=NOT_OBJECT),
    _case("memory_items_anchors_check", "memory_items", anchors=["src/app.py", None]),
    _case("memory_items_access_count_check", "memory_items", access_count=-1),
    _case("memory_context_modules_project_check", "memory_context_modules", project=""),
    _case("memory_context_modules_name_check", "memory_context_modules", name=" "),
    _case("memory_context_modules_selectors_check", "memory_context_modules", selectors=NOT_OBJECT),
    _case("memory_module_items_position_check", "memory_module_items", position=-1),
    _case("memory_context_packs_project_check", "memory_context_packs", project=""),
    _case(
        "memory_context_packs_token_budget_check",
        "memory_context_packs",
        token_budget=0,
        token_count=0,
    ),
    _case("memory_context_packs_token_count_check", "memory_context_packs", token_count=-1),
    _case("memory_context_packs_token_count_check", "memory_context_packs", token_count=1001),
    _case(
        "memory_context_packs_module_ids_check",
        "memory_context_packs",
        module_ids=[uuid.uuid4(), None],
    ),
    _case("memory_context_packs_items_check", "memory_context_packs", items=NOT_ARRAY),
    _case("cursor_key_singleton_check", "cursor_key", singleton=False),
    _case("cursor_key_key_check", "cursor_key", key=b"\x00" * 31),
    _case("tasks_title_check", "tasks", title=" "),
    _case("tasks_title_check", "tasks", title="t" * 256),
    _case("tasks_description_check", "tasks", description="d" * 1_000_001),
    _case("tasks_task_type_check", "tasks", task_type="Docs"),
    _case("tasks_task_type_check", "tasks", task_type="d" * 64),
    _case("tasks_status_check", "tasks", status="finished"),
    _case("tasks_config_check", "tasks", config=NOT_OBJECT),
    _case("tasks_metadata_check", "tasks", metadata=NOT_OBJECT),
    _case("tasks_workspace_path_check", "tasks", workspace_path=" "),
    _case("tasks_workspace_path_check", "tasks", workspace_path="p" * 513),
    _case("workflow_tasks_sequence_check", "workflow_tasks", sequence=-1),
    _case("workflow_tasks_config_check", "workflow_tasks", config=NOT_OBJECT),
    _case("workflow_schedules_catch_up_check", "workflow_schedules", catch_up="every"),
    _case("workflow_schedules_max_catch_up_check", "workflow_schedules", max_catch_up=0),
    _case("workflow_schedules_max_catch_up_check", "workflow_schedules", max_catch_up=1001),
    _case("workflow_schedules_error_check", "workflow_schedules", error=" "),
]

# Rows at the edge of what the CHECKs allow.
ACCEPTED_CASES: list[tuple[str, Row]] = [
    ("users", {"email": "Ada.Lovelace+flow@Example.co.uk"}),
    ("users", {"role": "admin"}),
    ("users", {"role": "viewer"}),
    ("api_keys", {"prefix": "abcdefgh"}),
    ("api_keys", {"prefix": "A_" * 16}),
    ("actions", {"is_workflow": True, "workflow_id": A_WORKFLOW}),
    ("workflows", {"name": "a"}),
    ("workflows", {"name": "a" + "-_9" * 20 + "zz"}),
    ("workflows", {"trigger_type": "schedule", "schedule": "0 3 * * *"}),
    ("workflows", {"max_running_executions": 1}),
    ("workflows", {"max_running_executions": 2**31 - 1}),
    ("workflow_run_slots", {"running": None}),
    ("workflow_stages", {"with_items": Jsonb([1, 2, 3])}),
    ("workflow_stages", {"retry_policy": Jsonb({"max_attempts": 1})}),
    ("workflow_stages", {"depends_on": ["lint", "test"]}),
    ("workflow_executions", {"status": "cancelled", "finished_at": T0}),
    ("workflow_executions", {"status": "paused", "started_at": T0, "pause_reason": "approval"}),
    ("workflow_executions", {"status": "failed", "started_at": T0, "finished_at": T0}),
    ("execution_steps", {"queue": "gpu-large_2"}),
    ("execution_steps", {"priority": -1000}),
    ("execution_steps", {"priority": 1000}),
    ("execution_steps", {"attempt": 3, "max_attempts": 3}),
    (
        "execution_steps",
        {"status": "running", "lease_owner": "w", "lease_expires_at": T1, "started_at": T0},
    ),
    ("step_attempts", {"started_at": T0, "finished_at": T1, "outcome": "lease_lost"}),
    (
        "tool_executions",
        {"status": "succeeded", "started_at": T0, "finished_at": T0, "duration_ms": 0},
    ),
    ("configurations", {"key": "a"}),
    ("configurations", {"key": "a1.b_c.d9"}),
    ("memory_items", {"confidence": 0.0}),
    ("memory_items", {"confidence": 1.0}),
    ("memory_context_packs", {"token_count": 1000}),
    ("memory_context_packs", {"token_count": 0, "module_ids": []}),
    ("tasks", {"title": "t" * 255, "task_type": "a" + "._-9" * 15 + "zz"}),
    ("tasks", {"status": "cancelled", "workspace_path": "p" * 512}),
    ("workflow_tasks", {"sequence": 2**31 - 1, "config": Jsonb({"a": 1})}),
    ("workflow_schedules", {"catch_up": "all", "max_catch_up": 1000, "error": "bad rule"}),
    ("workflow_schedules", {"max_catch_up": 1, "next_fire_at": T0, "last_fired_at": T0}),
    (
        "workflow_stages",
        {
            "concurrency": Jsonb({"key": "t:{tenant}/{region_2}", "limit": 10_000}),
            "rate_limit": Jsonb({"key": "api", "limit": 3.0, "per_seconds": 0.001}),
        },
    ),
    (
        "execution_steps",
        {
            "concurrency_key": "",
            "concurrency_limit": 1,
            "rate_key": "k",
            "rate_limit": 10_000,
            "rate_window": timedelta(microseconds=1),
        },
    ),
]


def attempt_insert(conn: Conn, table: str, overrides: Row) -> str | None:
    """Insert a built row and roll it back: None if accepted, else the constraint it broke."""
    with conn.transaction(force_rollback=True):
        row = build(conn, table, overrides)
        try:
            with conn.transaction():
                insert(conn, table, row)
        except psycopg.errors.IntegrityError as exc:
            return exc.diag.constraint_name or f"SQLSTATE {exc.sqlstate}"
    return None


@pytest.mark.parametrize("table", sorted(BUILDERS))
def test_checks_accept_good_rows_and_name_the_rule_a_bad_row_breaks(conn: Conn, table: str) -> None:
    cases: list[tuple[Row, str | None]] = [({}, None)]
    cases += [(overrides, None) for name, overrides in ACCEPTED_CASES if name == table]
    cases += [(overrides, rule) for rule, name, overrides in CHECK_CASES if name == table]
    outcomes = [(overrides, attempt_insert(conn, table, overrides)) for overrides, _ in cases]
    assert outcomes == cases


def test_every_check_constraint_has_a_case(conn: Conn) -> None:
    rows = conn.execute(
        "SELECT conname FROM pg_constraint"
        " WHERE contype = 'c' AND connamespace = 'public'::regnamespace"
    ).fetchall()
    assert {name for (name,) in rows} == {rule for rule, _, _ in CHECK_CASES}


def test_uuid_generate_v7_makes_time_ordered_version_7_uuids(conn: Conn) -> None:
    before = scalar(conn, "SELECT clock_timestamp()")
    ids = [scalar(conn, "SELECT uuid_generate_v7()") for _ in range(20)]
    ids += [scalar(conn, "SELECT id FROM users WHERE id = %s", make(conn, "users"))]
    after = scalar(conn, "SELECT clock_timestamp()")
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for value in ids:
        assert isinstance(value, uuid.UUID)
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert before.timestamp() * 1000 - 1 <= value.int >> 80 <= after.timestamp() * 1000 + 1


def test_uuid_generate_v7_never_goes_back_within_a_statement(conn: Conn) -> None:
    rows = conn.execute(
        "SELECT uuid_generate_v7() FROM generate_series(1, 5000) AS n ORDER BY n"
    ).fetchall()
    ids = [value for (value,) in rows]
    assert len(set(ids)) == len(ids)
    # Milliseconds and sub-millisecond fraction (the 60 bits before the random part)
    # never decrease; only ids made within the same microsecond may tie.
    prefixes = [(value.int >> 80, (value.int >> 64) & 0x0FFF) for value in ids]
    assert prefixes == sorted(prefixes)


# --- unique constraints -----------------------------------------------------------

UPPER_EMAIL = Derived("same email, upper case", lambda conn, row: row["email"].upper())
ANOTHER_ITEM = Derived("another item", lambda conn, row: make(conn, "memory_items"))

# (table, changes from the first row, the unique constraint the second row breaks)
# The second row is the first one minus its id, with the changes applied.
UNIQUE_CASES: list[tuple[str, Row, str]] = [
    ("users", {"email": UPPER_EMAIL}, "users_email_key"),
    ("api_keys", {"name": "other"}, "api_keys_prefix_key"),
    ("api_keys", {"prefix": "fl_other_key"}, "api_keys_user_id_name_key"),
    ("packs", {"label": "Other"}, "packs_ref_key"),
    ("actions", {"entrypoint": "other.py"}, "actions_ref_key"),
    ("workflows", {"description": "again"}, "workflows_owner_id_name_key"),
    ("workflow_versions", {"definition_yaml": "x"}, "workflow_versions_workflow_id_version_key"),
    ("workflow_stages", {"name": "deploy"}, "workflow_stages_workflow_id_position_key"),
    ("workflow_stages", {"position": 1}, "workflow_stages_workflow_id_name_key"),
    ("workflow_executions", {"attempt": 2}, "workflow_executions_idempotency_key"),
    ("execution_steps", {"priority": 5}, "execution_steps_execution_task_key"),
    ("step_attempts", {"worker_id": "worker-2"}, "step_attempts_step_id_attempt_key"),
    ("sessions", {}, "sessions_client_id_key"),
    ("configurations", {"value": Jsonb(5)}, "configurations_pkey"),
    ("memory_items", {"content": "Other text."}, "memory_items_project_content_hash_key"),
    ("memory_context_modules", {"priority": 3}, "memory_context_modules_project_name_key"),
    ("memory_module_items", {"position": 1}, "memory_module_items_pkey"),
    (
        "memory_module_items",
        {"item_id": ANOTHER_ITEM},
        "memory_module_items_module_id_position_key",
    ),
    ("workflow_tasks", {"sequence": 1}, "workflow_tasks_pkey"),
    (
        "workflow_tasks",
        {"task_id": Derived("another task", lambda conn, row: make(conn, "tasks"))},
        "workflow_tasks_workflow_id_sequence_key",
    ),
]


# Columns a table's first row needs so that a copy of it collides.
FIRST_ROW: dict[str, Row] = {"workflow_executions": {"idempotency_key": "run-1"}}


def test_unique_constraints_reject_a_second_row(conn: Conn) -> None:
    outcomes = []
    for table, changes, _ in UNIQUE_CASES:
        with conn.transaction(force_rollback=True):
            first = build(conn, table, FIRST_ROW.get(table))
            insert(conn, table, first)
            second = {column: value for column, value in first.items() if column != "id"}
            for column, value in changes.items():
                second[column] = value.compute(conn, first) if isinstance(value, Derived) else value
            try:
                with conn.transaction():
                    insert(conn, table, second)
            except psycopg.errors.UniqueViolation as exc:
                outcomes.append((table, changes, exc.diag.constraint_name))
            else:
                outcomes.append((table, changes, None))
    assert outcomes == UNIQUE_CASES


def test_unique_constraints_allow_their_neighbours(conn: Conn) -> None:
    make(conn, "workflows", name="nightly")
    make(conn, "workflows", name="nightly")  # another owner
    workflow_id = make(conn, "workflows")
    for key in (None, None, "k-1"):
        make(conn, "workflow_executions", workflow_id=workflow_id, idempotency_key=key)
    make(conn, "workflow_executions", idempotency_key="k-1")  # another workflow
    execution_id = make(conn, "workflow_executions", workflow_id=workflow_id)
    for index in range(3):
        make(
            conn, "execution_steps", execution_id=execution_id, task_name="shard", task_index=index
        )
    item = build(conn, "memory_items")
    insert(conn, "memory_items", item)
    insert(conn, "memory_items", {**item, "project": "other-project"})
    make(conn, "users", email="ada@example.com")
    make(conn, "users", email="ada@example.org")
    assert count(conn, "workflows") == 4
    assert count(conn, "workflow_executions") == 5
    assert count(conn, "execution_steps") == 3
    assert count(conn, "memory_items") == 2


def test_positions_can_be_reordered_in_one_transaction(conn: Conn) -> None:
    workflow_id = make(conn, "workflows")
    build_id = make(conn, "workflow_stages", workflow_id=workflow_id, name="build", position=0)
    test_id = make(conn, "workflow_stages", workflow_id=workflow_id, name="test", position=1)
    stage_order = "SELECT name FROM workflow_stages ORDER BY position"

    conn.execute(
        "UPDATE workflow_stages SET position = 1 - position WHERE workflow_id = %s", [workflow_id]
    )
    assert conn.execute(stage_order).fetchall() == [("test",), ("build",)]

    with conn.transaction():
        conn.execute("SET CONSTRAINTS workflow_stages_workflow_id_position_key DEFERRED")
        conn.execute("UPDATE workflow_stages SET position = 1 WHERE id = %s", [test_id])
        conn.execute("UPDATE workflow_stages SET position = 0 WHERE id = %s", [build_id])
    assert conn.execute(stage_order).fetchall() == [("build",), ("test",)]

    module_id = make(conn, "memory_context_modules")
    first, second = make(conn, "memory_items"), make(conn, "memory_items")
    make(conn, "memory_module_items", module_id=module_id, item_id=first, position=0)
    make(conn, "memory_module_items", module_id=module_id, item_id=second, position=1)
    with conn.transaction():
        conn.execute("SET CONSTRAINTS memory_module_items_module_id_position_key DEFERRED")
        conn.execute("UPDATE memory_module_items SET position = 1 WHERE item_id = %s", [first])
        conn.execute("UPDATE memory_module_items SET position = 0 WHERE item_id = %s", [second])
    item_order = "SELECT item_id FROM memory_module_items ORDER BY position"
    assert conn.execute(item_order).fetchall() == [(second,), (first,)]


# --- foreign keys and cascades -----------------------------------------------------

# Deleting a row an ON DELETE RESTRICT key still points at: PostgreSQL 18 reports
# restrict_violation, earlier versions foreign_key_violation.
STILL_REFERENCED = {"23001", "23503"}


def test_deleting_a_user(conn: Conn) -> None:
    user_id = make(conn, "users")
    make(conn, "api_keys", user_id=user_id)
    make(conn, "sessions", user_id=user_id)
    execution_id = make(conn, "workflow_executions", triggered_by=user_id)
    make(conn, "api_keys")
    conn.execute("DELETE FROM users WHERE id = %s", [user_id])
    assert count(conn, "api_keys") == 1
    assert count(conn, "sessions") == 0
    query = "SELECT triggered_by FROM workflow_executions WHERE id = %s"
    assert scalar(conn, query, execution_id) is None

    owner_id = make(conn, "users")
    make(conn, "workflows", owner_id=owner_id)
    with pytest.raises(psycopg.errors.IntegrityError) as exc:
        conn.execute("DELETE FROM users WHERE id = %s", [owner_id])
    assert exc.value.sqlstate in STILL_REFERENCED
    assert exc.value.diag.constraint_name == "workflows_owner_id_fkey"


def test_deleting_a_workflow_deletes_its_stages_versions_and_runs(conn: Conn) -> None:
    workflow_id = make(conn, "workflows")
    conn.execute("UPDATE workflows SET definition = '{\"v\": 2}' WHERE id = %s", [workflow_id])
    stage_id = make(conn, "workflow_stages", workflow_id=workflow_id)
    execution_id = make(conn, "workflow_executions", workflow_id=workflow_id, workflow_version=2)
    step_id = make(conn, "execution_steps", execution_id=execution_id, stage_id=stage_id)
    make(conn, "step_attempts", step_id=step_id, execution_id=execution_id)
    make(conn, "workflows")
    conn.execute("DELETE FROM workflows WHERE id = %s", [workflow_id])
    assert count(conn, "workflows") == 1
    assert count(conn, "workflow_versions") == 1
    for table in ("workflow_stages", "workflow_executions", "execution_steps", "step_attempts"):
        assert count(conn, table) == 0, table


def test_deleting_an_execution_deletes_its_steps_attempts_logs_and_children(
    conn: Conn,
) -> None:
    workflow_id = make(conn, "workflows")
    execution_id = make(conn, "workflow_executions", workflow_id=workflow_id)
    child_id = make(
        conn, "workflow_executions", workflow_id=workflow_id, parent_execution_id=execution_id
    )
    for owner in (execution_id, child_id):
        step_id = make(conn, "execution_steps", execution_id=owner)
        make(conn, "step_attempts", step_id=step_id, execution_id=owner)
        make(conn, "step_logs", step_id=step_id, execution_id=owner)
        make(conn, "tool_executions", step_id=step_id)
    make(conn, "step_logs", execution_id=make(conn, "workflow_executions", workflow_id=workflow_id))
    conn.execute("DELETE FROM workflow_executions WHERE id = %s", [execution_id])
    assert count(conn, "workflow_executions") == 1
    assert count(conn, "execution_steps") == 1
    assert count(conn, "step_attempts") == 0
    assert count(conn, "step_logs") == 1
    assert count(conn, "tool_executions") == 0


def test_deleting_catalog_stages_sessions_and_memory(conn: Conn) -> None:
    pack_id = make(conn, "packs")
    make(conn, "actions", pack_id=pack_id)
    workflow_id = make(conn, "workflows", pack_id=pack_id)
    conn.execute("DELETE FROM packs WHERE id = %s", [pack_id])
    assert count(conn, "actions") == 0
    assert scalar(conn, "SELECT pack_id FROM workflows WHERE id = %s", workflow_id) is None

    stage_id = make(conn, "workflow_stages")
    step_id = make(conn, "execution_steps", stage_id=stage_id)
    conn.execute("DELETE FROM workflow_stages WHERE id = %s", [stage_id])
    assert scalar(conn, "SELECT stage_id FROM execution_steps WHERE id = %s", step_id) is None

    session_id = make(conn, "sessions")
    make(conn, "tool_executions", session_id=session_id)
    conn.execute("DELETE FROM sessions WHERE id = %s", [session_id])
    assert count(conn, "tool_executions") == 0

    item_id = make(conn, "memory_items")
    make(conn, "memory_module_items", item_id=item_id)
    make(conn, "memory_module_items")
    conn.execute("DELETE FROM memory_items WHERE id = %s", [item_id])
    assert count(conn, "memory_module_items") == 1
    conn.execute("DELETE FROM memory_context_modules")
    assert count(conn, "memory_module_items") == 0


def test_restricting_foreign_keys(conn: Conn) -> None:
    workflow_id = make(conn, "workflows")
    make(conn, "actions", is_workflow=True, workflow_id=workflow_id)
    with pytest.raises(psycopg.errors.IntegrityError) as restricted:
        conn.execute("DELETE FROM workflows WHERE id = %s", [workflow_id])
    assert restricted.value.sqlstate in STILL_REFERENCED
    assert restricted.value.diag.constraint_name == "actions_workflow_id_fkey"

    with pytest.raises(psycopg.errors.ForeignKeyViolation) as dangling:
        make(conn, "workflow_executions", workflow_id=workflow_id, workflow_version=2)
    assert dangling.value.diag.constraint_name == "workflow_executions_version_fkey"


def test_every_foreign_key_is_indexed(conn: Conn) -> None:
    unindexed = conn.execute(
        """
        SELECT c.conname
          FROM pg_constraint c
         WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
           AND NOT EXISTS (
               SELECT 1
                 FROM pg_index i,
                      LATERAL (SELECT string_to_array(i.indkey::text, ' ')::int2[] AS cols) k
                WHERE i.indrelid = c.conrelid
                  AND k.cols[1:cardinality(c.conkey)] @> c.conkey
                  AND k.cols[1:cardinality(c.conkey)] <@ c.conkey)
        """
    ).fetchall()
    assert unindexed == []


# --- updated_at -------------------------------------------------------------------

# A column to change in each mutable table.
UPDATED_AT_CHANGES: dict[str, tuple[str, Any]] = {
    "users": ("display_name", "Renamed"),
    "api_keys": ("last_used_at", T1),
    "packs": ("label", "Renamed"),
    "actions": ("description", "changed"),
    "workflows": ("description", "changed"),
    "workflow_stages": ("config", Jsonb({"retries": 1})),
    "workflow_executions": ("variables", Jsonb({"x": 1})),
    "execution_steps": ("priority", 5),
    "tool_executions": ("output", Jsonb({"matches": 3})),
    "sessions": ("last_heartbeat", T1),
    "configurations": ("value", Jsonb(8)),
    "memory_items": ("access_count", 1),
    "memory_context_modules": ("priority", 2),
    "tasks": ("status", "done"),
    "workflow_tasks": ("sequence", 4),
    "workflow_schedules": ("next_fire_at", T1),
    "queue_states": ("paused", False),
}


def test_updated_at_moves_only_when_a_row_changes(conn: Conn) -> None:
    outcomes = {}
    for table, (column, value) in UPDATED_AT_CHANGES.items():
        key = {
            "configurations": "key",
            "workflow_tasks": "workflow_id",
            "workflow_schedules": "workflow_id",
            "queue_states": "name",
        }.get(table, "id")
        stamps = sql.SQL("SELECT created_at, updated_at, now() FROM {} WHERE {} = %s").format(
            sql.Identifier(table), sql.Identifier(key)
        )
        names = {"t": sql.Identifier(table), "c": sql.Identifier(column), "k": sql.Identifier(key)}
        noop = sql.SQL("UPDATE {t} SET {c} = {c} WHERE {k} = %s").format(**names)
        change = sql.SQL("UPDATE {t} SET {c} = %s WHERE {k} = %s").format(**names)
        # A change that writes updated_at itself: the stamp is still the transaction's.
        backdate = sql.SQL("UPDATE {t} SET {c} = {c}, updated_at = %s WHERE {k} = %s").format(
            **names
        )
        # One transaction per table: now() is fixed within it, so the bumped
        # updated_at must equal it exactly.
        with conn.transaction(force_rollback=True):
            row_key = make(conn, table, created_at=LONG_AGO, updated_at=LONG_AGO)
            conn.execute(noop, [row_key])
            after_noop = conn.execute(stamps, [row_key]).fetchone()
            conn.execute(change, [value, row_key])
            after_change = conn.execute(stamps, [row_key]).fetchone()
            conn.execute(backdate, [LONG_AGO, row_key])
            after_backdate = conn.execute(stamps, [row_key]).fetchone()
        assert after_noop is not None
        assert after_change is not None
        assert after_backdate is not None
        outcomes[table] = (
            after_noop[:2] == (LONG_AGO, LONG_AGO),
            after_change[:2] == (LONG_AGO, after_change[2]),
            after_backdate[:2] == (LONG_AGO, after_backdate[2]),
        )
    assert outcomes == dict.fromkeys(UPDATED_AT_CHANGES, (True, True, True))


def test_updated_at_trigger_is_on_every_mutable_table(conn: Conn) -> None:
    with_column = conn.execute(
        "SELECT table_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND column_name = 'updated_at'"
    ).fetchall()
    with_trigger = conn.execute(
        "SELECT tgrelid::regclass::text FROM pg_trigger"
        " WHERE tgname = tgrelid::regclass::text || '_set_updated_at'"
        "   AND tgfoid = 'set_updated_at'::regproc"
    ).fetchall()
    tables = {name for (name,) in with_column}
    assert tables == {name for (name,) in with_trigger}
    assert tables == set(UPDATED_AT_CHANGES)


# --- workflow versions ----------------------------------------------------------


def versions(conn: Conn, workflow_id: Any) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT version, definition_yaml, definition FROM workflow_versions"
        " WHERE workflow_id = %s ORDER BY version",
        [workflow_id],
    ).fetchall()


def current_version(conn: Conn, workflow_id: Any) -> int:
    return int(scalar(conn, "SELECT version FROM workflows WHERE id = %s", workflow_id))


def test_workflow_versions_follow_definition_changes(conn: Conn) -> None:
    workflow_id = make(conn, "workflows", definition_yaml="a\n", definition=Jsonb({"s": ["a"]}))
    assert current_version(conn, workflow_id) == 1
    assert versions(conn, workflow_id) == [(1, "a\n", {"s": ["a"]})]

    conn.execute('UPDATE workflows SET definition = \'{"s": ["b"]}\' WHERE id = %s', [workflow_id])
    conn.execute("UPDATE workflows SET definition_yaml = 'b\n' WHERE id = %s", [workflow_id])
    assert current_version(conn, workflow_id) == 3
    assert versions(conn, workflow_id) == [
        (1, "a\n", {"s": ["a"]}),
        (2, "a\n", {"s": ["b"]}),
        (3, "b\n", {"s": ["b"]}),
    ]


def test_other_workflow_changes_keep_the_version(conn: Conn) -> None:
    workflow_id = make(conn, "workflows", definition=Jsonb({"s": []}))
    conn.execute(
        "UPDATE workflows SET description = 'x', status = 'active', tags = '{a}',"
        " definition = '{\"s\": []}', row_version = row_version + 1 WHERE id = %s",
        [workflow_id],
    )
    # The version belongs to the database: setting it by hand is undone.
    conn.execute("UPDATE workflows SET version = 7 WHERE id = %s", [workflow_id])
    assert current_version(conn, workflow_id) == 1
    assert len(versions(conn, workflow_id)) == 1


def test_write_once_tables_refuse_updates(conn: Conn) -> None:
    workflow_id = make(conn, "workflows")
    with pytest.raises(psycopg.errors.CheckViolation) as version_exc:
        conn.execute(
            "UPDATE workflow_versions SET definition_yaml = 'x' WHERE workflow_id = %s",
            [workflow_id],
        )
    assert version_exc.value.diag.constraint_name == "workflow_versions_immutable"
    assert version_exc.value.diag.message_primary == "workflow_versions rows are immutable"

    pack_id = make(conn, "memory_context_packs")
    with pytest.raises(psycopg.errors.CheckViolation) as pack_exc:
        conn.execute("UPDATE memory_context_packs SET token_count = 1 WHERE id = %s", [pack_id])
    assert pack_exc.value.diag.constraint_name == "memory_context_packs_immutable"


def test_step_attempts_are_finished_once(conn: Conn) -> None:
    attempt_id = make(conn, "step_attempts")
    with pytest.raises(psycopg.errors.CheckViolation) as open_exc:
        conn.execute("UPDATE step_attempts SET worker_id = 'thief' WHERE id = %s", [attempt_id])
    assert open_exc.value.diag.constraint_name == "step_attempts_write_once"

    conn.execute(
        "UPDATE step_attempts SET finished_at = started_at, outcome = 'failed', error = 'boom'"
        " WHERE id = %s",
        [attempt_id],
    )
    conn.execute("UPDATE step_attempts SET error = error WHERE id = %s", [attempt_id])
    with pytest.raises(psycopg.errors.CheckViolation) as finished_exc:
        conn.execute("UPDATE step_attempts SET error = 'rewritten' WHERE id = %s", [attempt_id])
    assert finished_exc.value.diag.constraint_name == "step_attempts_write_once"
    assert "already finished" in (finished_exc.value.diag.message_primary or "")


def test_workflow_search_column_is_generated(conn: Conn) -> None:
    make(conn, "workflows", name="nightly-build", description="Compiles the releases")
    # Names are indexed unstemmed ('simple'), descriptions stemmed ('english'):
    # a query matches either way by OR-ing both parses.
    query: LiteralString = (
        "SELECT count(*) FROM workflows WHERE search @@"
        " (websearch_to_tsquery('simple', %(q)s) || websearch_to_tsquery('english', %(q)s))"
    )
    hits = {
        word: conn.execute(query, {"q": word}).fetchone()
        for word in ("releases", "nightly", "deploy")
    }
    assert hits == {"releases": (1,), "nightly": (1,), "deploy": (0,)}


# --- status transitions ---------------------------------------------------------

EXECUTION_LEGAL = {
    "pending": {"running", "cancelled", "failed"},
    "running": {"paused", "completed", "failed", "cancelled"},
    "paused": {"running", "cancelled", "failed"},
    "completed": set(),
    "failed": set(),
    "cancelled": set(),
}
STEP_LEGAL = {
    "pending": {"queued", "skipped", "cancelled"},
    "queued": {"running", "cancelled", "skipped"},
    "running": {"completed", "failed", "queued", "timed_out", "cancelled", "waiting"},
    "waiting": {"completed", "failed", "cancelled", "queued"},
    "failed": {"queued", "pending"},
    "timed_out": {"queued", "pending"},
    "completed": set(),
    "skipped": {"queued", "pending"},
    "cancelled": {"queued", "pending"},
}
MEMORY_LEGAL = {
    "candidate": {"active", "deprecated"},
    "active": {"stable", "deprecated"},
    "stable": {"deprecated"},
    "deprecated": set(),
}


def _execution_columns(status: str) -> Row:
    """Timestamps and pause reason consistent with ``status``."""
    started = status in ("running", "paused", "completed", "failed")
    return {
        "status": status,
        "started_at": T0 if started else None,
        "finished_at": T1 if status in ("completed", "failed", "cancelled") else None,
        "pause_reason": "approval" if status == "paused" else None,
    }


def _step_columns(status: str) -> Row:
    """A lease exactly when ``status`` is running."""
    running = status == "running"
    return {
        "status": status,
        "lease_owner": "worker-1" if running else None,
        "lease_expires_at": T1 if running else None,
    }


def _memory_columns(status: str) -> Row:
    return {"status": status}


TRANSITIONS = {
    "workflow_executions": (EXECUTION_LEGAL, _execution_columns),
    "execution_steps": (STEP_LEGAL, _step_columns),
    "memory_items": (MEMORY_LEGAL, _memory_columns),
}


def move(conn: Conn, table: str, row_id: Any, columns: Row) -> None:
    """UPDATE the row to ``columns`` (started_at, once set, is kept)."""
    assignments = [
        sql.SQL("{c} = coalesce({c}, %s)" if column == "started_at" else "{c} = %s").format(
            c=sql.Identifier(column)
        )
        for column in columns
    ]
    query = sql.SQL("UPDATE {} SET {} WHERE id = %s").format(
        sql.Identifier(table), sql.SQL(", ").join(assignments)
    )
    conn.execute(query, [*columns.values(), row_id])


@pytest.mark.parametrize("table", sorted(TRANSITIONS))
def test_status_transitions(conn: Conn, table: str) -> None:
    legal, columns_for = TRANSITIONS[table]
    expected: dict[tuple[str, str], str | None] = {}
    outcomes: dict[tuple[str, str], str | None] = {}
    for old, new in itertools.product(legal, repeat=2):
        allowed = old == new or new in legal[old]
        expected[old, new] = (
            None if allowed else f"illegal {table} status transition: {old} -> {new}"
        )
        with conn.transaction(force_rollback=True):
            row_id = make(conn, table, **columns_for(old))
            try:
                with conn.transaction():
                    move(conn, table, row_id, columns_for(new))
            except psycopg.errors.CheckViolation as exc:
                assert exc.diag.constraint_name == f"{table}_status_transition"
                outcomes[old, new] = exc.diag.message_primary
            else:
                status_query = sql.SQL("SELECT status FROM {} WHERE id = %s").format(
                    sql.Identifier(table)
                )
                assert scalar(conn, status_query, row_id) == new
                outcomes[old, new] = None
    assert outcomes == expected


# pending: a retry waiting for a slot of its capped workflow.
@pytest.mark.parametrize("again", ["running", "pending"])
def test_a_failed_execution_runs_again_only_as_its_next_attempt(conn: Conn, again: str) -> None:
    row_id = make(conn, "workflow_executions", **_execution_columns("failed"))
    with pytest.raises(psycopg.errors.CheckViolation, match=f"failed -> {again}"):
        with conn.transaction():
            move(conn, "workflow_executions", row_id, {"status": again, "finished_at": None})
    retried = {"status": again, "finished_at": None, "attempt": 2}
    move(conn, "workflow_executions", row_id, retried)
    query = "SELECT status, attempt FROM workflow_executions WHERE id = %s"
    assert conn.execute(query, (row_id,)).fetchone() == (again, 2)


def test_a_step_is_retried_after_failing(conn: Conn) -> None:
    step_id = make(conn, "execution_steps")
    for status in ("queued", "running", "failed", "queued", "running", "completed"):
        move(conn, "execution_steps", step_id, _step_columns(status))
    assert scalar(conn, "SELECT status FROM execution_steps WHERE id = %s", step_id) == "completed"
