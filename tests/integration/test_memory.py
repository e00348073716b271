"""Memory store against a real PostgreSQL: dedupe, recall lists, lifecycle, modules, packs."""

from __future__ import annotations

import datetime
import hashlib
import math
import threading
import uuid
from typing import Any

import psycopg
import pytest

from flowledger.database import Database
from flowledger.errors import Conflict, InvalidCursor, InvalidInput, NotFound
from flowledger.records.memory import MemoryItem, MemoryModule, NewMemoryItem, NewMemoryModule
from flowledger.repositories.memory import content_hash, estimate_tokens, normalise_content

Conn = psycopg.Connection[tuple[Any, ...]]
UTC = datetime.UTC


def _new(content: str = "Use UTC everywhere.", **fields: Any) -> NewMemoryItem:
    fields.setdefault("project", "p")
    fields.setdefault("kind", "decision")
    return NewMemoryItem(content=content, **fields)


def _item(db: Database, content: str, **fields: Any) -> MemoryItem:
    item, created = db.memory_items.create(item=_new(content, **fields))
    assert created
    return item


def _module(db: Database, name: str = "m", **fields: Any) -> MemoryModule:
    fields.setdefault("project", "p")
    return db.memory_modules.create(module=NewMemoryModule(name=name, **fields))


def _positions(conn: Conn, module_id: uuid.UUID) -> list[tuple[uuid.UUID, int]]:
    rows = conn.execute(
        "SELECT item_id, position FROM memory_module_items WHERE module_id = %s ORDER BY position",
        (module_id,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def _tamper(token: str) -> str:
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


# ---------------------------------------------------------------------------------------
# Content normalisation
# ---------------------------------------------------------------------------------------


def test_normalisation_strips_and_collapses_whitespace_but_keeps_case() -> None:
    assert normalise_content("  Use\tUTC \n\n everywhere. ") == "Use UTC everywhere."
    assert normalise_content("Use UTC") != normalise_content("use utc")
    # NFC: a precomposed and a combining "é" are the same text.
    assert normalise_content("caf\u00e9") == normalise_content("cafe\u0301")


def test_content_hash_is_the_sha256_of_the_normalised_content() -> None:
    assert content_hash(" a  b ") == hashlib.sha256(b"a b").digest()
    assert len(content_hash("x")) == 32


def test_token_estimate_is_a_quarter_of_the_characters_rounded_up() -> None:
    assert [estimate_tokens("x" * n) for n in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]


# ---------------------------------------------------------------------------------------
# Items: create and dedupe
# ---------------------------------------------------------------------------------------


def test_create_stores_the_item_with_defaults(db: Database) -> None:
    item, created = db.memory_items.create(item=_new())

    assert created
    assert (item.project, item.kind, item.content) == ("p", "decision", "Use UTC everywhere.")
    assert (item.confidence, item.status, item.provenance, item.anchors) == (
        0.5,
        "candidate",
        {},
        [],
    )
    assert (item.access_count, item.last_accessed_at, item.expires_at) == (0, None, None)
    assert item.content_hash == content_hash("Use UTC everywhere.")
    assert db.memory_items.get(id=item.id) == item


def test_create_stores_every_given_field(db: Database) -> None:
    expires = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    item, _ = db.memory_items.create(
        item=_new(
            kind="gotcha",
            confidence=0.9,
            status="active",
            provenance={"source": "review", "commit": "abc"},
            anchors=["src/app.py", "timezone"],
            expires_at=expires,
        )
    )

    assert (item.kind, item.confidence, item.status) == ("gotcha", 0.9, "active")
    assert item.provenance == {"source": "review", "commit": "abc"}
    assert (item.anchors, item.expires_at) == (["src/app.py", "timezone"], expires)


def test_creating_the_same_content_returns_the_existing_item(db: Database) -> None:
    first, _ = db.memory_items.create(item=_new("Use UTC everywhere.", confidence=0.4))

    again, created = db.memory_items.create(
        item=_new("  Use   UTC\neverywhere. ", confidence=0.9, kind="learning")
    )

    assert not created
    assert again == first  # content, kind and confidence of the first item are kept
    assert db.memory_items.list(project="p").items == [first]


def test_raise_confidence_keeps_the_larger_of_both(db: Database) -> None:
    first, _ = db.memory_items.create(item=_new(confidence=0.4))

    raised, created = db.memory_items.create(item=_new(confidence=0.8), raise_confidence=True)
    kept, _ = db.memory_items.create(item=_new(confidence=0.1), raise_confidence=True)

    assert not created
    assert (raised.id, raised.confidence) == (first.id, 0.8)
    assert kept.confidence == 0.8


def test_the_same_content_in_another_project_is_another_item(db: Database) -> None:
    a, _ = db.memory_items.create(item=_new(project="p"))
    b, created = db.memory_items.create(item=_new(project="q"))

    assert created
    assert a.id != b.id


def test_creating_a_deprecated_items_content_returns_it_deprecated(db: Database) -> None:
    item = _item(db, "Old rule.")
    db.memory_items.set_status(id=item.id, status="deprecated")

    again, created = db.memory_items.create(item=_new("Old rule."))

    assert (again.id, again.status, created) == (item.id, "deprecated", False)


def test_create_in_a_rolled_back_transaction_leaves_nothing(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.memory_items.create(item=_new())
        raise RuntimeError("abort")

    assert db.memory_items.list(project="p").items == []


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"project": " "}, "project must be a non-blank string"),
        ({"kind": "opinion"}, "kind must be one of decision, constraint"),
        ({"content": " \n "}, "content must not be blank"),
        ({"confidence": 1.5}, "confidence must be a number between 0 and 1"),
        ({"confidence": -0.1}, "confidence must be a number between 0 and 1"),
        ({"confidence": math.nan}, "confidence must be a number between 0 and 1"),
        ({"confidence": True}, "confidence must be a number between 0 and 1"),
        ({"status": "deprecated"}, "status must be one of candidate, active, stable"),
        ({"provenance": ["x"]}, "provenance must be a JSON object"),
        ({"anchors": "src/app.py"}, "anchors must be a list of strings"),
        ({"anchors": ["ok", None]}, "anchors must be a list of strings"),
        ({"expires_at": datetime.datetime(2030, 1, 1)}, "expires_at must be a timezone-aware"),
    ],
)
def test_create_validates_before_reaching_the_server(
    db: Database, fields: dict[str, Any], fragment: str
) -> None:
    fields = dict(fields)  # the parameter is shared by both faces' runs
    content = fields.pop("content", "Some rule.")
    with pytest.raises(InvalidInput) as caught:
        db.memory_items.create(item=_new(content, **fields))

    assert fragment in caught.value.message


