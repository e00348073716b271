"""Every public method of every repository, called with generated arguments of any type.

Methods are found by introspection, so a method added later is fuzzed without an edit
here. Each parameter gets values from its annotation (real ids of rows made in the test
database, well-formed structs, in-range numbers) mixed with hostile ones (wrong types,
None, huge and negative integers, NaN and infinities, lone surrogates, NUL characters,
long text, JSON nested 1,200 deep, out-of-range and naive datetimes, huge timedeltas,
garbage ids). A call must return or raise a FlowledgerError subclass with a message; a
call that raises must leave every table exactly as it was (a checksum of every row of
every table, before and after). That messages name the argument is pinned per input in
test_hostile_inputs.py.
"""

from __future__ import annotations

import collections.abc
import datetime
import decimal
import inspect
import itertools
import math
import types
import typing
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowledger.database import Database, connect
from flowledger.errors import FlowledgerError
from flowledger.records.agents import Configuration
from flowledger.records.catalog import NewAction, NewPack
from flowledger.records.identity import NewUser
from flowledger.records.memory import NewMemoryItem, NewMemoryModule
from flowledger.records.runs import NewLogLine
from flowledger.records.tasks import NewTask
from flowledger.records.workflows import NewStage, NewWorkflow
from flowledger.repositories.base import Repository
from flowledger.repositories.registry import Repositories

UTC = datetime.UTC
_names = itertools.count()


def _repository_methods() -> list[tuple[str, str]]:
    """(attribute, method) for every public method of every repository of a Database."""
    found = []
    for attr in sorted(vars(Repositories)):
        prop = vars(Repositories)[attr]
        # Private ones (the metrics reader behind db.metrics()) are not the public API.
        if not isinstance(prop, cached_property) or attr.startswith("_"):
            continue
        cls = typing.get_type_hints(prop.func)["return"]
        if isinstance(cls, type) and issubclass(cls, Repository):
            found += [(attr, m) for m in _public_methods(cls)]
    return found


def _public_methods(cls: type) -> list[str]:
    return sorted(n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n)))


METHODS = _repository_methods()


# --- the database and the rows the valid arguments point at --------------------------


@dataclass
class World:
    """Rows made through the repositories; their ids and names feed the valid values."""

    ids: list[uuid.UUID] = field(default_factory=list)
    by_kind: dict[str, list[uuid.UUID]] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    cursors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def fuzz_url(pg_server: Any, _clones: Any) -> Iterator[str]:
    """One database for the whole module (a clone per method would cost more than the
    fuzz); each test adds its own fresh rows."""
    name, janitor = _clones.take()
    try:
        yield pg_server.url(name)
    finally:
        janitor.drop()


@pytest.fixture(scope="module")
def fuzz_db(fuzz_url: str) -> Iterator[Database]:
    """A Database on the module's database."""
    with connect(fuzz_url, min_size=1, max_size=4, connect_attempts=1) as db:
        yield db


