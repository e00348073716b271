"""Workflows repository against a real PostgreSQL: create and look-ups, optimistic locking,
definition versions, filtered and sorted keyset listing."""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from flowledger.database import Database, Settings
from flowledger.errors import Conflict, InvalidCursor, InvalidInput, NotFound, StaleWrite
from flowledger.records.catalog import NewAction, NewPack
from flowledger.records.identity import NewUser, User
from flowledger.records.workflows import NewWorkflow, Workflow, WorkflowPatch
from flowledger.repositories.pagination import Page
from flowledger.repositories.queries import query

Conn = psycopg.Connection[tuple[Any, ...]]
T0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


@pytest.fixture
def owner(db: Database) -> User:
    return db.users.create(user=NewUser(email="dev@example.com", display_name="Dev"))


@pytest.fixture
def offline() -> Iterator[Database]:
    """A Database that was never opened: any SQL would raise Unavailable, so an
    InvalidInput from it proves the input was rejected before reaching the server."""
    database = Database(Settings(url="postgresql://nobody@localhost:1/none"))
    yield database


def _new(owner_id: uuid.UUID | str, name: str = "etl", **fields: Any) -> NewWorkflow:
    return NewWorkflow(owner_id=owner_id, name=name, **fields)


def _names(page: Page[Workflow]) -> list[str]:
    return [w.name for w in page.items]


def _tamper(token: str) -> str:
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


def _count(conn: Conn, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


# -- create and look-ups -------------------------------------------------------------------


def test_create_applies_defaults_and_snapshots_version_1(db: Database, owner: User) -> None:
    wf = db.workflows.create(workflow=_new(owner.id, description="Loads data"))

    assert (wf.owner_id, wf.name, wf.description, wf.pack_id) == (
        owner.id,
        "etl",
        "Loads data",
        None,
    )
    assert (wf.status, wf.enabled, wf.trigger_type, wf.schedule) == ("draft", True, "manual", None)
    assert (wf.definition, wf.param_schema, wf.out_schema, wf.tags) == ({}, {}, {}, [])
    assert (wf.version, wf.row_version) == (1, 1)
    assert wf.created_at.tzinfo is not None and wf.updated_at == wf.created_at
    [v1] = db.workflows.versions(workflow_id=wf.id)
    assert (v1.workflow_id, v1.version, v1.definition, v1.definition_yaml) == (wf.id, 1, {}, "")


def test_create_stores_every_field(db: Database, owner: User) -> None:
    pack = db.packs.create(pack=NewPack(ref="core", label="Core"))
    wf = db.workflows.create(
        workflow=_new(
            str(owner.id),
            "nightly_etl-2",
            pack_id=str(pack.id),
            status="active",
            enabled=False,
            trigger_type="schedule",
            schedule="0 2 * * *",
            definition_yaml="tasks: []\n",
            definition={"tasks": []},
            param_schema={"type": "object"},
            out_schema={"type": "object", "properties": {}},
            tags=["etl", "nightly"],
        )
    )

    assert db.workflows.get(id=str(wf.id)) == wf
    assert (wf.pack_id, wf.status, wf.enabled) == (pack.id, "active", False)
    assert (wf.trigger_type, wf.schedule) == ("schedule", "0 2 * * *")
    assert (wf.definition_yaml, wf.definition) == ("tasks: []\n", {"tasks": []})
    assert wf.out_schema == {"type": "object", "properties": {}}
    assert wf.tags == ["etl", "nightly"]


def test_create_rejects_a_duplicate_name_of_the_same_owner_only(db: Database, owner: User) -> None:
    db.workflows.create(workflow=_new(owner.id, "etl"))
    other = db.users.create(user=NewUser(email="other@example.com", display_name="Other"))

    with pytest.raises(Conflict) as caught:
        db.workflows.create(workflow=_new(owner.id, "etl"))

    assert caught.value.message == "a workflow named 'etl' already exists for this owner"
    assert caught.value.constraint == "workflows_owner_id_name_key"
    assert db.workflows.create(workflow=_new(other.id, "etl")).owner_id == other.id


def test_create_rejects_an_unknown_owner_or_pack(db: Database, owner: User) -> None:
    ghost = uuid.uuid4()

    with pytest.raises(InvalidInput, match=f"owner {ghost} does not exist"):
        db.workflows.create(workflow=_new(ghost))
    with pytest.raises(InvalidInput, match=f"pack {ghost} does not exist"):
        db.workflows.create(workflow=_new(owner.id, pack_id=ghost))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "ETL"}, "workflow name 'ETL' must be lowercase"),
        ({"name": "9lives"}, "must be lowercase letters"),
        ({"name": "a" * 64}, "at most 63 characters"),
        ({"name": "a/b"}, "must be lowercase letters"),
        ({"status": "live"}, "status must be one of active, archived, draft; got 'live'"),
        ({"trigger_type": "cron"}, "trigger_type must be one of"),
        ({"trigger_type": "schedule"}, "a schedule is required exactly when"),
        ({"schedule": "0 2 * * *"}, "a schedule is required exactly when"),
        ({"trigger_type": "schedule", "schedule": "every day"}, "schedule must be a cron rule"),
        ({"trigger_type": "schedule", "schedule": "0 2 * *"}, "schedule must be a cron rule"),
        # Shaped like cron, yet no evaluator can run them.
        (
            {"trigger_type": "schedule", "schedule": "61 * * * *"},
            "'61 \\* \\* \\* \\*': Bad minute",
        ),
        ({"trigger_type": "schedule", "schedule": "0 0 30 2 *"}, "Bad day-of-month"),
        ({"trigger_type": "schedule", "schedule": "0 2 * * 8"}, "Bad day-of-week"),
        ({"trigger_type": "schedule", "schedule": "*/0 * * * *"}, "Bad minute"),
        ({"trigger_type": "schedule", "schedule": "@every"}, "schedule must be a cron rule"),
        ({"definition": ["not", "an", "object"]}, "definition must be a JSON object"),
        ({"param_schema": "{}"}, "param_schema must be a JSON object"),
        ({"tags": "etl"}, "tags must be a list of non-blank strings"),
        ({"tags": ["etl", " "]}, "tags must be a list of non-blank strings"),
        ({"owner_id": "not-a-uuid"}, "owner id must be a UUID"),
        ({"pack_id": "nope"}, "pack id must be a UUID"),
    ],
)
def test_create_validates_before_any_sql(
    offline: Database, fields: dict[str, Any], message: str
) -> None:
    base: dict[str, Any] = {"owner_id": uuid.uuid4(), "name": "etl"}
    with pytest.raises(InvalidInput, match=message):
        offline.workflows.create(workflow=NewWorkflow(**{**base, **fields}))


