"""Tasks repository against a real PostgreSQL: create, read, update, delete, the keyset
listings and counts, and the tasks attached to workflows (attach, detach, reorder, also
concurrently), with every error path leaving the tables as they were."""

from __future__ import annotations

import datetime
import math
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from _threads import wait_for_a_lock_wait
from flowledger.database import Database
from flowledger.errors import Conflict, InvalidCursor, InvalidInput, NotFound
from flowledger.records.identity import NewUser
from flowledger.records.tasks import NewTask, Task, TaskPatch, WorkflowTask
from flowledger.records.workflows import NewWorkflow

Conn = psycopg.Connection[tuple[Any, ...]]
UTC = datetime.UTC


@pytest.fixture
def owner_id(db: Database) -> uuid.UUID:
    return db.users.create(user=NewUser(email="dev@example.com", display_name="Dev")).id


@pytest.fixture
def workflow_id(db: Database, owner_id: uuid.UUID) -> uuid.UUID:
    return db.workflows.create(workflow=NewWorkflow(owner_id=owner_id, name="etl")).id


def _task(db: Database, title: str = "write docs", **fields: Any) -> Task:
    fields.setdefault("task_type", "docs")
    return db.tasks.create(task=NewTask(title=title, **fields))


def _rows(conn: Conn) -> list[tuple[Any, ...]]:
    """Every row of both tables, to compare before and after a refused call."""
    tasks = conn.execute("SELECT * FROM tasks ORDER BY id").fetchall()
    links = conn.execute("SELECT * FROM workflow_tasks ORDER BY workflow_id, task_id").fetchall()
    return [*tasks, *links]


def _order(db: Database, workflow_id: uuid.UUID) -> list[tuple[int, uuid.UUID]]:
    return [(wt.sequence, wt.task.id) for wt in db.tasks.list_for_workflow(workflow_id=workflow_id)]


# -- create, get, update, delete ------------------------------------------------------------


def test_create_with_defaults_and_read_back(db: Database) -> None:
    task = _task(db)

    assert (task.title, task.task_type, task.status, task.description) == (
        "write docs",
        "docs",
        "pending",
        "",
    )
    assert (task.config, task.metadata, task.workspace_path) == ({}, {}, None)
    assert task.created_at == task.updated_at
    assert db.tasks.get(id=str(task.id)) == task


def test_create_stores_every_field(db: Database) -> None:
    task = _task(
        db,
        "review",
        task_type="code.review",
        description="look at the diff",
        status="in_progress",
        config={"reviewers": 2},
        metadata={"ticket": "OPS-1", "nested": {"a": [1, 2.5, None]}},
        workspace_path="/srv/checkouts/etl",
    )

    assert db.tasks.get(id=task.id) == task
    assert (task.status, task.config, task.metadata["nested"]) == (
        "in_progress",
        {"reviewers": 2},
        {"a": [1, 2.5, None]},
    )
    assert task.workspace_path == "/srv/checkouts/etl"


@pytest.mark.parametrize(
    ("fields", "argument"),
    [
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "t" * 256}, "title"),
        ({"title": "a\x00b"}, "title"),
        ({"title": None}, "title"),
        ({"task_type": "Docs"}, "task_type"),
        ({"task_type": "1docs"}, "task_type"),
        ({"task_type": "d" * 64}, "task_type"),
        ({"task_type": 3}, "task_type"),
        ({"status": "finished"}, "status"),
        ({"status": None}, "status"),
        ({"config": []}, "config"),
        ({"config": {"x": math.nan}}, "config"),
        ({"metadata": {"x": math.inf}}, "metadata"),
        ({"metadata": "{}"}, "metadata"),
        ({"workspace_path": ""}, "workspace_path"),
        ({"workspace_path": "p" * 513}, "workspace_path"),
        ({"workspace_path": 7}, "workspace_path"),
        ({"description": "d" * 1_000_001}, "description"),
    ],
)
def test_create_refuses_bad_fields_naming_them_and_writes_nothing(
    db: Database, conn: Conn, fields: dict[str, Any], argument: str
) -> None:
    values = {"title": "t", "task_type": "docs", **fields}
    with pytest.raises(InvalidInput, match=argument):
        db.tasks.create(task=NewTask(**values))
    assert _rows(conn) == []


