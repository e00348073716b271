"""benchmarks/async_faces.py, end to end in its quickest configuration on the test server:
every contender of every workload measured at two concurrency levels, the sync baseline
path run in subprocesses, the section written into RESULTS.md beside the others."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, PgServer

SCRIPT = ROOT / "benchmarks" / "async_faces.py"
DBNAME = f"flowledger_async_bench_t{os.getpid()}"
ROUNDS = 2  # the warm-up and one repeat
STEPS = 12
LEVELS = (1, 2)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FLOWLEDGER_URL", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.slow
def test_quickest_run_measures_every_contender_and_writes_its_section(
    pg_server: PgServer, tmp_path: Path
) -> None:
    results = tmp_path / "RESULTS.md"
    other = "\n<!-- section: peers -->\n## Peers\n\nkept\n<!-- end: peers -->\n"
    results.write_text("# Benchmark results\n\nheader kept\n" + other)
    admin_url = pg_server.url("postgres")
    try:
        done = _run(
            *("--database", admin_url, "--dbname", DBNAME, "--scale", "200", "--repeats", "1"),
            *("--lookups", "40", "--pages", "8", "--steps", str(STEPS)),
            *("--concurrency", *map(str, LEVELS), "--sync-baseline", str(ROOT)),
            *("--output", str(results)),
        )
        assert done.returncode == 0, done.stderr[-3000:]
        with psycopg.connect(pg_server.url(DBNAME)) as conn:
            completed = conn.execute(
                "SELECT count(*) FROM execution_steps s"
                " JOIN workflow_executions e ON e.id = s.execution_id"
                " JOIN workflows w ON w.id = e.workflow_id"
                " WHERE w.name LIKE 'async-bench-%%' AND s.status = 'completed'"
            ).fetchone()
            events = conn.execute(
                "SELECT count(*) FROM outbox WHERE event_type = 'execution.completed'"
                " AND aggregate_id IN (SELECT e.id FROM workflow_executions e"
                " JOIN workflows w ON w.id = e.workflow_id WHERE w.name LIKE 'async-bench-%%')"
            ).fetchone()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
    text = results.read_text()
    # Three contenders claim and complete every queued step, per round and level (and
    # flowledger once more per claim profile), each completion finishing its execution and
    # writing its event, as flowledger's does.
    profiled = len(
        re.findall(r"^- claim \+ complete, C=\d+, client CPU under cProfile", text, re.M)
    )
    assert completed == (STEPS * (ROUNDS * 3 * len(LEVELS) + profiled),)
    assert events == completed

    assert text.startswith("# Benchmark results\n\nheader kept\n")
    assert other in text
    start, end = "<!-- section: async_faces -->", "<!-- end: async_faces -->"
    section = text[text.index(start) : text.index(end)]
    everyone = (
        "flowledger async",
        "asyncpg + msgspec",
        "psycopg async + pool",
        "SQLAlchemy async ORM",
        "SQLAlchemy async Core",
    )
    measured = [
        (w, c, who)
        for w in ("point lookup by id", "page of 50")
        for c in LEVELS
        for who in everyone
    ]
    measured += [
        ("claim + complete", c, who)
        for c in LEVELS
        for who in everyone
        if "ORM" not in who and "psycopg" not in who
    ]
    for workload, c, who in measured:
        cells = r"[\d,]+ \| [\d.]+× \| [\d,]+"
        row = rf"\| {re.escape(workload)} \| {c} \| {re.escape(who)} \| {cells} \|"
        assert re.search(row, section), (workload, c, who)
    for workload in ("point lookup by id", "page of 50"):
        now_before = (
            rf"\| {workload} \| [\d,]+ \| [\d,]+ \| [\d.]+× \| [\d,]+ / [\d,]+ \| [\d.]+× \|"
            r" (yes|NO) \|"
        )
        assert re.search(now_before, section)
    # The server URL is not repeated in the report (it may hold a password).
    assert "--database URL" in section
    assert admin_url not in text


def test_a_baseline_without_flowledger_sources_is_refused(tmp_path: Path) -> None:
    done = _run("--sync-baseline", str(tmp_path))
    assert done.returncode == 2
    assert f"--sync-baseline {tmp_path} has no src/flowledger" in done.stderr
