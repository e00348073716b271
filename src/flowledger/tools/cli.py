"""The `flowledger` command: migrations, the embedded server, and the tools built on them.

Exit codes (stable, for pipelines; README.md tabulates them per command):
  0  success (for `migrate status --check` / `verify`: nothing pending, nothing edited;
     for `db status`: running; for `check-plans`: every plan passes)
  1  error: unreachable server, bad URL, failed migration, lock wait expired, a missing
     extra, a failing plan, `db status` of a server that is not running...
  2  usage error (unknown option, missing argument, an option the command does not take)
  3  `migrate status --check`: migrations are pending (history otherwise intact)
  4  `migrate status --check` / `verify` / `apply`: an applied migration was edited or
     its file is missing
  5  `migrate status --check` / `verify`: an index of the schema is invalid (a failed or
     interrupted concurrent build)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from flowledger import __version__
from flowledger.errors import DatabaseNotConfigured, FlowledgerError, MigrationError, translating
from flowledger.tools.migrate import (
    EditedMigrations,
    Migrator,
    RunResult,
    check_duration,
    check_seconds,
)

if TYPE_CHECKING:
    from flowledger.records.runs import LogPartition

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PENDING = 3
EXIT_EDITED = 4
EXIT_INVALID_INDEX = 5
EXIT_INTERRUPTED = 130

# Options taken before or after the command's name (`flowledger --json db status` is
# `flowledger db status --json`), each by the commands whose parser lists it in
# `globals_taken`: any other pairing is a usage error, not an ignored option.
_DATABASE, _EMBEDDED, _JSON, _QUIET = "--database", "--embedded", "--json", "--quiet"


class _Output:
    """Prints either human lines or one JSON document."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, payload: dict[str, Any], lines: Sequence[str]) -> None:
        if self.as_json:
            print(json.dumps(payload, default=str, sort_keys=True))
        else:
            for line in lines:
                print(line)


def resolve_database(args: argparse.Namespace, *, development: bool) -> str:
    """The URL a command runs on: `--embedded`, else `--database`, `FLOWLEDGER_URL`,
    `DATABASE_URL`; with none of them the embedded server for a development command
    (said on stderr), DatabaseNotConfigured for the others."""
    from flowledger.database import settings_from_env
    from flowledger.tools.devserver import EmbeddedServer
    from flowledger.urls import resolve

    settings_from_env()  # the same refusal of unknown or invalid FLOWLEDGER_* as connect()
    if args.embedded:
        return EmbeddedServer().ensure_running()
    resolved = resolve(args.database, source="--database")
    if resolved is not None:
        return resolved.url
    if not development:
        raise DatabaseNotConfigured(
            "no database configured: pass --database URL, set FLOWLEDGER_URL or"
            " DATABASE_URL, or add --embedded for the embedded development server"
        )
    server = EmbeddedServer()
    url = server.ensure_running()
    print(
        "flowledger: no database configured (--database, FLOWLEDGER_URL, DATABASE_URL):"
        f" using the embedded server in {server.base_dir}",
        file=sys.stderr,
    )
    return url


# -- migrate ------------------------------------------------------------------------------


def _migrator(args: argparse.Namespace) -> Migrator:
    from flowledger.tools.migrate import Settings

    settings = Settings(
        wait_timeout=args.lock_wait,
        lock_timeout=args.lock_timeout,
        statement_timeout=args.statement_timeout,
    )
    directory = Path(args.migrations_dir) if args.migrations_dir else None
    url = resolve_database(args, development=False)
    return Migrator(url, directory=directory, settings=settings)


def _report_run(mig: Migrator, result: RunResult, out: _Output) -> int:
    """Print what apply/rollback did, or on a dry run the SQL it would run."""
    action, dry = result.action, result.dry_run
    done = {"apply": "applied", "rollback": "rolled back"}[action]
    lines: list[str] = []
    sql = {mid: mig.sql_of(mid, action) for mid in result.migrations} if dry else {}
    for mid, text in sql.items():
        lines += [f"-- {mid} ({action})", text, ""]
    verb = f"would {action.replace('rollback', 'roll back')}" if dry else done
    nothing = f"nothing to {action.replace('rollback', 'roll back')}"
    lines += [f"{verb} {mid}" for mid in result.migrations] or [nothing]
    payload: dict[str, Any] = {"action": action, "dry_run": dry, "migrations": result.migrations}
    if dry:
        payload["sql"] = sql
    out.emit(payload, lines)
    return EXIT_OK


