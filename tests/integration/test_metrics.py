"""db.metrics(): the step queue, executions per status, steps per status (estimated),
the outbox backlog and per-tool failure rates, on both faces, and their Prometheus form."""

from __future__ import annotations

import datetime
from typing import Any

import psycopg
import pytest

from _runs_factories import add_stage, expire_lease, make_workflow
from flowledger.database import Database
from flowledger.errors import InvalidInput
from flowledger.records.runs import EXECUTION_STATUSES

Conn = psycopg.Connection[Any]


def test_an_empty_engine_reports_zeros(db: Database) -> None:
    m = db.metrics()
    assert (m.steps.due, m.steps.delayed, m.steps.running, m.steps.leases_expired) == (0, 0, 0, 0)
    assert m.steps.oldest_due_seconds is None
    assert set(m.executions_by_status.values()) == {0} and m.tools == []
    assert sorted(m.executions_by_status) == sorted(EXECUTION_STATUSES)
    assert (m.outbox.backlog, m.outbox.oldest_seconds) == (0, None)
    assert "flowledger_steps_due 0\n" in m.prometheus()


def test_metrics_count_what_the_engine_holds(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "only")
    runs = [db.executions.start(workflow_id=wf) for _ in range(6)]
    db.executions.cancel(id=runs[4].id)
    db.executions.cancel(id=runs[5].id)
    [_, expired] = db.steps.claim(worker_id="w", limit=2)
    expire_lease(conn, expired.id)
    conn.execute(
        "UPDATE execution_steps SET available_at = now() + interval '1 hour'"
        " WHERE execution_id = %s",
        (runs[3].id,),
    )
    conn.execute(
        "UPDATE execution_steps SET available_at = now() - interval '30 seconds'"
        " WHERE execution_id = %s",
        (runs[2].id,),
    )
    for tool, error in (("search", None), ("search", "timeout"), ("search", None), ("shell", None)):
        call = db.tool_executions.start(tool_name=tool, input={})
        db.tool_executions.finish(id=call.id, error=error)
    db.tool_executions.start(tool_name="search", input={})  # still running: not counted
    conn.execute("ANALYZE execution_steps")

    m = db.metrics()
    assert (m.steps.due, m.steps.delayed, m.steps.running, m.steps.leases_expired) == (1, 1, 2, 1)
    assert m.steps.oldest_due_seconds is not None and 29 <= m.steps.oldest_due_seconds < 120
    assert m.executions_by_status == {
        "pending": 0, "running": 4, "paused": 0, "completed": 0, "failed": 0, "cancelled": 2
    }  # fmt: skip
    exact = dict(conn.execute("SELECT status, count(*) FROM execution_steps GROUP BY status"))
    # A table this small is sampled whole; each status here is among its common values.
    assert exact == {"cancelled": 2, "queued": 2, "running": 2}
    assert m.steps_by_status_estimated == exact
    unpublished = conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    assert m.outbox.backlog == unpublished.fetchone()[0] > 0  # type: ignore[index]
    assert m.outbox.oldest_seconds is not None and m.outbox.oldest_seconds >= 0
    assert [(t.tool_name, t.calls, t.failures) for t in m.tools] == [
        ("search", 3, 1),
        ("shell", 1, 0),
    ]
    assert m.tools[0].failure_rate == pytest.approx(1 / 3)
    text = m.prometheus()
    for line in (
        "flowledger_steps_due 1",
        "flowledger_steps_delayed 1",
        "flowledger_leases_expired 1",
        'flowledger_executions{status="running"} 4',
        'flowledger_tool_failure_rate{tool="search"} 0.333333',
        "# TYPE flowledger_outbox_backlog gauge",
    ):
        assert line + "\n" in text, line


def test_the_tool_window_is_checked(db: Database) -> None:
    for bad in (datetime.timedelta(0), datetime.timedelta(days=400), 15, None):
        with pytest.raises(InvalidInput, match="tool_window"):
            db.metrics(tool_window=bad)  # type: ignore[arg-type]
    assert db.metrics(tool_window=datetime.timedelta(hours=1)).tool_window_seconds == 3600


def test_flowledger_stats_prints_the_metrics_three_ways(
    db_url: str, conn: Conn, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from flowledger.tools.cli import EXIT_OK, EXIT_USAGE, main

    wf = make_workflow(conn)
    add_stage(conn, wf, "only")
    conn.execute(
        "INSERT INTO workflow_executions (workflow_id, workflow_version, status, started_at)"
        " VALUES (%s, 1, 'paused', now())",
        (wf,),
    )
    assert main(["stats", "--database", db_url]) == EXIT_OK
    text = capsys.readouterr().out
    assert "steps due 0, delayed 0, running 0" in text and "paused 1" in text
    assert main(["stats", "--database", db_url, "--json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["executions_by_status"]["paused"] == 1 and doc["steps"]["due"] == 0
    assert main(["--json", "stats", "--database", db_url, "--tool-window", "60"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["tool_window_seconds"] == 60
    assert main(["stats", "--database", db_url, "--prometheus"]) == EXIT_OK
    assert 'flowledger_executions{status="paused"} 1\n' in capsys.readouterr().out
    assert main(["stats", "--database", db_url, "--prometheus", "--json"]) == EXIT_USAGE


def test_the_scrape_benchmark_runs(db_url: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "metrics_scrape.py"
    done = subprocess.run(
        [sys.executable, str(script), db_url, "--calls", "3"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("db.metrics(): median ")
    assert done.stdout.count(" ms on the server") == 5
