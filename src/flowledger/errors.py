"""The flowledger exception tree and the one place where driver errors are translated."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType

import psycopg
import psycopg_pool

__all__ = [
    "CONSTRAINT_MESSAGES",
    "Conflict",
    "ConnectionRejected",
    "DatabaseNotConfigured",
    "FlowledgerError",
    "InvalidCursor",
    "InvalidInput",
    "LeaseLost",
    "MigrationError",
    "NotFound",
    "ReplicaUnavailable",
    "ReplicaWaitTimeout",
    "Retryable",
    "StaleWrite",
    "Unavailable",
    "connection_error",
    "error_from_diagnostics",
    "translate_error",
    "translating",
]


class FlowledgerError(Exception):
    """Root of every error flowledger raises."""

    def __init__(
        self, message: str, *, sqlstate: str | None = None, constraint: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.constraint = constraint


class NotFound(FlowledgerError):
    """The requested row does not exist (or is not visible to the caller)."""


class Conflict(FlowledgerError):
    """The write collides with existing data (unique, exclusion) or the row is still in use."""


class StaleWrite(FlowledgerError):
    """The row changed since it was read: the expected version no longer matches."""


class InvalidInput(FlowledgerError):
    """The input breaks a validation rule, a CHECK, a foreign key, NOT NULL or a column type."""


class InvalidCursor(InvalidInput):
    """A pagination cursor is malformed, altered, or was issued for another listing."""


class Unavailable(FlowledgerError):
    """The database cannot serve the request now: connection, shutdown, resources, timeout."""


class ConnectionRejected(FlowledgerError):
    """The server answered but refused the login (wrong password, unknown role or database,
    no pg_hba.conf entry): retrying cannot help, the configuration must change."""


class DatabaseNotConfigured(FlowledgerError):
    """No database URL was given and the embedded server was not asked for."""


class Retryable(FlowledgerError):
    """The transaction lost a race (serialization, deadlock, lock wait); rerun it."""


class LeaseLost(Conflict):
    """A worker's lease on a step expired or was taken over; its result must not be written."""


class ReplicaUnavailable(FlowledgerError):
    """The read replica cannot serve reads now: down, unreachable, no longer a standby, or
    further behind its primary than `replica_max_lag_seconds`. Not an Unavailable: the
    same read on the replica may fail again for a while; read from the primary instead."""


class ReplicaWaitTimeout(ReplicaUnavailable):
    """`replica.wait_for(position)` ran out of time before the replica replayed `position`."""


class MigrationError(FlowledgerError):
    """Applying, rolling back or verifying migrations failed."""


class ExtraNotInstalled(FlowledgerError):
    """A feature needs an optional part of flowledger that is not installed; the message
    names the extra to install (e.g. `pip install 'flowledger[embedded]'`)."""