def _cmd_migrate_apply(args: argparse.Namespace, out: _Output) -> int:
    with translating(), _migrator(args) as mig:
        result = mig.apply(to=args.to, dry_run=args.dry_run, allow_edited=args.allow_edited)
        return _report_run(mig, result, out)


def _cmd_migrate_rollback(args: argparse.Namespace, out: _Output) -> int:
    with translating(), _migrator(args) as mig:
        result = mig.rollback(steps=args.steps, to=args.to, all_=args.all, dry_run=args.dry_run)
        return _report_run(mig, result, out)


def _cmd_migrate_status(args: argparse.Namespace, out: _Output) -> int:
    with translating(), _migrator(args) as mig:
        states = mig.status()
        invalid = mig.invalid_indexes()
    counts = {
        k: sum(1 for s in states if s.state == k)
        for k in ("applied", "pending", "edited", "missing")
    }
    code = EXIT_OK
    if args.check:
        if counts["edited"] or counts["missing"]:
            code = EXIT_EDITED
        elif invalid:
            code = EXIT_INVALID_INDEX
        elif counts["pending"]:
            code = EXIT_PENDING
    lines = [
        f"{s.state:<8} {s.id}" + (f"  ({s.applied_at:%Y-%m-%d %H:%M:%S})" if s.applied_at else "")
        for s in states
    ]
    lines += [f"invalid  {ix}" for ix in invalid]
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items()))
    payload = {
        "migrations": [s.as_json() for s in states],
        "counts": counts,
        "invalid_indexes": [{"name": ix.name, "table": ix.table} for ix in invalid],
        "ok": code == EXIT_OK,
    }
    out.emit(payload, lines)
    return code


def _cmd_migrate_verify(args: argparse.Namespace, out: _Output) -> int:
    with translating(), _migrator(args) as mig:
        problems = mig.problems()
        invalid = mig.invalid_indexes()
    out.emit(
        {"ok": not (problems or invalid), "problems": problems + [str(ix) for ix in invalid]},
        problems + [str(ix) for ix in invalid]
        or ["ok: every applied migration matches its file, every index is valid"],
    )
    if problems:
        return EXIT_EDITED
    return EXIT_INVALID_INDEX if invalid else EXIT_OK


# -- db -----------------------------------------------------------------------------------


def _cmd_db(args: argparse.Namespace, out: _Output) -> int:
    from flowledger.tools.devserver import EmbeddedServer

    server = EmbeddedServer()
    if args.db_command in ("init", "reset"):
        return _db_init(server, args, out)
    if args.db_command == "start":
        url = server.ensure_running()
        out.emit({"running": True, "url": url, "pgdata": str(server.pgdata)}, [f"running: {url}"])
    elif args.db_command == "stop":
        stopped = server.stop()
        out.emit({"stopped": stopped}, ["stopped" if stopped else "not running"])
    elif args.db_command == "status":
        st = server.status()
        running_url = server.url() if st.running else None
        payload = {
            "running": st.running,
            "pid": st.pid,
            "pgdata": str(st.pgdata),
            "socket_dir": str(st.socket_dir) if st.socket_dir else None,
            "url": running_url,
            "initialized": st.initialized,
        }
        out.emit(
            payload,
            [
                f"running (pid {st.pid}): {running_url}"
                if st.running
                else f"not running ({st.pgdata})"
            ],
        )
        return EXIT_OK if st.running else EXIT_ERROR
    else:
        url = server.ensure_running()
        out.emit({"url": url}, [url])
    return EXIT_OK


