"""Orchestration: stage order and dependencies, pinned stage snapshots, failure propagation,
inputs, variables, progress, retry and child executions."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from _runs_factories import add_stage, age_start, make_workflow, outbox_events
from _threads import wait_for_a_lock_wait
from flowledger.database import Database
from flowledger.errors import Conflict, InvalidInput, LeaseLost, NotFound, StaleWrite
from flowledger.records.catalog import NewAction, NewPack
from flowledger.records.runs import (
    ClaimedStep,
    Execution,
    StartRequest,
    StepCompletion,
    StepFailure,
)
from flowledger.records.workflows import NewStage, RetryPolicy, StagePatch, WorkflowPatch

Conn = psycopg.Connection[Any]


def _claim_all(db: Database, worker: str = "w") -> list[ClaimedStep]:
    return db.steps.claim(worker_id=worker, limit=100)


def _names(claimed: list[ClaimedStep]) -> list[tuple[str, int]]:
    return sorted((c.task_name, c.task_index) for c in claimed)


_BATCHED = {"on": False}


@pytest.fixture(autouse=True, params=["single", "batched"])
def _calls(request: pytest.FixtureRequest) -> None:
    """Every rule holds for the single-step calls and for their batched forms alike."""
    _BATCHED["on"] = request.param == "batched"


def _complete(db: Database, step: ClaimedStep, outputs: Any = None) -> None:
    if not _BATCHED["on"]:
        db.steps.complete(
            step_id=step.id, worker_id=step.lease_owner, attempt=step.attempt, outputs=outputs
        )
        return
    one = StepCompletion(step_id=step.id, attempt=step.attempt, outputs=outputs)
    if db.steps.complete_many(worker_id=step.lease_owner, completions=[one]).lost:
        raise LeaseLost(f"step {step.id}")


def _fail(db: Database, step: ClaimedStep, error: str = "boom") -> None:
    if not _BATCHED["on"]:
        db.steps.fail(
            step_id=step.id, worker_id=step.lease_owner, attempt=step.attempt, error=error
        )
        return
    one = StepFailure(step_id=step.id, attempt=step.attempt, error=error)
    if db.steps.fail_many(worker_id=step.lease_owner, failures=[one]).lost:
        raise LeaseLost(f"step {step.id}")


def _statuses(db: Database, execution: Execution) -> dict[tuple[str, int], str]:
    steps = db.steps.list_by_execution(execution_id=execution.id)
    return {(s.task_name, s.task_index): s.status for s in steps}


def _stage(db: Database, wf: uuid.UUID, name: str, **fields: Any) -> None:
    fields.setdefault("action_ref", "core.noop")
    db.stages.add(workflow_id=wf, stage=NewStage(name=name, **fields))


# -- 1. order ---------------------------------------------------------------------------


def test_stages_run_in_position_order_by_default(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    for name in ("a", "b", "c"):
        add_stage(conn, wf, name)
    ex = db.executions.start(workflow_id=wf)
    assert _statuses(db, ex) == {("a", 0): "queued", ("b", 0): "pending", ("c", 0): "pending"}

    [a] = _claim_all(db)  # one claim of ten returns only what is ready
    assert a.task_name == "a" and _claim_all(db) == []
    _complete(db, a)
    [b] = _claim_all(db)
    assert b.task_name == "b" and _statuses(db, ex)["c", 0] == "pending"
    _complete(db, b)
    [c] = _claim_all(db)
    _complete(db, c)
    assert db.executions.get(id=ex.id).status == "completed"


def test_an_empty_depends_on_makes_a_root_and_names_make_a_dag(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a")
    add_stage(conn, wf, "b", depends_on=["a"])
    add_stage(conn, wf, "c", depends_on=["a"])
    add_stage(conn, wf, "d", depends_on=["b", "c"])
    add_stage(conn, wf, "solo", depends_on=[])
    ex = db.executions.start(workflow_id=wf)

    first = _claim_all(db)
    assert _names(first) == [("a", 0), ("solo", 0)]
    _complete(db, next(s for s in first if s.task_name == "a"))
    middle = _claim_all(db)
    assert _names(middle) == [("b", 0), ("c", 0)]
    _complete(db, middle[0])
    assert _claim_all(db) == [] and _statuses(db, ex)["d", 0] == "pending"
    _complete(db, middle[1])
    [d] = _claim_all(db)
    assert d.task_name == "d" and d.depends_on == ["b", "c"]


def test_a_with_items_stage_is_done_when_all_its_items_are(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "each", with_items=["x", "y", "z"])
    add_stage(conn, wf, "after")
    ex = db.executions.start(workflow_id=wf)
    items = _claim_all(db)
    assert [c.item for c in sorted(items, key=lambda c: c.task_index)] == ["x", "y", "z"]
    for step in items[:2]:
        _complete(db, step)
    assert _statuses(db, ex)["after", 0] == "pending" and _claim_all(db) == []
    _complete(db, items[2])
    assert _names(_claim_all(db)) == [("after", 0)]


def test_a_dependency_with_no_items_is_done_at_once(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "none", with_items=[])
    add_stage(conn, wf, "after")
    ex = db.executions.start(workflow_id=wf)
    assert _statuses(db, ex) == {("after", 0): "queued"}


def test_a_pending_step_is_not_claimable_even_when_due(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a")
    add_stage(conn, wf, "b")
    db.executions.start(workflow_id=wf)
    [a] = _claim_all(db)
    # The dependent's due time does not matter, only its dependencies.
    conn.execute("UPDATE execution_steps SET available_at = now() - interval '1 hour'")
    assert _claim_all(db, "other") == []
    _complete(db, a)
    assert _names(_claim_all(db)) == [("b", 0)]


# -- 3. validation ----------------------------------------------------------------------


def test_unknown_dependency_self_dependency_and_cycles_are_refused(
    db: Database, conn: Conn
) -> None:
    wf = make_workflow(conn)
    _stage(db, wf, "a")
    _stage(db, wf, "b")
    version = db.workflows.get(id=wf).version
    with pytest.raises(InvalidInput, match='stage "c" depends on unknown stage "nope"'):
        _stage(db, wf, "c", depends_on=["nope"])
    with pytest.raises(InvalidInput, match="cannot depend on itself"):
        _stage(db, wf, "c", depends_on=["c"])
    b = db.stages.list(workflow_id=wf)[1]
    a = db.stages.list(workflow_id=wf)[0]
    with pytest.raises(InvalidInput, match='stages "a", "b" form a dependency cycle'):
        db.stages.update(id=a.id, patch=StagePatch(depends_on=["b"]))
    with pytest.raises(InvalidInput, match="cannot depend on itself"):
        db.stages.update(id=b.id, patch=StagePatch(depends_on=["b"]))
    assert [s.name for s in db.stages.list(workflow_id=wf)] == ["a", "b"]
    assert db.stages.get(id=a.id).depends_on is None
    assert db.workflows.get(id=wf).version == version  # nothing refused made a version


def test_removing_a_stage_others_depend_on_is_a_conflict(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    _stage(db, wf, "a")
    _stage(db, wf, "b", depends_on=["a"])
    _stage(db, wf, "c")  # after b by position: removing b re-links it to a
    a, b, _c = db.stages.list(workflow_id=wf)
    with pytest.raises(Conflict, match='stage "a" cannot be removed or renamed: stage "b"'):
        db.stages.remove(id=a.id)
    db.stages.remove(id=b.id)
    assert [s.name for s in db.stages.list(workflow_id=wf)] == ["a", "c"]


def test_the_database_refuses_what_bypasses_the_repositories(conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a")
    add_stage(conn, wf, "b", depends_on=["a"])
    with pytest.raises(psycopg.errors.CheckViolation, match="unknown stage"):
        add_stage(conn, wf, "c", depends_on=["ghost"])
    with pytest.raises(psycopg.errors.RestrictViolation, match='stage "b" depends on it'):
        conn.execute("UPDATE workflow_stages SET name = 'renamed' WHERE name = 'a'")
    with pytest.raises(psycopg.errors.CheckViolation, match="dependency cycle"):
        conn.execute("UPDATE workflow_stages SET depends_on = '{b}' WHERE name = 'a'")
    names = conn.execute("SELECT name FROM workflow_stages WHERE workflow_id = %s", (wf,))
    assert sorted(r[0] for r in names) == ["a", "b"]


# -- 4. pinned snapshots ----------------------------------------------------------------


def test_an_execution_runs_the_stages_it_pinned(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    _stage(db, wf, "a", action_ref="core.http", config={"url": "v1"})
    _stage(db, wf, "b", action_ref="core.shell", with_items=[1, 2])
    _stage(db, wf, "c", action_ref="core.email", timeout_seconds=60)
    before = db.workflows.get(id=wf).version
    ex = db.executions.start(workflow_id=wf)
    a, b, c = db.stages.list(workflow_id=wf)

    db.stages.update(id=a.id, patch=StagePatch(action_ref="core.python", config={"url": "v2"}))
    db.stages.update(id=b.id, patch=StagePatch(with_items=[9], depends_on=[]))
    db.stages.remove(id=c.id)
    db.stages.add(workflow_id=wf, stage=NewStage(name="late", action_ref="core.noop"))
    db.stages.reorder(
        workflow_id=wf, stage_ids=[s.id for s in reversed(db.stages.list(workflow_id=wf))]
    )

    # Every edit made a version; the running execution still claims version `before`.
    assert db.workflows.get(id=wf).version == before + 5
    assert ex.workflow_version == before
    [got_a] = _claim_all(db)
    assert (got_a.action_ref, got_a.config, got_a.depends_on) == ("core.http", {"url": "v1"}, [])
    _complete(db, got_a)
    items = _claim_all(db)
    assert [(s.action_ref, s.item) for s in sorted(items, key=lambda s: s.task_index)] == [
        ("core.shell", 1), ("core.shell", 2)
    ]  # fmt: skip
    for step in items:
        _complete(db, step)
    [got_c] = _claim_all(db)  # removed from the workflow, not from the run
    assert (got_c.task_name, got_c.action_ref, got_c.timeout_seconds) == ("c", "core.email", 60)
    # A new execution runs the new stages.
    new = db.executions.start(workflow_id=wf)
    assert sorted(new.task_graph) == ["a", "b", "late"]


def test_retry_backoff_comes_from_the_pinned_policy(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    _stage(db, wf, "a", retry_policy=RetryPolicy(max_attempts=3, backoff_base_seconds=0))
    db.executions.start(workflow_id=wf)
    [stage] = db.stages.list(workflow_id=wf)
    slow = RetryPolicy(max_attempts=3, backoff_base_seconds=3600, backoff_max_seconds=3600)
    db.stages.update(id=stage.id, patch=StagePatch(retry_policy=slow))
    [a] = _claim_all(db)
    _fail(db, a)
    [again] = _claim_all(db)  # backoff 0 as pinned, not an hour
    assert again.id == a.id and again.attempt == 2


def test_a_stage_edit_inside_a_transaction_is_pinned_by_a_start_in_it(
    db: Database, conn: Conn
) -> None:
    wf = make_workflow(conn)
    _stage(db, wf, "a")
    with db.transaction() as tx:
        tx.stages.add(workflow_id=wf, stage=NewStage(name="b", action_ref="core.noop"))
        ex = tx.executions.start(workflow_id=wf)
    assert ex.task_graph == {"a": [], "b": ["a"]}


@pytest.mark.concurrency
@pytest.mark.parametrize("call", ["start", "start_many"])
@pytest.mark.parametrize("edit", ["add a stage", "remove a stage", "change the definition"])
def test_a_start_that_waited_for_an_edit_runs_the_version_the_edit_made(
    db: Database, conn: Conn, edit: str, call: str
) -> None:
    """A start that waits for the workflow's row while another transaction edits its stages
    or its definition starts, once that commits, the version the edit made, with the steps
    of that version's stage snapshot (not that version with no step, completed at once)."""
    wf = make_workflow(conn)
    _stage(db, wf, "a")
    _stage(db, wf, "b")
    b = db.stages.list(workflow_id=wf)[1]
    row_version = db.workflows.get(id=wf).row_version

    def start() -> Execution:
        if call == "start":
            return db.executions.start(workflow_id=wf)
        return db.executions.start_many(requests=[StartRequest(workflow_id=wf)])[0]

    with ThreadPoolExecutor(1) as pool:
        with db.transaction() as tx:
            if edit == "add a stage":
                tx.stages.add(workflow_id=wf, stage=NewStage(name="c", action_ref="core.noop"))
            elif edit == "remove a stage":
                tx.stages.remove(id=b.id)
            else:
                tx.workflows.update_definition(
                    id=wf, definition_yaml="v: 2", definition={"v": 2}, expected_version=row_version
                )
            waiting = pool.submit(start)
            wait_for_a_lock_wait(conn)
        ex = waiting.result(timeout=60)

    graph = {
        "add a stage": {"a": [], "b": ["a"], "c": ["b"]},
        "remove a stage": {"a": []},
        "change the definition": {"a": [], "b": ["a"]},
    }[edit]
    assert (ex.status, ex.workflow_version) == ("running", db.workflows.get(id=wf).version)
    assert ex.task_graph == graph
    steps = conn.execute(
        "SELECT task_name, status FROM execution_steps WHERE execution_id = %s ORDER BY 1",
        (ex.id,),
    ).fetchall()
    assert steps == [(name, "queued" if name == "a" else "pending") for name in sorted(graph)]


