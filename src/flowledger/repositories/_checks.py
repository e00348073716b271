"""Argument checks shared by the repositories.

Every public repository method passes its arguments through these before any SQL, so a
value of any type either comes out as what the query needs or raises InvalidInput naming
the argument; nothing reaches the driver that it would refuse halfway through a write.
"""

from __future__ import annotations

import datetime
import decimal
import itertools
import math
import re
import uuid
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final, TypeVar

import msgspec
from psycopg.types.json import Jsonb

from flowledger.errors import InvalidCursor, InvalidInput

__all__ = [
    "INT32_MAX",
    "INT64_MAX",
    "MAX_AGE",
    "MAX_ITEMS",
    "MAX_JSON_DEPTH",
    "MAX_NAME_LENGTH",
    "MAX_TEXT_LENGTH",
    "as_bool",
    "as_choice",
    "as_cursor",
    "as_instant",
    "as_int",
    "as_interval",
    "as_json",
    "as_json_object",
    "as_name",
    "as_number",
    "as_optional_bool",
    "as_optional_instant",
    "as_optional_name",
    "as_optional_text",
    "as_optional_uuid",
    "as_struct",
    "as_text",
    "as_text_list",
    "as_uuid",
    "as_uuid_list",
    "check_batch",
    "check_json",
    "cutoff_of",
    "show",
]

S = TypeVar("S")

# Identifying text (names, keys, refs, emails, client and worker ids...) is indexed, and a
# btree entry must fit in a third of a page (~2,700 bytes): 255 characters always do.
MAX_NAME_LENGTH: Final = 255
# Free text (descriptions, messages, errors, content, YAML).
MAX_TEXT_LENGTH: Final = 1_000_000
# Lists of ids, names, tags, scopes or log lines in one call.
MAX_ITEMS: Final = 10_000
# JSON nested deeper than this is refused (encoders and the server recurse per level).
MAX_JSON_DEPTH: Final = 100
INT32_MAX: Final = 2**31 - 1
INT64_MAX: Final = 2**63 - 1
_UTC: Final = datetime.UTC
_SHOWN: Final = 60
_SHOWABLE: Final = (
    str,
    bytes,
    int,
    float,
    decimal.Decimal,
    type(None),
    uuid.UUID,
    datetime.date,
    datetime.time,
    datetime.timedelta,
)


def show(value: object) -> str:
    """A short repr of `value` for an error message (long values are cut; an object of a
    caller's own class is shown by its type, its __repr__ is not run)."""
    if isinstance(value, list | tuple | dict | set | frozenset):
        # Not repr: a container may nest deeper than repr can recurse.
        return f"a {type(value).__name__} of {len(value)} items"
    if not isinstance(value, _SHOWABLE):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"


def as_struct(value: object, cls: type[S], what: str) -> S:
    """`value` when it is a `cls`; InvalidInput naming `what` otherwise."""
    if not isinstance(value, cls):
        raise InvalidInput(f"{what} must be a {cls.__name__}, got {type(value).__name__}")
    return value


