"""Retention of step_logs: dropping whole monthly partitions (`db.step_logs.drop_partitions`,
what `flowledger maintain --drop-older-than` runs) against `DELETE ... WHERE logged_at <
cutoff` on an unpartitioned copy of the same lines (the table as 0007 made it), then
VACUUM of that copy.

    .venv/bin/python benchmarks/retention.py [--database URL] [--rows 1000000]
        [--months 12] [--output benchmarks/RESULTS.md]

It (re)creates the database `flowledger_retention` on that server (without --database,
FLOWLEDGER_URL or DATABASE_URL: the embedded server), migrates it, writes `--rows` log
lines of 1,000 steps spread evenly over `--months` UTC months into the partitioned
step_logs (one partition per month), copies them into `step_logs_plain` (its indexes and
constraints as 0007 had them, autovacuum off so that nothing runs behind the
measurements), VACUUM ANALYZEs both and takes a CHECKPOINT. Both sides then remove the
lines of the oldest half of the months: the same rows (checked). For each it reports the
seconds, the rows removed per second, the WAL written (pg_wal_lsn_diff of the WAL
position before and after: pg_current_wal_insert_lsn(), not pg_current_wal_lsn(), which
lags behind what was written while synchronous_commit is off) and the table's size after
(pg_total_relation_size, all partitions summed); for the DELETE also what the VACUUM that
must follow costs, and the size after it. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATABASE = "flowledger_retention"
STEPS = 1_000

sys.path.insert(0, str(HERE))
from report import write_section  # noqa: E402
from servers import recreate_database, server_url, server_version, with_db  # noqa: E402

PLAIN = """
CREATE TABLE step_logs_plain (LIKE step_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    WITH (autovacuum_enabled = false);
INSERT INTO step_logs_plain SELECT * FROM step_logs;
ALTER TABLE step_logs_plain ADD PRIMARY KEY (id);
CREATE INDEX ON step_logs_plain (step_id, logged_at, id);
CREATE INDEX ON step_logs_plain (execution_id, logged_at, id);
CREATE INDEX ON step_logs_plain USING brin (logged_at);
"""
PARTITIONED_SIZE = (
    "SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint"
    " FROM pg_partition_tree('step_logs')"
)
PLAIN_SIZE = "SELECT pg_total_relation_size('step_logs_plain')"


@dataclass
class Outcome:
    """What one way of removing the old lines cost."""

    what: str
    rows: int
    seconds: float
    wal_bytes: int
    size_before: int
    size_after: int

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


@dataclass
class Result:
    """Both sides on one data set."""

    server: str
    settings: str
    rows: int
    months: int
    cutoff: datetime.datetime
    outcomes: list[Outcome]


def _scalar(conn: Any, sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def _measured(conn: Any, what: str, rows: int, size_sql: str, run: Any) -> Outcome:
    """Time `run()` after a CHECKPOINT, with the WAL it writes and the size around it."""
    conn.execute("CHECKPOINT")
    size_before = _scalar(conn, size_sql)
    lsn = _scalar(conn, "SELECT pg_current_wal_insert_lsn()")
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    wal = _scalar(conn, "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)::bigint", (lsn,))
    return Outcome(what, rows, seconds, int(wal), size_before, _scalar(conn, size_sql))


def _fill(conn: Any, db: Any, rows: int, months: int, start: datetime.datetime) -> None:
    """`rows` lines of STEPS steps, in logged_at order, spread evenly over the months."""
    db.step_logs.ensure_partitions(months_ahead=months - 1, now=start)
    conn.execute(
        "INSERT INTO users (email, display_name) VALUES ('retention@example.com', 'R');"
        "INSERT INTO workflows (owner_id, name) SELECT id, 'retention' FROM users;"
        "INSERT INTO workflow_executions (workflow_id, workflow_version)"
        f"  SELECT w.id, 1 FROM workflows w, generate_series(1, {STEPS});"
        "INSERT INTO execution_steps (execution_id, task_name) "
        "  SELECT id, 'log' FROM workflow_executions;"
        "CREATE TEMP TABLE numbered AS"
        "  SELECT row_number() OVER (ORDER BY id) - 1 AS n, id, execution_id FROM execution_steps"
    )
    end = _month(start, months)
    conn.execute(
        "INSERT INTO step_logs (step_id, execution_id, level, message, fields, logged_at)"
        " SELECT s.id, s.execution_id, 'info', 'processed batch ' || g,"
        "        jsonb_build_object('batch', g, 'rows', g %% 977),"
        "        %(start)s + (%(end)s - %(start)s) * ((g - 0.5) / %(rows)s)"
        "   FROM generate_series(1, %(rows)s) g JOIN numbered s ON s.n = g %% %(steps)s"
        "  ORDER BY g",
        {"start": start, "end": end, "rows": rows, "steps": STEPS},
    )
    conn.execute(PLAIN)


def _month(start: datetime.datetime, ahead: int) -> datetime.datetime:
    index = start.year * 12 + start.month - 1 + ahead
    return datetime.datetime(index // 12, index % 12 + 1, 1, tzinfo=datetime.UTC)


def measure(url: str, *, rows: int, months: int) -> Result:
    """Build the data set in a fresh `flowledger_retention` on `url`'s server, remove the
    oldest half of the months both ways, and drop the database."""
    import psycopg

    import flowledger
    from flowledger.tools.migrate import Migrator

    admin_url = with_db(url, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        recreate_database(admin, DATABASE)
        server = server_version(admin)
        settings = ", ".join(
            f"{name} {setting}"
            for name, setting in admin.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN"
                " ('full_page_writes', 'synchronous_commit', 'wal_compression')"
                " ORDER BY name"
            )
        )
    target = with_db(url, DATABASE)
    try:
        with Migrator(target) as migrator:
            migrator.apply()
        start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
        cutoff = _month(start, months // 2)
        with (
            flowledger.connect(target, min_size=1, max_size=1) as db,
            psycopg.connect(target, autocommit=True) as conn,
        ):
            _fill(conn, db, rows, months, start)
            conn.execute("VACUUM ANALYZE")
            old = "SELECT count(*) FROM {} WHERE logged_at < %s"
            doomed = _scalar(conn, old.format("step_logs"), (cutoff,))
            assert doomed == _scalar(conn, old.format("step_logs_plain"), (cutoff,))
            dropped = _measured(
                conn,
                "drop partitions (db.step_logs.drop_partitions)",
                doomed,
                PARTITIONED_SIZE,
                lambda: db.step_logs.drop_partitions(older_than=cutoff),
            )
            deleted = _measured(
                conn,
                "DELETE ... WHERE logged_at < cutoff (unpartitioned)",
                doomed,
                PLAIN_SIZE,
                lambda: conn.execute("DELETE FROM step_logs_plain WHERE logged_at < %s", (cutoff,)),
            )
            vacuumed = _measured(
                conn,
                "then VACUUM of the unpartitioned table",
                doomed,
                PLAIN_SIZE,
                lambda: conn.execute("VACUUM step_logs_plain"),
            )
            kept = "SELECT count(*) FROM {}"
            assert _scalar(conn, kept.format("step_logs")) == rows - doomed
            assert _scalar(conn, kept.format("step_logs_plain")) == rows - doomed
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    return Result(server, settings, rows, months, cutoff, [dropped, deleted, vacuumed])


def report(result: Result, command: str) -> str:
    """The RESULTS.md section: the command, the set-up, one row per way."""
    removed = result.outcomes[0].rows
    lines = [
        f"Command: `{command}`",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC;"
        f" server: {result.server} ({result.settings})",
        f"- {result.rows:,} step_log lines of {STEPS:,} steps over {result.months} months;"
        f" {removed:,} of them (the months before {result.cutoff:%Y-%m-%d}) removed both ways;"
        " a CHECKPOINT before each measurement",
        "",
        "| way | seconds | rows/s | WAL written | table size before | table size after |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for o in result.outcomes:
        lines.append(
            f"| {o.what} | {o.seconds:.3f} | {o.rows_per_second:,.0f} |"
            f" {_mib(o.wal_bytes)} | {_mib(o.size_before)} | {_mib(o.size_after)} |"
        )
    return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database", help="server URL (any database on it)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--output", type=Path, help="write the table into this RESULTS.md")
    args = parser.parse_args()
    if args.rows < STEPS:
        parser.error(f"--rows must be at least {STEPS:,} (one line per step)")
    if not 2 <= args.months <= 60:
        parser.error("--months must be between 2 and 60")

    from flowledger.urls import to_libpq_url

    url = to_libpq_url(server_url(args.database))
    result = measure(url, rows=args.rows, months=args.months)
    command = f"python benchmarks/retention.py --rows {args.rows} --months {args.months}"
    text = report(result, command)
    print(text)
    if args.output:
        write_section(args.output, "retention", "Retention: dropping partitions vs DELETE", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