@pytest.mark.concurrency
def test_a_stage_edit_waits_for_a_start_and_changes_nothing_it_started(
    db: Database, conn: Conn
) -> None:
    """The other order: a stage edit waits until a start's transaction commits, and the
    execution keeps the version and the steps it started with."""
    wf = make_workflow(conn)
    _stage(db, wf, "a")
    with ThreadPoolExecutor(1) as pool:
        with db.transaction() as tx:
            ex = tx.executions.start(workflow_id=wf)
            editing = pool.submit(
                db.stages.add, workflow_id=wf, stage=NewStage(name="b", action_ref="core.noop")
            )
            wait_for_a_lock_wait(conn)
            assert not editing.done()
        editing.result(timeout=60)
    assert ex.task_graph == {"a": []}
    assert ex.workflow_version < db.workflows.get(id=wf).version
    steps = conn.execute(
        "SELECT task_name FROM execution_steps WHERE execution_id = %s", (ex.id,)
    ).fetchall()
    assert steps == [("a",)]


# -- 5. failure propagation ---------------------------------------------------------------


def _branching(conn: Conn, mode: str) -> uuid.UUID:
    wf = make_workflow(conn)
    conn.execute("UPDATE workflows SET failure_mode = %s WHERE id = %s", (mode, wf))
    add_stage(conn, wf, "a", max_attempts=1)
    add_stage(conn, wf, "b")
    add_stage(conn, wf, "c", with_items=[1, 2])
    add_stage(conn, wf, "x", depends_on=[])
    add_stage(conn, wf, "y", depends_on=["x"])
    return wf