def test_the_longest_accepted_fields(db: Database) -> None:
    task = _task(db, "t" * 255, task_type="d" * 63, workspace_path="p" * 512)
    assert (len(task.title), len(task.task_type), len(task.workspace_path or "")) == (255, 63, 512)


def test_create_refuses_what_is_not_a_new_task(db: Database, conn: Conn) -> None:
    with pytest.raises(InvalidInput, match="task must be a NewTask"):
        db.tasks.create(task={"title": "t", "task_type": "docs"})  # type: ignore[arg-type]
    assert _rows(conn) == []


def test_get_unknown_and_malformed_ids(db: Database) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound, match=f"task {missing} not found"):
        db.tasks.get(id=missing)
    with pytest.raises(InvalidInput, match="task id must be a UUID"):
        db.tasks.get(id="nope")


def test_update_changes_the_set_fields_and_keeps_the_rest(db: Database) -> None:
    task = _task(db, workspace_path="/w", config={"a": 1})

    updated = db.tasks.update(
        id=task.id, patch=TaskPatch(status="in_progress", metadata={"owner": "ada"})
    )

    assert (updated.status, updated.metadata, updated.config) == (
        "in_progress",
        {"owner": "ada"},
        {"a": 1},
    )
    assert (updated.title, updated.workspace_path) == (task.title, "/w")
    assert updated.updated_at > task.updated_at
    assert db.tasks.get(id=task.id) == updated


def test_update_clears_the_workspace_with_none(db: Database) -> None:
    task = _task(db, workspace_path="/w")

    cleared = db.tasks.update(id=task.id, patch=TaskPatch(workspace_path=None))

    assert cleared.workspace_path is None
    moved = db.tasks.update(id=task.id, patch=TaskPatch(workspace_path="/v", task_type="ops"))
    assert (moved.workspace_path, moved.task_type) == ("/v", "ops")


def test_an_update_that_changes_nothing_keeps_updated_at(db: Database) -> None:
    task = _task(db)
    assert db.tasks.update(id=task.id, patch=TaskPatch()).updated_at == task.updated_at
    assert db.tasks.update(id=task.id, patch=TaskPatch(status="pending")) == task


@pytest.mark.parametrize(
    ("patch", "argument"),
    [
        (TaskPatch(title=""), "title"),
        (TaskPatch(status="finished"), "status"),  # type: ignore[arg-type]
        (TaskPatch(task_type="Bad Type"), "task_type"),
        (TaskPatch(config=[]), "config"),  # type: ignore[arg-type]
        (TaskPatch(metadata={"x": math.nan}), "metadata"),
        (TaskPatch(workspace_path=""), "workspace_path"),
        (TaskPatch(description="\ud800"), "description"),
    ],
)
def test_update_refuses_bad_fields_and_changes_nothing(
    db: Database, conn: Conn, patch: TaskPatch, argument: str
) -> None:
    task = _task(db)
    before = _rows(conn)
    with pytest.raises(InvalidInput, match=argument):
        db.tasks.update(id=task.id, patch=patch)
    assert _rows(conn) == before


def test_update_and_delete_of_an_unknown_task(db: Database) -> None:
    with pytest.raises(NotFound):
        db.tasks.update(id=uuid.uuid4(), patch=TaskPatch(status="done"))
    with pytest.raises(NotFound):
        db.tasks.delete(id=uuid.uuid4())


def test_delete_detaches_the_task_from_every_workflow(
    db: Database, workflow_id: uuid.UUID, owner_id: uuid.UUID
) -> None:
    other = db.workflows.create(workflow=NewWorkflow(owner_id=owner_id, name="other")).id
    task, kept = _task(db, "a"), _task(db, "b")
    for wid in (workflow_id, other):
        db.tasks.attach(workflow_id=wid, task_id=task.id)
    db.tasks.attach(workflow_id=workflow_id, task_id=kept.id)

    db.tasks.delete(id=task.id)

    with pytest.raises(NotFound):
        db.tasks.get(id=task.id)
    assert _order(db, workflow_id) == [(1, kept.id)]
    assert db.tasks.list_for_workflow(workflow_id=other) == []


def test_deleting_a_workflow_detaches_its_tasks_and_keeps_them(
    db: Database, workflow_id: uuid.UUID, conn: Conn
) -> None:
    task = _task(db)
    db.tasks.attach(workflow_id=workflow_id, task_id=task.id)

    db.workflows.delete(id=workflow_id)

    assert db.tasks.get(id=task.id) == task
    assert conn.execute("SELECT count(*) FROM workflow_tasks").fetchone() == (0,)


