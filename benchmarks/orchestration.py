"""Orchestration throughput: claim + complete of flat steps, of a 3-stage chain and of a
100-item fan-out/fan-in, side by side in one run; optionally the flat workload of another
checkout (e.g. the previous release) interleaved with this one's, to see what pinned stage
snapshots, dependency counters and inputs cost the claim path.

Each run starts its executions first (not timed), then `workers` threads claim up to
`batch` steps at a time and complete each one (claims carry the dependencies' outputs)
until none is left; the figure is steps completed per second. Every configuration is run
`--repeats` times, the checkouts and workloads interleaved, each run in a fresh Python
process; the median is reported. Compare ratios within one run: this kind of machine
drifts by ±25 % from minute to minute.

Usage (without --database, FLOWLEDGER_URL or DATABASE_URL it uses the embedded server):

    .venv/bin/python benchmarks/orchestration.py [--database URL] [--repeats 3]
        [--baseline CHECKOUT] [--workloads flat chain fan] [--latency STARTS]
        [--output benchmarks/RESULTS.md]

`--latency N` also measures start -> claim latency with a worker waiting on wake-ups;
`--output` writes the table into RESULTS.md (a section benchmarks/run.py keeps).

Workloads: `flat` (three independent stages per execution: what every step was before
dependencies were enforced), `chain` (three stages in order: each completion queues the
next step), `fan` (one step, a with_items stage of 100, then one step that waits for all
of them and receives their 100 outputs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from measure import median, ratio
from report import write_section
from servers import recreate_database, server_url, server_version, with_db

HERE = Path(__file__).resolve().parent
WORKLOADS = ("flat", "chain", "fan")
CONFIGS = ((1, 1), (4, 10))  # (workers, batch)
_EXECUTIONS = {"flat": 300, "chain": 300, "fan": 9}
_IDLE_POLLS, _IDLE_SLEEP = 50, 0.002  # a worker stops after this many empty claims in a row
Samples = dict[tuple[str, str, int, int], list[float]]  # (checkout, workload, W, B) -> rates


def _stages(workload: str) -> list[dict[str, Any]]:
    if workload == "flat":
        return [{"name": n, "depends_on": []} for n in ("extract", "transform", "load")]
    if workload == "chain":
        return [{"name": n} for n in ("extract", "transform", "load")]
    return [
        {"name": "split"},
        {"name": "each", "with_items": list(range(100))},
        {"name": "join"},
    ]


def run_once(url: str, workload: str, workers: int, batch: int) -> dict[str, Any]:
    """One measured run in this process (whichever flowledger is on sys.path)."""
    import flowledger

    db = flowledger.connect(url, min_size=workers + 1, max_size=workers + 1)
    try:
        _start_executions(db, url, workload)
        steps, elapsed = _drain(db, workers, batch)
    finally:
        db.close()
    expected = (
        sum(len(s.get("with_items", [None])) for s in _stages(workload)) * _EXECUTIONS[workload]
    )
    assert steps == expected, f"{workload}: completed {steps} steps, expected {expected}"
    return {"steps": steps, "rate": steps / elapsed}


def _new_workflow(db: Any, prefix: str) -> Any:
    """A workflow of a new user of its own (`prefix` tells the runs apart)."""
    from flowledger.records.identity import NewUser
    from flowledger.records.workflows import NewWorkflow

    tag = uuid.uuid4().hex[:10]
    new_user = NewUser(email=f"{prefix}-{tag}@example.com", display_name=prefix.upper())
    user = db.users.create(user=new_user)
    return db.workflows.create(workflow=NewWorkflow(owner_id=user.id, name=f"{prefix}-{tag}"))


def _start_executions(db: Any, url: str, workload: str) -> None:
    """The workload's workflow and its executions, started (untimed), then ANALYZEd."""
    import psycopg

    from flowledger.records.workflows import NewStage

    wf = _new_workflow(db, "b")
    for stage in _stages(workload):
        db.stages.add(workflow_id=wf.id, stage=NewStage(action_ref="core.noop", **stage))
    for _ in range(_EXECUTIONS[workload]):
        db.executions.start(workflow_id=wf.id)
    # As autovacuum would have by now on a live database: without statistics the
    # planner joins every running execution with every queued step on each claim.
    # `url` is a plain postgresql:// URL (this runs on either checkout's flowledger).
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE workflow_executions, execution_steps")


