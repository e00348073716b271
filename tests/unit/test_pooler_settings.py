"""The `pooler` and `listen_url` settings: what each pooler mode sends at login and right
after it, and what is refused. Pure code: no server."""

from __future__ import annotations

import pytest

from flowledger.errors import InvalidInput
from flowledger.settings import (
    Settings,
    connection_kwargs,
    settings_from_env,
    startup_statements,
)

URL = "postgresql://app:s3cret@db.example/app"


def test_a_direct_connection_sends_its_settings_in_the_startup_packet() -> None:
    settings = settings_from_env({}, url=URL, statement_timeout=2.5)
    kwargs = connection_kwargs(settings)
    assert kwargs["options"] == (
        "-c TimeZone=UTC -c plan_cache_mode=force_generic_plan -c statement_timeout=2500"
    )
    assert kwargs["prepare_threshold"] == 5
    assert startup_statements(settings) == []


def test_a_transaction_pooler_gets_nothing_session_scoped_at_login() -> None:
    settings = settings_from_env({"FLOWLEDGER_POOLER": "transaction"}, url=URL)
    kwargs = connection_kwargs(settings)
    assert "options" not in kwargs
    assert kwargs["prepare_threshold"] is None  # off, without being asked
    # The time zone is SET (PgBouncer tracks it); the timeout goes with each statement.
    assert startup_statements(settings) == ["SET TimeZone TO 'UTC'"]
    # A wake-up listener keeps a session of its own (on listen_url): it gets the options.
    assert "statement_timeout=30000" in connection_kwargs(settings, session=True)["options"]


def test_a_session_pooler_gets_its_settings_right_after_login() -> None:
    settings = settings_from_env({}, url=URL, pooler="session", statement_timeout=1)
    assert "options" not in connection_kwargs(settings)
    assert connection_kwargs(settings)["prepare_threshold"] == 5  # a session keeps them
    assert startup_statements(settings) == [
        "SET TimeZone TO 'UTC'",
        "SET plan_cache_mode TO force_generic_plan",
        "SET statement_timeout TO 1000",
    ]
    no_timeout = settings_from_env({}, url=URL, pooler="session", statement_timeout=None)
    assert startup_statements(no_timeout) == [
        "SET TimeZone TO 'UTC'",
        "SET plan_cache_mode TO force_generic_plan",
    ]


@pytest.mark.parametrize("value", ["Transaction", "statement", "pgbouncer", ""])
def test_an_unknown_pooler_is_refused_by_name(value: str) -> None:
    with pytest.raises(InvalidInput, match="pooler must be None, 'session' or 'transaction'"):
        Settings(url=URL, pooler=value)


def test_a_pooler_of_the_wrong_type_is_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match="setting 'pooler'"):
        settings_from_env({}, url=URL, pooler=3)


def test_prepared_statements_are_refused_with_a_transaction_pooler() -> None:
    with pytest.raises(InvalidInput, match="prepare_threshold must be None"):
        settings_from_env({}, url=URL, pooler="transaction", prepare_threshold=5)
    with pytest.raises(InvalidInput, match="prepare_threshold must be None"):
        settings_from_env(
            {"FLOWLEDGER_POOLER": "transaction", "FLOWLEDGER_PREPARE_THRESHOLD": "0"}, url=URL
        )
    # Built directly, the struct has no way to tell a default from a choice: say None.
    with pytest.raises(InvalidInput, match="prepare_threshold must be None"):
        Settings(url=URL, pooler="transaction")
    assert Settings(url=URL, pooler="transaction", prepare_threshold=None).pooler == "transaction"


def test_none_in_the_environment_means_no_pooler() -> None:
    assert settings_from_env({"FLOWLEDGER_POOLER": "none"}, url=URL).pooler is None


def test_listen_url_is_a_secret_in_the_repr() -> None:
    settings = settings_from_env(
        {"FLOWLEDGER_LISTEN_URL": "postgresql://app:hunter22@primary/app"}, url=URL
    )
    assert settings.listen_url == "postgresql://app:hunter22@primary/app"
    shown = repr(settings)
    assert "hunter22" not in shown and "s3cret" not in shown
    assert "listen_url='postgresql://app:***@primary/app'" in shown
