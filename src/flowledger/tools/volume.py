"""Realistic synthetic volume for plan checks and benchmarks (`flowledger seed --scale N`).

Writes users, workflows with versions and stages, N executions with their steps,
attempts, log lines and tool executions, outbox events and memory items, all with binary
COPY in chunks, then ANALYZEs. The data is a pure function of (N, seed) on an empty
database: ids are UUIDv7 built from synthetic timestamps and a seeded generator.

Shape per execution: 3 steps (one per stage), one attempt per started step, 2 log
lines; one tool execution per 5 executions, one outbox event per 10. Statuses follow a
production-like mix: 75 % completed, 8 % failed, 4 % cancelled, 8 % running, 2 % paused,
3 % pending; running executions hold one leased step and queued ones waiting.
"""

from __future__ import annotations

import datetime
import hashlib
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
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
_STEP_PLAN = {
    "completed": ("completed", "completed", "completed"),
    "failed": ("completed", "completed", "failed"),
    "cancelled": ("completed", "cancelled", "cancelled"),
    "running": ("completed", "running", "pending"),
    "paused": ("completed", "queued", "pending"),
    "pending": ("queued", "pending", "pending"),
}
# The dependency graph of every generated workflow: extract -> transform -> load.
_TASK_GRAPH = Jsonb({"extract": [], "transform": ["extract"], "load": ["transform"]})
_TOOLS = ("http.get", "sql.query", "shell.run", "llm.complete", "s3.put", "slack.post")
_MEMORY_KINDS = ("decision", "constraint", "gotcha", "style_rule", "learning")

Progress = Callable[[str, int, int], None]


