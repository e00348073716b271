"""The scheduler loop behind `flowledger scheduler`: fire the due ticks of scheduled
workflows, sleep until the next tick (at most `interval` seconds), until stopped.

Any number of loops may run at once, on any hosts: `db.schedules.fire_due` starts each
tick exactly once whichever loop claims it.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from flowledger.database import Database
from flowledger.errors import Retryable, Unavailable
from flowledger.records.schedules import FiredTick

__all__ = ["SchedulerStats", "run_scheduler"]

engine_log = logging.getLogger("flowledger.engine")
# When a pass fired nothing but a tick looks due by this host's clock, the database's
# clock is behind it: poll at this pace rather than spin until the two agree.
_SKEW_POLL = 0.2


@dataclass
class SchedulerStats:
    """What a scheduler loop did."""

    passes: int = 0
    fired: int = 0
    failed_passes: int = 0


def run_scheduler(
    db: Database,
    *,
    interval: float,
    limit: int,
    stop: threading.Event,
    report: Callable[[list[FiredTick]], None],
    once: bool = False,
) -> SchedulerStats:
    """Fire due ticks until `stop` is set (or after one pass with `once`), handing each
    pass's ticks to `report`. A pass that fails with Unavailable or Retryable is logged
    on flowledger.engine and tried again after `interval` (with `once` it is raised);
    any other error is raised."""
    stats = SchedulerStats()
    while not stop.is_set():
        stats.passes += 1
        try:
            fired = db.schedules.fire_due(limit=limit)
        except (Unavailable, Retryable) as exc:
            if once:
                raise
            stats.failed_passes += 1
            engine_log.warning("scheduler pass failed, trying again in %g s: %s", interval, exc)
            stop.wait(interval)
            continue
        stats.fired += len(fired)
        report(fired)
        if once:
            break
        stop.wait(_pause(db.schedules.next_fire_at(), interval, fired=bool(fired)))
    return stats


def _pause(next_fire_at: datetime.datetime | None, interval: float, *, fired: bool) -> float:
    """Seconds until the next planned tick, at most `interval`: no tick is planned, or a
    new or changed rule (planned by the next pass) may come meanwhile."""
    if next_fire_at is None:
        return interval
    until = (next_fire_at - datetime.datetime.now(datetime.UTC)).total_seconds()
    return min(interval, max(until, 0.0 if fired else _SKEW_POLL))