def test_get_raises_not_found_and_refuses_malformed_ids(db: Database) -> None:
    with pytest.raises(NotFound):
        db.memory_items.get(id=uuid.uuid4())
    with pytest.raises(InvalidInput, match="memory item id must be a UUID"):
        db.memory_items.get(id="nope")


# ---------------------------------------------------------------------------------------
# Items: recall listing
# ---------------------------------------------------------------------------------------


def test_list_orders_by_confidence_then_newest_then_id(db: Database, conn: Conn) -> None:
    low = _item(db, "low", confidence=0.2)
    old_high = _item(db, "old high", confidence=0.9)
    new_high = _item(db, "new high", confidence=0.9)
    conn.execute(
        "UPDATE memory_items SET created_at = created_at - interval '1 hour' WHERE id = %s",
        (old_high.id,),
    )

    ids = [i.id for i in db.memory_items.list(project="p").items]

    assert ids == [new_high.id, old_high.id, low.id]


def test_list_on_an_empty_project_is_one_empty_page(db: Database) -> None:
    _item(db, "elsewhere", project="other")

    page = db.memory_items.list(project="p")

    assert (page.items, page.next_cursor) == ([], None)


def test_list_with_exactly_one_page_has_no_next_cursor(db: Database) -> None:
    for n in range(3):
        _item(db, f"item {n}")

    page = db.memory_items.list(project="p", limit=3)

    assert len(page.items) == 3
    assert page.next_cursor is None


def test_list_pages_through_full_ties_without_gaps(db: Database, conn: Conn) -> None:
    made = [_item(db, f"item {n}", confidence=0.5) for n in range(7)]
    conn.execute("UPDATE memory_items SET created_at = '2024-01-01T00:00:00Z'")

    seen: list[uuid.UUID] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = db.memory_items.list(project="p", limit=3, cursor=cursor)
        seen.extend(i.id for i in page.items)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert pages == 3
    assert seen == sorted((i.id for i in made), reverse=True)