def test_fail_fast_skips_dependents_and_cancels_the_rest(db: Database, conn: Conn) -> None:
    ex = db.executions.start(workflow_id=_branching(conn, "fail_fast"))
    assert ex.failure_mode == "fail_fast"
    claimed = {c.task_name: c for c in _claim_all(db)}
    _fail(db, claimed["a"], "disk full")

    steps = {(s.task_name, s.task_index): s for s in db.steps.list_by_execution(execution_id=ex.id)}
    assert {k: s.status for k, s in steps.items()} == {
        ("a", 0): "failed", ("b", 0): "skipped", ("c", 0): "skipped", ("c", 1): "skipped",
        ("x", 0): "cancelled", ("y", 0): "cancelled",
    }  # fmt: skip
    assert {steps[k].error for k in (("b", 0), ("c", 0), ("c", 1))} == {"upstream failed: a"}
    final = db.executions.get(id=ex.id)
    assert final.status == "failed" and final.error_message == "step a[0] failed: disk full"
    with pytest.raises(LeaseLost):
        _complete(db, claimed["x"])


def test_continue_lets_independent_branches_finish_then_fails(db: Database, conn: Conn) -> None:
    ex = db.executions.start(workflow_id=_branching(conn, "continue"))
    claimed = {c.task_name: c for c in _claim_all(db)}
    _fail(db, claimed["a"])
    assert db.executions.get(id=ex.id).status == "running"
    _complete(db, claimed["x"])
    [y] = _claim_all(db)
    assert y.task_name == "y"
    _complete(db, y)
    final = db.executions.get(id=ex.id)
    assert final.status == "failed" and final.error_message == "step a[0] failed: boom"
    assert _statuses(db, ex) == {
        ("a", 0): "failed", ("b", 0): "skipped", ("c", 0): "skipped", ("c", 1): "skipped",
        ("x", 0): "completed", ("y", 0): "completed",
    }  # fmt: skip
    assert outbox_events(conn, ex.id) == ["execution.started", "execution.failed"]


