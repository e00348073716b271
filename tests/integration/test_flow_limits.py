"""Concurrency and rate limits of stages: the fields, their keys rendered at start, the claim
taking slots and every way out of running giving them back, the wake-up of a freed slot,
and bad input."""

from __future__ import annotations

import datetime
import hashlib
import uuid
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _runs_factories import age_start, expire_lease, make_workflow
from flowledger.database import Database
from flowledger.errors import InvalidInput
from flowledger.records.runs import StepLease
from flowledger.records.workflows import (
    Concurrency,
    NewStage,
    RateLimit,
    RetryPolicy,
    StagePatch,
)

Conn = psycopg.Connection[Any]


def _stage(db: Database, wf: uuid.UUID, name: str, **fields: Any) -> uuid.UUID:
    fields.setdefault("action_ref", "core.noop")
    fields.setdefault("depends_on", [])
    return db.stages.add(workflow_id=wf, stage=NewStage(name=name, **fields)).id


def _keyed(
    db: Database, conn: Conn, limit: int = 2, key: str = "tenant:{tenant}", **more: Any
) -> uuid.UUID:
    wf = make_workflow(conn)
    _stage(db, wf, "work", concurrency=Concurrency(key=key, limit=limit), **more)
    return wf


def _running(conn: Conn, key: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM execution_steps WHERE concurrency_key = %s AND status = 'running'",
        (key,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _held(conn: Conn, key: str) -> int:
    row = conn.execute(
        "SELECT count(step_id) FROM concurrency_slots WHERE key = %s", (key,)
    ).fetchone()
    assert row is not None
    return int(row[0])


# -- the fields -----------------------------------------------------------------------------


def test_a_stage_keeps_its_limits_and_an_edit_makes_a_new_version(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    limits = {
        "concurrency": Concurrency(key="tenant:{tenant}", limit=3),
        "rate_limit": RateLimit(key="api", limit=10, per_seconds=1.5),
    }
    stage_id = _stage(db, wf, "a", **limits)
    stage = db.stages.get(id=stage_id)
    assert (stage.concurrency, stage.rate_limit) == (limits["concurrency"], limits["rate_limit"])
    before = db.workflows.get(id=wf).version
    changed = db.stages.update(
        id=stage_id, patch=StagePatch(concurrency=Concurrency(key="all", limit=1))
    )
    assert changed.concurrency == Concurrency(key="all", limit=1)
    assert changed.rate_limit == limits["rate_limit"]  # UNSET keeps it
    assert db.workflows.get(id=wf).version == before + 1
    cleared = db.stages.update(id=stage_id, patch=StagePatch(concurrency=None, rate_limit=None))
    assert (cleared.concurrency, cleared.rate_limit) == (None, None)
    # What executions pin: the version's snapshot carries the limits.
    snap = conn.execute(
        "SELECT concurrency, rate_limit FROM workflow_version_stages"
        " WHERE workflow_id = %s AND version = %s",
        (wf, before + 1),
    ).fetchone()
    assert snap == ({"key": "all", "limit": 1}, {"key": "api", "limit": 10, "per_seconds": 1.5})


def test_keys_are_rendered_from_the_parameters_once_at_start(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    _stage(
        db,
        wf,
        "a",
        concurrency=Concurrency(key="t:{tenant}/{region}", limit=2),
        rate_limit=RateLimit(key="{tenant}", limit=5, per_seconds=60),
    )
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"tenant": "acme", "region": "eu"}, "t:acme/eu", "acme"),
        ({"tenant": 7}, "t:7/", "7"),  # a missing parameter renders empty
        # A value is text, never a template read again.
        ({"tenant": "{region}", "region": "x"}, "t:{region}/x", "{region}"),
        ({"tenant": {"a": 1}}, 't:{"a": 1}/', '{"a": 1}'),
    ]
    for parameters, concurrency_key, rate_key in cases:
        run = db.executions.start(workflow_id=wf, parameters=parameters)
        row = conn.execute(
            "SELECT concurrency_key, concurrency_limit, rate_key, rate_limit, rate_window"
            " FROM execution_steps WHERE execution_id = %s",
            (run.id,),
        ).fetchone()
        assert row == (concurrency_key, 2, rate_key, 5, datetime.timedelta(seconds=60))
        [step] = db.steps.list_by_execution(execution_id=run.id)
        assert (step.concurrency_key, step.rate_key) == (concurrency_key, rate_key)
    # The slots of each key exist from the start on: limit rows, made once.
    slots = conn.execute(
        "SELECT key, count(*) FROM concurrency_slots GROUP BY key ORDER BY key"
    ).fetchall()
    assert slots == sorted((c, 2) for _, c, _ in cases)
    rates = conn.execute("SELECT count(DISTINCT key), count(*) FROM rate_slots").fetchone()
    assert rates == (4, 20)


def test_a_long_key_is_cut_and_stays_distinct(db: Database, conn: Conn) -> None:
    wf = _keyed(db, conn, key="{tenant}")
    long_a, long_b = "a" * 300, "a" * 299 + "b"
    for tenant in (long_a, long_b):
        db.executions.start(workflow_id=wf, parameters={"tenant": tenant})
    keys = [r[0] for r in conn.execute("SELECT concurrency_key FROM execution_steps ORDER BY id")]
    assert keys == ["a" * 167 + "#" + hashlib.md5(t.encode()).hexdigest() for t in (long_a, long_b)]
    assert all(len(k) == 200 for k in keys)


# -- the claim ------------------------------------------------------------------------------


def test_no_more_steps_of_a_key_run_than_its_limit(db: Database, conn: Conn) -> None:
    wf = _keyed(db, conn, limit=2)
    for tenant in ["a"] * 5 + ["b"] * 3:
        db.executions.start(workflow_id=wf, parameters={"tenant": tenant})
    first = db.steps.claim(worker_id="w1", limit=10)
    assert len(first) == 4
    assert (_running(conn, "tenant:a"), _running(conn, "tenant:b")) == (2, 2)
    assert db.steps.claim(worker_id="w2", limit=10) == []  # both keys are full
    assert (_held(conn, "tenant:a"), _held(conn, "tenant:b")) == (2, 2)
    done = next(c for c in first if _key_of(conn, c.id) == "tenant:a")
    db.steps.complete(step_id=done.id, worker_id="w1", attempt=done.attempt)
    [again] = db.steps.claim(worker_id="w2", limit=10)
    assert _key_of(conn, again.id) == "tenant:a"
    assert (_running(conn, "tenant:a"), _held(conn, "tenant:a")) == (2, 2)


def _key_of(conn: Conn, step_id: uuid.UUID) -> str:
    row = conn.execute(
        "SELECT concurrency_key FROM execution_steps WHERE id = %s", (step_id,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_steps_of_a_full_key_do_not_hold_back_the_steps_behind_them(
    db: Database, conn: Conn
) -> None:
    keyed = _keyed(db, conn, limit=1, key="one")
    plain = make_workflow(conn)
    _stage(db, plain, "free")
    for _ in range(6):
        db.executions.start(workflow_id=keyed)
    for _ in range(3):
        db.executions.start(workflow_id=plain)
    [first] = db.steps.claim(worker_id="w", limit=1)
    assert first.task_name == "work"  # the oldest step goes first
    names = sorted(c.task_name for c in db.steps.claim(worker_id="w", limit=3))
    assert names == ["free", "free", "free"]


@pytest.mark.parametrize(
    "way",
    [
        "complete",
        "fail",
        "fail_for_good",
        "release",
        "reap",
        "time_out",
        "sleep",
        "wait_for_signal",
        "cancel",
        "prune",
    ],
)
def test_every_way_out_of_running_gives_the_slot_back(db: Database, conn: Conn, way: str) -> None:
    wf = _keyed(
        db, conn, limit=1, key="k", retry_policy=_retries(2 if way != "fail_for_good" else 1)
    )
    runs = [db.executions.start(workflow_id=wf) for _ in range(2)]
    [step] = db.steps.claim(worker_id="w", limit=5)
    assert _held(conn, "k") == 1 and db.steps.claim(worker_id="w", limit=5) == []
    if way == "complete":
        db.steps.complete(step_id=step.id, worker_id="w", attempt=step.attempt)
    elif way in ("fail", "fail_for_good"):
        db.steps.fail(step_id=step.id, worker_id="w", attempt=step.attempt, error="boom")
    elif way == "release":
        db.steps.release_many(
            worker_id="w", steps=[StepLease(step_id=step.id, attempt=step.attempt)]
        )
    elif way == "reap":
        expire_lease(conn, step.id)
        # An expired lease keeps the slot: the step may still be running.
        assert db.steps.claim(worker_id="w2", limit=5) == []
        db.steps.reap()
    elif way == "time_out":
        age_start(conn, step.id, 7200)
        db.steps.reap()
    elif way == "sleep":
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        db.steps.sleep(step_id=step.id, worker_id="w", attempt=step.attempt, until=later)
    elif way == "wait_for_signal":
        db.steps.wait_for_signal(
            step_id=step.id, worker_id="w", attempt=step.attempt, name="approved"
        )
    elif way == "cancel":
        db.executions.cancel(id=step.execution_id)
    else:
        conn.execute("DELETE FROM workflow_executions WHERE id = %s", (step.execution_id,))
    assert (_held(conn, "k"), _running(conn, "k")) == (0, 0)
    [other] = db.steps.claim(worker_id="w2", limit=5)
    assert other.execution_id in {r.id for r in runs}
    assert _held(conn, "k") == 1


def _retries(attempts: int) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, backoff_base_seconds=0, backoff_max_seconds=0)


def test_stages_naming_one_key_share_it_each_up_to_its_own_limit(db: Database, conn: Conn) -> None:
    wide, narrow = make_workflow(conn), make_workflow(conn)
    _stage(db, wide, "b", concurrency=Concurrency(key="k", limit=3), with_items=[1, 2, 3])
    _stage(db, narrow, "a", concurrency=Concurrency(key="k", limit=1))
    db.executions.start(workflow_id=wide)
    wides = db.steps.claim(worker_id="w", limit=5)
    assert len(wides) == 3
    db.executions.start(workflow_id=narrow)
    assert db.steps.claim(worker_id="w", limit=5) == []  # slot 1 is a wide step's
    slot_of = dict(
        conn.execute("SELECT step_id, slot FROM concurrency_slots WHERE key = 'k'").fetchall()
    )
    by_slot = sorted(wides, key=lambda c: slot_of[c.id])
    for step in by_slot[1:]:
        db.steps.complete(step_id=step.id, worker_id="w", attempt=step.attempt)
    assert db.steps.claim(worker_id="w", limit=5) == []  # slots 2 and 3 are above its limit
    db.steps.complete(step_id=by_slot[0].id, worker_id="w", attempt=by_slot[0].attempt)
    [narrow_step] = db.steps.claim(worker_id="w", limit=5)
    assert narrow_step.task_name == "a"


def test_one_claim_gives_the_steps_of_a_key_slots_up_to_their_lowest_limit(
    db: Database, conn: Conn
) -> None:
    wf = make_workflow(conn)
    _stage(db, wf, "narrow", concurrency=Concurrency(key="k", limit=1))
    _stage(db, wf, "wide", concurrency=Concurrency(key="k", limit=3), with_items=[1, 2])
    db.executions.start(workflow_id=wf)
    # Three candidates of one key in one claim: slots up to 1, the lowest limit among them.
    assert len(db.steps.claim(worker_id="w", limit=5)) == 1
    # The next claim's candidates are the wide ones only: slots 2 and 3 are theirs.
    assert sorted(c.task_name for c in db.steps.claim(worker_id="w", limit=5)) == [
        "wide",
        "wide",
    ]


def test_an_execution_keeps_the_limits_of_the_version_it_pinned(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    stage_id = _stage(db, wf, "a", concurrency=Concurrency(key="k", limit=1))
    pinned = [db.executions.start(workflow_id=wf) for _ in range(2)]
    db.stages.update(id=stage_id, patch=StagePatch(concurrency=None))
    [first] = db.steps.claim(worker_id="w", limit=5)  # the pinned version's limit of 1
    assert first.execution_id in {r.id for r in pinned}
    free = db.executions.start(workflow_id=wf)
    [step] = db.steps.claim(worker_id="w", limit=5)
    assert step.execution_id == free.id


def test_a_freed_slot_wakes_a_waiting_worker(db: Database, conn: Conn) -> None:
    wf = _keyed(db, conn, limit=1, key="k")
    for _ in range(2):
        db.executions.start(workflow_id=wf)
    with db.wake_ups() as wake:
        [step] = db.steps.claim(worker_id="w", limit=5)
        while wake.wait(0.05):
            pass
        # The completion queues nothing (one-stage workflow): only the freed slot wakes.
        db.steps.complete(step_id=step.id, worker_id="w", attempt=step.attempt)
        assert wake.wait(5) is True
        assert wake.wait(0.2) is False


def test_rate_limited_steps_start_at_most_limit_per_window(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    # A window long enough that a loaded machine cannot stall the second claim past it.
    _stage(db, wf, "call", rate_limit=RateLimit(key="api", limit=3, per_seconds=1.5))
    for _ in range(7):
        db.executions.start(workflow_id=wf)
    assert len(db.steps.claim(worker_id="w", limit=10)) == 3
    assert db.steps.claim(worker_id="w", limit=10) == []
    conn.execute("SELECT pg_sleep(1.55)")
    assert len(db.steps.claim(worker_id="w", limit=10)) == 3
    used = conn.execute(
        "SELECT count(*) FROM rate_slots WHERE used_at > now() - interval '1 minute'"
    )
    assert used.fetchone() == (3,)


# -- bad input ------------------------------------------------------------------------------


BAD_CONCURRENCY = [
    (Concurrency(key="", limit=1), "concurrency.key must be text with"),
    (Concurrency(key="a{b", limit=1), "concurrency.key must be text with"),
    (Concurrency(key="{Tenant}", limit=1), "concurrency.key must be text with"),
    (Concurrency(key="{1x}", limit=1), "concurrency.key must be text with"),
    (Concurrency(key="x" * 201, limit=1), "concurrency.key must be at most 200 characters"),
    (Concurrency(key="a\x00", limit=1), "concurrency.key must not contain NUL"),
    (Concurrency(key=7, limit=1), "concurrency.key must be a string"),  # type: ignore[arg-type]
    (Concurrency(key="k", limit=0), "concurrency.limit must be between 1 and 10000"),
    (Concurrency(key="k", limit=10_001), "concurrency.limit must be between 1 and 10000"),
    (Concurrency(key="k", limit=True), "concurrency.limit must be an integer"),
    (Concurrency(key="k", limit=2.0), "concurrency.limit must be an integer"),  # type: ignore[arg-type]
    ({"key": "k", "limit": 1}, "concurrency must be a Concurrency or None"),
]
BAD_RATE = [
    (RateLimit(key="k", limit=1, per_seconds=0), "rate_limit.per_seconds must be between 0.001"),
    (
        RateLimit(key="k", limit=1, per_seconds=float("nan")),
        "rate_limit.per_seconds must be between",
    ),
    (RateLimit(key="k", limit=1, per_seconds=1e9), "rate_limit.per_seconds must be between"),
    (RateLimit(key="k", limit=1, per_seconds="1"), "rate_limit.per_seconds must be a number"),  # type: ignore[arg-type]
    (RateLimit(key="k", limit=-1, per_seconds=1), "rate_limit.limit must be between 1 and 10000"),
    (RateLimit(key="}", limit=1, per_seconds=1), "rate_limit.key must be text with"),
    (Concurrency(key="k", limit=1), "rate_limit must be a RateLimit or None"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_CONCURRENCY)
def test_a_bad_concurrency_is_refused_by_name(
    db: Database, conn: Conn, bad: Any, message: str
) -> None:
    wf = make_workflow(conn)
    with pytest.raises(InvalidInput, match=message):
        _stage(db, wf, "a", concurrency=bad)
    stage_id = _stage(db, wf, "b")
    with pytest.raises(InvalidInput, match=message):
        db.stages.update(id=stage_id, patch=StagePatch(concurrency=bad))
    assert db.stages.get(id=stage_id).concurrency is None
    assert [s.name for s in db.stages.list(workflow_id=wf)] == ["b"]


@pytest.mark.parametrize(("bad", "message"), BAD_RATE)
def test_a_bad_rate_limit_is_refused_by_name(
    db: Database, conn: Conn, bad: Any, message: str
) -> None:
    wf = make_workflow(conn)
    with pytest.raises(InvalidInput, match=message):
        _stage(db, wf, "a", rate_limit=bad)
    assert db.stages.list(workflow_id=wf) == []


TEMPLATE_CHARS = st.sampled_from(list("ab{}_-:/ 9Zé\x00"))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.text(TEMPLATE_CHARS, max_size=12), limit=st.integers(-3, 10_003))
def test_any_key_and_limit_are_stored_or_refused_by_name(
    db: Database, conn: Conn, key: str, limit: int
) -> None:
    """What the repository accepts the CHECK accepts too, and what it refuses is refused by
    name, with nothing written."""
    wf = make_workflow(conn)
    try:
        stage_id = _stage(db, wf, "a", concurrency=Concurrency(key=key, limit=limit))
    except InvalidInput as exc:
        assert str(exc).startswith("concurrency.")
        assert db.stages.list(workflow_id=wf) == []
        return
    assert db.stages.get(id=stage_id).concurrency == Concurrency(key=key, limit=limit)