def as_text(
    value: object,
    what: str,
    *,
    max_length: int = MAX_TEXT_LENGTH,
    blank: bool = True,
) -> str:
    """`value` as text PostgreSQL can store: a str without NUL characters or lone
    surrogates, at most `max_length` characters (and not blank unless `blank`)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > max_length:
        raise InvalidInput(f"{what} must be at most {max_length:,} characters, got {len(value):,}")
    if "\x00" in value:
        raise InvalidInput(f"{what} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{what} is not valid Unicode text (a lone surrogate)") from exc
    if not blank and not value.strip():
        raise InvalidInput(f"{what} must not be blank")
    return value


def as_optional_text(
    value: object, what: str, *, max_length: int = MAX_TEXT_LENGTH, blank: bool = True
) -> str | None:
    """Like `as_text`, letting None through."""
    return None if value is None else as_text(value, what, max_length=max_length, blank=blank)


def as_name(value: object, what: str, *, blank: bool = False) -> str:
    """Identifying text: `as_text` bounded to MAX_NAME_LENGTH, not blank by default."""
    return as_text(value, what, max_length=MAX_NAME_LENGTH, blank=blank)


def as_optional_name(value: object, what: str) -> str | None:
    """Like `as_name`, letting None through."""
    return None if value is None else as_name(value, what)


# A queue name, as the queue CHECKs of workflow_stages, execution_steps and queue_states.
_QUEUE: Final = re.compile(r"[a-z][a-z0-9_-]{0,62}")
# More queues than a claim could read the fronts of in one statement is a mistake.
MAX_CLAIM_QUEUES: Final = 100


def as_queue(value: object, what: str) -> str:
    """A queue name: lowercase letters, digits, '-' or '_', starting with a letter, at most
    63 characters; InvalidInput naming `what` otherwise."""
    if not isinstance(value, str) or not _QUEUE.fullmatch(value):
        raise InvalidInput(
            f"{what} must be a queue name (lowercase letters, digits, '-' or '_', starting "
            f"with a letter, at most 63 characters), got {show(value)}"
        )
    return value


# A signal name, as execution_signals_name_check.
_SIGNAL: Final = re.compile(r"[a-z][a-z0-9_.-]{0,62}")


def as_signal_name(value: object, what: str) -> str:
    """A signal name: lowercase letters, digits, '.', '-' or '_', starting with a letter,
    at most 63 characters; InvalidInput naming `what` otherwise."""
    if not isinstance(value, str) or not _SIGNAL.fullmatch(value):
        raise InvalidInput(
            f"{what} must be a signal name (lowercase letters, digits, '.', '-' or '_', "
            f"starting with a letter, at most 63 characters), got {show(value)}"
        )
    return value


def as_optional_queues(value: object, what: str) -> list[str] | None:
    """None (every queue) or a non-empty list or tuple of distinct queue names."""
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise InvalidInput(f"{what} must be a list of queue names or None, got {show(value)}")
    if not value or len(value) > MAX_CLAIM_QUEUES:
        raise InvalidInput(f"{what} must name 1 to {MAX_CLAIM_QUEUES} queues, got {len(value)}")
    names = [as_queue(v, what) for v in value]
    if len(set(names)) != len(names):
        raise InvalidInput(f"{what} names a queue more than once: {show(value)}")
    return names


def as_choice(value: object, what: str, allowed: Collection[str]) -> str:
    """`value` when it is one of the `allowed` strings; InvalidInput otherwise."""
    if not isinstance(value, str) or value not in allowed:
        raise InvalidInput(f"{what} must be one of {', '.join(sorted(allowed))}; got {show(value)}")
    return value


def as_text_list(
    values: object, what: str, *, max_length: int = MAX_NAME_LENGTH, blank: bool = False
) -> list[str]:
    """A list or tuple of texts (each as `as_text`), at most MAX_ITEMS of them."""
    if not isinstance(values, list | tuple):
        raise InvalidInput(f"{what} must be a list of strings, got {type(values).__name__}")
    if len(values) > MAX_ITEMS:
        raise InvalidInput(f"{what} must hold at most {MAX_ITEMS:,} items, got {len(values):,}")
    return [
        as_text(v, f"{what}[{i}]", max_length=max_length, blank=blank) for i, v in enumerate(values)
    ]


def as_bool(value: object, what: str) -> bool:
    """`value` when it is a bool; InvalidInput otherwise (1 and "yes" are not booleans)."""
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} must be True or False, got {show(value)}")
    return value


def as_optional_bool(value: object, what: str) -> bool | None:
    """Like `as_bool`, letting None through."""
    return None if value is None else as_bool(value, what)


def as_int(value: object, what: str, low: int, high: int) -> int:
    """`value` when it is an int (not a bool) in low..high; InvalidInput otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be an integer, got {show(value)}")
    if not low <= value <= high:
        raise InvalidInput(f"{what} must be between {low} and {high}, got {show(value)}")
    return int(value)


def as_number(value: object, what: str, low: float, high: float) -> float:
    """`value` as a float when it is a finite int or float in low..high."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{what} must be a number, got {show(value)}")
    if isinstance(value, int) and not low <= value <= high:
        raise InvalidInput(f"{what} must be between {low:g} and {high:g}, got {show(value)}")
    number = float(value)
    # `not low <= x <= high` also refuses NaN.
    if not low <= number <= high:
        raise InvalidInput(f"{what} must be between {low:g} and {high:g}, got {show(value)}")
    return number


def as_uuid(value: object, what: str) -> uuid.UUID:
    """`value` as a UUID (a UUID or its string); InvalidInput naming `what` otherwise."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidInput(f"{what} must be a UUID, got {show(value)}")
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise InvalidInput(f"{what} must be a UUID, got {show(value)}") from exc


def as_optional_uuid(value: object, what: str) -> uuid.UUID | None:
    """Like `as_uuid`, letting None through (an unset optional filter)."""
    return None if value is None else as_uuid(value, what)


def as_uuid_list(values: object, what: str) -> list[uuid.UUID]:
    """Ids from a list, tuple, set or other iterable (not a string or a mapping), each as
    `as_uuid`, at most MAX_ITEMS of them."""
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise InvalidInput(f"{what} must be a list of UUIDs, got {type(values).__name__}")
    taken = list(itertools.islice(values, MAX_ITEMS + 1))
    if len(taken) > MAX_ITEMS:
        raise InvalidInput(f"{what} must hold at most {MAX_ITEMS:,} ids")
    return [as_uuid(v, what) for v in taken]


