"""Database fixtures: a real PostgreSQL for every test that needs one.

By default the tests run on the embedded server (data under `.flowledger/test/`). Give
`--postgresql-host` (and `--postgresql-port/-user/-password`, all from pytest-postgresql)
or set `FLOWLEDGER_TEST_PGHOST` (`_PGPORT`, `_PGUSER`, `_PGPASSWORD`) to use any server
instead. Migrations are applied once into a template database; each test gets its own
clone of it (pytest-postgresql's DatabaseJanitor), so tests are isolated and fast.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from _faces import blocking, run
from _standby import Standby
from flowledger.aio.database import connect_async
from flowledger.database import Database, connect
from flowledger.tools.devserver import EmbeddedServer
from flowledger.tools.migrate import Migrator

ROOT = Path(__file__).resolve().parents[1]
_counter = itertools.count()


@dataclass(frozen=True)
class PgServer:
    """Where the test server is and how to log in."""

    host: str
    port: int
    user: str
    password: str | None
    embedded: bool

    def url(self, dbname: str) -> str:
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@/{dbname}?host={quote(self.host, safe='/')}&port={self.port}"

    def janitor(
        self, dbname: str, template: str | None = None, *, as_template: bool = False
    ) -> DatabaseJanitor:
        return DatabaseJanitor(
            user=self.user,
            host=self.host,
            port=self.port,
            password=self.password,
            dbname=dbname,
            template_dbname=template,
            as_template=as_template,
        )


def _option(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(f"postgresql_{name}", default=None)
    return str(value) if value else os.environ.get(f"FLOWLEDGER_TEST_PG{name.upper()}") or None


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> PgServer:
    """The server under test: the one given on the command line, else the embedded one."""
    host = _option(request.config, "host")
    if host:
        return PgServer(
            host=host,
            port=int(_option(request.config, "port") or 5432),
            user=_option(request.config, "user") or "postgres",
            password=_option(request.config, "password"),
            embedded=False,
        )
    server = EmbeddedServer(ROOT / ".flowledger" / "test")
    server.ensure_running()
    status = server.status()
    assert status.socket_dir is not None
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        # A throwaway test cluster: durability buys nothing here and costs seconds.
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")
    return PgServer(str(status.socket_dir), 5432, "postgres", None, embedded=True)


@pytest.fixture(scope="session")
def migrated_template(pg_server: PgServer) -> Iterator[str]:
    """Name of a template database holding the fully migrated schema."""
    name = f"fl_template_{os.getpid()}"
    janitor = pg_server.janitor(name, as_template=True)
    janitor.drop()
    janitor.init()
    try:
        with Migrator(pg_server.url(name)) as mig:
            mig.apply()
        yield name
    finally:
        janitor.drop()


class _Clone:
    """One clone handed to a test; `drop()` leaves the DROP to the cloning thread."""

    def __init__(self, clones: _Clones, name: str) -> None:
        self._clones = clones
        self.name = name

    def drop(self) -> None:
        self._clones.discard(self.name)


class _Clones:
    """Clones of the template made ahead, and dropped after use, in a thread, while other
    tests run: cloning (server-side I/O) is most of a database test's time. From
    PostgreSQL 15 on, a clone is a file copy (STRATEGY FILE_COPY): about twice as fast as
    the default, which writes the whole template through the WAL."""

    def __init__(self, server: PgServer, template: str, ahead: int = 2) -> None:
        self._server = server
        self._template = template
        self._ready: queue.Queue[str | BaseException] = queue.Queue(ahead)
        self._doomed: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._admin = psycopg.connect(server.url("postgres"), autocommit=True)
        self._strategy = " STRATEGY FILE_COPY" if self._admin.info.server_version >= 150000 else ""
        self._thread = threading.Thread(target=self._fill, name="template-clones", daemon=True)
        self._thread.start()

    def _drop_doomed(self) -> None:
        while True:
            try:
                name = self._doomed.get_nowait()
            except queue.Empty:
                return
            self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _fill(self) -> None:
        while not self._stop.is_set():
            name = f"fl_test_{os.getpid()}_{next(_counter)}"
            try:
                self._drop_doomed()
                self._admin.execute(
                    f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"{self._strategy}'
                )
            except BaseException as exc:  # handed to the test that takes it
                self._ready.put(exc)
                return
            while not self._stop.is_set():
                try:
                    self._ready.put(name, timeout=0.2)
                    break
                except queue.Full:
                    self._drop_doomed()
            else:
                self._doomed.put(name)

    def take(self) -> tuple[str, _Clone]:
        item = self._ready.get(timeout=300)
        if isinstance(item, BaseException):
            raise item
        return item, _Clone(self, item)

    def discard(self, name: str) -> None:
        self._doomed.put(name)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        while not self._ready.empty():
            item = self._ready.get_nowait()
            if not isinstance(item, BaseException):
                self._doomed.put(item)
        self._drop_doomed()
        self._admin.close()


@pytest.fixture(scope="session")
def _clones(pg_server: PgServer, migrated_template: str) -> Iterator[_Clones]:
    clones = _Clones(pg_server, migrated_template)
    yield clones
    clones.close()


@pytest.fixture
def db_url(pg_server: PgServer, _clones: _Clones) -> Iterator[str]:
    """URL of a fresh, fully migrated, empty database of this test's own."""
    name, clone = _clones.take()
    try:
        yield pg_server.url(name)
    finally:
        clone.drop()


