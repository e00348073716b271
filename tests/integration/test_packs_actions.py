"""Packs and actions against a real PostgreSQL: CRUD, ref pages, cascades, workflow links."""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg
import pytest

from flowledger.database import Database
from flowledger.errors import Conflict, InvalidCursor, InvalidInput, NotFound
from flowledger.records.catalog import (
    Action,
    ActionPatch,
    NewAction,
    NewPack,
    Pack,
    PackPatch,
)
from flowledger.repositories.pagination import listing_scope

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def pack(db: Database) -> Pack:
    return db.packs.create(pack=NewPack(ref="core", label="Core"))


@pytest.fixture
def workflow_id(conn: Conn) -> uuid.UUID:
    """A workflow, inserted directly: it needs an owner, nothing else."""
    row = conn.execute(
        """
        WITH owner AS (
            INSERT INTO users (email, display_name) VALUES ('owner@example.com', 'Owner')
            RETURNING id
        )
        INSERT INTO workflows (owner_id, name) SELECT id, 'deploy' FROM owner RETURNING id
        """
    ).fetchone()
    assert row is not None
    found: uuid.UUID = row[0]
    return found


def _action(pack: Pack, name: str, **fields: Any) -> NewAction:
    return NewAction(pack_id=pack.id, ref=f"{pack.ref}.{name}", entrypoint=f"run_{name}", **fields)


def _tamper(token: str) -> str:
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


# packs


def test_create_pack_applies_defaults(db: Database, pack: Pack) -> None:
    assert (pack.ref, pack.label, pack.description, pack.version) == ("core", "Core", "", "0.1.0")
    assert pack.created_at.tzinfo is not None
    assert db.packs.get(id=pack.id) == pack
    assert db.packs.get(id=str(pack.id)) == pack
    assert db.packs.get_by_ref(ref="core") == pack


def test_create_pack_rejects_a_duplicate_ref(db: Database, pack: Pack) -> None:
    with pytest.raises(Conflict) as caught:
        db.packs.create(pack=NewPack(ref="core", label="Another core"))

    assert caught.value.message == "a pack with ref 'core' already exists"
    assert caught.value.constraint == "packs_ref_key"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"ref": "Core"}, "pack ref must be lowercase"),
        ({"ref": "1core"}, "pack ref must be lowercase"),
        ({"ref": "core.http"}, "pack ref must be lowercase"),
        ({"label": ""}, "label must not be blank"),
        ({"version": " "}, "version must not be blank"),
    ],
)
def test_create_pack_validates_before_reaching_the_server(
    db: Database, fields: dict[str, Any], fragment: str
) -> None:
    new = NewPack(**{"ref": "core", "label": "Core", **fields})

    with pytest.raises(InvalidInput, match=fragment) as caught:
        db.packs.create(pack=new)

    assert caught.value.sqlstate is None


def test_get_pack_raises_not_found_and_validates(db: Database) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound, match=f"pack {missing} not found"):
        db.packs.get(id=missing)
    with pytest.raises(NotFound, match="no pack with ref 'nope'"):
        db.packs.get_by_ref(ref="nope")
    with pytest.raises(InvalidInput):
        db.packs.get(id="core")
    with pytest.raises(InvalidInput):
        db.packs.get_by_ref(ref="No Pack")