def test_list_filters_by_status_kind_confidence_and_anchor(db: Database) -> None:
    a = _item(db, "a", kind="decision", confidence=0.9, status="active", anchors=["db", "api"])
    b = _item(db, "b", kind="gotcha", confidence=0.6, status="active", anchors=["db"])
    c = _item(db, "c", kind="decision", confidence=0.3, status="candidate")

    def ids(**filters: Any) -> list[uuid.UUID]:
        return [i.id for i in db.memory_items.list(project="p", **filters).items]

    assert ids(status="active") == [a.id, b.id]
    assert ids(status="candidate") == [c.id]
    assert ids(kind="decision") == [a.id, c.id]
    assert ids(min_confidence=0.6) == [a.id, b.id]
    assert ids(anchor="db") == [a.id, b.id]
    assert ids(anchor="api") == [a.id]
    assert ids(anchor="nowhere") == []
    assert ids(status="active", kind="gotcha", anchor="db", min_confidence=0.5) == [b.id]


def test_list_filters_by_a_half_open_creation_range(db: Database, conn: Conn) -> None:
    items = [_item(db, f"item {n}") for n in range(3)]
    for n, item in enumerate(items):
        conn.execute(
            "UPDATE memory_items SET created_at = %s WHERE id = %s",
            (datetime.datetime(2024, 1, 1 + n, tzinfo=UTC), item.id),
        )
    jan2 = datetime.datetime(2024, 1, 2, tzinfo=UTC)
    jan3 = datetime.datetime(2024, 1, 3, tzinfo=UTC)

    def ids(**filters: Any) -> set[uuid.UUID]:
        return {i.id for i in db.memory_items.list(project="p", **filters).items}

    assert ids(created_from=jan2) == {items[1].id, items[2].id}
    assert ids(created_to=jan2) == {items[0].id}
    assert ids(created_from=jan2, created_to=jan3) == {items[1].id}


@pytest.mark.parametrize(
    ("filters", "fragment"),
    [
        ({"status": "gone"}, "status must be one of"),
        ({"kind": "opinion"}, "kind must be one of"),
        ({"min_confidence": 2}, "min_confidence must be a number between 0 and 1"),
        ({"anchor": 5}, "anchor must be a string"),
        ({"limit": 0}, "limit must be between"),
        ({"limit": 501}, "limit must be between"),
        ({"created_from": datetime.datetime(2024, 1, 1)}, "created_from must be a timezone-aware"),
        ({"project": ""}, "project must be a non-blank string"),
    ],
)
def test_list_validates_its_filters(db: Database, filters: dict[str, Any], fragment: str) -> None:
    filters.setdefault("project", "p")
    with pytest.raises(InvalidInput) as caught:
        db.memory_items.list(**filters)

    assert fragment in caught.value.message


def test_list_refuses_altered_and_foreign_cursors(db: Database) -> None:
    for n in range(2):
        _item(db, f"item {n}")
    db.sessions.open(client_id="a")
    db.sessions.open(client_id="b")
    cursor = db.memory_items.list(project="p", limit=1).next_cursor
    foreign = db.sessions.list_active(limit=1).next_cursor
    assert cursor is not None and foreign is not None

    with pytest.raises(InvalidCursor):
        db.memory_items.list(project="p", cursor=_tamper(cursor))
    with pytest.raises(InvalidCursor):
        db.memory_items.list(project="p", cursor=foreign)


# ---------------------------------------------------------------------------------------
# Items: lifecycle, usage, expiry
# ---------------------------------------------------------------------------------------


def test_set_status_follows_the_lifecycle(db: Database) -> None:
    item = _item(db, "rule")

    statuses = [
        db.memory_items.set_status(id=item.id, status=s).status
        for s in ("active", "stable", "deprecated")
    ]

    assert statuses == ["active", "stable", "deprecated"]


