"""`db.replica` on a real streaming standby of the test server (tests/_standby.py): every
read method answers as on the primary, no write method exists, verify writes nothing,
read-your-writes through wal_position()/wait_for(), and the lag and outage policy."""

from __future__ import annotations

import datetime
import inspect
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg import sql

import flowledger
import flowledger.repositories.registry as repositories_registry
from _faces import blocking, run
from _standby import Standby
from conftest import ReplicaDatabases
from flowledger.database import Database, settings_from_env
from flowledger.errors import (
    ConnectionRejected,
    DatabaseNotConfigured,
    FlowledgerError,
    InvalidInput,
    NotFound,
    ReplicaUnavailable,
    ReplicaWaitTimeout,
    Unavailable,
)
from flowledger.records.identity import NewUser, VerifiedKey
from flowledger.records.memory import NewMemoryItem, NewMemoryModule
from flowledger.records.tasks import NewTask
from flowledger.replica import lsn_of
from flowledger.repositories.registry import ReadRepositories, Repositories
from flowledger.tools.seed import seed

pytestmark = pytest.mark.replica
# For the tests that open databases themselves rather than through `db`/`replica_db`.
FACES = pytest.mark.parametrize("face", ["sync", "async"])
# Seconds a test waits for the standby to replay a write: generous, for a loaded machine.
REPLAY = 60


def _user(n: int) -> NewUser:
    return NewUser(email=f"u{n}-{uuid.uuid4().hex[:8]}@example.com", display_name=f"User {n}")


@pytest.mark.parametrize(("synchronous_commit", "rounds"), [("on", 200), ("off", 25)])
def test_a_write_then_a_read_with_its_position_sees_the_row_every_time(
    replica_dbs: ReplicaDatabases, db_url: str, synchronous_commit: str, rounds: int
) -> None:
    # "on" is PostgreSQL's default. With "off" (the test server's own setting) a commit
    # returns before its WAL is written: the position must still cover it. Each wait then
    # lasts up to wal_writer_delay (200 ms), hence fewer rounds.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET synchronous_commit = {}").format(
                sql.Identifier(conn.info.dbname), sql.Literal(synchronous_commit)
            )
        )
    with replica_dbs.open() as db:
        for n in range(rounds):
            created = db.users.create(user=_user(n))
            position = db.wal_position()
            db.replica.wait_for(position, timeout=REPLAY)
            assert db.replica.users.get(id=created.id) == created


# -- every read method on the replica answers as on the primary -----------------------------

NOW = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
LONG_AGO = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
ABSENT = uuid.UUID(int=1)


class World(msgspec.Struct, kw_only=True):
    """The rows the read calls look up (made through the primary)."""

    dev: Any
    workflow: Any
    stage: Any
    pack: Any
    action: Any
    execution: Any
    step: Any
    key: Any
    session: Any
    item: Any
    module: Any
    memory_pack: Any
    tool: Any
    task: Any


def _populate(url: str, db: Database) -> World:
    with flowledger.connect(url, max_size=2) as sync_db:
        seed(sync_db)
    dev = db.users.get_by_email(email="dev@example.com")
    workflow = db.workflows.get_by_name(owner_id=dev.id, name="nightly-etl")
    pack = db.packs.get_by_ref(ref="core")
    action = db.actions.get_by_ref(ref="core.shell")
    db.actions.link_workflow(action_id=action.id, workflow_id=workflow.id)
    execution = db.executions.list(workflow_id=workflow.id, limit=1).items[0]
    step = db.steps.list_by_execution(execution_id=execution.id)[0]
    session = db.sessions.open(client_id="cli-1", user_id=dev.id)
    db.config.set(key="scheduler.max_workers", value=8)
    item, _ = db.memory_items.create(
        item=NewMemoryItem(project="p", kind="decision", content="use UTC", status="active")
    )
    module = db.memory_modules.create(module=NewMemoryModule(project="p", name="basics"))
    db.memory_modules.add_item(module_id=module.id, item_id=item.id)
    memory_pack = db.memory_packs.build(project="p", module_ids=[module.id], token_budget=100)
    tool = db.tool_executions.start(tool_name="grep", input={"q": "x"}, step_id=step.id)
    db.tool_executions.finish(id=tool.id, output={"hits": 1})
    key = db.api_keys.issue(user_id=dev.id, name="ci").key
    task = db.tasks.create(task=NewTask(title="Write docs", task_type="docs", workspace_path="/w"))
    db.tasks.attach(workflow_id=workflow.id, task_id=task.id)
    return World(
        dev=dev,
        workflow=workflow,
        stage=db.stages.list(workflow_id=workflow.id)[0],
        pack=pack,
        action=action,
        execution=execution,
        step=step,
        key=key,
        session=session,
        item=item,
        module=module,
        memory_pack=memory_pack,
        tool=tool,
        task=task,
    )