def _drain(db: Any, workers: int, batch: int) -> tuple[int, float]:
    """(steps completed, seconds) by `workers` threads claiming `batch` at a time until
    none is left."""
    done = [0] * workers

    def work(w: int) -> None:
        name, idle = f"bench-{w}", 0
        while idle < _IDLE_POLLS:  # the other workers may still promote steps for a while
            claimed = db.steps.claim(worker_id=name, limit=batch)
            if not claimed:
                idle += 1
                time.sleep(_IDLE_SLEEP)
                continue
            idle = 0
            for step in claimed:
                db.steps.complete(
                    step_id=step.id, worker_id=name, attempt=step.attempt, outputs={"rows": 10}
                )
            done[w] += len(claimed)

    start = time.perf_counter()
    _run_threads(work, workers)
    # The idle polls at the end are not work: leave them out of the time.
    return sum(done), time.perf_counter() - start - _IDLE_POLLS * _IDLE_SLEEP


def _run_threads(work: Any, workers: int) -> None:
    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def latency(url: str, starts: int) -> dict[str, float]:
    """Start -> claim latency with one worker waiting on wake-ups: the time from the
    `executions.start` call to the worker holding the execution's first step, in ms."""
    import flowledger
    from flowledger.records.workflows import NewStage

    db = flowledger.connect(url, min_size=2, max_size=2)
    wf = _new_workflow(db, "l")
    db.stages.add(workflow_id=wf.id, stage=NewStage(name="only", action_ref="core.noop"))
    claimed_at: dict[uuid.UUID, float] = {}
    stop = threading.Event()
    thread = threading.Thread(target=_latency_worker, args=(db, claimed_at, stop))
    thread.start()
    try:
        started_at = _paced_starts(db, wf.id, starts, claimed_at)
    finally:
        stop.set()
        thread.join()
        db.close()
    assert len(claimed_at) == starts, f"{starts - len(claimed_at)} starts were not claimed"
    return _latencies(started_at, claimed_at)


def _latency_worker(db: Any, claimed_at: dict[uuid.UUID, float], stop: threading.Event) -> None:
    """Claim and complete until `stop`, noting when each execution's step was claimed."""
    with db.wake_ups() as wake:
        while not stop.is_set():
            steps = db.steps.claim(worker_id="latency", limit=10)
            now = time.perf_counter()
            for step in steps:
                claimed_at[step.execution_id] = now
                db.steps.complete(step_id=step.id, worker_id="latency", attempt=step.attempt)
            if not steps:
                wake.wait(1.0)


def _paced_starts(
    db: Any, workflow_id: uuid.UUID, starts: int, claimed_at: dict[uuid.UUID, float]
) -> dict[uuid.UUID, tuple[float, float]]:
    """Start one execution every 20 ms, then wait (up to 10 s) for all to be claimed; each
    execution's (before the call, after its commit) times."""
    started_at: dict[uuid.UUID, tuple[float, float]] = {}
    for _ in range(starts):
        before = time.perf_counter()
        execution = db.executions.start(workflow_id=workflow_id)
        started_at[execution.id] = (before, time.perf_counter())
        time.sleep(0.02)
    deadline = time.monotonic() + 10
    while len(claimed_at) < starts and time.monotonic() < deadline:
        time.sleep(0.01)
    return started_at


def _latencies(
    started_at: dict[uuid.UUID, tuple[float, float]], claimed_at: dict[uuid.UUID, float]
) -> dict[str, float]:
    starts = len(started_at)
    calls = sorted((claimed_at[e] - t[0]) * 1000 for e, t in started_at.items())
    commits = sorted((claimed_at[e] - t[1]) * 1000 for e, t in started_at.items())
    p99 = min(starts - 1, int(starts * 0.99))
    return {
        "p50_ms": median(calls),
        "p99_ms": calls[p99],
        "committed_p50_ms": median(commits),
        "committed_p99_ms": commits[p99],
    }


def _subprocess(checkout: Path, url: str, workload: str, workers: int, batch: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(checkout / "src"))
    args = [sys.executable, __file__, "--run", workload, str(workers), str(batch), url]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["rate"])


ORCHESTRATION_TITLE = "Orchestration: claim + complete of flat steps, a chain, a fan-out/fan-in"


def _migrate(checkout: Path, url: str) -> None:
    # A baseline checkout from before the tools/ package has the migrator at the top level.
    tools = (checkout / "src/flowledger/tools/migrate.py").exists()
    module = "flowledger.tools.migrate" if tools else "flowledger.migrate"
    code = f"import sys; from {module} import Migrator; Migrator(sys.argv[1]).apply()"
    env = dict(os.environ, PYTHONPATH=str(checkout / "src"))
    subprocess.run([sys.executable, "-c", code, url], env=env, check=True)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database", help="server URL (any database on it)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout to compare flat with")
    parser.add_argument("--output", type=Path, help="write the table into this RESULTS.md")
    parser.add_argument(
        "--latency", type=int, metavar="STARTS", help="also measure start -> claim latency"
    )
    parser.add_argument(
        "--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS), help="default: all"
    )
    parser.add_argument(
        "--run", nargs=4, metavar=("WORKLOAD", "W", "B", "URL"), help=argparse.SUPPRESS
    )
    return parser.parse_args()


