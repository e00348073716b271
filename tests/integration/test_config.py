"""Configuration repository against a real PostgreSQL: typed reads, versions, CAS, prefixes."""

from __future__ import annotations

import datetime
from typing import Any

import msgspec
import psycopg
import pytest

from flowledger.database import Database
from flowledger.errors import InvalidInput, NotFound, StaleWrite

Conn = psycopg.Connection[tuple[Any, ...]]


class Limits(msgspec.Struct, frozen=True):
    max_workers: int
    queues: list[str]


def test_set_creates_an_entry_at_version_one(db: Database) -> None:
    entry = db.config.set(key="scheduler.max_workers", value=8, description="worker cap")

    assert (entry.key, entry.value, entry.version) == ("scheduler.max_workers", 8, 1)
    assert entry.description == "worker cap"
    assert db.config.get_entry(key="scheduler.max_workers") == entry


def test_set_without_a_version_overwrites_and_bumps_it(db: Database) -> None:
    db.config.set(key="a.b", value=1, description="kept")

    second = db.config.set(key="a.b", value=2)
    third = db.config.set(key="a.b", value=2, description="new")

    assert (second.value, second.version, second.description) == (2, 2, "kept")
    assert (third.version, third.description) == (3, "new")


@pytest.mark.parametrize(
    ("value", "tp", "expected"),
    [
        (8, int, 8),
        (0.5, float, 0.5),
        (3, float, 3.0),
        ("fast", str, "fast"),
        (True, bool, True),
        ([1, 2], list[int], [1, 2]),
        ({"x": 1}, dict[str, int], {"x": 1}),
        (None, int | None, None),
        (
            "2024-05-01T12:00:00Z",
            datetime.datetime,
            datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC),
        ),
        ({"max_workers": 4, "queues": ["a"]}, Limits, Limits(4, ["a"])),
    ],
)
def test_get_converts_the_value_to_the_requested_type(
    db: Database, value: Any, tp: Any, expected: Any
) -> None:
    db.config.set(key="some.key", value=value)

    assert db.config.get(key="some.key", type=tp) == expected


def test_a_struct_written_is_read_back_as_that_struct(db: Database) -> None:
    db.config.set(key="limits", value=Limits(max_workers=2, queues=["q1", "q2"]))

    assert db.config.get(key="limits", type=Limits) == Limits(2, ["q1", "q2"])


@pytest.mark.parametrize(
    ("value", "tp", "type_name"),
    [
        ("8", int, "int"),
        (1.5, int, "int"),
        ([1, "x"], list[int], "list[int]"),
        ({"max_workers": "many", "queues": []}, Limits, "Limits"),
    ],
)
def test_get_refuses_a_value_that_does_not_fit(
    db: Database, value: Any, tp: Any, type_name: str
) -> None:
    db.config.set(key="some.key", value=value)

    with pytest.raises(InvalidInput) as caught:
        db.config.get(key="some.key", type=tp)

    assert caught.value.message.startswith(f"configuration 'some.key' is not a valid {type_name}:")


def test_get_raises_not_found_or_returns_the_default_when_absent(db: Database) -> None:
    with pytest.raises(NotFound, match=r"configuration 'missing\.key' not found"):
        db.config.get(key="missing.key", type=int)
    with pytest.raises(NotFound):
        db.config.get_entry(key="missing.key")

    assert db.config.get(key="missing.key", type=int, default=7) == 7
    assert db.config.get(key="missing.key", type=int, default=None) is None


def test_get_ignores_the_default_when_the_key_exists(db: Database) -> None:
    db.config.set(key="k", value=1)

    assert db.config.get(key="k", type=int, default=99) == 1


def test_compare_and_set_writes_at_the_expected_version(db: Database) -> None:
    db.config.set(key="k", value="a")

    entry = db.config.set(key="k", value="b", expected_version=1)

    assert (entry.value, entry.version) == ("b", 2)


