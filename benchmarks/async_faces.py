"""flowledger's async face against asyncpg + msgspec and SQLAlchemy 2 async (ORM and Core),
and the sync hot path of this tree against a baseline checkout, side by side in one run on
one database of generated volume.

What it measures (medians of interleaved repeats; compare ratios within one run, since this
kind of machine drifts by ±25 % from minute to minute):

1. point lookup of an execution by id: `await db.executions.get(id=...)`;
2. a page of 50 executions, newest first: `await db.executions.list(limit=50)`;
3. claim + complete of no-op steps: executions of a one-stage workflow are started first
   (not timed), then each task claims one step at a time (`steps.claim(limit=1)`) and
   completes it (`steps.complete`, outputs `{"rows": 10}`) until none is left; the
   figure is steps claimed and completed per second (each: the claim statement, then one
   transaction that locks the execution, completes the step, finishes the execution and
   writes its `execution.completed` event).

Each runs with C concurrent asyncio tasks (`--concurrency`, default 1 and 8) sharing a pool
of exactly C connections, the same for every contender, every call borrowing a connection:
- flowledger async: `flowledger.connect_async(url, min_size=C, max_size=C)`;
- asyncpg + msgspec: `asyncpg.create_pool(min_size=C, max_size=C)`, jsonb through
  msgspec, flowledger's own SQL text of the named query (`%(name)s` turned into `$n`),
  rows decoded into the same msgspec records;
- SQLAlchemy async ORM: `AsyncSession.get` / `select` of a mapped class, one session per
  call, on `create_async_engine("postgresql+asyncpg://", pool_size=C, max_overflow=0)` in
  AUTOCOMMIT (flowledger's and asyncpg's mode: no BEGIN/ROLLBACK per read);
- SQLAlchemy async Core: `select(table)` on the same engine; for claim + complete,
  flowledger's SQL text through `exec_driver_sql` in `engine.begin()`. (The ORM has no
  form of a SKIP LOCKED claim-and-lease statement: it is not in the claim comparison.)

With `--sync-baseline CHECKOUT`, the sync `Database` point lookup and page of 50 of this
tree and of CHECKOUT (e.g. `git worktree add --detach ../baseline ea512d2`) run alternately,
each in a fresh process (benchmarks/sync_hot_path.py with PYTHONPATH=<tree>/src), on the
same database.

Usage (without --database, FLOWLEDGER_URL or DATABASE_URL it uses the embedded server):

    .venv/bin/python benchmarks/async_faces.py [--database URL] [--scale 100000]
        [--repeats 5] [--concurrency 1 8] [--sync-baseline CHECKOUT]
        [--output benchmarks/RESULTS.md]

It creates (or with --reuse keeps) the database `flowledger_async_bench` on that server,
migrates it and generates the volume (flowledger.tools.volume, as benchmarks/run.py does);
`--output` writes the tables into RESULTS.md as the `async_faces` section, which
benchmarks/run.py keeps when it rewrites the file.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import gc
import json
import os
import platform
import pstats
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import starmap
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import psycopg
import sqlalchemy as sa
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

import flowledger
from flowledger.aio.database import AsyncDatabase
from flowledger.aio.repositories.base import record_of
from flowledger.records.identity import NewUser
from flowledger.records.runs import StartRequest
from flowledger.records.workflows import NewStage, NewWorkflow
from flowledger.repositories.queries import get_queries
from flowledger.tools.migrate import Migrator
from flowledger.tools.volume import generate
from flowledger.urls import resolve, to_libpq_url

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from report import write_section  # noqa: E402  (a sibling script, not a package)

BENCH_DB = "flowledger_async_bench"
SECTION = "async_faces"
TITLE = "Async face: flowledger vs asyncpg + msgspec and SQLAlchemy 2 async; sync hot path"
FLOWLEDGER = "flowledger async"
ASYNCPG = "asyncpg + msgspec"
PSYCOPG = "psycopg async + pool"
SA_ORM = "SQLAlchemy async ORM"
SA_CORE = "SQLAlchemy async Core"
LOOKUP, PAGE, CLAIM = "point lookup by id", "page of 50", "claim + complete"
OUTPUTS = {"rows": 10}
LEASE = datetime.timedelta(seconds=30)
# (workload, ours, peer, at least): the goals the report checks.
GOALS = [
    (PAGE, FLOWLEDGER, ASYNCPG, 1.0),
    (LOOKUP, FLOWLEDGER, ASYNCPG, 0.9),
    (LOOKUP, FLOWLEDGER, SA_ORM, 3.0),
    (PAGE, FLOWLEDGER, SA_ORM, 3.0),
]
SYNC_GOAL = 0.97


# -- the SQLAlchemy mapping of the table the peers read ---------------------------------------


class Base(orm.DeclarativeBase):
    pass


class ExecutionRow(Base):
    __tablename__ = "workflow_executions"
    id: orm.Mapped[uuid.UUID] = orm.mapped_column(primary_key=True)
    workflow_id: orm.Mapped[uuid.UUID]
    workflow_version: orm.Mapped[int]
    parent_execution_id: orm.Mapped[uuid.UUID | None]
    triggered_by: orm.Mapped[uuid.UUID | None]
    status: orm.Mapped[str]
    attempt: orm.Mapped[int]
    idempotency_key: orm.Mapped[str | None]
    parameters: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB)
    variables: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB)
    task_graph: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB)
    error_message: orm.Mapped[str | None]
    pause_reason: orm.Mapped[str | None]
    started_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column(sa.DateTime(timezone=True))
    finished_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column(
        sa.DateTime(timezone=True)
    )
    row_version: orm.Mapped[int]
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(sa.DateTime(timezone=True))
    updated_at: orm.Mapped[datetime.datetime] = orm.mapped_column(sa.DateTime(timezone=True))
    failure_mode: orm.Mapped[str]
    parent_step_id: orm.Mapped[uuid.UUID | None]


EXECUTIONS: sa.Table = ExecutionRow.__table__  # type: ignore[assignment]


# -- flowledger's named queries, for the drivers ------------------------------------------------


@dataclass(frozen=True)
class Named:
    """A named query of sql/ with `%(name)s` turned into `$n`, and its row decoder."""

    sql: str
    names: tuple[str, ...]
    record: Callable[..., Any]

    @classmethod
    def load(cls, name: str) -> Named:
        query = get_queries()[name]
        names = tuple(dict.fromkeys(re.findall(r"%\((\w+)\)s", query.sql)))
        sql = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", query.sql)
        return cls(sql.replace("%%", "%"), names, record_of(query))

    def args(self, params: dict[str, Any]) -> list[Any]:
        return [params[n] for n in self.names]


# -- connections ----------------------------------------------------------------------------


def with_db(url: str, dbname: str) -> str:
    parts = urlsplit(to_libpq_url(url))
    return urlunsplit(parts._replace(path="/" + dbname))


def asyncpg_dsn(url: str) -> dict[str, Any]:
    info = psycopg.conninfo.conninfo_to_dict(to_libpq_url(url))
    return {
        "host": info.get("host"),
        "port": int(info.get("port") or 5432),
        "user": info.get("user"),
        "password": info.get("password"),
        "database": info.get("dbname"),
        "server_settings": {"TimeZone": "UTC"},
    }


async def _msgspec_jsonb(conn: asyncpg.Connection) -> None:
    # The text codec calls msgspec's decoder directly: asyncpg's fastest jsonb reads.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: msgspec.json.encode(v).decode(),
        decoder=msgspec.json.decode,
        schema="pg_catalog",
        format="text",
    )


async def _no_reset(conn: asyncpg.Connection) -> None:
    # asyncpg's default resets every returned connection (RESET ALL, UNLISTEN *, ...: a
    # round trip per borrow); flowledger's pool returns connections without one, and so
    # does this contender, to compare the drivers and not their pools' hygiene.
    return None


async def _msgspec_json(conn: psycopg.AsyncConnection[Any]) -> None:
    set_json_loads(msgspec.json.decode, conn)


@dataclass
class Contenders:
    """The pools of one concurrency level, C connections each."""

    size: int
    db: AsyncDatabase
    apg: asyncpg.Pool
    psy: AsyncConnectionPool[Any]
    engine: AsyncEngine
    reads: AsyncEngine  # the same pool in AUTOCOMMIT
    sessions: async_sessionmaker[Any]

    @classmethod
    async def open(cls, url: str, size: int) -> Contenders:
        db = await flowledger.connect_async(url, min_size=size, max_size=size)
        dsn = asyncpg_dsn(url)
        apg = await asyncpg.create_pool(
            **dsn, min_size=size, max_size=size, init=_msgspec_jsonb, reset=_no_reset
        )
        engine = create_async_engine(
            "postgresql+asyncpg://",
            async_creator=lambda: asyncpg.connect(**dsn),
            pool_size=size,
            max_overflow=0,
            json_deserializer=msgspec.json.decode,
            json_serializer=lambda v: msgspec.json.encode(v).decode(),
        )
        psy: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=size,
            max_size=size,
            kwargs={"autocommit": True, "options": "-c TimeZone=UTC"},
            configure=_msgspec_json,
            open=False,
        )
        await psy.open(wait=True)
        reads = engine.execution_options(isolation_level="AUTOCOMMIT")
        sessions = async_sessionmaker(reads, expire_on_commit=False)
        return cls(size, db, apg, psy, engine, reads, sessions)

    async def close(self) -> None:
        await self.db.close()
        await self.apg.close()
        await self.psy.close()
        await self.engine.dispose()


# -- workloads: each returns how many operations it did ------------------------------------


Work = Callable[[], Awaitable[int]]


async def _spread(items: Sequence[Any], tasks: int, one: Callable[[Any], Awaitable[Any]]) -> int:
    """Run `one(item)` for every item, `tasks` asyncio tasks each taking every tasks-th."""

    async def task(share: Sequence[Any]) -> None:
        for item in share:
            await one(item)

    await asyncio.gather(*(task(items[t::tasks]) for t in range(tasks)))
    return len(items)


def lookups(c: Contenders, ids: list[uuid.UUID]) -> dict[str, Work]:
    get = Named.load("get_execution_by_id")
    psy_get = get_queries()["get_execution_by_id"].sql
    core = sa.select(EXECUTIONS).where(EXECUTIONS.c.id == sa.bindparam("id"))

    async def flowledger_get(i: uuid.UUID) -> Any:
        return await c.db.executions.get(id=i)

    async def asyncpg_get(i: uuid.UUID) -> Any:
        async with c.apg.acquire() as conn:
            row = await conn.fetchrow(get.sql, i)
        return get.record(*row)

    async def psycopg_get(i: uuid.UUID) -> Any:
        async with c.psy.connection() as conn:
            cur = await conn.execute(psy_get, {"id": i})
            row = await cur.fetchone()
        return get.record(*row)

    async def orm_get(i: uuid.UUID) -> Any:
        async with c.sessions() as session:
            return await session.get(ExecutionRow, i)

    async def core_get(i: uuid.UUID) -> Any:
        async with c.reads.connect() as conn:
            return (await conn.execute(core, {"id": i})).one()

    fns = {
        FLOWLEDGER: flowledger_get,
        ASYNCPG: asyncpg_get,
        PSYCOPG: psycopg_get,
        SA_ORM: orm_get,
        SA_CORE: core_get,
    }
    return {name: _bind(_spread, ids, c.size, fn) for name, fn in fns.items()}


def pages(c: Contenders, n: int) -> dict[str, Work]:
    listing = Named.load("list_executions")
    psy_list = get_queries()["list_executions"].sql
    params: dict[str, Any] = dict.fromkeys(listing.names)
    params["limit"] = 50
    args = listing.args(params)
    order = (EXECUTIONS.c.created_at.desc(), EXECUTIONS.c.id.desc())
    orm_stmt = sa.select(ExecutionRow).order_by(*order).limit(50)
    core_stmt = sa.select(EXECUTIONS).order_by(*order).limit(50)

    async def flowledger_page(_: int) -> Any:
        return await c.db.executions.list(limit=50)

    async def asyncpg_page(_: int) -> Any:
        async with c.apg.acquire() as conn:
            rows = await conn.fetch(listing.sql, *args)
        # The query reads one row more than the page (whether there is a next page).
        return list(starmap(listing.record, rows))[:50]

    async def psycopg_page(_: int) -> Any:
        async with c.psy.connection() as conn:
            cur = await conn.execute(psy_list, params)
            rows = await cur.fetchall()
        return list(starmap(listing.record, rows))[:50]

    async def orm_page(_: int) -> Any:
        async with c.sessions() as session:
            return (await session.scalars(orm_stmt)).all()

    async def core_page(_: int) -> Any:
        async with c.reads.connect() as conn:
            return (await conn.execute(core_stmt)).all()

    fns = {
        FLOWLEDGER: flowledger_page,
        ASYNCPG: asyncpg_page,
        PSYCOPG: psycopg_page,
        SA_ORM: orm_page,
        SA_CORE: core_page,
    }
    return {name: _bind(_spread, list(range(n)), c.size, fn) for name, fn in fns.items()}


def _bind(spread: Any, items: Sequence[Any], tasks: int, fn: Any) -> Work:
    async def work() -> int:
        count: int = await spread(items, tasks, fn)
        return count

    return work


# -- claim + complete ---------------------------------------------------------------------------


class Claims:
    """Claim + complete of no-op steps, the steps queued (untimed) before each run."""

    def __init__(self, c: Contenders, workflow_id: uuid.UUID, steps: int) -> None:
        self.c, self.workflow_id, self.steps = c, workflow_id, steps
        self.q = {
            name: Named.load(name)
            for name in (
                "claim_steps",
                "lock_step_executions",
                "complete_steps",
                "finish_executions_if_settled",
            )
        }

    async def queue(self) -> None:
        """`steps` executions of the one-stage workflow, one queued step each."""
        for start in range(0, self.steps, 1000):
            count = min(1000, self.steps - start)
            await self.c.db.executions.start_many(
                requests=[StartRequest(workflow_id=self.workflow_id)] * count
            )

    def works(self) -> dict[str, Work]:
        return {
            FLOWLEDGER: self._run(self._flowledger),
            ASYNCPG: self._run(self._asyncpg),
            SA_CORE: self._run(self._core),
        }

    def _run(self, worker: Callable[[str], Awaitable[int]]) -> Work:
        async def work() -> int:
            done = await asyncio.gather(*(worker(f"bench-{t}") for t in range(self.c.size)))
            if sum(done) != self.steps:
                raise RuntimeError(f"completed {sum(done)} steps, {self.steps} were queued")
            return sum(done)

        return work

    async def _flowledger(self, worker: str) -> int:
        steps, done = self.c.db.steps, 0
        while claimed := await steps.claim(worker_id=worker, limit=1):
            for step in claimed:
                await steps.complete(
                    step_id=step.id, worker_id=worker, attempt=step.attempt, outputs=OUTPUTS
                )
            done += len(claimed)
        return done

    def _statements(self, worker: str, step: Any) -> dict[str, dict[str, Any]]:
        return {
            "lock_step_executions": {"ids": [step.id]},
            "complete_steps": {
                "worker_id": worker,
                "ids": [step.id],
                "attempts": [step.attempt],
                "outputs": [OUTPUTS],
            },
        }

    async def _asyncpg(self, worker: str) -> int:
        q, done = self.q, 0
        claim = q["claim_steps"].args(
            {"worker_id": worker, "limit": 1, "lease": LEASE, "queues": None}
        )
        while True:
            async with self.c.apg.acquire() as conn:
                rows = await conn.fetch(q["claim_steps"].sql, *claim)
            if not rows:
                return done
            for step in starmap(q["claim_steps"].record, rows):
                params = self._statements(worker, step)
                async with self.c.apg.acquire() as conn, conn.transaction():
                    fetched: dict[str, list[Any]] = {}
                    for name, p in params.items():
                        got = await conn.fetch(q[name].sql, *q[name].args(p))
                        fetched[name] = list(starmap(q[name].record, got))
                    await self._finish(fetched, conn.fetch)
            done += len(rows)

    async def _core(self, worker: str) -> int:
        q, done = self.q, 0
        claim = tuple(
            q["claim_steps"].args({"worker_id": worker, "limit": 1, "lease": LEASE, "queues": None})
        )
        # SQLAlchemy's asyncpg dialect encodes jsonb from text (its JSON type serialises).
        as_text: Callable[[Any], Any] = lambda v: msgspec.json.encode(v).decode()  # noqa: E731
        while True:
            async with self.c.reads.connect() as conn:
                rows = (await conn.exec_driver_sql(q["claim_steps"].sql, claim)).all()
            if not rows:
                return done
            for step in starmap(q["claim_steps"].record, rows):
                params = self._statements(worker, step)
                params["complete_steps"]["outputs"] = [as_text(OUTPUTS)]
                async with self.c.engine.begin() as conn:

                    async def fetch(sql: str, *args: Any, _conn: Any = conn) -> list[Any]:
                        return list((await _conn.exec_driver_sql(sql, tuple(args))).all())

                    fetched = {}
                    for name, p in params.items():
                        got = await fetch(q[name].sql, *q[name].args(p))
                        fetched[name] = list(starmap(q[name].record, got))
                    await self._finish(fetched, fetch)
            done += len(rows)

    async def _finish(
        self,
        fetched: dict[str, list[Any]],
        fetch: Callable[..., Awaitable[Any]],
    ) -> None:
        """What flowledger does after completing: finish the running executions left with
        nothing to run, and write an `execution.<status>` event for each one finished."""
        locks = {lock.id: lock for lock in fetched["lock_step_executions"]}
        running = sorted(
            {d.execution_id for d in fetched["complete_steps"]}
            & {i for i, lock in locks.items() if lock.status == "running"}
        )
        if not running:
            return
        # The statement finishes them and writes an `execution.<status>` event for each.
        finish = self.q["finish_executions_if_settled"]
        await fetch(finish.sql, *finish.args({"ids": running}))


# -- the run ------------------------------------------------------------------------------------


async def _timed(work: Work) -> tuple[float, float]:
    """Operations per second of one run of `work`, and this process's CPU µs per operation
    (the client's own cost, whatever the server and the other processes take)."""
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    n = await work()
    return n / (time.perf_counter() - start), (time.process_time() - cpu) * 1e6 / n


Key = tuple[str, int]  # (workload, concurrency)


@dataclass
class Run:
    url: str
    args: argparse.Namespace
    ids: list[uuid.UUID]
    workflow_id: uuid.UUID
    # (workload, concurrency) -> contender -> (rate, CPU µs per operation) per repeat
    samples: dict[Key, dict[str, list[tuple[float, float]]]]
    profiles: list[str]

    async def measure(self) -> None:
        levels = [await Contenders.open(self.url, size) for size in self.args.concurrency]
        try:
            await self._round(levels, warm_up=True)
            for repeat in range(self.args.repeats):
                await self._round(levels, warm_up=False)
                print(f"async round {repeat + 1} of {self.args.repeats} done", flush=True)
            if not self.args.no_profile:
                for workload, size in self.missed():
                    c = next(c for c in levels if c.size == size)
                    self.profiles.append(await self._profile(c, workload))
        finally:
            for c in levels:
                await c.close()

    def _works(self, c: Contenders, workload: str) -> tuple[dict[str, Work], Claims | None]:
        if workload == LOOKUP:
            return lookups(c, self.ids), None
        if workload == PAGE:
            return pages(c, self.args.pages), None
        claims = Claims(c, self.workflow_id, self.args.steps)
        return claims.works(), claims

    async def _round(self, levels: list[Contenders], *, warm_up: bool) -> None:
        for c in levels:
            for workload in (LOOKUP, PAGE, CLAIM):
                works, claims = self._works(c, workload)
                for name, work in works.items():
                    if claims is not None:
                        await claims.queue()
                    sample = await _timed(work)
                    if not warm_up:
                        peers = self.samples.setdefault((workload, c.size), {})
                        peers.setdefault(name, []).append(sample)

    def medians(self) -> dict[Key, dict[str, float]]:
        """Operations per second, the median of the repeats."""
        return {
            key: {name: statistics.median(r for r, _ in s) for name, s in peers.items()}
            for key, peers in self.samples.items()
        }

    def cpu(self) -> dict[Key, dict[str, float]]:
        """Client CPU µs per operation, the median of the repeats."""
        return {
            key: {name: statistics.median(u for _, u in s) for name, s in peers.items()}
            for key, peers in self.samples.items()
        }

    def missed(self) -> list[Key]:
        """The (workload, concurrency) pairs where flowledger misses a goal, or where its
        claim + complete runs below 0.9× of asyncpg's running the same statements."""
        medians, found = self.medians(), []
        goals = [*GOALS, (CLAIM, FLOWLEDGER, ASYNCPG, 0.9)]
        for workload, ours, peer, wanted in goals:
            for size in self.args.concurrency:
                figures = medians[workload, size]
                if figures[ours] / figures[peer] < wanted and (workload, size) not in found:
                    found.append((workload, size))
        return found

    async def _profile(self, c: Contenders, workload: str) -> str:
        """Where this process's CPU goes in flowledger's `workload` at C (cProfile with a CPU
        clock, so time spent waiting for the server is not in it): the share per package
        (own time) and the cumulative share of the driver's stages."""
        works, claims = self._works(c, workload)
        if claims is not None:
            await claims.queue()
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        await works[FLOWLEDGER]()
        profiler.disable()
        raw: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        total = sum(v[2] for v in raw.values()) or 1.0
        shares: dict[str, float] = {}
        stages = dict.fromkeys(STAGES.values(), 0.0)
        for (path, _, fn), v in raw.items():
            shares[_package(path)] = shares.get(_package(path), 0.0) + v[2] / total
            for (suffix, name), stage in STAGES.items():
                if path.endswith(suffix) and fn == name:
                    stages[stage] += v[3] / total
        by_package = ", ".join(
            f"{name} {share:.0%}" for name, share in sorted(shares.items(), key=lambda kv: -kv[1])
        )
        by_stage = ", ".join(f"{stage} {share:.0%}" for stage, share in stages.items())
        return (
            f"{workload}, C={c.size}, client CPU under cProfile: own time by package"
            f" {by_package}; cumulative: {by_stage}."
        )


# (file, function) -> the driver stage it is; cumulative CPU shares in the profiles.
STAGES = {
    ("psycopg/_queries.py", "dump"): "psycopg dumping parameters",
    ("psycopg/cursor_async.py", "fetchone"): "psycopg fetching and loading rows",
    ("psycopg/cursor_async.py", "fetchall"): "psycopg fetching and loading rows",
    ("psycopg/waiting.py", "wait_async"): "psycopg's I/O loop (wait_async)",
    ("psycopg_pool/pool_async.py", "getconn"): "pool borrow + return",
    ("psycopg_pool/pool_async.py", "putconn"): "pool borrow + return",
}


def _package(path: str) -> str:
    for name in ("flowledger", "psycopg_pool", "psycopg", "asyncio", "msgspec"):
        if f"/{name}/" in path:
            return name
    if path == "~":
        return "builtins"
    return "other"


def sync_baseline(
    url: str, checkout: Path, ids: list[uuid.UUID], pages_n: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Medians of the sync hot path of this tree and of `checkout`, alternated."""
    trees = {"now": HERE.parent, "before": checkout}
    keys = ("lookup", "page", "lookup_cpu", "page_cpu")
    samples: dict[str, dict[str, list[float]]] = {t: {k: [] for k in keys} for t in trees}
    payload = json.dumps([str(i) for i in ids])
    for repeat in range(repeats):
        for tree, root in trees.items():
            env = dict(os.environ, PYTHONPATH=str(root / "src"))
            out = subprocess.run(
                [sys.executable, str(HERE / "sync_hot_path.py"), url, str(pages_n)],
                input=payload,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            # PYTHONPATH must win over the flowledger installed in this environment.
            if not Path(result.pop("module")).resolve().is_relative_to(root.resolve() / "src"):
                raise RuntimeError(f"the {tree} run did not import flowledger from {root}/src")
            for key, value in result.items():
                samples[tree][key].append(float(value))
        print(f"sync round {repeat + 1} of {repeats} done", flush=True)
    return {t: {k: statistics.median(v) for k, v in s.items()} for t, s in samples.items()}


# -- report -------------------------------------------------------------------------------------


def report(
    run: Run,
    server: str,
    command: str,
    seconds: float,
    sync: dict[str, dict[str, float]] | None,
) -> str:
    medians = run.medians()
    a = run.args
    lines = [
        f"Command: `{command}`",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC;"
        f" run took {seconds / 60:.1f} min; server: {server}",
        f"- machine: {os.cpu_count()} cores shared with other work (noisy): every figure is"
        f" the median of {a.repeats} interleaved repeats; compare ratios within this run",
        f"- Python {platform.python_version()}, psycopg {psycopg.__version__}, asyncpg"
        f" {asyncpg.__version__}, SQLAlchemy {sa.__version__}, msgspec {msgspec.__version__}",
        f"- data: flowledger.tools.volume at scale {a.scale} (executions), ANALYZEd; per repeat"
        f" {len(run.ids)} lookups, {a.pages} pages, {a.steps} claimed + completed steps",
        "- contenders, each with a pool of exactly C connections, every call borrowing one:"
        " flowledger `connect_async(min_size=C, max_size=C)`; psycopg `AsyncConnectionPool`"
        " (flowledger's driver, hand-written: the same SQL and records, json through"
        " msgspec); asyncpg `create_pool` with"
        " msgspec jsonb codecs and no reset on release (flowledger's pool does none),"
        " flowledger's SQL text (`$n` params), same msgspec records;"
        " SQLAlchemy `create_async_engine(postgresql+asyncpg, pool_size=C, max_overflow=0)`,"
        " reads in AUTOCOMMIT, ORM one `AsyncSession` per call (`get`, `scalars(select)`),"
        " Core `select(table)` (both their own query for the page, no `+1` row); claim +"
        " complete through Core runs flowledger's SQL via `exec_driver_sql` in"
        " `engine.begin()` (the ORM has no SKIP LOCKED claim form: not compared)",
        "- client CPU µs per op: this process's CPU time over the operations (the server's"
        " is not in it); on 2 shared cores the server and the client compete for the same CPUs",
        "- claim + complete: steps of a one-stage workflow (one step per execution, started"
        " untimed before each run), each task `claim(limit=1)` then `complete` until none is"
        " left; per step the claim statement plus one transaction (lock the execution,"
        " complete the step, finish the execution, write its event)",
        "",
        "| workload | C | contender | per second | flowledger async ÷ contender |"
        " client CPU µs per op |",
        "|---|---:|---|---:|---:|---:|",
    ]
    cpu = run.cpu()
    for (workload, size), peers in medians.items():
        flowledger_rate = peers[FLOWLEDGER]
        for name, value in peers.items():
            ratio, used = flowledger_rate / value, cpu[workload, size][name]
            lines.append(
                f"| {workload} | {size} | {name} | {value:,.0f} | {ratio:.2f}× | {used:,.0f} |"
            )
    lines += ["", "| goal | C | measured | met |", "|---|---:|---:|:---:|"]
    for workload, ours, peer, wanted in GOALS:
        for size in a.concurrency:
            got = medians[workload, size][ours] / medians[workload, size][peer]
            label = f"{ours} ≥ {wanted:g}× {peer} ({workload})"
            lines.append(f"| {label} | {size} | {got:.2f}× | {'yes' if got >= wanted else 'NO'} |")
    if sync is not None:
        lines += [
            "",
            f"Sync `Database` hot path, this tree (now) vs `{a.sync_baseline.resolve().name}`"
            " (before),"
            " one pool connection, each measurement in a fresh process, alternated:",
            "",
            "| workload | now /s | before /s | now ÷ before | client CPU µs per call, now"
            " / before | before ÷ now (CPU) | goal ≥ 0.97 (rate) |",
            "|---|---:|---:|---:|---:|---:|:---:|",
        ]
        for key, label in (("lookup", LOOKUP), ("page", PAGE)):
            now, before = sync["now"][key], sync["before"][key]
            cpu_now, cpu_before = sync["now"][f"{key}_cpu"], sync["before"][f"{key}_cpu"]
            met = "yes" if now / before >= SYNC_GOAL else "NO"
            lines.append(
                f"| {label} | {now:,.0f} | {before:,.0f} | {now / before:.2f}× |"
                f" {cpu_now:,.0f} / {cpu_before:,.0f} | {cpu_before / cpu_now:.2f}× | {met} |"
            )
    missed = run.missed()
    if missed:
        lines += ["", "Where a goal is missed (and for claims under 0.9× asyncpg's):", ""]
        lines += [f"- {_diagnosis(workload, size, medians, cpu)}" for workload, size in missed]
        lines += [f"- {p}" for p in run.profiles]
    return "\n".join(lines)


def _diagnosis(
    workload: str, size: int, medians: dict[Key, dict[str, float]], cpu: dict[Key, dict[str, float]]
) -> str:
    """flowledger against its own driver used by hand, and every contender's client CPU."""
    rates, used = medians[workload, size], cpu[workload, size]
    line = f"{workload}, C={size}: "
    if PSYCOPG in rates:
        line += (
            f"flowledger ÷ {PSYCOPG} (its driver, by hand, same SQL and records)"
            f" {rates[FLOWLEDGER] / rates[PSYCOPG]:.2f}×; "
        )
    wall = 1e6 / rates[FLOWLEDGER] * size
    per_op = ", ".join(f"{name} {value:,.0f}" for name, value in used.items())
    return (
        line + f"client CPU µs per operation: {per_op} (flowledger's wall time per operation"
        f" and task: {wall:,.0f} µs)"
    )


# -- setup --------------------------------------------------------------------------------------


def prepare(base: str, args: argparse.Namespace) -> tuple[str, str]:
    """The benchmark database's URL (created, migrated and filled unless --reuse) and the
    server's version."""
    with psycopg.connect(with_db(base, "postgres"), autocommit=True) as admin:
        version = admin.execute("SELECT version()").fetchone()
        server = str(version[0] if version else "?").split(" on ")[0]
        if not args.reuse:
            admin.execute(f"DROP DATABASE IF EXISTS {args.dbname} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {args.dbname}")
    url = with_db(base, args.dbname)
    if not args.reuse:
        with Migrator(url) as mig:
            mig.apply()
        with psycopg.connect(url, autocommit=True) as conn:
            volume = generate(conn, scale=args.scale)
            conn.execute("ANALYZE")
        print(f"volume written in {volume.seconds:.0f}s: {volume.rows}", flush=True)
    return url, server


async def _fixtures(url: str, args: argparse.Namespace) -> tuple[list[uuid.UUID], uuid.UUID]:
    """Execution ids to look up, and a one-stage workflow whose steps the claims take;
    the generated volume's claimable steps are cancelled first, so that every contender
    claims only steps of that workflow."""
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    async with conn:
        cur = await conn.execute(
            "SELECT id FROM workflow_executions ORDER BY md5(id::text) LIMIT %s", (args.lookups,)
        )
        ids = [row[0] for row in await cur.fetchall()]
        await conn.execute(
            "UPDATE execution_steps SET status = 'cancelled', lease_owner = NULL,"
            " lease_expires_at = NULL WHERE status IN ('queued', 'running')"
        )
    db = await flowledger.connect_async(url, min_size=1, max_size=1)
    async with db:
        tag = uuid.uuid4().hex[:10]
        user = await db.users.create(
            user=NewUser(email=f"bench-{tag}@example.com", display_name="Bench")
        )
        wf = await db.workflows.create(
            workflow=NewWorkflow(owner_id=user.id, name=f"async-bench-{tag}")
        )
        await db.stages.add(workflow_id=wf.id, stage=NewStage(name="noop", action_ref="core.noop"))
    return ids, wf.id


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--database",
        help="server URL (any database on it); default: $FLOWLEDGER_URL, $DATABASE_URL,"
        " else the embedded server",
    )
    parser.add_argument(
        "--dbname", default=BENCH_DB, help=f"database to create (default {BENCH_DB})"
    )
    parser.add_argument("--scale", type=int, default=100_000, help="executions to generate")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], metavar="C")
    parser.add_argument("--lookups", type=int, default=2000, help="lookups per repeat")
    parser.add_argument("--pages", type=int, default=200, help="pages per repeat")
    parser.add_argument("--steps", type=int, default=400, help="steps claimed per repeat")
    parser.add_argument("--sync-baseline", type=Path, metavar="CHECKOUT")
    parser.add_argument("--output", type=Path, help="write the section into this RESULTS.md")
    parser.add_argument(
        "--reuse", action="store_true", help="keep the existing database (--dbname)"
    )
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the profile of a missed goal"
    )
    args = parser.parse_args(argv)
    for name in ("scale", "repeats", "lookups", "pages", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if min(args.concurrency) < 1:
        parser.error("--concurrency must be at least 1")
    if args.sync_baseline and not (args.sync_baseline / "src" / "flowledger").is_dir():
        parser.error(f"--sync-baseline {args.sync_baseline} has no src/flowledger")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", args.dbname):
        parser.error("--dbname must be a plain lower-case identifier")
    return args


def _shown(argv: Sequence[str] | None) -> list[str]:
    """The command line as the report shows it: the server URL (which may hold a password)
    replaced by `URL`."""
    shown: list[str] = []
    for arg in argv if argv is not None else sys.argv[1:]:
        hidden = shown[-1:] == ["--database"] or arg.startswith("--database=")
        shown.append(
            "--database=URL" if arg.startswith("--database=") else "URL" if hidden else arg
        )
    return shown


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    # --database, FLOWLEDGER_URL, DATABASE_URL; a benchmark may default to the embedded server
    resolved = resolve(args.database, source="--database")
    if resolved is not None:
        base = resolved.url
    else:
        from flowledger.tools.devserver import EmbeddedServer

        base = EmbeddedServer().ensure_running()
    url, server = prepare(to_libpq_url(base), args)
    ids, workflow_id = asyncio.run(_fixtures(url, args))
    run = Run(url, args, ids, workflow_id, {}, [])
    asyncio.run(run.measure())
    sync = None
    if args.sync_baseline:
        sync = sync_baseline(url, args.sync_baseline, ids, args.pages, args.repeats)
    command = " ".join(["python benchmarks/async_faces.py", *_shown(argv)])
    text = report(run, server, command, time.perf_counter() - started, sync)
    print(text)
    if args.output:
        write_section(args.output, SECTION, TITLE, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
