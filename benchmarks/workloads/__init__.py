"""The workloads of benchmarks/run.py, one module each, in the order they run.

Each module has NAME (its --only choice), TITLE (its section in RESULTS.md), COMPARES
(what against what), MIN_SCALE (the fewest generated executions it needs) and
`setup(ctx) -> Plan` (the measured callables per contender); `run` measures one.
"""

from __future__ import annotations

from . import claims, depth, log_append, lookups, pages, starts
from ._context import Context, open_context
from ._plan import Direct, Plan, Rate, Sections, Workload, run

ALL: tuple[Workload, ...] = (lookups, pages, depth, log_append, claims, starts)
BY_NAME: dict[str, Workload] = {w.NAME: w for w in ALL}

__all__ = [
    "ALL",
    "BY_NAME",
    "Context",
    "Direct",
    "Plan",
    "Rate",
    "Sections",
    "Workload",
    "open_context",
    "run",
]