@dataclass
class VolumeReport:
    """Rows written per table and the time it took."""

    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class _Ids:
    """Deterministic UUIDv7: the timestamp given, random bits from the seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def at(self, when: datetime.datetime) -> uuid.UUID:
        ms = int(when.timestamp() * 1000)
        rand = self._rng.getrandbits(74)
        value = (ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76 | (rand >> 62) << 64  # version 7 + 12 random bits
        value |= 0b10 << 62 | (rand & ((1 << 62) - 1))  # RFC 4122 variant + 62 random bits
        return uuid.UUID(int=value)


def stderr_progress(table: str, done: int, total: int) -> None:
    """A one-line progress bar on stderr."""
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r{table:<16} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _copy(
    conn: psycopg.Connection[Any],
    table: str,
    columns: Sequence[str],
    types: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    cols = ", ".join(columns)
    with conn.cursor().copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


def generate(
    conn: psycopg.Connection[Any],
    *,
    scale: int,
    seed: int = 42,
    progress: Progress | None = None,
) -> VolumeReport:
    """Write `scale` executions and everything around them; commits per chunk.

    `conn` must be in autocommit mode. Raises InvalidInput when volume was already written.
    """
    if scale < 1:
        raise InvalidInput(f"scale must be at least 1, got {scale}")
    present = conn.execute("SELECT 1 FROM users WHERE email LIKE '%%@volume.example' LIMIT 1")
    if present.fetchone() is not None:
        raise InvalidInput("this database already holds generated volume; use a fresh database")
    started = time.perf_counter()
    set_json_dumps(msgspec.json.encode, conn)
    rng = random.Random(seed)
    ids = _Ids(rng)
    report = VolumeReport()
    tick = progress or (lambda table, done, total: None)

    users = [ids.at(_BASE) for _ in range(max(5, scale // 20_000))]
    with conn.transaction():
        _copy(
            conn,
            "users",
            ("id", "email", "display_name", "role", "created_at", "updated_at"),
            ("uuid", "text", "text", "text", "timestamptz", "timestamptz"),
            [
                (
                    u,
                    f"user{i}@volume.example",
                    f"Volume user {i}",
                    ("admin", "developer", "viewer")[i % 3],
                    _BASE,
                    _BASE,
                )
                for i, u in enumerate(users)
            ],
        )
    report.rows["users"] = len(users)

    n_workflows = max(10, scale // 2_000)
    workflows: list[tuple[uuid.UUID, list[uuid.UUID]]] = []
    wf_rows, stage_rows = [], []
    for i in range(n_workflows):
        wid = ids.at(_BASE)
        owner = users[i % len(users)]
        definition = {"stages": ["extract", "transform", "load"], "n": i}
        tags = [["etl", "daily"], ["ml"], ["ops", "nightly"], ["etl"], []][i % 5]
        wf_rows.append(
            (
                wid,
                owner,
                f"workflow-{i:06d}",
                f"Synthetic workflow number {i} moving data",
                ("active", "draft", "archived")[0 if i % 10 else 2],
                i % 7 != 0,
                "manual",
                f"stages: [extract, transform, load]  # {i}\n",
                Jsonb(definition),
                tags,
                _BASE,
                _BASE,
            )
        )
        stage_ids = []
        for pos, name in enumerate(("extract", "transform", "load")):
            sid = ids.at(_BASE)
            stage_ids.append(sid)
            stage_rows.append((sid, wid, pos, name, f"core.{name}", _BASE, _BASE))
        workflows.append((wid, stage_ids))
    with conn.transaction():
        _copy(
            conn,
            "workflows",
            (
                "id",
                "owner_id",
                "name",
                "description",
                "status",
                "enabled",
                "trigger_type",
                "definition_yaml",
                "definition",
                "tags",
                "created_at",
                "updated_at",
            ),
            (
                "uuid",
                "uuid",
                "text",
                "text",
                "text",
                "bool",
                "text",
                "text",
                "jsonb",
                "text[]",
                "timestamptz",
                "timestamptz",
            ),
            wf_rows,
        )
        _copy(
            conn,
            "workflow_stages",
            ("id", "workflow_id", "position", "name", "action_ref", "created_at", "updated_at"),
            ("uuid", "uuid", "int4", "text", "text", "timestamptz", "timestamptz"),
            stage_rows,
        )
    report.rows["workflows"] = n_workflows
    report.rows["workflow_stages"] = len(stage_rows)
    # Committing the stages made each workflow's version 2, whose stage snapshot the
    # executions pin (the snapshot ids come from the database, so they are read back).
    pinned = {
        (wid, name): vsid
        for wid, name, vsid in conn.execute(
            "SELECT v.workflow_id, v.name, v.id FROM workflow_version_stages AS v"
            " JOIN workflows AS w ON w.id = v.workflow_id AND w.version = v.version"
        )
    }

    weights = [w for _, w in _STATUSES]
    names = [s for s, _ in _STATUSES]
    counters = dict.fromkeys(
        (
            "workflow_executions",
            "execution_steps",
            "step_attempts",
            "step_logs",
            "tool_executions",
            "outbox",
        ),
        0,
    )
    step_gap = _SPAN / max(scale, 1)
    done = 0
    while done < scale:
        size = min(_CHUNK, scale - done)
        ex_rows, st_rows, at_rows, log_rows, tool_rows, ob_rows = [], [], [], [], [], []
        for k in range(done, done + size):
            created = _BASE + step_gap * k
            eid = ids.at(created)
            wid, stage_ids = workflows[rng.randrange(n_workflows)]
            status = rng.choices(names, weights)[0]
            started_at = None if status == "pending" else created + datetime.timedelta(seconds=1)
            finished_at = (
                created + datetime.timedelta(seconds=5 + rng.randrange(600))
                if status in ("completed", "failed", "cancelled")
                else None
            )
            ex_rows.append(
                (
                    eid,
                    wid,
                    2,
                    users[k % len(users)],
                    status,
                    Jsonb({"date": created.date().isoformat(), "rows": rng.randrange(10_000)}),
                    "step load failed" if status == "failed" else None,
                    "waiting for approval" if status == "paused" else None,
                    _TASK_GRAPH,
                    started_at,
                    finished_at,
                    created,
                    finished_at or created,
                )
            )
            for idx, (sid, step_status) in enumerate(
                zip(stage_ids, _STEP_PLAN[status], strict=True)
            ):
                step_id = ids.at(created)
                ran = step_status in ("completed", "failed", "running")
                s_start = created + datetime.timedelta(seconds=1 + idx) if ran else None
                s_end = (
                    s_start + datetime.timedelta(seconds=2)
                    if s_start is not None and step_status != "running"
                    else None
                )
                leased = step_status == "running"
                task = ("extract", "transform", "load")[idx]
                st_rows.append(
                    (
                        step_id,
                        eid,
                        sid,
                        pinned[wid, task],
                        1 if step_status == "pending" else 0,
                        task,
                        step_status,
                        rng.randrange(-5, 6),
                        1 if ran else 0,
                        created,
                        "worker-7" if leased else None,
                        created + datetime.timedelta(minutes=5) if leased else None,
                        s_start,
                        s_end,
                        2000 if s_end else None,
                        Jsonb({"rows": 10}) if step_status == "completed" else None,
                        "boom" if step_status == "failed" else None,
                        created,
                        s_end or created,
                    )
                )
                if ran:
                    outcome = None if leased else step_status
                    at_rows.append(
                        (
                            ids.at(created),
                            step_id,
                            eid,
                            1,
                            "worker-7",
                            s_start,
                            s_end,
                            outcome,
                            "boom" if step_status == "failed" else None,
                        )
                    )
                if idx == 0:
                    log_rows.append(
                        (step_id, eid, "info", f"started {status} run", Jsonb({"k": k}), created)
                    )
                    log_rows.append(
                        (step_id, eid, "debug", "fetched batch", Jsonb({"rows": 10}), created)
                    )
                    if k % 5 == 0:
                        ok = rng.random() > 0.1
                        dur = int(rng.lognormvariate(5, 1))
                        tool_rows.append(
                            (
                                ids.at(created),
                                step_id,
                                _TOOLS[k % len(_TOOLS)],
                                Jsonb({"q": k}),
                                Jsonb({"ok": ok}) if ok else None,
                                "succeeded" if ok else "failed",
                                None if ok else "timeout",
                                created,
                                created + datetime.timedelta(milliseconds=dur),
                                dur,
                                created,
                                created,
                            )
                        )
            if k % 10 == 0:
                published = created if k < scale - 1_000 * 10 else None
                ob_rows.append(
                    (
                        ids.at(created),
                        "execution",
                        eid,
                        "execution.started",
                        Jsonb({"execution_id": str(eid)}),
                        created,
                        created,
                        published,
                    )
                )
        with conn.transaction():
            _copy(
                conn,
                "workflow_executions",
                (
                    "id",
                    "workflow_id",
                    "workflow_version",
                    "triggered_by",
                    "status",
                    "parameters",
                    "error_message",
                    "pause_reason",
                    "task_graph",
                    "started_at",
                    "finished_at",
                    "created_at",
                    "updated_at",
                ),
                (
                    "uuid",
                    "uuid",
                    "int4",
                    "uuid",
                    "text",
                    "jsonb",
                    "text",
                    "text",
                    "jsonb",
                    "timestamptz",
                    "timestamptz",
                    "timestamptz",
                    "timestamptz",
                ),
                ex_rows,
            )
            _copy(
                conn,
                "execution_steps",
                (
                    "id",
                    "execution_id",
                    "stage_id",
                    "version_stage_id",
                    "deps_remaining",
                    "task_name",
                    "status",
                    "priority",
                    "attempt",
                    "available_at",
                    "lease_owner",
                    "lease_expires_at",
                    "started_at",
                    "completed_at",
                    "duration_ms",
                    "outputs",
                    "error",
                    "created_at",
                    "updated_at",
                ),
                (
                    "uuid",
                    "uuid",
                    "uuid",
                    "uuid",
                    "int4",
                    "text",
                    "text",
                    "int2",
                    "int4",
                    "timestamptz",
                    "text",
                    "timestamptz",
                    "timestamptz",
                    "timestamptz",
                    "int8",
                    "jsonb",
                    "text",
                    "timestamptz",
                    "timestamptz",
                ),
                st_rows,
            )
            _copy(
                conn,
                "step_attempts",
                (
                    "id",
                    "step_id",
                    "execution_id",
                    "attempt",
                    "worker_id",
                    "started_at",
                    "finished_at",
                    "outcome",
                    "error",
                ),
                (
                    "uuid",
                    "uuid",
                    "uuid",
                    "int4",
                    "text",
                    "timestamptz",
                    "timestamptz",
                    "text",
                    "text",
                ),
                at_rows,
            )
            _copy(
                conn,
                "step_logs",
                ("step_id", "execution_id", "level", "message", "fields", "logged_at"),
                ("uuid", "uuid", "text", "text", "jsonb", "timestamptz"),
                log_rows,
            )
            _copy(
                conn,
                "tool_executions",
                (
                    "id",
                    "step_id",
                    "tool_name",
                    "input",
                    "output",
                    "status",
                    "error",
                    "started_at",
                    "finished_at",
                    "duration_ms",
                    "created_at",
                    "updated_at",
                ),
                (
                    "uuid",
                    "uuid",
                    "text",
                    "jsonb",
                    "jsonb",
                    "text",
                    "text",
                    "timestamptz",
                    "timestamptz",
                    "int8",
                    "timestamptz",
                    "timestamptz",
                ),
                tool_rows,
            )
            _copy(
                conn,
                "outbox",
                (
                    "id",
                    "aggregate_type",
                    "aggregate_id",
                    "event_type",
                    "payload",
                    "created_at",
                    "available_at",
                    "published_at",
                ),
                (
                    "uuid",
                    "text",
                    "uuid",
                    "text",
                    "jsonb",
                    "timestamptz",
                    "timestamptz",
                    "timestamptz",
                ),
                ob_rows,
            )
        for table, rows in (
            ("workflow_executions", ex_rows),
            ("execution_steps", st_rows),
            ("step_attempts", at_rows),
            ("step_logs", log_rows),
            ("tool_executions", tool_rows),
            ("outbox", ob_rows),
        ):
            counters[table] += len(rows)
        done += size
        tick("executions", done, scale)
    report.rows.update(counters)

    n_memory = min(5_000, max(100, scale // 200))
    memory_rows = []
    for i in range(n_memory):
        content = f"Memory item {i}: prefer keyset pagination over OFFSET for table {i % 97}"
        memory_rows.append(
            (
                ids.at(_BASE),
                f"project-{i % 10}",
                _MEMORY_KINDS[i % 5],
                content,
                hashlib.sha256(content.encode()).digest(),
                round(rng.random(), 3),
                ("candidate", "active", "stable", "deprecated")[i % 4],
                [f"src/module_{i % 50}.py"],
                _BASE,
                _BASE,
            )
        )
    with conn.transaction():
        _copy(
            conn,
            "memory_items",
            (
                "id",
                "project",
                "kind",
                "content",
                "content_hash",
                "confidence",
                "status",
                "anchors",
                "created_at",
                "updated_at",
            ),
            (
                "uuid",
                "text",
                "text",
                "text",
                "bytea",
                "float8",
                "text",
                "text[]",
                "timestamptz",
                "timestamptz",
            ),
            memory_rows,
        )
    report.rows["memory_items"] = n_memory

    tick("analyze", 0, 1)
    conn.execute("ANALYZE")
    tick("analyze", 1, 1)
    report.seconds = time.perf_counter() - started
    return report