def _db_init(server: Any, args: argparse.Namespace, out: _Output) -> int:
    """`db init`: start the embedded server when needed, apply every migration, with
    --seed add the sample data. `db reset`: the same after rolling every migration back
    (every table and its rows are dropped: --yes is required)."""
    from flowledger.tools.migrate import Migrator

    if args.db_command == "reset" and not args.yes:
        print(
            "flowledger: usage error: db reset drops every table of the embedded database and"
            " its rows: confirm with --yes",
            file=sys.stderr,
        )
        return EXIT_USAGE
    url = server.ensure_running()
    rolled_back: list[str] = []
    with Migrator(url) as mig:
        if args.db_command == "reset":
            rolled_back = mig.rollback(all_=True).migrations
        applied = mig.apply().migrations
    payload: dict[str, Any] = {"url": url, "rolled_back": rolled_back, "applied": applied}
    lines = [f"{len(rolled_back)} migrations rolled back"] if args.db_command == "reset" else []
    lines += [f"{len(applied)} migrations applied: {url}"]
    if args.seed:
        from flowledger.database import connect
        from flowledger.tools.seed import seed

        with connect(url, min_size=1, max_size=2) as db:
            payload["seeded"] = seed(db).as_json()
        lines.append("sample data seeded")
    out.emit(payload, lines)
    return EXIT_OK


# -- stats --------------------------------------------------------------------------------


def _cmd_stats(args: argparse.Namespace, out: _Output) -> int:
    import datetime

    from flowledger.database import connect

    if args.prometheus and out.as_json:
        print(
            "flowledger: usage error: --prometheus and --json exclude each other", file=sys.stderr
        )
        return EXIT_USAGE
    url = resolve_database(args, development=True)
    window = datetime.timedelta(seconds=args.tool_window)
    with connect(url, min_size=1, max_size=1) as db:
        metrics = db.metrics(tool_window=window)
    if args.prometheus:
        sys.stdout.write(metrics.prometheus())
        return EXIT_OK
    s = metrics.steps
    lines = [
        f"steps due {s.due}, delayed {s.delayed}, running {s.running},"
        f" leases expired {s.leases_expired}, oldest due {s.oldest_due_seconds or 0:.1f} s",
        "executions " + ", ".join(f"{k} {v}" for k, v in metrics.executions_by_status.items()),
        "steps (estimated) "
        + ", ".join(f"{k} {v}" for k, v in metrics.steps_by_status_estimated.items()),
        f"outbox backlog {metrics.outbox.backlog},"
        f" oldest {metrics.outbox.oldest_seconds or 0:.1f} s",
    ]
    lines += [
        f"tool {t.tool_name}: {t.failures}/{t.calls} failed ({t.failure_rate:.1%})"
        for t in metrics.tools
    ]
    out.emit(msgspec.to_builtins(metrics), lines)
    return EXIT_OK


# -- seed ---------------------------------------------------------------------------------


def _require_migrated(url: str) -> None:
    from flowledger.tools.migrate import Migrator

    with Migrator(url) as mig:
        pending = [s.id for s in mig.status() if s.state != "applied"]
    if pending:
        raise MigrationError(
            f"the database is not fully migrated ({', '.join(pending)}):"
            " run flowledger migrate apply"
        )


def _cmd_seed(args: argparse.Namespace, out: _Output) -> int:
    import psycopg

    from flowledger.errors import translating
    from flowledger.urls import to_libpq_url

    url = resolve_database(args, development=True)
    _require_migrated(url)
    if args.scale is None:
        from flowledger.database import connect
        from flowledger.tools.seed import seed

        with connect(url, min_size=1, max_size=2) as db:
            report = seed(db)
        payload = report.as_json()
        out.emit(payload, [f"{k:<20} {v}" for k, v in payload.items()])
        return EXIT_OK
    from flowledger.tools.volume import generate, stderr_progress

    with translating(), psycopg.connect(to_libpq_url(url), autocommit=True) as conn:
        volume = generate(
            conn,
            scale=args.scale,
            seed=args.seed,
            progress=None if args.json or args.quiet else _progress(stderr_progress),
        )
    lines = [f"{table:<20} {rows:>12,}" for table, rows in volume.rows.items()]
    lines.append(f"written in {volume.seconds:.1f}s")
    out.emit({"rows": volume.rows, "seconds": round(volume.seconds, 2)}, lines)
    return EXIT_OK


