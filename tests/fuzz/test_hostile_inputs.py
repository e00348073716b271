"""Inputs a fuzz of the repositories found mishandled, each pinned by a test: the call
raises InvalidInput naming the argument (or, for verify, returns None) and every table is
as it was."""

from __future__ import annotations

import datetime
import math
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from flowledger.database import Database
from flowledger.errors import InvalidInput, translate_error
from flowledger.records.identity import NewUser
from flowledger.records.memory import NewMemoryItem
from flowledger.records.runs import NewLogLine
from flowledger.records.workflows import NewStage, NewWorkflow, RetryPolicy, StagePatch

Conn = psycopg.Connection[Any]
UTC = datetime.UTC
_EAST = datetime.timezone(datetime.timedelta(hours=14))
_WEST = datetime.timezone(datetime.timedelta(hours=-14))
# Python datetimes whose UTC instant is outside years 1..9999: PostgreSQL stores them, but
# they cannot be read back.
BEFORE_YEAR_1 = datetime.datetime(1, 1, 1, 2, tzinfo=_EAST)
AFTER_YEAR_9999 = datetime.datetime(9999, 12, 31, 23, tzinfo=_WEST)


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"k": [value]}
    return value


class Snapshot:
    """Every row of every application table, to compare before and after a call."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        self._sql = " UNION ALL ".join(
            f"SELECT '{t}', coalesce(string_agg(r::text, ',' ORDER BY r::text), '') FROM {t} r"
            for t in tables
        )

    def take(self) -> dict[str, str]:
        return {t: rows for t, rows in self._conn.execute(self._sql).fetchall()}


@pytest.fixture
def snapshot(conn: Conn) -> Snapshot:
    return Snapshot(conn)


@pytest.fixture
def running(db: Database) -> Iterator[dict[str, Any]]:
    """A workflow with one stage, an execution, and its step claimed by worker w."""
    user = db.users.create(user=NewUser(email="ada@example.com", display_name="Ada"))
    wf = db.workflows.create(workflow=NewWorkflow(owner_id=user.id, name="etl"))
    stage = db.stages.add(workflow_id=wf.id, stage=NewStage(name="a", action_ref="core.noop"))
    run = db.executions.start(workflow_id=wf.id)
    yield {"user": user, "workflow": wf, "stage": stage, "execution": run}


def _refused(snapshot: Snapshot, call: Any, argument: str) -> InvalidInput:
    before = snapshot.take()
    with pytest.raises(InvalidInput) as info:
        call()
    assert argument in str(info.value)
    assert snapshot.take() == before
    return info.value


def test_an_infinite_backoff_is_refused_and_the_stage_stays_readable(
    db: Database, snapshot: Snapshot, running: dict[str, Any]
) -> None:
    stage = running["stage"]
    patch = StagePatch(retry_policy=RetryPolicy(backoff_max_seconds=math.inf))
    _refused(
        snapshot,
        lambda: db.stages.update(id=stage.id, patch=patch),
        "retry_policy.backoff_max_seconds",
    )
    assert db.stages.get(id=stage.id).retry_policy == RetryPolicy()
    assert [s.id for s in db.stages.list(workflow_id=running["workflow"].id)] == [stage.id]


@pytest.mark.parametrize(
    "lease", [datetime.timedelta(days=3_000_000), datetime.timedelta(days=2), "30s", None]
)
def test_a_claim_with_an_unreasonable_lease_claims_nothing(
    db: Database, snapshot: Snapshot, running: dict[str, Any], lease: Any
) -> None:
    _refused(snapshot, lambda: db.steps.claim(worker_id="w", lease=lease), "lease")
    [step] = db.steps.list_by_execution(execution_id=running["execution"].id)
    assert (step.status, step.lease_expires_at) == ("queued", None)


def test_a_heartbeat_with_an_unreasonable_lease_keeps_the_lease(
    db: Database, snapshot: Snapshot, running: dict[str, Any]
) -> None:
    [claimed] = db.steps.claim(worker_id="w")
    huge = datetime.timedelta(days=3_000_000)
    _refused(
        snapshot,
        lambda: db.steps.heartbeat(step_id=claimed.id, worker_id="w", attempt=1, lease=huge),
        "lease",
    )
    assert db.steps.get(id=claimed.id).lease_expires_at == claimed.lease_expires_at


def test_a_lease_of_a_day_is_accepted(db: Database, running: dict[str, Any]) -> None:
    [claimed] = db.steps.claim(worker_id="w", lease=datetime.timedelta(days=1))
    assert claimed.lease_expires_at > datetime.datetime.now(UTC) + datetime.timedelta(hours=23)


@pytest.mark.parametrize("expires_at", [BEFORE_YEAR_1, AFTER_YEAR_9999])
def test_an_api_key_expiring_outside_years_1_to_9999_is_refused(
    db: Database, snapshot: Snapshot, running: dict[str, Any], expires_at: datetime.datetime
) -> None:
    user = running["user"]
    _refused(
        snapshot,
        lambda: db.api_keys.issue(user_id=user.id, name="ci", expires_at=expires_at),
        "expires_at",
    )
    assert db.api_keys.list_by_user(user_id=user.id) == []


@pytest.mark.parametrize("expires_at", [BEFORE_YEAR_1, AFTER_YEAR_9999])
def test_a_memory_item_expiring_outside_years_1_to_9999_is_refused(
    db: Database, snapshot: Snapshot, expires_at: datetime.datetime
) -> None:
    item = NewMemoryItem(project="p", kind="decision", content="x", expires_at=expires_at)
    _refused(snapshot, lambda: db.memory_items.create(item=item), "expires_at")


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, {"a": [1, math.nan]}, [{"b": math.inf}]]
)
def test_config_refuses_nan_and_infinity_instead_of_storing_null(
    db: Database, snapshot: Snapshot, value: Any
) -> None:
    _refused(snapshot, lambda: db.config.set(key="scheduler.ratio", value=value), "scheduler.ratio")
    assert db.config.list() == []


def test_nan_in_execution_parameters_is_refused_instead_of_stored_as_null(
    db: Database, snapshot: Snapshot, running: dict[str, Any]
) -> None:
    wf = running["workflow"]
    _refused(
        snapshot,
        lambda: db.executions.start(workflow_id=wf.id, parameters={"ratio": math.nan}),
        "parameters",
    )


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        (_nested(1200), "nested deeper than 100"),
        ({"s": "\ud800"}, "lone surrogate"),
        ({"s": "a\x00b"}, "NUL"),
        ({1: "a"}, "a key is not a string"),
        ({"n": 2**70}, "beyond 64 bits"),
        ({"o": object()}, "has no JSON form"),
    ],
)
def test_json_that_postgresql_cannot_hold_as_given_is_refused(
    db: Database, snapshot: Snapshot, running: dict[str, Any], value: Any, complaint: str
) -> None:
    [claimed] = db.steps.claim(worker_id="w")
    error = _refused(
        snapshot,
        lambda: db.steps.complete(step_id=claimed.id, worker_id="w", attempt=1, outputs=value),
        "outputs",
    )
    assert complaint in str(error)


def test_json_nested_100_deep_is_stored(db: Database) -> None:
    value = _nested(49)  # two levels (an object and a list) per step
    assert db.config.set(key="deep.value", value=value).value == value


def test_an_oversized_api_key_name_is_refused_naming_it(
    db: Database, snapshot: Snapshot, running: dict[str, Any]
) -> None:
    user = running["user"]
    error = _refused(snapshot, lambda: db.api_keys.issue(user_id=user.id, name="n" * 3000), "name")
    assert "at most 255 characters" in str(error)
    assert "already has an API key" not in str(error)


def test_an_index_row_too_large_is_translated_to_invalid_input(
    conn: Conn, running: dict[str, Any]
) -> None:
    # Past the Python bounds (a direct INSERT): what the server says is still not a Conflict.
    with pytest.raises(psycopg.Error) as info:
        conn.execute(
            "INSERT INTO api_keys (user_id, name, prefix, secret_hash) "
            "VALUES (%s, %s, 'abcdefghijkl', decode(repeat('00', 32), 'hex'))",
            (running["user"].id, "".join(chr(0x4E00 + i % 20000) for i in range(1500))),
        )
    error = translate_error(info.value)
    assert isinstance(error, InvalidInput)
    assert error.sqlstate == "54000"
    assert "too large" in str(error)
    assert "api_keys_user_id_name_key" in str(error)
    assert "already has an API key" not in str(error)


@pytest.mark.parametrize(
    ("email", "complaint"),
    [("a\ud800@example.com", "lone surrogate"), ("a\x00@example.com", "NUL")],
)
def test_text_postgresql_cannot_store_is_refused_naming_the_argument(
    db: Database, snapshot: Snapshot, email: str, complaint: str
) -> None:
    error = _refused(
        snapshot, lambda: db.users.create(user=NewUser(email=email, display_name="A")), "email"
    )
    assert complaint in str(error)


def test_log_lines_accept_ids_as_strings(db: Database, running: dict[str, Any]) -> None:
    run = running["execution"]
    [step] = db.steps.list_by_execution(execution_id=run.id)
    line = NewLogLine(step_id=str(step.id), execution_id=str(run.id), message="hi")
    assert db.step_logs.append(lines=[line]) == 1
    [stored] = db.step_logs.list_by_step(step_id=step.id).items
    assert (stored.step_id, stored.execution_id, stored.message) == (step.id, run.id, "hi")


def test_a_bad_log_line_id_is_refused_naming_the_line(
    db: Database, snapshot: Snapshot, running: dict[str, Any]
) -> None:
    run = running["execution"]
    [step] = db.steps.list_by_execution(execution_id=run.id)
    good = NewLogLine(step_id=step.id, execution_id=run.id, message="ok")
    bad = NewLogLine(step_id="nope", execution_id=run.id, message="bad")
    _refused(snapshot, lambda: db.step_logs.append(lines=[good, bad]), "lines[1].step_id")


@pytest.mark.parametrize(
    "secret", [None, 42, b"fl_abc", ["fl_x"], "\ud800", "a\x00", "fl_" + "x" * 5000]
)
def test_verify_returns_none_for_any_input(db: Database, secret: Any) -> None:
    assert db.api_keys.verify(secret=secret) is None


@pytest.mark.parametrize(
    ("since", "until", "argument"),
    [
        (datetime.datetime(2024, 1, 1), datetime.datetime(2025, 1, 1, tzinfo=UTC), "since"),
        (datetime.datetime(2024, 1, 1, tzinfo=UTC), datetime.datetime(2025, 1, 1), "until"),
        ("2024-01-01", datetime.datetime(2025, 1, 1, tzinfo=UTC), "since"),
    ],
)
def test_tool_stats_refuse_naive_datetimes(
    db: Database, since: Any, until: Any, argument: str
) -> None:
    with pytest.raises(InvalidInput, match=f"{argument} must be a timezone-aware datetime"):
        db.tool_executions.stats(since=since, until=until)


@pytest.mark.parametrize(
    "call",
    [
        lambda db: db.executions.list(created_from=datetime.datetime(2024, 1, 1)),
        lambda db: db.executions.find_paused(paused_before=datetime.datetime(2024, 1, 1)),
        lambda db: db.steps.find_pending_retries(now=datetime.datetime(2024, 1, 1)),
        lambda db: db.steps.find_timed_out(now=datetime.datetime(2024, 1, 1)),
        lambda db: db.outbox.prune(older_than=datetime.datetime(2024, 1, 1)),
    ],
)
def test_naive_datetimes_are_refused_everywhere(db: Database, call: Any) -> None:
    with pytest.raises(InvalidInput, match="must be a timezone-aware datetime, got a naive one"):
        call(db)


@pytest.mark.parametrize(
    "older_than", [datetime.timedelta(days=10**8), datetime.timedelta(days=-(10**8)), "1d"]
)
def test_prune_refuses_an_age_beyond_a_century(
    db: Database, snapshot: Snapshot, older_than: Any
) -> None:
    _refused(snapshot, lambda: db.outbox.prune(older_than=older_than), "older_than")
    _refused(snapshot, lambda: db.executions.prune_finished(older_than=older_than), "older_than")
    _refused(snapshot, lambda: db.tool_executions.prune(older_than=older_than), "older_than")


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda db, ids: db.users.create(user=None), "user"),
        (lambda db, ids: db.users.list(limit="5"), "limit"),
        (lambda db, ids: db.users.list(cursor=5), "cursor"),
        (lambda db, ids: db.workflows.list(enabled="yes"), "enabled"),
        (lambda db, ids: db.steps.claim(worker_id=None), "worker_id"),
        (
            lambda db, ids: db.steps.fail(step_id=ids, worker_id="w", attempt=2**40, error="e"),
            "attempt",
        ),
        (lambda db, ids: db.memory_items.touch(ids=None), "memory item id"),
        (
            lambda db, ids: db.memory_modules.add_item(module_id=ids, item_id=ids, position=""),
            "position",
        ),
        (lambda db, ids: db.outbox.relay(handler=None), "handler"),
        (lambda db, ids: db.config.get(key="a.b", type=5, default=None), "type"),
        (lambda db, ids: db.stages.reorder(workflow_id=ids, stage_ids=None), "stage id"),
        (lambda db, ids: db.sessions.deactivate_stale(older_than=None), "older_than"),
    ],
)
def test_wrong_types_raise_invalid_input_naming_the_argument(
    db: Database, snapshot: Snapshot, call: Any, argument: str
) -> None:
    db.config.set(key="a.b", value=1)
    _refused(snapshot, lambda: call(db, uuid.uuid4()), argument)


def test_a_retry_backoff_beyond_a_year_is_refused(
    db: Database, snapshot: Snapshot, running: dict[str, Any]
) -> None:
    policy = RetryPolicy(backoff_base_seconds=1, backoff_max_seconds=31_536_001)
    _refused(
        snapshot,
        lambda: db.stages.update(id=running["stage"].id, patch=StagePatch(retry_policy=policy)),
        "retry_policy.backoff_max_seconds",
    )
    year = RetryPolicy(backoff_base_seconds=1, backoff_max_seconds=31_536_000)
    updated = db.stages.update(id=running["stage"].id, patch=StagePatch(retry_policy=year))
    assert updated.retry_policy == year


def test_text_bounds(db: Database, snapshot: Snapshot, running: dict[str, Any]) -> None:
    wf = running["workflow"]
    [claimed] = db.steps.claim(worker_id="w")
    _refused(
        snapshot,
        lambda: db.steps.fail(step_id=claimed.id, worker_id="w", attempt=1, error="e" * 1_000_001),
        "error must be at most 1,000,000 characters",
    )
    new = NewWorkflow(owner_id=running["user"].id, name="long", description="d " * 50_001)
    _refused(
        snapshot, lambda: db.workflows.create(workflow=new), "description must be at most 100,000"
    )
    _refused(snapshot, lambda: db.sessions.open(client_id="c" * 256), "client_id")
    assert db.sessions.open(client_id="c" * 255).client_id == "c" * 255
    assert db.workflows.get(id=wf.id).description == ""


def test_lists_hold_at_most_10000_items(db: Database, snapshot: Snapshot) -> None:
    ids = [uuid.uuid4() for _ in range(10_001)]
    _refused(snapshot, lambda: db.memory_items.touch(ids=ids), "at most 10,000")
    assert db.memory_items.touch(ids=ids[:10_000]) == 0


def test_ids_may_come_from_any_iterable_but_a_string(db: Database) -> None:
    item, _ = db.memory_items.create(item=NewMemoryItem(project="p", kind="decision", content="x"))
    both: list[uuid.UUID | str] = [item.id, str(item.id)]
    assert db.memory_items.touch(ids=(i for i in both)) == 1
    with pytest.raises(InvalidInput, match="memory item id must be a list of UUIDs, got str"):
        db.memory_items.touch(ids=str(item.id))


def test_a_deeply_nested_value_where_a_name_belongs_is_refused(db: Database) -> None:
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidInput, match=r"status must be one of .*; got a list of 1 items"):
        db.memory_items.set_status(id=uuid.uuid4(), status=deep)
    with pytest.raises(InvalidInput, match="role must be one of"):
        db.users.list(role=deep)
