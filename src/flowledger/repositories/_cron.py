"""Cron rules: checked when a workflow is written, evaluated when its schedule fires.

Evaluation is cronsim's (a maintained, dependency-free evaluator): five fields (minute,
hour, day of month, month, day of week) or six (seconds first), with ranges, steps,
lists, names, ``L``, ``W``, ``#`` and ``?`` (as ``*``) in the day fields, plus the
macros below. Rules are evaluated in UTC,
at whole seconds. Shared by both faces: no I/O here.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Iterator
from typing import Final

from cronsim import CronSim, CronSimError

from flowledger.errors import InvalidInput
from flowledger.repositories._checks import as_name

__all__ = ["MACROS", "check_rule", "latest_ticks", "next_tick"]

MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_UTC: Final = datetime.UTC
_SECOND: Final = datetime.timedelta(seconds=1)


def check_rule(rule: object, what: str = "schedule") -> str:
    """`rule` when cronsim can evaluate it; InvalidInput naming `what` (and why) otherwise."""
    text = as_name(rule, what)
    try:
        _ticks(text, datetime.datetime(2000, 1, 1, tzinfo=_UTC), reverse=False)
    except CronSimError as exc:
        raise InvalidInput(
            f"{what} must be a cron rule (5 fields, e.g. '0 3 * * *', or 6 with seconds "
            f"first) or one of {', '.join(sorted(MACROS))}; {text!r}: {exc}"
        ) from exc
    return text


def next_tick(rule: str, after: datetime.datetime) -> datetime.datetime | None:
    """The first tick of `rule` strictly after `after` (None: none before year 10000);
    raises CronSimError for a rule cronsim refuses."""
    # Ticks fall on whole seconds: a tick after the second `after` lies in is after it.
    ticks = _ticks(rule, after.astimezone(_UTC).replace(microsecond=0), reverse=False)
    return next(ticks, None)


def latest_ticks(
    rule: str, since: datetime.datetime, until: datetime.datetime, count: int
) -> list[datetime.datetime]:
    """The last `count` ticks of `rule` in [since, until], oldest first; raises
    CronSimError for a rule cronsim refuses."""
    # Reverse iteration yields ticks strictly before its start: start one second after
    # the whole second `until` lies in, so that a tick at that second is included.
    start = until.astimezone(_UTC).replace(microsecond=0) + _SECOND
    found = itertools.takewhile(lambda t: t >= since, _ticks(rule, start, reverse=True))
    return list(itertools.islice(found, count))[::-1]


def _ticks(rule: str, start: datetime.datetime, *, reverse: bool) -> Iterator[datetime.datetime]:
    # Built here, not in the generator, so that a rule cronsim refuses raises at once.
    ticks = CronSim(_expression(rule), start, reverse=reverse)
    return _within_datetime(ticks)


def _expression(rule: str) -> str:
    """`rule` as cronsim reads it: a macro expanded, and Quartz's "?" ("no specific
    value") in the day-of-month or day-of-week field written as "*", which means the same
    for when a rule fires."""
    macro = MACROS.get(rule.strip().lower())
    if macro is not None:
        return macro
    fields = rule.split()
    days = {len(fields) - 3, len(fields) - 1}
    return " ".join("*" if f == "?" and i in days else f for i, f in enumerate(fields))


def _within_datetime(ticks: Iterator[datetime.datetime]) -> Iterator[datetime.datetime]:
    try:
        yield from ticks
    except (ValueError, OverflowError):
        # Past year 9999 (or before year 1) there is no tick a datetime can hold.
        return