# -- listings and counts ------------------------------------------------------------------


def _all_pages(list_page: Any, **filters: Any) -> list[list[uuid.UUID]]:
    pages, cursor = [], None
    while True:
        page = list_page(limit=2, cursor=cursor, **filters)
        pages.append([t.id for t in page.items])
        cursor = page.next_cursor
        if cursor is None:
            return pages


def test_list_pages_newest_first_without_gaps_or_repeats(db: Database) -> None:
    made = [_task(db, f"t{n}") for n in range(5)]

    pages = _all_pages(db.tasks.list)

    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == [t.id for t in reversed(made)]


def test_listings_filter_by_status_type_and_workspace(db: Database) -> None:
    a = _task(db, "a", status="done", task_type="docs", workspace_path="/a")
    b = _task(db, "b", status="pending", task_type="ops", workspace_path="/a")
    c = _task(db, "c", status="done", task_type="ops")
    d = _task(db, "d", status="done", task_type="ops", workspace_path="/b")

    by_status = _all_pages(db.tasks.list_by_status, status="done")
    by_type = _all_pages(db.tasks.list_by_type, task_type="ops")
    by_workspace = _all_pages(db.tasks.list_by_workspace, workspace_path="/a")

    assert [i for p in by_status for i in p] == [d.id, c.id, a.id]
    assert [i for p in by_type for i in p] == [d.id, c.id, b.id]
    assert [i for p in by_workspace for i in p] == [b.id, a.id]
    assert db.tasks.list_by_status(status="cancelled").items == []


def test_listings_filter_by_a_created_range(db: Database, conn: Conn) -> None:
    made = [_task(db, f"t{n}", status="done") for n in range(4)]
    base = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    for n, task in enumerate(made):
        conn.execute(
            "UPDATE tasks SET created_at = %s WHERE id = %s",
            (base + datetime.timedelta(days=n), task.id),
        )
    start, end = base + datetime.timedelta(days=1), base + datetime.timedelta(days=3)

    in_range = db.tasks.list(created_from=start, created_to=end)
    done_in_range = db.tasks.list_by_status(status="done", created_from=start, created_to=end)
    # Any time zone names the same instant.
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    from_tokyo = db.tasks.list(created_from=start.astimezone(tokyo))

    assert [t.id for t in in_range.items] == [made[2].id, made[1].id]
    assert [t.id for t in done_in_range.items] == [made[2].id, made[1].id]
    assert [t.id for t in from_tokyo.items] == [made[3].id, made[2].id, made[1].id]


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda db: db.tasks.list(limit=0), "limit"),
        (lambda db: db.tasks.list(limit=501), "limit"),
        (lambda db: db.tasks.list(created_from=datetime.datetime(2030, 1, 1)), "created_from"),
        (lambda db: db.tasks.list(created_to="2030-01-01"), "created_to"),
        (
            lambda db: db.tasks.list(
                created_from=datetime.datetime(2031, 1, 1, tzinfo=UTC),
                created_to=datetime.datetime(2030, 1, 1, tzinfo=UTC),
            ),
            "created_from",
        ),
        (lambda db: db.tasks.list_by_status(status="finished"), "status"),
        (lambda db: db.tasks.list_by_type(task_type=""), "task_type"),
        (lambda db: db.tasks.list_by_workspace(workspace_path=None), "workspace_path"),
        (lambda db: db.tasks.list(cursor=7), "cursor"),
    ],
)
def test_listings_refuse_bad_arguments_naming_them(db: Database, call: Any, argument: str) -> None:
    with pytest.raises(InvalidInput, match=argument):
        call(db)


def test_a_cursor_fits_only_its_own_listing_and_filters(db: Database) -> None:
    for n in range(3):
        _task(db, f"t{n}", status="done", task_type="docs", workspace_path="/a")
    by_status = db.tasks.list_by_status(status="done", limit=1).next_cursor
    everything = db.tasks.list(limit=1).next_cursor
    assert by_status is not None and everything is not None

    assert len(db.tasks.list_by_status(status="done", cursor=by_status).items) == 2
    with pytest.raises(InvalidCursor):
        db.tasks.list_by_status(status="pending", cursor=by_status)
    with pytest.raises(InvalidCursor):
        db.tasks.list(cursor=by_status)
    with pytest.raises(InvalidCursor):
        db.tasks.list_by_type(task_type="docs", cursor=everything)
    with pytest.raises(InvalidCursor):
        db.tasks.list_by_workspace(workspace_path="/a", cursor=everything)
    with pytest.raises(InvalidCursor):
        db.tasks.list(cursor=everything, created_to=datetime.datetime(2100, 1, 1, tzinfo=UTC))
    with pytest.raises(InvalidCursor):
        db.tasks.list(cursor=everything[:-2] + ("A" if everything[-2] != "A" else "B") + "A")