Call = Callable[[Any, World], Any]

# Every public read method, by "<repository>.<method>", with the calls that exercise it:
# rows that exist, rows that do not, filters. A new read method fails the coverage test
# below until it is listed here.
READS: dict[str, list[Call]] = {
    "users.get": [lambda r, w: r.users.get(id=w.dev.id), lambda r, w: r.users.get(id=ABSENT)],
    "users.get_by_email": [lambda r, w: r.users.get_by_email(email="ADMIN@example.com")],
    "users.list": [lambda r, w: r.users.list(limit=2), lambda r, w: r.users.list(role="viewer")],
    "api_keys.get": [lambda r, w: r.api_keys.get(id=w.key.id)],
    "api_keys.list_by_user": [lambda r, w: r.api_keys.list_by_user(user_id=w.dev.id)],
    "packs.get": [lambda r, w: r.packs.get(id=w.pack.id)],
    "packs.get_by_ref": [lambda r, w: r.packs.get_by_ref(ref="core")],
    "packs.list": [lambda r, w: r.packs.list(limit=5)],
    "actions.get": [lambda r, w: r.actions.get(id=w.action.id)],
    "actions.get_by_ref": [lambda r, w: r.actions.get_by_ref(ref="core.http")],
    "actions.list_by_pack": [lambda r, w: r.actions.list_by_pack(pack_id=w.pack.id)],
    "actions.list_workflow_actions": [lambda r, w: r.actions.list_workflow_actions()],
    "actions.get_by_workflow": [lambda r, w: r.actions.get_by_workflow(workflow_id=w.workflow.id)],
    "config.get": [
        lambda r, w: r.config.get(key="scheduler.max_workers", type=int),
        lambda r, w: r.config.get(key="scheduler.absent", type=int, default=3),
    ],
    "config.get_entry": [lambda r, w: r.config.get_entry(key="scheduler.max_workers")],
    "config.list": [lambda r, w: r.config.list(prefix="scheduler.")],
    "executions.get": [lambda r, w: r.executions.get(id=w.execution.id)],
    "executions.list": [
        lambda r, w: r.executions.list(limit=3),
        lambda r, w: r.executions.list(workflow_id=w.workflow.id, status="completed"),
    ],
    "executions.find_paused": [lambda r, w: r.executions.find_paused(paused_before=NOW)],
    "executions.progress": [lambda r, w: r.executions.progress(id=w.execution.id)],
    "steps.get": [lambda r, w: r.steps.get(id=w.step.id)],
    "steps.list_by_execution": [
        lambda r, w: r.steps.list_by_execution(execution_id=w.execution.id)
    ],
    "steps.list_attempts": [lambda r, w: r.steps.list_attempts(step_id=w.step.id)],
    "steps.find_by_task_name": [
        lambda r, w: r.steps.find_by_task_name(
            execution_id=w.execution.id, task_name=w.step.task_name
        )
    ],
    "steps.find_by_child_execution": [
        lambda r, w: r.steps.find_by_child_execution(execution_id=w.execution.id)
    ],
    "steps.find_pending_retries": [lambda r, w: r.steps.find_pending_retries(now=NOW)],
    "steps.find_timed_out": [lambda r, w: r.steps.find_timed_out(now=NOW)],
    "outbox.list_by_aggregate": [
        lambda r, w: r.outbox.list_by_aggregate(
            aggregate_type="execution", aggregate_id=w.execution.id
        )
    ],
    "step_logs.list_by_step": [lambda r, w: r.step_logs.list_by_step(step_id=w.step.id)],
    "step_logs.list_by_execution": [
        lambda r, w: r.step_logs.list_by_execution(execution_id=w.execution.id, limit=2)
    ],
    "tool_executions.get": [lambda r, w: r.tool_executions.get(id=w.tool.id)],
    "tool_executions.stats": [lambda r, w: r.tool_executions.stats(since=LONG_AGO, until=NOW)],
    "workflows.get": [lambda r, w: r.workflows.get(id=w.workflow.id)],
    "workflows.get_by_name": [
        lambda r, w: r.workflows.get_by_name(owner_id=w.dev.id, name="invoice-sync")
    ],
    "workflows.get_by_ref": [
        lambda r, w: r.workflows.get_by_ref(ref="dev@example.com/nightly-etl")
    ],
    "workflows.list": [
        lambda r, w: r.workflows.list(owner_id=w.dev.id, sort="name", limit=3),
        lambda r, w: r.workflows.list(search="report"),
    ],
    "workflows.list_by_pack": [lambda r, w: r.workflows.list_by_pack(pack_id=w.pack.id)],
    "workflows.list_enabled": [lambda r, w: r.workflows.list_enabled(limit=2)],
    "workflows.list_by_tag": [lambda r, w: r.workflows.list_by_tag(tag="etl")],
    "workflows.versions": [lambda r, w: r.workflows.versions(workflow_id=w.workflow.id)],
    "workflows.version": [lambda r, w: r.workflows.version(workflow_id=w.workflow.id, version=1)],
    "stages.list": [lambda r, w: r.stages.list(workflow_id=w.workflow.id)],
    "stages.get": [lambda r, w: r.stages.get(id=w.stage.id)],
    "sessions.get": [lambda r, w: r.sessions.get(id=w.session.id)],
    "sessions.get_by_client": [lambda r, w: r.sessions.get_by_client(client_id="cli-1")],
    "sessions.list_active": [lambda r, w: r.sessions.list_active(limit=5)],
    "memory_items.get": [lambda r, w: r.memory_items.get(id=w.item.id)],
    "memory_items.list": [lambda r, w: r.memory_items.list(project="p", status="active")],
    "memory_modules.get": [lambda r, w: r.memory_modules.get(id=w.module.id)],
    "memory_modules.list": [lambda r, w: r.memory_modules.list(project="p")],
    "memory_modules.items": [lambda r, w: r.memory_modules.items(module_id=w.module.id)],
    "memory_packs.get": [lambda r, w: r.memory_packs.get(id=w.memory_pack.id)],
    "memory_packs.list": [lambda r, w: r.memory_packs.list(project="p")],
    # The figures that do not move with the clock between the two reads.
    "metrics": [
        lambda r, w: (
            (m := r.metrics()).executions_by_status,
            m.steps.due,
            m.steps.running,
            m.outbox.backlog,
            m.tools,
        )
    ],
    "step_logs.partitions": [lambda r, w: r.step_logs.partitions()],
    "queues.list": [lambda r, w: r.queues.list()],
    "signals.list_by_execution": [
        lambda r, w: r.signals.list_by_execution(execution_id=w.execution.id)
    ],
    "schedules.get": [
        lambda r, w: r.schedules.get(workflow_id=w.workflow.id),
        lambda r, w: r.schedules.get(workflow_id=ABSENT),
    ],
    "schedules.list": [lambda r, w: r.schedules.list(limit=5)],
    "schedules.next_fire_at": [lambda r, w: r.schedules.next_fire_at()],
    "tasks.get": [lambda r, w: r.tasks.get(id=w.task.id), lambda r, w: r.tasks.get(id=ABSENT)],
    "tasks.list": [lambda r, w: r.tasks.list(limit=5)],
    "tasks.list_by_status": [lambda r, w: r.tasks.list_by_status(status="pending")],
    "tasks.list_by_type": [lambda r, w: r.tasks.list_by_type(task_type="docs")],
    "tasks.list_by_workspace": [lambda r, w: r.tasks.list_by_workspace(workspace_path="/w")],
    "tasks.count_by_status": [lambda r, w: r.tasks.count_by_status()],
    "tasks.list_for_workflow": [lambda r, w: r.tasks.list_for_workflow(workflow_id=w.workflow.id)],
    # Checked on its own below: the primary's verify records the use, the replica's not.
    "api_keys.verify": [],
}


