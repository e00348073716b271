"""pytest fixtures for services built on flowledger: a server, a migrated template, a
fresh database per test, a connected `Database`, an `AsyncDatabase` opener, factories.

`pip install flowledger[testing]` registers this module as the `flowledger` pytest plugin
(the `pytest11` entry point). It adds no hook that changes collection and no autouse
fixture: nothing here starts a server or connects anywhere until a test requests one of
its fixtures, all named `flowledger_*`.

The server is the one given with pytest-postgresql's own command-line options
`--postgresql-host`, `-port`, `-user` and `-password` (its ini settings configure its own
fixtures), else the embedded PostgreSQL kept under the `flowledger_home` ini option
(relative to the ini file), else `$FLOWLEDGER_HOME`, else `.flowledger/test` under the
rootdir; it is started if needed and left running for the next run.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

import flowledger
from flowledger.errors import connection_error, translating
from flowledger.records.identity import NewUser, User
from flowledger.records.runs import Execution
from flowledger.records.workflows import NewStage, NewWorkflow, Workflow
from flowledger.tools.devserver import EmbeddedServer
from flowledger.tools.migrate import Migrator

HOME_INI = "flowledger_home"
# A test database needs few connections; a small pool keeps many clones within the
# server's max_connections, and one connect attempt makes a bad URL fail at once.
POOL_SETTINGS: dict[str, Any] = {"min_size": 1, "max_size": 4, "connect_attempts": 1}
_names = itertools.count()
_WITH_HOST = ("port", "user", "password")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        HOME_INI,
        "directory of the embedded PostgreSQL of the flowledger_* fixtures (default: "
        "$FLOWLEDGER_HOME, else .flowledger/test under the rootdir)",
        default="",
    )


@dataclass(frozen=True)
class FlowledgerServer:
    """The PostgreSQL server the fixtures make their databases on, and how to log in."""

    host: str
    port: int
    user: str
    password: str | None = field(repr=False)
    embedded: bool

    def url(self, dbname: str) -> str:
        """A libpq URL of database `dbname` of this server."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        host = quote(self.host, safe="/")
        return f"postgresql://{auth}@/{quote(dbname, safe='')}?host={host}&port={self.port}"


def _option(config: pytest.Config, name: str) -> str | None:
    # pytest-postgresql registers these options; without it they do not exist (None).
    value = config.getoption(f"postgresql_{name}", default=None)
    return str(value) if value else None


def embedded_home(config: pytest.Config) -> Path:
    """Where the fixtures keep the embedded server: the ini option, FLOWLEDGER_HOME, or
    `.flowledger/test` under the rootdir."""
    configured = str(config.getini(HOME_INI))
    if configured:
        base = config.inipath.parent if config.inipath else config.rootpath
        return (base / configured).resolve()
    if os.environ.get("FLOWLEDGER_HOME"):
        return Path(os.environ["FLOWLEDGER_HOME"]).resolve()
    return config.rootpath / ".flowledger" / "test"


@pytest.fixture(scope="session")
def flowledger_server(pytestconfig: pytest.Config) -> FlowledgerServer:
    """The server of this run: `--postgresql-host` etc. when given, else the embedded one
    (started if needed); raises InvalidInput for a bad port or for a port, user or password
    without a host, Unavailable when the embedded server cannot start."""
    host = _option(pytestconfig, "host")
    if host:
        port = _option(pytestconfig, "port") or "5432"
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise flowledger.InvalidInput(f"--postgresql-port must be a port number, not {port!r}")
        user = _option(pytestconfig, "user") or "postgres"
        password = _option(pytestconfig, "password")
        return FlowledgerServer(host, int(port), user, password, False)
    stray = [f"--postgresql-{name}" for name in _WITH_HOST if _option(pytestconfig, name)]
    if stray:
        raise flowledger.InvalidInput(f"{', '.join(stray)} given without --postgresql-host")
    server = EmbeddedServer(embedded_home(pytestconfig))
    server.ensure_running()
    socket_dir = server.status().socket_dir
    if socket_dir is None:
        raise flowledger.Unavailable(f"the embedded PostgreSQL in {server.pgdata} has no socket")
    return FlowledgerServer(str(socket_dir), 5432, "postgres", None, True)


@pytest.fixture(scope="session")
def _flowledger_admin(
    flowledger_server: FlowledgerServer,
) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    url = flowledger_server.url("postgres")
    error = None
    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        error = connection_error(exc, url)  # not chained: libpq's text may hold the password
    if error is not None:
        raise error
    with conn:
        yield conn