def test_a_timeout_with_no_attempt_left_propagates_like_a_failure(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a", max_attempts=1, timeout_seconds=5)
    add_stage(conn, wf, "b")
    ex = db.executions.start(workflow_id=wf)
    [a] = _claim_all(db)
    age_start(conn, a.id, 60)
    assert db.steps.reap().timed_out == [a.id]
    assert _statuses(db, ex) == {("a", 0): "timed_out", ("b", 0): "skipped"}
    assert db.executions.get(id=ex.id).status == "failed"


def test_a_paused_execution_promotes_nothing_until_resumed(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a")
    add_stage(conn, wf, "b")
    ex = db.executions.start(workflow_id=wf)
    [a] = _claim_all(db)
    db.executions.pause(id=ex.id)
    _complete(db, a)
    assert _statuses(db, ex) == {("a", 0): "completed", ("b", 0): "pending"}
    db.executions.resume(id=ex.id)
    assert _statuses(db, ex)["b", 0] == "queued"


# -- 6. inputs, variables, task graph -----------------------------------------------------


def test_a_claim_carries_the_outputs_of_its_dependencies(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "fetch")
    add_stage(conn, wf, "each", with_items=["p", "q"], depends_on=["fetch"])
    add_stage(conn, wf, "none", with_items=[], depends_on=[])
    add_stage(conn, wf, "join", depends_on=["fetch", "each", "none"])
    ex = db.executions.start(workflow_id=wf)
    assert ex.task_graph == {
        "fetch": [], "each": ["fetch"], "none": [], "join": ["fetch", "each", "none"]
    }  # fmt: skip
    [fetch] = _claim_all(db)
    assert fetch.inputs == {}
    _complete(db, fetch, {"rows": 3})
    items = sorted(_claim_all(db), key=lambda s: s.task_index)
    assert [s.inputs for s in items] == [{"fetch": {"rows": 3}}] * 2
    for step in reversed(items):  # completion order does not change item order
        _complete(db, step, {"item": step.item})
    [join] = _claim_all(db)
    assert join.inputs == {
        "fetch": {"rows": 3}, "each": [{"item": "p"}, {"item": "q"}], "none": []
    }  # fmt: skip


def test_variables_are_written_with_compare_and_set(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a")
    ex = db.executions.start(workflow_id=wf)
    updated = db.executions.set_variables(
        id=ex.id, variables={"cursor": 10}, expected_version=ex.row_version
    )
    assert updated.variables == {"cursor": 10} and updated.row_version == ex.row_version + 1
    with pytest.raises(StaleWrite):
        db.executions.set_variables(
            id=ex.id, variables={"cursor": 11}, expected_version=ex.row_version
        )
    with pytest.raises(NotFound):
        db.executions.set_variables(id=uuid.uuid4(), variables={}, expected_version=1)
    with pytest.raises(InvalidInput):
        db.executions.set_variables(id=ex.id, variables=[1], expected_version=2)  # type: ignore[arg-type]
    assert db.executions.get(id=ex.id).variables == {"cursor": 10}


# -- 7. progress --------------------------------------------------------------------------


def test_progress_derives_the_task_lists(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    conn.execute("UPDATE workflows SET failure_mode = 'continue' WHERE id = %s", (wf,))
    add_stage(conn, wf, "a")
    add_stage(conn, wf, "each", with_items=[1, 2], depends_on=["a"])
    add_stage(conn, wf, "bad", max_attempts=1, depends_on=[])
    add_stage(conn, wf, "after_bad", depends_on=["bad"])
    add_stage(conn, wf, "last", depends_on=["each"])
    ex = db.executions.start(workflow_id=wf)
    claimed = {c.task_name: c for c in _claim_all(db)}
    _complete(db, claimed["a"])
    _fail(db, claimed["bad"])
    first_item = _claim_all(db)[0]
    _complete(db, first_item)

    progress = db.executions.progress(id=ex.id)

    assert (progress.execution_id, progress.status, progress.attempt) == (ex.id, "running", 1)
    assert progress.counts == {
        "completed": 2, "running": 1, "failed": 1, "skipped": 1, "pending": 1
    }  # fmt: skip
    assert (progress.current, progress.pending) == (["each"], ["last"])
    assert (progress.completed, progress.failed) == (["a"], ["bad"])
    assert (progress.skipped, progress.cancelled) == (["after_bad"], [])
    with pytest.raises(NotFound):
        db.executions.progress(id=uuid.uuid4())


# -- 8. retry -----------------------------------------------------------------------------


def test_retry_requeues_what_did_not_complete(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a")
    add_stage(conn, wf, "b", max_attempts=2, backoff_base_seconds=0)
    add_stage(conn, wf, "c")
    add_stage(conn, wf, "x", depends_on=[])
    ex = db.executions.start(workflow_id=wf)
    claimed = {c.task_name: c for c in _claim_all(db)}
    _complete(db, claimed["a"], {"kept": True})
    [b] = _claim_all(db)
    _fail(db, b)
    [b] = _claim_all(db)
    _fail(db, b)  # out of attempts: c skipped, x cancelled, the execution failed
    running = db.executions.start(workflow_id=wf)
    with pytest.raises(InvalidInput, match="running: only a failed execution"):
        db.executions.retry(id=running.id)
    db.executions.cancel(id=running.id)
    assert db.executions.get(id=ex.id).status == "failed"

    retried = db.executions.retry(id=ex.id)

    assert (retried.status, retried.attempt, retried.finished_at) == ("running", 2, None)
    steps = {s.task_name: s for s in db.steps.list_by_execution(execution_id=ex.id)}
    assert {n: s.status for n, s in steps.items()} == {
        "a": "completed", "b": "queued", "c": "pending", "x": "queued"
    }  # fmt: skip
    assert steps["a"].outputs == {"kept": True}
    assert (steps["b"].attempt, steps["b"].max_attempts) == (2, 4)  # a fresh budget of 2
    assert outbox_events(conn, ex.id)[-1] == "execution.retried"
    for step in _claim_all(db):
        _complete(db, step)
    [c] = _claim_all(db)
    _complete(db, c)
    done = db.executions.get(id=ex.id)
    assert done.status == "completed" and done.attempt == 2
    assert [a.attempt for a in db.steps.list_attempts(step_id=b.id)] == [1, 2, 3]
    with pytest.raises(InvalidInput, match="completed: only a failed execution"):
        db.executions.retry(id=ex.id)
    with pytest.raises(NotFound):
        db.executions.retry(id=uuid.uuid4())


# -- 9. child executions, finders ---------------------------------------------------------


def _parent_and_child(conn: Conn) -> tuple[uuid.UUID, uuid.UUID]:
    parent = make_workflow(conn)
    add_stage(conn, parent, "spawn")
    add_stage(conn, parent, "after")
    child = make_workflow(conn)
    add_stage(conn, child, "one")
    add_stage(conn, child, "two", with_items=["i", "j"])
    return parent, child


def test_a_step_waits_for_its_child_execution_and_takes_its_result(
    db: Database, conn: Conn
) -> None:
    parent_wf, child_wf = _parent_and_child(conn)
    parent = db.executions.start(workflow_id=parent_wf)
    [spawn] = _claim_all(db, "pw")
    child = db.executions.start(workflow_id=child_wf, parent_step_id=spawn.id)

    assert (child.parent_execution_id, child.parent_step_id) == (parent.id, spawn.id)
    waiting = db.steps.get(id=spawn.id)
    assert (waiting.status, waiting.lease_owner, waiting.lease_expires_at) == (
        "waiting",
        None,
        None,
    )
    assert db.steps.find_by_child_execution(execution_id=child.id).id == spawn.id
    age_start(conn, spawn.id, 10**6)
    assert db.steps.reap().timed_out == []  # nothing to expire while it waits
    with pytest.raises(LeaseLost):  # the worker's lease ended when the child started
        _complete(db, spawn)

    [one] = _claim_all(db, "cw")
    assert one.execution_id == child.id
    _complete(db, one, {"n": 1})
    for item in _claim_all(db, "cw"):
        _complete(db, item, {"item": item.item})

    assert db.executions.get(id=child.id).status == "completed"
    done = db.steps.get(id=spawn.id)
    assert done.status == "completed"
    assert done.outputs == {
        "execution_id": str(child.id), "outputs": {"two": [{"item": "i"}, {"item": "j"}]}
    }  # fmt: skip
    [after] = _claim_all(db)
    assert after.task_name == "after" and after.inputs == {"spawn": done.outputs}
    [attempt] = db.steps.list_attempts(step_id=spawn.id)
    assert attempt.outcome == "completed"


def test_a_failed_child_fails_its_parent_step(db: Database, conn: Conn) -> None:
    parent_wf, child_wf = _parent_and_child(conn)
    parent = db.executions.start(workflow_id=parent_wf)
    [spawn] = _claim_all(db)
    child = db.executions.start(workflow_id=child_wf, parent_step_id=spawn.id)
    db.executions.cancel(id=child.id)
    step = db.steps.get(id=spawn.id)
    assert step.status == "failed" and step.error == f"child execution {child.id} cancelled"
    assert _statuses(db, parent) == {("spawn", 0): "failed", ("after", 0): "skipped"}
    assert db.executions.get(id=parent.id).status == "failed"


def test_a_child_needs_a_running_parent_step(db: Database, conn: Conn) -> None:
    parent_wf, child_wf = _parent_and_child(conn)
    parent = db.executions.start(workflow_id=parent_wf)
    queued = db.steps.find_by_task_name(execution_id=parent.id, task_name="spawn")[0]
    with pytest.raises(InvalidInput, match="only a claimed step can start a child"):
        db.executions.start(workflow_id=child_wf, parent_step_id=queued.id)
    with pytest.raises(NotFound):
        db.executions.start(workflow_id=child_wf, parent_step_id=uuid.uuid4())
    [spawn] = _claim_all(db)
    with pytest.raises(InvalidInput, match="belongs to execution"):
        db.executions.start(
            workflow_id=child_wf, parent_step_id=spawn.id, parent_execution_id=uuid.uuid4()
        )
    assert db.executions.list(workflow_id=child_wf).items == []


def test_find_by_task_name_returns_every_item(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "each", with_items=[1, 2, 3])
    ex = db.executions.start(workflow_id=wf)
    found = db.steps.find_by_task_name(execution_id=ex.id, task_name="each")
    assert [s.task_index for s in found] == [0, 1, 2]
    assert db.steps.find_by_task_name(execution_id=ex.id, task_name="nope") == []
    with pytest.raises(NotFound):
        db.steps.find_by_child_execution(execution_id=ex.id)


def test_get_action_by_workflow(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    pack = db.packs.create(pack=NewPack(ref="flows", label="Flows", version="1"))
    action = db.actions.create(
        action=NewAction(pack_id=pack.id, ref="flows.nightly", entrypoint="x:y")
    )
    with pytest.raises(NotFound):
        db.actions.get_by_workflow(workflow_id=wf)
    db.actions.link_workflow(action_id=action.id, workflow_id=wf)
    assert db.actions.get_by_workflow(workflow_id=str(wf)).id == action.id


def test_archived_or_disabled_workflows_are_not_started(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a")
    row = db.workflows.get(id=wf)
    disabled = db.workflows.update(
        id=wf, patch=WorkflowPatch(enabled=False), expected_version=row.row_version
    )
    with pytest.raises(InvalidInput, match="is disabled"):
        db.executions.start(workflow_id=wf)
    db.workflows.archive(id=wf, expected_version=disabled.row_version)
    with pytest.raises(InvalidInput, match="is archived"):
        db.executions.start(workflow_id=wf)
    with pytest.raises(NotFound):
        db.executions.start(workflow_id=uuid.uuid4())
    assert db.executions.list(workflow_id=wf).items == []