def _progress(bar: Callable[[str, int, int], None]) -> Callable[[str, int, int], None]:
    """`bar` (rewritten in place with \\r) on a terminal; redirected, one plain line per
    table once it is written, so that a log or a pipe gets no control characters."""
    if sys.stderr.isatty():
        return bar

    def lines(table: str, done: int, total: int) -> None:
        if done >= total:
            print(f"{table:<20} {done:,}/{total:,} done", file=sys.stderr, flush=True)

    return lines


# -- demo ---------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace, out: _Output) -> int:
    from flowledger.database import connect
    from flowledger.tools.demo import WORKERS, run_demo
    from flowledger.tools.migrate import Migrator

    url = resolve_database(args, development=True)
    with Migrator(url) as mig:
        applied = mig.apply().migrations
    if not out.as_json:
        print(f"migrations: applied {len(applied)}" if applied else "migrations: up to date")
    # The timeline is printed as it happens; --json prints only the final report.
    live: Callable[[str], None] = (lambda _line: None) if out.as_json else print
    with connect(url, min_size=1, max_size=len(WORKERS) + 1) as db:
        report = run_demo(db, live)
    out.emit({"migrations_applied": applied, **report.as_json()}, [])
    ordered = report.status == "completed" and report.in_dependency_order
    return EXIT_OK if ordered else EXIT_ERROR


# -- worker -------------------------------------------------------------------------------


def _cmd_worker(args: argparse.Namespace, out: _Output) -> int:
    import signal

    from flowledger.database import connect
    from flowledger.worker import Worker, load_handlers

    handlers = load_handlers(args.handlers)
    url = resolve_database(args, development=False)
    with connect(url, min_size=1, max_size=args.concurrency + 2) as db:
        worker = Worker(
            db,
            handlers,
            worker_id=args.worker_id,
            concurrency=args.concurrency,
            queues=args.queue,
        )
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: worker.stop())
        if not out.as_json:
            print(f"worker {worker.worker_id}: {len(handlers)} handlers, stop with Ctrl-C")
        stats = worker.run()
    summary = msgspec.structs.asdict(stats)
    out.emit(
        {"worker_id": worker.worker_id, **summary},
        [
            f"worker {worker.worker_id} stopped: "
            + ", ".join(f"{k} {v}" for k, v in summary.items())
        ],
    )
    return EXIT_OK


# -- scheduler ----------------------------------------------------------------------------


def _cmd_scheduler(args: argparse.Namespace, out: _Output) -> int:
    import signal
    import threading

    from flowledger.database import connect
    from flowledger.records.schedules import FiredTick
    from flowledger.tools.scheduler import run_scheduler

    url = resolve_database(args, development=False)
    _require_migrated(url)
    ticks: list[dict[str, str]] = []

    def report(fired: list[FiredTick]) -> None:
        for f in fired:
            tick = {
                "workflow_id": str(f.workflow_id),
                "tick": f.tick.isoformat(),
                "execution_id": str(f.execution.id),
            }
            if args.once:
                ticks.append(tick)
            if not out.as_json:
                print(f"fired {tick['workflow_id']} at {tick['tick']}: {tick['execution_id']}")

    stop = threading.Event()
    with connect(url, min_size=1, max_size=1) as db:
        if not args.once:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            if not out.as_json:
                print(
                    f"scheduler: firing due ticks, waking at least every {args.interval:g} s;"
                    " stop with Ctrl-C",
                    flush=True,
                )
        stats = run_scheduler(
            db,
            interval=args.interval,
            limit=args.limit,
            stop=stop,
            report=report,
            once=args.once,
        )
    payload: dict[str, Any] = {"passes": stats.passes, "fired": stats.fired}
    if args.once:
        payload["ticks"] = ticks
    else:
        payload["failed_passes"] = stats.failed_passes
    summary = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in payload.items() if k != "ticks")
    out.emit(payload, [f"scheduler stopped: {summary}"])
    return EXIT_OK


# -- check-plans --------------------------------------------------------------------------


