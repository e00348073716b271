"""Choosing the database (no silent fallback), refused settings, refused logins, restarts,
and passwords kept out of every message and repr."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowledger
from _embedded import pg_ctl, reachable_dir
from conftest import PgServer
from flowledger.database import Database, settings_from_env
from flowledger.errors import (
    ConnectionRejected,
    DatabaseNotConfigured,
    FlowledgerError,
    InvalidInput,
    Unavailable,
)
from flowledger.records.identity import NewUser
from flowledger.tools.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main
from flowledger.tools.devserver import EmbeddedServer
from flowledger.urls import redact, resolve


@pytest.fixture
def nothing_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No URL in the environment; an embedded server, if one started, would live here."""
    for name in ("FLOWLEDGER_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLOWLEDGER_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


# -- no silent fallback -------------------------------------------------------------------

# For databases that are not migrated (no cursor_key row): a cursor secret of the test's own.
_SECRET = "a-test-cursor-secret-of-32-characters!"


def test_connect_without_a_url_says_what_to_set_and_starts_no_server(
    nothing_configured: Path,
) -> None:
    with pytest.raises(DatabaseNotConfigured) as info:
        flowledger.connect()
    message = str(info.value)
    assert "FLOWLEDGER_URL" in message and "DATABASE_URL" in message
    assert "embedded=True" in message
    assert isinstance(info.value, FlowledgerError)
    assert not nothing_configured.exists()
    assert not (nothing_configured.parent / ".flowledger").exists()


def test_a_mistyped_variable_is_no_database(
    nothing_configured: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABSE_URL", "postgresql://u@127.0.0.1:1/db")
    with pytest.raises(DatabaseNotConfigured):
        flowledger.connect()
    assert not nothing_configured.exists()


def test_embedded_true_uses_the_embedded_server(
    pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pg_server.embedded:
        pytest.skip("the embedded test server is not the one under test")
    home = Path(__file__).resolve().parents[2] / ".flowledger" / "test"
    monkeypatch.setenv("FLOWLEDGER_HOME", str(home))
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:1/db")  # explicit wins
    # The embedded server's default database is not migrated: a secret of its own stands
    # in for the database's cursor key.
    with flowledger.connect(embedded=True, min_size=1, max_size=1, cursor_secret=_SECRET) as db:
        assert db.health() == {"postgres": "ok"}
        # The embedded server of FLOWLEDGER_HOME, on its private socket directory.
        assert db.url == EmbeddedServer(home).url()
    with pytest.raises(InvalidInput, match="either url or embedded=True"):
        flowledger.connect("postgresql://u@127.0.0.1:1/db", embedded=True)


def test_url_order_explicit_then_flowledger_url_then_database_url() -> None:
    env = {"FLOWLEDGER_URL": "postgresql://a@h/one", "DATABASE_URL": "postgresql://a@h/two"}
    assert settings_from_env(env).url == "postgresql://a@h/one"
    assert settings_from_env(env, url="postgresql://a@h/zero").url == "postgresql://a@h/zero"
    assert settings_from_env({**env, "FLOWLEDGER_URL": ""}).url == "postgresql://a@h/two"
    assert settings_from_env({}).url is None
    resolved = resolve(None, environ={"DATABASE_URL": "postgresql://a:pw@h/two"})
    assert resolved is not None and resolved.source == "DATABASE_URL"
    assert "pw" not in repr(resolved)


def test_unknown_settings_are_refused_by_name(db_url: str) -> None:
    with pytest.raises(InvalidInput, match=r"unknown setting 'max_sise' \(did you mean max_size"):
        flowledger.connect(db_url, max_sise=4)
    with pytest.raises(InvalidInput, match="FLOWLEDGER_MAX_SISE"):
        settings_from_env({"FLOWLEDGER_MAX_SISE": "4"})
    with pytest.raises(InvalidInput, match="FLOWLEDGER_POOL_TIMEOUT"):
        settings_from_env({"FLOWLEDGER_POOL_TIMEOUT": "soon"})
    with pytest.raises(InvalidInput, match="invalid value for setting 'cursor_secret'") as info:
        settings_from_env({}, cursor_secret=["s3cret-value"])
    assert "s3cret-value" not in str(info.value)
    # Not settings, but flowledger's own: the embedded server's home, the test suite's.
    home = {"FLOWLEDGER_HOME": "/x", "FLOWLEDGER_TEST_PGHOST": "h"}
    assert settings_from_env(home).max_size == 10


# -- the CLI ------------------------------------------------------------------------------


def test_migrate_needs_a_database_or_embedded(
    nothing_configured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "apply"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "--database" in err and "FLOWLEDGER_URL" in err and "--embedded" in err
    assert not nothing_configured.exists(), "no server may start without --embedded"
    with pytest.raises(SystemExit) as usage:
        main(["migrate", "apply", "--embedded", "--database", "postgresql://u@h/db"])
    assert usage.value.code == EXIT_USAGE


def test_cli_reads_flowledger_url_before_database_url(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWLEDGER_URL", db_url)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:1/unreachable")
    assert main(["migrate", "status", "--check"]) == EXIT_OK


def test_cli_refuses_unknown_flowledger_variables(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOWLEDGER_MAX_SISE", "4")
    assert main(["migrate", "status", "--database", db_url]) == EXIT_ERROR
    assert "FLOWLEDGER_MAX_SISE" in capsys.readouterr().err


def test_development_commands_default_to_the_embedded_server_and_say_so(
    pg_server: PgServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if not pg_server.embedded:
        pytest.skip("the embedded test server is not the one under test")
    home = Path(__file__).resolve().parents[2] / ".flowledger" / "test"
    for name in ("FLOWLEDGER_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLOWLEDGER_HOME", str(home))
    assert main(["migrate", "apply", "--embedded", "--json"]) == EXIT_OK
    assert "no database configured" not in capsys.readouterr().err
    assert main(["seed", "--json"]) == EXIT_OK
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("flowledger: no database configured") and str(home) in err[0]


# -- refused logins -----------------------------------------------------------------------


@pytest.fixture
def password_role(empty_db_url: str) -> Iterator[str]:
    """A role that must log in with the password 'right-password' (scram-sha-256), whatever
    the server's own rules; yields the URL of empty_db_url's server without a user."""
    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        hba = admin.execute("SHOW hba_file").fetchone()
        assert hba is not None
        original = admin.execute("SELECT pg_read_file(%s)", (hba[0],)).fetchone()
        assert original is not None
        admin.execute("DROP ROLE IF EXISTS fl_connect_probe")
        admin.execute("CREATE ROLE fl_connect_probe LOGIN PASSWORD 'right-password'")
        rules = (
            "local all fl_connect_probe scram-sha-256\n"
            "host all fl_connect_probe all scram-sha-256\n"
        )
        _write_server_file(admin, hba[0], rules + original[0])
        try:
            yield empty_db_url.split("@", 1)[1]
        finally:
            _write_server_file(admin, hba[0], original[0])
            admin.execute("DROP ROLE fl_connect_probe")


def test_wrong_password_is_rejected_at_once_without_the_password(
    password_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(ConnectionRejected) as info:
        flowledger.connect(
            f"postgresql://fl_connect_probe:wrong-pw-42@{password_role}",
            connect_attempts=5,
            connect_backoff=1.0,
        )
    assert time.monotonic() - started < 1.0, "a refused login must not be retried"
    assert not isinstance(info.value, Unavailable)
    assert "password authentication failed" in str(info.value)
    assert "wrong-pw-42" not in str(info.value) and "wrong-pw-42" not in repr(info.value)
    right = f"postgresql://fl_connect_probe:right-password@{password_role}"
    with flowledger.connect(right, min_size=1, max_size=1, cursor_secret=_SECRET) as db:
        assert db.health() == {"postgres": "ok"}
        assert "right-password" not in repr(db) and "right-password" not in repr(db.settings)
    assert "wrong-pw-42" not in caplog.text and "right-password" not in caplog.text


@pytest.mark.parametrize(
    ("swap", "expected"),
    [
        (lambda url: url.replace("@", "_no_such_role@", 1), "role"),
        (lambda url: url.replace("@/", "@/fl_no_such_db_", 1), "database"),
    ],
    ids=["unknown-role", "unknown-database"],
)
def test_unknown_role_or_database_is_rejected_not_unavailable(
    db_url: str, swap: Any, expected: str
) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectionRejected, match=f"{expected} .* does not exist"):
        flowledger.connect(swap(db_url), connect_attempts=5, connect_backoff=1.0)
    assert time.monotonic() - started < 1.0


# -- restarts -----------------------------------------------------------------------------


def _terminate_backends(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'flowledger'"
        ).fetchall()
    return len(rows)


def test_pool_survives_all_backends_terminated(db_url: str) -> None:
    with flowledger.connect(db_url, min_size=4, max_size=4) as db:
        created = db.users.create(user=NewUser(email="r@example.com", display_name="R"))
        deadline = time.monotonic() + 10
        while db.stats()["idle"] < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _terminate_backends(db_url) == 4
        time.sleep(0.2)  # the FATAL reaches each socket
        for _ in range(6):  # more calls than stale connections: every one must succeed
            assert db.users.get(id=created.id).email == "r@example.com"
        with db.transaction() as tx:
            assert tx.users.get(id=created.id).display_name == "R"
        assert db.stats()["connections_lost"] >= 4
        assert db.health() == {"postgres": "ok"}


def test_pool_survives_a_real_server_restart() -> None:
    # Not under tmp_path: as root the server runs as its own user, which must reach it.
    base = reachable_dir()
    server = EmbeddedServer(base / "restart")
    url = server.ensure_running()
    try:
        # After an outage the pool reconnects with its own backoff (1 s, doubling):
        # the first call after the restart may wait for it, within pool_timeout.
        with flowledger.connect(
            url, min_size=2, max_size=2, pool_timeout=15, cursor_secret=_SECRET
        ) as db:
            with db.transaction() as tx:
                tx.connection.execute("SELECT 1")
            pg_ctl(server.pgdata, "stop")
            assert db.health(timeout=0.5)["postgres"].startswith("error: ")
            # restart also starts a stopped server, with the options it last ran with
            pg_ctl(server.pgdata, "restart", "-l", str(server.pgdata / "restart.log"))
            with db.transaction() as tx:
                assert tx.connection.execute("SELECT 2").fetchone() == (2,)
            assert db.stats()["connections_lost"] >= 1
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


# -- passwords never shown ----------------------------------------------------------------

_SHAPES = [
    "postgresql://u:{pw}@127.0.0.1:1/db",
    "postgresql://u:{pw}@127.0.0.1:notaport/db",
    "postgresql://u:{pw}@127.0.0.1:99999/db",
    "postgresql://u:{pw}@[::1/db",
    "postgresql://u:{pw}@127.0.0.1:1/db?sslmode=bogus",
    # A query value is percent-encoded: a raw "&" or "#" there would end the password.
    "postgresql://u@127.0.0.1:1/db?password={pwq}&sslmode=bogus",
    "postgresql://u@127.0.0.1:1/db?password={pwq}",
    "postgres://u:{pw}@/db?host=/nonexistent-dir",
    "postgresql+psycopg://u:{pw}@127.0.0.1:1/db?connect_timeout=x",
    "mysql://u:{pw}@127.0.0.1/db",
    "postgresql://u:{pw}@",
]


@settings(
    max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    shape=st.sampled_from(_SHAPES),
    password=st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789%@:/?#&=+!$*", min_size=6, max_size=16
    ).filter(lambda pw: any(c.isalnum() for c in pw)),
)
def test_no_password_in_any_error_or_repr(shape: str, password: str) -> None:
    encoded = quote(password, safe="")
    url = shape.format(pw=password, pwq=encoded)
    try:
        db = flowledger.connect(url, connect_attempts=1, connect_timeout=1)
    except FlowledgerError as exc:
        shown = [str(exc), repr(exc), str(exc.__cause__ or ""), repr(exc.__context__ or "")]
        if exc.__cause__ is None and not exc.__suppress_context__:
            shown.append(str(exc.__context__ or ""))
    else:  # pragma: no cover - nothing listens on these addresses
        db.close()
        pytest.fail(f"connected to {redact(url)}")
    shown.append(redact(url))
    for text in shown:
        assert password not in text
        assert encoded not in text


def test_no_password_in_repr_stats_or_health(db_url: str) -> None:
    user, _, rest = db_url.partition("@")
    if ":" in user.partition("://")[2]:
        pytest.skip("the test server's URL already holds a password")
    secret = "s3cret-in-url"
    database = flowledger.connect(f"{user}:{secret}@{rest}", min_size=1, max_size=1)
    shown = [repr(database), str(database.settings), repr(database.settings)]
    shown += [str(database.stats()), str(database.health())]
    database.close()
    shown.append(str(database.health()))  # an error now
    for text in shown:
        assert secret not in text
    assert isinstance(database, Database)


def _write_server_file(admin: psycopg.Connection[Any], path: str, text: str) -> None:
    admin.execute("CREATE TEMP TABLE IF NOT EXISTS hba_text (line text)")
    admin.execute("TRUNCATE hba_text")
    with admin.cursor().copy("COPY hba_text (line) FROM STDIN") as copy:
        for line in text.splitlines():
            if line.strip():  # CSV would write an empty value as ""
                copy.write_row((line,))
    # CSV with delimiter and quote characters that never occur writes each line verbatim.
    admin.execute(
        psycopg.sql.SQL(
            "COPY hba_text TO {} WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')"
        ).format(psycopg.sql.Literal(path))
    )
    admin.execute("SELECT pg_reload_conf()")
    time.sleep(0.3)


def test_a_malformed_listen_url_is_refused_by_name(db_url: str) -> None:
    with pytest.raises(InvalidInput, match="listen_url: ") as refused:
        flowledger.connect(db_url, listen_url="postgresql://app:hunter22@[::1", connect_attempts=1)
    assert "hunter22" not in str(refused.value)


def test_startup_options_that_did_not_arrive_are_refused_naming_the_setting(db_url: str) -> None:
    """What a pooler told to ignore `options` looks like: a session at the server's own time
    zone and timeout, whatever flowledger asked for (here, a login without the options)."""
    with flowledger.connect(db_url, connect_attempts=1, statement_timeout=7) as db:
        with psycopg.connect(db_url, autocommit=True) as plain:
            plain.execute("SET TimeZone TO 'UTC'")  # the time zone alone would pass
            error = db._check_route(plain)
            with psycopg.connect(
                db_url, autocommit=True, options="-c statement_timeout=7000"
            ) as sent:
                sent.execute("SET TimeZone TO 'UTC'")
                assert db._check_route(sent) is None  # the options arrived
    assert isinstance(error, InvalidInput)
    assert "dropped the connection's startup options" in error.message
    assert "statement_timeout 0 ms" in error.message
    assert "FLOWLEDGER_POOLER=transaction" in error.message
