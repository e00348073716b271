"""Realistic synthetic volume for plan checks and benchmarks (`flowledger seed --scale N`).

Writes users, workflows with versions and stages, N executions with their steps,
attempts, log lines and tool executions, outbox events and memory items, all with binary
COPY in chunks, then ANALYZEs. The data is a pure function of (N, seed) on an empty
database: ids are UUIDv7 built from synthetic timestamps and a seeded generator.

Shape per execution: 3 steps (one per stage), one attempt per started step, 2 log
lines; one tool execution per 5 executions, one outbox event per 10. Statuses follow a
production-like mix: 75 % completed, 8 % failed, 4 % cancelled, 8 % running, 2 % paused,
3 % pending; running executions hold one leased step and queued ones waiting.

Each table is one `Table` spec: its columns with their PostgreSQL types, the columns it
leaves to the database, the tables its rows reference, how its rows are made (per index
for a top-level table, per row of its parent for a child table) and its child tables.
`PLAN` lists the top-level tables in load order with their row counts for a scale. One
loader, `generate`, walks the specs depth first (a row, then its children's rows), so
the seeded generator is drawn from in one fixed order.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import itertools
import random
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb, set_json_dumps

from flowledger.errors import InvalidInput

_BASE = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
_SPAN = datetime.timedelta(days=90)
_CHUNK = 20_000
_STATUSES = (
    ("completed", 75),
    ("failed", 8),
    ("cancelled", 4),
    ("running", 8),
    ("paused", 2),
    ("pending", 3),
)
_STATUS_NAMES = tuple(name for name, _ in _STATUSES)
_STATUS_CUMULATIVE = tuple(itertools.accumulate(weight for _, weight in _STATUSES))
_FINISHED = frozenset({"completed", "failed", "cancelled"})
_TASKS = ("extract", "transform", "load")
_STEP_PLAN = {
    "completed": ("completed", "completed", "completed"),
    "failed": ("completed", "completed", "failed"),
    "cancelled": ("completed", "cancelled", "cancelled"),
    "running": ("completed", "running", "pending"),
    "paused": ("completed", "queued", "pending"),
    "pending": ("queued", "pending", "pending"),
}
_STARTED = frozenset({"completed", "failed", "running"})
# The dependency graph of every generated workflow: extract -> transform -> load.
_TASK_GRAPH = Jsonb({"extract": [], "transform": ["extract"], "load": ["transform"]})
_ROLES = ("admin", "developer", "viewer")
_TAGS = (("etl", "daily"), ("ml",), ("ops", "nightly"), ("etl",), ())
_TOOLS = ("http.get", "sql.query", "shell.run", "llm.complete", "s3.put", "slack.post")
_MEMORY_KINDS = ("decision", "constraint", "gotcha", "style_rule", "learning")
_MEMORY_STATUSES = ("candidate", "active", "stable", "deprecated")
_SECOND = datetime.timedelta(seconds=1)
_STEP_STARTS = tuple(datetime.timedelta(seconds=1 + index) for index in range(len(_TASKS)))
_STEP_DURATION = datetime.timedelta(seconds=2)
_LEASE = datetime.timedelta(minutes=5)

Progress = Callable[[str, int, int], None]
Row = tuple[Any, ...]
P = TypeVar("P")
T = TypeVar("T")
X = TypeVar("X")


@dataclass
class VolumeReport:
    """Rows written per table and the time it took."""

    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class _Ids:
    """Deterministic UUIDv7: the timestamp given, random bits from the seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._when = _BASE
        self._ms = int(_BASE.timestamp() * 1000)

    def at(self, when: datetime.datetime) -> uuid.UUID:
        # The ids of one execution's rows share its timestamp: converted once.
        if when is not self._when:
            self._when, self._ms = when, int(when.timestamp() * 1000)
        rand = self._rng.getrandbits(74)
        value = (self._ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76 | (rand >> 62) << 64  # version 7 + 12 random bits
        value |= 0b10 << 62 | (rand & ((1 << 62) - 1))  # RFC 4122 variant + 62 random bits
        return uuid.UUID(int=value)


@dataclass
class _State:
    """What the tables' producers share: the seeded generator and the ids drawn so far."""

    scale: int
    gap: datetime.timedelta  # between two executions' creation times
    rng: random.Random
    ids: _Ids
    users: list[uuid.UUID] = field(default_factory=list)
    workflows: list[_Workflow] = field(default_factory=list)
    # Stage snapshot ids by (workflow id, stage name); the database makes them.
    pinned: dict[tuple[uuid.UUID, str], uuid.UUID] = field(default_factory=dict)

    @classmethod
    def start(cls, scale: int, seed: int) -> _State:
        rng = random.Random(seed)
        return cls(scale, _SPAN / scale, rng, _Ids(rng))


class Column(NamedTuple):
    """A column a table's rows fill, with the type binary COPY sends it as."""

    name: str
    type: str


def columns(spec: str) -> tuple[Column, ...]:
    """The columns of "name type, name type, ...", in the order a row gives their values.

    Types are spelled as PostgreSQL's udt names (int4, float8, timestamptz), arrays as
    text[]. Raises ValueError on an entry that is not exactly a name and a type.
    """
    pairs = (entry.split() for entry in spec.split(","))
    return tuple(Column(name, type_) for name, type_ in pairs)


@dataclass(frozen=True, slots=True)
class Table(Generic[P, T]):
    """One table of the volume: its columns, what it references, how its rows are made.

    `make` yields one item per row from P (the row index of a top-level table, an item of
    the parent table for a child table); `row` gives an item's values in column order.
    """

    name: str
    columns: tuple[Column, ...]
    # The live table's other columns, left to their default, NULL or generation.
    by_database: frozenset[str]
    # Tables its written columns reference by foreign key.
    refs: frozenset[str]
    make: Callable[[_State, P], Iterable[T]]
    row: Callable[[T], Row]
    children: tuple[Table[T, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class TopLevel:
    """A top-level table: its rows for a scale, and what it reads back from the database first."""

    table: Table[int, Any]
    count: Callable[[int], int]
    read_first: Callable[[psycopg.Connection[Any], _State], None] | None = None


def family(table: Table[Any, Any]) -> Iterator[Table[Any, Any]]:
    """The table and its descendants, depth first: the order their rows are copied in."""
    yield table
    for child in table.children:
        yield from family(child)


def _as_is(row: Row) -> Row:
    """The row itself: for a table whose items are already rows."""
    return row


# -- users --------------------------------------------------------------------------------


def _user(state: _State, i: int) -> Iterator[Row]:
    uid = state.ids.at(_BASE)
    state.users.append(uid)  # workflows are owned and executions triggered by them
    yield (uid, f"user{i}@volume.example", f"Volume user {i}", _ROLES[i % 3], _BASE, _BASE)


USERS = Table(
    "users",
    columns(
        "id uuid, email text, display_name text, role text,"
        " created_at timestamptz, updated_at timestamptz"
    ),
    by_database=frozenset({"is_active"}),
    refs=frozenset(),
    make=_user,
    row=_as_is,
)


# -- workflows and their stages ------------------------------------------------------------


@dataclass(slots=True)
class _Workflow:
    """A workflow row's inputs, kept for the executions that run it."""

    index: int
    id: uuid.UUID
    owner: uuid.UUID
    stage_ids: tuple[uuid.UUID, ...]


def _workflow(state: _State, i: int) -> Iterator[_Workflow]:
    wid = state.ids.at(_BASE)
    stage_ids = tuple(state.ids.at(_BASE) for _ in _TASKS)
    workflow = _Workflow(i, wid, state.users[i % len(state.users)], stage_ids)
    state.workflows.append(workflow)
    yield workflow


def _workflow_row(w: _Workflow) -> Row:
    i = w.index
    return (
        w.id,
        w.owner,
        f"workflow-{i:06d}",
        f"Synthetic workflow number {i} moving data",
        "active" if i % 10 else "archived",
        i % 7 != 0,
        "manual",
        f"stages: [extract, transform, load]  # {i}\n",
        Jsonb({"stages": list(_TASKS), "n": i}),
        list(_TAGS[i % 5]),
        _BASE,
        _BASE,
    )


def _stages(state: _State, w: _Workflow) -> Iterator[Row]:
    for position, (sid, task) in enumerate(zip(w.stage_ids, _TASKS, strict=True)):
        yield (sid, w.id, position, task, f"core.{task}", _BASE, _BASE)


WORKFLOW_STAGES = Table(
    "workflow_stages",
    columns(
        "id uuid, workflow_id uuid, position int4, name text, action_ref text,"
        " created_at timestamptz, updated_at timestamptz"
    ),
    # No stage of the volume has a concurrency or rate limit.
    by_database=frozenset(
        {
            "depends_on",
            "config",
            "with_items",
            "retry_policy",
            "timeout_seconds",
            "queue",
            "concurrency",
            "rate_limit",
        }
    ),
    refs=frozenset({"workflows"}),
    make=_stages,
    row=_as_is,
)

WORKFLOWS = Table(
    "workflows",
    columns(
        "id uuid, owner_id uuid, name text, description text, status text, enabled bool,"
        " trigger_type text, definition_yaml text, definition jsonb, tags text[],"
        " created_at timestamptz, updated_at timestamptz"
    ),
    by_database=frozenset(
        {
            "pack_id",
            "schedule",
            "param_schema",
            "out_schema",
            "search",
            "version",
            "row_version",
            "failure_mode",
            "max_running_executions",
        }
    ),
    refs=frozenset({"users"}),
    make=_workflow,
    row=_workflow_row,
    children=(WORKFLOW_STAGES,),
)


# -- executions and everything hanging off them -------------------------------------------


@dataclass(slots=True)
class _Run:
    """An execution row's inputs, and what its steps and outbox event need of it."""

    index: int
    id: uuid.UUID
    workflow: _Workflow
    triggered_by: uuid.UUID
    status: str
    created: datetime.datetime
    finished: datetime.datetime | None
    rows: int


@dataclass(slots=True)
class _Step:
    """A step row's inputs, and what its attempt, log lines and tool call need of it."""

    run: _Run
    id: uuid.UUID
    index: int
    task: str
    stage_id: uuid.UUID
    version_stage_id: uuid.UUID
    status: str
    priority: int
    started: datetime.datetime | None
    ended: datetime.datetime | None


def _attempts(state: _State, s: _Step) -> Iterator[Row]:
    if s.started is not None:
        outcome = None if s.status == "running" else s.status
        error = "boom" if s.status == "failed" else None
        aid = state.ids.at(s.run.created)
        yield (aid, s.id, s.run.id, 1, "worker-7", s.started, s.ended, outcome, error)


STEP_ATTEMPTS = Table(
    "step_attempts",
    columns(
        "id uuid, step_id uuid, execution_id uuid, attempt int4, worker_id text,"
        " started_at timestamptz, finished_at timestamptz, outcome text, error text"
    ),
    by_database=frozenset(),
    refs=frozenset({"execution_steps"}),
    make=_attempts,
    row=_as_is,
)


def _logs(state: _State, s: _Step) -> Iterator[Row]:
    if s.index == 0:
        r = s.run
        yield (s.id, r.id, "info", f"started {r.status} run", Jsonb({"k": r.index}), r.created)
        yield (s.id, r.id, "debug", "fetched batch", Jsonb({"rows": 10}), r.created)


STEP_LOGS = Table(
    "step_logs",
    columns(
        "step_id uuid, execution_id uuid, level text, message text, fields jsonb,"
        " logged_at timestamptz"
    ),
    by_database=frozenset({"id"}),
    refs=frozenset({"execution_steps", "workflow_executions"}),
    make=_logs,
    row=_as_is,
)


def _tool_calls(state: _State, s: _Step) -> Iterator[Row]:
    r = s.run
    if s.index == 0 and r.index % 5 == 0:
        ok = state.rng.random() > 0.1
        took = int(state.rng.lognormvariate(5, 1))
        yield (
            state.ids.at(r.created),
            s.id,
            _TOOLS[r.index % len(_TOOLS)],
            Jsonb({"q": r.index}),
            Jsonb({"ok": ok}) if ok else None,
            "succeeded" if ok else "failed",
            None if ok else "timeout",
            r.created,
            r.created + datetime.timedelta(milliseconds=took),
            took,
            r.created,
            r.created,
        )


TOOL_EXECUTIONS = Table(
    "tool_executions",
    columns(
        "id uuid, step_id uuid, tool_name text, input jsonb, output jsonb, status text,"
        " error text, started_at timestamptz, finished_at timestamptz, duration_ms int8,"
        " created_at timestamptz, updated_at timestamptz"
    ),
    by_database=frozenset({"session_id"}),
    refs=frozenset({"execution_steps"}),
    make=_tool_calls,
    row=_as_is,
)


def _steps(state: _State, r: _Run) -> Iterator[_Step]:
    plan = zip(r.workflow.stage_ids, _TASKS, _STEP_PLAN[r.status], strict=True)
    for index, (stage_id, task, status) in enumerate(plan):
        sid = state.ids.at(r.created)
        priority = state.rng.randrange(-5, 6)
        started = r.created + _STEP_STARTS[index] if status in _STARTED else None
        ended = started + _STEP_DURATION if started and status != "running" else None
        pinned = state.pinned[r.workflow.id, task]
        yield _Step(r, sid, index, task, stage_id, pinned, status, priority, started, ended)


def _step_row(s: _Step) -> Row:
    created, leased = s.run.created, s.status == "running"
    return (
        s.id,
        s.run.id,
        s.stage_id,
        s.version_stage_id,
        1 if s.status == "pending" else 0,
        s.task,
        s.status,
        s.priority,
        0 if s.started is None else 1,
        created,
        "worker-7" if leased else None,
        created + _LEASE if leased else None,
        s.started,
        s.ended,
        2000 if s.ended else None,
        Jsonb({"rows": 10}) if s.status == "completed" else None,
        "boom" if s.status == "failed" else None,
        created,
        s.ended or created,
    )


EXECUTION_STEPS = Table(
    "execution_steps",
    columns(
        "id uuid, execution_id uuid, stage_id uuid, version_stage_id uuid,"
        " deps_remaining int4, task_name text, status text, priority int2, attempt int4,"
        " available_at timestamptz, lease_owner text, lease_expires_at timestamptz,"
        " started_at timestamptz, completed_at timestamptz, duration_ms int8,"
        " outputs jsonb, error text, created_at timestamptz, updated_at timestamptz"
    ),
    # queue: every stage of the volume runs in 'default'; no step waits for a signal or
    # has a concurrency or rate-limit key.
    by_database=frozenset(
        {
            "task_index",
            "max_attempts",
            "timeout_seconds",
            "heartbeat_at",
            "queue",
            "signal_name",
            "signal_deadline",
            "signal_id",
            "concurrency_key",
            "concurrency_limit",
            "rate_key",
            "rate_limit",
            "rate_window",
        }
    ),
    refs=frozenset({"workflow_executions", "workflow_stages", "workflow_version_stages"}),
    make=_steps,
    row=_step_row,
    children=(STEP_ATTEMPTS, STEP_LOGS, TOOL_EXECUTIONS),
)


def _outbox(state: _State, r: _Run) -> Iterator[Row]:
    if r.index % 10 == 0:
        # The last 10,000 executions' events are left unpublished: the relay's backlog.
        published = r.created if r.index < state.scale - 10_000 else None
        payload = Jsonb({"execution_id": str(r.id)})
        oid = state.ids.at(r.created)
        yield (
            oid,
            "execution",
            r.id,
            "execution.started",
            payload,
            r.created,
            r.created,
            published,
        )


OUTBOX = Table(
    "outbox",
    columns(
        "id uuid, aggregate_type text, aggregate_id uuid, event_type text, payload jsonb,"
        " created_at timestamptz, available_at timestamptz, published_at timestamptz"
    ),
    by_database=frozenset({"attempts", "last_error"}),
    refs=frozenset(),
    make=_outbox,
    row=_as_is,
)


def _execution(state: _State, index: int) -> Iterator[_Run]:
    created = _BASE + state.gap * index
    eid = state.ids.at(created)
    workflow = state.workflows[state.rng.randrange(len(state.workflows))]
    status = state.rng.choices(_STATUS_NAMES, cum_weights=_STATUS_CUMULATIVE)[0]
    finished = None
    if status in _FINISHED:
        finished = created + datetime.timedelta(seconds=5 + state.rng.randrange(600))
    rows = state.rng.randrange(10_000)
    yield _Run(
        index, eid, workflow, state.users[index % len(state.users)], status, created, finished, rows
    )


def _execution_row(r: _Run) -> Row:
    started = None if r.status == "pending" else r.created + _SECOND
    parameters = Jsonb({"date": r.created.date().isoformat(), "rows": r.rows})
    # Version 2: committing the stages made it, and its stage snapshot is the one pinned.
    return (
        r.id,
        r.workflow.id,
        2,
        r.triggered_by,
        r.status,
        parameters,
        "step load failed" if r.status == "failed" else None,
        "waiting for approval" if r.status == "paused" else None,
        _TASK_GRAPH,
        started,
        r.finished,
        r.created,
        r.finished or r.created,
    )


def _read_pinned(conn: psycopg.Connection[Any], state: _State) -> None:
    # The snapshot ids come from the database (a trigger makes them), so they are read back.
    state.pinned = {
        (wid, name): vsid
        for wid, name, vsid in conn.execute(
            "SELECT v.workflow_id, v.name, v.id FROM workflow_version_stages AS v"
            " JOIN workflows AS w ON w.id = v.workflow_id AND w.version = v.version"
        )
    }


WORKFLOW_EXECUTIONS = Table(
    "workflow_executions",
    columns(
        "id uuid, workflow_id uuid, workflow_version int4, triggered_by uuid, status text,"
        " parameters jsonb, error_message text, pause_reason text, task_graph jsonb,"
        " started_at timestamptz, finished_at timestamptz, created_at timestamptz,"
        " updated_at timestamptz"
    ),
    by_database=frozenset(
        {
            "parent_execution_id",
            "attempt",
            "idempotency_key",
            "variables",
            "row_version",
            "failure_mode",
            "parent_step_id",
        }
    ),
    refs=frozenset({"workflows", "workflow_versions", "users"}),
    make=_execution,
    row=_execution_row,
    children=(EXECUTION_STEPS, OUTBOX),
)


# -- memory items --------------------------------------------------------------------------


def _memory_item(state: _State, i: int) -> Iterator[Row]:
    content = f"Memory item {i}: prefer keyset pagination over OFFSET for table {i % 97}"
    yield (
        state.ids.at(_BASE),
        f"project-{i % 10}",
        _MEMORY_KINDS[i % 5],
        content,
        hashlib.sha256(content.encode()).digest(),
        round(state.rng.random(), 3),
        _MEMORY_STATUSES[i % 4],
        [f"src/module_{i % 50}.py"],
        _BASE,
        _BASE,
    )


MEMORY_ITEMS = Table(
    "memory_items",
    columns(
        "id uuid, project text, kind text, content text, content_hash bytea,"
        " confidence float8, status text, anchors text[], created_at timestamptz,"
        " updated_at timestamptz"
    ),
    by_database=frozenset({"provenance", "access_count", "last_accessed_at", "expires_at"}),
    refs=frozenset(),
    make=_memory_item,
    row=_as_is,
)


# The order tables are loaded in: each after the tables its rows reference.
PLAN = (
    TopLevel(USERS, lambda scale: max(5, scale // 20_000)),
    TopLevel(WORKFLOWS, lambda scale: max(10, scale // 2_000)),
    TopLevel(WORKFLOW_EXECUTIONS, lambda scale: scale, read_first=_read_pinned),
    TopLevel(MEMORY_ITEMS, lambda scale: min(5_000, max(100, scale // 200))),
)


# -- the loader ----------------------------------------------------------------------------


def stderr_progress(table: str, done: int, total: int) -> None:
    """A one-line progress bar on stderr."""
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r{table:<20} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _no_progress(table: str, done: int, total: int) -> None:
    return None


def generate(
    conn: psycopg.Connection[Any],
    *,
    scale: int,
    seed: int = 42,
    progress: Progress | None = None,
) -> VolumeReport:
    """Write `scale` executions and everything around them; commits per chunk.

    `conn` must be in autocommit mode. Raises InvalidInput when `scale` is below 1 or
    volume was already written.
    """
    _check(conn, scale)
    started = time.perf_counter()
    set_json_dumps(msgspec.json.encode, conn)
    state, report, tick = _State.start(scale, seed), VolumeReport(), progress or _no_progress
    for top in PLAN:
        _load(conn, state, top, report, tick)
    tick("analyze", 0, 1)
    conn.execute("ANALYZE")
    tick("analyze", 1, 1)
    report.seconds = time.perf_counter() - started
    return report


def _check(conn: psycopg.Connection[Any], scale: int) -> None:
    if scale < 1:
        raise InvalidInput(f"scale must be at least 1, got {scale}")
    present = conn.execute("SELECT 1 FROM users WHERE email LIKE '%%@volume.example' LIMIT 1")
    if present.fetchone() is not None:
        raise InvalidInput("this database already holds generated volume; use a fresh database")


def _load(
    conn: psycopg.Connection[Any],
    state: _State,
    top: TopLevel,
    report: VolumeReport,
    tick: Progress,
) -> None:
    """Make and copy a top-level table's rows with its children's, a transaction per chunk."""
    if top.read_first is not None:
        top.read_first(conn, state)
    tables = tuple(family(top.table))
    report.rows.update((table.name, 0) for table in tables)
    total = top.count(state.scale)
    # Closed on the way out, also on an error: the thread making the next chunk is joined.
    with contextlib.closing(_ahead(_chunks(state, top.table, total))) as chunks:
        for done, rows in chunks:
            with conn.transaction():
                for table in tables:
                    _copy(conn, table, rows[table.name])
                    report.rows[table.name] += len(rows[table.name])
            tick(top.table.name, done, total)


def _chunks(
    state: _State, top: Table[int, Any], total: int
) -> Iterator[tuple[int, dict[str, list[Row]]]]:
    """Per chunk of `top`'s rows: how many are made so far, and every table's rows."""
    for start in range(0, total, _CHUNK):
        stop = min(start + _CHUNK, total)
        rows: dict[str, list[Row]] = {table.name: [] for table in family(top)}
        fill = _filler(top, rows)
        for index in range(start, stop):
            fill(state, index)
        yield stop, rows


def _ahead(items: Iterator[X]) -> Generator[X, None, None]:
    """`items` in order, each made in a thread while the caller uses the one before."""
    # The server checks and indexes a chunk while the next one is made; one thread makes
    # them all, one after another, so the seeded draws keep their order.
    with ThreadPoolExecutor(max_workers=1) as maker:
        pending = maker.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = maker.submit(next, items, None)
            yield item


def _filler(table: Table[P, Any], rows: dict[str, list[Row]]) -> Callable[[_State, P], None]:
    """What appends the rows `table` makes from a source, each followed by its children's."""
    # Bound once per chunk: this runs for every row, so it looks nothing up.
    own, make, row = rows[table.name], table.make, table.row
    children = tuple(_filler(child, rows) for child in table.children)

    def fill(state: _State, source: P) -> None:
        for item in make(state, source):
            own.append(row(item))
            for child in children:
                child(state, item)

    return fill


def _copy(conn: psycopg.Connection[Any], table: Table[Any, Any], rows: list[Row]) -> None:
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table.name),
        sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns),
    )
    with conn.cursor().copy(statement) as copy:
        copy.set_types([column.type for column in table.columns])
        for row in rows:
            copy.write_row(row)
