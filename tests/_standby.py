"""A real streaming standby of the test server, for the read-replica tests.

`pg_basebackup -R` copies the running test server (the embedded one, or the one given
with --postgresql-host) into a temporary directory, and that copy is started as a hot
standby streaming from it: on a free port, listening on a Unix socket in the same
directory only. It uses the primary's own binaries (the directory of the running
`postgres` executable, so the versions always match) and runs as the primary's OS user
(through runuser when the tests run as root: PostgreSQL refuses to run as root). It is
stopped and its directory removed at the end, also when a test fails.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import psycopg

from flowledger.replica import lsn_of

# How long the standby may take to replay a position the tests wait for.
REPLAY_TIMEOUT = 60.0
_SLOT_PREFIX = "flowledger_test_standby_"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Standby:
    """A hot standby streaming from the primary at `primary_url` (a superuser's URL)."""

    def __init__(self, primary_url: str, user: str, password: str | None) -> None:
        self.primary_url = primary_url
        self.user = user
        self.password = password
        with psycopg.connect(primary_url, autocommit=True) as conn:
            # The postmaster (the parent of this connection's backend) runs the server's
            # own executable, as the server's OS user.
            postmaster = psutil.Process(conn.info.backend_pid).parent()
            assert postmaster is not None
            self.bindir = Path(postmaster.exe()).parent
            self.os_user = pwd.getpwuid(postmaster.uids().real).pw_name
        if not (self.bindir / "pg_basebackup").exists():
            raise AssertionError(f"no pg_basebackup beside the server's postgres in {self.bindir}")
        # A physical replication slot keeps the primary's WAL until the standby received
        # it: without one, a standby that falls behind (a loaded machine, WAL switches)
        # finds the segments it needs recycled and stops replaying for good.
        self.slot = f"{_SLOT_PREFIX}{os.getpid()}"
        self.root = Path(tempfile.mkdtemp(prefix="flowledger-standby-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = _free_port()

    def _run(self, argv: Sequence[str]) -> None:
        command = list(argv)
        if os.geteuid() == 0 and self.os_user != "root":
            command = ["runuser", "-u", self.os_user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")

    def _drop_slots(self, pattern: str) -> None:
        # Only inactive slots: a slot of a standby that still runs is not ours to drop.
        with psycopg.connect(self.primary_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name LIKE %s AND NOT active",
                [pattern],
            )

    def create(self) -> None:
        """Copy the primary with pg_basebackup -R (a standby.signal and primary_conninfo)
        and a replication slot of its own."""
        # Slots of earlier runs that ended without their teardown (a killed run) would
        # keep the primary's WAL forever.
        self._drop_slots(f"{_SLOT_PREFIX}%")
        if os.geteuid() == 0:
            shutil.chown(self.root, self.os_user, self.os_user)
        self.root.chmod(0o700)
        # The URL's password, if any, goes into the standby's primary_conninfo too.
        self._run(
            [
                str(self.bindir / "pg_basebackup"),
                "-d",
                self.primary_url,
                "-D",
                str(self.data),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "-C",
                "-S",
                self.slot,
            ]
        )

    def start(self) -> None:
        """Start the standby and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=''"
        log = str(self.root / "log")
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data)]
        self._run([*pg_ctl, "-l", log, "-w", "-t", "120", "-o", options, "start"])

    def stop(self) -> None:
        """Stop the standby (fast shutdown) when it runs."""
        if (self.data / "postmaster.pid").exists():
            pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data)]
            self._run([*pg_ctl, "-m", "fast", "-w", "stop"])

    def promote(self) -> None:
        """Promote the standby: it leaves recovery and becomes a primary of its own."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "promote"])

    def rebuild(self) -> None:
        """Stop it and make it again from the primary (after a promotion)."""
        self.stop()
        shutil.rmtree(self.data)
        self._drop_slots(self.slot)
        self.create()
        self.start()

    def remove(self) -> None:
        """Stop it and remove its directory."""
        try:
            self.stop()
            self._drop_slots(self.slot)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str) -> str:
        """A URL of database `dbname` on the standby (its Unix socket)."""
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"postgresql://{auth}@/{dbname}?host={self.root}&port={self.port}"

    def execute(self, sql: str, dbname: str = "postgres") -> Any:
        """The first column of the first row of `sql` run on the standby."""
        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            row = conn.execute(sql).fetchone()
            return None if row is None else row[0]

    def primary_position(self) -> str:
        """The primary's WAL insert position now."""
        with psycopg.connect(self.primary_url, autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
            assert row is not None
            return str(row[0])

    def catch_up(self) -> None:
        """Wait until the standby replayed everything the primary wrote until now."""
        target = lsn_of(self.primary_position())
        deadline = time.monotonic() + REPLAY_TIMEOUT
        while True:
            replayed = self.execute("SELECT pg_last_wal_replay_lsn()::text")
            if replayed is not None and lsn_of(replayed) >= target:
                return
            if time.monotonic() > deadline:
                log = (self.root / "log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"the standby did not catch up in time; its log:\n{log}")
            time.sleep(0.02)
