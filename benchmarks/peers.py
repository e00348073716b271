"""flowledger's worker against three PostgreSQL-backed task engines, side by side on one
server: procrastinate, pgqueuer and graphile-worker (Node), each in its own database.

What it measures, with 2,000 no-op tasks per run, medians of interleaved repeats, each
run in a fresh process (compare ratios within one run: a shared machine drifts):

1. drain: tasks per second from enqueued to done, at W = 1, 4, 8 (all tasks enqueued
   first, untimed; the clock runs from starting the worker to the last completion being
   committed);
2. enqueue: tasks per second one per call, and all in one call;
3. WAL bytes and commits per task over each drain (pg_current_wal_lsn() and
   pg_stat_database.xact_commit before and after);
4. exactly once, checked from each system's tables after every drain;
5. pgbench running flowledger's batched SQL (claim 10 + lock + complete + finish in one
   transaction): the ceiling for flowledger's own statements.

Setup (the peers are not flowledger dependencies):

    .venv/bin/pip install procrastinate pgqueuer
    (cd benchmarks/peers && npm install)        # graphile-worker, Node >= 18

Usage (without --database it uses the embedded server):

    .venv/bin/python benchmarks/peers.py [--database URL] [--repeats 3] [--tasks 2000]
        [--systems flowledger ...] [--prefetch P] [--drain-only]
        [--output benchmarks/RESULTS.md]

`--output` writes the report into RESULTS.md as its `peers` section (which run.py keeps).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.metadata
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from measure import median, pgbench, pgbench_sql, ratio
from report import write_section
from servers import recreate_database, server_url, wait_for_autovacuum, with_db

if TYPE_CHECKING:
    from pgqueuer import QueueManager

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "peers"
SYSTEMS = ("flowledger", "procrastinate", "pgqueuer", "graphile-worker")
WORKERS = (1, 4, 8)
_DBNAME = {s: "peers_" + s.replace("-", "_") for s in SYSTEMS}

# The Worker with the buffer it had before it followed the handlers' pace: ten steps per
# thread (prefetch=10W), drained side by side with the default one.
FIXED = "flowledger-10W"

# What W means, and the configuration, of each system (written into the results).
CONFIG = {
    "flowledger": "`flowledger.worker.Worker(db, {'core.noop': h}, concurrency=W)`: W"
    " handler threads in the default lanes (one claim loop at W = 1, two from W = 4, each"
    " with its share of the threads, of the buffer and its own transactions), the default"
    " buffer (about 0.1 s of work per thread at the handlers' recent pace, at most 1,000"
    " steps: with no-op handlers, the 1,000), completions written with `complete_many` in"
    " batches (flush_size 100, flush_interval 5 ms, or as soon as nothing else runs), each"
    " batch's transaction also claiming the room it frees; pool of W + 2 connections;"
    " enqueue `start_many` (at most 1,000 a call: 2,000 tasks are two calls)",
    FIXED: "the same Worker with `prefetch=10 * W`, the fixed buffer of ten steps"
    " per thread it had by default before its buffer followed the handlers (it holds up to"
    " 11W steps)",
    "procrastinate": "`App(PsycopgConnector).run_worker_async(concurrency=W, wait=False,"
    " listen_notify=False)`: W sub-workers (asyncio tasks), each fetching and finishing one"
    " job per statement (no batched fetch or completion in 3.x); pool of W + 2;"
    " enqueue `batch_defer_async`",
    "pgqueuer": "`QueueManager(Queries(PsycopgDriver)).run(batch_size=10, mode=drain,"
    " log_aggregation_interval=0)`, entrypoint `concurrency_limit=W`: batch dequeue of 10,"
    " completions buffered into one statement per batch (JobStatusLogBuffer); one"
    " connection (pgqueuer's driver); enqueue `Queries.enqueue(list, list, list)`",
    "graphile-worker": "`run({concurrentJobs: W, maxPoolSize: W + 1, localQueue: {size:"
    " 500}, completeJobBatchDelay: 0})` (its performance page's configuration): W"
    " concurrent jobs in one Node process, jobs fetched 500 at a time into a local queue,"
    " completions batched; enqueue `addJobs`",
}


def libpq(url: str) -> str:
    from flowledger.urls import to_libpq_url

    return to_libpq_url(url)


# Done = the n-th completion committed, seen from another connection polling every 5 ms (the
# same for every system, so that no engine's own shutdown or idle detection is timed).
_DONE = {
    "flowledger": "SELECT count(*) FROM execution_steps WHERE status = 'completed'",
    "procrastinate": "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
    "pgqueuer": "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'",
}


class Watch:
    """Polls `_DONE[system]` until it reaches n; `seconds` is from `start()` to then."""

    def __init__(self, system: str, url: str, n: int) -> None:
        import psycopg

        self._conn = psycopg.connect(libpq(url), autocommit=True)
        self._query = _DONE[system]
        self._n = n
        self._start = 0.0
        self._done = 0.0
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> None:
        self._start = time.perf_counter()
        self._thread.start()

    def _poll(self) -> None:
        while time.perf_counter() - self._start < 600:
            row = self._conn.execute(self._query).fetchone()
            if row and int(row[0]) >= self._n:
                self._done = time.perf_counter()
                return
            time.sleep(0.005)

    def seconds(self) -> float:
        self._thread.join()
        self._conn.close()
        assert self._done, "the tasks were not all done within 600 s"
        return self._done - self._start


# -- flowledger -----------------------------------------------------------------------------


def _fl_workflow(url: str) -> tuple[Any, Any]:
    import uuid

    import flowledger
    from flowledger.records.identity import NewUser
    from flowledger.records.workflows import NewStage, NewWorkflow

    db = flowledger.connect(url, min_size=2, max_size=10)
    tag = uuid.uuid4().hex[:10]
    user = db.users.create(user=NewUser(email=f"p-{tag}@example.com", display_name="P"))
    wf = db.workflows.create(workflow=NewWorkflow(owner_id=user.id, name=f"p-{tag}"))
    db.stages.add(workflow_id=wf.id, stage=NewStage(name="only", action_ref="core.noop"))
    return db, wf.id


def fl_enqueue(url: str, n: int, many: bool) -> float:
    from flowledger.records.runs import StartRequest

    db, wf = _fl_workflow(url)
    try:
        start = time.perf_counter()
        if many:
            # start_many takes at most 1,000 requests a call.
            for i in range(0, n, 1000):
                db.executions.start_many(requests=[StartRequest(workflow_id=wf)] * min(1000, n - i))
        else:
            for _ in range(n):
                db.executions.start(workflow_id=wf)
        return n / (time.perf_counter() - start)
    finally:
        db.close()


def fl_drain(url: str, workers: int, n: int, prefetch: int | None) -> float:
    import flowledger
    from flowledger.worker import Worker

    db = flowledger.connect(url, min_size=workers + 2, max_size=workers + 2)
    try:
        worker = Worker(
            db, {"core.noop": lambda step: None}, concurrency=workers, prefetch=prefetch
        )
        watch = Watch("flowledger", url, n)
        watch.start()
        stats = worker.run(until_idle=True)
        seconds = watch.seconds()
    finally:
        db.close()
    assert stats.completed == n, f"flowledger completed {stats.completed} of {n}"
    return seconds


# -- procrastinate --------------------------------------------------------------------------


def _pc_app(url: str, pool: int) -> Any:
    import procrastinate

    connector = procrastinate.PsycopgConnector(conninfo=libpq(url), min_size=pool, max_size=pool)
    app = procrastinate.App(connector=connector)

    @app.task(name="noop")
    async def noop(i: int) -> None:
        return None

    return app


async def pc_enqueue(url: str, n: int, many: bool) -> float:
    app = _pc_app(url, 2)
    async with app.open_async():
        task = app.tasks["noop"]
        start = time.perf_counter()
        if many:
            await task.batch_defer_async(*({"i": i} for i in range(n)))
        else:
            for i in range(n):
                await task.defer_async(i=i)
        return n / (time.perf_counter() - start)


async def pc_drain(url: str, workers: int, n: int) -> float:
    import logging

    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    app = _pc_app(url, workers + 2)
    async with app.open_async():
        watch = Watch("procrastinate", url, n)
        watch.start()
        await app.run_worker_async(
            concurrency=workers,
            wait=False,
            listen_notify=False,
            install_signal_handlers=False,
        )
        return watch.seconds()


# -- pgqueuer -------------------------------------------------------------------------------


async def pq_enqueue(url: str, n: int, many: bool) -> float:
    import psycopg
    from pgqueuer import PsycopgDriver, Queries

    conn = await psycopg.AsyncConnection.connect(libpq(url), autocommit=True)
    try:
        queries = Queries(PsycopgDriver(conn))
        start = time.perf_counter()
        if many:
            await queries.enqueue(["noop"] * n, [str(i).encode() for i in range(n)], [0] * n)
        else:
            for i in range(n):
                await queries.enqueue("noop", str(i).encode())
        return n / (time.perf_counter() - start)
    finally:
        await conn.close()


def _pq_manager(qm: QueueManager) -> QueueManager:
    """The pgqueuer QueueManager `qm` with the no-op task as its entrypoint."""

    @qm.entrypoint("noop")
    async def noop(job: Any) -> None:
        return None

    return qm


async def _pq_run(qm: QueueManager) -> None:
    """Run `qm` until its queue is drained: batches of 10, no log aggregation delay."""
    from pgqueuer.types import QueueExecutionMode

    await qm.run(
        batch_size=10,
        mode=QueueExecutionMode.drain,
        log_aggregation_interval=datetime.timedelta(0),
    )


async def pq_drain(url: str, workers: int, n: int) -> float:
    import logging

    import psycopg
    from pgqueuer import PsycopgDriver, Queries, QueueManager

    logging.getLogger("pgqueuer").setLevel(logging.ERROR)
    conns = [
        await psycopg.AsyncConnection.connect(libpq(url), autocommit=True) for _ in range(workers)
    ]
    managers = [_pq_manager(QueueManager(Queries(PsycopgDriver(conn)))) for conn in conns]
    try:
        watch = Watch("pgqueuer", url, n)
        watch.start()
        await asyncio.gather(*(_pq_run(qm) for qm in managers))
        return watch.seconds()
    finally:
        for conn in conns:
            await conn.close()


# -- graphile-worker ------------------------------------------------------------------------


def node(*args: str) -> dict[str, Any]:
    """Run benchmarks/peers/graphile.cjs; its JSON answer."""
    out = subprocess.run(
        ["node", str(NODE_DIR / "graphile.cjs"), *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=NODE_DIR,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# -- one measured step, in a fresh process --------------------------------------------------


def child(
    op: str, system: str, url: str, workers: int, n: int, prefetch: int | None = None
) -> dict[str, Any]:
    """Enqueue (op 'one' / 'many') or drain ('drain') in this process; its figures."""
    many = op == "many"
    if system == "flowledger":
        if op == "drain":
            return {"seconds": fl_drain(url, workers, n, prefetch)}
        return {"rate": fl_enqueue(url, n, many)}
    if system == "procrastinate":
        if op == "drain":
            return {"seconds": asyncio.run(pc_drain(url, workers, n))}
        return {"rate": asyncio.run(pc_enqueue(url, n, many))}
    if system == "pgqueuer":
        if op == "drain":
            return {"seconds": asyncio.run(pq_drain(url, workers, n))}
        return {"rate": asyncio.run(pq_enqueue(url, n, many))}
    if op == "drain":
        return node("drain", libpq(url), str(workers), str(n))
    return node(f"enqueue-{op}", libpq(url), str(n))


def in_child(
    op: str, system: str, url: str, workers: int, n: int, prefetch: int | None = None
) -> dict[str, Any]:
    args = [sys.executable, __file__, "--child", op, system, url, str(workers), str(n)]
    args += [str(prefetch)] if prefetch is not None else []
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{system} {op} W={workers} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- tables: reset before a run, exactly-once after ----------------------------------------

_RESET = {
    "flowledger": "TRUNCATE workflow_executions CASCADE",
    "procrastinate": "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_workers"
    " CASCADE",
    "pgqueuer": "TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics",
    "graphile-worker": "DELETE FROM graphile_worker._private_jobs",
}

# Each query returns (tasks done exactly once, anything wrong); both must be as expected.
_CHECK = {
    # Every step completed at attempt 1 with exactly one attempt row, closed as completed.
    "flowledger": """
        SELECT count(*) FILTER (WHERE s.status = 'completed' AND s.attempt = 1
                                  AND a.n = 1 AND a.ok = 1),
               count(*) FILTER (WHERE NOT (s.status = 'completed' AND s.attempt = 1
                                  AND a.n = 1 AND a.ok = 1))
                 + (SELECT count(*) FROM workflow_executions WHERE status <> 'completed')
          FROM execution_steps s
          JOIN LATERAL (SELECT count(*) AS n,
                               count(*) FILTER (WHERE outcome = 'completed') AS ok
                          FROM step_attempts WHERE step_id = s.id) a ON true""",
    # Every job succeeded, started exactly once (one 'started' event), never retried.
    "procrastinate": """
        SELECT count(*) FILTER (WHERE j.status = 'succeeded' AND e.started = 1),
               count(*) FILTER (WHERE NOT (j.status = 'succeeded' AND e.started = 1))
          FROM procrastinate_jobs j
          JOIN LATERAL (SELECT count(*) FILTER (WHERE type = 'started') AS started
                          FROM procrastinate_events WHERE job_id = j.id) e ON true""",
    # The queue is empty; every job was picked once and logged successful once.
    "pgqueuer": """
        SELECT count(*) FILTER (WHERE picked = 1 AND ok = 1 AND other = 0),
               count(*) FILTER (WHERE NOT (picked = 1 AND ok = 1 AND other = 0))
                 + (SELECT count(*) FROM pgqueuer)
          FROM (SELECT job_id,
                       count(*) FILTER (WHERE status = 'picked') AS picked,
                       count(*) FILTER (WHERE status = 'successful') AS ok,
                       count(*) FILTER (WHERE status NOT IN ('queued', 'picked', 'successful'))
                         AS other
                  FROM pgqueuer_log GROUP BY job_id) l""",
    # Completed jobs are deleted: the table must be empty; the Node side counts each run.
    "graphile-worker": "SELECT 0, count(*) FROM graphile_worker._private_jobs",
}

# After pgbench: each completed step has attempt 1 and one completed attempt row; any other
# is still queued, never claimed.
_PGBENCH_CHECK = """
    SELECT count(*) FILTER (WHERE s.status = 'completed' AND s.attempt = 1 AND a.n = 1
                                  AND a.ok = 1),
           count(*) FILTER (WHERE NOT (s.status = 'completed' AND s.attempt = 1 AND a.n = 1
                                       AND a.ok = 1)
                              AND NOT (s.status = 'queued' AND s.attempt = 0 AND a.n = 0))
      FROM execution_steps s
      JOIN LATERAL (SELECT count(*) AS n, count(*) FILTER (WHERE outcome = 'completed') AS ok
                      FROM step_attempts WHERE step_id = s.id) a ON true"""


def _sql(url: str, statement: str) -> tuple[Any, ...]:
    import psycopg

    with psycopg.connect(libpq(url), autocommit=True) as conn:
        cur = conn.execute(statement)
        row = cur.fetchone() if cur.description else None
    return tuple(row or ())


def _counters(url: str) -> tuple[int, int]:
    """(WAL position, commits in this database) — after the last run's backends flushed."""
    import psycopg

    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, xact_commit"
            " FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row
    return int(row[0]), int(row[1])


