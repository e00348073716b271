"""`flowledger.connect()`: settings, pool, health, stats, transactions, close."""

from __future__ import annotations

import datetime
import threading
import time

import pytest

import flowledger
from flowledger.database import Database, Settings, settings_from_env
from flowledger.errors import Conflict, InvalidInput, Unavailable
from flowledger.records.identity import NewUser


def test_settings_from_environment_and_overrides() -> None:
    env = {
        "DATABASE_URL": "postgresql://a@h/db",
        "FLOWLEDGER_MAX_SIZE": "7",
        "FLOWLEDGER_PREPARE_THRESHOLD": "none",
        "FLOWLEDGER_STATEMENT_TIMEOUT": "2.5",
    }
    s = settings_from_env(env, min_size=2)
    assert (s.url, s.max_size, s.min_size, s.prepare_threshold, s.statement_timeout) == (
        "postgresql://a@h/db",
        7,
        2,
        None,
        2.5,
    )
    with pytest.raises(InvalidInput, match="max_size"):
        settings_from_env({"FLOWLEDGER_MAX_SIZE": "lots"})
    with pytest.raises(InvalidInput, match="pool sizes"):
        Settings(min_size=5, max_size=2)


def test_session_is_utc_with_statement_timeout_and_json_through_msgspec(db: Database) -> None:
    with db.transaction() as tx:
        row = tx.connection.execute(
            "SELECT current_setting('TimeZone'), current_setting('statement_timeout'),"
            " now(), '{\"a\": [1, 2]}'::jsonb, current_setting('application_name')"
        ).fetchone()
    assert row is not None
    assert row[0] == "UTC" and row[1] == "30s" and row[4] == "flowledger"
    assert row[2].tzinfo is datetime.UTC  # the fast path: no zoneinfo per value
    assert row[3] == {"a": [1, 2]}


def test_prepared_statements_run_generic_plans_except_those_never_prepared(
    db: Database,
) -> None:
    """A hot statement is planned once per connection, not on every call (PostgreSQL's
    default would plan the claim anew each time); a query marked `prepare: never` is never
    prepared, so it is always planned for its values."""
    with db.transaction() as tx:
        mode = tx.connection.execute("SELECT current_setting('plan_cache_mode')").fetchone()
    assert mode == ("force_generic_plan",)
    with db.pinned() as pinned:
        for _ in range(8):
            pinned.steps.claim(worker_id="w", limit=3)
            pinned.outbox.prune(older_than=datetime.timedelta(days=1))
        with pinned.transaction() as tx:
            plans = tx.connection.execute(
                "SELECT substring(statement FROM 'flowledger:(\\w+)'), generic_plans,"
                " custom_plans FROM pg_prepared_statements"
            ).fetchall()
    counts = {name: (generic, custom) for name, generic, custom in plans}
    assert counts["claim_steps"][0] >= 3 and counts["claim_steps"][1] == 0
    assert "prune_outbox_events" not in counts


def test_health_and_stats(db: Database) -> None:
    assert db.health() == {"postgres": "ok"}
    stats = db.stats()
    assert stats["size"] >= 1 and stats["max_size"] == 8
    assert {"idle", "waiting", "connections_made", "connections_lost", "wait_ms"} <= stats.keys()


def test_health_reports_errors_instead_of_raising(db_url: str) -> None:
    database = flowledger.connect(db_url, min_size=1, max_size=1, connect_attempts=1)
    database.close()
    health = database.health()
    assert health["postgres"].startswith("error: ")


def test_unreachable_server_retries_with_backoff_then_unavailable() -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"after 3 attempts") as info:
        flowledger.connect(
            "postgresql://u:secret@127.0.0.1:1/db", connect_attempts=3, connect_backoff=0.1
        )
    assert time.monotonic() - started >= 0.3  # waited 0.1 + 0.2 between the attempts
    assert "secret" not in str(info.value)


def test_pool_timeout_is_unavailable(db_url: str) -> None:
    with flowledger.connect(db_url, min_size=1, max_size=1, pool_timeout=0.2) as database:
        with database.transaction():
            with pytest.raises(Unavailable, match="no database connection available"):
                database.users.get_by_email(email="nobody@example.com")


def test_transaction_commits_or_rolls_back_everything(db: Database) -> None:
    with db.transaction() as tx:
        tx.users.create(user=NewUser(email="a@example.com", display_name="A"))
    assert db.users.get_by_email(email="a@example.com").display_name == "A"

    with pytest.raises(Conflict):
        with db.transaction() as tx:
            tx.users.create(user=NewUser(email="b@example.com", display_name="B"))
            tx.users.create(user=NewUser(email="c@example.com", display_name="C"))
            tx.users.create(
                user=NewUser(email="A@example.com", display_name="dup")
            )  # last one fails
    emails = {u.email for u in db.users.list(limit=50).items}
    assert emails == {"a@example.com"}


def test_nested_transaction_is_a_savepoint(db: Database) -> None:
    with db.transaction() as tx:
        tx.users.create(user=NewUser(email="outer@example.com", display_name="O"))
        with pytest.raises(Conflict):
            with tx.transaction() as inner:
                inner.users.create(user=NewUser(email="inner@example.com", display_name="I"))
                inner.users.create(user=NewUser(email="outer@example.com", display_name="dup"))
    emails = {u.email for u in db.users.list(limit=50).items}
    assert emails == {"outer@example.com"}


def test_close_drains_borrowed_connections(db_url: str) -> None:
    database = flowledger.connect(db_url, min_size=1, max_size=2)
    released = threading.Event()

    def borrow() -> None:
        with database.transaction() as tx:
            tx.connection.execute("SELECT pg_sleep(0.3)")
        released.set()

    t = threading.Thread(target=borrow)
    t.start()
    time.sleep(0.1)
    database.close(timeout=5)
    t.join()
    assert released.is_set()
    with pytest.raises(Unavailable):
        database.users.get_by_email(email="x@example.com")


def test_no_raw_psycopg_error_escapes(db: Database) -> None:
    with pytest.raises(InvalidInput):
        with db.transaction() as tx:
            tx.connection.execute("SELECT 1/0")


def test_pinned_block_runs_every_call_on_one_connection_without_a_transaction(
    db: Database,
) -> None:
    with db.pinned() as pinned:
        pid = pinned.connection.info.backend_pid
        pinned.users.create(user=NewUser(email="p@example.com", display_name="P"))
        # Committed at once: visible from another connection while the block is open.
        assert db.users.get_by_email(email="p@example.com").display_name == "P"
        with pytest.raises(Conflict):
            with pinned.transaction() as tx:
                tx.users.create(user=NewUser(email="q@example.com", display_name="Q"))
                tx.users.create(user=NewUser(email="P@example.com", display_name="dup"))
        assert pinned.connection.info.backend_pid == pid
    emails = {u.email for u in db.users.list(limit=50).items}
    assert emails == {"p@example.com"}