def _read_methods() -> set[str]:
    found = {"metrics"}
    for name, attr in vars(ReadRepositories).items():
        if isinstance(attr, cached_property) and not name.startswith("_"):
            reader = inspect.signature(attr.func).return_annotation
            cls = getattr(repositories_registry, reader)
            found |= {f"{name}.{m}" for m in dir(cls) if not m.startswith("_")}
    return found


def test_the_table_lists_every_read_method_of_the_replica() -> None:
    assert set(READS) == _read_methods()


def _outcome(call: Call, repos: Any, world: World) -> Any:
    try:
        return ("ok", call(repos, world))
    except FlowledgerError as exc:
        return ("error", type(exc), str(exc))


def test_every_read_method_on_the_replica_returns_what_the_primary_returns(
    replica_db: Database, db_url: str
) -> None:
    world = _populate(db_url, replica_db)
    replica_db.replica.wait_for(replica_db.wal_position(), timeout=REPLAY)
    raised = set()
    for name, calls in READS.items():
        for call in calls:
            on_primary = _outcome(call, replica_db, world)
            assert _outcome(call, replica_db.replica, world) == on_primary, name
            if on_primary[0] == "error":
                raised.add((name, on_primary[1]))
    # Every call finds rows but those looking for what does not exist, which raise alike.
    assert raised == {
        ("users.get", NotFound),
        ("steps.find_by_child_execution", NotFound),
        ("schedules.get", NotFound),
        ("tasks.get", NotFound),
    }


