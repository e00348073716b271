"""Records of the schedules of workflows triggered by cron rules."""

from __future__ import annotations

import datetime
import uuid
from typing import Final, Literal, get_args

import msgspec

from flowledger.records.runs import Execution

__all__ = [
    "CATCH_UP_POLICIES",
    "CatchUp",
    "DueSchedule",
    "FiredTick",
    "Schedule",
    "UnplannedSchedule",
]

# What a schedule does with ticks missed while no scheduler ran: fire only the most recent
# one, or every one of them (at most max_catch_up, the most recent).
CatchUp = Literal["latest", "all"]
CATCH_UP_POLICIES: Final[frozenset[str]] = frozenset(get_args(CatchUp))


class Schedule(msgspec.Struct, frozen=True, gc=False):
    """The schedule of a workflow whose trigger_type is "schedule"."""

    workflow_id: uuid.UUID
    # The workflow's cron rule (workflows.schedule).
    rule: str
    catch_up: CatchUp
    max_catch_up: int
    # When the current rule was set; its first tick is the first one after this.
    rule_set_at: datetime.datetime
    # None until a scheduler planned the current rule (or when it cannot be evaluated).
    next_fire_at: datetime.datetime | None
    last_fired_at: datetime.datetime | None
    # Why the rule cannot be evaluated; the schedule does not fire until the rule changes.
    error: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


class FiredTick(msgspec.Struct, frozen=True, gc=False):
    """One tick a scheduler fired: the workflow, the tick, and the execution it started."""

    workflow_id: uuid.UUID
    tick: datetime.datetime
    execution: Execution


class UnplannedSchedule(msgspec.Struct, frozen=True, gc=False):
    """A schedule whose rule is new or changed: its next tick is not computed yet."""

    workflow_id: uuid.UUID
    rule: str
    rule_set_at: datetime.datetime


class DueSchedule(msgspec.Struct, frozen=True, gc=False):
    """A schedule with a tick due, claimed by one scheduler."""

    workflow_id: uuid.UUID
    rule: str
    # Enabled and active: its ticks start executions; otherwise they pass unfired.
    startable: bool
    catch_up: CatchUp
    max_catch_up: int
    next_fire_at: datetime.datetime