def test_candidates_can_be_deprecated_directly(db: Database) -> None:
    item = _item(db, "rule")

    assert db.memory_items.set_status(id=item.id, status="deprecated").status == "deprecated"


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], "stable"),
        (["active"], "candidate"),
        (["active", "stable"], "active"),
        (["deprecated"], "active"),
        (["active", "deprecated"], "candidate"),
    ],
)
def test_set_status_refuses_illegal_moves_with_the_triggers_message(
    db: Database, path: list[str], illegal: str
) -> None:
    item = _item(db, "rule")
    for status in path:
        db.memory_items.set_status(id=item.id, status=status)  # type: ignore[arg-type]
    current = db.memory_items.get(id=item.id).status

    with pytest.raises(InvalidInput) as caught:
        db.memory_items.set_status(id=item.id, status=illegal)  # type: ignore[arg-type]

    assert caught.value.message == (
        f"illegal memory_items status transition: {current} -> {illegal}"
    )
    assert db.memory_items.get(id=item.id).status == current


def test_setting_the_current_status_changes_nothing(db: Database) -> None:
    item = _item(db, "rule")

    assert db.memory_items.set_status(id=item.id, status="candidate") == item


def test_set_status_refuses_unknown_statuses_and_items(db: Database) -> None:
    item = _item(db, "rule")

    with pytest.raises(InvalidInput, match="status must be one of"):
        db.memory_items.set_status(id=item.id, status="archived")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        db.memory_items.set_status(id=uuid.uuid4(), status="active")


def test_touch_counts_one_access_per_item(db: Database) -> None:
    a, b, untouched = (_item(db, c) for c in ("a", "b", "c"))

    count = db.memory_items.touch(ids=[a.id, str(b.id), a.id, uuid.uuid4()])
    db.memory_items.touch(ids=[a.id])

    assert count == 2
    after = {i: db.memory_items.get(id=i) for i in (a.id, b.id, untouched.id)}
    assert [after[i].access_count for i in (a.id, b.id, untouched.id)] == [2, 1, 0]
    assert after[a.id].last_accessed_at is not None
    assert after[untouched.id].last_accessed_at is None


def test_touch_of_nothing_is_zero_and_malformed_ids_are_refused(db: Database) -> None:
    assert db.memory_items.touch(ids=[]) == 0
    with pytest.raises(InvalidInput):
        db.memory_items.touch(ids=["nope"])


def test_expire_deprecates_items_past_their_expiry(db: Database) -> None:
    now = datetime.datetime.now(UTC)
    past = _item(db, "past", status="stable", expires_at=now - datetime.timedelta(hours=1))
    future = _item(db, "future", expires_at=now + datetime.timedelta(hours=1))
    forever = _item(db, "forever")
    gone = _item(db, "gone", expires_at=now - datetime.timedelta(hours=1))
    db.memory_items.set_status(id=gone.id, status="deprecated")

    expired = db.memory_items.expire()

    assert expired == [past.id]
    assert db.memory_items.get(id=past.id).status == "deprecated"
    assert db.memory_items.get(id=future.id).status == "candidate"
    assert db.memory_items.get(id=forever.id).status == "candidate"
    assert db.memory_items.expire() == []


def test_expire_at_a_given_time(db: Database) -> None:
    now = datetime.datetime.now(UTC)
    soon = _item(db, "soon", expires_at=now + datetime.timedelta(hours=1))
    later = _item(db, "later", expires_at=now + datetime.timedelta(days=2))

    assert db.memory_items.expire(now=now + datetime.timedelta(hours=1)) == [soon.id]
    assert db.memory_items.expire(now=now + datetime.timedelta(days=3)) == [later.id]
    with pytest.raises(InvalidInput):
        db.memory_items.expire(now=datetime.datetime(2030, 1, 1))


# ---------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------


def test_create_and_get_a_module(db: Database) -> None:
    module = _module(db, "db-rules", description="d", selectors={"kinds": ["gotcha"]}, priority=3)

    assert (module.project, module.name, module.description) == ("p", "db-rules", "d")
    assert (module.selectors, module.priority) == ({"kinds": ["gotcha"]}, 3)
    assert db.memory_modules.get(id=module.id) == module


