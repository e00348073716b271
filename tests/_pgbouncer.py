"""A real PgBouncer (Debian's package) in front of the test server, for the tests of what
runs through a connection pooler. Started on a Unix socket in a temporary directory of its
own, stopped and removed afterwards, also when the test fails."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import PgServer

PORT = 6432


def binary() -> str | None:
    """The pgbouncer executable, or None when it is not installed."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


def _run_as(pg_server: PgServer) -> list[str]:
    # pgbouncer refuses to run as root: run it as the server's owner (the embedded
    # server's socket directory tells who that is; Debian's server runs as postgres).
    if os.geteuid() != 0:
        return []
    if pg_server.host.startswith("/"):
        owner = pwd.getpwuid(os.stat(pg_server.host).st_uid).pw_name
    else:
        owner = "postgres"
        try:
            pwd.getpwnam(owner)
        except KeyError:
            pytest.skip("pgbouncer cannot run as root and there is no postgres user")
    if owner == "root":
        pytest.skip("pgbouncer cannot run as root and no other user owns the server")
    return ["-u", owner]


@contextmanager
def pgbouncer(
    pg_server: PgServer,
    dbname: str,
    *,
    pool_mode: str = "transaction",
    pool_size: int = 4,
    settings: str = "",
) -> Iterator[str]:
    """Run a PgBouncer in front of `pg_server`; yields the URL of `dbname` through it.
    `settings` adds lines to its [pgbouncer] section. Skips the test when pgbouncer is
    not installed."""
    exe = binary()
    if exe is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    run_as = _run_as(pg_server)
    home = Path(tempfile.mkdtemp(prefix="fl-pgbouncer-"))
    home.chmod(0o777)
    password = f" password={pg_server.password}" if pg_server.password else ""
    (home / "users.txt").write_text(f'"{pg_server.user}" ""\n')
    (home / "pgbouncer.ini").write_text(
        f"[databases]\n* = host={pg_server.host} port={pg_server.port}{password}\n"
        "[pgbouncer]\nlisten_addr =\n"
        f"unix_socket_dir = {home}\nlisten_port = {PORT}\n"
        f"auth_type = trust\nauth_file = {home}/users.txt\n"
        f"pool_mode = {pool_mode}\ndefault_pool_size = {pool_size}\n"
        "max_client_conn = 500\n"
        # Round-robin reuse of server connections: consecutive transactions of one client
        # land on different server connections, as they do under load.
        "server_round_robin = 1\n"
        f"logfile = {home}/pgbouncer.log\n{settings}\n"
    )
    for name in ("pgbouncer.ini", "users.txt"):
        (home / name).chmod(0o644)
    proc = subprocess.Popen([exe, "-q", *run_as, str(home / "pgbouncer.ini")])
    try:
        deadline = time.monotonic() + 10
        while not (home / f".s.PGSQL.{PORT}").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                log = home / "pgbouncer.log"
                raise AssertionError(
                    "pgbouncer did not start: " + (log.read_text() if log.exists() else "")
                )
            time.sleep(0.05)
        user = quote(pg_server.user, safe="")
        yield f"postgresql://{user}@/{dbname}?host={quote(str(home), safe='/')}&port={PORT}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)


def dbname_of(url: str) -> str:
    """The database name of a test URL (`postgresql://user@/NAME?host=...`)."""
    return url.split("@/", 1)[1].split("?", 1)[0]
