"""Schedules against a real PostgreSQL: the schedule rows the workflows' triggers keep,
firing due ticks (once each, also with 8 schedulers at once), the catch-up policies after
downtime, ticks of disabled workflows, rules that cannot be evaluated, and bad input."""

from __future__ import annotations

import collections
import datetime
import logging
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

from flowledger.database import Database
from flowledger.errors import InvalidCursor, InvalidInput, NotFound
from flowledger.records.identity import NewUser
from flowledger.records.schedules import FiredTick
from flowledger.records.workflows import NewStage, NewWorkflow, Workflow, WorkflowPatch
from flowledger.repositories.schedules import idempotency_key
from flowledger.tools.migrate import Migrator

Conn = psycopg.Connection[tuple[Any, ...]]
UTC = datetime.UTC
MINUTE = datetime.timedelta(minutes=1)


@pytest.fixture
def owner_id(db: Database) -> uuid.UUID:
    return db.users.create(user=NewUser(email="ops@example.com", display_name="Ops")).id


def _scheduled(
    db: Database, owner_id: uuid.UUID, name: str = "nightly", rule: str = "*/5 * * * *"
) -> Workflow:
    wf = db.workflows.create(
        workflow=NewWorkflow(
            owner_id=owner_id, name=name, status="active", trigger_type="schedule", schedule=rule
        )
    )
    db.stages.add(workflow_id=wf.id, stage=NewStage(name="run", action_ref="core.noop"))
    return wf


def _first_tick(db: Database, wf: Workflow) -> datetime.datetime:
    """Plan the workflow's schedule (a pass at the moment its rule was set fires nothing)
    and return its first tick."""
    schedule = db.schedules.get(workflow_id=wf.id)
    assert db.schedules.fire_due(now=schedule.rule_set_at) == []
    planned = db.schedules.get(workflow_id=wf.id).next_fire_at
    assert planned is not None and planned > schedule.rule_set_at
    return planned


def _plan_all(db: Database, workflows: list[Workflow]) -> dict[uuid.UUID, datetime.datetime]:
    """Plan several schedules in one pass (at the moment the first rule was set, so no
    tick is due yet) and return each first tick."""
    now = min(db.schedules.get(workflow_id=wf.id).rule_set_at for wf in workflows)
    assert db.schedules.fire_due(now=now) == []
    planned = {wf.id: db.schedules.get(workflow_id=wf.id).next_fire_at for wf in workflows}
    return {workflow_id: tick for workflow_id, tick in planned.items() if tick is not None}


def _version(db: Database, wf: Workflow) -> int:
    return db.workflows.get(id=wf.id).row_version


def _keys(db: Database, workflow_id: uuid.UUID) -> list[str]:
    page = db.executions.list(workflow_id=workflow_id, limit=500)
    return sorted(e.idempotency_key or "" for e in page.items)


def _key(tick: datetime.datetime) -> str:
    return idempotency_key(tick)


# -- the rows the triggers keep ---------------------------------------------------------


def test_a_scheduled_workflow_gets_a_schedule_and_a_manual_one_none(
    db: Database, owner_id: uuid.UUID
) -> None:
    wf = _scheduled(db, owner_id)
    manual = db.workflows.create(workflow=NewWorkflow(owner_id=owner_id, name="manual"))

    schedule = db.schedules.get(workflow_id=wf.id)

    assert (schedule.workflow_id, schedule.rule, schedule.catch_up, schedule.max_catch_up) == (
        wf.id,
        "*/5 * * * *",
        "latest",
        10,
    )
    assert (schedule.next_fire_at, schedule.last_fired_at, schedule.error) == (None, None, None)
    with pytest.raises(NotFound, match=f"workflow {manual.id} has no schedule"):
        db.schedules.get(workflow_id=manual.id)
    assert [s.workflow_id for s in db.schedules.list().items] == [wf.id]


def test_a_changed_rule_is_planned_afresh_and_a_dropped_one_removes_the_schedule(
    db: Database, owner_id: uuid.UUID
) -> None:
    wf = _scheduled(db, owner_id)
    _first_tick(db, wf)
    db.schedules.set_policy(workflow_id=wf.id, catch_up="all", max_catch_up=3)

    changed = db.workflows.update(
        id=wf.id, patch=WorkflowPatch(schedule="0 * * * *"), expected_version=_version(db, wf)
    )

    schedule = db.schedules.get(workflow_id=wf.id)
    assert (schedule.rule, schedule.next_fire_at) == ("0 * * * *", None)
    assert (schedule.catch_up, schedule.max_catch_up) == ("all", 3)  # the policy stays
    assert _first_tick(db, wf).minute == 0
    db.workflows.update(
        id=wf.id, patch=WorkflowPatch(trigger_type="manual"), expected_version=changed.row_version
    )
    with pytest.raises(NotFound):
        db.schedules.get(workflow_id=wf.id)


