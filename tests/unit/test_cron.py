"""Cron rules as the scheduler evaluates them (no database): checks, macros, Quartz's
"?", seconds, the ticks of a catch-up window and the end of time."""

from __future__ import annotations

import datetime

import pytest

from flowledger.errors import InvalidInput
from flowledger.repositories._cron import MACROS, check_rule, latest_ticks, next_tick

UTC = datetime.UTC
T = datetime.datetime(2026, 3, 4, 10, 7, 30, 250_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("*/5 * * * *", datetime.datetime(2026, 3, 4, 10, 10, tzinfo=UTC)),
        ("0 12 * * *", datetime.datetime(2026, 3, 4, 12, 0, tzinfo=UTC)),
        ("0 0 12 * * ?", datetime.datetime(2026, 3, 4, 12, 0, tzinfo=UTC)),
        ("0 0 12 ? * MON", datetime.datetime(2026, 3, 9, 12, 0, tzinfo=UTC)),
        ("*/10 * * * * *", datetime.datetime(2026, 3, 4, 10, 7, 40, tzinfo=UTC)),
        ("0 0 L * *", datetime.datetime(2026, 3, 31, 0, 0, tzinfo=UTC)),
        ("@hourly", datetime.datetime(2026, 3, 4, 11, 0, tzinfo=UTC)),
        ("@DAILY", datetime.datetime(2026, 3, 5, 0, 0, tzinfo=UTC)),
        ("@weekly", datetime.datetime(2026, 3, 8, 0, 0, tzinfo=UTC)),
        ("@monthly", datetime.datetime(2026, 4, 1, 0, 0, tzinfo=UTC)),
        ("@yearly", datetime.datetime(2027, 1, 1, 0, 0, tzinfo=UTC)),
    ],
)
def test_next_tick_is_the_first_strictly_after(rule: str, expected: datetime.datetime) -> None:
    assert check_rule(rule) == rule
    assert next_tick(rule, T) == expected
    assert next_tick(rule, expected) != expected


def test_every_macro_is_a_rule() -> None:
    assert {check_rule(m) for m in MACROS} == set(MACROS)


def test_next_tick_reads_any_time_zone_as_its_instant() -> None:
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    assert next_tick("0 * * * *", T.astimezone(tokyo)) == datetime.datetime(
        2026, 3, 4, 11, 0, tzinfo=UTC
    )


def test_latest_ticks_are_the_last_ones_in_the_window_oldest_first() -> None:
    since = datetime.datetime(2026, 3, 4, 9, 0, tzinfo=UTC)
    every = latest_ticks("*/15 * * * *", since, T, 100)
    assert every[0] == since and every[-1] == datetime.datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
    assert len(every) == 5
    assert latest_ticks("*/15 * * * *", since, T, 2) == every[-2:]
    # Both ends are included.
    end = datetime.datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
    assert latest_ticks("*/15 * * * *", since, end, 1) == [end]
    assert latest_ticks("*/15 * * * *", end + datetime.timedelta(seconds=1), T, 5) == []


def test_no_tick_past_the_year_9999() -> None:
    late = datetime.datetime(9999, 6, 1, tzinfo=UTC)
    assert next_tick("0 0 1 1 *", late) is None


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("61 * * * *", "Bad minute"),
        ("0 24 * * *", "Bad hour"),
        ("0 0 30 2 *", "Bad day-of-month"),
        ("0 0 * 13 *", "Bad month"),
        ("0 0 * * 8", "Bad day-of-week"),
        ("* * *", "Wrong number of fields"),
        ("@every 5m", "Wrong number of fields"),
        ("", "must not be blank"),
        ("x" * 256, "at most 255 characters"),
        (5, "must be a string"),
    ],
)
def test_check_rule_refuses_what_cannot_be_evaluated(rule: object, reason: str) -> None:
    with pytest.raises(InvalidInput, match="schedule") as info:
        check_rule(rule)
    assert reason in str(info.value)
