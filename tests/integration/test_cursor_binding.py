"""Cursors are signed with the database's own key and bound to their listing's filters."""

from __future__ import annotations

import datetime
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from flowledger.database import Database, Settings, connect
from flowledger.errors import InvalidCursor, InvalidInput, MigrationError, Unavailable
from flowledger.records.catalog import NewPack
from flowledger.records.memory import NewMemoryItem, NewMemoryModule
from flowledger.records.runs import NewLogLine
from flowledger.records.workflows import NewWorkflow
from flowledger.repositories.pagination import CursorCodec, Page, listing_scope
from flowledger.tools.seed import SAMPLE_OWNER, seed

# The key every default-configured Database used before keys came from the database.
OLD_DEFAULT_KEY = hashlib.sha256(b"flowledger-default-cursor-key").digest()
LONG_AGO = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
SOON = datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class World:
    """Rows enough that every filtered listing below has a second page."""

    owner: uuid.UUID
    other_owner: uuid.UUID
    pack: uuid.UUID
    workflow: uuid.UUID
    execution: uuid.UUID
    step: uuid.UUID


@pytest.fixture
def world(db: Database) -> World:
    seed(db)
    owner = db.users.get_by_email(email=SAMPLE_OWNER)
    other = db.users.get_by_email(email="admin@example.com")
    pack = db.packs.get_by_ref(ref="core")
    for n in range(2):
        db.workflows.create(
            workflow=NewWorkflow(
                owner_id=owner.id,
                pack_id=pack.id,
                name=f"tagged-{n}",
                description="nightly export",
                status="active",
                tags=["x", "y"],
            )
        )
        item, _ = db.memory_items.create(
            item=NewMemoryItem(project="p", kind="decision", content=f"rule {n}", confidence=0.9)
        )
        module = db.memory_modules.create(module=NewMemoryModule(project="p", name=f"m{n}"))
        db.memory_modules.add_item(module_id=module.id, item_id=item.id)
        db.memory_packs.build(project="p", module_ids=[module.id], token_budget=1000)
        db.sessions.open(client_id=f"client-{n}")
    line = db.step_logs.list_by_execution(execution_id=db.executions.list().items[0].id).items[0]
    # A second line of the same step, so both log listings have a second page.
    db.step_logs.append(
        lines=[NewLogLine(step_id=line.step_id, execution_id=line.execution_id, message="more")]
    )
    return World(
        owner=owner.id,
        other_owner=other.id,
        pack=pack.id,
        workflow=db.executions.get(id=line.execution_id).workflow_id,
        execution=line.execution_id,
        step=line.step_id,
    )


Lister = Callable[..., Page[Any]]
Filters = Callable[[World], dict[str, Any]]


def _wf(**fixed: Any) -> Callable[[Database], Lister]:
    return lambda db: lambda **kw: db.workflows.list(**fixed, **kw)