def test_create_accepts_cron_macros_and_six_field_rules(db: Database, owner: User) -> None:
    for name, rule in [("a", "@daily"), ("b", "*/15 0-6 * * MON-FRI"), ("c", "0 0 12 * * ?")]:
        wf = db.workflows.create(
            workflow=_new(owner.id, name, trigger_type="schedule", schedule=rule)
        )
        assert wf.schedule == rule


def test_get_raises_not_found_or_invalid_input(db: Database) -> None:
    ghost = uuid.uuid4()
    with pytest.raises(NotFound, match=f"workflow {ghost} not found"):
        db.workflows.get(id=ghost)
    with pytest.raises(InvalidInput, match="workflow id must be a UUID"):
        db.workflows.get(id="42")


def test_get_by_name_and_by_ref(db: Database, owner: User) -> None:
    wf = db.workflows.create(workflow=_new(owner.id, "nightly-etl"))

    assert db.workflows.get_by_name(owner_id=owner.id, name="nightly-etl") == wf
    # The email part of a reference is matched regardless of case.
    assert db.workflows.get_by_ref(ref="Dev@Example.com/nightly-etl") == wf
    with pytest.raises(NotFound, match="has no workflow named 'other'"):
        db.workflows.get_by_name(owner_id=owner.id, name="other")
    with pytest.raises(NotFound, match=r"no workflow 'dev@example\.com/other'"):
        db.workflows.get_by_ref(ref="dev@example.com/other")
    with pytest.raises(NotFound):
        db.workflows.get_by_ref(ref="nobody@example.com/nightly-etl")


@pytest.mark.parametrize("ref", ["nightly-etl", "dev@example.com", "no-at-sign/etl", "a@b/BAD"])
def test_get_by_ref_rejects_a_malformed_reference(offline: Database, ref: str) -> None:
    with pytest.raises(InvalidInput):
        offline.workflows.get_by_ref(ref=ref)