def test_list_packs_pages_in_ref_order(db: Database) -> None:
    refs = ["net", "aws", "core", "slack", "gcp", "db", "k8s"]
    for ref in refs:
        db.packs.create(pack=NewPack(ref=ref, label=ref.upper()))

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = db.packs.list(limit=3, cursor=cursor)
        pages += 1
        seen.extend(p.ref for p in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert pages == 3
    assert seen == sorted(refs)


def test_list_packs_on_an_empty_catalog(db: Database) -> None:
    page = db.packs.list()

    assert (page.items, page.next_cursor) == ([], None)


def test_list_packs_rejects_bad_limits_and_cursors(db: Database) -> None:
    for ref in ("a", "b"):
        db.packs.create(pack=NewPack(ref=ref, label=ref))
    cursor = db.packs.list(limit=1).next_cursor
    assert cursor is not None

    with pytest.raises(InvalidInput, match="limit"):
        db.packs.list(limit=0)
    for bad in (_tamper(cursor), cursor + "A", "%%%"):
        with pytest.raises(InvalidCursor):
            db.packs.list(limit=1, cursor=bad)


def test_list_packs_rejects_a_signed_cursor_holding_the_wrong_type(db: Database) -> None:
    forged = db._codec.encode(listing_scope("packs.list:ref:asc", {}), [42])

    with pytest.raises(InvalidCursor, match="ref position"):
        db.packs.list(cursor=forged)


def test_update_pack_changes_only_the_given_fields(db: Database, pack: Pack) -> None:
    updated = db.packs.update(id=pack.id, patch=PackPatch(version="1.2.0", description="Basics"))

    assert (updated.version, updated.description, updated.label) == ("1.2.0", "Basics", "Core")
    assert updated.updated_at > pack.updated_at
    assert db.packs.update(id=pack.id, patch=PackPatch()) == updated


def test_update_pack_raises_not_found_and_validates(db: Database, pack: Pack) -> None:
    with pytest.raises(NotFound):
        db.packs.update(id=uuid.uuid4(), patch=PackPatch(label="X"))
    with pytest.raises(InvalidInput, match="label must not be blank"):
        db.packs.update(id=pack.id, patch=PackPatch(label=" "))
    with pytest.raises(InvalidInput, match="version must not be blank"):
        db.packs.update(id=pack.id, patch=PackPatch(version=""))


def test_delete_pack_cascades_to_its_actions_and_unsets_workflows_pack(
    db: Database, conn: Conn, pack: Pack, workflow_id: uuid.UUID
) -> None:
    action = db.actions.create(action=_action(pack, "http"))
    db.actions.link_workflow(action_id=action.id, workflow_id=workflow_id)
    conn.execute("UPDATE workflows SET pack_id = %s WHERE id = %s", (pack.id, workflow_id))
    other = db.packs.create(pack=NewPack(ref="aws", label="AWS"))
    kept = db.actions.create(action=_action(other, "s3"))

    db.packs.delete(id=pack.id)

    with pytest.raises(NotFound):
        db.packs.get(id=pack.id)
    with pytest.raises(NotFound):
        db.actions.get(id=action.id)
    assert db.actions.get(id=kept.id) == kept
    row = conn.execute("SELECT pack_id FROM workflows WHERE id = %s", (workflow_id,)).fetchone()
    assert row == (None,)


def test_delete_pack_raises_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        db.packs.delete(id=uuid.uuid4())
    with pytest.raises(InvalidInput):
        db.packs.delete(id="core")


# actions


def test_create_action_applies_defaults(db: Database, pack: Pack) -> None:
    action = db.actions.create(action=_action(pack, "http"))

    assert (action.pack_id, action.ref, action.entrypoint) == (pack.id, "core.http", "run_http")
    assert (action.description, action.param_schema, action.out_schema) == ("", {}, {})
    assert (action.is_workflow, action.workflow_id) == (False, None)
    assert db.actions.get(id=action.id) == action
    assert db.actions.get(id=str(action.id)) == action
    assert db.actions.get_by_ref(ref="core.http") == action


def test_create_action_stores_json_schemas(db: Database, pack: Pack) -> None:
    params = {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]}
    action = db.actions.create(
        action=_action(pack, "http", param_schema=params, out_schema={"type": "object"})
    )

    assert db.actions.get(id=action.id).param_schema == params
    assert action.out_schema == {"type": "object"}


def test_create_action_rejects_a_duplicate_ref(db: Database, pack: Pack) -> None:
    db.actions.create(action=_action(pack, "http"))

    with pytest.raises(Conflict) as caught:
        db.actions.create(action=_action(pack, "http"))

    assert caught.value.message == "an action with ref 'core.http' already exists"


def test_create_action_in_an_unknown_pack_is_invalid_input(db: Database) -> None:
    missing = uuid.uuid4()

    with pytest.raises(InvalidInput) as caught:
        db.actions.create(action=NewAction(pack_id=missing, ref="core.http", entrypoint="x"))

    assert caught.value.message == f"pack {missing} does not exist"
    assert caught.value.constraint == "actions_pack_id_fkey"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"ref": "http"}, "action ref must be '<pack>.<name>'"),
        ({"ref": "core.HTTP"}, "action ref must be '<pack>.<name>'"),
        ({"ref": "core.http.get"}, "action ref must be '<pack>.<name>'"),
        ({"entrypoint": "  "}, "entrypoint must not be blank"),
        ({"param_schema": ["not", "an", "object"]}, "param_schema must be a JSON object"),
        ({"out_schema": "{}"}, "out_schema must be a JSON object"),
        ({"pack_id": "pack-1"}, "pack id must be a UUID"),
    ],
)
def test_create_action_validates_before_reaching_the_server(
    db: Database, pack: Pack, fields: dict[str, Any], fragment: str
) -> None:
    new = NewAction(**{"pack_id": pack.id, "ref": "core.http", "entrypoint": "x", **fields})

    with pytest.raises(InvalidInput, match=fragment) as caught:
        db.actions.create(action=new)

    assert caught.value.sqlstate is None


def test_get_action_raises_not_found_and_validates(db: Database) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound, match=f"action {missing} not found"):
        db.actions.get(id=missing)
    with pytest.raises(NotFound, match=re.escape("no action with ref 'core.nope'")):
        db.actions.get_by_ref(ref="core.nope")
    with pytest.raises(InvalidInput):
        db.actions.get(id="1")
    with pytest.raises(InvalidInput):
        db.actions.get_by_ref(ref="core")