def test_module_names_are_unique_per_project(db: Database) -> None:
    _module(db, "rules")
    _module(db, "rules", project="q")

    with pytest.raises(Conflict) as caught:
        _module(db, "rules")

    assert caught.value.message == "a context module named 'rules' already exists in project 'p'"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"name": " "}, "name must be a non-blank string"),
        ({"project": ""}, "project must be a non-blank string"),
        ({"selectors": []}, "selectors must be a JSON object"),
        ({"priority": 2**31}, "priority must be a 32-bit integer"),
        ({"priority": False}, "priority must be a 32-bit integer"),
    ],
)
def test_create_module_validates_its_input(
    db: Database, fields: dict[str, Any], fragment: str
) -> None:
    fields = dict(fields)  # the parameter is shared by both faces' runs
    name = fields.pop("name", "m")
    with pytest.raises(InvalidInput) as caught:
        _module(db, name, **fields)

    assert fragment in caught.value.message


def test_list_modules_by_priority_then_name(db: Database) -> None:
    low = _module(db, "a-low", priority=0)
    high_b = _module(db, "b-high", priority=5)
    high_a = _module(db, "a-high", priority=5)
    _module(db, "elsewhere", project="q")

    assert db.memory_modules.list(project="p") == [high_a, high_b, low]
    assert db.memory_modules.list(project="none") == []


def test_update_module_changes_only_the_given_fields(db: Database) -> None:
    module = _module(db, "m", description="old", selectors={"a": 1}, priority=1)

    updated = db.memory_modules.update(id=module.id, description="new", priority=9)

    assert (updated.name, updated.description) == ("m", "new")
    assert (updated.selectors, updated.priority) == ({"a": 1}, 9)
    renamed = db.memory_modules.update(id=module.id, name="n", selectors={})
    assert (renamed.name, renamed.selectors, renamed.priority) == ("n", {}, 9)


def test_update_module_reports_conflicts_and_missing_modules(db: Database) -> None:
    _module(db, "taken")
    module = _module(db, "m")

    with pytest.raises(Conflict):
        db.memory_modules.update(id=module.id, name="taken")
    with pytest.raises(NotFound):
        db.memory_modules.update(id=uuid.uuid4(), name="x")
    with pytest.raises(InvalidInput):
        db.memory_modules.update(id=module.id, name="")


def test_delete_module_keeps_its_items(db: Database, conn: Conn) -> None:
    module = _module(db)
    item = _item(db, "rule")
    db.memory_modules.add_item(module_id=module.id, item_id=item.id)

    db.memory_modules.delete(id=module.id)

    with pytest.raises(NotFound):
        db.memory_modules.get(id=module.id)
    assert db.memory_items.get(id=item.id) == item
    assert _positions(conn, module.id) == []
    with pytest.raises(NotFound):
        db.memory_modules.delete(id=module.id)


# ---------------------------------------------------------------------------------------
# Module membership
# ---------------------------------------------------------------------------------------


def test_add_item_appends_in_order(db: Database) -> None:
    module = _module(db)
    items = [_item(db, f"item {n}") for n in range(3)]

    positions = [db.memory_modules.add_item(module_id=module.id, item_id=i.id) for i in items]

    assert positions == [0, 1, 2]
    assert db.memory_modules.items(module_id=module.id) == items


def test_add_item_at_a_position_moves_the_later_items_down(db: Database, conn: Conn) -> None:
    module = _module(db)
    a, b, c, d = (_item(db, x) for x in "abcd")
    for item in (a, b, c):
        db.memory_modules.add_item(module_id=module.id, item_id=item.id)

    assert db.memory_modules.add_item(module_id=module.id, item_id=d.id, position=1) == 1

    assert _positions(conn, module.id) == [(a.id, 0), (d.id, 1), (b.id, 2), (c.id, 3)]


def test_add_item_at_the_front_and_at_the_end(db: Database) -> None:
    module = _module(db)
    a, b, c = (_item(db, x) for x in "abc")
    db.memory_modules.add_item(module_id=module.id, item_id=a.id, position=0)
    db.memory_modules.add_item(module_id=module.id, item_id=b.id, position=0)
    db.memory_modules.add_item(module_id=module.id, item_id=c.id, position=2)

    assert [i.id for i in db.memory_modules.items(module_id=module.id)] == [b.id, a.id, c.id]


