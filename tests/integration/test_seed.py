"""The sample-data seeder: what it creates, and that running it again changes nothing."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import sql

from _runs_factories import add_stage, make_workflow
from flowledger.database import Database
from flowledger.errors import Conflict
from flowledger.records.identity import NewUser
from flowledger.tools.cli import EXIT_OK, main
from flowledger.tools.seed import SeedReport, seed

Conn = psycopg.Connection[tuple[Any, ...]]
TABLES = (
    "users",
    "packs",
    "actions",
    "workflows",
    "workflow_versions",
    "workflow_stages",
    "workflow_executions",
    "execution_steps",
    "step_attempts",
    "step_logs",
    "tool_executions",
    "outbox",
)

# Sync-only code (the worker, the tools): `db` is the sync face only.
pytestmark = pytest.mark.sync_face


def _snapshot(conn: Conn) -> dict[str, list[Any]]:
    """Every row of the seeded tables, whole, in id order."""
    return {
        table: [r[0] for r in conn.execute(f"SELECT to_jsonb(t) FROM {table} AS t ORDER BY id")]
        for table in TABLES
    }


def _row_counts(conn: Conn) -> dict[str, int]:
    """The number of rows of every table of the schema."""
    tables = [
        r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    ]
    assert set(TABLES) <= set(tables)
    counts: dict[str, int] = {}
    for table in tables:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        (counts[table],) = conn.execute(query).fetchall()[0]
    return counts


def test_seed_creates_the_sample_data(db: Database) -> None:
    report = seed(db)

    assert report == SeedReport(
        users=3,
        packs=1,
        actions=5,
        workflows=6,
        stages=19,
        definition_changes=6,
        executions=10,
        steps=31,
        log_lines=25,
    )
    assert report.total == 106
    assert report.as_json() == {
        "users": 3,
        "packs": 1,
        "actions": 5,
        "workflows": 6,
        "stages": 19,
        "definition_changes": 6,
        "executions": 10,
        "steps": 31,
        "log_lines": 25,
        "total": 106,
    }
    roles = {u.email: u.role for u in db.users.list().items}
    assert roles == {
        "admin@example.com": "admin",
        "dev@example.com": "developer",
        "viewer@example.com": "viewer",
    }
    dev = db.users.get_by_email(email="dev@example.com")
    workflows = db.workflows.list(owner_id=dev.id).items
    assert len(workflows) == 6 and len(db.workflows.list().items) == 6
    pack = db.packs.get_by_ref(ref="core")
    actions = {a.ref for a in db.actions.list_by_pack(pack_id=pack.id)}
    assert "core.shell" in actions and len(actions) == 5
    for wf in workflows:
        assert wf.tags, wf.name
        stages = db.stages.list(workflow_id=wf.id)
        assert 2 <= len(stages) <= 5, wf.name
        assert [s.position for s in stages] == list(range(len(stages)))
        assert {s.action_ref for s in stages} <= actions
        # Version 1 at creation, one more per stage added, one for the revised definition.
        versions = db.workflows.versions(workflow_id=wf.id)
        assert [v.version for v in versions] == list(range(1, len(stages) + 3))
        assert wf.version == versions[-1].version
        assert versions[0].definition != versions[-1].definition
    assert len(db.workflows.list_by_pack(pack_id=pack.id).items) == 2
    assert db.workflows.get_by_ref(ref="dev@example.com/nightly-etl").schedule == "0 2 * * *"
    demo = db.stages.list(
        workflow_id=db.workflows.get_by_ref(ref="dev@example.com/demo-pipeline").id
    )
    assert [s.retry_policy.backoff_base_seconds for s in demo] == [0.2] * 5
    assert [(s.name, s.depends_on, s.with_items) for s in demo] == [
        ("fetch", [], None),
        ("transform", ["fetch"], ["orders", "invoices", "refunds"]),
        ("audit", ["fetch"], None),
        ("load", ["transform"], None),
        ("notify", ["load", "audit"], None),
    ]


def test_seed_executions_show_every_state(db: Database, conn: Conn) -> None:
    seed(db)

    executions = db.executions.list(limit=50).items
    by_key = {e.idempotency_key: e for e in executions}
    assert len(executions) == 10 and set(by_key) == {f"seed-{n}" for n in range(1, 11)}
    statuses = {key: e.status for key, e in by_key.items()}
    assert sorted(statuses.values()) == sorted(
        ["completed"] * 5 + ["failed", "cancelled", "paused", "running", "running"]
    )
    for execution in executions:
        steps = db.steps.list_by_execution(execution_id=execution.id)
        logs = db.step_logs.list_by_execution(execution_id=execution.id).items
        assert len(logs) >= 2, execution.idempotency_key
        done = [s for s in steps if s.status == "completed"]
        if execution.status == "completed":
            assert len(done) == len(steps)
        else:  # part-way: the first step ran, the others did not all finish
            assert 1 <= len(done) < len(steps)
        if execution.status == "running":
            # The step after the completed one runs; the ones after it wait for it.
            assert {s.lease_owner for s in steps if s.status == "running"} == {"seed-worker"}
            assert {s.status for s in steps if s not in done} == {"running", "pending"}
    failed = next(e for e in executions if e.status == "failed")
    assert failed.error_message and "gave up" in failed.error_message
    failed_logs = db.step_logs.list_by_execution(execution_id=failed.id).items
    assert [line.level for line in failed_logs].count("error") == 1
    assert (
        next(e for e in executions if e.status == "paused").pause_reason == "waiting for approval"
    )
    # No step is left for the next worker: nothing queued in a running execution.
    due = conn.execute(
        "SELECT count(*) FROM execution_steps s JOIN workflow_executions e"
        " ON e.id = s.execution_id WHERE s.status = 'queued' AND e.status = 'running'"
    ).fetchone()
    assert due == (0,)
    assert db.steps.claim(worker_id="someone") == []


def test_seeding_twice_leaves_exactly_the_same_data(db: Database, conn: Conn) -> None:
    seed(db)
    before = _snapshot(conn)
    counts = _row_counts(conn)

    again = seed(db)

    assert again == SeedReport()
    assert again.total == 0
    assert _row_counts(conn) == counts
    assert _snapshot(conn) == before


def test_seed_completes_partial_data_without_duplicates(db: Database, conn: Conn) -> None:
    # The developer exists already (under another display name), one workflow lost a
    # stage, another its second version never happened (as after an interrupted run).
    db.users.create(user=NewUser(email="DEV@example.com", display_name="Someone", role="viewer"))
    seed(db)
    deploy = db.workflows.get_by_ref(ref="dev@example.com/deploy-service")
    db.stages.remove(id=db.stages.list(workflow_id=deploy.id)[-1].id)
    conn.execute("DELETE FROM workflows WHERE name = 'weekly-report'")

    report = seed(db)

    # weekly-report came back with its two stages and its two executions (gone with it).
    assert report == SeedReport(
        workflows=1, stages=3, definition_changes=1, executions=2, steps=4, log_lines=4
    )
    assert len(_snapshot(conn)["users"]) == 3
    assert [s.name for s in db.stages.list(workflow_id=deploy.id)] == ["build", "test", "rollout"]
    # The pre-existing user was found by email and left as it was.
    assert db.users.get_by_email(email="dev@example.com").display_name == "Someone"
    assert seed(db) == SeedReport()


def test_seed_command_prints_the_report(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["seed", "--database", db_url, "--json"]) == EXIT_OK
    first = json.loads(capsys.readouterr().out)
    assert main(["seed", "--database", db_url, "--json"]) == EXIT_OK
    second = json.loads(capsys.readouterr().out)

    assert (first["workflows"], first["executions"], first["total"]) == (6, 10, 106)
    assert second == dict.fromkeys(first, 0)


def test_seed_refuses_to_claim_other_executions_steps(db: Database, conn: Conn) -> None:
    workflow_id = make_workflow(conn)
    add_stage(conn, workflow_id, "work")
    other = db.executions.start(workflow_id=workflow_id)

    with pytest.raises(Conflict, match="seed-1"):
        seed(db)

    (step,) = db.steps.list_by_execution(execution_id=other.id)
    assert (step.status, step.attempt) == ("queued", 0)
    # The execution being driven rolled back whole; the catalogue before it stays.
    assert [e.id for e in db.executions.list().items] == [other.id]
    assert len(db.workflows.list().items) == 7