def as_instant(value: object, what: str) -> datetime.datetime:
    """`value` when it is a timezone-aware datetime whose UTC time lies in years 1..9999;
    naive datetimes are refused, never guessed."""
    if not isinstance(value, datetime.datetime):
        raise InvalidInput(f"{what} must be a timezone-aware datetime, got {show(value)}")
    if value.utcoffset() is None:
        raise InvalidInput(f"{what} must be a timezone-aware datetime, got a naive one")
    try:
        value.astimezone(_UTC)
    except OverflowError as exc:
        raise InvalidInput(
            f"{what} must lie between 0001-01-01 and 9999-12-31 UTC, got {value}"
        ) from exc
    return value


def as_optional_instant(value: object, what: str) -> datetime.datetime | None:
    """Like `as_instant`, letting None through."""
    return None if value is None else as_instant(value, what)


def as_interval(
    value: object, what: str, low: datetime.timedelta, high: datetime.timedelta
) -> datetime.timedelta:
    """`value` when it is a timedelta in low..high (both inclusive); InvalidInput otherwise."""
    if not isinstance(value, datetime.timedelta):
        raise InvalidInput(f"{what} must be a timedelta, got {show(value)}")
    if not low <= value <= high:
        raise InvalidInput(f"{what} must be between {low} and {high}, got {value}")
    return value


def check_json(value: object, what: str) -> None:
    """Refuse with InvalidInput what is not a JSON value PostgreSQL stores as given: NaN
    and infinities (never turned into null), nesting deeper than MAX_JSON_DEPTH, keys that
    are not strings, text with NUL characters or lone surrogates, integers beyond 64 bits,
    and types JSON has no form for. UUIDs, datetimes, dates, times and Decimals are
    written as strings, msgspec Structs as objects."""
    _walk(value, what, 0)


def as_json(value: object, what: str, *, object_only: bool = False) -> Jsonb:
    """`value` checked with `check_json` (and a dict when `object_only`), encoded once."""
    if object_only and not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object (dict), got {type(value).__name__}")
    check_json(value, what)
    try:
        encoded = msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise InvalidInput(f"{what} is not a JSON value: {exc}") from exc
    return Jsonb(value, dumps=lambda _: encoded)


def as_json_object(value: object, what: str) -> dict[str, Any]:
    """A mapping checked with `check_json`, as a plain dict."""
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{what} must be a JSON object (a mapping), got {type(value).__name__}")
    check_json(value, what)
    return dict(value)


_LEAVES: Final = (uuid.UUID, datetime.datetime, datetime.date, datetime.time)


def _walk(value: object, what: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise InvalidInput(f"{what} is not JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _json_text(value, what)
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise InvalidInput(f"{what} is not JSON: an integer beyond 64 bits, {show(value)}")
    elif isinstance(value, float | decimal.Decimal):
        if not math.isfinite(value):
            raise InvalidInput(
                f"{what} is not JSON: it holds {value!r} (NaN and Infinity are refused, "
                "never stored as null)"
            )
    elif isinstance(value, list | tuple):
        for item in value:
            _walk(item, what, depth + 1)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{what} is not JSON: a key is not a string, {show(key)}")
            _json_text(key, what)
            _walk(item, what, depth + 1)
    elif isinstance(value, msgspec.Struct):
        _walk(msgspec.structs.asdict(value), what, depth)
    elif not isinstance(value, _LEAVES):
        raise InvalidInput(f"{what} is not JSON: a {type(value).__name__} has no JSON form")


def _json_text(text: str, what: str) -> None:
    # jsonb refuses \u0000; a lone surrogate cannot be encoded as UTF-8 at all.
    if "\x00" in text:
        raise InvalidInput(f"{what} is not JSON: text with a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{what} is not JSON: text that is not valid Unicode (a lone surrogate)"
        ) from exc


def as_cursor(value: object) -> str:
    """`value` when it is a string (its signature is checked when decoded)."""
    if not isinstance(value, str):
        raise InvalidCursor(f"cursor must be a string from a page's next_cursor, got {show(value)}")
    return value


_MAX_BATCH = 10_000
# Retention ages and staleness thresholds: a century either way is beyond any real use,
# and keeps now() - age inside the range of a datetime.
MAX_AGE = datetime.timedelta(days=36_525)


def cutoff_of(older_than: datetime.datetime | datetime.timedelta) -> datetime.datetime:
    """The instant meant by `older_than`: itself (timezone-aware), or now minus the age (at
    most MAX_AGE either way); InvalidInput otherwise."""
    if isinstance(older_than, datetime.timedelta):
        age = as_interval(older_than, "older_than", -MAX_AGE, MAX_AGE)
        return datetime.datetime.now(datetime.UTC) - age
    return as_instant(older_than, "older_than")


def check_batch(batch: int) -> None:
    """Refuse a batch size outside 1..10,000 with InvalidInput."""
    as_int(batch, "batch", 1, _MAX_BATCH)