def _quiesce(url: str) -> None:
    import psycopg

    with psycopg.connect(libpq(url), autocommit=True) as conn:
        wait_for_autovacuum(conn)


def drain_run(
    system: str, url: str, workers: int, n: int, prefetch: int | None = None
) -> dict[str, float]:
    """Reset, enqueue n (untimed, in one call), drain with W workers, check exactly once."""
    _sql(url, _RESET[system])
    in_child("many", system, url, 1, n)
    _sql(url, "ANALYZE")
    _quiesce(url)
    time.sleep(0.6)  # let the enqueuing backends' statistics reach pg_stat_database
    wal0, commits0 = _counters(url)
    result = in_child("drain", system, url, workers, n, prefetch)
    time.sleep(0.6)
    wal1, commits1 = _counters(url)
    once, wrong = _sql(url, _CHECK[system])
    if system == "graphile-worker":
        once = n if result["once"] and result["ran"] == n else 0
    if (once, wrong) != (n, 0):
        raise AssertionError(f"{system} W={workers}: {once} of {n} done exactly once, {wrong} not")
    return {
        "rate": n / result["seconds"],
        "wal": (wal1 - wal0) / n,
        "commits": (commits1 - commits0 - 2) / n,  # less our own two reads
    }


# -- flowledger's SQL under pgbench ---------------------------------------------------------