CONSTRAINT_MESSAGES: Mapping[str, str] = MappingProxyType(
    {
        "users_email_key": "a user with email {email!r} already exists",
        "workflows_owner_id_name_key": "a workflow named {name!r} already exists for this owner",
        "workflow_stages_workflow_id_name_key": (
            "a stage named {name!r} already exists in this workflow"
        ),
        "workflow_stages_workflow_id_position_key": (
            "position {position} is already taken in this workflow"
        ),
        "api_keys_prefix_key": "an API key with prefix {prefix!r} already exists",
        "api_keys_user_id_name_key": "this user already has an API key named {name!r}",
        "packs_ref_key": "a pack with ref {ref!r} already exists",
        "actions_ref_key": "an action with ref {ref!r} already exists",
        "workflows_name_check": (
            "workflow name {name!r} must be lowercase letters, digits, '-' or '_', "
            "starting with a letter, at most 63 characters"
        ),
        "workflows_schedule_check": (
            "a schedule is required exactly when trigger_type is 'schedule'"
        ),
        "workflows_owner_id_fkey": "owner {owner_id} does not exist",
        "workflows_pack_id_fkey": "pack {pack_id} does not exist",
        "workflow_stages_depends_on_check": (
            "a stage cannot depend on itself, and depends_on cannot hold NULL"
        ),
        "workflow_stages_retry_policy_check": "retry_policy.max_attempts must be an integer >= 1",
        "workflow_versions_immutable": "workflow versions are immutable once written",
        "actions_pack_id_fkey": "pack {pack_id} does not exist",
        "actions_workflow_id_fkey": "workflow {workflow_id} does not exist",
        "api_keys_user_id_fkey": "user {user_id} does not exist",
        "workflow_executions_idempotency_key": (
            "an execution with idempotency key {idempotency_key!r} already exists for this workflow"
        ),
        "workflow_executions_parent_execution_id_fkey": (
            "parent execution {parent_execution_id} does not exist"
        ),
        "workflow_executions_triggered_by_fkey": "user {triggered_by} does not exist",
        "tool_executions_step_id_fkey": "step {step_id} does not exist",
        "tool_executions_session_id_fkey": "session {session_id} does not exist",
        "step_logs_step_id_fkey": "a log line names a step that does not exist",
        "step_logs_execution_id_fkey": "a log line names an execution that does not exist",
        "sessions_client_id_key": "a session for client {client_id!r} already exists",
        "sessions_user_id_fkey": "user {user_id} does not exist",
        "memory_module_items_pkey": "memory item {item_id} is already in this context module",
        "memory_module_items_item_id_fkey": "memory item {item_id} does not exist",
        "memory_module_items_module_id_fkey": "context module {module_id} does not exist",
        "memory_context_modules_project_name_key": (
            "a context module named {name!r} already exists in project {project!r}"
        ),
        "workflow_tasks_pkey": "task {task_id} is already attached to workflow {workflow_id}",
        "workflow_tasks_workflow_id_sequence_key": (
            "sequence {sequence} is already taken in workflow {workflow_id}"
        ),
        "workflow_tasks_workflow_id_fkey": "workflow {workflow_id} does not exist",
        "workflow_tasks_task_id_fkey": "task {task_id} does not exist",
        "configurations_key_check": (
            "configuration key {key!r} must be dot-separated lowercase words "
            "(letters, digits, '_', each starting with a letter)"
        ),
    }
)

# Exact codes first, then the two-character SQLSTATE class; anything else is a plain
# FlowledgerError (typically a bug: a syntax error, an undefined column).
_BY_SQLSTATE: Mapping[str, type[FlowledgerError]] = MappingProxyType(
    {
        "23505": Conflict,  # unique_violation
        "23P01": Conflict,  # exclusion_violation
        "40001": Retryable,  # serialization_failure
        "40P01": Retryable,  # deadlock_detected
        "55P03": Retryable,  # lock_not_available: lock_timeout or NOWAIT
        # A write reaching a read-only server, e.g. a former primary after a failover.
        "25006": Unavailable,  # read_only_sql_transaction
        "25P03": Unavailable,  # idle_in_transaction_session_timeout: the session is gone
        "P0002": NotFound,  # no_data_found (SELECT ... INTO STRICT)
        # program_limit_exceeded: a value too large for an index entry or a tsvector.
        "54000": InvalidInput,
    }
)
_BY_CLASS: Mapping[str, type[FlowledgerError]] = MappingProxyType(
    {
        "08": Unavailable,  # connection exception
        "22": InvalidInput,  # data exception: bad text representation, out of range...
        "23": InvalidInput,  # integrity constraint violation: CHECK, foreign key, not null
        "53": Unavailable,  # insufficient resources: too many connections, disk full
        # Operator intervention: shutdown, crash recovery, and query_canceled. A statement
        # that ran past statement_timeout is not Retryable: running it again at once adds
        # load to a server that is already too slow; callers back off as for Unavailable.
        "57": Unavailable,
    }
)

# The server's DETAIL for these names the offending key, which helps the caller. For CHECK
# and NOT NULL it is "Failing row contains (...)": the whole row, secrets included.
_KEY_DETAIL_STATES = frozenset({"23505", "23P01", "23503"})

# Deleting a row that is still referenced raises the same SQLSTATE and constraint name as
# inserting a dangling reference; only the server's wording tells them apart. With
# non-English lc_messages such a delete is reported as InvalidInput.
_STILL_REFERENCED = "update or delete on table"

_POOL_WAIT = re.compile(r"after (\S+ sec)")

# The server reports a refused login only as a FATAL message during start-up: libpq keeps
# no SQLSTATE for it, so the (English) wording is all there is to go on. Anything else a
# connection attempt raises (refused, timed out, shutting down) may pass: Unavailable.
_REJECTED = re.compile(
    r"authentication failed|role \".*\" does not exist|database \".*\" does not exist"
    r"|no pg_hba\.conf entry|pg_hba\.conf rejects|permission denied for database"
    r"|is not permitted to log in|no password supplied|password is required",
    re.IGNORECASE,
)
# libpq refusing an option value before any network traffic: a configuration mistake.
_BAD_OPTION = re.compile(r"invalid \w+ value|invalid connection option|invalid integer value")
_LIBPQ_PREFIX = re.compile(
    r"^(connection failed: )?(connection is bad: )?(connection to server .*? failed: )?(FATAL:\s+)?"
)


