"""Translation of psycopg errors into the flowledger exception tree."""

from __future__ import annotations

import pickle
import string

import psycopg
import psycopg_pool
import pytest
from psycopg import errors as pg

from flowledger.errors import (
    CONSTRAINT_MESSAGES,
    Conflict,
    FlowledgerError,
    InvalidCursor,
    InvalidInput,
    LeaseLost,
    MigrationError,
    NotFound,
    Retryable,
    StaleWrite,
    Unavailable,
    error_from_diagnostics,
    translate_error,
    translating,
)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (pg.UniqueViolation, Conflict),
        (pg.ExclusionViolation, Conflict),
        (pg.CheckViolation, InvalidInput),
        (pg.ForeignKeyViolation, InvalidInput),
        (pg.NotNullViolation, InvalidInput),
        (pg.IntegrityConstraintViolation, InvalidInput),
        (pg.InvalidTextRepresentation, InvalidInput),
        (pg.NumericValueOutOfRange, InvalidInput),
        (pg.InvalidDatetimeFormat, InvalidInput),
        (pg.StringDataRightTruncation, InvalidInput),
        (pg.SerializationFailure, Retryable),
        (pg.DeadlockDetected, Retryable),
        (pg.LockNotAvailable, Retryable),
        (pg.QueryCanceled, Unavailable),
        (pg.AdminShutdown, Unavailable),
        (pg.CrashShutdown, Unavailable),
        (pg.CannotConnectNow, Unavailable),
        (pg.ConnectionFailure, Unavailable),
        (pg.TooManyConnections, Unavailable),
        (pg.ReadOnlySqlTransaction, Unavailable),
        (pg.IdleInTransactionSessionTimeout, Unavailable),
        (pg.NoDataFound, NotFound),
        (pg.SyntaxError, FlowledgerError),
        (pg.UndefinedColumn, FlowledgerError),
        (pg.InFailedSqlTransaction, FlowledgerError),
    ],
)
def test_sqlstate_classes_map_to_domain_errors(
    error: type[psycopg.Error], expected: type[FlowledgerError]
) -> None:
    translated = translate_error(error("server says no"))
    assert type(translated) is expected
    assert translated.sqlstate == error.sqlstate
    assert str(translated) == "server says no"


def test_custom_sqlstate_unknown_to_psycopg_is_a_plain_flowledger_error() -> None:
    translated = error_from_diagnostics("FL001", None, "custom failure", None)
    assert type(translated) is FlowledgerError
    assert translated.sqlstate == "FL001"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            psycopg.OperationalError("consuming input failed: server closed the connection"),
            Unavailable,
        ),
        (pg.ConnectionTimeout("connection timeout expired"), Unavailable),
        (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), InvalidInput),
        (psycopg.ProgrammingError("query parameter missing: owner_id"), FlowledgerError),
        (psycopg.InterfaceError("the cursor is closed"), FlowledgerError),
    ],
)
def test_client_side_errors_without_sqlstate(
    error: psycopg.Error, expected: type[FlowledgerError]
) -> None:
    translated = translate_error(error)
    assert type(translated) is expected
    assert translated.sqlstate is None
    assert str(translated) == str(error)


def test_pool_timeout_is_unavailable_and_says_how_long_it_waited() -> None:
    assert issubclass(psycopg_pool.PoolTimeout, psycopg.OperationalError)
    error = psycopg_pool.PoolTimeout("couldn't get a connection after 30.00 sec")
    translated = translate_error(error)
    assert type(translated) is Unavailable
    assert str(translated) == "no database connection available within 30.00 sec"
    assert str(translate_error(psycopg_pool.PoolTimeout())) == (
        "no database connection available in time"
    )


@pytest.mark.parametrize(
    "error",
    [
        psycopg_pool.PoolClosed("the pool 'main' is already closed"),
        psycopg_pool.TooManyRequests("x"),
    ],
)
def test_pool_refusals_are_unavailable(error: psycopg.Error) -> None:
    assert type(translate_error(error)) is Unavailable


def test_known_constraint_gives_the_actionable_message() -> None:
    translated = error_from_diagnostics(
        "23505",
        "users_email_key",
        'duplicate key value violates unique constraint "users_email_key"',
        "Key (lower(email))=(ada@example.com) already exists.",
        context={"email": "Ada@example.com"},
    )
    assert type(translated) is Conflict
    assert str(translated) == "a user with email 'Ada@example.com' already exists"
    assert translated.constraint == "users_email_key"
    assert translated.sqlstate == "23505"


def test_constraint_template_without_its_context_falls_back_to_server_message() -> None:
    translated = error_from_diagnostics(
        "23505",
        "users_email_key",
        'duplicate key value violates unique constraint "users_email_key"',
        "Key (lower(email))=(ada@example.com) already exists.",
        context={"name": "unrelated"},
    )
    assert type(translated) is Conflict
    assert str(translated) == (
        'duplicate key value violates unique constraint "users_email_key": '
        "Key (lower(email))=(ada@example.com) already exists."
    )
    assert translated.constraint == "users_email_key"