def test_count_by_status_lists_every_status(db: Database) -> None:
    assert db.tasks.count_by_status() == {
        "pending": 0,
        "in_progress": 0,
        "done": 0,
        "cancelled": 0,
    }
    for status in ("done", "done", "pending", "cancelled"):
        _task(db, status=status)

    assert db.tasks.count_by_status() == {
        "pending": 1,
        "in_progress": 0,
        "done": 2,
        "cancelled": 1,
    }


# -- tasks attached to workflows ----------------------------------------------------------


def test_attach_appends_in_order_and_lists_in_sequence(
    db: Database, workflow_id: uuid.UUID
) -> None:
    a, b, c = (_task(db, name) for name in "abc")

    first = db.tasks.attach(workflow_id=workflow_id, task_id=a.id, config={"retries": 2})
    db.tasks.attach(workflow_id=workflow_id, task_id=str(b.id))
    db.tasks.attach(workflow_id=workflow_id, task_id=c.id, sequence=10)
    db.tasks.attach(workflow_id=workflow_id, task_id=_task(db, "d").id, sequence=5)  # into the gap
    last = db.tasks.attach(workflow_id=workflow_id, task_id=_task(db, "e").id)

    assert isinstance(first, WorkflowTask)
    assert (first.workflow_id, first.sequence, first.config, first.task) == (
        workflow_id,
        0,
        {"retries": 2},
        a,
    )
    assert last.sequence == 11
    listed = db.tasks.list_for_workflow(workflow_id=workflow_id)
    assert [(wt.sequence, wt.task.title) for wt in listed] == [
        (0, "a"),
        (1, "b"),
        (5, "d"),
        (10, "c"),
        (11, "e"),
    ]
    assert listed[0] == first


def test_one_task_can_be_attached_to_several_workflows(
    db: Database, workflow_id: uuid.UUID, owner_id: uuid.UUID
) -> None:
    other = db.workflows.create(workflow=NewWorkflow(owner_id=owner_id, name="other")).id
    task = _task(db)

    db.tasks.attach(workflow_id=workflow_id, task_id=task.id)
    db.tasks.attach(workflow_id=other, task_id=task.id, sequence=3)

    assert _order(db, workflow_id) == [(0, task.id)]
    assert _order(db, other) == [(3, task.id)]


def test_attach_refuses_a_second_attachment_and_a_taken_sequence(
    db: Database, workflow_id: uuid.UUID, conn: Conn
) -> None:
    a, b = _task(db, "a"), _task(db, "b")
    db.tasks.attach(workflow_id=workflow_id, task_id=a.id, sequence=2)
    before = _rows(conn)

    with pytest.raises(Conflict, match=f"task {a.id} is already attached"):
        db.tasks.attach(workflow_id=workflow_id, task_id=a.id)
    with pytest.raises(Conflict, match="sequence 2 is already taken"):
        db.tasks.attach(workflow_id=workflow_id, task_id=b.id, sequence=2)
    assert _rows(conn) == before


@pytest.mark.parametrize(
    ("arguments", "error", "argument"),
    [
        ({"workflow_id": "nope"}, InvalidInput, "workflow id"),
        ({"task_id": None}, InvalidInput, "task id"),
        ({"sequence": -1}, InvalidInput, "sequence"),
        ({"sequence": 2**31}, InvalidInput, "sequence"),
        ({"sequence": True}, InvalidInput, "sequence"),
        ({"sequence": 1.0}, InvalidInput, "sequence"),
        ({"config": []}, InvalidInput, "config"),
        ({"config": {"x": math.nan}}, InvalidInput, "config"),
        ({"workflow_id": uuid.UUID(int=1)}, NotFound, "workflow"),
        ({"task_id": uuid.UUID(int=1)}, NotFound, "task"),
    ],
)
def test_attach_refuses_bad_or_unknown_arguments_and_writes_nothing(
    db: Database,
    workflow_id: uuid.UUID,
    conn: Conn,
    arguments: dict[str, Any],
    error: type[Exception],
    argument: str,
) -> None:
    task = _task(db)
    before = _rows(conn)
    with pytest.raises(error, match=argument):
        db.tasks.attach(**{"workflow_id": workflow_id, "task_id": task.id, **arguments})
    assert _rows(conn) == before


