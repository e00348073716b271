"""`flowledger demo`: migrate, seed, run one execution with two workers, relay its events."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest

from _runs_factories import add_stage, make_workflow
from flowledger.database import Database, connect
from flowledger.errors import Conflict
from flowledger.records.events import NewEvent
from flowledger.tools.cli import EXIT_ERROR, EXIT_OK, main
from flowledger.tools.demo import WORKERS, run_demo
from flowledger.tools.migrate import Migrator
from flowledger.tools.seed import DEMO_WORKFLOW, SAMPLE_OWNER, seed

# Sync-only code (the worker, the tools): `db` is the sync face only.
pytestmark = pytest.mark.sync_face

Conn = psycopg.Connection[tuple[Any, ...]]


def _demo_workflow_id(db: Database) -> uuid.UUID:
    owner = db.users.get_by_email(email=SAMPLE_OWNER)
    return db.workflows.get_by_name(owner_id=owner.id, name=DEMO_WORKFLOW).id


def test_demo_migrates_an_empty_database_and_prints_the_timeline(
    empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--database", empty_db_url]) == EXIT_OK

    out = capsys.readouterr().out
    assert out.startswith("migrations: applied ")
    assert "sample data: created " in out
    # The failure, the requeue with its backoff, then the retry that completes.
    assert "transform[1]  FAILED attempt 1: ConnectionResetError" in out
    assert "transform[1]  back to queued: retry after a " in out
    assert "transform[1]  claimed attempt 2/3" in out
    assert out.index("FAILED attempt 1") < out.index("claimed attempt 2/3")
    assert "heartbeat: lease extended" in out and "tool http.get succeeded" in out
    assert "main                         execution completed" in out
    # fetch first; load only after the last transform step; notify last.
    assert out.index("fetch         completed") < out.index("transform[0]  claimed")
    assert out.index("transform[1]  completed") < out.index("load          claimed")
    assert out.index("audit         completed") < out.index("notify        claimed")
    assert "order      every attempt started after the steps it depends on completed" in out
    assert set(WORKERS) <= {line.split()[1] for line in out.splitlines() if "claimed" in line}
    assert "execution.started" in out and "execution.completed" in out
    assert "attempts   8 (1 retry)" in out
    with Migrator(empty_db_url) as mig:
        assert {s.state for s in mig.status()} == {"applied"}
    with connect(empty_db_url, min_size=1, max_size=2) as db:
        runs = db.executions.list(workflow_id=_demo_workflow_id(db)).items
    assert [r.status for r in runs] == ["completed"]


def test_demo_json_report_and_rerun(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--database", db_url, "--json"]) == EXIT_OK
    first = json.loads(capsys.readouterr().out)
    assert main(["demo", "--database", db_url, "--json"]) == EXIT_OK
    second = json.loads(capsys.readouterr().out)

    assert first["migrations_applied"] == [] and first["status"] == "completed"
    steps = {(s["task_name"], s["task_index"]): s for s in first["steps"]}
    assert {s["status"] for s in steps.values()} == {"completed"} and len(steps) == 7
    outcomes = [(a["attempt"], a["outcome"]) for a in steps["transform", 1]["attempts"]]
    assert outcomes == [(1, "failed"), (2, "completed")]
    assert (first["attempts"], first["retries"]) == (8, 1)
    assert (first["log_lines"], first["tool_executions"]) == (16, 8)
    assert first["task_graph"] == {
        "fetch": [], "transform": ["fetch"], "audit": ["fetch"], "load": ["transform"],
        "notify": ["load", "audit"],
    }  # fmt: skip
    assert first["in_dependency_order"] is True
    assert {a["worker"] for s in first["steps"] for a in s["attempts"]} <= set(WORKERS)
    events = [e for e in first["events"] if e["aggregate_id"] == first["execution_id"]]
    assert [e["event_type"] for e in events] == ["execution.started", "execution.completed"]
    assert len(first["events"]) > 2  # the seeded executions' events went out too
    assert any("FAILED attempt 1" in t["event"] for t in first["timeline"])
    assert first["seeded"]["executions"] == 10
    # The rerun: nothing seeded, a new execution, only its own two events pending.
    assert second["status"] == "completed" and second["execution_id"] != first["execution_id"]
    assert second["seeded"]["total"] == 0
    assert [e["aggregate_id"] for e in second["events"]] == [second["execution_id"]] * 2
    with connect(db_url, min_size=1, max_size=2) as db:
        runs = db.executions.list(workflow_id=_demo_workflow_id(db)).items
        logs = db.step_logs.list_by_execution(execution_id=second["execution_id"]).items
    assert [r.status for r in runs] == ["completed", "completed"]
    assert len(logs) == 16 and any(line.level == "error" for line in logs)


def test_demo_leaves_other_executions_steps_alone(
    db: Database, db_url: str, conn: Conn, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(db)
    workflow_id = make_workflow(conn)
    add_stage(conn, workflow_id, "work")
    other = db.executions.start(workflow_id=workflow_id)

    assert main(["demo", "--database", db_url]) == EXIT_ERROR

    assert "run the demo on a database of its own" in capsys.readouterr().err
    (step,) = db.steps.list_by_execution(execution_id=other.id)
    assert (step.status, step.attempt, step.lease_owner) == ("queued", 0, None)
    assert db.steps.list_attempts(step_id=step.id) == []
    assert db.executions.list(workflow_id=_demo_workflow_id(db)).items == []


def test_demo_cancels_a_leftover_run_and_keeps_other_events(db: Database) -> None:
    seed(db)
    leftover = db.executions.start(workflow_id=_demo_workflow_id(db))
    foreign = db.outbox.append(
        event=NewEvent(
            aggregate_type="invoice", aggregate_id=uuid.uuid4(), event_type="invoice.paid"
        )
    )
    lines: list[str] = []

    report = run_demo(db, lines.append)

    assert report.status == "completed" and report.cancelled_leftovers == [leftover.id]
    assert db.executions.get(id=leftover.id).status == "cancelled"
    assert any(f"cancelled execution {leftover.id}" in line for line in lines)
    (kept,) = db.outbox.list_by_aggregate(
        aggregate_type="invoice", aggregate_id=foreign.aggregate_id
    )
    assert kept.published_at is None and kept.attempts == 1 and kept.last_error
    assert report.events_left == 1
    delivered = {e.aggregate_id for e in report.events}
    assert {leftover.id, report.execution_id} <= delivered
    assert foreign.aggregate_id not in delivered


def test_demo_stops_when_a_worker_meets_other_work(
    db: Database, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(db)
    workflow_id = make_workflow(conn)
    add_stage(conn, workflow_id, "work")
    started = db.executions.start

    def start_with_a_rival(**kwargs: Any) -> Any:
        # Other work queued ahead of the demo's steps after its start-up check.
        started(workflow_id=workflow_id)
        return started(**kwargs)

    monkeypatch.setattr(db.executions, "start", start_with_a_rival)

    with pytest.raises(Conflict, match="database of its own"):
        run_demo(db, lambda _line: None)

    (demo_run,) = db.executions.list(workflow_id=_demo_workflow_id(db)).items
    assert demo_run.status == "cancelled"
    (rival,) = db.executions.list(workflow_id=workflow_id).items
    (step,) = db.steps.list_by_execution(execution_id=rival.id)
    assert (step.status, step.attempt) == ("queued", 0)