# (listing, filters A (has a second page), filters B (any other filter values)).
CASES: dict[str, tuple[Callable[[Database], Lister], Filters, Filters]] = {
    "users role": (lambda db: db.users.list, lambda w: {}, lambda w: {"role": "admin"}),
    "users is_active": (
        lambda db: db.users.list,
        lambda w: {"is_active": True},
        lambda w: {"is_active": False},
    ),
    "workflows owner": (
        _wf(),
        lambda w: {"owner_id": w.owner},
        lambda w: {"owner_id": w.other_owner},
    ),
    "workflows status": (_wf(), lambda w: {"status": "active"}, lambda w: {"status": "draft"}),
    "workflows pack": (_wf(), lambda w: {"pack_id": w.pack}, lambda w: {}),
    "workflows enabled": (_wf(), lambda w: {"enabled": True}, lambda w: {"enabled": False}),
    "workflows trigger": (
        _wf(),
        lambda w: {"trigger_type": "manual"},
        lambda w: {"trigger_type": "schedule"},
    ),
    "workflows tags_all": (_wf(), lambda w: {"tags_all": ["x"]}, lambda w: {"tags_all": ["y"]}),
    "workflows tags_any": (
        _wf(),
        lambda w: {"tags_any": ["x"]},
        lambda w: {"tags_any": ["x", "z"]},
    ),
    "workflows search": (_wf(), lambda w: {"search": "nightly"}, lambda w: {"search": "export"}),
    "workflows created": (
        _wf(),
        lambda w: {"created_from": LONG_AGO},
        lambda w: {"created_from": LONG_AGO, "created_to": SOON},
    ),
    "workflows updated": (
        _wf(),
        lambda w: {"updated_to": SOON},
        lambda w: {"updated_to": SOON + datetime.timedelta(microseconds=1)},
    ),
    "workflows sort created_at, owner": (
        _wf(sort="created_at"),
        lambda w: {"owner_id": w.owner},
        lambda w: {"owner_id": w.other_owner},
    ),
    "workflows sort name, tags": (
        _wf(sort="name"),
        lambda w: {"tags_all": ["x", "y"]},
        lambda w: {"tags_all": ["x"]},
    ),
    "workflows list_by_pack vs list": (
        lambda db: (
            lambda **kw: (
                db.workflows.list_by_pack(**kw) if "pack_id" in kw else db.workflows.list(**kw)
            )
        ),
        lambda w: {"pack_id": w.pack},
        lambda w: {},
    ),
    "executions workflow": (
        lambda db: db.executions.list,
        lambda w: {},
        lambda w: {"workflow_id": w.workflow},
    ),
    "executions status": (
        lambda db: db.executions.list,
        lambda w: {"created_to": SOON},
        lambda w: {"created_to": SOON, "status": "completed"},
    ),
    "memory items project": (
        lambda db: db.memory_items.list,
        lambda w: {"project": "p"},
        lambda w: {"project": "q"},
    ),
    "memory items kind": (
        lambda db: db.memory_items.list,
        lambda w: {"project": "p", "kind": "decision"},
        lambda w: {"project": "p", "kind": "gotcha"},
    ),
    "memory items min_confidence": (
        lambda db: db.memory_items.list,
        lambda w: {"project": "p", "min_confidence": 0.5},
        lambda w: {"project": "p", "min_confidence": 0.8},
    ),
    "memory packs project": (
        lambda db: db.memory_packs.list,
        lambda w: {"project": "p"},
        lambda w: {"project": "q"},
    ),
    "step logs by execution": (
        lambda db: db.step_logs.list_by_execution,
        lambda w: {"execution_id": w.execution},
        lambda w: {"execution_id": uuid.uuid4()},
    ),
    "step logs by step": (
        lambda db: db.step_logs.list_by_step,
        lambda w: {"step_id": w.step},
        lambda w: {"step_id": uuid.uuid4()},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_cursor_is_refused_under_other_filters(db: Database, world: World, case: str) -> None:
    listing, filters_a, filters_b = CASES[case]
    lister = listing(db)
    first = lister(**filters_a(world), limit=1)
    assert first.next_cursor is not None, "filter set A must have a second page"

    # The cursor works under its own filters...
    second = lister(**filters_a(world), limit=1, cursor=first.next_cursor)
    assert second.items and second.items != first.items
    # ...and under no other.
    with pytest.raises(InvalidCursor, match="another one"):
        lister(**filters_b(world), limit=1, cursor=first.next_cursor)


def test_filters_spelled_differently_but_equal_keep_the_cursor(db: Database, world: World) -> None:
    first = db.workflows.list(tags_all=["y", "x"], owner_id=str(world.owner), limit=1)
    assert first.next_cursor is not None
    ist = datetime.timezone(datetime.timedelta(hours=5, minutes=30))

    second = db.workflows.list(
        tags_all=["x", "y", "x"],
        owner_id=world.owner,
        status=None,
        limit=1,
        cursor=first.next_cursor,
    )
    ranged = db.workflows.list(created_from=LONG_AGO, limit=1)
    assert ranged.next_cursor is not None
    same_instant = db.workflows.list(
        created_from=LONG_AGO.astimezone(ist), limit=1, cursor=ranged.next_cursor
    )

    assert second.items and same_instant.items


def test_a_cursor_of_one_listing_is_refused_by_every_other(db: Database, world: World) -> None:
    db.packs.create(pack=NewPack(ref="extra", label="Extra"))
    packs_cursor = db.packs.list(limit=1).next_cursor
    sessions_cursor = db.sessions.list_active(limit=1).next_cursor
    assert packs_cursor is not None and sessions_cursor is not None

    with pytest.raises(InvalidCursor):
        db.sessions.list_active(cursor=packs_cursor)
    with pytest.raises(InvalidCursor):
        db.packs.list(cursor=sessions_cursor)
    assert db.packs.list(limit=1, cursor=packs_cursor).items


def _positions() -> dict[str, tuple[str, list[Any]]]:
    """For some listings: their filter-free scope and a plausible position."""
    now = datetime.datetime.now(datetime.UTC)
    return {
        "users": ("users.list:created_at:desc", [now, uuid.uuid4()]),
        "packs": ("packs.list:ref:asc", ["a"]),
        "sessions": ("sessions.list_active:created_at:desc", [now, uuid.uuid4()]),
    }


@pytest.mark.parametrize("listing", ["users", "packs", "sessions"])
def test_a_cursor_forged_with_the_old_public_key_is_refused(db: Database, listing: str) -> None:
    scope, position = _positions()[listing]
    listers: dict[str, Lister] = {
        "users": db.users.list,
        "packs": db.packs.list,
        "sessions": db.sessions.list_active,
    }
    lister = listers[listing]
    filters: dict[str, Any] = {"role": None, "is_active": None} if listing == "users" else {}
    old = CursorCodec(OLD_DEFAULT_KEY)

    bound = listing_scope(scope, filters)
    for forged in (old.encode(scope, position), old.encode(bound, position)):
        with pytest.raises(InvalidCursor):
            lister(cursor=forged)
    # The same position signed with the database's key is accepted: only the key was wrong.
    lister(cursor=db._codec.encode(bound, position))


def test_cursors_work_across_two_databases_on_one_database(db_url: str) -> None:
    with (
        connect(db_url, min_size=1, max_size=1) as one,
        connect(db_url, min_size=1, max_size=1) as two,
    ):
        for n in range(3):
            one.sessions.open(client_id=f"c{n}")
        first = one.sessions.list_active(limit=2)
        assert first.next_cursor is not None

        rest = two.sessions.list_active(limit=2, cursor=first.next_cursor)

    assert [s.client_id for s in first.items + rest.items] == ["c2", "c1", "c0"]


def test_each_database_has_its_own_random_key(db_url: str, empty_db_url: str) -> None:
    from flowledger.tools.migrate import Migrator

    with Migrator(empty_db_url) as mig:
        mig.apply()
    keys = []
    for url in (db_url, empty_db_url):
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT key FROM cursor_key").fetchone()
            assert row is not None
            keys.append(bytes(row[0]))
    with (
        connect(db_url, min_size=1, max_size=1) as a,
        connect(empty_db_url, min_size=1, max_size=1) as b,
    ):
        a.sessions.open(client_id="x")
        a.sessions.open(client_id="y")
        b.sessions.open(client_id="x")
        cursor = a.sessions.list_active(limit=1).next_cursor
        assert cursor is not None
        with pytest.raises(InvalidCursor):
            b.sessions.list_active(cursor=cursor)

    assert len(keys[0]) == 32 and keys[0] != keys[1]


def test_a_shared_cursor_secret_overrides_the_database_key(db_url: str, empty_db_url: str) -> None:
    from flowledger.tools.migrate import Migrator

    with Migrator(empty_db_url) as mig:
        mig.apply()
    secret = "s" * 40
    with (
        connect(db_url, min_size=1, max_size=1, cursor_secret=secret) as a,
        connect(empty_db_url, min_size=1, max_size=1, cursor_secret=secret) as b,
    ):
        for name in ("x", "y"):
            a.sessions.open(client_id=name)
            b.sessions.open(client_id=name)
        cursor = a.sessions.list_active(limit=1).next_cursor
        assert cursor is not None

        assert b.sessions.list_active(cursor=cursor).items


def test_a_short_cursor_secret_is_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidInput, match="cursor_secret must be at least 32") as caught:
        Settings(cursor_secret="hunter2-hunter2")

    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("breakage", ["DELETE FROM cursor_key", "DROP TABLE cursor_key"])
def test_a_database_without_its_key_row_fails_to_open_clearly(db_url: str, breakage: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(breakage)

    with pytest.raises(MigrationError, match="no cursor key") as caught:
        connect(db_url, min_size=1, max_size=1, connect_attempts=1)
    assert "INSERT INTO cursor_key DEFAULT VALUES" in str(caught.value)
    # With a secret of its own, the key row is not needed.
    with connect(db_url, min_size=1, max_size=1, cursor_secret="k" * 32) as database:
        assert database.health() == {"postgres": "ok"}


def test_an_unopened_database_has_no_cursor_key() -> None:
    offline = Database(Settings(url="postgresql://nobody@localhost:1/none"))

    with pytest.raises(Unavailable, match="call open"):
        offline.sessions.list_active(cursor="AQ")


def test_a_new_key_row_rotates_the_key(db_url: str) -> None:
    with connect(db_url, min_size=1, max_size=1) as before:
        for name in ("x", "y"):
            before.sessions.open(client_id=name)
        cursor = before.sessions.list_active(limit=1).next_cursor
        assert cursor is not None
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM cursor_key")
        conn.execute("INSERT INTO cursor_key DEFAULT VALUES")

    with connect(db_url, min_size=1, max_size=1) as after:
        with pytest.raises(InvalidCursor):
            after.sessions.list_active(cursor=cursor)
        assert len(after.sessions.list_active().items) == 2