def test_detach_leaves_the_others_in_place(db: Database, workflow_id: uuid.UUID) -> None:
    a, b, c = (_task(db, name) for name in "abc")
    for task in (a, b, c):
        db.tasks.attach(workflow_id=workflow_id, task_id=task.id)

    db.tasks.detach(workflow_id=workflow_id, task_id=b.id)

    assert _order(db, workflow_id) == [(0, a.id), (2, c.id)]
    assert db.tasks.get(id=b.id) == b  # the task itself stays
    with pytest.raises(NotFound, match="is not attached"):
        db.tasks.detach(workflow_id=workflow_id, task_id=b.id)
    with pytest.raises(NotFound, match="workflow"):
        db.tasks.detach(workflow_id=uuid.uuid4(), task_id=a.id)


def test_reorder_renumbers_in_the_given_order(db: Database, workflow_id: uuid.UUID) -> None:
    a, b, c, d = (_task(db, name) for name in "abcd")
    for sequence, task in zip((0, 4, 7, 9), (a, b, c, d), strict=True):
        db.tasks.attach(workflow_id=workflow_id, task_id=task.id, sequence=sequence)

    moved = db.tasks.reorder(workflow_id=workflow_id, task_ids=[d.id, str(b.id), a.id, c.id])

    assert [(wt.sequence, wt.task.id) for wt in moved] == [
        (0, d.id),
        (1, b.id),
        (2, a.id),
        (3, c.id),
    ]
    assert _order(db, workflow_id) == [(wt.sequence, wt.task.id) for wt in moved]


def test_reorder_of_a_workflow_without_tasks(db: Database, workflow_id: uuid.UUID) -> None:
    assert db.tasks.reorder(workflow_id=workflow_id, task_ids=[]) == []
    with pytest.raises(NotFound):
        db.tasks.reorder(workflow_id=uuid.uuid4(), task_ids=[])


@pytest.mark.parametrize("shape", ["missing", "extra", "repeated", "foreign", "malformed"])
def test_reorder_requires_exactly_the_attached_tasks_and_changes_nothing_otherwise(
    db: Database, workflow_id: uuid.UUID, owner_id: uuid.UUID, conn: Conn, shape: str
) -> None:
    a, b, c = (_task(db, name) for name in "abc")
    for task in (a, b):
        db.tasks.attach(workflow_id=workflow_id, task_id=task.id)
    other = db.workflows.create(workflow=NewWorkflow(owner_id=owner_id, name="other")).id
    db.tasks.attach(workflow_id=other, task_id=c.id)
    shapes: dict[str, list[Any]] = {
        "missing": [b.id],
        "extra": [b.id, a.id, uuid.uuid4()],
        "repeated": [b.id, b.id],
        "foreign": [b.id, c.id],
        "malformed": [b.id, "nope"],
    }
    ids = shapes[shape]
    before = _rows(conn)

    with pytest.raises(InvalidInput, match="task"):
        db.tasks.reorder(workflow_id=workflow_id, task_ids=ids)
    assert _rows(conn) == before


def test_list_for_an_unknown_workflow(db: Database, workflow_id: uuid.UUID) -> None:
    assert db.tasks.list_for_workflow(workflow_id=workflow_id) == []
    with pytest.raises(NotFound):
        db.tasks.list_for_workflow(workflow_id=uuid.uuid4())