def test_a_cursor_of_the_primary_pages_on_the_replica_and_back(replica_db: Database) -> None:
    for n in range(5):
        replica_db.users.create(user=_user(n))
    replica_db.replica.wait_for(replica_db.wal_position(), timeout=REPLAY)
    first = replica_db.users.list(limit=2)
    assert first.next_cursor is not None
    second = replica_db.replica.users.list(limit=2, cursor=first.next_cursor)
    assert second == replica_db.users.list(limit=2, cursor=first.next_cursor)
    assert second.next_cursor is not None
    assert replica_db.users.list(limit=2, cursor=second.next_cursor).items


# -- no write method exists on the replica --------------------------------------------------


def test_no_method_that_writes_exists_on_the_replica(replica_db: Database) -> None:
    replica = replica_db.replica
    for name, attr in vars(Repositories).items():
        if not isinstance(attr, cached_property) or name.startswith("_"):
            continue
        full = inspect.signature(attr.func).return_annotation
        methods = {m for m in dir(getattr(repositories_registry, full)) if not m.startswith("_")}
        readable = {r.partition(".")[2] for r in READS if r.startswith(f"{name}.")}
        for method in sorted(methods - readable):
            with pytest.raises(AttributeError):
                getattr(getattr(replica, name), method)
    with pytest.raises(AttributeError):
        replica.steps.claim  # type: ignore[attr-defined]  # noqa: B018
    for absent in ("transaction", "pinned", "wake_ups", "wal_position", "replica"):
        assert not hasattr(replica, absent), absent