def test_get_by_name_validates_before_any_sql(offline: Database) -> None:
    with pytest.raises(InvalidInput, match="owner id must be a UUID"):
        offline.workflows.get_by_name(owner_id="x", name="etl")
    with pytest.raises(InvalidInput, match="workflow name"):
        offline.workflows.get_by_name(owner_id=uuid.uuid4(), name="Bad Name")


# -- optimistic locking ---------------------------------------------------------------------


def test_update_changes_the_set_fields_and_bumps_row_version_only(
    db: Database, owner: User, conn: Conn
) -> None:
    wf = db.workflows.create(workflow=_new(owner.id, description="old", tags=["a"]))

    patched = db.workflows.update(
        id=wf.id,
        patch=WorkflowPatch(description="new", status="active", tags=["b", "c"], enabled=False),
        expected_version=wf.row_version,
    )

    assert (patched.description, patched.status, patched.tags, patched.enabled) == (
        "new",
        "active",
        ["b", "c"],
        False,
    )
    assert (patched.name, patched.trigger_type, patched.param_schema) == ("etl", "manual", {})
    assert (patched.row_version, patched.version) == (2, 1)
    assert patched.updated_at >= wf.updated_at
    # Not a definition change: no new version.
    assert _count(conn, "workflow_versions") == 1
    assert db.workflows.get(id=wf.id) == patched


def test_update_with_an_empty_patch_still_claims_the_version(db: Database, owner: User) -> None:
    wf = db.workflows.create(workflow=_new(owner.id))

    same = db.workflows.update(id=wf.id, patch=WorkflowPatch(), expected_version=1)

    assert same.row_version == 2
    with pytest.raises(StaleWrite):
        db.workflows.update(id=wf.id, patch=WorkflowPatch(), expected_version=1)


def test_update_of_a_changed_row_raises_stale_write(db: Database, owner: User) -> None:
    wf = db.workflows.create(workflow=_new(owner.id))
    db.workflows.update(id=wf.id, patch=WorkflowPatch(description="first"), expected_version=1)

    with pytest.raises(StaleWrite, match="expected row_version 1, now 2"):
        db.workflows.update(id=wf.id, patch=WorkflowPatch(description="lost"), expected_version=1)

    assert db.workflows.get(id=wf.id).description == "first"


def test_versioned_writes_of_a_deleted_row_raise_not_found(db: Database, owner: User) -> None:
    wf = db.workflows.create(workflow=_new(owner.id))
    db.workflows.delete(id=wf.id)

    with pytest.raises(NotFound, match=f"workflow {wf.id} not found"):
        db.workflows.update(id=wf.id, patch=WorkflowPatch(description="x"), expected_version=1)
    with pytest.raises(NotFound):
        db.workflows.update_definition(
            id=wf.id, definition_yaml="", definition={"a": 1}, expected_version=1
        )
    with pytest.raises(NotFound):
        db.workflows.archive(id=wf.id, expected_version=1)


def test_update_renaming_onto_a_taken_name_is_a_conflict(db: Database, owner: User) -> None:
    db.workflows.create(workflow=_new(owner.id, "etl"))
    other = db.workflows.create(workflow=_new(owner.id, "elt"))

    with pytest.raises(Conflict, match="a workflow named 'etl' already exists for this owner"):
        db.workflows.update(id=other.id, patch=WorkflowPatch(name="etl"), expected_version=1)

    renamed = db.workflows.update(id=other.id, patch=WorkflowPatch(name="load"), expected_version=1)
    assert renamed.name == "load"