@pytest.fixture
def empty_db_url(pg_server: PgServer) -> Iterator[str]:
    """URL of a fresh database with no schema at all (for migration tests)."""
    name = f"fl_empty_{os.getpid()}_{next(_counter)}"
    with pg_server.janitor(name):
        yield pg_server.url(name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """An autocommit connection to this test's migrated database."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sync_face: tests of sync-only code (worker, tools): `db` is only sync"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test taking `db` (or `replica_db`) runs on both faces, unless it tests
    # sync-only code.
    if "db" in metafunc.fixturenames or "replica_dbs" in metafunc.fixturenames:
        only_sync = metafunc.definition.get_closest_marker("sync_face") is not None
        metafunc.parametrize("face", ["sync"] if only_sync else ["sync", "async"])


@pytest.fixture
def db(db_url: str, face: str) -> Iterator[Database]:
    """A flowledger database (pool of up to 8) on this test's migrated database: the sync
    `Database`, or (face "async") an `AsyncDatabase` behind a blocking view of it."""
    settings: dict[str, Any] = {"min_size": 1, "max_size": 8, "connect_attempts": 1}
    if face == "sync":
        with connect(db_url, **settings) as database:
            yield database
        return
    adb = run(connect_async(db_url, **settings))
    try:
        yield blocking(adb, Database)
    finally:
        run(adb.close())


@pytest.fixture(scope="module")
def standby(pg_server: PgServer) -> Iterator[Standby]:
    """A hot standby of the test server streaming from it (`pg_basebackup -R`, on a free
    port in a temporary directory), stopped and removed after the module's tests: it
    replays nothing of the rest of the run."""
    node = Standby(pg_server.url("postgres"), pg_server.user, pg_server.password)
    try:
        node.create()
        node.start()
        yield node
    finally:
        node.remove()


class ReplicaDatabases:
    """Opens databases on this test's database with `replica_url` on the standby, on this
    test's face: `with replica_dbs.open(**settings) as db:`."""

    def __init__(self, url: str, replica_url: str, face: str) -> None:
        self.url = url
        self.replica_url = replica_url
        self.face = face

    @contextmanager
    def open(self, **settings: Any) -> Iterator[Database]:
        settings = {
            "min_size": 1,
            "max_size": 4,
            "connect_attempts": 1,
            "replica_url": self.replica_url,
            **settings,
        }
        if self.face == "sync":
            with connect(self.url, **settings) as database:
                yield database
            return
        adb = run(connect_async(self.url, **settings))
        try:
            yield blocking(adb, Database)
        finally:
            run(adb.close())


@pytest.fixture
def replica_dbs(db_url: str, face: str, standby: Standby) -> ReplicaDatabases:
    """An opener of databases with this test's database on the standby as `db.replica`
    (the clone replayed there first)."""
    standby.catch_up()
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    return ReplicaDatabases(db_url, standby.url(str(dbname)), face)


@pytest.fixture
def replica_db(replica_dbs: ReplicaDatabases) -> Iterator[Database]:
    """A database (this test's face) whose `replica` is this test's database on the standby."""
    with replica_dbs.open() as database:
        yield database