# -- firing -----------------------------------------------------------------------------


def test_a_due_tick_starts_one_execution_and_the_schedule_moves_on(
    db: Database, owner_id: uuid.UUID
) -> None:
    wf = _scheduled(db, owner_id)
    tick = _first_tick(db, wf)
    assert db.schedules.fire_due(now=tick - datetime.timedelta(seconds=1)) == []

    fired = db.schedules.fire_due(now=tick)

    assert [(f.workflow_id, f.tick) for f in fired] == [(wf.id, tick)]
    execution = fired[0].execution
    assert (execution.workflow_id, execution.idempotency_key, execution.status) == (
        wf.id,
        f"schedule:{tick:%Y-%m-%dT%H:%M:%SZ}",
        "running",
    )
    assert db.executions.get(id=execution.id) == execution
    schedule = db.schedules.get(workflow_id=wf.id)
    assert (schedule.last_fired_at, schedule.next_fire_at) == (tick, tick + 5 * MINUTE)
    assert db.schedules.next_fire_at() == tick + 5 * MINUTE
    # The same moment again, and any moment before the next tick: nothing more.
    assert db.schedules.fire_due(now=tick) == []
    assert db.schedules.fire_due(now=tick + 4 * MINUTE) == []
    assert _keys(db, wf.id) == [_key(tick)]


def test_the_latest_policy_fires_only_the_last_missed_tick(
    db: Database, owner_id: uuid.UUID
) -> None:
    wf = _scheduled(db, owner_id)
    tick = _first_tick(db, wf)

    # A scheduler back after an hour and a half of downtime.
    fired = db.schedules.fire_due(now=tick + 92 * MINUTE)

    assert [f.tick for f in fired] == [tick + 90 * MINUTE]
    assert db.schedules.get(workflow_id=wf.id).next_fire_at == tick + 95 * MINUTE
    assert _keys(db, wf.id) == [_key(tick + 90 * MINUTE)]


def test_the_all_policy_fires_every_missed_tick_up_to_its_cap(
    db: Database, owner_id: uuid.UUID
) -> None:
    capped, uncapped = _scheduled(db, owner_id, "capped"), _scheduled(db, owner_id, "uncapped")
    db.schedules.set_policy(workflow_id=capped.id, catch_up="all", max_catch_up=4)
    db.schedules.set_policy(workflow_id=uncapped.id, catch_up="all", max_catch_up=1000)
    first = _plan_all(db, [capped, uncapped])
    now = max(first.values()) + 60 * MINUTE

    fired = db.schedules.fire_due(now=now)

    ticks: dict[uuid.UUID, list[datetime.datetime]] = collections.defaultdict(list)
    for f in fired:
        ticks[f.workflow_id].append(f.tick)
    every = [first[uncapped.id] + 5 * MINUTE * n for n in range(13)]
    every = [t for t in every if t <= now]
    assert ticks[uncapped.id] == every
    # The cap keeps the most recent ones; the older are skipped.
    assert ticks[capped.id] == [t for t in every if t >= first[capped.id]][-4:]
    assert [f.tick for f in fired] == sorted(f.tick for f in fired)
    assert _keys(db, uncapped.id) == sorted(_key(t) for t in every)
    assert db.schedules.fire_due(now=now) == []


def test_ticks_of_a_disabled_or_draft_workflow_pass_unfired(
    db: Database, owner_id: uuid.UUID
) -> None:
    wf = _scheduled(db, owner_id)
    tick = _first_tick(db, wf)
    db.schedules.set_policy(workflow_id=wf.id, catch_up="all")
    db.workflows.update(
        id=wf.id, patch=WorkflowPatch(enabled=False), expected_version=_version(db, wf)
    )

    assert db.schedules.fire_due(now=tick + 10 * MINUTE) == []
    assert db.schedules.get(workflow_id=wf.id).next_fire_at == tick + 15 * MINUTE
    db.workflows.update(
        id=wf.id,
        patch=WorkflowPatch(enabled=True, status="draft"),
        expected_version=_version(db, wf),
    )
    assert db.schedules.fire_due(now=tick + 15 * MINUTE) == []
    db.workflows.update(
        id=wf.id, patch=WorkflowPatch(status="active"), expected_version=_version(db, wf)
    )
    # Back to enabled and active: the next tick fires, the passed ones never do.
    assert [f.tick for f in db.schedules.fire_due(now=tick + 20 * MINUTE)] == [tick + 20 * MINUTE]
    assert _keys(db, wf.id) == [_key(tick + 20 * MINUTE)]
    db.workflows.archive(id=wf.id, expected_version=_version(db, wf))
    assert db.schedules.fire_due(now=tick + 30 * MINUTE) == []
    assert db.schedules.get(workflow_id=wf.id).next_fire_at == tick + 35 * MINUTE