def test_adding_a_member_again_is_a_conflict_that_changes_nothing(db: Database, conn: Conn) -> None:
    module = _module(db)
    a, b = _item(db, "a"), _item(db, "b")
    db.memory_modules.add_item(module_id=module.id, item_id=a.id)
    db.memory_modules.add_item(module_id=module.id, item_id=b.id)

    with pytest.raises(Conflict) as caught:
        db.memory_modules.add_item(module_id=module.id, item_id=b.id, position=0)

    assert caught.value.message == f"memory item {b.id} is already in this context module"
    assert _positions(conn, module.id) == [(a.id, 0), (b.id, 1)]


def test_add_item_refuses_bad_positions_and_foreign_items(db: Database) -> None:
    module = _module(db)
    item = _item(db, "rule")
    foreign = _item(db, "rule", project="q")

    with pytest.raises(InvalidInput, match="past the end of the module"):
        db.memory_modules.add_item(module_id=module.id, item_id=item.id, position=1)
    with pytest.raises(InvalidInput, match="position must be an integer >= 0"):
        db.memory_modules.add_item(module_id=module.id, item_id=item.id, position=-1)
    with pytest.raises(InvalidInput, match="belongs to project 'q'"):
        db.memory_modules.add_item(module_id=module.id, item_id=foreign.id)
    assert db.memory_modules.items(module_id=module.id) == []


def test_add_item_reports_missing_modules_and_items(db: Database) -> None:
    module = _module(db)
    item = _item(db, "rule")

    with pytest.raises(NotFound, match=r"context module .* not found"):
        db.memory_modules.add_item(module_id=uuid.uuid4(), item_id=item.id)
    with pytest.raises(NotFound, match=r"memory item .* not found"):
        db.memory_modules.add_item(module_id=module.id, item_id=uuid.uuid4())
    with pytest.raises(InvalidInput):
        db.memory_modules.add_item(module_id="x", item_id=item.id)


def test_remove_item_closes_the_gap(db: Database, conn: Conn) -> None:
    module = _module(db)
    a, b, c = (_item(db, x) for x in "abc")
    for item in (a, b, c):
        db.memory_modules.add_item(module_id=module.id, item_id=item.id)

    db.memory_modules.remove_item(module_id=module.id, item_id=a.id)

    assert _positions(conn, module.id) == [(b.id, 0), (c.id, 1)]
    db.memory_modules.remove_item(module_id=module.id, item_id=c.id)
    assert _positions(conn, module.id) == [(b.id, 0)]


def test_remove_item_reports_non_members_and_missing_modules(db: Database) -> None:
    module = _module(db)
    item = _item(db, "rule")

    with pytest.raises(NotFound, match="is not in context module"):
        db.memory_modules.remove_item(module_id=module.id, item_id=item.id)
    with pytest.raises(NotFound, match=r"context module .* not found"):
        db.memory_modules.remove_item(module_id=uuid.uuid4(), item_id=item.id)


def test_reorder_applies_a_permutation_in_one_go(db: Database, conn: Conn) -> None:
    module = _module(db)
    a, b, c = (_item(db, x) for x in "abc")
    for item in (a, b, c):
        db.memory_modules.add_item(module_id=module.id, item_id=item.id)

    db.memory_modules.reorder(module_id=module.id, item_ids=[c.id, str(a.id), b.id])

    assert _positions(conn, module.id) == [(c.id, 0), (a.id, 1), (b.id, 2)]
    db.memory_modules.reorder(module_id=module.id, item_ids=[a.id, c.id, b.id])  # a swap
    assert _positions(conn, module.id) == [(a.id, 0), (c.id, 1), (b.id, 2)]


@pytest.mark.parametrize("shape", ["missing", "extra", "stranger", "duplicate", "empty"])
def test_reorder_requires_exactly_the_members_and_changes_nothing_otherwise(
    db: Database, conn: Conn, shape: str
) -> None:
    module = _module(db)
    a, b, c = (_item(db, x) for x in "abc")
    stranger = _item(db, "not a member")
    for item in (a, b, c):
        db.memory_modules.add_item(module_id=module.id, item_id=item.id)
    lists = {
        "missing": [c.id, a.id],
        "extra": [c.id, a.id, b.id, stranger.id],
        "stranger": [c.id, stranger.id, a.id],
        "duplicate": [c.id, a.id, a.id],
        "empty": [],
    }
    before = _positions(conn, module.id)

    with pytest.raises(InvalidInput):
        db.memory_modules.reorder(module_id=module.id, item_ids=lists[shape])

    assert _positions(conn, module.id) == before