def test_update_trigger_and_schedule(db: Database, owner: User) -> None:
    wf = db.workflows.create(workflow=_new(owner.id))

    scheduled = db.workflows.update(
        id=wf.id,
        patch=WorkflowPatch(trigger_type="schedule", schedule="@hourly"),
        expected_version=1,
    )
    assert (scheduled.trigger_type, scheduled.schedule) == ("schedule", "@hourly")
    # A new rule alone is enough while the trigger stays "schedule".
    moved = db.workflows.update(
        id=wf.id, patch=WorkflowPatch(schedule="0 3 * * *"), expected_version=2
    )
    assert moved.schedule == "0 3 * * *"
    # Leaving "schedule" drops the rule.
    manual = db.workflows.update(
        id=wf.id, patch=WorkflowPatch(trigger_type="manual"), expected_version=3
    )
    assert (manual.trigger_type, manual.schedule) == ("manual", None)
    # A rule cron cannot evaluate is refused, and the stored one is kept.
    with pytest.raises(InvalidInput, match="Bad hour"):
        db.workflows.update(
            id=wf.id,
            patch=WorkflowPatch(trigger_type="schedule", schedule="0 24 * * *"),
            expected_version=4,
        )
    assert db.workflows.get(id=wf.id).row_version == 4
    # A rule for a manual workflow breaks workflows_schedule_check.
    with pytest.raises(InvalidInput, match="a schedule is required exactly when"):
        db.workflows.update(id=wf.id, patch=WorkflowPatch(schedule="@daily"), expected_version=4)
    with pytest.raises(InvalidInput, match="a schedule is required exactly when"):
        db.workflows.update(
            id=wf.id, patch=WorkflowPatch(trigger_type="schedule"), expected_version=4
        )