def batched_script(batch: int) -> str:
    """claim_steps (limit `batch`) + lock_step_executions + complete_steps for the batch +
    finish_executions_if_settled, in one transaction, as a pgbench script."""
    from flowledger.repositories.queries import get_queries

    queries = get_queries()

    def sql(name: str) -> str:
        return pgbench_sql(queries[name].text).rstrip(";\n ")

    return (
        "\n".join(
            [
                "BEGIN;",
                _claim_into_arrays(sql("claim_steps")) + " \\gset",
                sql("lock_step_executions") + ";",
                sql("complete_steps") + ";",
                sql("finish_executions_if_settled").replace(":ids", ":executions") + ";",
                "COMMIT;",
                "",
            ]
        )
        .replace(":limit::int", str(batch))
        .replace(":queues::text[]", "NULL::text[]")
    )


def _claim_into_arrays(claim: str) -> str:
    """claim_steps with its result rows folded into arrays: pgbench keeps one row per
    \\gset."""
    head, _, select = claim.rpartition("\n)\nSELECT ")
    assert head, "claim_steps no longer ends with one top-level SELECT"
    return (
        f"{head}\n), result AS (\nSELECT {select}\n)\n"
        "SELECT coalesce(array_agg(id), '{}')::text AS ids,"
        " coalesce(array_agg(attempt), '{}')::text AS attempts,"
        " coalesce(array_agg(execution_id), '{}')::text AS executions,"
        " array_fill('null'::jsonb, ARRAY[count(*)::int])::text AS outputs FROM result"
    )


