"""Plain-INSERT fixtures for the runs tests: users, workflows and stages without repositories."""

from __future__ import annotations

import collections
import json
import uuid
from typing import Any

import psycopg

Conn = psycopg.Connection[Any]


def make_user(conn: Conn) -> uuid.UUID:
    """A new user's id."""
    email = f"u-{uuid.uuid4().hex[:12]}@example.com"
    row = conn.execute(
        "INSERT INTO users (email, display_name) VALUES (%s, 'Test') RETURNING id", (email,)
    ).fetchone()
    assert row is not None
    user_id: uuid.UUID = row[0]
    return user_id


def make_workflow(conn: Conn, owner_id: uuid.UUID | None = None) -> uuid.UUID:
    """A new workflow's id (version 1)."""
    owner = owner_id or make_user(conn)
    name = f"wf-{uuid.uuid4().hex[:12]}"
    row = conn.execute(
        "INSERT INTO workflows (owner_id, name) VALUES (%s, %s) RETURNING id", (owner, name)
    ).fetchone()
    assert row is not None
    workflow_id: uuid.UUID = row[0]
    return workflow_id


def add_stage(
    conn: Conn,
    workflow_id: uuid.UUID,
    name: str,
    *,
    position: int | None = None,
    with_items: list[Any] | None = None,
    max_attempts: int = 3,
    backoff_base_seconds: float = 1,
    backoff_max_seconds: float = 300,
    timeout_seconds: int = 3600,
    config: dict[str, Any] | None = None,
    depends_on: list[str] | None = None,
) -> uuid.UUID:
    """A new stage's id; position defaults to the next free one; depends_on None runs it
    after the stage before it (the default), [] makes it a root."""
    policy = {
        "max_attempts": max_attempts,
        "backoff_base_seconds": backoff_base_seconds,
        "backoff_max_seconds": backoff_max_seconds,
    }
    row = conn.execute(
        """
        INSERT INTO workflow_stages (workflow_id, position, name, action_ref, with_items,
                                     retry_policy, timeout_seconds, config, depends_on)
        VALUES (%(wf)s,
                coalesce(%(pos)s::int, (SELECT count(*) FROM workflow_stages
                                         WHERE workflow_id = %(wf)s)::int),
                %(name)s, 'core.noop', %(items)s::jsonb, %(policy)s::jsonb, %(timeout)s,
                %(config)s::jsonb, %(depends_on)s::text[])
        RETURNING id
        """,
        {
            "wf": workflow_id,
            "pos": position,
            "name": name,
            "items": None if with_items is None else json.dumps(with_items),
            "policy": json.dumps(policy),
            "timeout": timeout_seconds,
            "config": json.dumps(config or {}),
            "depends_on": depends_on,
        },
    ).fetchone()
    assert row is not None
    stage_id: uuid.UUID = row[0]
    return stage_id


def bump_definition(conn: Conn, workflow_id: uuid.UUID) -> None:
    """Change the workflow's definition (its version goes up by one)."""
    conn.execute(
        "UPDATE workflows SET definition = jsonb_build_object('n', version + 1) WHERE id = %s",
        (workflow_id,),
    )


def expire_lease(conn: Conn, step_id: uuid.UUID) -> None:
    """Make a running step's lease already expired."""
    conn.execute(
        "UPDATE execution_steps SET lease_expires_at = now() - interval '1 minute' WHERE id = %s",
        (step_id,),
    )


def age_start(conn: Conn, step_id: uuid.UUID, seconds: int) -> None:
    """Pretend a running step started `seconds` ago."""
    conn.execute(
        "UPDATE execution_steps SET started_at = now() - make_interval(secs => %s) WHERE id = %s",
        (seconds, step_id),
    )


def outbox_events(conn: Conn, aggregate_id: uuid.UUID) -> list[str]:
    """The event types written for one aggregate, oldest first."""
    rows = conn.execute(
        "SELECT event_type FROM outbox WHERE aggregate_id = %s ORDER BY created_at, id",
        (aggregate_id,),
    ).fetchall()
    return [r[0] for r in rows]


def claim_and_flush_stamps(
    conn: Conn, workflow_id: uuid.UUID
) -> tuple[collections.Counter[Any], collections.Counter[Any]]:
    """The steps of a workflow's executions counted by heartbeat_at (the claim's now()) and
    by completed_at (the completion's): the same value in both names one transaction."""
    rows = conn.execute(
        "SELECT s.heartbeat_at, s.completed_at FROM execution_steps s"
        " JOIN workflow_executions e ON e.id = s.execution_id WHERE e.workflow_id = %s",
        (workflow_id,),
    ).fetchall()
    return collections.Counter(r[0] for r in rows), collections.Counter(r[1] for r in rows)