def test_compare_and_set_refuses_a_stale_version(db: Database) -> None:
    db.config.set(key="k", value="a")
    db.config.set(key="k", value="b", expected_version=1)

    with pytest.raises(StaleWrite) as caught:
        db.config.set(key="k", value="lost", expected_version=1)

    assert caught.value.message == "configuration 'k' is at version 2, not the expected 1"
    assert db.config.get(key="k", type=str) == "b"


def test_compare_and_set_on_an_absent_key_raises_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        db.config.set(key="k", value=1, expected_version=1)

    with pytest.raises(NotFound):
        db.config.get_entry(key="k")


@pytest.mark.parametrize("version", [0, -1, True, 1.0])
def test_set_refuses_a_malformed_expected_version(db: Database, version: Any) -> None:
    with pytest.raises(InvalidInput, match="expected_version must be an integer >= 1"):
        db.config.set(key="k", value=1, expected_version=version)


@pytest.mark.parametrize(
    "key", ["", "Scheduler", "a..b", "1abc", "a.", ".a", "a-b", "a.1b", "a b", "é"]
)
def test_keys_are_validated_before_the_server(db: Database, key: str) -> None:
    with pytest.raises(InvalidInput, match="must be dot-separated lowercase words"):
        db.config.set(key=key, value=1)
    with pytest.raises(InvalidInput):
        db.config.get(key=key, type=int)
    with pytest.raises(InvalidInput):
        db.config.delete(key=key)


def test_the_database_refuses_a_malformed_key_too(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO configurations (key, value) VALUES ('Bad-Key', '1')")


def test_set_refuses_a_value_json_cannot_hold(db: Database) -> None:
    with pytest.raises(InvalidInput, match="the value of configuration 'k' is not JSON"):
        db.config.set(key="k", value=object())

    with pytest.raises(NotFound):
        db.config.get_entry(key="k")


def test_delete_removes_the_entry(db: Database) -> None:
    db.config.set(key="k", value=1)

    db.config.delete(key="k")

    with pytest.raises(NotFound):
        db.config.get_entry(key="k")
    with pytest.raises(NotFound):
        db.config.delete(key="k")


def test_delete_at_a_version_is_compare_and_set(db: Database) -> None:
    db.config.set(key="k", value=1)
    db.config.set(key="k", value=2)

    with pytest.raises(StaleWrite):
        db.config.delete(key="k", expected_version=1)
    db.config.delete(key="k", expected_version=2)

    with pytest.raises(NotFound):
        db.config.delete(key="k", expected_version=2)


def test_list_returns_the_prefix_in_key_order(db: Database) -> None:
    for key in ["scheduler.z", "scheduler.a", "scheduler_x.a", "schedulers.b", "other", "s"]:
        db.config.set(key=key, value=key)

    assert [e.key for e in db.config.list(prefix="scheduler.")] == ["scheduler.a", "scheduler.z"]
    assert [e.key for e in db.config.list(prefix="scheduler")] == [
        "scheduler.a",
        "scheduler.z",
        "scheduler_x.a",
        "schedulers.b",
    ]
    assert [e.key for e in db.config.list()] == [
        "other",
        "s",
        "scheduler.a",
        "scheduler.z",
        "scheduler_x.a",
        "schedulers.b",
    ]


def test_list_treats_like_wildcards_in_the_prefix_literally(db: Database) -> None:
    for key in ["a_b.x", "axb.x", "ab.x"]:
        db.config.set(key=key, value=1)

    assert [e.key for e in db.config.list(prefix="a_")] == ["a_b.x"]
    assert db.config.list(prefix="a%") == []
    assert db.config.list(prefix="nothing") == []


def test_list_refuses_a_prefix_that_is_not_a_string(db: Database) -> None:
    with pytest.raises(InvalidInput):
        db.config.list(prefix=None)  # type: ignore[arg-type]