def test_list_by_pack_returns_the_packs_actions_in_ref_order(db: Database, pack: Pack) -> None:
    created = [db.actions.create(action=_action(pack, n)) for n in ("ssh", "http", "echo")]
    other = db.packs.create(pack=NewPack(ref="aws", label="AWS"))
    db.actions.create(action=_action(other, "s3"))

    listed = db.actions.list_by_pack(pack_id=pack.id)

    assert listed == sorted(created, key=lambda a: a.ref)
    assert db.actions.list_by_pack(pack_id=str(uuid.uuid4())) == []
    with pytest.raises(InvalidInput):
        db.actions.list_by_pack(pack_id="core")


def test_update_action_changes_only_the_given_fields(db: Database, pack: Pack) -> None:
    action = db.actions.create(action=_action(pack, "http", param_schema={"type": "object"}))

    updated = db.actions.update(
        id=action.id, patch=ActionPatch(entrypoint="http:get", out_schema={"type": "string"})
    )

    assert (updated.entrypoint, updated.out_schema) == ("http:get", {"type": "string"})
    assert (updated.param_schema, updated.description) == ({"type": "object"}, "")
    assert updated.updated_at > action.updated_at
    # An empty dict replaces the schema; None keeps it.
    cleared = db.actions.update(id=action.id, patch=ActionPatch(param_schema={}))
    assert (cleared.param_schema, cleared.out_schema) == ({}, {"type": "string"})


def test_update_action_raises_not_found_and_validates(db: Database, pack: Pack) -> None:
    action = db.actions.create(action=_action(pack, "http"))

    with pytest.raises(NotFound):
        db.actions.update(id=uuid.uuid4(), patch=ActionPatch(description="x"))
    with pytest.raises(InvalidInput, match="entrypoint must not be blank"):
        db.actions.update(id=action.id, patch=ActionPatch(entrypoint=""))
    with pytest.raises(InvalidInput, match="out_schema must be a JSON object"):
        db.actions.update(id=action.id, patch=ActionPatch(out_schema=[]))  # type: ignore[arg-type]


def test_delete_action(db: Database, pack: Pack) -> None:
    action = db.actions.create(action=_action(pack, "http"))

    db.actions.delete(id=action.id)

    with pytest.raises(NotFound):
        db.actions.get(id=action.id)
    with pytest.raises(NotFound, match=f"action {action.id} not found"):
        db.actions.delete(id=action.id)


def test_link_and_unlink_workflow(db: Database, pack: Pack, workflow_id: uuid.UUID) -> None:
    action = db.actions.create(action=_action(pack, "deploy"))
    plain = db.actions.create(action=_action(pack, "http"))

    linked = db.actions.link_workflow(action_id=action.id, workflow_id=str(workflow_id))

    assert (linked.is_workflow, linked.workflow_id) == (True, workflow_id)
    assert db.actions.list_workflow_actions() == [linked]

    unlinked = db.actions.unlink_workflow(action_id=action.id)

    assert (unlinked.is_workflow, unlinked.workflow_id) == (False, None)
    assert db.actions.list_workflow_actions() == []
    assert db.actions.get(id=plain.id) == plain


def test_list_workflow_actions_in_ref_order(
    db: Database, pack: Pack, workflow_id: uuid.UUID
) -> None:
    linked: list[Action] = []
    for name in ("zz", "aa", "mm"):
        action = db.actions.create(action=_action(pack, name))
        linked.append(db.actions.link_workflow(action_id=action.id, workflow_id=workflow_id))
    db.actions.create(action=_action(pack, "bb"))

    assert db.actions.list_workflow_actions() == sorted(linked, key=lambda a: a.ref)


def test_link_workflow_errors(db: Database, pack: Pack, workflow_id: uuid.UUID) -> None:
    action = db.actions.create(action=_action(pack, "deploy"))
    missing = uuid.uuid4()

    with pytest.raises(InvalidInput) as caught:
        db.actions.link_workflow(action_id=action.id, workflow_id=missing)
    assert caught.value.message == f"workflow {missing} does not exist"
    with pytest.raises(NotFound):
        db.actions.link_workflow(action_id=missing, workflow_id=workflow_id)
    with pytest.raises(NotFound):
        db.actions.unlink_workflow(action_id=missing)
    with pytest.raises(InvalidInput, match="workflow id must be a UUID"):
        db.actions.link_workflow(action_id=action.id, workflow_id="deploy")
    assert db.actions.get(id=action.id) == action


def test_a_linked_workflow_cannot_be_deleted_before_its_action(
    db: Database, conn: Conn, pack: Pack, workflow_id: uuid.UUID
) -> None:
    action = db.actions.create(action=_action(pack, "deploy"))
    db.actions.link_workflow(action_id=action.id, workflow_id=workflow_id)

    # ON DELETE RESTRICT: PostgreSQL 16+ reports 23001, 15 reports 23503.
    refused = (psycopg.errors.RestrictViolation, psycopg.errors.ForeignKeyViolation)
    with pytest.raises(refused) as info:
        conn.execute("DELETE FROM workflows WHERE id = %s", (workflow_id,))
    assert info.value.diag.constraint_name == "actions_workflow_id_fkey"

    db.actions.unlink_workflow(action_id=action.id)
    conn.execute("DELETE FROM workflows WHERE id = %s", (workflow_id,))