# The batch of the pgbench script: what the Worker writes per transaction once its buffer
# follows no-op handlers (its flush_size).
PGBENCH_BATCH = 100


def pgbench_run(url: str, clients: int, n: int) -> dict[str, float]:
    """Steps per second of pgbench -M prepared draining n queued steps with the batched
    script (PGBENCH_BATCH per transaction), and its WAL per step."""
    _sql(url, _RESET["flowledger"])
    in_child("many", "flowledger", url, 1, n)
    _sql(url, "ANALYZE")
    _quiesce(url)
    script = batched_script(PGBENCH_BATCH)
    transactions = max(1, n // PGBENCH_BATCH // clients)
    wal0, _ = _counters(url)
    tps = pgbench(
        url,
        script,
        clients=clients,
        transactions=transactions,
        defines={"worker_id": "pgbench", "lease": "60s"},
    )
    wal1, _ = _counters(url)
    # Near the end a transaction may claim fewer than the batch (or none): count what was
    # done.
    completed = int(_sql(url, "SELECT count(*) FROM execution_steps WHERE status = 'completed'")[0])
    once, wrong = _sql(url, _PGBENCH_CHECK)
    if (once, wrong) != (completed, 0):
        raise AssertionError(f"pgbench: {once} of {completed} completed steps done exactly once")
    per_transaction = completed / (transactions * clients)
    return {"rate": tps * per_transaction, "wal": (wal1 - wal0) / completed}


# -- orchestration --------------------------------------------------------------------------


def setup(base: str) -> dict[str, str]:
    """A fresh database per system with its schema installed; their URLs."""
    import psycopg

    urls = {s: with_db(base, d) for s, d in _DBNAME.items()}
    with psycopg.connect(libpq(with_db(base, "postgres")), autocommit=True) as admin:
        for name in _DBNAME.values():
            recreate_database(admin, name)
    from flowledger.tools.migrate import Migrator

    Migrator(urls["flowledger"]).apply()
    asyncio.run(_install_python_peers(urls))
    node("migrate", libpq(urls["graphile-worker"]))
    return urls


async def _install_python_peers(urls: dict[str, str]) -> None:
    import psycopg
    from pgqueuer import PsycopgDriver, Queries

    app = _pc_app(urls["procrastinate"], 1)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
    conn = await psycopg.AsyncConnection.connect(libpq(urls["pgqueuer"]), autocommit=True)
    try:
        await Queries(PsycopgDriver(conn)).install()
    finally:
        await conn.close()


def versions() -> dict[str, str]:
    """The version of each system benchmarked."""
    graphile = json.loads((NODE_DIR / "node_modules/graphile-worker/package.json").read_text())
    return {
        "flowledger": importlib.metadata.version("flowledger"),
        "procrastinate": importlib.metadata.version("procrastinate"),
        "pgqueuer": importlib.metadata.version("pgqueuer"),
        "graphile-worker": str(graphile["version"]),
    }


def _arguments() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database", help="server URL (any database on it)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--output", type=Path, help="write the results into this file")
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=SYSTEMS,
        default=list(SYSTEMS),
        help="default: all",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        help="flowledger Worker prefetch (default: the Worker's, W)",
    )
    parser.add_argument(
        "--drain-only",
        action="store_true",
        help="skip the enqueue and pgbench measurements",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return parser, parser.parse_args()


def main() -> int:
    parser, args = _arguments()
    if args.child:
        op, system, url, workers, n, *rest = args.child
        prefetch = int(rest[0]) if rest else None
        print(json.dumps(child(op, system, url, int(workers), int(n), prefetch)))
        return 0
    if not (NODE_DIR / "node_modules/graphile-worker").exists():
        parser.error("graphile-worker is missing: run `npm install` in benchmarks/peers")

    urls = setup(server_url(args.database))
    measured = _measured(urls["flowledger"])
    started = time.perf_counter()
    for repeat in range(args.repeats):
        _measure_repeat(measured, args, urls, repeat)
    measured.seconds = time.perf_counter() - started
    report = _report(measured, args)
    print(report)
    if args.output:
        write_section(args.output, "peers", PEERS_TITLE, as_section(report))
    return 0


PEERS_TITLE = "Against other PostgreSQL task engines"


def as_section(report: str) -> str:
    """The report as a RESULTS.md section: its own title dropped, headings one level down."""
    lines = report.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    body = "\n".join("#" + line if line.startswith("## ") else line for line in lines)
    return body.strip("\n")


def _measured(url: str) -> Measured:
    """No samples yet; the server's version and durability settings."""
    return Measured(
        server=str(_sql(url, "SELECT version()")[0]).split(" on ")[0],
        settings=_sql(
            url, "SELECT current_setting('fsync'), current_setting('synchronous_commit')"
        ),
    )


@dataclass
class Measured:
    """Every sample of a run, and where it ran."""

    server: str
    settings: tuple[Any, ...]  # fsync, synchronous_commit
    drains: dict[tuple[str, int], list[dict[str, float]]] = field(default_factory=dict)
    enqueues: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    benches: dict[int, list[dict[str, float]]] = field(default_factory=dict)
    seconds: float = 0.0


def _measure_repeat(
    measured: Measured, args: argparse.Namespace, urls: dict[str, str], repeat: int
) -> None:
    """One repeat: every drain, then (unless --drain-only) every enqueue and pgbench run."""
    n = args.tasks
    for workers in WORKERS:
        for system in _drained(args):
            if system == FIXED:
                r = drain_run("flowledger", urls["flowledger"], workers, n, 10 * workers)
            else:
                r = drain_run(system, urls[system], workers, n, args.prefetch)
            measured.drains.setdefault((system, workers), []).append(r)
            print(
                f"[{repeat + 1}] drain {system} W={workers}: {r['rate']:,.0f}/s,"
                f" {r['wal']:,.0f} WAL B/task, {r['commits']:.2f} commits/task",
                flush=True,
            )
    for system in [] if args.drain_only else args.systems:
        for op in ("one", "many"):
            _sql(urls[system], _RESET[system])
            _quiesce(urls[system])
            rate = float(in_child(op, system, urls[system], 1, n)["rate"])
            measured.enqueues.setdefault((system, op), []).append(rate)
            print(f"[{repeat + 1}] enqueue {op} {system}: {rate:,.0f}/s", flush=True)
    for clients in WORKERS if "flowledger" in args.systems and not args.drain_only else ():
        b = pgbench_run(urls["flowledger"], clients, n)
        measured.benches.setdefault(clients, []).append(b)
        print(f"[{repeat + 1}] pgbench c={clients}: {b['rate']:,.0f} steps/s", flush=True)


def _drained(args: argparse.Namespace) -> list[str]:
    """The drains of a repeat: each system asked for, and the fixed-buffer Worker next to
    flowledger's own (unless --prefetch fixed that one already)."""
    systems = list(args.systems)
    if "flowledger" in systems and args.prefetch is None:
        systems.insert(systems.index("flowledger") + 1, FIXED)
    return systems


def _med(samples: list[dict[str, float]], key: str) -> float:
    return median(s[key] for s in samples)


def _report(measured: Measured, args: argparse.Namespace) -> str:
    lines = _report_header(measured, args) + _drain_table(measured, _drained(args))
    if not measured.enqueues:
        return "\n".join(lines)
    lines += _enqueue_table(measured, args.systems)
    if not measured.benches:
        return "\n".join(lines)
    return "\n".join(lines + _pgbench_table(measured, args.tasks))


def _command(args: argparse.Namespace) -> str:
    return (
        f".venv/bin/python benchmarks/peers.py --repeats {args.repeats} --tasks {args.tasks}"
        + (f" --systems {' '.join(args.systems)}" if args.systems != list(SYSTEMS) else "")
        + (f" --prefetch {args.prefetch}" if args.prefetch is not None else "")
        + (" --drain-only" if args.drain_only else "")
        + (f" --output {args.output}" if args.output else "")
    )


def _report_header(measured: Measured, args: argparse.Namespace) -> list[str]:
    return [
        "# flowledger against PostgreSQL task engines",
        "",
        f"Command: `{_command(args)}`",
        "",
        f"- server: {measured.server} (the embedded server), fsync={measured.settings[0]},"
        f" synchronous_commit={measured.settings[1]}; one database per system",
        f"- {args.tasks:,} no-op tasks per run; medians of {args.repeats} interleaved repeats,"
        f" each run in a fresh process, started once no autovacuum worker runs on the server;"
        f" the whole run took {measured.seconds / 60:.1f} min",
        "- the machine has 2 cores shared with other workloads: absolute figures drift,"
        " compare the ratios (measured within this one run)",
        "- versions: " + ", ".join(f"{s} {v}" for s, v in versions().items()),
        "",
        "## What W is, and each system's configuration",
        "",
        *(f"- **{s}**: {CONFIG[s]}" for s in _drained(args)),
        *(
            [f"- flowledger here runs with **prefetch={args.prefetch}** (claims up to W + that)"]
            if args.prefetch is not None
            else []
        ),
    ]


def _drain_table(measured: Measured, systems: list[str]) -> list[str]:
    peers = [s for s in systems if s != "flowledger"]
    lines = [
        "",
        "## 1. Drain: tasks/s from enqueued to done",
        "",
        "| W | " + " | ".join(systems) + " | " + " | ".join(f"fl ÷ {p}" for p in peers) + " |",
        "|---:|" + "---:|" * (len(systems) + len(peers)),
    ]
    for w in WORKERS:
        rates = {s: _med(measured.drains[s, w], "rate") for s in systems}
        figures = [f"{rates[s]:,.0f}" for s in systems]
        figures += [f"{ratio(rates['flowledger'], rates[p]):.2f}×" for p in peers]
        lines.append(f"| {w} | " + " | ".join(figures) + " |")
    return lines + _wal_table(measured, systems)


def _wal_table(measured: Measured, systems: list[str]) -> list[str]:
    lines = [
        "",
        "## 2. WAL bytes and commits per completed task (over the drain)",
        "",
        "| W | " + " | ".join(f"{s} WAL B | commits" for s in systems) + " |",
        "|---:|" + "---:|---:|" * len(systems),
    ]
    for w in WORKERS:
        samples = [measured.drains[s, w] for s in systems]
        cells = [f"{_med(d, 'wal'):,.0f} | {_med(d, 'commits'):.2f}" for d in samples]
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return lines


def _enqueue_table(measured: Measured, systems: list[str]) -> list[str]:
    lines = [
        "",
        "## 3. Enqueue: tasks/s",
        "",
        "| system | one per call | all in one call | one call, fl ÷ system |",
        "|---|---:|---:|---:|",
    ]
    fl_many = median(measured.enqueues.get(("flowledger", "many"), [float("nan")]))
    for s in systems:
        one = median(measured.enqueues[s, "one"])
        many = median(measured.enqueues[s, "many"])
        lines.append(f"| {s} | {one:,.0f} | {many:,.0f} | {ratio(fl_many, many):.2f}× |")
    return lines


def _pgbench_table(measured: Measured, tasks: int) -> list[str]:
    lines = [
        "",
        "## 4. pgbench running flowledger's batched SQL (the ceiling of its statements)",
        "",
        f"claim_steps (limit {PGBENCH_BATCH}) + lock_step_executions + complete_steps for"
        f" the {PGBENCH_BATCH} +"
        " finish_executions_if_settled in one transaction, `pgbench -M prepared`, draining"
        f" {tasks:,} queued steps:",
        "",
        "| clients | steps/s | WAL B/step | flowledger Worker (W = clients) ÷ pgbench |",
        "|---:|---:|---:|---:|",
    ]
    for c in WORKERS:
        rate = _med(measured.benches[c], "rate")
        fl = _med(measured.drains["flowledger", c], "rate")
        wal = _med(measured.benches[c], "wal")
        lines.append(f"| {c} | {rate:,.0f} | {wal:,.0f} | {ratio(fl, rate):.2f}× |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