def test_reorder_of_an_empty_module_and_of_a_missing_one(db: Database) -> None:
    module = _module(db)

    db.memory_modules.reorder(module_id=module.id, item_ids=[])

    with pytest.raises(NotFound):
        db.memory_modules.reorder(module_id=uuid.uuid4(), item_ids=[])


def test_items_of_an_empty_and_of_a_missing_module(db: Database) -> None:
    module = _module(db)

    assert db.memory_modules.items(module_id=module.id) == []
    with pytest.raises(NotFound):
        db.memory_modules.items(module_id=uuid.uuid4())


@pytest.mark.concurrency
def test_concurrent_adds_keep_positions_dense(db: Database, conn: Conn) -> None:
    module = _module(db)
    items = [_item(db, f"item {n}") for n in range(6)]
    barrier = threading.Barrier(len(items))
    errors: list[BaseException] = []

    def add(item: MemoryItem) -> None:
        try:
            barrier.wait(timeout=10)
            db.memory_modules.add_item(module_id=module.id, item_id=item.id)
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == []
    positions = _positions(conn, module.id)
    assert [p for _, p in positions] == list(range(len(items)))
    assert {i for i, _ in positions} == {i.id for i in items}


# ---------------------------------------------------------------------------------------
# Packs
# ---------------------------------------------------------------------------------------


def _pack_setup(db: Database) -> tuple[MemoryModule, MemoryModule, dict[str, MemoryItem]]:
    items = {
        "top": _item(db, "t" * 8, confidence=0.95, status="active"),  # 2 tokens
        "big": _item(db, "b" * 40, confidence=0.9, status="stable"),  # 10 tokens
        "mid": _item(db, "m" * 5, confidence=0.7, status="active"),  # 2 tokens
        "low": _item(db, "l" * 4, confidence=0.1, status="active"),  # 1 token
        "candidate": _item(db, "c" * 4, confidence=1.0),
        "deprecated": _item(db, "d" * 4, confidence=1.0),
    }
    db.memory_items.set_status(id=items["deprecated"].id, status="deprecated")
    first = _module(db, "first", priority=1)
    second = _module(db, "second", priority=5)
    for key in ("low", "big", "candidate", "deprecated"):
        db.memory_modules.add_item(module_id=first.id, item_id=items[key].id)
    for key in ("mid", "top", "low"):
        db.memory_modules.add_item(module_id=second.id, item_id=items[key].id)
    return first, second, items


def test_build_takes_active_and_stable_items_once_by_confidence(db: Database) -> None:
    first, second, items = _pack_setup(db)

    pack = db.memory_packs.build(project="p", module_ids=[first.id, second.id], token_budget=100)

    assert [i.id for i in pack.items] == [items[k].id for k in ("top", "big", "mid", "low")]
    assert [i.tokens for i in pack.items] == [2, 10, 2, 1]
    assert pack.token_count == 15
    assert (pack.project, pack.token_budget, pack.module_ids) == ("p", 100, [first.id, second.id])
    # "low" is in both modules; it is packed under the one of higher priority.
    assert [i.module_id for i in pack.items] == [second.id, first.id, second.id, second.id]
    assert pack.items[0].content == "t" * 8
    assert (pack.items[0].kind, pack.items[0].confidence) == ("decision", 0.95)
    assert db.memory_packs.get(id=pack.id) == pack


def test_build_skips_an_item_that_does_not_fit_and_goes_on(db: Database) -> None:
    first, second, items = _pack_setup(db)

    pack = db.memory_packs.build(project="p", module_ids=[first.id, second.id], token_budget=5)

    assert [i.id for i in pack.items] == [items[k].id for k in ("top", "mid", "low")]
    assert pack.token_count == 5


def test_build_with_a_budget_below_every_item_is_an_empty_pack(db: Database) -> None:
    module = _module(db)
    item = _item(db, "x" * 40, status="active")
    db.memory_modules.add_item(module_id=module.id, item_id=item.id)

    pack = db.memory_packs.build(project="p", module_ids=[module.id], token_budget=3)

    assert (pack.items, pack.token_count) == ([], 0)


