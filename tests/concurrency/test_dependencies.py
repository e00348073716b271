"""Dependencies under real concurrency: two dependencies completing at the same moment queue
their dependent exactly once, and random DAGs with random failures, run by four workers,
end in the states the orchestration rules give, in dependency order."""

from __future__ import annotations

import datetime
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _runs_factories import add_stage, make_workflow
from flowledger.database import Database
from flowledger.errors import LeaseLost
from flowledger.records.runs import ClaimedStep, Execution

pytestmark = pytest.mark.concurrency

Conn = psycopg.Connection[Any]
LEASE = datetime.timedelta(minutes=5)
ROUNDS = 2000


def _start_many(db: Database, workflow_id: uuid.UUID, n: int) -> list[Execution]:
    return [db.executions.start(workflow_id=workflow_id) for _ in range(n)]


def _claim_every(db: Database, worker: str) -> list[ClaimedStep]:
    claimed: list[ClaimedStep] = []
    while batch := db.steps.claim(worker_id=worker, limit=1000, lease=LEASE):
        claimed += batch
    return claimed


def test_two_dependencies_completing_at_once_queue_the_dependent_exactly_once(
    db: Database, conn: Conn
) -> None:
    wf = make_workflow(conn)
    add_stage(conn, wf, "a", depends_on=[])
    add_stage(conn, wf, "b", depends_on=[])
    add_stage(conn, wf, "c", depends_on=["a", "b"])
    executions = _start_many(db, wf, ROUNDS)
    claimed = _claim_every(db, "w")
    by_task: dict[str, dict[uuid.UUID, ClaimedStep]] = {"a": {}, "b": {}}
    for step in claimed:
        by_task[step.task_name][step.execution_id] = step
    assert len(by_task["a"]) == len(by_task["b"]) == ROUNDS
    order = [e.id for e in executions]
    # Both completions of one execution start together, on two connections of their own.
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def complete_all(task: str) -> None:
        with db.pinned() as pinned:
            for execution_id in order:
                step = by_task[task][execution_id]
                barrier.wait()
                try:
                    pinned.steps.complete(step_id=step.id, worker_id="w", attempt=step.attempt)
                except BaseException as exc:  # reported below, with the round it hit
                    failures.append(exc)
                    barrier.abort()
                    raise

    threads = [threading.Thread(target=complete_all, args=(t,)) for t in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []

    rows = conn.execute(
        """SELECT status, deps_remaining, count(*) FROM execution_steps
            WHERE task_name = 'c' GROUP BY status, deps_remaining"""
    ).fetchall()
    assert rows == [("queued", 0, ROUNDS)]  # never zero times, never counted twice
    dependents = _claim_every(db, "w2")
    assert sorted(s.execution_id for s in dependents) == sorted(order)
    for step in dependents:
        db.steps.complete(step_id=step.id, worker_id="w2", attempt=step.attempt)
    statuses = conn.execute(
        "SELECT status, count(*) FROM workflow_executions WHERE workflow_id = %s GROUP BY 1",
        (wf,),
    ).fetchall()
    assert statuses == [("completed", ROUNDS)]


# -- random DAGs, random failures, four workers --------------------------------------------


@dataclass(frozen=True)
class Dag:
    """Stages in position order: (name, depends_on as written, with_items count or None)."""

    stages: tuple[tuple[str, tuple[str, ...] | None, int | None], ...]
    mode: str
    always: frozenset[tuple[str, int]]  # steps that fail every attempt
    once: frozenset[tuple[str, int]]  # steps that fail their first attempt only

    def deps(self) -> dict[str, list[str]]:
        """Dependencies resolved as the engine resolves them."""
        resolved: dict[str, list[str]] = {}
        for i, (name, deps, _) in enumerate(self.stages):
            if deps is None:
                resolved[name] = [self.stages[i - 1][0]] if i else []
            else:
                resolved[name] = list(deps)
        return resolved

    def keys(self, name: str) -> list[tuple[str, int]]:
        items = next(n for s, _, n in self.stages if s == name)
        return [(name, i) for i in range(1 if items is None else items)]

    def upstream(self, name: str) -> set[str]:
        deps, seen, todo = self.deps(), set(), list(self.deps()[name])
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo += deps[current]
        return seen


@st.composite
def dags(draw: st.DrawFn) -> Dag:
    count = draw(st.integers(1, 6))
    stages: list[tuple[str, tuple[str, ...] | None, int | None]] = []
    for i in range(count):
        kind = draw(st.sampled_from(["ordered", "root", "dag"] if i else ["ordered", "root"]))
        deps: tuple[str, ...] | None = None
        if kind == "root":
            deps = ()
        elif kind == "dag":
            picks = draw(st.lists(st.integers(0, i - 1), min_size=1, max_size=3, unique=True))
            deps = tuple(f"s{p}" for p in sorted(picks))
        items = draw(st.one_of(st.none(), st.integers(0, 3)))
        stages.append((f"s{i}", deps, items))
    keys = [(name, i) for name, _, items in stages for i in range(1 if items is None else items)]
    always = draw(st.frozensets(st.sampled_from(keys), max_size=2)) if keys else frozenset()
    once = (
        draw(st.frozensets(st.sampled_from(keys), max_size=3)) if keys else frozenset()
    ) - always
    mode = draw(st.sampled_from(["fail_fast", "continue"]))
    return Dag(stages=tuple(stages), mode=mode, always=always, once=once)


@dataclass
class _Workers:
    db: Database
    dag: Dag
    stop: threading.Event = field(default_factory=threading.Event)
    problems: list[str] = field(default_factory=list)

    def run(self, worker: str) -> None:
        while not self.stop.is_set():
            claimed = self.db.steps.claim(worker_id=worker, limit=2, lease=LEASE)
            if not claimed:
                time.sleep(0.002)
            for step in claimed:
                self._check_inputs(step)
                self._finish(worker, step)

    def _check_inputs(self, step: ClaimedStep) -> None:
        expected = {dep: _expected(self.dag, dep) for dep in self.dag.deps()[step.task_name]}
        if step.inputs != expected:
            self.problems.append(f"{step.task_name}[{step.task_index}] got {step.inputs}")

    def _finish(self, worker: str, step: ClaimedStep) -> None:
        key = (step.task_name, step.task_index)
        try:
            if key in self.dag.always or (key in self.dag.once and step.attempt == 1):
                self.db.steps.fail(
                    step_id=step.id, worker_id=worker, attempt=step.attempt, error="planned"
                )
            else:
                self.db.steps.complete(
                    step_id=step.id, worker_id=worker, attempt=step.attempt,
                    outputs=_outputs(*key),
                )  # fmt: skip
        except LeaseLost:
            pass  # fail-fast cancelled it meanwhile


def _outputs(name: str, index: int) -> dict[str, Any]:
    return {"task": name, "index": index}


def _expected(dag: Dag, name: str) -> Any:
    """What a dependent receives of a stage: its outputs, or a list of them in item order."""
    if next(n for s, _, n in dag.stages if s == name) is None:
        return _outputs(name, 0)
    return [_outputs(name, i) for _, i in dag.keys(name)]


def _build(conn: Conn, dag: Dag) -> uuid.UUID:
    wf = make_workflow(conn)
    conn.execute("UPDATE workflows SET failure_mode = %s WHERE id = %s", (dag.mode, wf))
    for name, deps, items in dag.stages:
        add_stage(
            conn, wf, name, max_attempts=2, backoff_base_seconds=0,
            depends_on=None if deps is None else list(deps),
            with_items=None if items is None else list(range(items)),
        )  # fmt: skip
    return wf


@pytest.fixture
def workers_db(db_url: str) -> Iterator[Database]:
    from flowledger.database import connect

    with connect(db_url, min_size=1, max_size=6, connect_attempts=1) as database:
        yield database


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(dag=dags())
def test_random_dags_run_in_order_and_end_as_the_rules_say(
    workers_db: Database, conn: Conn, dag: Dag
) -> None:
    db = workers_db
    execution = db.executions.start(workflow_id=_build(conn, dag))
    workers = _Workers(db, dag)
    threads = [threading.Thread(target=workers.run, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while db.executions.get(id=execution.id).status == "running":
            assert time.monotonic() < deadline, f"execution did not finish: {dag}"
            time.sleep(0.005)
    finally:
        workers.stop.set()
        for thread in threads:
            thread.join()
    assert workers.problems == []
    _check_order(db, execution.id, dag)
    _check_outcome(db, execution.id, dag)


def _check_order(db: Database, execution_id: uuid.UUID, dag: Dag) -> None:
    steps = db.steps.list_by_execution(execution_id=execution_id)
    done: dict[str, list[datetime.datetime | None]] = {name: [] for name, _, _ in dag.stages}
    for step in steps:
        done[step.task_name].append(step.completed_at if step.status == "completed" else None)
    deps = dag.deps()
    for step in steps:
        for attempt in db.steps.list_attempts(step_id=step.id):
            for dep in deps[step.task_name]:
                # Every step of the dependency completed, and before the attempt started.
                assert all(t is not None and t <= attempt.started_at for t in done[dep]), (
                    f"{step.task_name}[{step.task_index}] attempt {attempt.attempt} started"
                    f" before {dep} completed: {dag}"
                )


def _check_outcome(db: Database, execution_id: uuid.UUID, dag: Dag) -> None:
    steps = db.steps.list_by_execution(execution_id=execution_id)
    status = {(s.task_name, s.task_index): s.status for s in steps}
    final = db.executions.get(id=execution_id)
    assert set(status.values()) <= {"completed", "failed", "skipped", "cancelled"}, dag
    failed = {k for k, v in status.items() if v == "failed"}
    assert failed <= dag.always, dag
    for (name, _), value in status.items():
        if value == "skipped":  # only downstream of a step that failed
            assert any(k[0] in dag.upstream(name) for k in failed), dag
    if not dag.always:
        assert set(status.values()) <= {"completed"} and final.status == "completed", dag
        return
    assert final.status == "failed" and failed, dag
    assert final.error_message is not None and "planned" in final.error_message
    if dag.mode == "continue":
        assert status == _continue_outcome(dag), dag


def _continue_outcome(dag: Dag) -> dict[tuple[str, int], str]:
    """In continue mode the outcome is deterministic: a stage downstream of a failed or
    skipped step is skipped whole; otherwise its planned failures fail, the rest completes."""
    outcome: dict[tuple[str, int], str] = {}
    deps = dag.deps()
    for name, _, _ in _topological(dag):
        blocked = any(
            outcome[k] in ("failed", "skipped") for dep in deps[name] for k in dag.keys(dep)
        )
        for key in dag.keys(name):
            outcome[key] = "skipped" if blocked else "failed" if key in dag.always else "completed"
    return outcome


def _topological(dag: Dag) -> list[tuple[str, tuple[str, ...] | None, int | None]]:
    deps, placed = dag.deps(), set[str]()
    ordered: list[tuple[str, tuple[str, ...] | None, int | None]] = []
    while len(ordered) < len(dag.stages):
        for stage in dag.stages:
            if stage[0] not in placed and set(deps[stage[0]]) <= placed:
                placed.add(stage[0])
                ordered.append(stage)
    return ordered
