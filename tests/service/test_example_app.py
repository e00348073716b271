"""The FastAPI example of README.md, run for real: its lifespan, its request-scoped
transaction (commit on return, rollback on raise), its error statuses and its readiness
endpoint, on this test's own database, through httpx over ASGI."""

from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import example_app
import httpx
import psycopg
import pytest
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

import flowledger
from flowledger.records.identity import NewUser

ROOT = Path(__file__).resolve().parents[2]
SETTINGS: dict[str, Any] = {"min_size": 1, "max_size": 4, "connect_attempts": 1}


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n### {title}\n")
    end = re.compile(r"\n##+ ").search(text, start + 1)
    return text[start : end.start() if end else len(text)]


def _python_blocks(section: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` with its lifespan running (startup before, shutdown after)."""
    async with app.router.lifespan_context(app):
        # Unhandled errors become the 500 a server would send, not exceptions in the test.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


def _emails(db_url: str) -> list[str]:
    with psycopg.connect(db_url) as conn:
        return [row[0] for row in conn.execute("SELECT email FROM users ORDER BY email")]


def _backends(db_url: str) -> int:
    """The app's connections to this database (the pool's application_name; not this
    one, and not an autovacuum worker that happens to visit the database)."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend' AND application_name = 'flowledger'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _all_closed(db_url: str) -> bool:
    """Whether every other connection to this database is gone (a closed client's
    backend leaves pg_stat_activity a moment after the client hung up)."""
    deadline = time.monotonic() + 5
    while _backends(db_url) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _backends(db_url) == 0


def test_readme_shows_the_example_app_as_it_is() -> None:
    blocks = _python_blocks(_readme_section("Async services"))
    shown = [block for block in blocks if "FastAPI(" in block]
    assert len(shown) == 1, "README.md's Async services should show one FastAPI example"
    assert shown[0] == Path(example_app.__file__).read_text()


def test_readme_async_example_runs(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = _python_blocks(_readme_section("Async services"))
    (example,) = [block for block in blocks if "FastAPI(" not in block]
    monkeypatch.setenv("FLOWLEDGER_URL", db_url)
    exec(compile(example, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "ada@example.com" in out
    assert "{'postgres': 'ok'}" in out
    assert _emails(db_url) == ["ada@example.com"]
    assert _all_closed(db_url)


def test_create_then_read_a_user(db_url: str) -> None:
    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with serving(example_app.create_app(db_url, **SETTINGS)) as client:
            created = await client.post(
                "/users", json={"email": "ada@example.com", "display_name": "Ada"}
            )
            read = await client.get(f"/users/{created.json()['id']}")
            return created, read

    created, read = asyncio.run(scenario())
    assert created.status_code == 201
    assert created.headers["content-type"] == "application/json"
    user = created.json()
    assert user["email"] == "ada@example.com"
    assert user["display_name"] == "Ada"
    assert user["role"] == "developer"
    assert user["is_active"] is True
    assert uuid.UUID(user["id"])
    assert read.status_code == 200
    assert read.json() == user
    assert _emails(db_url) == ["ada@example.com"]


def test_error_statuses(db_url: str) -> None:
    async def scenario() -> list[httpx.Response]:
        async with serving(example_app.create_app(db_url, **SETTINGS)) as client:
            ada = {"email": "ada@example.com", "display_name": "Ada"}
            return [
                await client.get(f"/users/{uuid.uuid4()}"),
                await client.get("/users/not-a-uuid"),
                await client.post("/users", json=ada),
                await client.post("/users", json={**ada, "email": "ADA@example.com"}),
                await client.post("/users", json={**ada, "email": "no at sign"}),
            ]

    unknown, malformed, _, taken, invalid = asyncio.run(scenario())
    assert unknown.status_code == 404
    assert "not found" in unknown.json()["detail"]
    assert malformed.status_code == 422
    assert "user id" in malformed.json()["detail"]
    assert taken.status_code == 409
    assert invalid.status_code == 422
    assert "email" in invalid.json()["detail"]
    assert _emails(db_url) == ["ada@example.com"]


@pytest.mark.parametrize(
    ("second", "status"),
    [("ada@example.com", 409), ("ADA@EXAMPLE.COM", 409), ("not an email", 422)],
)
def test_a_request_that_raises_after_writing_writes_nothing(
    db_url: str, second: str, status: int
) -> None:
    batch = [
        {"email": "bob@example.com", "display_name": "Bob"},
        {"email": second, "display_name": "Second"},
    ]

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with serving(example_app.create_app(db_url, **SETTINGS)) as client:
            first = await client.post(
                "/users", json={"email": "ada@example.com", "display_name": "Ada"}
            )
            # bob is inserted, then the second user raises: the whole request rolls back.
            return first, await client.post("/users/batch", json=batch)

    first, failed = asyncio.run(scenario())
    assert first.status_code == 201
    assert failed.status_code == status
    assert _emails(db_url) == ["ada@example.com"]


def test_any_exception_rolls_back_the_request_and_answers_500(db_url: str) -> None:
    app = example_app.create_app(db_url, **SETTINGS)

    async def write_then_fail(tx: example_app.Tx) -> None:
        await tx.users.create(user=NewUser(email="bob@example.com", display_name="Bob"))
        raise RuntimeError("a bug after the write")

    app.add_api_route("/bug", write_then_fail, methods=["POST"])

    async def scenario() -> httpx.Response:
        async with serving(app) as client:
            return await client.post("/bug")

    response = asyncio.run(scenario())
    assert response.status_code == 500
    assert "a bug" not in response.text
    assert _emails(db_url) == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (flowledger.NotFound, 404),
        (flowledger.Conflict, 409),
        (flowledger.LeaseLost, 409),
        (flowledger.StaleWrite, 409),
        (flowledger.InvalidInput, 422),
        (flowledger.InvalidCursor, 422),
        (flowledger.Unavailable, 503),
        (flowledger.Retryable, 503),
        (flowledger.ConnectionRejected, 500),
        (flowledger.DatabaseNotConfigured, 500),
    ],
)
def test_each_flowledger_error_has_its_status(
    db_url: str,
    error: type[flowledger.FlowledgerError],
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = example_app.create_app(db_url, **SETTINGS)

    async def fail(tx: example_app.Tx) -> None:
        await tx.users.create(user=NewUser(email="bob@example.com", display_name="Bob"))
        raise error("what went wrong")

    app.add_api_route("/fail", fail, methods=["POST"])

    async def scenario() -> httpx.Response:
        async with serving(app) as client:
            return await client.post("/fail")

    response = asyncio.run(scenario())
    assert response.status_code == status
    detail = "internal error" if status == 500 else "what went wrong"
    assert response.json() == {"detail": detail}
    # A 500 hides the message from the client; the log keeps it, with the request.
    logged = [r for r in caplog.records if r.name == "example_app"]
    if status == 500:
        assert [r.getMessage() for r in logged] == ["POST /fail failed"]
        assert logged[0].exc_info is not None
        assert str(logged[0].exc_info[1]) == "what went wrong"
    else:
        assert logged == []
    assert _emails(db_url) == []


def test_the_module_app_uses_flowledger_url(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWLEDGER_URL", db_url)

    async def scenario() -> httpx.Response:
        async with serving(example_app.app) as client:
            return await client.post(
                "/users", json={"email": "ada@example.com", "display_name": "Ada"}
            )

    assert asyncio.run(scenario()).status_code == 201
    assert _emails(db_url) == ["ada@example.com"]
    assert _all_closed(db_url)


def test_a_batch_that_succeeds_commits_every_user(db_url: str) -> None:
    batch = [
        {"email": "bob@example.com", "display_name": "Bob"},
        {"email": "eve@example.com", "display_name": "Eve"},
    ]

    async def scenario() -> httpx.Response:
        async with serving(example_app.create_app(db_url, **SETTINGS)) as client:
            return await client.post("/users/batch", json=batch)

    response = asyncio.run(scenario())
    assert response.status_code == 201
    assert [u["email"] for u in response.json()] == ["bob@example.com", "eve@example.com"]
    assert _emails(db_url) == ["bob@example.com", "eve@example.com"]


def test_the_write_is_committed_before_the_response_starts(db_url: str) -> None:
    app = example_app.create_app(db_url, **SETTINGS)
    seen_at_response_start: list[list[str]] = []

    async def watched(scope: Scope, receive: Receive, send: Send) -> None:
        async def watching_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                async with await psycopg.AsyncConnection.connect(db_url) as conn:
                    cur = await conn.execute("SELECT email FROM users")
                    seen_at_response_start.append([row[0] for row in await cur.fetchall()])
            await send(message)

        await app(scope, receive, watching_send)

    async def scenario() -> httpx.Response:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=watched)
            async with httpx.AsyncClient(transport=transport, base_url="http://service") as c:
                return await c.post(
                    "/users", json={"email": "ada@example.com", "display_name": "Ada"}
                )

    assert asyncio.run(scenario()).status_code == 201
    assert seen_at_response_start == [["ada@example.com"]]


def test_the_lifespan_closes_the_database(db_url: str) -> None:
    app = example_app.create_app(db_url, **SETTINGS)

    async def scenario() -> int:
        async with serving(app) as client:
            assert (await client.get("/ready")).status_code == 200
            return _backends(db_url)

    assert asyncio.run(scenario()) >= 1
    assert _all_closed(db_url)


def test_readiness_follows_the_database(db_url: str) -> None:
    dbname = str(psycopg.conninfo.conninfo_to_dict(db_url)["dbname"])
    admin_url = db_url.replace(f"/{dbname}?", "/postgres?")

    def set_allow_connections(allow: bool) -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                psycopg.sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                    psycopg.sql.Identifier(dbname), psycopg.sql.Literal(allow)
                )
            )
            if not allow:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    [dbname],
                )

    async def scenario() -> tuple[httpx.Response, ...]:
        app = example_app.create_app(db_url, **SETTINGS, pool_timeout=1.0)
        async with serving(app) as client:
            up = await client.get("/ready")
            set_allow_connections(False)
            try:
                down = await client.get("/ready")
                lookup = await client.get(f"/users/{uuid.uuid4()}")
            finally:
                set_allow_connections(True)
            deadline = time.monotonic() + 20
            back = await client.get("/ready")
            while back.status_code != 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                back = await client.get("/ready")
            return up, down, lookup, back

    up, down, lookup, back = asyncio.run(scenario())
    assert (up.status_code, up.json()) == (200, {"postgres": "ok"})
    assert down.status_code == 503
    assert list(down.json()) == ["postgres"]
    assert down.json()["postgres"].startswith("error: "), down.json()
    assert lookup.status_code == 503
    assert lookup.json()["detail"]
    assert (back.status_code, back.json()) == (200, {"postgres": "ok"})


def test_a_database_that_is_down_at_startup_stops_the_app_from_starting() -> None:
    with socket.socket() as sock:  # a port nothing listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://app:secret@127.0.0.1:{port}/flowledger"
    app = example_app.create_app(url, **SETTINGS)

    async def scenario() -> None:
        async with serving(app):
            pass

    with pytest.raises(flowledger.Unavailable) as raised:
        asyncio.run(scenario())
    assert "secret" not in str(raised.value)
