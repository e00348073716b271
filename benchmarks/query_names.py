"""What the query-name comment costs the hot path: a point lookup (`db.users.get`) and a
keyset page of 50 (`db.users.list(limit=50)`) on the sync face, each query sent with its
`/* flowledger:<name> */` comment and without it, in one process and one run.

The "without" side swaps the loader the repositories read for one whose `Query.sql` is
the bare `Query.text`, and empties the repositories' plan cache; the "with" side restores
the real loader. Every repeat times both sides in 20 alternating chunks each (the
machine's drift during a repeat weighs on both alike); the figure is the median over the
repeats of each repeat's mean time per call. Compare the two
columns of one run only: this kind of machine drifts by ±25 % from minute to minute.

Usage (without --database, FLOWLEDGER_URL or DATABASE_URL it uses the embedded server):

    .venv/bin/python benchmarks/query_names.py [--database URL] [--repeats 7]
        [--output benchmarks/RESULTS.md]

It creates (or recreates) the database `flowledger_qnames` on that server, migrates it
and adds 500 users; `--output` writes the table into RESULTS.md as its own section.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

import msgspec

HERE = Path(__file__).resolve().parent
SIDES = ("with comment", "without comment")
CALLS = {"point lookup by id": 3000, "keyset page of 50 records": 600}
CHUNKS = 20

sys.path.insert(0, str(HERE))
from report import write_section  # noqa: E402
from servers import with_db  # noqa: E402


@functools.cache
def _bare_queries() -> Mapping[str, object]:
    from flowledger.repositories.queries import get_queries

    return MappingProxyType(
        {name: msgspec.structs.replace(q, sql=q.text) for name, q in get_queries().items()}
    )


def _use(side: str) -> None:
    """Make the sync repositories send their queries with or without the name comment."""
    from flowledger.repositories import base, queries

    bare = _bare_queries()
    loader = queries.get_queries if side == SIDES[0] else lambda: bare
    base.get_queries = loader  # type: ignore[attr-defined, assignment]
    base._PLANS.clear()


def _check(side: str) -> None:
    """Fail unless the last calls sent their SQL as `side` says."""
    from flowledger.repositories import base

    for name, (sql, *_) in base._PLANS.items():
        assert sql.startswith("/* flowledger:") == (side == SIDES[0]), (name, side)


def _time(call: Callable[[], object], n: int) -> dict[str, float]:
    """Mean µs per call of each side: `n` calls each, in chunks that alternate sides so
    that the machine's drift during the repeat weighs on both alike."""
    spent = dict.fromkeys(SIDES, 0.0)
    for side in SIDES:  # warm both: the plan cache, psycopg's prepared statements
        _use(side)
        for _ in range(50):
            call()
    chunk = max(1, n // CHUNKS)
    for i in range(CHUNKS * 2):
        side = SIDES[i % 2]
        _use(side)
        start = time.perf_counter()
        for _ in range(chunk):
            call()
        spent[side] += time.perf_counter() - start
        _check(side)
    return {side: total / (chunk * CHUNKS) * 1e6 for side, total in spent.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="server URL (any database on it)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", type=Path, help="write the table into this RESULTS.md")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")

    import psycopg

    import flowledger
    from flowledger.records.identity import NewUser
    from flowledger.tools.migrate import Migrator
    from flowledger.urls import resolve, to_libpq_url

    resolved = resolve(args.database, source="--database")
    if resolved is not None:
        server_url = resolved.url
    else:
        from flowledger.tools.devserver import EmbeddedServer

        server_url = EmbeddedServer().ensure_running()
    server_url = to_libpq_url(server_url)
    with psycopg.connect(with_db(server_url, "postgres"), autocommit=True) as admin:
        server = str(admin.execute("SELECT version()").fetchone()[0]).split(" on ")[0]  # type: ignore[index]
        admin.execute("DROP DATABASE IF EXISTS flowledger_qnames WITH (FORCE)")
        admin.execute("CREATE DATABASE flowledger_qnames")
    url = with_db(server_url, "flowledger_qnames")
    with Migrator(url) as migrator:
        migrator.apply()

    samples: dict[tuple[str, str], list[float]] = {}
    with flowledger.connect(url, min_size=1, max_size=1) as db:
        ids = [
            db.users.create(user=NewUser(email=f"u{i}@example.com", display_name=f"U {i}")).id
            for i in range(500)
        ]
        calls: dict[str, Callable[[], object]] = {
            "point lookup by id": lambda: db.users.get(id=ids[17]),
            "keyset page of 50 records": lambda: db.users.list(limit=50),
        }
        for repeat in range(args.repeats):
            for what, call in calls.items():
                for side, micros in _time(call, CALLS[what]).items():
                    samples.setdefault((what, side), []).append(micros)
                    print(f"[{repeat + 1}] {what}, {side}: {micros:.1f} µs", flush=True)
        _use(SIDES[0])
    report = _report(samples, server, args.repeats)
    print(report)
    if args.output:
        write_section(args.output, "query-names", "Query-name comments on the hot path", report)
    return 0


def _report(samples: dict[tuple[str, str], list[float]], server: str, repeats: int) -> str:
    median = {key: statistics.median(values) for key, values in samples.items()}
    lines = [
        f"Command: `python benchmarks/query_names.py --repeats {repeats}`",
        f"- server: {server}; sync face, one pooled connection, prepared statements on;"
        f" medians of {repeats} repeats, the sides interleaved in {CHUNKS} chunks each (a repeat:"
        f" {CALLS['point lookup by id']} lookups or {CALLS['keyset page of 50 records']} pages)",
        "",
        "| call | with comment (µs) | without comment (µs) | with ÷ without |"
        " with ÷ without, per repeat (median, min to max) |",
        "|---|---:|---:|---:|---:|",
    ]
    for what in CALLS:
        with_, without = median[what, SIDES[0]], median[what, SIDES[1]]
        paired = [
            a / b for a, b in zip(samples[what, SIDES[0]], samples[what, SIDES[1]], strict=True)
        ]
        lines.append(
            f"| {what} | {with_:.1f} | {without:.1f} | {with_ / without:.3f}× |"
            f" {statistics.median(paired):.3f}× ({min(paired):.3f} to {max(paired):.3f}) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
