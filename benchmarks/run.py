"""flowledger against its peers, side by side in one run, on one database of realistic volume.

What it measures (medians of interleaved repeats; ratios are what to compare, since this
kind of machine drifts by ±25 % from minute to minute), one module of
benchmarks/workloads/ each:

1. point lookup of an execution by id: flowledger `db.executions.get` vs hand-written
   psycopg (its fastest settings), asyncpg, SQLAlchemy 2 ORM `Session.get` and Core, and
   `pgbench -M prepared` running the same SQL (the C ceiling) (lookups.py);
2. a keyset page of 50 executions decoded into records, vs the same peers (pages.py);
   keyset vs OFFSET at depth 100,000, flowledger's page at depth 100,000 vs its first
   page (depth.py);
3. appending 100,000 step-log lines: flowledger's COPY path vs psycopg binary COPY and
   executemany, asyncpg `copy_records_to_table`, SQLAlchemy ORM `add_all` and Core
   (peak Python memory of each in a separate, untimed pass) (log_append.py);
4. claim + complete throughput with 1, 2 and 4 workers, batch sizes 1 and 10 (claims.py);
5. executions started per second (execution + steps + outbox event in one transaction)
   (starts.py).

Usage (one command; without --database, FLOWLEDGER_URL or DATABASE_URL it uses the embedded server):

    .venv/bin/python benchmarks/run.py [--database URL] [--scale 200000] [--repeats 5]

It creates (or recreates) the database `flowledger_bench` on that server, migrates it,
generates the volume, runs everything and rewrites benchmarks/RESULTS.md (report.py),
keeping the sections other scripts wrote there.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg

import workloads
from flowledger.tools.migrate import Migrator
from flowledger.tools.volume import generate
from flowledger.urls import to_libpq_url
from report import render, write_results
from servers import recreate_database, server_url, server_version, with_db

HERE = Path(__file__).resolve().parent
BENCH_DB = "flowledger_bench"


def main() -> int:
    args = _arguments()
    started = time.perf_counter()
    base = to_libpq_url(server_url(args.database))
    server = _prepare_database(base, reuse=args.reuse)
    url = with_db(base, BENCH_DB)
    if not args.reuse:
        _fill(url, args.scale)
    results = _measure(url, args.repeats, args.only or [w.NAME for w in workloads.ALL])
    command = ("python benchmarks/run.py " + " ".join(sys.argv[1:])).strip()
    text = render(
        results,
        scale=args.scale,
        repeats=args.repeats,
        server=server,
        elapsed=time.perf_counter() - started,
        command=command,
    )
    write_results(Path(args.output), text)
    print(text)
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--database",
        help=(
            "server URL (any database on it);"
            " default: $FLOWLEDGER_URL, $DATABASE_URL, else the embedded server"
        ),
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=200_000,
        help="executions to generate (≥ 100,050 with depth, 40,000 with lookups, 50 with pages)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    parser.add_argument(
        "--reuse", action="store_true", help="keep the existing flowledger_bench database"
    )
    names = [w.NAME for w in workloads.ALL]
    parser.add_argument("--only", nargs="+", choices=names, help="run only these workloads")
    args = parser.parse_args()
    _check_scale(parser, args.scale, args.only or names)
    return args


def _check_scale(parser: argparse.ArgumentParser, scale: int, names: Sequence[str]) -> None:
    """Exit with a usage error when a chosen workload needs more executions than `scale`."""
    needs = max((workloads.BY_NAME[name] for name in names), key=lambda w: w.MIN_SCALE)
    if scale < needs.MIN_SCALE:
        parser.error(f"--scale must be at least {needs.MIN_SCALE:,} for the {needs.NAME} benchmark")


def _prepare_database(base: str, *, reuse: bool) -> str:
    """The server's version; recreates the benchmark database unless `reuse`."""
    with psycopg.connect(with_db(base, "postgres"), autocommit=True) as admin:
        server = server_version(admin)
        if not reuse:
            recreate_database(admin, BENCH_DB)
    return server


def _fill(url: str, scale: int) -> None:
    """Migrate the fresh benchmark database and generate `scale` executions into it."""
    with Migrator(url) as mig:
        mig.apply()
    with psycopg.connect(url, autocommit=True) as conn:
        report = generate(conn, scale=scale)
    print(f"volume written in {report.seconds:.0f}s: {report.rows}", flush=True)


def _measure(url: str, repeats: int, names: Sequence[str]) -> workloads.Sections:
    """Each named workload's sections, in the order named, on one set of connections."""
    ctx = workloads.open_context(url, repeats)
    results: workloads.Sections = {}
    try:
        for name in names:
            results.update(workloads.run(workloads.BY_NAME[name], ctx))
    finally:
        ctx.close()
    return results


if __name__ == "__main__":
    sys.exit(main())