def main() -> int:
    args = _arguments()
    if args.run:
        workload, workers, batch, url = args.run
        print(json.dumps(run_once(url, workload, int(workers), int(batch))))
        return 0
    from flowledger.urls import to_libpq_url

    # The runs may import an older flowledger: a plain libpq URL.
    base = to_libpq_url(server_url(args.database))
    checkouts = {"this": HERE.parent} | ({"baseline": args.baseline} if args.baseline else {})
    server, urls = _create_databases(base, checkouts)
    started = time.perf_counter()
    samples = _measure(args, checkouts, urls)
    report = _report(samples, server, args, time.perf_counter() - started)
    if args.latency:
        report += _latency_text(urls["this"], args.latency)
    print(report)
    if args.output:
        write_section(args.output, "orchestration", ORCHESTRATION_TITLE, report)
    return 0


def _create_databases(base: str, checkouts: dict[str, Path]) -> tuple[str, dict[str, str]]:
    """The server's version and a fresh database per checkout, migrated by that checkout."""
    import psycopg

    urls = {}
    with psycopg.connect(with_db(base, "postgres"), autocommit=True) as admin:
        server = server_version(admin)
        for label in checkouts:
            name = f"flowledger_orch_{label}"
            recreate_database(admin, name)
            urls[label] = with_db(base, name)
    for label, checkout in checkouts.items():
        _migrate(checkout, urls[label])
    return server, urls


def _measure(args: argparse.Namespace, checkouts: dict[str, Path], urls: dict[str, str]) -> Samples:
    """Every configuration's rates: the checkouts and workloads interleaved, repeat by repeat."""
    runs = [("this", w) for w in args.workloads]
    runs += [("baseline", "flat")] if args.baseline and "flat" in args.workloads else []
    samples: Samples = {}
    for repeat in range(args.repeats):
        for workers, batch in CONFIGS:
            for label, workload in runs:
                rate = _subprocess(checkouts[label], urls[label], workload, workers, batch)
                samples.setdefault((label, workload, workers, batch), []).append(rate)
                print(
                    f"[{repeat + 1}] {label} {workload} W={workers} B={batch}: {rate:,.0f} steps/s",
                    flush=True,
                )
    return samples


def _latency_text(url: str, starts: int) -> str:
    result = latency(url, starts)
    return (
        f"\n\nStart -> claim latency over {starts} starts (one every 20 ms), one"
        f" worker waiting on wake-ups: from the `start` call p50 {result['p50_ms']:.2f} ms,"
        f" p99 {result['p99_ms']:.2f} ms; from the start's commit p50"
        f" {result['committed_p50_ms']:.2f} ms, p99 {result['committed_p99_ms']:.2f} ms."
    )


def _report(samples: Samples, server: str, args: argparse.Namespace, seconds: float) -> str:
    medians = {k: median(v) for k, v in samples.items()}
    lines = [
        f"Command: `python benchmarks/orchestration.py --repeats {args.repeats}"
        + (" --baseline CHECKOUT" if args.baseline else "")
        + (
            f" --workloads {' '.join(args.workloads)}`"
            if args.workloads != list(WORKLOADS)
            else "`"
        ),
        f"- server: {server}; run took {seconds / 60:.1f} min; medians of {args.repeats}"
        " interleaved runs, each in a fresh process",
        "",
        "| workload | workers, batch | steps/s | ÷ flat (same run) |"
        + (" ÷ baseline flat |" if args.baseline else ""),
        "|---|---|---:|---:|" + ("---:|" if args.baseline else ""),
    ]
    return "\n".join(lines + _rows(medians, baseline=bool(args.baseline)))


def _rows(medians: dict[tuple[str, str, int, int], float], *, baseline: bool) -> list[str]:
    rows = []
    labels = sorted({(label, workload) for label, workload, _, _ in medians}, reverse=True)
    for workers, batch in CONFIGS:
        flat = medians["this", "flat", workers, batch]
        for label, workload in labels:
            rate = medians[label, workload, workers, batch]
            name = f"{workload} ({'previous release' if label == 'baseline' else 'this'})"
            row = f"| {name} | {workers}, {batch} | {rate:,.0f} | {ratio(rate, flat):.2f}× |"
            if baseline:
                row += f" {ratio(rate, medians['baseline', 'flat', workers, batch]):.2f}× |"
            rows.append(row)
    return rows


if __name__ == "__main__":
    sys.exit(main())
