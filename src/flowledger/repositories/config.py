# Generated from src/flowledger/aio/repositories/config.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""Configuration: dotted keys to JSON values, typed reads, compare-and-set writes."""

from __future__ import annotations

import builtins
import enum
import re
from typing import Any, Final, TypeVar, overload

import msgspec

from flowledger.errors import InvalidInput, NotFound, StaleWrite
from flowledger.records.agents import Configuration
from flowledger.repositories._checks import (
    MAX_NAME_LENGTH,
    as_int,
    as_json,
    as_optional_text,
    as_text,
    show,
)
from flowledger.repositories.base import Repository

__all__ = ["KEY_PATTERN", "ConfigReader", "ConfigRepository"]

T = TypeVar("T")
D = TypeVar("D")

# The same rule as the configurations_key_check constraint: "scheduler.max_workers".
KEY_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")


class _Missing(enum.Enum):
    MISSING = enum.auto()


_MISSING: Final = _Missing.MISSING


class ConfigReader(Repository):
    """Configuration: typed reads of keys, raw entries, prefix lists."""

    @overload
    def get(self, *, key: str, type: builtins.type[T]) -> T: ...
    @overload
    def get(self, *, key: str, type: builtins.type[T], default: D) -> T | D: ...
    @overload
    def get(self, *, key: str, type: Any, default: Any = ...) -> Any: ...
    def get(self, *, key: str, type: Any, default: Any = _MISSING) -> Any:
        """The value of `key` converted to `type` (msgspec rules), or `default` when the key
        is absent; raises NotFound (absent, no default), InvalidInput (value does not fit)."""
        _check_key(key)
        entry: Configuration | None = self._fetch("get_configuration", {"key": key})
        if entry is None:
            if default is _MISSING:
                raise NotFound(f"configuration {key!r} not found")
            return default
        try:
            return msgspec.convert(entry.value, type)
        except msgspec.ValidationError as exc:
            raise InvalidInput(
                f"configuration {key!r} is not a valid {_type_name(type)}: {exc}"
            ) from exc
        # msgspec raises TypeError for a `type` it cannot convert to at all (5, a lambda).
        except TypeError as exc:
            raise InvalidInput(f"type {show(type)} is not a type msgspec converts to") from exc

    def get_entry(self, *, key: str) -> Configuration:
        """The entry of `key` with its raw value and version; raises NotFound, InvalidInput."""
        _check_key(key)
        found: Configuration = self._require(
            "get_configuration", {"key": key}, f"configuration {key!r} not found"
        )
        return found

    def list(self, *, prefix: str = "") -> builtins.list[Configuration]:
        """Every entry whose key starts with `prefix` ("" for all), in byte order of keys.

        A prefix is literal text: "sched" matches "scheduler.x"; end it with "." to list
        one namespace. Raises InvalidInput on a prefix that is not a string.
        """
        prefix = as_text(prefix, "prefix", max_length=MAX_NAME_LENGTH)
        found: builtins.list[Configuration] = self._fetch(
            "list_configurations_by_prefix", {"prefix": prefix}
        )
        return found


class ConfigRepository(ConfigReader):
    """Typed configuration values; every write bumps the entry's version."""

    def set(
        self,
        *,
        key: str,
        value: Any,
        expected_version: int | None = None,
        description: str | None = None,
    ) -> Configuration:
        """The entry after writing `value` (None keeps the description).

        Without `expected_version` the write is an upsert; with it, a compare-and-set that
        raises StaleWrite when the entry is at another version and NotFound when it is absent.
        Raises InvalidInput on a malformed key, version or a value JSON cannot hold.
        """
        _check_key(key)
        if expected_version is not None:
            _check_version(expected_version)
        params = {
            "key": key,
            "value": as_json(value, f"the value of configuration {key!r}"),
            "description": as_optional_text(description, "description"),
            "expected_version": expected_version,
        }
        if expected_version is None:
            entry: Configuration | None = self._fetch(
                "upsert_configuration", params, context=params
            )
            assert entry is not None  # INSERT ... ON CONFLICT DO UPDATE always yields its row
            return entry
        updated: Configuration | None = self._fetch("update_configuration_if_version", params)
        if updated is None:
            raise self._not_written(key, expected_version)
        return updated

    def delete(self, *, key: str, expected_version: int | None = None) -> None:
        """Delete the entry (only at `expected_version` when given); raises NotFound,
        StaleWrite (entry at another version), InvalidInput."""
        _check_key(key)
        if expected_version is not None:
            _check_version(expected_version)
        params = {"key": key, "expected_version": expected_version}
        if self._fetch("delete_configuration", params) == 0:
            if expected_version is None:
                raise NotFound(f"configuration {key!r} not found")
            raise self._not_written(key, expected_version)

    def _not_written(self, key: str, expected_version: int) -> NotFound | StaleWrite:
        current: Configuration | None = self._fetch("get_configuration", {"key": key})
        if current is None:
            return NotFound(f"configuration {key!r} not found")
        return StaleWrite(
            f"configuration {key!r} is at version {current.version}, "
            f"not the expected {expected_version}"
        )


def _check_key(key: str) -> None:
    if not isinstance(key, str) or len(key) > MAX_NAME_LENGTH or not KEY_PATTERN.fullmatch(key):
        raise InvalidInput(
            f"configuration key {show(key)} must be dot-separated lowercase words "
            f"(letters, digits, '_', each starting with a letter), at most {MAX_NAME_LENGTH} "
            "characters"
        )


def _check_version(version: int) -> None:
    # bool is an int subclass; True as a version is a bug in the caller.
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInput(f"expected_version must be an integer >= 1, got {show(version)}")
    as_int(version, "expected_version", 1, 2**31 - 1)


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else repr(tp)