@pytest.mark.concurrency
@pytest.mark.parametrize("change", ["attach", "detach", "attach another"])
def test_a_reorder_that_waited_for_the_workflow_sees_what_changed_meanwhile(
    db: Database, conn: Conn, workflow_id: uuid.UUID, change: str
) -> None:
    """A reorder that was exact when it was called, but waited for the workflow's lock while
    an attach or detach committed, is judged on the tasks attached once it holds the lock:
    refused whole, the order left as the change made it."""
    a, b = _task(db, "a"), _task(db, "b")
    if change != "attach":
        db.tasks.attach(workflow_id=workflow_id, task_id=a.id)
    listed = [] if change == "attach" else [a.id]
    with ThreadPoolExecutor(1) as pool:
        with db.transaction() as tx:
            if change == "detach":
                tx.tasks.detach(workflow_id=workflow_id, task_id=a.id)
            else:
                task = a if change == "attach" else b
                tx.tasks.attach(workflow_id=workflow_id, task_id=task.id)
            waiting = pool.submit(db.tasks.reorder, workflow_id=workflow_id, task_ids=listed)
            wait_for_a_lock_wait(conn)
        expected = {"attach": 1, "detach": 0, "attach another": 2}[change]
        with pytest.raises(InvalidInput, match=f"exactly the {expected} tasks attached"):
            waiting.result(timeout=60)
    after = {"attach": [a.id], "detach": [], "attach another": [a.id, b.id]}[change]
    assert [task_id for _, task_id in _order(db, workflow_id)] == after


@pytest.mark.concurrency
def test_reorders_racing_attaches_and_detaches_keep_one_order(
    db: Database, workflow_id: uuid.UUID
) -> None:
    """Appenders, detachers and reorderers on real connections: every attach gets its own
    sequence (two appends never pick the same one), a reorder applies to exactly the
    tasks attached at that moment or is refused whole, and what is left attached is what
    the attaches and detaches that succeeded say."""
    rounds = 15
    pools = [[_task(db, f"w{w}-{n}") for n in range(rounds)] for w in range(3)]
    errors: list[BaseException] = []
    reorders = {"applied": 0, "refused": 0}
    kept: set[uuid.UUID] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(len(pools) + 2)

    def appender(tasks: list[Task]) -> None:
        barrier.wait()
        try:
            for n, task in enumerate(tasks):
                db.tasks.attach(workflow_id=workflow_id, task_id=task.id)
                if n % 2:
                    db.tasks.detach(workflow_id=workflow_id, task_id=task.id)
                else:
                    with lock:
                        kept.add(task.id)
        except BaseException as exc:
            errors.append(exc)

    appenders = [threading.Thread(target=appender, args=(tasks,)) for tasks in pools]

    def reorder_once() -> None:
        current = [wt.task.id for wt in db.tasks.list_for_workflow(workflow_id=workflow_id)]
        try:
            moved = db.tasks.reorder(workflow_id=workflow_id, task_ids=current[::-1])
        except InvalidInput:
            with lock:
                reorders["refused"] += 1
            return
        # Applied whole: exactly the listed tasks, renumbered 0..n-1 in that order.
        assert [(wt.sequence, wt.task.id) for wt in moved] == list(enumerate(current[::-1]))
        with lock:
            reorders["applied"] += 1

    def reorderer() -> None:
        barrier.wait()
        try:
            # As long as the attaches and detaches run (whether a reorder then lands or is
            # refused depends on the timing), then once more on a settled order.
            while any(t.is_alive() for t in appenders):
                reorder_once()
            reorder_once()
        except BaseException as exc:
            errors.append(exc)

    threads = [*appenders, *(threading.Thread(target=reorderer) for _ in range(2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert reorders["applied"] >= 2  # the reorders on a settled order were applied
    final = _order(db, workflow_id)
    assert {task_id for _, task_id in final} == kept
    sequences = [sequence for sequence, _ in final]
    assert len(set(sequences)) == len(sequences) == len(kept)


def test_the_readme_example(db: Database, workflow_id: uuid.UUID) -> None:
    review = db.tasks.create(
        task=NewTask(
            title="Review the schema", task_type="review", workspace_path="/srv/checkouts/etl"
        )
    )
    docs = db.tasks.create(task=NewTask(title="Write the runbook", task_type="docs"))
    assert db.tasks.attach(workflow_id=workflow_id, task_id=review.id).sequence == 0
    attached = db.tasks.attach(workflow_id=workflow_id, task_id=docs.id, config={"owner": "ada"})
    assert (attached.sequence, attached.config) == (1, {"owner": "ada"})
    db.tasks.reorder(workflow_id=workflow_id, task_ids=[docs.id, review.id])
    db.tasks.update(id=review.id, patch=TaskPatch(status="in_progress"))

    listed = db.tasks.list_for_workflow(workflow_id=workflow_id)
    assert [wt.task.title for wt in listed] == ["Write the runbook", "Review the schema"]
    assert db.tasks.count_by_status() == {
        "pending": 1,
        "in_progress": 1,
        "done": 0,
        "cancelled": 0,
    }