def test_template_without_placeholders_needs_no_context() -> None:
    translated = error_from_diagnostics(
        "23514", "workflows_schedule_check", "new row violates check constraint", None
    )
    assert type(translated) is InvalidInput
    assert str(translated) == "a schedule is required exactly when trigger_type is 'schedule'"


def test_foreign_key_template_uses_context() -> None:
    translated = error_from_diagnostics(
        "23503",
        "workflows_owner_id_fkey",
        'insert or update on table "workflows" violates foreign key constraint '
        '"workflows_owner_id_fkey"',
        'Key (owner_id)=(0190c1d2-0000-7000-8000-000000000001) is not present in table "users".',
        context={"owner_id": "0190c1d2-0000-7000-8000-000000000001", "name": "nightly"},
    )
    assert type(translated) is InvalidInput
    assert str(translated) == "owner 0190c1d2-0000-7000-8000-000000000001 does not exist"


def test_deleting_a_referenced_row_is_a_conflict_not_a_missing_reference() -> None:
    translated = error_from_diagnostics(
        "23503",
        "workflows_owner_id_fkey",
        'update or delete on table "users" violates foreign key constraint '
        '"workflows_owner_id_fkey" on table "workflows"',
        "Key (id)=(0190c1d2-0000-7000-8000-000000000001) is still referenced from table "
        '"workflows".',
        context={"owner_id": "0190c1d2-0000-7000-8000-000000000001"},
    )
    assert type(translated) is Conflict
    assert "does not exist" not in str(translated)
    assert str(translated).endswith('is still referenced from table "workflows".')
    assert translated.constraint == "workflows_owner_id_fkey"


def test_check_violation_detail_with_the_failing_row_is_not_repeated() -> None:
    translated = error_from_diagnostics(
        "23514",
        "api_keys_prefix_check",
        'new row for relation "api_keys" violates check constraint "api_keys_prefix_check"',
        "Failing row contains (…, \\x5c0ffee…).",
    )
    assert type(translated) is InvalidInput
    assert str(translated) == (
        'new row for relation "api_keys" violates check constraint "api_keys_prefix_check"'
    )


def test_trigger_transition_error_keeps_the_server_message() -> None:
    translated = error_from_diagnostics(
        "23514",
        "workflow_executions_status_transition",
        "illegal workflow_executions status transition: completed -> running",
        None,
        context={"execution_id": "x"},
    )
    assert type(translated) is InvalidInput
    assert str(translated) == "illegal workflow_executions status transition: completed -> running"
    assert translated.constraint == "workflow_executions_status_transition"


def test_missing_primary_message_still_names_the_sqlstate() -> None:
    assert str(error_from_diagnostics("40001", None, None, None)) == "database error 40001"


@pytest.mark.parametrize("constraint", sorted(CONSTRAINT_MESSAGES))
def test_every_constraint_template_formats_from_its_own_fields(constraint: str) -> None:
    template = CONSTRAINT_MESSAGES[constraint]
    fields = {field for _, field, _, _ in string.Formatter().parse(template) if field}
    message = template.format_map({field: f"<{field}>" for field in fields})
    assert "{" not in message
    assert all(f"<{field}>" in message for field in fields)


def test_translating_raises_the_domain_error_from_the_driver_error() -> None:
    original = pg.UniqueViolation("duplicate key")
    with pytest.raises(Conflict) as caught, translating({"email": "a@b.c"}):
        raise original
    assert caught.value.__cause__ is original


def test_translating_maps_pool_timeouts() -> None:
    with pytest.raises(Unavailable, match=r"within 5\.00 sec"), translating():
        raise psycopg_pool.PoolTimeout("couldn't get a connection after 5.00 sec")


def test_translating_leaves_other_exceptions_alone() -> None:
    with pytest.raises(NotFound, match="no such workflow"), translating():
        raise NotFound("no such workflow")
    with pytest.raises(ValueError, match="bug"), translating():
        raise ValueError("bug")


def test_hierarchy() -> None:
    assert issubclass(InvalidCursor, InvalidInput)
    assert issubclass(LeaseLost, Conflict)
    for cls in (
        NotFound,
        Conflict,
        StaleWrite,
        InvalidInput,
        Unavailable,
        Retryable,
        MigrationError,
    ):
        assert issubclass(cls, FlowledgerError)


def test_translated_errors_survive_pickling() -> None:
    translated = error_from_diagnostics(
        "23505", "packs_ref_key", "dup", None, context={"ref": "core"}
    )
    copy = pickle.loads(pickle.dumps(translated))
    assert type(copy) is Conflict
    assert (str(copy), copy.sqlstate, copy.constraint) == (
        "a pack with ref 'core' already exists",
        "23505",
        "packs_ref_key",
    )


def test_a_value_too_large_for_an_index_is_invalid_input_not_the_duplicate_message() -> None:
    translated = error_from_diagnostics(
        "54000",
        "api_keys_user_id_name_key",
        "index row size 4536 exceeds btree version 4 maximum 2704 for index "
        '"api_keys_user_id_name_key"',
        None,
        context={"name": "n" * 3000},
    )
    assert type(translated) is InvalidInput
    assert translated.message.startswith(
        "a value is too large to be stored (index api_keys_user_id_name_key): index row size"
    )
    assert "already has an API key" not in translated.message
