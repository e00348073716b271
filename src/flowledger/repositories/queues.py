# Generated from src/flowledger/aio/repositories/queues.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""Queues: pause and resume the queues steps run in, and list them with their load.

A step runs in the queue of its stage (`NewStage.queue`, 'default' unless named). Pausing
is a row in queue_states: it survives restarts, and every claim reads it in the claim
statement itself (no extra round trip), so a claim that starts after `pause` returned
takes none of the queue's steps.
"""

from __future__ import annotations

import builtins

from flowledger.records.runs import QueueMark, QueueState
from flowledger.repositories._checks import as_queue
from flowledger.repositories.base import Repository

__all__ = ["QueuesReader", "QueuesRepository"]


class QueuesReader(Repository):
    """Named queues: list them with their counts."""

    def list(self) -> builtins.list[QueueState]:
        """Every queue holding queued or running steps, or ever paused or resumed, by name,
        with its queued and running steps."""
        found: builtins.list[QueueState] = self._fetch("list_queues", {})
        return found


class QueuesRepository(QueuesReader):
    """Named queues: pause, resume, list."""

    def pause(self, *, name: str) -> QueueMark:
        """The queue, now paused (also one no step uses yet): its queued steps stay queued
        and no claim starting from now on takes them. Raises InvalidInput."""
        found: QueueMark = self._fetch("set_queue_paused", {"name": as_queue(name, "name")})
        return found

    def resume(self, *, name: str) -> QueueMark:
        """The queue, running again; the workers' wake-up is sent in the same statement when
        it holds queued steps. Raises InvalidInput."""
        found: QueueMark = self._fetch("set_queue_running", {"name": as_queue(name, "name")})
        return found