def test_a_type_checker_refuses_a_write_on_the_replica(tmp_path: Path) -> None:
    from mypy import api

    (tmp_path / "service.py").write_text(
        "from flowledger import AsyncDatabase, Database\n\n"
        "def sync_face(db: Database) -> None:\n"
        "    db.replica.users.list()\n"
        "    db.replica.steps.claim(worker_id='w')  # line 5: refused\n\n"
        "async def async_face(db: AsyncDatabase) -> None:\n"
        "    await db.replica.steps.get(id='x')\n"
        "    await db.replica.users.delete(id='x')  # line 9: refused\n"
    )
    out, _, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir=/dev/null", str(tmp_path / "service.py")]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1 and len(errors) == 2, out
    assert "service.py:5:" in errors[0] and '"claim"' in errors[0]
    assert "service.py:9:" in errors[1] and '"delete"' in errors[1]


# -- api_keys.verify on the replica checks and writes nothing --------------------------------


def test_verify_on_the_replica_writes_nothing(replica_db: Database) -> None:
    owner = replica_db.users.create(user=_user(1))
    issued = replica_db.api_keys.issue(user_id=owner.id, name="ci")
    replica_db.replica.wait_for(replica_db.wal_position(), timeout=REPLAY)
    verified = replica_db.replica.api_keys.verify(secret=issued.secret)
    assert verified == VerifiedKey(key=issued.key, user=owner)
    assert verified is not None and verified.key.last_used_at is None
    assert replica_db.replica.api_keys.verify(secret=issued.secret + "x") is None
    assert replica_db.replica.api_keys.verify(secret=None) is None  # type: ignore[arg-type]
    # Nothing was written: the use is not recorded, on the primary either.
    assert replica_db.api_keys.get(id=issued.key.id).last_used_at is None
    # The primary's verify records it, as before.
    on_primary = replica_db.api_keys.verify(secret=issued.secret)
    assert on_primary is not None and on_primary.key.last_used_at is not None


# -- read-your-writes -------------------------------------------------------------------------


def test_a_position_at_a_fresh_wal_segment_is_reached_on_an_idle_primary(
    replica_db: Database, db_url: str
) -> None:
    # Right after a WAL switch the insert position lies past the new segment's page header,
    # where no record exists yet: the standby replays up to the boundary only, and a wait
    # for the raw position would last until the primary next writes.
    hits = 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        for n in range(10):
            replica_db.users.create(user=_user(n))
            conn.execute("SELECT pg_switch_wal()")
            position = replica_db.wal_position()
            if lsn_of(position) % (16 * 1024 * 1024) in (
                0,
                40,
            ):  # at the boundary, or past its header
                hits += 1
                replica_db.replica.wait_for(position, timeout=REPLAY)
    assert hits > 0, "no WAL position at a segment boundary was seen"