def error_from_diagnostics(
    sqlstate: str,
    constraint_name: str | None,
    message_primary: str | None,
    message_detail: str | None,
    *,
    context: Mapping[str, object] | None = None,
) -> FlowledgerError:
    """The flowledger error for a server error described by its diagnostic fields."""
    cls = _BY_SQLSTATE.get(sqlstate) or _BY_CLASS.get(sqlstate[:2], FlowledgerError)
    primary = message_primary or f"database error {sqlstate}"
    # 23001 (restrict_violation) is what an ON DELETE RESTRICT key raises: always a delete
    # of a row still referenced, so no wording check is needed.
    if sqlstate == "23001" or (sqlstate == "23503" and primary.startswith(_STILL_REFERENCED)):
        still_used = _with_detail(primary, message_detail)
        return Conflict(still_used, sqlstate=sqlstate, constraint=constraint_name)
    if sqlstate == "54000":
        # The server names the index, and CONSTRAINT_MESSAGES would describe a duplicate.
        index = f" (index {constraint_name})" if constraint_name else ""
        too_large = f"a value is too large to be stored{index}: {primary}"
        return cls(too_large, sqlstate=sqlstate, constraint=constraint_name)
    template = CONSTRAINT_MESSAGES.get(constraint_name or "")
    message = _fill(template, context) if template else None
    if message is None:
        key_detail = message_detail if sqlstate in _KEY_DETAIL_STATES else None
        message = _with_detail(primary, key_detail)
    return cls(message, sqlstate=sqlstate, constraint=constraint_name)


def translate_error(
    exc: psycopg.Error, *, context: Mapping[str, object] | None = None
) -> FlowledgerError:
    """The flowledger error to raise ``from exc`` for a psycopg (or psycopg_pool) error."""
    if isinstance(exc, psycopg_pool.PoolTimeout):
        waited = _POOL_WAIT.search(str(exc))
        within = f" within {waited.group(1)}" if waited else " in time"
        return Unavailable(f"no database connection available{within}")
    if isinstance(exc, psycopg_pool.PoolClosed | psycopg_pool.TooManyRequests):
        return Unavailable(str(exc))
    sqlstate = exc.sqlstate
    if sqlstate is None:
        return _client_side(exc)
    diag = exc.diag
    return error_from_diagnostics(
        sqlstate,
        diag.constraint_name,
        diag.message_primary or str(exc),
        diag.message_detail,
        context=context,
    )


@contextmanager
def translating(context: Mapping[str, object] | None = None) -> Iterator[None]:
    """Run the block, turning any psycopg error into a flowledger error raised from it."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate_error(exc, context=context) from exc


def connection_error(exc: psycopg.Error, url: str) -> FlowledgerError:
    """The flowledger error for a failed connection attempt to `url`, password redacted:
    ConnectionRejected for a refused login, InvalidInput for a bad option, else Unavailable."""
    from flowledger.urls import redact, scrub

    lines = [ln.strip() for ln in scrub(str(exc), url).strip().splitlines() if ln.strip()]
    reason = _LIBPQ_PREFIX.sub("", lines[0]) if lines else type(exc).__name__
    message = f"cannot connect to {redact(url)}: {reason}"
    if _REJECTED.search(reason):
        return ConnectionRejected(message)
    if _BAD_OPTION.search(reason):
        return InvalidInput(message)
    return Unavailable(message)


def _client_side(exc: psycopg.Error) -> FlowledgerError:
    # Raised by psycopg itself, without a server round trip: a lost or unusable connection,
    # a value that cannot be sent (e.g. a NUL in text), or a misused API.
    if isinstance(exc, psycopg.OperationalError):
        return Unavailable(str(exc))
    if isinstance(exc, psycopg.DataError):
        return InvalidInput(str(exc))
    return FlowledgerError(str(exc))


def _fill(template: str, context: Mapping[str, object] | None) -> str | None:
    try:
        return template.format_map(context or {})
    except KeyError:
        return None


def _with_detail(primary: str, detail: str | None) -> str:
    return f"{primary}: {detail}" if detail else primary