def test_build_leaves_out_items_past_their_expiry(db: Database) -> None:
    module = _module(db)
    past = datetime.datetime.now(UTC) - datetime.timedelta(minutes=1)
    expired = _item(db, "expired", status="active", expires_at=past)
    kept = _item(db, "kept", status="active")
    for item in (expired, kept):
        db.memory_modules.add_item(module_id=module.id, item_id=item.id)

    pack = db.memory_packs.build(project="p", module_ids=[module.id], token_budget=100)

    assert [i.id for i in pack.items] == [kept.id]


def test_build_lists_each_module_once(db: Database) -> None:
    module = _module(db)

    pack = db.memory_packs.build(
        project="p", module_ids=[module.id, str(module.id)], token_budget=10
    )

    assert pack.module_ids == [module.id]


def test_a_pack_keeps_what_was_handed_out_and_cannot_be_edited(db: Database, conn: Conn) -> None:
    module = _module(db)
    item = _item(db, "rule", status="active")
    db.memory_modules.add_item(module_id=module.id, item_id=item.id)
    pack = db.memory_packs.build(project="p", module_ids=[module.id], token_budget=10)

    db.memory_items.set_status(id=item.id, status="deprecated")
    db.memory_modules.delete(id=module.id)

    assert db.memory_packs.get(id=pack.id) == pack
    with pytest.raises(psycopg.errors.CheckViolation, match="rows are immutable"):
        conn.execute("UPDATE memory_context_packs SET token_count = 0 WHERE id = %s", (pack.id,))


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"module_ids": []}, InvalidInput, "at least one module"),
        ({"token_budget": 0}, InvalidInput, "token_budget must be between 1"),
        ({"token_budget": 2**31}, InvalidInput, "token_budget must be between 1"),
        ({"token_budget": True}, InvalidInput, "token_budget must be between 1"),
        ({"project": " "}, InvalidInput, "project must be a non-blank string"),
        ({"module_ids": ["x"]}, InvalidInput, "context module id must be a UUID"),
        ({"module_ids": [uuid.UUID(int=1)]}, NotFound, "context modules not found"),
        ({"project": "q"}, InvalidInput, "do not belong to project 'q'"),
    ],
)
def test_build_validates_its_input(
    db: Database, conn: Conn, kwargs: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    module = _module(db)
    args: dict[str, Any] = {"project": "p", "module_ids": [module.id], "token_budget": 10}
    args.update(kwargs)

    with pytest.raises(error, match=fragment):
        db.memory_packs.build(**args)

    assert conn.execute("SELECT count(*) FROM memory_context_packs").fetchone() == (0,)


def test_get_pack_raises_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        db.memory_packs.get(id=uuid.uuid4())


def test_list_packs_newest_first_in_pages_with_ties(db: Database, conn: Conn) -> None:
    module = _module(db)
    assert db.memory_packs.list(project="p").items == []
    packs = [
        db.memory_packs.build(project="p", module_ids=[module.id], token_budget=n + 1)
        for n in range(5)
    ]
    _module(db, "q-module", project="q")
    conn.execute("ALTER TABLE memory_context_packs DISABLE TRIGGER memory_context_packs_immutable")
    conn.execute("UPDATE memory_context_packs SET created_at = '2024-01-01T00:00:00Z'")

    first = db.memory_packs.list(project="p", limit=2)
    second = db.memory_packs.list(project="p", limit=2, cursor=first.next_cursor)
    third = db.memory_packs.list(project="p", limit=2, cursor=second.next_cursor)

    seen = [p.id for page in (first, second, third) for p in page.items]
    assert seen == sorted((p.id for p in packs), reverse=True)
    assert third.next_cursor is None
    assert db.memory_packs.list(project="p", limit=5).next_cursor is None
    assert db.memory_packs.list(project="q").items == []
    with pytest.raises(InvalidCursor):
        db.memory_packs.list(project="p", cursor=_tamper(first.next_cursor or ""))


def test_build_in_a_rolled_back_transaction_leaves_no_pack(db: Database) -> None:
    module = _module(db)

    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.memory_packs.build(project="p", module_ids=[module.id], token_budget=10)
        raise RuntimeError("abort")

    assert db.memory_packs.list(project="p").items == []
