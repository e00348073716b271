"""Stages repository against a real PostgreSQL: positions stay 0..n-1 through add,
reorder and remove (also concurrently), updates, and every error path."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from _threads import wait_for_a_lock_wait
from flowledger.database import Database, Settings
from flowledger.errors import Conflict, InvalidInput, NotFound
from flowledger.records.identity import NewUser
from flowledger.records.workflows import NewStage, NewWorkflow, RetryPolicy, Stage, StagePatch

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def workflow_id(db: Database) -> uuid.UUID:
    owner = db.users.create(user=NewUser(email="dev@example.com", display_name="Dev"))
    return db.workflows.create(workflow=NewWorkflow(owner_id=owner.id, name="etl")).id


@pytest.fixture
def offline() -> Iterator[Database]:
    """A Database that was never opened: InvalidInput from it proves no SQL was sent."""
    yield Database(Settings(url="postgresql://nobody@localhost:1/none"))


def _stage(name: str, **fields: Any) -> NewStage:
    return NewStage(name=name, action_ref=fields.pop("action_ref", "core.shell"), **fields)


def _add(db: Database, workflow_id: uuid.UUID, *names: str) -> list[Stage]:
    return [db.stages.add(workflow_id=workflow_id, stage=_stage(n)) for n in names]


def _layout(db: Database, workflow_id: uuid.UUID) -> list[tuple[int, str]]:
    return [(s.position, s.name) for s in db.stages.list(workflow_id=workflow_id)]


def _assert_contiguous(db: Database, workflow_id: uuid.UUID) -> None:
    positions = [p for p, _ in _layout(db, workflow_id)]
    assert positions == list(range(len(positions)))


# -- add ------------------------------------------------------------------------------------


def test_add_appends_with_defaults(db: Database, workflow_id: uuid.UUID) -> None:
    first, second = _add(db, workflow_id, "extract", "load")

    assert (first.position, second.position) == (0, 1)
    assert (first.workflow_id, first.name, first.action_ref) == (
        workflow_id,
        "extract",
        "core.shell",
    )
    assert (first.depends_on, first.config, first.with_items) == (None, {}, None)
    assert first.retry_policy == RetryPolicy(
        max_attempts=3, backoff_base_seconds=1, backoff_max_seconds=300
    )
    assert first.timeout_seconds == 3600
    assert db.stages.get(id=first.id) == first
    assert db.stages.list(workflow_id=str(workflow_id)) == [first, second]


def test_add_stores_every_field(db: Database, workflow_id: uuid.UUID) -> None:
    _add(db, workflow_id, "extract")
    policy = RetryPolicy(max_attempts=5, backoff_base_seconds=0.5, backoff_max_seconds=30)

    stage = db.stages.add(
        workflow_id=workflow_id,
        stage=NewStage(
            name="load",
            action_ref="core.http",
            depends_on=["extract"],
            config={"url": "https://example.com", "retries": [1, 2]},
            with_items=[{"shard": 1}, {"shard": 2}],
            retry_policy=policy,
            timeout_seconds=90,
        ),
    )

    assert db.stages.get(id=stage.id) == stage
    assert (stage.depends_on, stage.config) == (
        ["extract"],
        {"url": "https://example.com", "retries": [1, 2]},
    )
    assert (stage.with_items, stage.retry_policy, stage.timeout_seconds) == (
        [{"shard": 1}, {"shard": 2}],
        policy,
        90,
    )


def test_add_at_a_position_shifts_later_stages(db: Database, workflow_id: uuid.UUID) -> None:
    _add(db, workflow_id, "a", "b", "c")

    db.stages.add(workflow_id=workflow_id, stage=_stage("first"), position=0)
    db.stages.add(workflow_id=workflow_id, stage=_stage("middle"), position=2)
    db.stages.add(workflow_id=workflow_id, stage=_stage("last"), position=5)

    assert _layout(db, workflow_id) == [
        (0, "first"),
        (1, "a"),
        (2, "middle"),
        (3, "b"),
        (4, "c"),
        (5, "last"),
    ]


def test_add_beyond_the_end_or_at_a_negative_position(db: Database, workflow_id: uuid.UUID) -> None:
    _add(db, workflow_id, "a")

    with pytest.raises(InvalidInput, match=r"position 2 is beyond the end \(0\.\.1\)"):
        db.stages.add(workflow_id=workflow_id, stage=_stage("b"), position=2)
    with pytest.raises(InvalidInput, match="position must be an integer >= 0"):
        db.stages.add(workflow_id=workflow_id, stage=_stage("b"), position=-1)
    assert _layout(db, workflow_id) == [(0, "a")]


def test_add_of_a_taken_name_is_a_conflict_and_shifts_nothing(
    db: Database, workflow_id: uuid.UUID
) -> None:
    _add(db, workflow_id, "a", "b")

    with pytest.raises(Conflict) as caught:
        db.stages.add(workflow_id=workflow_id, stage=_stage("b"), position=0)

    assert caught.value.message == "a stage named 'b' already exists in this workflow"
    # The shift that made room ran in the same transaction and was rolled back.
    assert _layout(db, workflow_id) == [(0, "a"), (1, "b")]


def test_add_to_an_unknown_workflow(db: Database) -> None:
    ghost = uuid.uuid4()
    with pytest.raises(NotFound, match=f"workflow {ghost} not found"):
        db.stages.add(workflow_id=ghost, stage=_stage("a"))


def test_add_inside_a_rolled_back_transaction_leaves_nothing(
    db: Database, workflow_id: uuid.UUID
) -> None:
    _add(db, workflow_id, "a")

    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.stages.add(workflow_id=workflow_id, stage=_stage("b"), position=0)
        assert [s.name for s in tx.stages.list(workflow_id=workflow_id)] == ["b", "a"]
        raise RuntimeError("abort")

    assert _layout(db, workflow_id) == [(0, "a")]


def test_concurrent_adds_keep_positions_contiguous(db: Database, workflow_id: uuid.UUID) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(5):
                # Half append, half insert at the front: both shift under the workflow lock.
                position = 0 if i % 2 else None
                db.stages.add(workflow_id=workflow_id, stage=_stage(f"s{n}-{i}"), position=position)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len(db.stages.list(workflow_id=workflow_id)) == 30
    _assert_contiguous(db, workflow_id)


@pytest.mark.concurrency
@pytest.mark.parametrize("edit", ["append", "add at the new end", "reorder"])
def test_an_edit_that_waited_for_the_workflow_sees_the_stage_added_meanwhile(
    db: Database, conn: Conn, workflow_id: uuid.UUID, edit: str
) -> None:
    """An edit that waited for the workflow's lock while another transaction added a stage
    counts that stage once it holds the lock: an append lands after it, a position at the
    new end is accepted, and a reorder that omits it is refused."""
    (a,) = _add(db, workflow_id, "a")
    calls: dict[str, Callable[[], object]] = {
        "append": lambda: db.stages.add(workflow_id=workflow_id, stage=_stage("c")),
        "add at the new end": lambda: db.stages.add(
            workflow_id=workflow_id, stage=_stage("c"), position=2
        ),
        "reorder": lambda: db.stages.reorder(workflow_id=workflow_id, stage_ids=[a.id]),
    }
    with ThreadPoolExecutor(1) as pool:
        with db.transaction() as tx:
            tx.stages.add(workflow_id=workflow_id, stage=_stage("b"))
            waiting = pool.submit(calls[edit])
            wait_for_a_lock_wait(conn)
        if edit == "reorder":
            with pytest.raises(InvalidInput, match="exactly the 2 stages"):
                waiting.result(timeout=60)
        else:
            waiting.result(timeout=60)
    names = "abc" if edit != "reorder" else "ab"
    assert _layout(db, workflow_id) == list(enumerate(names))


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        (_stage("Extract"), "stage name 'Extract' must be lowercase"),
        (_stage("a" * 64), "at most 63 characters"),
        (_stage("a", action_ref="  "), "action_ref must not be blank"),
        (_stage("a", depends_on=["a"]), "stage 'a' cannot depend on itself"),
        (_stage("a", depends_on="b"), "depends_on must be a list of stage names"),
        (_stage("a", depends_on=[""]), "depends_on must be a list of stage names"),
        (_stage("a", config=[]), "config must be a JSON object"),
        (_stage("a", with_items={"a": 1}), "with_items must be a list or None"),
        (_stage("a", retry_policy=RetryPolicy(max_attempts=0)), "max_attempts must be an integer"),
        (
            _stage("a", retry_policy=RetryPolicy(backoff_base_seconds=10, backoff_max_seconds=5)),
            "0 <= backoff_base_seconds <= backoff_max_seconds",
        ),
        (_stage("a", retry_policy={"max_attempts": 3}), "retry_policy must be a RetryPolicy"),
        (_stage("a", timeout_seconds=0), "timeout_seconds must be between 1 and"),
        (_stage("a", timeout_seconds=2**31), "timeout_seconds must be between 1 and"),
        (_stage("a", timeout_seconds=1.5), "timeout_seconds must be an integer"),
    ],
)
def test_add_validates_before_any_sql(offline: Database, stage: NewStage, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        offline.stages.add(workflow_id=uuid.uuid4(), stage=stage)


def test_malformed_ids_are_invalid_input(offline: Database) -> None:
    with pytest.raises(InvalidInput, match="workflow id must be a UUID"):
        offline.stages.add(workflow_id="etl", stage=_stage("a"))
    with pytest.raises(InvalidInput, match="workflow id must be a UUID"):
        offline.stages.list(workflow_id="etl")
    with pytest.raises(InvalidInput, match="stage id must be a UUID"):
        offline.stages.get(id="1")
    with pytest.raises(InvalidInput, match="stage id must be a UUID"):
        offline.stages.remove(id="1")
    with pytest.raises(InvalidInput, match="stage id must be a UUID"):
        offline.stages.update(id="1", patch=StagePatch())
    with pytest.raises(InvalidInput, match="stage id must be a UUID"):
        offline.stages.reorder(workflow_id=uuid.uuid4(), stage_ids=["x"])


# -- list and get ---------------------------------------------------------------------------


def test_list_of_an_unknown_workflow_is_empty_and_get_raises(db: Database) -> None:
    assert db.stages.list(workflow_id=uuid.uuid4()) == []
    ghost = uuid.uuid4()
    with pytest.raises(NotFound, match=f"stage {ghost} not found"):
        db.stages.get(id=ghost)


def test_rows_written_elsewhere_decode_their_retry_policy(
    db: Database, workflow_id: uuid.UUID, conn: Conn
) -> None:
    # The column default, and an integral max_attempts written as a JSON float.
    conn.execute(
        "INSERT INTO workflow_stages (workflow_id, position, name, action_ref) "
        "VALUES (%s, 0, 'a', 'core.noop')",
        (workflow_id,),
    )
    conn.execute(
        "INSERT INTO workflow_stages (workflow_id, position, name, action_ref, retry_policy) "
        """VALUES (%s, 1, 'b', 'core.noop', '{"max_attempts": 2.0}')""",
        (workflow_id,),
    )

    a, b = db.stages.list(workflow_id=workflow_id)

    assert a.retry_policy == RetryPolicy()
    assert b.retry_policy == RetryPolicy(max_attempts=2)


# -- reorder --------------------------------------------------------------------------------


def test_reorder_renumbers_in_the_given_order(db: Database, workflow_id: uuid.UUID) -> None:
    a, b, c, d = _add(db, workflow_id, "a", "b", "c", "d")

    moved = db.stages.reorder(workflow_id=workflow_id, stage_ids=[d.id, str(b.id), a.id, c.id])

    assert [(s.position, s.name) for s in moved] == [(0, "d"), (1, "b"), (2, "a"), (3, "c")]
    assert db.stages.list(workflow_id=workflow_id) == moved
    # A stage that kept its place was not touched.
    assert db.stages.get(id=b.id).updated_at == b.updated_at


def test_reorder_of_an_empty_workflow(db: Database, workflow_id: uuid.UUID) -> None:
    assert db.stages.reorder(workflow_id=workflow_id, stage_ids=[]) == []


def test_reorder_requires_exactly_the_workflows_stages(
    db: Database, workflow_id: uuid.UUID
) -> None:
    a, b, c = _add(db, workflow_id, "a", "b", "c")
    owner = db.workflows.get(id=workflow_id).owner_id
    other = db.workflows.create(workflow=NewWorkflow(owner_id=owner, name="other")).id
    [foreign] = _add(db, other, "x")

    for ids in (
        [a.id, b.id],  # one missing
        [a.id, b.id, c.id, foreign.id],  # one extra
        [a.id, b.id, foreign.id],  # right count, wrong stage
        [a.id, b.id, uuid.uuid4()],  # right count, no such stage
    ):
        with pytest.raises(InvalidInput, match="must be exactly the 3 stages of workflow"):
            db.stages.reorder(workflow_id=workflow_id, stage_ids=ids)
    with pytest.raises(InvalidInput, match="must not repeat a stage"):
        db.stages.reorder(workflow_id=workflow_id, stage_ids=[a.id, a.id, b.id])

    # Nothing moved, not even the stages a failed statement had renumbered.
    assert _layout(db, workflow_id) == [(0, "a"), (1, "b"), (2, "c")]
    assert _layout(db, other) == [(0, "x")]


def test_reorder_of_an_unknown_workflow(db: Database) -> None:
    with pytest.raises(NotFound):
        db.stages.reorder(workflow_id=uuid.uuid4(), stage_ids=[])


# -- remove ---------------------------------------------------------------------------------


def test_remove_closes_the_gap(db: Database, workflow_id: uuid.UUID) -> None:
    a, b, c, d = _add(db, workflow_id, "a", "b", "c", "d")

    db.stages.remove(id=b.id)
    assert _layout(db, workflow_id) == [(0, "a"), (1, "c"), (2, "d")]
    db.stages.remove(id=str(a.id))
    db.stages.remove(id=d.id)
    assert _layout(db, workflow_id) == [(0, "c")]

    with pytest.raises(NotFound, match=f"stage {b.id} not found"):
        db.stages.remove(id=b.id)
    db.stages.remove(id=c.id)
    assert _layout(db, workflow_id) == []


def test_mixed_edits_keep_positions_contiguous(db: Database, workflow_id: uuid.UUID) -> None:
    stages = _add(db, workflow_id, "a", "b", "c", "d", "e")
    db.stages.remove(id=stages[2].id)
    db.stages.add(workflow_id=workflow_id, stage=_stage("f"), position=1)
    current = db.stages.list(workflow_id=workflow_id)
    db.stages.reorder(workflow_id=workflow_id, stage_ids=[s.id for s in reversed(current)])
    db.stages.remove(id=stages[0].id)

    assert _layout(db, workflow_id) == [(0, "e"), (1, "d"), (2, "b"), (3, "f")]


# -- update ---------------------------------------------------------------------------------


def test_update_changes_only_the_set_fields(db: Database, workflow_id: uuid.UUID) -> None:
    _add(db, workflow_id, "extract")
    stage = db.stages.add(
        workflow_id=workflow_id, stage=_stage("load", config={"a": 1}, with_items=[1, 2])
    )
    policy = RetryPolicy(max_attempts=7, backoff_base_seconds=2, backoff_max_seconds=20)

    updated = db.stages.update(
        id=stage.id,
        patch=StagePatch(
            action_ref="core.http",
            depends_on=["extract"],
            config={"b": 2},
            retry_policy=policy,
            timeout_seconds=60,
        ),
    )

    assert (updated.action_ref, updated.depends_on, updated.config) == (
        "core.http",
        ["extract"],
        {"b": 2},
    )
    assert (updated.retry_policy, updated.timeout_seconds) == (policy, 60)
    assert (updated.name, updated.position, updated.with_items) == ("load", 1, [1, 2])
    assert updated.updated_at >= stage.updated_at
    assert db.stages.get(id=stage.id) == updated


def test_update_sets_and_clears_with_items(db: Database, workflow_id: uuid.UUID) -> None:
    [stage] = _add(db, workflow_id, "fan")

    fanned = db.stages.update(id=stage.id, patch=StagePatch(with_items=["x", "y"]))
    kept = db.stages.update(id=stage.id, patch=StagePatch(timeout_seconds=5))
    cleared = db.stages.update(id=stage.id, patch=StagePatch(with_items=None))

    assert (fanned.with_items, kept.with_items, cleared.with_items) == (
        ["x", "y"],
        ["x", "y"],
        None,
    )
    assert db.stages.update(id=stage.id, patch=StagePatch()) == cleared


def test_update_errors(db: Database, workflow_id: uuid.UUID) -> None:
    [stage] = _add(db, workflow_id, "a")
    ghost = uuid.uuid4()

    with pytest.raises(NotFound, match=f"stage {ghost} not found"):
        db.stages.update(id=ghost, patch=StagePatch(timeout_seconds=5))
    # Depending on itself is caught by workflow_stages_depends_on_check.
    with pytest.raises(InvalidInput, match="a stage cannot depend on itself") as caught:
        db.stages.update(id=stage.id, patch=StagePatch(depends_on=["a"]))
    assert caught.value.constraint == "workflow_stages_depends_on_check"
    assert db.stages.get(id=stage.id) == stage


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (StagePatch(action_ref=""), "action_ref must not be blank"),
        (StagePatch(depends_on=[""]), "depends_on must be a list"),
        (StagePatch(config=[]), "config must be a JSON object"),  # type: ignore[arg-type]
        (StagePatch(with_items="x"), "with_items must be a list or None"),  # type: ignore[arg-type]
        (StagePatch(retry_policy=RetryPolicy(max_attempts=-1)), "max_attempts"),
        (StagePatch(timeout_seconds=-5), "timeout_seconds must be between"),
    ],
)
def test_update_validates_before_any_sql(
    offline: Database, patch: StagePatch, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        offline.stages.update(id=uuid.uuid4(), patch=patch)