def _build_world(db: Database) -> World:
    n = next(_names)
    w = World()
    user = db.users.create(user=NewUser(email=f"fuzz{n}@example.com", display_name="F"))
    key = db.api_keys.issue(user_id=user.id, name=f"k{n}")
    pack = db.packs.create(pack=NewPack(ref=f"fuzz{n}", label="Fuzz"))
    action = db.actions.create(
        action=NewAction(pack_id=pack.id, ref=f"fuzz{n}.run", entrypoint="run.py")
    )
    wf = db.workflows.create(workflow=NewWorkflow(owner_id=user.id, name=f"wf{n}", tags=["t"]))
    first = db.stages.add(workflow_id=wf.id, stage=NewStage(name="a", action_ref=action.ref))
    second = db.stages.add(workflow_id=wf.id, stage=NewStage(name="b", action_ref=action.ref))
    run = db.executions.start(workflow_id=wf.id, parameters={"p": 1}, idempotency_key=f"i{n}")
    claimed = db.steps.claim(worker_id=f"w{n}", limit=1)
    steps = db.steps.list_by_execution(execution_id=run.id)
    db.step_logs.append(
        lines=[NewLogLine(step_id=steps[0].id, execution_id=run.id, message="hello")]
    )
    session = db.sessions.open(client_id=f"c{n}", user_id=user.id)
    call = db.tool_executions.start(tool_name="grep", input={"q": 1}, session_id=session.id)
    cfg = db.config.set(key=f"fuzz.k{n}", value={"n": n})
    item, _ = db.memory_items.create(
        item=NewMemoryItem(project="proj", kind="decision", content=f"fact {n}", status="active")
    )
    module = db.memory_modules.create(module=NewMemoryModule(project="proj", name=f"m{n}"))
    db.memory_modules.add_item(module_id=module.id, item_id=item.id)
    built = db.memory_packs.build(project="proj", module_ids=[module.id], token_budget=100)
    scheduled = db.workflows.create(
        workflow=NewWorkflow(
            owner_id=user.id,
            name=f"cron{n}",
            status="active",
            trigger_type="schedule",
            schedule="*/5 * * * *",
        )
    )
    task = db.tasks.create(task=NewTask(title=f"task {n}", task_type="docs", workspace_path="/w"))
    db.tasks.attach(workflow_id=wf.id, task_id=task.id)
    w.by_kind = {
        "user": [user.id],
        "api_key": [key.key.id],
        "pack": [pack.id],
        "action": [action.id],
        "workflow": [wf.id, scheduled.id],
        "stage": [first.id, second.id],
        "execution": [run.id],
        "step": [s.id for s in steps],
        "session": [session.id],
        "tool_execution": [call.id],
        "memory_item": [item.id],
        "memory_module": [module.id],
        "memory_pack": [built.id],
        "task": [task.id],
        "config": [],
        "outbox": [run.id],
        "step_log": [s.id for s in steps],
    }
    w.ids = [i for ids in w.by_kind.values() for i in ids]
    w.texts = [user.email, f"k{n}", pack.ref, action.ref, wf.name, "a", "b", f"i{n}"]
    w.texts += [f"w{n}", f"c{n}", "grep", cfg.key, "proj", f"m{n}", "decision", "active"]
    w.texts += [f"{user.email}/{wf.name}", key.secret, "execution", "info", "queued"]
    w.texts += ["docs", "/w", "pending", "done"]
    w.texts += [c.lease_owner or "" for c in claimed]
    listings = (db.users.list(limit=1), db.workflows.list(limit=1), db.packs.list(limit=1))
    for page in (*listings, db.tasks.list(limit=1)):
        if page.next_cursor:
            w.cursors.append(page.next_cursor)
    return w


class Tables:
    """A checksum of every row of every table, read on a connection of its own. The tables
    are listed afresh each time: a call may make or drop some (step_logs' partitions), and
    one that raises must leave the set of tables as it was too."""

    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url, autocommit=True)

    def checksum(self) -> dict[str, str]:
        tables = [
            r[0]
            for r in self._conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        query = " UNION ALL ".join(
            f"SELECT '{t}', md5(coalesce(string_agg(r::text, ',' ORDER BY r::text), '')) FROM {t} r"
            for t in tables
        )
        return dict(self._conn.execute(query).fetchall())

    def close(self) -> None:
        self._conn.close()


# --- values ---------------------------------------------------------------------------


class _Huge(str):
    """A long text that prints short: hypothesis prints every argument it generates."""

    def __repr__(self) -> str:
        return f"<text of {len(self):,} characters starting {self[:3]!r}>"


class _Deep(dict[str, Any]):
    """JSON nested 1,200 levels deep (as a dict) that prints short."""

    def __repr__(self) -> str:
        return "<JSON nested 1,200 deep>"


def _nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


_FAR_EAST = datetime.timezone(datetime.timedelta(hours=14))
_FAR_WEST = datetime.timezone(datetime.timedelta(hours=-14))
HOSTILE: list[Any] = [
    None,
    0,
    -1,
    2**31,
    2**63,
    2**80,
    -(2**80),
    True,
    1.5,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "   ",
    "\ud800",
    "a\x00b",
    _Huge("x" * 3000),
    _Huge("é" * 1_000_001),
    "not-a-uuid",
    "00000000-0000-0000-0000-00000000000g",
    b"bytes",
    [],
    [None],
    ["\ud800"],
    [_Huge("x" * 3000)],
    {},
    {"a": math.nan},
    {"a": [math.inf]},
    {"\x00": 1},
    {1: "a"},
    {"s": "\ud800"},
    _Deep({"root": _nested(1200)}),
    [_Deep({"deep": _nested(1200)})],
    {"n": 2**70},
    {"d": decimal.Decimal("NaN")},
    {"o": object()},
    object(),
    decimal.Decimal("1.5"),
    uuid.UUID(int=0),
    datetime.datetime(2030, 1, 1),
    datetime.datetime(1, 1, 1, tzinfo=_FAR_EAST),
    datetime.datetime(9999, 12, 31, 23, tzinfo=_FAR_WEST),
    datetime.datetime.max.replace(tzinfo=UTC),
    datetime.datetime.min.replace(tzinfo=UTC),
    datetime.date(2030, 1, 1),
    datetime.timedelta(days=10**8),
    datetime.timedelta(days=-(10**8)),
    datetime.timedelta(days=3_000_000),
    datetime.timedelta.max,
    datetime.timedelta(0),
    datetime.timedelta(microseconds=-1),
    set(),
    ("a", "b"),
    int,
    lambda *a: None,
]

hostile = st.sampled_from(HOSTILE)
small_text = st.text(max_size=12)
json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(-1e9, 1e9), small_text
)


