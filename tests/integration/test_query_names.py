"""The name comment of every query, seen by the server: pg_stat_statements (which needs
shared_preload_libraries, so these tests start a private PostgreSQL 15 of their own),
pg_stat_activity and pg_prepared_statements."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import flowledger
from flowledger.otel import instrument
from flowledger.records.identity import NewUser
from flowledger.tools.migrate import Migrator

pytestmark = pytest.mark.slow

PG15 = Path("/usr/lib/postgresql/15/bin")


def _pg(*argv: str) -> None:
    # The server refuses to run as root; CI's machines run the tests as root.
    command = ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)
    subprocess.run(command, check=True, capture_output=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Private:
    """The private server's database URL and its log file."""

    url: str
    log: Path


@pytest.fixture(scope="module")
def private() -> Iterator[Private]:
    """A migrated database on a private PostgreSQL 15 with pg_stat_statements loaded,
    over TCP; the server and its directory are removed afterwards."""
    if not (PG15 / "postgres").exists():
        pytest.skip(f"needs PostgreSQL 15 in {PG15} (Debian's postgresql-15)")
    root = Path(tempfile.mkdtemp(prefix="flowledger-pgss-"))
    data, port, pg_ctl = root / "data", _free_port(), str(PG15 / "pg_ctl")
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        " -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
        " -c log_min_duration_statement=0"
    )
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        _pg(str(PG15 / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
        _pg(pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o", options, "start")
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        with Migrator(url) as migrator:
            migrator.apply()
        yield Private(url, root / "log")
    finally:
        if (data / "postmaster.pid").exists():
            _pg(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root)


def _statements(conn: psycopg.Connection[Any], name: str) -> list[tuple[str, int]]:
    rows = conn.execute(
        "SELECT query, calls::int FROM pg_stat_statements WHERE query LIKE %s",
        [f"%flowledger:{name} */%"],
    ).fetchall()
    return [(str(q), int(c)) for q, c in rows]


def test_pg_stat_statements_groups_calls_under_the_name(private: Private) -> None:
    with (
        psycopg.connect(private.url, autocommit=True) as observer,
        flowledger.connect(private.url, prepare_threshold=None) as db,
    ):
        first = db.users.create(user=NewUser(email="one@example.com", display_name="One"))
        second = db.users.create(user=NewUser(email="two@example.com", display_name="Two"))
        observer.execute("SELECT pg_stat_statements_reset()")
        db.users.get(id=first.id)
        db.users.get(id=second.id)
        [(text, calls)] = _statements(observer, "get_user_by_id")
        assert text.startswith("/* flowledger:get_user_by_id */ SELECT ")
        assert calls == 2
        assert "one@example.com" not in text and str(first.id) not in text
    # The server log's statement lines (log_min_duration_statement) carry the name too.
    logged = private.log.read_text()
    assert re.search(
        r"(execute [^:]+|statement): /\* flowledger:get_user_by_id \*/ SELECT ", logged
    )


def test_pg_stat_activity_names_the_running_query(private: Private) -> None:
    with (
        psycopg.connect(private.url, autocommit=True) as observer,
        psycopg.connect(private.url) as locker,
        flowledger.connect(private.url) as db,
    ):
        user = db.users.create(user=NewUser(email="wait@example.com", display_name="Wait"))
        locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        waiter = threading.Thread(target=db.users.get, kwargs={"id": user.id})
        waiter.start()
        try:
            running: list[Any] = []
            deadline = time.monotonic() + 10
            while not running and time.monotonic() < deadline:
                running = observer.execute(
                    "SELECT query FROM pg_stat_activity"
                    " WHERE state = 'active' AND wait_event_type = 'Lock'"
                ).fetchall()
                time.sleep(0.05)
        finally:
            locker.rollback()
            waiter.join(timeout=10)
        assert [str(r[0]).split(" SELECT")[0] for r in running] == [
            "/* flowledger:get_user_by_id */"
        ]


def test_prepared_statements_keep_the_name(private: Private) -> None:
    with flowledger.connect(private.url, prepare_threshold=2) as db:
        user = db.users.create(user=NewUser(email="prep@example.com", display_name="Prep"))
        with db.pinned() as pinned:
            for _ in range(4):
                assert pinned.users.get(id=user.id).id == user.id
            with pytest.raises(flowledger.NotFound):
                pinned.users.get(id=uuid.uuid4())
            prepared = pinned.connection.execute(
                "SELECT statement FROM pg_prepared_statements WHERE NOT from_sql"
            ).fetchall()
    statements = [str(r[0]) for r in prepared]
    assert any(s.startswith("/* flowledger:get_user_by_id */ SELECT ") for s in statements), (
        statements
    )


def test_spans_name_the_peer_over_tcp(private: Private) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with flowledger.connect(private.url) as db:
        instrument(db, tracer_provider=provider)
        db.users.list()
    [span] = [s for s in exporter.get_finished_spans() if s.name == "flowledger list_users"]
    attributes = dict(span.attributes or {})
    assert attributes["net.peer.name"] == "127.0.0.1"
    assert attributes["net.peer.port"] == int(private.url.split(":")[2].split("/")[0])
    assert attributes["db.name"] == "postgres"