def _create(admin: psycopg.Connection[tuple[Any, ...]], name: str, template: str = "") -> None:
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        # From PostgreSQL 15 on, a file copy is about twice as fast as writing the
        # template through the WAL (the default strategy).
        if admin.info.server_version >= 150000:
            query += sql.SQL(" STRATEGY FILE_COPY")
    with translating({"database": name}):
        admin.execute(query)


def _drop(admin: psycopg.Connection[tuple[Any, ...]], name: str) -> None:
    # FORCE: a connection the test left open must not keep its database alive.
    with translating({"database": name}):
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def flowledger_template(
    flowledger_server: FlowledgerServer, _flowledger_admin: psycopg.Connection[tuple[Any, ...]]
) -> Iterator[str]:
    """Name of a database migrated once (flowledger's migrations) that every test's
    database is cloned from; dropped at the end of the session."""
    name = f"flowledger_template_{os.getpid()}_{next(_names)}"
    _create(_flowledger_admin, name)
    try:
        with Migrator(flowledger_server.url(name)) as migrator:
            migrator.apply()
        yield name
    finally:
        _drop(_flowledger_admin, name)


@pytest.fixture
def flowledger_url(
    flowledger_server: FlowledgerServer,
    flowledger_template: str,
    _flowledger_admin: psycopg.Connection[tuple[Any, ...]],
) -> Iterator[str]:
    """URL of a fresh, fully migrated, empty database of this test's own, dropped after."""
    name = f"flowledger_test_{os.getpid()}_{next(_names)}"
    _create(_flowledger_admin, name, flowledger_template)
    try:
        yield flowledger_server.url(name)
    finally:
        _drop(_flowledger_admin, name)


@pytest.fixture
def flowledger_db(flowledger_url: str) -> Iterator[flowledger.Database]:
    """A `Database` (a pool of up to 4) on this test's database, closed after the test."""
    with flowledger.connect(flowledger_url, **POOL_SETTINGS) as db:
        yield db


AsyncOpener = Callable[..., AbstractAsyncContextManager[flowledger.AsyncDatabase]]


@pytest.fixture
def flowledger_async_db(flowledger_url: str) -> AsyncOpener:
    """An opener: `async with flowledger_async_db(**settings) as db:` gives an
    `AsyncDatabase` on this test's database, closed when the block ends.

    A sync fixture, so it works alike under pytest-asyncio, anyio or a test that runs its
    own loop: the pool is opened inside the test's coroutine, on the loop that runs it,
    which an async fixture (whose loop each of those plugins chooses differently) cannot
    promise."""

    @asynccontextmanager
    async def open_db(**settings: Any) -> AsyncIterator[flowledger.AsyncDatabase]:
        db = await flowledger.connect_async(flowledger_url, **{**POOL_SETTINGS, **settings})
        async with db:
            yield db

    return open_db


class FlowledgerFactories:
    """Users, workflows with stages and started executions, made through the public API of
    one `Database`; each call makes a new one with unique names."""

    def __init__(self, db: flowledger.Database) -> None:
        self.db = db
        self._n = itertools.count(1)

    def user(self, **fields: Any) -> User:
        """A new user (`fields` override NewUser's); raises Conflict, InvalidInput."""
        n = next(self._n)
        fields.setdefault("email", f"user-{n}@example.com")
        fields.setdefault("display_name", f"User {n}")
        return self.db.users.create(user=NewUser(**fields))

    def workflow(
        self,
        *,
        owner: User | None = None,
        stages: Sequence[str | NewStage] = ("extract", "load"),
        **fields: Any,
    ) -> Workflow:
        """A new workflow of `owner` (a new user if None) with `stages` (names run in order
        by the `core.noop` action, or NewStage), as re-read after the stages were added;
        `fields` override NewWorkflow's; raises Conflict, InvalidInput."""
        owner = owner or self.user()
        fields.setdefault("name", f"workflow-{next(self._n)}")
        workflow = self.db.workflows.create(workflow=NewWorkflow(owner_id=owner.id, **fields))
        for stage in stages:
            new = (
                stage
                if isinstance(stage, NewStage)
                else NewStage(name=stage, action_ref="core.noop")
            )
            self.db.stages.add(workflow_id=workflow.id, stage=new)
        return self.db.workflows.get(id=workflow.id)

    def execution(self, *, workflow: Workflow | None = None, **arguments: Any) -> Execution:
        """A started execution of `workflow` (a new one if None); `arguments` go to
        `executions.start` (parameters, idempotency_key...); raises InvalidInput."""
        workflow = workflow or self.workflow()
        return self.db.executions.start(workflow_id=workflow.id, **arguments)


@pytest.fixture
def flowledger_factories(flowledger_db: flowledger.Database) -> FlowledgerFactories:
    """Factories of users, workflows with stages and executions on `flowledger_db`."""
    return FlowledgerFactories(flowledger_db)