def test_update_attaches_and_detaches_a_pack(db: Database, owner: User) -> None:
    pack = db.packs.create(pack=NewPack(ref="core", label="Core"))
    wf = db.workflows.create(workflow=_new(owner.id))

    attached = db.workflows.update(
        id=wf.id, patch=WorkflowPatch(pack_id=pack.id), expected_version=1
    )
    kept = db.workflows.update(id=wf.id, patch=WorkflowPatch(enabled=False), expected_version=2)
    detached = db.workflows.update(id=wf.id, patch=WorkflowPatch(pack_id=None), expected_version=3)

    assert (attached.pack_id, kept.pack_id, detached.pack_id) == (pack.id, pack.id, None)
    with pytest.raises(InvalidInput, match="does not exist"):
        db.workflows.update(id=wf.id, patch=WorkflowPatch(pack_id=uuid.uuid4()), expected_version=4)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (WorkflowPatch(name="Bad"), "workflow name"),
        (WorkflowPatch(status="gone"), "status must be one of"),  # type: ignore[arg-type]
        (WorkflowPatch(trigger_type="cron"), "trigger_type must be one of"),  # type: ignore[arg-type]
        (WorkflowPatch(trigger_type="schedule", schedule=None), "a schedule is required"),
        (WorkflowPatch(trigger_type="manual", schedule="@daily"), "a schedule is required"),
        (WorkflowPatch(schedule="whenever"), "schedule must be a cron rule"),
        (WorkflowPatch(pack_id="x"), "pack id must be a UUID"),
        (WorkflowPatch(param_schema=[]), "param_schema must be a JSON object"),  # type: ignore[arg-type]
        (WorkflowPatch(tags=[""]), "tags must be a list"),
    ],
)
def test_update_validates_before_any_sql(
    offline: Database, patch: WorkflowPatch, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        offline.workflows.update(id=uuid.uuid4(), patch=patch, expected_version=1)


@pytest.mark.parametrize("expected", [0, -1, True, "1"])
def test_versioned_writes_reject_a_bad_expected_version(offline: Database, expected: Any) -> None:
    with pytest.raises(InvalidInput, match="a version is an integer >= 1"):
        offline.workflows.archive(id=uuid.uuid4(), expected_version=expected)


def test_archive_disables_and_is_compare_and_set(db: Database, owner: User) -> None:
    wf = db.workflows.create(workflow=_new(owner.id, status="active"))

    archived = db.workflows.archive(id=wf.id, expected_version=1)

    assert (archived.status, archived.enabled, archived.row_version) == ("archived", False, 2)
    with pytest.raises(StaleWrite):
        db.workflows.archive(id=wf.id, expected_version=1)


# -- definitions and versions ---------------------------------------------------------------


def test_definition_changes_write_versions_and_other_edits_do_not(
    db: Database, owner: User
) -> None:
    wf = db.workflows.create(workflow=_new(owner.id, definition_yaml="a: 1\n", definition={"a": 1}))
    v2 = db.workflows.update_definition(
        id=wf.id, definition_yaml="a: 2\n", definition={"a": 2}, expected_version=1
    )
    db.workflows.update(id=wf.id, patch=WorkflowPatch(description="edited"), expected_version=2)
    # Writing the same definition again is no change: no version either.
    same = db.workflows.update_definition(
        id=wf.id, definition_yaml="a: 2\n", definition={"a": 2}, expected_version=3
    )
    v3 = db.workflows.update_definition(
        id=wf.id,
        definition_yaml="a: 3  # edited text only\n",
        definition={"a": 2},
        expected_version=4,
    )

    assert (v2.version, v2.row_version, v2.definition) == (2, 2, {"a": 2})
    assert (same.version, same.row_version) == (2, 4)
    assert (v3.version, v3.row_version) == (3, 5)
    versions = db.workflows.versions(workflow_id=wf.id)
    assert [(v.version, v.definition, v.definition_yaml) for v in versions] == [
        (1, {"a": 1}, "a: 1\n"),
        (2, {"a": 2}, "a: 2\n"),
        (3, {"a": 2}, "a: 3  # edited text only\n"),
    ]
    assert db.workflows.version(workflow_id=wf.id, version=2) == versions[1]


def test_update_definition_is_compare_and_set(db: Database, owner: User) -> None:
    wf = db.workflows.create(workflow=_new(owner.id))
    db.workflows.update(id=wf.id, patch=WorkflowPatch(description="x"), expected_version=1)

    with pytest.raises(StaleWrite):
        db.workflows.update_definition(
            id=wf.id, definition_yaml="", definition={"a": 1}, expected_version=1
        )
    assert len(db.workflows.versions(workflow_id=wf.id)) == 1


def test_update_definition_rejects_a_non_object_definition(offline: Database) -> None:
    with pytest.raises(InvalidInput, match="definition must be a JSON object"):
        offline.workflows.update_definition(
            id=uuid.uuid4(),
            definition_yaml="- a",
            definition=["a"],  # type: ignore[arg-type]
            expected_version=1,
        )


def test_versions_and_version_of_a_missing_workflow(db: Database, owner: User) -> None:
    ghost = uuid.uuid4()
    with pytest.raises(NotFound, match=f"workflow {ghost} not found"):
        db.workflows.versions(workflow_id=ghost)
    wf = db.workflows.create(workflow=_new(owner.id))
    with pytest.raises(NotFound, match="has no version 2"):
        db.workflows.version(workflow_id=wf.id, version=2)


# -- delete ---------------------------------------------------------------------------------


def test_delete_removes_the_workflow_and_its_versions(
    db: Database, owner: User, conn: Conn
) -> None:
    wf = db.workflows.create(workflow=_new(owner.id))

    db.workflows.delete(id=wf.id)

    with pytest.raises(NotFound):
        db.workflows.get(id=wf.id)
    with pytest.raises(NotFound):
        db.workflows.delete(id=wf.id)
    assert _count(conn, "workflow_versions") == 0


def test_delete_of_a_workflow_implementing_an_action_is_a_conflict(
    db: Database, owner: User
) -> None:
    pack = db.packs.create(pack=NewPack(ref="core", label="Core"))
    action = db.actions.create(
        action=NewAction(pack_id=pack.id, ref="core.etl", entrypoint="workflow")
    )
    wf = db.workflows.create(workflow=_new(owner.id))
    db.actions.link_workflow(action_id=action.id, workflow_id=wf.id)

    with pytest.raises(Conflict):
        db.workflows.delete(id=wf.id)
    assert db.workflows.get(id=wf.id) == wf


# -- listing --------------------------------------------------------------------------------


def _raw_workflow(
    conn: Conn,
    owner_id: uuid.UUID,
    name: str,
    *,
    created_at: datetime.datetime,
    updated_at: datetime.datetime,
    **columns: Any,
) -> uuid.UUID:
    """Insert a row with chosen timestamps (the repository lets the database pick them)."""
    values = {"owner_id": owner_id, "name": name, **columns}
    values |= {"created_at": created_at, "updated_at": updated_at}
    names = ", ".join(values)
    marks = ", ".join(f"%({k})s" for k in values)
    row = conn.execute(
        f"INSERT INTO workflows ({names}) VALUES ({marks}) RETURNING id", values
    ).fetchone()
    assert row is not None
    workflow_id: uuid.UUID = row[0]
    return workflow_id


class _Catalog:
    """Six workflows of two owners, with known fields and timestamps."""

    def __init__(self, db: Database, conn: Conn) -> None:
        self.alice = db.users.create(user=NewUser(email="alice@example.com", display_name="A")).id
        self.bob = db.users.create(user=NewUser(email="bob@example.com", display_name="B")).id
        self.pack = db.packs.create(pack=NewPack(ref="core", label="Core")).id
        rows: list[tuple[uuid.UUID, str, uuid.UUID | None, str, bool, str, list[str], str]] = [
            (self.alice, "nightly-etl", self.pack, "active", True, "schedule", ["etl", "nightly"],
             "Loads invoices into the warehouse"),
            (self.alice, "invoice-sync", None, "active", True, "webhook", ["billing", "sync"],
             "Synchronises paid invoices"),
            (self.bob, "reporting-job", self.pack, "draft", False, "manual",
             ["reporting", "nightly"], "Builds the weekly summary for managers"),
            (self.alice, "old-export", None, "archived", False, "manual", ["etl"],
             "Exports legacy data"),
            (self.bob, "deploy", None, "active", True, "event", ["ops"], "Rolls out services"),
            (self.bob, "cleanup", self.pack, "active", False, "manual", [],
             "Removes temporary files"),
        ]  # fmt: skip
        for i, (who, name, pack, status, enabled, trigger, tags, description) in enumerate(rows):
            _raw_workflow(
                conn,
                who,
                name,
                pack_id=pack,
                status=status,
                enabled=enabled,
                trigger_type=trigger,
                schedule="0 2 * * *" if trigger == "schedule" else None,
                tags=tags,
                description=description,
                created_at=T0 + (i + 1) * DAY,
                updated_at=T0 + (10 - i) * DAY,
            )


@pytest.fixture
def catalog(db: Database, conn: Conn) -> _Catalog:
    return _Catalog(db, conn)


def test_list_with_each_filter_alone_and_combined(db: Database, catalog: _Catalog) -> None:
    a, b, pack = catalog.alice, catalog.bob, catalog.pack
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({}, ["nightly-etl", "invoice-sync", "reporting-job", "old-export", "deploy", "cleanup"]),
        ({"status": "active"}, ["nightly-etl", "invoice-sync", "deploy", "cleanup"]),
        ({"owner_id": a}, ["nightly-etl", "invoice-sync", "old-export"]),
        ({"owner_id": str(b)}, ["reporting-job", "deploy", "cleanup"]),
        ({"pack_id": pack}, ["nightly-etl", "reporting-job", "cleanup"]),
        ({"enabled": False}, ["reporting-job", "old-export", "cleanup"]),
        ({"trigger_type": "manual"}, ["reporting-job", "old-export", "cleanup"]),
        ({"tags_all": ["etl", "nightly"]}, ["nightly-etl"]),
        ({"tags_all": ["nightly"]}, ["nightly-etl", "reporting-job"]),
        ({"tags_any": ["billing", "ops"]}, ["invoice-sync", "deploy"]),
        ({"tags_all": [], "tags_any": []}, ["nightly-etl", "invoice-sync", "reporting-job",
                                            "old-export", "deploy", "cleanup"]),
        # Description words, stemmed ('english'): "invoices" also finds "invoice".
        ({"search": "invoice"}, ["nightly-etl", "invoice-sync"]),
        ({"search": "warehouses"}, ["nightly-etl"]),
        # Name words, unstemmed ('simple'), hyphenated parts included.
        ({"search": "reporting"}, ["reporting-job"]),
        ({"search": "sync"}, ["invoice-sync"]),
        ({"search": "etl"}, ["nightly-etl"]),
        # Web-search syntax: phrases, exclusion, OR.
        ({"search": '"paid invoices"'}, ["invoice-sync"]),
        ({"search": "invoices -warehouse"}, ["invoice-sync"]),
        ({"search": "deploy or cleanup"}, ["deploy", "cleanup"]),
        ({"search": "   "}, ["nightly-etl", "invoice-sync", "reporting-job", "old-export",
                             "deploy", "cleanup"]),
        ({"created_from": T0 + 3 * DAY}, ["reporting-job", "old-export", "deploy", "cleanup"]),
        ({"created_to": T0 + 3 * DAY}, ["nightly-etl", "invoice-sync"]),
        ({"created_from": T0 + 2 * DAY, "created_to": T0 + 4 * DAY},
         ["invoice-sync", "reporting-job"]),
        ({"updated_from": T0 + 8 * DAY}, ["nightly-etl", "invoice-sync", "reporting-job"]),
        ({"updated_to": T0 + 6 * DAY}, ["cleanup"]),
        ({"owner_id": a, "status": "active", "enabled": True, "tags_any": ["etl", "billing"]},
         ["nightly-etl", "invoice-sync"]),
        ({"pack_id": pack, "enabled": False, "search": "weekly"}, ["reporting-job"]),
        ({"owner_id": b, "status": "active", "trigger_type": "manual"}, ["cleanup"]),
        ({"owner_id": b, "tags_all": ["etl"]}, []),
        (
            {
                "status": "active", "owner_id": a, "pack_id": pack, "enabled": True,
                "trigger_type": "schedule", "tags_all": ["etl"], "tags_any": ["nightly", "x"],
                "search": "warehouse", "created_from": T0, "created_to": T0 + 2 * DAY,
                "updated_from": T0 + 10 * DAY, "updated_to": T0 + 11 * DAY,
            },
            ["nightly-etl"],
        ),
    ]  # fmt: skip
    for filters, expected in cases:
        assert _names(db.workflows.list(**filters)) == expected, filters