def test_wait_for_refuses_a_malformed_position_or_timeout(replica_db: Database) -> None:
    for position in ("", "0/", "zz/1", "0/3000148/1", None, 42):
        with pytest.raises(InvalidInput, match="position"):
            replica_db.replica.wait_for(position)  # type: ignore[arg-type]
    for timeout in (-1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(InvalidInput, match="timeout"):
            replica_db.replica.wait_for("0/0", timeout=timeout)  # type: ignore[arg-type]
    replica_db.replica.wait_for("0/0", timeout=0)  # long replayed: returns at once


@contextmanager
def paused(standby: Standby) -> Iterator[None]:
    """The standby's WAL replay paused in the block (resumed after it, also on failure)."""
    standby.execute("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        standby.execute("SELECT pg_wal_replay_resume()")


def _settled(db: Database) -> None:
    """Wait until the standby is caught up (the test server's background work, such as
    dropping the clone of the test before, replayed)."""
    deadline = time.monotonic() + REPLAY
    while db.replica.status().lag_seconds != 0:
        assert time.monotonic() < deadline, "the standby never caught up"
        time.sleep(0.05)


def test_wait_for_times_out_while_replay_is_paused(replica_db: Database, standby: Standby) -> None:
    with paused(standby):
        created = replica_db.users.create(user=_user(1))
        position = replica_db.wal_position()
        started = time.monotonic()
        with pytest.raises(ReplicaWaitTimeout, match=f"not replayed {position} within 0.3 s"):
            replica_db.replica.wait_for(position, timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 3
    assert issubclass(ReplicaWaitTimeout, ReplicaUnavailable)
    replica_db.replica.wait_for(position, timeout=REPLAY)
    assert replica_db.replica.users.get(id=created.id) == created


# -- the lag bound ------------------------------------------------------------------------------


def test_an_idle_primary_does_not_make_the_replica_look_behind(
    replica_dbs: ReplicaDatabases, standby: Standby
) -> None:
    age_of_last_replayed = (
        "SELECT extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8"
    )
    with replica_dbs.open(replica_max_lag_seconds=0.5, replica_check_seconds=0) as db:
        # Wait (writing nothing) until the last replayed transaction is older than the
        # bound, with nothing left to replay: the test server's own background work (the
        # next test's database being cloned) settles within seconds.
        deadline = time.monotonic() + 60
        while True:
            time.sleep(0.6)
            caught_up = db.replica.status().lag_seconds == 0
            age = standby.execute(age_of_last_replayed)
            if caught_up and (age is None or age > 0.5):
                break
            assert time.monotonic() < deadline, "the standby never settled"
        assert db.replica.users.list().items == []


def test_a_replica_further_behind_than_the_bound_is_refused(
    replica_dbs: ReplicaDatabases, standby: Standby, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flowledger.replica")
    with replica_dbs.open(replica_max_lag_seconds=0.5, replica_check_seconds=0) as db:
        _settled(db)
        assert db.replica.users.list().items == []  # caught up when checked
        with paused(standby):
            created = db.users.create(user=_user(1))
            time.sleep(1.0)
            with pytest.raises(ReplicaUnavailable, match="behind its primary") as raised:
                db.replica.users.list()
            assert "replica_max_lag_seconds=0.5" in str(raised.value)
            assert not isinstance(raised.value, Unavailable)
            status = db.replica.status()  # reports, whatever the bound
            assert status.in_recovery and status.lag_seconds is not None
            assert status.lag_seconds > 0.5
        db.replica.wait_for(db.wal_position(), timeout=REPLAY)
        assert db.replica.users.get(id=created.id) == created
    warnings = [
        r for r in caplog.records if r.name == "flowledger.replica" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1 and "behind its primary" in warnings[0].getMessage()
    assert any("usable again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("found_by", ["a read", "status()"])
def test_a_write_after_a_long_idle_does_not_make_the_replica_look_far_behind(
    replica_dbs: ReplicaDatabases, standby: Standby, db_url: str, found_by: str
) -> None:
    age_of_last_replayed = (
        "SELECT extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8"
    )
    received_not_replayed = "SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()"
    with psycopg.connect(db_url, autocommit=True) as conn:  # the write reaches the standby
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(
                sql.Identifier(conn.info.dbname)
            )
        )
    # The bound leaves the steps below (a pause, a write, its arrival) time to run on a
    # loaded machine; the idle period is longer than it.
    with replica_dbs.open(replica_max_lag_seconds=4, replica_check_seconds=0) as db:
        deadline = time.monotonic() + 60
        while (age := standby.execute(age_of_last_replayed)) is not None and age < 5:
            assert time.monotonic() < deadline, "the primary never went idle"
            time.sleep(0.2)
        if found_by == "a read":
            assert db.replica.users.list().items == []  # its check finds it caught up
        else:
            assert db.replica.status().lag_seconds == 0  # and so does status()
        with paused(standby):
            db.users.create(user=_user(1))
            while not standby.execute(received_not_replayed):
                assert time.monotonic() < deadline, "the write never reached the standby"
                time.sleep(0.01)
            raw = db.replica.status().lag_seconds
            assert raw is None or raw > 4  # the last replayed transaction is that old
            # But the standby was caught up a moment ago: it cannot be further behind.
            assert db.replica.users.list().items == []


def test_read_your_writes_after_a_transaction_block(replica_db: Database) -> None:
    with replica_db.transaction() as tx:
        first = tx.users.create(user=_user(1))
        second = tx.users.create(user=_user(2))
    replica_db.replica.wait_for(replica_db.wal_position(), timeout=REPLAY)
    assert replica_db.replica.users.get(id=first.id) == first
    assert replica_db.replica.users.get(id=second.id) == second


def test_the_lag_is_checked_at_most_every_replica_check_seconds(
    replica_dbs: ReplicaDatabases, standby: Standby
) -> None:
    with replica_dbs.open(replica_max_lag_seconds=0.5, replica_check_seconds=3600) as db:
        _settled(db)
        assert db.replica.users.list().items == []  # the one check of the hour
        with paused(standby):
            db.users.create(user=_user(1))
            time.sleep(1.0)
            # Behind by more than the bound, but no check is due: the read runs (and misses).
            assert db.replica.users.list().items == []


# -- outages ---------------------------------------------------------------------------------


def test_a_stopped_standby_raises_replica_unavailable_until_it_is_back(
    replica_dbs: ReplicaDatabases, standby: Standby, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flowledger.replica")
    with replica_dbs.open(pool_timeout=2, replica_check_seconds=1) as db:
        user = db.users.create(user=_user(1))
        db.replica.wait_for(db.wal_position(), timeout=REPLAY)
        standby.stop()
        try:
            with pytest.raises(ReplicaUnavailable):
                db.replica.users.get(id=user.id)
            started = time.monotonic()
            with pytest.raises(ReplicaUnavailable, match="cannot serve reads"):
                db.replica.users.get(id=user.id)  # known down: refused at once
            assert time.monotonic() - started < 0.5
            with pytest.raises(ReplicaUnavailable):
                db.replica.wait_for(db.wal_position(), timeout=1)
            assert db.users.get(id=user.id) == user  # the primary is not affected
        finally:
            standby.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                assert db.replica.users.get(id=user.id) == user
                break
            except ReplicaUnavailable:
                assert time.monotonic() < deadline, "the replica never came back"
                time.sleep(0.2)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "flowledger.replica" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1 and "cannot serve reads" in warnings[0]
    assert "password" not in warnings[0]


def test_a_connection_lost_under_a_replica_read_raises_replica_unavailable(
    replica_db: Database, standby: Standby, db_url: str
) -> None:
    user = replica_db.users.create(user=_user(1))
    replica_db.replica.wait_for(replica_db.wal_position(), timeout=REPLAY)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            replica_db.replica.users.get(id=user.id)
        except BaseException as exc:
            outcome.append(exc)

    with psycopg.connect(db_url) as locker, psycopg.connect(db_url, autocommit=True) as other:
        # The standby replays the primary's lock, and the replica read waits for it.
        locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        other.execute("SET synchronous_commit = on")
        other.execute("CREATE TEMP TABLE flush_the_wal (i int)")  # a flushed commit
        # Once the standby replayed the lock, the replica read below waits for it.
        replica_db.replica.wait_for(replica_db.wal_position(), timeout=REPLAY)
        reader = threading.Thread(target=read)
        reader.start()
        waiting = "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        deadline = time.monotonic() + 30
        while (pid := standby.execute(waiting)) is None:
            assert time.monotonic() < deadline, "the replica read never waited for the lock"
            time.sleep(0.05)
        standby.execute(f"SELECT pg_terminate_backend({int(pid)})")
        reader.join(timeout=30)
        locker.rollback()
    [error] = outcome
    assert isinstance(error, ReplicaUnavailable), repr(error)
    assert "the connection to it was lost" in str(error)


def test_a_promoted_standby_is_refused(replica_dbs: ReplicaDatabases, standby: Standby) -> None:
    with replica_dbs.open(replica_check_seconds=0) as db:
        _settled(db)  # a standby just rebuilt (by this test's other face) is catching up
        assert db.replica.users.list().items == []
        standby.promote()
        try:
            with pytest.raises(ReplicaUnavailable, match="no longer a standby"):
                db.replica.users.list()
        finally:
            standby.rebuild()


@FACES
def test_a_replica_url_whose_login_is_refused_stops_connect(
    db_url: str, face: str, standby: Standby
) -> None:
    url = standby.url("no_such_database")
    with pytest.raises(ConnectionRejected, match="no_such_database"):
        if face == "sync":
            flowledger.connect(db_url, replica_url=url, connect_attempts=1)
        else:
            run(flowledger.connect_async(db_url, replica_url=url, connect_attempts=1))


# -- configuration ---------------------------------------------------------------------------


@FACES
def test_replica_url_at_a_primary_is_refused_on_connect(db_url: str, face: str) -> None:
    url = db_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    with pytest.raises(InvalidInput, match=r"replica_url .* is not a standby") as raised:
        if face == "sync":
            flowledger.connect(db_url, replica_url=url, connect_attempts=1)
        else:
            run(flowledger.connect_async(db_url, replica_url=url, connect_attempts=1))
    assert "s3cret" not in str(raised.value) and "***" in str(raised.value)
    # Nothing is left open: no connection of the refused database stays on the server.
    with psycopg.connect(db_url, autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND application_name = 'flowledger'"
        ).fetchone()
    assert left == (0,)


def test_without_replica_url_db_replica_raises(db: Database) -> None:
    with pytest.raises(DatabaseNotConfigured, match="FLOWLEDGER_REPLICA_URL"):
        db.replica  # noqa: B018


@FACES
def test_an_unreachable_replica_does_not_stop_connect_and_its_reads_raise(
    db_url: str, face: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flowledger.replica")
    nowhere = f"postgresql://postgres:s3cret@/x?host={tmp_path}&port=1"
    settings: dict[str, Any] = {"replica_url": nowhere, "connect_attempts": 1, "pool_timeout": 1}
    if face == "sync":
        db = flowledger.connect(db_url, **settings)
    else:
        db = blocking(run(flowledger.connect_async(db_url, **settings)), Database)
    try:
        assert db.users.list().items == []
        with pytest.raises(ReplicaUnavailable, match="unreachable"):
            db.replica.users.list()
    finally:
        db.close()
    [warning] = [
        r.getMessage()
        for r in caplog.records
        if r.name == "flowledger.replica" and r.levelno == logging.WARNING
    ]
    assert "unreachable" in warning and "s3cret" not in warning


def test_replica_settings_from_the_environment_and_their_checks() -> None:
    env = {
        "FLOWLEDGER_URL": "postgresql://a@h/db",
        "FLOWLEDGER_REPLICA_URL": "postgresql://app:s3cret@standby/db",
        "FLOWLEDGER_REPLICA_MAX_LAG_SECONDS": "2.5",
        "FLOWLEDGER_REPLICA_CHECK_SECONDS": "0.1",
    }
    s = settings_from_env(env)
    assert (s.replica_url, s.replica_max_lag_seconds, s.replica_check_seconds) == (
        "postgresql://app:s3cret@standby/db",
        2.5,
        0.1,
    )
    assert "s3cret" not in repr(s) and "app:***@standby" in repr(s)
    assert settings_from_env({**env, "FLOWLEDGER_REPLICA_URL": ""}).replica_url is None
    for name, value in (("replica_max_lag_seconds", -1), ("replica_check_seconds", math.nan)):
        with pytest.raises(InvalidInput, match=name):
            settings_from_env(env, **{name: value})
    with pytest.raises(InvalidInput, match="replica_url: malformed") as raised:
        flowledger.connect("postgresql://a@h/db", replica_url="postgresql://app:s3cret@h:x/db")
    assert "s3cret" not in str(raised.value)
