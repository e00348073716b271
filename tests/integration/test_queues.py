"""Named queues: a stage's queue on its steps, claims of some queues only, pause and resume
(durable, seen by every claim), the queue listing, and bad input."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from _runs_factories import make_workflow
from flowledger.database import Database
from flowledger.errors import InvalidInput
from flowledger.records.runs import ClaimedStep
from flowledger.records.workflows import NewStage, StagePatch
from flowledger.tools.cli import EXIT_ERROR, build_parser, main

Conn = psycopg.Connection[Any]


def _stage(db: Database, wf: uuid.UUID, name: str, **fields: Any) -> None:
    fields.setdefault("action_ref", "core.noop")
    fields.setdefault("depends_on", [])
    db.stages.add(workflow_id=wf, stage=NewStage(name=name, **fields))


def _three_queues(db: Database, conn: Conn) -> uuid.UUID:
    """A workflow of three root stages: 'plain' (default queue), 'render' (gpu, 2 items) and
    'mail' (email)."""
    wf = make_workflow(conn)
    _stage(db, wf, "plain")
    _stage(db, wf, "render", queue="gpu", with_items=[1, 2])
    _stage(db, wf, "mail", queue="email")
    return wf


def _claimed(db: Database, queues: list[str] | None, limit: int = 100) -> list[str]:
    steps = db.steps.claim(worker_id="w", limit=limit, queues=queues)
    return sorted(f"{s.queue}:{s.task_name}" for s in steps)


def test_steps_run_in_their_stage_queue_and_claims_take_only_the_queues_asked_for(
    db: Database, conn: Conn
) -> None:
    wf = _three_queues(db, conn)
    stages = {s.name: s.queue for s in db.stages.list(workflow_id=wf)}
    assert stages == {"plain": "default", "render": "gpu", "mail": "email"}
    run = db.executions.start(workflow_id=wf)
    steps = {
        (s.task_name, s.task_index): s.queue
        for s in db.steps.list_by_execution(execution_id=run.id)
    }
    assert steps == {
        ("plain", 0): "default",
        ("render", 0): "gpu",
        ("render", 1): "gpu",
        ("mail", 0): "email",
    }
    assert _claimed(db, ["batch"]) == []  # a queue nothing runs in
    assert _claimed(db, [f"q{i}" for i in range(100)]) == []  # the most a claim takes
    assert _claimed(db, ["gpu"]) == ["gpu:render", "gpu:render"]
    assert _claimed(db, ["default", "email"]) == ["default:plain", "email:mail"]
    assert _claimed(db, None) == []


def test_a_claim_without_queues_takes_every_queue_in_claim_order(db: Database, conn: Conn) -> None:
    wf = _three_queues(db, conn)
    run = db.executions.start(workflow_id=wf)
    # Priorities across queues: the claim order is global, not queue by queue.
    conn.execute(
        "UPDATE execution_steps SET priority = CASE task_name WHEN 'mail' THEN -5"
        " WHEN 'plain' THEN 2 ELSE task_index END WHERE execution_id = %s",
        (run.id,),
    )
    order = [(s.queue, s.task_name, s.task_index) for s in db.steps.claim(worker_id="w", limit=2)]
    assert order == [("email", "mail", 0), ("gpu", "render", 0)]
    order = [(s.queue, s.task_name, s.task_index) for s in db.steps.claim(worker_id="w", limit=5)]
    assert order == [("gpu", "render", 1), ("default", "plain", 0)]


def test_claims_of_several_queues_keep_the_global_claim_order(db: Database, conn: Conn) -> None:
    wf = make_workflow(conn)
    _stage(db, wf, "a", queue="qa", with_items=list(range(4)))
    _stage(db, wf, "b", queue="qb", with_items=list(range(4)))
    _stage(db, wf, "c", queue="qc", with_items=list(range(4)))
    run = db.executions.start(workflow_id=wf)
    conn.execute(
        "UPDATE execution_steps SET priority = (task_index * 3 + ascii(task_name) - 97) %% 7"
        " WHERE execution_id = %s",
        (run.id,),
    )
    rows = conn.execute(
        "SELECT task_name, task_index FROM execution_steps WHERE execution_id = %s"
        " AND queue IN ('qa', 'qc') ORDER BY priority, available_at, id",
        (run.id,),
    ).fetchall()
    want = [(n, i) for n, i in rows]
    got: list[tuple[str, int]] = []
    while batch := db.steps.claim(worker_id="w", limit=3, queues=["qc", "qa"]):
        got += [(s.task_name, s.task_index) for s in batch]
    assert got == want
    assert len(db.steps.claim(worker_id="w", limit=100)) == 4  # qb's, untouched


def test_a_stage_queue_change_is_a_new_version_running_executions_keep_theirs(
    db: Database, conn: Conn
) -> None:
    wf = make_workflow(conn)
    _stage(db, wf, "a")
    before = db.executions.start(workflow_id=wf)
    [stage] = db.stages.list(workflow_id=wf)
    assert db.stages.update(id=stage.id, patch=StagePatch(queue="slow")).queue == "slow"
    after = db.executions.start(workflow_id=wf)
    assert after.workflow_version == before.workflow_version + 1
    assert _claimed(db, ["slow"]) == ["slow:a"]
    assert _claimed(db, ["default"]) == ["default:a"]


def test_a_paused_queue_keeps_its_steps_queued_and_resume_wakes_the_workers(
    db: Database, conn: Conn
) -> None:
    wf = _three_queues(db, conn)
    paused = db.queues.pause(name="gpu")
    assert (paused.name, paused.paused) == ("gpu", True)
    run = db.executions.start(workflow_id=wf)
    for _ in range(5):
        assert _claimed(db, ["gpu"]) == []
    assert _claimed(db, None) == ["default:plain", "email:mail"]
    assert _claimed(db, ["gpu", "email"]) == []
    statuses = {s.task_name: s.status for s in db.steps.list_by_execution(execution_id=run.id)}
    assert statuses["render"] == "queued"
    with db.wake_ups() as wake:
        while wake.wait(0.05):
            pass
        resumed = db.queues.resume(name="gpu")
        assert (resumed.name, resumed.paused) == ("gpu", False)
        assert resumed.updated_at >= paused.updated_at
        assert wake.wait(5) is True
        assert wake.wait(0.2) is False  # one notification
    assert _claimed(db, None) == ["gpu:render", "gpu:render"]


def test_resuming_a_queue_with_nothing_queued_wakes_nobody(db: Database, conn: Conn) -> None:
    db.queues.pause(name="idle")
    with db.wake_ups() as wake:
        while wake.wait(0.05):
            pass
        db.queues.resume(name="idle")
        assert wake.wait(0.3) is False


def test_a_pause_is_durable_and_seen_by_other_connections(
    db: Database, conn: Conn, db_url: str
) -> None:
    wf = _three_queues(db, conn)
    db.queues.pause(name="email")
    db.queues.pause(name="email")  # pausing twice is still paused
    db.executions.start(workflow_id=wf)
    with psycopg.connect(db_url) as other:
        row = other.execute("SELECT paused FROM queue_states WHERE name = 'email'").fetchone()
    assert row == (True,)
    assert _claimed(db, ["email"]) == []
    assert db.queues.resume(name="email").paused is False
    assert _claimed(db, ["email"]) == ["email:mail"]


def test_list_shows_each_queue_paused_or_not_with_its_queued_and_running_steps(
    db: Database, conn: Conn
) -> None:
    assert db.queues.list() == []
    wf = _three_queues(db, conn)
    db.executions.start(workflow_id=wf)
    db.executions.start(workflow_id=wf)
    db.queues.pause(name="email")
    db.queues.pause(name="unused")
    db.steps.claim(worker_id="w", limit=1, queues=["gpu"])
    listed = {q.name: (q.paused, q.queued, q.running) for q in db.queues.list()}
    assert listed == {
        "default": (False, 2, 0),
        "email": (True, 2, 0),
        "gpu": (False, 3, 1),
        "unused": (True, 0, 0),
    }
    assert [q.name for q in db.queues.list()] == ["default", "email", "gpu", "unused"]
    by_name = {q.name: q for q in db.queues.list()}
    assert by_name["default"].updated_at is None
    assert by_name["email"].updated_at is not None


def _tables(conn: Conn) -> list[Any]:
    return [
        conn.execute(
            "SELECT id, status, attempt, lease_owner, queue FROM execution_steps ORDER BY id"
        ).fetchall(),
        conn.execute("SELECT name, paused, updated_at FROM queue_states ORDER BY name").fetchall(),
        conn.execute("SELECT count(*) FROM step_attempts").fetchall(),
        conn.execute("SELECT id, queue FROM workflow_stages ORDER BY id").fetchall(),
    ]


BAD_QUEUES: list[Any] = [
    "gpu",
    b"gpu",
    [],
    ["Gpu"],
    ["gpu", "gpu"],
    [1],
    [None],
    ["a" * 64],
    ["-x"],
    ["a b"],
    5,
    {"gpu": 1},
    [f"q{i}" for i in range(101)],
]
BAD_NAMES: list[Any] = [None, "", " ", "Gpu", "a" * 64, "9lives", 5, ["gpu"], b"gpu", "gpu\x00"]


@pytest.mark.parametrize("queues", BAD_QUEUES)
def test_a_bad_queues_argument_is_refused_naming_it_and_touches_nothing(
    db: Database, conn: Conn, queues: Any
) -> None:
    wf = _three_queues(db, conn)
    db.executions.start(workflow_id=wf)
    before = _tables(conn)
    with pytest.raises(InvalidInput, match="queues"):
        db.steps.claim(worker_id="w", limit=10, queues=queues)
    assert _tables(conn) == before


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_queue_name_is_refused_naming_it_and_touches_nothing(
    db: Database, conn: Conn, name: Any
) -> None:
    wf = _three_queues(db, conn)
    db.executions.start(workflow_id=wf)
    db.queues.pause(name="gpu")
    before = _tables(conn)
    with pytest.raises(InvalidInput, match="name"):
        db.queues.pause(name=name)
    with pytest.raises(InvalidInput, match="name"):
        db.queues.resume(name=name)
    assert _tables(conn) == before


@pytest.mark.parametrize("queue", ["Gpu", "", "a" * 64, 5, None])
def test_a_bad_stage_queue_is_refused_naming_it_and_touches_nothing(
    db: Database, conn: Conn, queue: Any
) -> None:
    wf = _three_queues(db, conn)
    [stage, *_] = db.stages.list(workflow_id=wf)
    before = _tables(conn)
    with pytest.raises(InvalidInput, match="queue"):
        db.stages.add(workflow_id=wf, stage=NewStage(name="z", action_ref="x", queue=queue))
    with pytest.raises(InvalidInput, match="queue"):
        db.stages.update(id=stage.id, patch=StagePatch(queue=queue))
    assert _tables(conn) == before


def test_the_queue_checks_hold_in_the_database(conn: Conn) -> None:
    wf = make_workflow(conn)
    for sql in (
        "INSERT INTO queue_states (name, paused) VALUES ('Bad', true)",
        "INSERT INTO workflow_stages (workflow_id, position, name, action_ref, queue)"
        f" VALUES ('{wf}', 0, 'a', 'x', 'no way')",
    ):
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(sql)


def test_the_worker_command_takes_queues_and_refuses_a_bad_one(
    db: Database,
    conn: Conn,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["worker", "m:H", "--queue", "gpu", "--queue", "email"])
    assert args.queue == ["gpu", "email"]
    assert build_parser().parse_args(["worker", "m:H"]).queue is None
    (tmp_path / "queue_handlers.py").write_text("HANDLERS = {'core.noop': lambda step: None}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    wf = _three_queues(db, conn)
    db.executions.start(workflow_id=wf)
    before = _tables(conn)
    code = main(["worker", "queue_handlers:HANDLERS", "--queue", "GPU", "--database", db_url])
    assert code == EXIT_ERROR
    assert "queues" in capsys.readouterr().err
    assert _tables(conn) == before


@pytest.mark.concurrency
def test_four_workers_on_two_queues_while_one_is_paused_and_resumed(
    db: Database, conn: Conn
) -> None:
    """Every step claimed exactly once, by a worker of its queue; no claim that started
    after a pause returned and ended before the next resume was called took a step of the
    paused queue."""
    per_queue = 1500
    wf = make_workflow(conn)
    _stage(db, wf, "a", queue="qa", with_items=list(range(per_queue)))
    _stage(db, wf, "b", queue="qb", with_items=list(range(per_queue)))
    db.executions.start(workflow_id=wf)
    workers = [("qa", 0), ("qa", 1), ("qb", 2), ("qb", 3)]
    claims: list[tuple[str, str, float, float, list[ClaimedStep]]] = []
    lock = threading.Lock()
    left = {"qa": per_queue, "qb": per_queue}
    pauses: list[tuple[float, float]] = []  # (pause returned, resume called)
    done = threading.Event()

    def work(queue: str, n: int) -> None:
        worker = f"w{n}-{queue}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with lock:
                if left[queue] == 0:
                    return
            started = time.monotonic()
            got = db.steps.claim(worker_id=worker, limit=7, queues=[queue])
            ended = time.monotonic()
            with lock:
                claims.append((queue, worker, started, ended, got))
                left[queue] -= len(got)
            if not got:
                time.sleep(0.001)

    def toggle() -> None:
        while not done.is_set():
            db.queues.pause(name="qa")
            paused = time.monotonic()
            time.sleep(0.03)
            resuming = time.monotonic()
            db.queues.resume(name="qa")
            pauses.append((paused, resuming))
            time.sleep(0.01)

    toggler = threading.Thread(target=toggle)
    threads = [threading.Thread(target=work, args=w) for w in workers]
    toggler.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    toggler.join()
    db.queues.resume(name="qa")

    assert left == {"qa": 0, "qb": 0}
    ids = Counter(s.id for *_, got in claims for s in got)
    assert len(ids) == 2 * per_queue and set(ids.values()) == {1}
    for queue, worker, _, _, got in claims:
        assert {s.queue for s in got} <= {queue}
        assert {s.lease_owner for s in got} <= {worker}
    in_pause = [
        (start, end, got)
        for queue, _, start, end, got in claims
        if queue == "qa" and any(p <= start and end < r for p, r in pauses)
    ]
    assert in_pause, "no claim of qa ran inside a pause: the test proved nothing"
    assert all(not got for _, _, got in in_pause)
    # qb went on while qa was paused.
    assert any(
        got and any(p <= start and end < r for p, r in pauses)
        for queue, _, start, end, got in claims
        if queue == "qb"
    )
    rows = conn.execute(
        "SELECT s.queue, a.worker_id FROM step_attempts a JOIN execution_steps s"
        " ON s.id = a.step_id"
    ).fetchall()
    assert len(rows) == 2 * per_queue
    assert all(worker.endswith(queue) for queue, worker in rows)