def _json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(inner, max_size=3), st.dictionaries(small_text, inner, max_size=3))


json_value = st.recursive(json_leaf, _json_containers, max_leaves=6)
aware = st.datetimes(
    min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2100, 1, 1)
).map(lambda d: d.replace(tzinfo=UTC))

_near_now = st.integers(-90, 90).map(
    lambda days: datetime.datetime.now(UTC) + datetime.timedelta(days=days)
)
_LATEST_NOW = datetime.datetime(9999, 11, 1, tzinfo=UTC)


def _handler_ok(events: list[Any]) -> None:
    return None


def _handler_fails(events: list[Any]) -> None:
    raise RuntimeError("broker down")


# What an id argument points at, by its name (by convention across the repositories);
# `id` is the repository's own kind.
_ID_KINDS = {
    "user_id": "user",
    "owner_id": "user",
    "triggered_by": "user",
    "pack_id": "pack",
    "action_id": "action",
    "workflow_id": "workflow",
    "stage_ids": "stage",
    "execution_id": "execution",
    "parent_execution_id": "execution",
    "step_id": "step",
    "parent_step_id": "step",
    "session_id": "session",
    "item_id": "memory_item",
    "item_ids": "memory_item",
    "module_id": "memory_module",
    "module_ids": "memory_module",
    "aggregate_id": "execution",
    "task_id": "task",
    "task_ids": "task",
}
_REPO_KINDS = {
    "users": "user",
    "api_keys": "api_key",
    "packs": "pack",
    "actions": "action",
    "workflows": "workflow",
    "stages": "stage",
    "executions": "execution",
    "steps": "step",
    "sessions": "session",
    "tool_executions": "tool_execution",
    "memory_items": "memory_item",
    "memory_modules": "memory_module",
    "memory_packs": "memory_pack",
    "tasks": "task",
    "schedules": "workflow",
}
_NAME = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
_FRESH_TEXT = {
    "email": st.integers(0, 10**6).map(lambda i: f"f{i}@example.com"),
    "name": _NAME,
    "ref": st.one_of(_NAME, st.tuples(_NAME, _NAME).map(".".join)),
    "client_id": _NAME,
    "worker_id": _NAME,
}


