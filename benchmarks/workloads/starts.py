"""Executions started per second: flowledger `executions.start` (the execution, its 3 steps
and an outbox event in one transaction), on its own: no peer has the same transaction."""

from __future__ import annotations

from measure import Op

from ._context import Context
from ._plan import Plan

NAME = "starts"
TITLE = "executions started (execution + 3 steps + outbox event)"
COMPARES = "executions.start on its own"
MIN_SCALE = 1
CALLS = 300  # starts per measured call


def setup(ctx: Context) -> Plan:
    """The one contender: CALLS starts of an active workflow."""
    row = ctx.psy.execute(
        "SELECT id FROM workflows WHERE status = 'active' ORDER BY id LIMIT 1"
    ).fetchone()
    assert row
    workflow_id = row[0]

    def start() -> int:
        for _ in range(CALLS):
            ctx.db.executions.start(workflow_id=workflow_id, parameters={"bench": True})
        return CALLS

    contenders: dict[str, Op] = {"flowledger executions.start": start}
    return Plan(contenders)