def test_the_database_clock_is_the_default_now(db: Database, owner_id: uuid.UUID) -> None:
    wf = _scheduled(db, owner_id, rule="* * * * * *")  # every second
    rule_set_at = db.schedules.get(workflow_id=wf.id).rule_set_at
    time.sleep(1.2)

    fired = db.schedules.fire_due()

    assert [f.workflow_id for f in fired] == [wf.id]
    assert rule_set_at < fired[0].tick <= datetime.datetime.now(UTC)


def test_a_rule_that_cannot_be_evaluated_stops_its_schedule_and_says_why(
    db: Database, owner_id: uuid.UUID, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    wf = _scheduled(db, owner_id)
    healthy = _scheduled(db, owner_id, "healthy")
    tick = _first_tick(db, healthy)
    # Written around the repository (as before rules were evaluated when written).
    conn.execute("UPDATE workflows SET schedule = '61 * * * *' WHERE id = %s", (wf.id,))

    with caplog.at_level(logging.WARNING, logger="flowledger.engine"):
        fired = db.schedules.fire_due(now=tick)

    assert [f.workflow_id for f in fired] == [healthy.id]
    broken = db.schedules.get(workflow_id=wf.id)
    assert broken.next_fire_at is None
    assert broken.error == "cron rule '61 * * * *' cannot be evaluated: Bad minute"
    assert f"schedule of workflow {wf.id} stopped" in caplog.text
    assert db.schedules.fire_due(now=tick + 60 * MINUTE)[0].workflow_id == healthy.id
    # A new rule clears the error and plans again.
    db.workflows.update(
        id=wf.id, patch=WorkflowPatch(schedule="@hourly"), expected_version=_version(db, wf)
    )
    assert db.schedules.get(workflow_id=wf.id).error is None
    assert _first_tick(db, wf).minute == 0


def test_list_pages_through_every_schedule(db: Database, owner_id: uuid.UUID) -> None:
    made = [_scheduled(db, owner_id, f"wf{n}").id for n in range(5)]
    db.workflows.create(workflow=NewWorkflow(owner_id=owner_id, name="manual"))

    seen, cursor = [], None
    while True:
        page = db.schedules.list(limit=2, cursor=cursor)
        seen += [s.workflow_id for s in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break

    assert seen == sorted(made)
    with pytest.raises(InvalidCursor):
        db.schedules.list(cursor=db.tasks.list(limit=1).next_cursor or "x")


def test_the_readme_example(db: Database, owner_id: uuid.UUID) -> None:
    wf = db.workflows.create(
        workflow=NewWorkflow(
            owner_id=owner_id,
            name="hourly-sync",
            status="active",
            trigger_type="schedule",
            schedule="@hourly",
        )
    )
    schedule = db.schedules.set_policy(workflow_id=wf.id, catch_up="all", max_catch_up=24)
    assert (schedule.catch_up, schedule.max_catch_up) == ("all", 24)
    tick = _first_tick(db, wf)

    # Two days later: the 24 most recent hourly ticks, oldest first.
    fired = db.schedules.fire_due(now=tick + datetime.timedelta(days=2))

    assert [f.tick for f in fired] == [tick + datetime.timedelta(hours=h) for h in range(25, 49)]
    assert fired[0].execution.idempotency_key == _key(tick + datetime.timedelta(hours=25))


def test_set_policy_and_its_errors(db: Database, owner_id: uuid.UUID, conn: Conn) -> None:
    wf = _scheduled(db, owner_id)

    assert db.schedules.set_policy(workflow_id=wf.id, catch_up="all").catch_up == "all"
    assert db.schedules.set_policy(workflow_id=wf.id, max_catch_up=1000).max_catch_up == 1000
    before = conn.execute("SELECT * FROM workflow_schedules").fetchall()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"catch_up": "some"}, "catch_up"),
        ({"max_catch_up": 0}, "max_catch_up"),
        ({"max_catch_up": 1001}, "max_catch_up"),
        ({"max_catch_up": 2.0}, "max_catch_up"),
        ({"workflow_id": "nope"}, "workflow id"),
    ]
    for arguments, argument in cases:
        with pytest.raises(InvalidInput, match=argument):
            db.schedules.set_policy(**{"workflow_id": wf.id, **arguments})
    with pytest.raises(NotFound):
        db.schedules.set_policy(workflow_id=uuid.uuid4(), catch_up="all")
    assert conn.execute("SELECT * FROM workflow_schedules").fetchall() == before


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ({"now": datetime.datetime(2030, 1, 1)}, "now"),
        ({"now": "2030-01-01T00:00:00Z"}, "now"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": None}, "limit"),
    ],
)
def test_fire_due_refuses_bad_arguments_and_fires_nothing(
    db: Database, owner_id: uuid.UUID, conn: Conn, arguments: dict[str, Any], argument: str
) -> None:
    _first_tick(db, _scheduled(db, owner_id))
    before = conn.execute("SELECT * FROM workflow_schedules").fetchall()
    with pytest.raises(InvalidInput, match=argument):
        db.schedules.fire_due(**arguments)
    assert conn.execute("SELECT * FROM workflow_schedules").fetchall() == before
    assert conn.execute("SELECT count(*) FROM workflow_executions").fetchone() == (0,)


