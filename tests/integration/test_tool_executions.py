"""Tool executions: start, finish, per-tool statistics."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import psycopg
import pytest

from flowledger.database import Database
from flowledger.errors import Conflict, InvalidInput, NotFound

Conn = psycopg.Connection[Any]


def test_start_and_finish(db: Database) -> None:
    call = db.tool_executions.start(tool_name="http.get", input={"url": "https://x"})
    assert (call.status, call.finished_at, call.step_id) == ("running", None, None)

    done = db.tool_executions.finish(id=call.id, output={"status": 200})
    assert (done.status, done.output, done.error) == ("succeeded", {"status": 200}, None)
    assert done.finished_at is not None and done.duration_ms is not None
    assert done.duration_ms >= 0
    assert db.tool_executions.get(id=call.id) == done
    with pytest.raises(Conflict):
        db.tool_executions.finish(id=call.id, error="late")

    failed = db.tool_executions.finish(
        id=db.tool_executions.start(tool_name="http.get", input={}).id, error="timeout"
    )
    assert (failed.status, failed.error, failed.output) == ("failed", "timeout", None)


def test_errors(db: Database) -> None:
    with pytest.raises(InvalidInput):
        db.tool_executions.start(tool_name=" ", input={})
    with pytest.raises(InvalidInput, match=r"step .* does not exist"):
        db.tool_executions.start(tool_name="t", input={}, step_id=uuid.uuid4())
    with pytest.raises(InvalidInput, match=r"session .* does not exist"):
        db.tool_executions.start(tool_name="t", input={}, session_id=uuid.uuid4())
    with pytest.raises(NotFound):
        db.tool_executions.finish(id=uuid.uuid4())
    now = datetime.datetime.now(datetime.UTC)
    with pytest.raises(InvalidInput):
        db.tool_executions.stats(since=now, until=now - datetime.timedelta(seconds=1))


def test_stats_per_tool(db: Database, conn: Conn) -> None:
    since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    for i in range(10):
        call = db.tool_executions.start(tool_name="search", input={"i": i})
        db.tool_executions.finish(id=call.id, error="boom" if i < 2 else None)
        # Known durations (10..100 ms) make the percentiles checkable.
        conn.execute(
            "UPDATE tool_executions SET duration_ms = %s WHERE id = %s", ((i + 1) * 10, call.id)
        )
    db.tool_executions.start(tool_name="search", input={})  # running: not counted
    db.tool_executions.finish(id=db.tool_executions.start(tool_name="calc", input={}).id)
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1)

    calc, search = db.tool_executions.stats(since=since, until=until)

    assert (search.tool_name, search.count, search.failures) == ("search", 10, 2)
    assert search.failure_rate == pytest.approx(0.2)
    assert search.p50_ms == pytest.approx(55.0)
    assert search.p95_ms == pytest.approx(95.5)
    assert (calc.count, calc.failures, calc.failure_rate) == (1, 0, 0.0)
    assert db.tool_executions.stats(since=until, until=until) == []


def test_prune_deletes_calls_finished_before_the_cutoff_in_batches(
    db: Database, conn: Conn
) -> None:
    old = [db.tool_executions.start(tool_name="grep", input={"n": n}) for n in range(5)]
    for call in old[:4]:
        db.tool_executions.finish(id=call.id, output={"ok": True})
    recent = db.tool_executions.finish(id=db.tool_executions.start(tool_name="ls", input={}).id)
    conn.execute(
        "UPDATE tool_executions SET created_at = created_at - interval '3 days',"
        " started_at = started_at - interval '3 days',"
        " finished_at = finished_at - interval '3 days' WHERE id = ANY(%s)",
        ([c.id for c in old],),
    )
    # Started three days ago, finished an hour ago: not old enough.
    conn.execute(
        "UPDATE tool_executions SET finished_at = now() - interval '1 hour' WHERE id = %s",
        (old[3].id,),
    )

    assert db.tool_executions.prune(older_than=datetime.timedelta(days=1), batch=2) == 3

    left = {r[0] for r in conn.execute("SELECT id FROM tool_executions")}
    assert left == {old[3].id, old[4].id, recent.id}  # old[4] is still running
    assert db.tool_executions.prune(older_than=datetime.timedelta(days=1)) == 0
    cutoff = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1)
    assert db.tool_executions.prune(older_than=cutoff) == 2  # never the running call
    assert {r[0] for r in conn.execute("SELECT id FROM tool_executions")} == {old[4].id}


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"older_than": datetime.datetime(2024, 1, 1)}, "older_than"),
        ({"older_than": "1d"}, "older_than"),
        ({"older_than": datetime.timedelta(days=10**8)}, "older_than"),
        ({"older_than": datetime.timedelta(days=1), "batch": 0}, "batch"),
        ({"older_than": datetime.timedelta(days=1), "batch": True}, "batch"),
    ],
)
def test_prune_refuses_bad_input(
    db: Database, conn: Conn, kwargs: dict[str, Any], argument: str
) -> None:
    call = db.tool_executions.finish(id=db.tool_executions.start(tool_name="t", input={}).id)
    conn.execute("UPDATE tool_executions SET created_at = '2001-01-01Z'")
    with pytest.raises(InvalidInput, match=argument):
        db.tool_executions.prune(**kwargs)
    assert db.tool_executions.get(id=call.id).id == call.id
