"""urls.py: the URL order, normal forms, redaction; errors.connection_error's classes."""

from __future__ import annotations

import psycopg
import pytest

from flowledger.errors import ConnectionRejected, InvalidInput, Unavailable, connection_error
from flowledger.urls import redact, resolve, scrub, to_libpq_url, to_yoyo_url, validate


def test_resolve_order_and_empty_variables() -> None:
    env = {"FLOWLEDGER_URL": "postgresql://a@h/one", "DATABASE_URL": "postgresql://a@h/two"}
    explicit = resolve("postgresql://a@h/zero", source="--database", environ=env)
    assert explicit is not None and (explicit.url, explicit.source) == (
        "postgresql://a@h/zero",
        "--database",
    )
    first = resolve(None, environ=env)
    assert first is not None and first.source == "FLOWLEDGER_URL"
    second = resolve(None, environ={**env, "FLOWLEDGER_URL": "  "})
    assert second is not None and second.source == "DATABASE_URL"
    assert resolve(None, environ={"DATABSE_URL": "postgresql://a@h/typo"}) is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u@h/db?password=s3cret&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("host=h user=u password='a b c' dbname=d", "host=h user=u password=*** dbname=d"),
    ],
)
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_scrub_removes_the_raw_and_the_decoded_password() -> None:
    url = "postgresql://u:p%40ss-word@h/db"
    assert scrub('token "p%40ss-word" or p@ss-word', url) == 'token "***" or ***'


def test_normal_forms_and_malformed_urls() -> None:
    assert to_libpq_url("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
    assert to_yoyo_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    for bad in (
        "mysql://u:pw-1234@h/db",
        "not a url",
        "postgresql://u:pw-1234@h:port/db",
        "postgresql://u:pw-1234%A0@h/db",  # decodes to bytes that are not UTF-8
    ):
        with pytest.raises(InvalidInput, match="malformed database URL") as info:
            validate(bad)
        assert "pw-1234" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "cls"),
    [
        (
            'connection to server at "h" failed: FATAL:  password authentication failed',
            ConnectionRejected,
        ),
        (
            'connection to server on socket "/s" failed: FATAL:  role "x" does not exist',
            ConnectionRejected,
        ),
        (
            'connection to server on socket "/s" failed: FATAL:  database "x" does not exist',
            ConnectionRejected,
        ),
        (
            'connection to server at "h" failed: FATAL:  no pg_hba.conf entry for host "1.2.3.4"',
            ConnectionRejected,
        ),
        (
            'connection to server at "h" failed: fe_sendauth: no password supplied',
            ConnectionRejected,
        ),
        ('connection is bad: invalid sslmode value: "bogus"', InvalidInput),
        ('connection to server at "h", port 1 failed: Connection refused', Unavailable),
        (
            'connection to server at "h" failed: FATAL:  the database system is starting up',
            Unavailable,
        ),
        (
            'connection to server at "h" failed: FATAL:  sorry, too many clients already',
            Unavailable,
        ),
    ],
)
def test_connection_errors_are_classified(text: str, cls: type[Exception]) -> None:
    error = connection_error(psycopg.OperationalError(text), "postgresql://u:pw-5678@h/db")
    assert type(error) is cls
    assert str(error).startswith("cannot connect to postgresql://u:***@h/db: ")