class Strategies:
    """Argument strategies from annotations, fed by one World's rows."""

    def __init__(self, world: World, repo_name: str = "") -> None:
        self.world = world
        self.own_kind = _REPO_KINDS.get(repo_name, "")
        self.texts = st.one_of(st.sampled_from(world.texts), small_text)

    def ids(self, name: str) -> st.SearchStrategy[Any]:
        kind = self.own_kind if name in ("id", "ids") else _ID_KINDS.get(name, "")
        known = st.sampled_from(self.world.by_kind.get(kind) or self.world.ids)
        return st.one_of(known, known.map(str), st.sampled_from(self.world.ids), st.uuids())

    def for_type(self, tp: Any, name: str = "") -> st.SearchStrategy[Any]:
        """Valid-looking values of `tp` (three times in four) mixed with hostile ones."""
        valid = self.valid(tp, name)
        return st.one_of(valid, valid, valid, hostile)

    def valid(self, tp: Any, name: str = "") -> st.SearchStrategy[Any]:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is Any or isinstance(tp, typing.TypeVar):
            return json_value
        if origin in (typing.Union, types.UnionType):
            return st.one_of([self.valid(a, name) for a in args])
        if origin is typing.Literal:
            return st.sampled_from(args)
        if tp is type(None):
            return st.none()
        if tp is msgspec.UnsetType:
            return st.just(msgspec.UNSET)
        if tp is uuid.UUID:
            return self.ids(name)
        if tp is str:
            if name == "cursor":
                return st.sampled_from(self.world.cursors or ["x"])
            if name == "key":
                return st.sampled_from(["fuzz.a", "scheduler.max_workers"])
            if name in _FRESH_TEXT:
                return st.one_of(_FRESH_TEXT[name], self.texts)
            return self.texts
        if tp is bool:
            return st.booleans()
        if tp is int:
            if name == "months_ahead":
                # Each month ahead may make a partition (a table the checksums then read).
                return st.integers(-2, 4) | st.sampled_from([60, 61])
            return st.integers(-2, 12) | st.sampled_from([1, 50, 500, 1000])
        if tp is float:
            return st.floats(-1, 2, allow_nan=False)
        if tp is datetime.datetime:
            if name == "now":
                # The reference time of step_logs.ensure_partitions: months near the present
                # (their partitions mostly exist), and the last months it can make.
                return st.one_of(_near_now, st.just(_LATEST_NOW))
            return aware
        if tp is datetime.timedelta:
            return st.timedeltas(datetime.timedelta(seconds=-60), datetime.timedelta(days=2))
        if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
            return st.lists(self.valid(args[0] if args else Any, name), max_size=3)
        if origin in (dict, collections.abc.Mapping) or tp is dict:
            return st.dictionaries(small_text, json_value, max_size=3)
        if origin is collections.abc.Callable:
            return st.sampled_from([_handler_ok, _handler_fails])
        if origin is type or tp is type:
            return st.sampled_from([int, str, dict, list, float, bool, Configuration])
        if inspect.isclass(tp) and issubclass(tp, msgspec.Struct):
            return self.struct(tp)
        if origin is psycopg.Connection or tp is psycopg.Connection:
            return st.none()
        # An annotation this table does not know yet: hostile values still apply.
        return hostile

    def struct(self, cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
        fields = {}
        for f in msgspec.structs.fields(cls):
            value = self.for_type(f.type, f.name)
            fields[f.name] = value if f.required else st.one_of(st.just(msgspec.UNSET), value)

        def build(values: dict[str, Any]) -> Any:
            return cls(**{k: v for k, v in values.items() if v is not msgspec.UNSET})

        return st.fixed_dictionaries(fields).map(build)

    def arguments(self, method: Callable[..., Any]) -> st.SearchStrategy[dict[str, Any]]:
        hints = typing.get_type_hints(method)
        required: dict[str, st.SearchStrategy[Any]] = {}
        optional: dict[str, st.SearchStrategy[Any]] = {}
        for param in inspect.signature(method).parameters.values():
            strategy = self.for_type(hints.get(param.name, Any), param.name)
            if param.default is inspect.Parameter.empty:
                required[param.name] = strategy
            else:
                optional[param.name] = strategy
        return st.fixed_dictionaries(required, optional=optional)


# --- the fuzz -------------------------------------------------------------------------


def test_every_repository_method_of_a_connected_database_is_fuzzed(fuzz_db: Database) -> None:
    on_instance = []
    for attr in dir(fuzz_db):
        # Repositories are cached properties; a plain property is something else (db.replica,
        # which raises DatabaseNotConfigured on a database without a replica).
        if attr.startswith("_") or isinstance(inspect.getattr_static(fuzz_db, attr), property):
            continue
        repo = getattr(fuzz_db, attr)
        if isinstance(repo, Repository):
            on_instance += [(attr, m) for m in _public_methods(type(repo))]
    assert sorted(on_instance) == sorted(METHODS)
    assert len(METHODS) > 100


@pytest.mark.parametrize(("repo_name", "method_name"), METHODS)
def test_method_returns_or_raises_a_flowledger_error_and_changes_nothing_when_it_raises(
    fuzz_db: Database, fuzz_url: str, repo_name: str, method_name: str
) -> None:
    method = getattr(getattr(fuzz_db, repo_name), method_name)
    arguments = Strategies(_build_world(fuzz_db), repo_name).arguments(method)
    tables = Tables(fuzz_url)
    state = {"before": tables.checksum()}

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(kwargs=arguments)
    def call(kwargs: dict[str, Any]) -> None:
        try:
            method(**kwargs)
        except FlowledgerError as exc:
            assert str(exc), f"{type(exc).__name__} without a message"
            after = tables.checksum()
            before = state["before"]
            changed = sorted(t for t in after.keys() | before if after.get(t) != before.get(t))
            assert not changed, f"raised {exc!r} but changed {changed}"
        else:
            state["before"] = tables.checksum()

    try:
        call()
    finally:
        tables.close()