def test_list_sorts(db: Database, catalog: _Catalog) -> None:
    by_created = _names(db.workflows.list(sort="created_at"))
    by_name = _names(db.workflows.list(sort="name"))
    by_updated = _names(db.workflows.list(sort="updated_at"))

    assert by_created == ["cleanup", "deploy", "old-export", "reporting-job", "invoice-sync",
                          "nightly-etl"]  # fmt: skip
    assert by_name == sorted(by_name) and len(by_name) == 6
    assert by_updated == _names(db.workflows.list())
    assert by_updated[0] == "nightly-etl"


def test_list_wrappers(db: Database, catalog: _Catalog) -> None:
    assert _names(db.workflows.list_by_pack(pack_id=catalog.pack)) == [
        "nightly-etl",
        "reporting-job",
        "cleanup",
    ]
    assert _names(db.workflows.list_enabled()) == ["nightly-etl", "invoice-sync", "deploy"]
    assert _names(db.workflows.list_enabled(trigger_type="schedule")) == ["nightly-etl"]
    assert _names(db.workflows.list_by_tag(tag="nightly")) == ["nightly-etl", "reporting-job"]
    page = db.workflows.list_by_tag(tag="nightly", limit=1)
    rest = db.workflows.list_by_tag(tag="nightly", limit=1, cursor=page.next_cursor)
    assert (_names(page), _names(rest), rest.next_cursor) == (
        ["nightly-etl"],
        ["reporting-job"],
        None,
    )


