"""benchmarks/run.py still runs end to end, refuses a scale its workloads cannot run on, and
rewrites RESULTS.md keeping the sections other scripts wrote; its SQL reads what the records
and the schema hold."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import flowledger
from conftest import PgServer
from flowledger.records.runs import Execution, StartRequest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benchmarks" / "run.py"
KEPT = (
    "\n<!-- section: orchestration -->\n## Orchestration\n\nkept as it is\n"
    "<!-- end: orchestration -->\n"
)


def _bench(module: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A module of benchmarks/, imported the way run.py imports it (its folder on the path)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module(module)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUN), *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def bench_run(
    pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.CompletedProcess[str], Path]]:
    """run.py's quickest configuration on the test server, into a RESULTS.md that held an
    earlier run and a marked section; the flowledger_bench database is dropped after."""
    admin_url = pg_server.url("postgres")
    output = tmp_path_factory.mktemp("bench") / "RESULTS.md"
    output.write_text("# Benchmark results\n\nan earlier run\n" + KEPT)
    try:
        yield (
            _run(
                *("--database", admin_url, "--scale", "200", "--repeats", "1"),
                *("--only", "pages", "starts", "--output", str(output)),
            ),
            output,
        )
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS flowledger_bench WITH (FORCE)")


@pytest.mark.slow
def test_run_measures_the_chosen_workloads_and_keeps_marked_sections(
    bench_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, output = bench_run
    assert done.returncode == 0, done.stderr
    text = output.read_text()
    assert "an earlier run" not in text
    assert text.endswith(KEPT)
    assert "- data: `flowledger seed --scale 200`" in text
    pages = text.split("## keyset page of 50 records\n\n")[1].split("\n\n")[0].splitlines()
    assert [row.split(" | ")[0] for row in pages[2:]] == [
        "| flowledger",
        "| flowledger, db.pinned()",
        "| psycopg (tuned)",
        "| asyncpg + msgspec",
        "| SQLAlchemy ORM (its own query)",
        "| SQLAlchemy Core (its own query)",
        "| pgbench -M prepared (C)",
    ]
    assert "| flowledger executions.start |" in text
    assert "| flowledger ≥ 1× asyncpg + msgspec (keyset page of 50 records) |" in text
    assert "## point lookup by id" not in text
    assert text.split(KEPT)[0] in done.stdout


@pytest.mark.slow
def test_log_append_contender_writes_all_100000_lines(
    bench_run: tuple[subprocess.CompletedProcess[str], Path],
    pg_server: PgServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert bench_run[0].returncode == 0, bench_run[0].stderr
    workloads = _bench("workloads", monkeypatch)
    ctx = workloads.open_context(pg_server.url("flowledger_bench"), 1)
    try:
        plan = workloads.BY_NAME["log_append"].setup(ctx)
        assert plan.contenders["flowledger step_logs.append"]() == 100_000
        assert ctx.psy.execute("SELECT count(*) FROM step_logs").fetchone() == (100_000,)
        plan.finish()
        assert ctx.psy.execute("SELECT count(*) FROM step_logs").fetchone() == (0,)
    finally:
        ctx.close()


@pytest.mark.parametrize(
    ("only", "message"),
    [
        ((), "--scale must be at least 100,050 for the depth benchmark"),
        (("--only", "starts", "lookups"), "--scale must be at least 40,000 for the lookups"),
        (("--only", "pages"), "--scale must be at least 50 for the pages benchmark"),
    ],
)
def test_run_refuses_a_scale_too_small_for_a_chosen_workload(
    only: tuple[str, ...], message: str
) -> None:
    done = _run("--database", "postgresql://nobody@/nowhere", "--scale", "10", *only)
    assert done.returncode == 2
    assert message in done.stderr


def test_benchmark_sql_reads_every_execution_column_in_record_order(
    conn: psycopg.Connection[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    tables = _bench("workloads._tables", monkeypatch)
    columns = [c.strip() for c in tables.COLUMNS.split(",")]
    assert columns == list(Execution.__struct_fields__)
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_name = 'workflow_executions' ORDER BY ordinal_position"
    ).fetchall()
    assert sorted(columns) == sorted(r[0] for r in rows)
    assert sorted(tables.EXECUTIONS.columns.keys()) == sorted(columns)


def test_write_section_replaces_its_section_and_run_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = _bench("report", monkeypatch)
    path = tmp_path / "RESULTS.md"
    report.write_section(path, "orchestration", "Orchestration", "first")
    report.write_section(path, "peers", "Peers", "theirs")
    report.write_section(path, "orchestration", "Orchestration", "second")
    report.write_results(path, "# Benchmark results\n")
    text = path.read_text()
    assert text.startswith("# Benchmark results\n\n<!-- section: peers -->\n## Peers\n\ntheirs\n")
    assert text.count("<!-- section: orchestration -->") == 1
    assert "## Orchestration\n\nsecond\n<!-- end: orchestration -->\n" in text
    assert "first" not in text


def test_every_workload_module_is_registered_with_its_interface(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workloads = _bench("workloads", monkeypatch)
    modules = sorted(p.stem for p in (ROOT / "benchmarks" / "workloads").glob("[!_]*.py"))
    assert sorted(w.__name__.rpartition(".")[2] for w in workloads.ALL) == modules
    for workload in workloads.ALL:
        assert workload.NAME == workload.__name__.rpartition(".")[2]
        assert workload.TITLE and workload.COMPARES and workload.__doc__
        assert workload.MIN_SCALE >= 1 and callable(workload.setup)


def test_the_peers_report_becomes_the_peers_section_of_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peers = _bench("peers", monkeypatch)
    report = "# flowledger against PostgreSQL task engines\n\nCommand: x\n\n## 1. Drain\n\n| a |"
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n")
    _bench("report", monkeypatch).write_section(
        path, "peers", peers.PEERS_TITLE, peers.as_section(report)
    )
    text = path.read_text()
    assert "<!-- section: peers -->\n## Against other PostgreSQL task engines\n\nCommand: x" in text
    assert "\n### 1. Drain\n\n| a |\n<!-- end: peers -->\n" in text
    assert "# flowledger against" not in text
    # The results of record hold the side-by-side table, and no separate file does.
    results = Path(__file__).resolve().parents[2] / "benchmarks"
    assert not (results / "PEERS.md").exists()
    assert "### 1. Drain: tasks/s from enqueued to done" in (results / "RESULTS.md").read_text()


def _skip_without_walinspect(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_walinspect'"
        ).fetchone()
    if found is None:
        pytest.skip("the server has no pg_walinspect (PostgreSQL 15+ contrib)")


def test_the_wal_breakdown_runs(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wal = _bench("wal_breakdown", monkeypatch)
    _skip_without_walinspect(db_url)
    assert wal.main([db_url, "--tasks", "30", "--batch", "7"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("30 tasks drained, ")
    assert "Btree/INSERT_LEAF" in out and "execution_steps_pkey" in out


def test_the_wal_breakdown_keeps_its_wal_through_checkpoints(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checkpoints on a busy server recycle WAL segments: the drain's must still be there
    when the script reads them (a CI run once found the first one removed)."""
    wal = _bench("wal_breakdown", monkeypatch)
    _skip_without_walinspect(db_url)
    stop = threading.Event()
    checkpoints = 0

    def recycle() -> None:
        nonlocal checkpoints
        with psycopg.connect(db_url, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("SELECT pg_switch_wal()")
                conn.execute("CHECKPOINT")
                checkpoints += 1

    recycler = threading.Thread(target=recycle)
    recycler.start()
    try:
        assert wal.main([db_url, "--tasks", "200", "--batch", "7"]) == 0
    finally:
        stop.set()
        recycler.join(timeout=60)
    assert checkpoints >= 2
    assert capsys.readouterr().out.startswith("200 tasks drained, ")


def test_the_wal_breakdown_reports_the_statements_of_the_drain(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wal = _bench("wal_breakdown", monkeypatch)
    with psycopg.connect(db_url) as conn:
        loaded = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_walinspect'"
            " AND current_setting('shared_preload_libraries') LIKE '%pg_stat_statements%'"
        ).fetchone()
    if loaded is None:
        pytest.skip("the server does not preload pg_stat_statements (CI's PostgreSQL 15 does)")
    assert wal.main([db_url, "--tasks", "30", "--batch", "7", "--statements"]) == 0
    out = capsys.readouterr().out.split("server execution time (µs per task)", 1)[1]
    assert "flowledger:claim_steps" in out and "flowledger:complete_steps" in out


RETENTION = ROOT / "benchmarks" / "retention.py"


def test_retention_benchmark_removes_the_same_rows_both_ways(
    pg_server: PgServer, tmp_path: Path
) -> None:
    """benchmarks/retention.py at a tiny size: the section it writes, both ways removing
    the same lines, the partition drop shrinking the table where DELETE and VACUUM do not;
    its database dropped afterwards."""
    output = tmp_path / "RESULTS.md"
    output.write_text("# Benchmark results\n" + KEPT)
    done = subprocess.run(
        [
            *(sys.executable, str(RETENTION), "--database", pg_server.url("postgres")),
            *("--rows", "4000", "--months", "4", "--output", str(output)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    text = output.read_text()
    assert text.startswith("# Benchmark results\n" + KEPT)
    section = text.split("## Retention: dropping partitions vs DELETE\n\n")[1]
    assert "Command: `python benchmarks/retention.py --rows 4000 --months 4`" in section
    # January and February 2024 out of January to April: 60 of 121 days.
    assert "4,000 step_log lines of 1,000 steps over 4 months; 1,983 of them" in section
    rows = [r.split(" | ") for r in section.splitlines() if r.startswith("| ") and "---" not in r]
    ways = {r[0].removeprefix("| "): r[1:] for r in rows[1:]}
    assert list(ways) == [
        "drop partitions (db.step_logs.drop_partitions)",
        "DELETE ... WHERE logged_at < cutoff (unpartitioned)",
        "then VACUUM of the unpartitioned table",
    ]

    def mib(cell: str) -> float:
        return float(cell.strip(" |").removesuffix(" MiB").replace(",", ""))

    drop, delete, vacuum = ways.values()
    assert mib(drop[4]) < mib(drop[3])  # the dropped months' files are gone
    assert mib(delete[4]) == mib(delete[3]) and mib(vacuum[4]) == mib(vacuum[3])
    with psycopg.connect(pg_server.url("postgres")) as admin:
        gone = admin.execute(
            "SELECT count(*) FROM pg_database WHERE datname = 'flowledger_retention'"
        ).fetchone()
    assert gone == (0,)


def test_the_pgbench_scripts_of_flowledger_sql_run(
    db_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim + complete scripts that pgbench runs (run.py's claims workload, peers.py's
    batched one) are flowledger's own statements with every parameter bound: each drains
    steps for real."""
    measure = _bench("measure", monkeypatch)
    claims = _bench("workloads.claims", monkeypatch)
    peers = _bench("peers", monkeypatch)
    from _runs_factories import add_stage, make_workflow

    workflow_id = make_workflow(conn)
    add_stage(conn, workflow_id, "only")
    with flowledger.connect(db_url, max_size=1) as db:
        db.executions.start_many(requests=[StartRequest(workflow_id=workflow_id)] * 30)
    single = claims._claim_complete_script()
    assert measure.pgbench(db_url, single, transactions=5, defines=claims.PGBENCH_DEFINES) > 0
    batched = peers.batched_script(10)
    assert (
        measure.pgbench(
            db_url, batched, transactions=2, defines={"worker_id": "pgbench", "lease": "60s"}
        )
        > 0
    )
    done = conn.execute("SELECT count(*) FROM execution_steps WHERE status = 'completed'")
    assert done.fetchone() == (25,)


def test_the_queues_benchmark_drains_every_configuration(
    pg_server: PgServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """benchmarks/queues.py at a tiny size: every run of every configuration completes
    steps, through the shared claim + complete loop, and its section is written."""
    queues = _bench("queues", monkeypatch)
    monkeypatch.setattr(queues, "STEPS", 40)
    monkeypatch.setattr(queues, "BENCH_DB", f"flowledger_queues_bench_t{os.getpid()}")
    results = tmp_path / "RESULTS.md"
    try:
        argv = ["--database", pg_server.url("postgres"), "--repeats", "1", "--output", str(results)]
        assert queues.main(argv) == 0
    finally:
        with psycopg.connect(pg_server.url("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {queues.BENCH_DB}")
    runs = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[1] ")]
    assert len(runs) == len(queues.RUNS) * len(queues.CONFIGS)
    assert all(not line.endswith(" 0 steps/s") for line in runs)
    assert "<!-- section: queues -->" in results.read_text()


def test_the_lanes_benchmark_drains_every_configuration_exactly_once(
    pg_server: PgServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """benchmarks/worker_lanes.py at a tiny size: every W and lane count drains its steps
    exactly once (the script checks), and its section is written."""
    lanes = _bench("worker_lanes", monkeypatch)
    monkeypatch.setattr(lanes, "BENCH_DB", f"flowledger_lanes_bench_t{os.getpid()}")
    results = tmp_path / "RESULTS.md"
    try:
        argv = ["--database", pg_server.url("postgres"), "--repeats", "1", "--tasks", "30"]
        assert lanes.main([*argv, "--output", str(results)]) == 0
    finally:
        with psycopg.connect(pg_server.url("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {lanes.BENCH_DB}")
    runs = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[1] ")]
    assert len(runs) == sum(len(counts) for _, counts in lanes.CONFIGS)
    assert all(not line.endswith(" 0 steps/s") for line in runs)
    assert "<!-- section: worker-lanes -->" in results.read_text()


def test_the_plan_cache_benchmark_measures_every_mode_and_path(
    pg_server: PgServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """benchmarks/plan_cache.py at a tiny size: every mode runs every path, the auto
    connection's plan counts are read, and its section is written."""
    plan_cache = _bench("plan_cache", monkeypatch)
    monkeypatch.setattr(plan_cache, "STARTS", 20)
    monkeypatch.setattr(plan_cache, "BENCH_DB", f"flowledger_plan_cache_t{os.getpid()}")
    results = tmp_path / "RESULTS.md"
    try:
        argv = ["--database", pg_server.url("postgres"), "--rounds", "1", "--output", str(results)]
        assert plan_cache.main(argv) == 0
    finally:
        with psycopg.connect(pg_server.url("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {plan_cache.BENCH_DB}")
    out = capsys.readouterr().out
    assert sum(line.startswith("[1] ") for line in out.splitlines()) == len(plan_cache.MODES)
    section = results.read_text()
    assert "<!-- section: plan-cache -->" in section
    assert "| claim_steps |" in section and "| start_executions |" in section