def test_limit_bounds_the_schedules_of_one_pass(db: Database, owner_id: uuid.UUID) -> None:
    workflows = [_scheduled(db, owner_id, f"wf{n}") for n in range(3)]
    last = max(_plan_all(db, workflows).values())

    first_pass = db.schedules.fire_due(now=last, limit=2)
    second_pass = db.schedules.fire_due(now=last, limit=2)

    assert (len(first_pass), len(second_pass)) == (2, 1)
    assert {f.workflow_id for f in first_pass + second_pass} == {wf.id for wf in workflows}


@pytest.mark.concurrency
def test_eight_schedulers_at_once_fire_every_tick_exactly_once(
    db: Database, owner_id: uuid.UUID, conn: Conn
) -> None:
    """8 schedulers (threads, each call on a pooled connection of its own) advance through
    40 minutes of a per-minute rule of 3 workflows, each at its own pace: every tick
    starts exactly one execution, and the ticks the calls report are exactly those."""
    workflows = [_scheduled(db, owner_id, f"wf{n}", rule="* * * * *") for n in range(3)]
    for wf in workflows:
        db.schedules.set_policy(workflow_id=wf.id, catch_up="all", max_catch_up=1000)
    first = _plan_all(db, workflows)
    start = max(first.values())
    end = start + 40 * MINUTE
    barrier = threading.Barrier(8)
    reported: list[FiredTick] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def scheduler(n: int) -> None:
        barrier.wait()
        try:
            # Each scheduler steps through time at its own stride, so they overlap.
            now = start
            while now < end:
                now = min(end, now + (1 + n % 3) * MINUTE)
                fired = db.schedules.fire_due(now=now)
                with lock:
                    reported.extend(fired)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=scheduler, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    expected = {
        (wf.id, first[wf.id] + k * MINUTE)
        for wf in workflows
        for k in range(int((end - first[wf.id]) / MINUTE) + 1)
    }
    counts = collections.Counter(
        conn.execute("SELECT workflow_id, idempotency_key FROM workflow_executions").fetchall()
    )
    assert set(counts.values()) == {1}
    assert set(counts) == {(w, _key(t)) for w, t in expected}
    assert sorted((f.workflow_id, f.tick) for f in reported) == sorted(expected)


def test_migration_0019_gives_workflows_scheduled_before_it_a_schedule(empty_db_url: str) -> None:
    with Migrator(empty_db_url) as mig:
        mig.apply(to="0018_create_tasks")
    with psycopg.connect(empty_db_url, autocommit=True) as before:
        before.execute("INSERT INTO users (email, display_name) VALUES ('a@example.com', 'A')")
        before.execute(
            "INSERT INTO workflows (owner_id, name, trigger_type, schedule)"
            " SELECT id, w.name, w.trigger, w.rule FROM users,"
            " (VALUES ('cron', 'schedule', '@daily'), ('manual', 'manual', NULL))"
            " AS w (name, trigger, rule)"
        )
    with Migrator(empty_db_url) as mig:
        mig.apply()
    with psycopg.connect(empty_db_url, autocommit=True) as after:
        rows = after.execute(
            "SELECT w.name, s.next_fire_at FROM workflow_schedules s"
            " JOIN workflows w ON w.id = s.workflow_id"
        ).fetchall()
    assert rows == [("cron", None)]
