"""What a workload module is (its name, what it compares, a setup) and how its plan is run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from measure import Op, interleave, median, peak_memory

from ._context import Context

Rate = Callable[[], float]
"""One measurement taken on its own: it does the work and returns a rate per second."""

Sections = dict[str, dict[str, float]]
"""Results: section title -> contender -> figure (per second, or MiB for memory)."""


@dataclass(frozen=True)
class Direct:
    """A contender measured on its own, after the interleaved rounds: `samples` calls of
    `rate` (each returns a rate per second), the median reported."""

    rate: Rate
    samples: int
    # Printed with the last sample once all are taken, e.g. "claims 1w b1: {:,.0f} steps/s".
    announce: str | None = None


def _same(repeats: int) -> int:
    return repeats


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Plan:
    """What a workload's setup hands the runner: the measured callables per contender."""

    # Timed in interleaved rounds, each call's operations per second, after one warm-up call.
    contenders: Mapping[str, Op] = field(default_factory=dict)
    # How many rounds, from --repeats (the heavy workloads run fewer).
    repeats: Callable[[int], int] = _same
    # The title of a section with each contender's peak Python memory (one more call each).
    memory: str | None = None
    # Releases what the setup opened, once the contenders are measured.
    finish: Callable[[], None] = _nothing
    # Measured last, added to the workload's section.
    direct: Mapping[str, Direct] = field(default_factory=dict)


class Workload(Protocol):
    """A module of this package: one workload."""

    NAME: str  # its --only choice
    TITLE: str  # its section in RESULTS.md
    COMPARES: str  # what it compares, against what
    MIN_SCALE: int  # the fewest generated executions it can run on

    def setup(self, ctx: Context) -> Plan: ...


def run(workload: Workload, ctx: Context) -> Sections:
    """The workload's figures, by section; prints each as it is measured."""
    plan = workload.setup(ctx)
    figures: dict[str, float] = {}
    sections = {workload.TITLE: figures}
    try:
        if plan.contenders:
            figures.update(interleave(plan.contenders, plan.repeats(ctx.repeats)))
            rates = ", ".join(f"{p} {v:,.0f}/s" for p, v in figures.items())
            print(f"{workload.TITLE}: {rates}", flush=True)
        if plan.memory:
            sections[plan.memory] = peak_memory(plan.contenders)
    finally:
        plan.finish()
    for name, direct in plan.direct.items():
        figures[name] = _measure_direct(direct)
    return sections


def _measure_direct(direct: Direct) -> float:
    samples = [direct.rate() for _ in range(direct.samples)]
    if direct.announce:
        print(direct.announce.format(samples[-1]), flush=True)
    return median(samples)