def _cmd_check_plans(args: argparse.Namespace, out: _Output) -> int:
    import psycopg

    from flowledger.errors import translating
    from flowledger.tools.migrate import check_connection
    from flowledger.tools.plans import check_plans, format_report
    from flowledger.urls import to_libpq_url

    url = resolve_database(args, development=True)
    check_connection(url)
    _require_migrated(url)
    with translating(), psycopg.connect(to_libpq_url(url), autocommit=True) as conn:
        report = check_plans(conn, strict=not args.realistic)
    payload = {"ok": report.ok, "results": [r.as_json() for r in report.results]}
    out.emit(payload, format_report(report, verbose=not args.quiet))
    return EXIT_OK if report.ok else EXIT_ERROR


# -- maintain -----------------------------------------------------------------------------


def _cmd_maintain(args: argparse.Namespace, out: _Output) -> int:
    import datetime

    from flowledger.database import connect
    from flowledger.tools.migrate import check_connection

    url = resolve_database(args, development=False)
    check_connection(url)
    _require_migrated(url)
    cutoff: datetime.datetime | None = args.drop_older_than
    if isinstance(args.drop_older_than, datetime.timedelta):
        cutoff = datetime.datetime.now(datetime.UTC) - args.drop_older_than
    with connect(url, min_size=1, max_size=1) as db:
        created = db.step_logs.ensure_partitions(months_ahead=args.months_ahead)
        dropped = [] if cutoff is None else db.step_logs.drop_partitions(older_than=cutoff)
        partitions = db.step_logs.partitions()
    lines = [f"created {_partition_line(p)}" for p in created]
    lines += [f"dropped {_partition_line(p)}" for p in dropped]
    months = [p for p in partitions if not p.is_default]
    if not created:
        through = f" through {months[-1].name}" if months else ""
        lines.append(f"nothing to create: {args.months_ahead} months ahead are there{through}")
    if cutoff is not None and not dropped:
        utc = cutoff.astimezone(datetime.UTC)
        lines.append(f"nothing to drop: no partition ends at or before {utc:%Y-%m-%d %H:%M} UTC")
    default = next(p for p in partitions if p.is_default)
    lines.append(
        f"{len(months)} monthly partitions; step_logs_default {default.total_bytes:,} bytes"
    )
    payload = {
        "months_ahead": args.months_ahead,
        "cutoff": None if cutoff is None else msgspec.to_builtins(cutoff),
        "created": msgspec.to_builtins(created),
        "dropped": msgspec.to_builtins(dropped),
        "partitions": msgspec.to_builtins(partitions),
    }
    out.emit(payload, lines)
    return EXIT_OK


def _partition_line(p: LogPartition) -> str:
    return f"{p.name} [{p.starts_at:%Y-%m-%d}, {p.ends_at:%Y-%m-%d}) {p.total_bytes:,} bytes"


def _months_ahead_arg(text: str) -> int:
    from flowledger.repositories.step_logs import MAX_MONTHS_AHEAD

    try:
        months = int(text)
    except ValueError:
        months = -1
    if not 0 <= months <= MAX_MONTHS_AHEAD:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of months from 0 to {MAX_MONTHS_AHEAD}, got {text!r}"
        )
    return months


def _cutoff_arg(text: str) -> Any:
    """A number of days (an age: the cutoff is that long before now), or a date or an
    ISO 8601 time with its offset (midnight UTC for a date)."""
    import datetime

    from flowledger.repositories._checks import MAX_AGE

    if text.isdigit():
        if int(text) > MAX_AGE.days:
            raise argparse.ArgumentTypeError(
                f"must be at most {MAX_AGE.days:,} days (a century), got {text!r}"
            )
        return datetime.timedelta(days=int(text))
    try:
        if len(text) == 10:
            return datetime.datetime.combine(
                datetime.date.fromisoformat(text), datetime.time(), datetime.UTC
            )
        at = datetime.datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        at = None
    if at is None or at.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            "must be a number of days, a date (2026-01-31) or a time with its offset"
            f" (2026-01-31T00:00:00+00:00), got {text!r}"
        )
    return at


# -- parser -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error reported on one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: usage error: {message} (see {self.prog} --help)\n")


def _seconds_arg(text: str) -> float:
    try:
        return check_seconds("--lock-wait", float(text))
    except (ValueError, MigrationError) as exc:
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds >= 0, got {text!r}"
        ) from exc


