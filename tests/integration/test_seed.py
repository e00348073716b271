"""The sample-data seeder: what it creates, and that running it again changes nothing."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from flowledger.cli import EXIT_OK, main
from flowledger.database import Database
from flowledger.records.identity import NewUser
from flowledger.seed import SeedReport, seed

Conn = psycopg.Connection[tuple[Any, ...]]
TABLES = ("users", "packs", "actions", "workflows", "workflow_versions", "workflow_stages")


def _snapshot(conn: Conn) -> dict[str, list[Any]]:
    """Every row of the seeded tables, whole, in id order."""
    return {
        table: [r[0] for r in conn.execute(f"SELECT to_jsonb(t) FROM {table} AS t ORDER BY id")]
        for table in TABLES
    }


def test_seed_creates_the_sample_data(db: Database) -> None:
    report = seed(db)

    assert report == SeedReport(
        users=3, packs=1, actions=5, workflows=5, stages=14, definition_changes=5
    )
    assert report.total == 33
    assert report.as_json() == {
        "users": 3,
        "packs": 1,
        "actions": 5,
        "workflows": 5,
        "stages": 14,
        "definition_changes": 5,
        "total": 33,
    }
    roles = {u.email: u.role for u in db.users.list().items}
    assert roles == {
        "admin@example.com": "admin",
        "dev@example.com": "developer",
        "viewer@example.com": "viewer",
    }
    dev = db.users.get_by_email(email="dev@example.com")
    workflows = db.workflows.list(owner_id=dev.id).items
    assert len(workflows) == 5 and len(db.workflows.list().items) == 5
    pack = db.packs.get_by_ref(ref="core")
    actions = {a.ref for a in db.actions.list_by_pack(pack_id=pack.id)}
    assert "core.shell" in actions and len(actions) == 5
    for wf in workflows:
        assert wf.tags, wf.name
        stages = db.stages.list(workflow_id=wf.id)
        assert 2 <= len(stages) <= 4, wf.name
        assert [s.position for s in stages] == list(range(len(stages)))
        assert {s.action_ref for s in stages} <= actions
        versions = db.workflows.versions(workflow_id=wf.id)
        assert [v.version for v in versions] == [1, 2] and wf.version == 2
        assert versions[0].definition != versions[1].definition
    assert len(db.workflows.list_by_pack(pack_id=pack.id).items) == 2
    assert db.workflows.get_by_ref(ref="dev@example.com/nightly-etl").schedule == "0 2 * * *"


def test_seeding_twice_leaves_exactly_the_same_data(db: Database, conn: Conn) -> None:
    seed(db)
    before = _snapshot(conn)

    again = seed(db)

    assert again == SeedReport()
    assert again.total == 0
    assert _snapshot(conn) == before


def test_seed_completes_partial_data_without_duplicates(db: Database, conn: Conn) -> None:
    # The developer exists already (under another display name), one workflow lost a
    # stage, another its second version never happened (as after an interrupted run).
    db.users.create(user=NewUser(email="DEV@example.com", display_name="Someone", role="viewer"))
    seed(db)
    deploy = db.workflows.get_by_ref(ref="dev@example.com/deploy-service")
    db.stages.remove(id=db.stages.list(workflow_id=deploy.id)[1].id)
    conn.execute("DELETE FROM workflows WHERE name = 'weekly-report'")

    report = seed(db)

    assert report == SeedReport(workflows=1, stages=3, definition_changes=1)
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

    assert (first["workflows"], first["total"]) == (5, 33)
    assert second == dict.fromkeys(first, 0)