def _tied_rows(conn: Conn, db: Database) -> None:
    """25 rows of two owners sharing names, with many identical timestamps."""
    owners = [
        db.users.create(user=NewUser(email=f"{who}@example.com", display_name=who)).id
        for who in ("tie1", "tie2")
    ]
    for i in range(25):
        # Ten rows share one updated_at, eight another; creation times tie in threes.
        updated = T0 + (DAY if i < 10 else 2 * DAY if i < 18 else (3 + i) * DAY)
        _raw_workflow(
            conn,
            owners[i % 2],
            f"wf-{i // 2:02d}",
            created_at=T0 + (i // 3) * DAY,
            updated_at=updated,
            status="active" if i % 3 else "draft",
        )


def _walk(db: Database, limit: int, **filters: Any) -> tuple[list[Workflow], int]:
    seen: list[Workflow] = []
    pages = 0
    cursor: str | None = None
    while True:
        page = db.workflows.list(limit=limit, cursor=cursor, **filters)
        pages += 1
        assert len(page.items) <= limit
        seen += page.items
        if page.next_cursor is None:
            return seen, pages
        cursor = page.next_cursor


@pytest.mark.parametrize(
    ("sort", "key", "descending"),
    [
        ("updated_at", lambda w: (w.updated_at, w.id), True),
        ("created_at", lambda w: (w.created_at, w.id), True),
        ("name", lambda w: (w.name, w.id), False),
    ],
)
def test_pagination_walks_every_row_once_despite_ties(
    db: Database, conn: Conn, sort: str, key: Any, descending: bool
) -> None:
    _tied_rows(conn, db)
    everything = db.workflows.list(sort=sort, limit=100)  # type: ignore[arg-type]

    walked, pages = _walk(db, 4, sort=sort)

    assert pages == 7  # 25 rows, 4 a page
    assert [w.id for w in walked] == [w.id for w in everything.items]
    assert len({w.id for w in walked}) == 25
    assert walked == sorted(walked, key=key, reverse=descending)


def test_pagination_with_a_filter(db: Database, conn: Conn) -> None:
    _tied_rows(conn, db)

    walked, pages = _walk(db, 3, status="active")

    assert len(walked) == 16 and pages == 6
    assert all(w.status == "active" for w in walked)
    assert len({w.id for w in walked}) == 16


def test_a_cursor_only_fits_its_own_sort(db: Database, conn: Conn) -> None:
    _tied_rows(conn, db)
    by_updated = db.workflows.list(limit=2).next_cursor
    by_name = db.workflows.list(sort="name", limit=2).next_cursor
    users_cursor = db.users.list(limit=1).next_cursor
    assert by_updated and by_name and users_cursor

    for sort, cursor in [("created_at", by_updated), ("name", by_updated), ("updated_at", by_name)]:
        with pytest.raises(InvalidCursor, match="not valid for this listing"):
            db.workflows.list(sort=sort, cursor=cursor)  # type: ignore[arg-type]
    with pytest.raises(InvalidCursor):
        db.workflows.list(cursor=users_cursor)
    with pytest.raises(InvalidCursor):
        db.workflows.list(cursor=_tamper(by_updated))
    with pytest.raises(InvalidCursor, match="malformed"):
        db.workflows.list(cursor="not a cursor!")


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"sort": "id"}, "sort must be one of updated_at, created_at, name"),
        ({"limit": 0}, "limit must be between 1 and 500"),
        ({"limit": 501}, "limit must be between 1 and 500"),
        ({"status": "running"}, "status must be one of"),
        ({"trigger_type": "cron"}, "trigger_type must be one of"),
        ({"owner_id": "me"}, "owner id must be a UUID"),
        ({"pack_id": "core"}, "pack id must be a UUID"),
        ({"tags_all": "etl"}, "tags_all must be a list"),
        ({"tags_any": [None]}, "tags_any must be a list"),
        ({"search": 42}, "search must be a string"),
        ({"created_from": datetime.datetime(2024, 1, 1)}, "must be a timezone-aware"),
        ({"updated_to": "2024-01-01"}, "must be a timezone-aware"),
        ({"created_from": T0 + DAY, "created_to": T0}, "created_from .* is after created_to"),
    ],
)
def test_list_validates_before_any_sql(
    offline: Database, filters: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        offline.workflows.list(**filters)


@pytest.mark.parametrize("sort", ["updated_at", "created_at", "name"])
def test_set_filters_keep_their_indexes(conn: Conn, sort: str) -> None:
    # Custom plans fold "NULL IS NULL OR ..." away, so a set filter can use its index; with
    # plain index scans off, only a bitmap scan of the filter's own index is left.
    conn.execute("SET enable_seqscan = off")
    conn.execute("SET enable_indexscan = off")
    sql = query(f"list_workflows_by_{sort}").sql
    nulls = dict.fromkeys(re.findall(r"%\((\w+)\)s", sql))
    owner_indexes = {"workflows_owner_status_updated_idx", "workflows_owner_id_name_key"}
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"tags_all": ["etl"]}, {"workflows_tags_idx"}),
        ({"tags_any": ["etl", "ops"]}, {"workflows_tags_idx"}),
        ({"search": "invoices"}, {"workflows_search_idx"}),
        ({"owner_id": uuid.uuid4()}, owner_indexes),
        ({"status": "active"}, {"workflows_status_updated_idx"}),
        ({"pack_id": uuid.uuid4()}, {"workflows_pack_id_idx"}),
    ]
    for filters, indexes in cases:
        params = {**nulls, **filters, "limit": 10}
        plan = "\n".join(str(r[0]) for r in conn.execute(f"EXPLAIN {sql}", params))
        assert any(index in plan for index in indexes), (filters, plan)