def _interval_arg(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    # At most a day: a scheduler that sleeps longer would notice a new rule too late.
    if not 0 < seconds <= 86_400:
        raise argparse.ArgumentTypeError(f"must be seconds in (0, 86400], got {text!r}")
    return seconds


def _limit_arg(text: str) -> int:
    from flowledger.repositories.schedules import MAX_FIRE_LIMIT

    if not text.isdigit() or not 1 <= int(text) <= MAX_FIRE_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer 1..{MAX_FIRE_LIMIT}, got {text!r}")
    return int(text)


def _duration_arg(text: str) -> str:
    try:
        return check_duration("duration", text)
    except MigrationError as exc:
        raise argparse.ArgumentTypeError(
            f"must be a PostgreSQL duration such as 500ms, 10s or 15min, got {text!r}"
        ) from exc


def _add_globals(parser: argparse.ArgumentParser) -> None:
    """The options every command's parser also takes, here before the command's name."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        _DATABASE,
        metavar="URL",
        help="PostgreSQL URL (default: $FLOWLEDGER_URL, else $DATABASE_URL; the development"
        " commands demo, seed and check-plans fall back to the embedded server)",
    )
    where.add_argument(
        _EMBEDDED,
        action="store_true",
        help="use the embedded development server under .flowledger/ (started when needed)",
    )
    parser.add_argument(_JSON, action="store_true", help="print one JSON document")
    parser.add_argument(
        _QUIET,
        action="store_true",
        help="less output (seed: no progress; check-plans: plans of failing queries only)",
    )


def _add_common(
    p: argparse.ArgumentParser, name: str, *, development: bool, quiet: str | None = None
) -> None:
    """The options taken before or after the command's name: --database/--embedded,
    --json, and --quiet (described by `quiet`) when given. Defaults are left to the
    top-level parser so that a value given before the name is not overwritten."""
    where = p.add_mutually_exclusive_group()
    fallback = ", else the embedded server" if development else ""
    where.add_argument(
        _DATABASE,
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"PostgreSQL URL (default: $FLOWLEDGER_URL, else $DATABASE_URL{fallback})",
    )
    where.add_argument(
        _EMBEDDED,
        action="store_true",
        default=argparse.SUPPRESS,
        help="use the embedded development server under .flowledger/ (started when needed)",
    )
    _add_json(p, name, quiet=quiet, taken=frozenset({_DATABASE, _EMBEDDED}))


def _add_json(
    p: argparse.ArgumentParser,
    name: str,
    *,
    quiet: str | None = None,
    taken: frozenset[str] = frozenset(),
) -> None:
    """--json, and --quiet (described by `quiet`) when given; records the command's name
    and the options of _add_globals it takes (`taken` and these)."""
    p.add_argument(
        _JSON, action="store_true", default=argparse.SUPPRESS, help="print one JSON document"
    )
    if quiet is not None:
        p.add_argument(_QUIET, action="store_true", default=argparse.SUPPRESS, help=quiet)
    p.set_defaults(
        command_name=name,
        globals_taken=frozenset({*taken, _JSON, *((_QUIET,) if quiet is not None else ())}),
    )


def _check_globals(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (usage error) an option the command does not take, and --database with
    --embedded when one came before the command's name and the other after it."""
    given = {
        _DATABASE: args.database is not None,
        _EMBEDDED: args.embedded,
        _JSON: args.json,
        _QUIET: args.quiet,
    }
    for option, present in given.items():
        if present and option not in args.globals_taken:
            parser.error(f"{option} does not apply to flowledger {args.command_name}")
    if args.database is not None and args.embedded:
        parser.error(f"argument {_EMBEDDED}: not allowed with argument {_DATABASE}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `flowledger` command."""
    parser = _Parser(
        prog="flowledger", description="flowledger: PostgreSQL persistence for workflows"
    )
    parser.add_argument("--version", action="version", version=f"flowledger {__version__}")
    _add_globals(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    migrate = sub.add_parser("migrate", help="apply, roll back and inspect schema migrations")
    msub = migrate.add_subparsers(dest="migrate_command", required=True)

    def migrate_parser(
        name: str, help_: str, handler: Callable[[argparse.Namespace, _Output], int]
    ) -> argparse.ArgumentParser:
        p = msub.add_parser(name, help=help_)
        _add_common(p, f"migrate {name}", development=False)
        p.add_argument(
            "--lock-wait",
            type=_seconds_arg,
            default=60.0,
            metavar="SECONDS",
            help="how long to wait for another run's migration lock (default 60)",
        )
        p.add_argument(
            "--lock-timeout",
            type=_duration_arg,
            default="10s",
            help="PostgreSQL lock_timeout while migrating (default 10s)",
        )
        p.add_argument(
            "--statement-timeout",
            type=_duration_arg,
            default="15min",
            help="PostgreSQL statement_timeout while migrating (default 15min)",
        )
        p.add_argument(
            "--migrations-dir",
            metavar="DIR",
            help="migrations to use (default: the ones shipped with flowledger)",
        )
        p.set_defaults(handler=handler)
        return p

    apply_p = migrate_parser("apply", "apply pending migrations", _cmd_migrate_apply)
    apply_p.add_argument("--to", metavar="ID", help="stop after this migration")
    apply_p.add_argument(
        "--dry-run", action="store_true", help="print the SQL instead of running it"
    )
    apply_p.add_argument(
        "--allow-edited",
        action="store_true",
        help="apply even though an applied migration was edited",
    )

    rb = migrate_parser(
        "rollback", "roll back applied migrations (default: the newest one)", _cmd_migrate_rollback
    )
    target = rb.add_mutually_exclusive_group()
    target.add_argument("--steps", type=int, metavar="N", help="roll back the N newest migrations")
    target.add_argument("--to", metavar="ID", help="roll back every migration applied after ID")
    target.add_argument("--all", action="store_true", help="roll back everything")
    rb.add_argument("--dry-run", action="store_true", help="print the SQL instead of running it")

    st = migrate_parser(
        "status", "list applied, pending and edited migrations", _cmd_migrate_status
    )
    st.add_argument(
        "--check", action="store_true", help="exit 3 when pending, 4 when edited or missing"
    )

    migrate_parser(
        "verify",
        "check applied migrations against their files (exit 4 on mismatch)",
        _cmd_migrate_verify,
    )

    seed = sub.add_parser("seed", help="sample data (idempotent), or realistic volume with --scale")
    _add_common(seed, "seed", development=True, quiet="no progress bar")
    seed.add_argument(
        "--scale", type=int, metavar="N", help="generate N executions and their history"
    )
    seed.add_argument("--seed", type=int, default=42, help="random seed of --scale (default 42)")
    seed.set_defaults(handler=_cmd_seed)

    demo = sub.add_parser(
        "demo",
        help="migrate, seed, then run one execution with two workers and print its timeline",
    )
    _add_common(demo, "demo", development=True)
    demo.set_defaults(handler=_cmd_demo)

    work = sub.add_parser(
        "worker", help="run steps through handlers (MODULE:ATTRIBUTE, a dict action -> callable)"
    )
    _add_common(work, "worker", development=False)
    work.add_argument("handlers", help="e.g. myapp.handlers:HANDLERS")
    work.add_argument("--concurrency", type=int, default=4, help="handler threads (default 4)")
    work.add_argument("--worker-id", help="lease owner name (default: host-pid-random)")
    work.add_argument(
        "--queue",
        action="append",
        metavar="NAME",
        help="claim steps of this queue only (repeat for several; default: every queue)",
    )
    work.set_defaults(handler=_cmd_worker)

    sched = sub.add_parser(
        "scheduler", help="start the executions of scheduled workflows, once per cron tick"
    )
    _add_common(sched, "scheduler", development=False)
    sched.add_argument(
        "--once", action="store_true", help="fire what is due now, then exit (for cron jobs)"
    )
    sched.add_argument(
        "--interval",
        type=_interval_arg,
        default=60.0,
        metavar="SECONDS",
        help="longest sleep between passes: how late a new or changed rule is noticed (default 60)",
    )
    sched.add_argument(
        "--limit",
        type=_limit_arg,
        default=100,
        metavar="N",
        help="schedules handled per pass (default 100)",
    )
    sched.set_defaults(handler=_cmd_scheduler)

    plans = sub.add_parser("check-plans", help="EXPLAIN every annotated query and check its plan")
    _add_common(plans, "check-plans", development=True, quiet="print plans of failing queries only")
    plans.add_argument(
        "--realistic",
        action="store_true",
        help="keep the planner's own choices (for a database holding realistic volume)",
    )
    plans.set_defaults(handler=_cmd_check_plans)

    stats = sub.add_parser("stats", help="engine metrics: queue, executions, outbox, tools")
    _add_common(stats, "stats", development=True)
    stats.add_argument(
        "--prometheus", action="store_true", help="Prometheus' text format (for a scraper)"
    )
    stats.add_argument(
        "--tool-window",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="per-tool failure rates over this many seconds (default 900)",
    )
    stats.set_defaults(handler=_cmd_stats)

    maintain = sub.add_parser(
        "maintain",
        help="make step_logs' monthly partitions ahead; with --drop-older-than, drop old ones",
    )
    _add_common(maintain, "maintain", development=False)
    maintain.add_argument(
        "--months-ahead",
        type=_months_ahead_arg,
        default=3,
        metavar="N",
        help="make a partition for this month and the N next ones (default 3)",
    )
    maintain.add_argument(
        "--drop-older-than",
        type=_cutoff_arg,
        metavar="DAYS|DATE",
        help="drop the monthly partitions whose every line is older than DAYS days ago, or"
        " than DATE (2026-01-31, or a time with its offset)",
    )
    maintain.set_defaults(handler=_cmd_maintain)

    db = sub.add_parser("db", help="manage the embedded PostgreSQL under .flowledger/")
    dsub = db.add_subparsers(dest="db_command", required=True)
    for name, help_ in (
        ("start", "start the embedded server (a running one is left alone)"),
        ("stop", "stop the embedded server (exit 0 also when it was not running)"),
        ("status", "is the embedded server running? (exit 1 when not)"),
        ("url", "print a URL of the embedded server (starting it when needed)"),
        ("init", "start the embedded server if needed and apply every migration"),
        ("reset", "roll every migration back and apply them again (drops all data)"),
    ):
        p = dsub.add_parser(name, help=help_)
        _add_json(p, f"db {name}")
        if name in ("init", "reset"):
            p.add_argument("--seed", action="store_true", help="then add the sample data")
        if name == "reset":
            p.add_argument("--yes", action="store_true", help="confirm: every row is dropped")
        p.set_defaults(handler=_cmd_db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flowledger` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_globals(parser, args)
    out = _Output(args.json)
    with _logs_routed(as_json=args.json):
        return _run(args, out)


def _run(args: argparse.Namespace, out: _Output) -> int:
    handler: Callable[[argparse.Namespace, _Output], int] = args.handler
    try:
        code = handler(args, out)
        # Flushed here, not at exit, so that a reader gone early is reported below.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader of stdout went away (`... --json | head`). Point stdout at /dev/null
        # so that the interpreter's final flush cannot fail again with a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        print("flowledger: error: stdout was closed before the output was written", file=sys.stderr)
        return EXIT_ERROR
    except EditedMigrations as exc:
        _report(out, exc)
        return EXIT_EDITED
    except FlowledgerError as exc:
        _report(out, exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("flowledger: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


@contextmanager
def _logs_routed(*, as_json: bool) -> Iterator[None]:
    """flowledger's warnings (start-up retries, lost leases, reaper passes, slow calls) as
    `flowledger: warning:` lines on stderr while the command runs; with --json, stderr
    keeps only the error document, so they are dropped. The logging set-up is restored
    afterwards (main() also runs inside other programs, tests among them)."""
    import logging

    logger = logging.getLogger("flowledger")
    handler: logging.Handler = logging.NullHandler()
    if not as_json:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("flowledger: warning: %(message)s"))
        handler.setLevel(logging.WARNING)
    propagate = logger.propagate
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _report(out: _Output, exc: FlowledgerError) -> None:
    if out.as_json:
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
    print(f"flowledger: error: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
