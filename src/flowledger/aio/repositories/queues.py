"""Queues: pause and resume the queues steps run in, and list them with their load.

A step runs in the queue of its stage (`NewStage.queue`, 'default' unless named). Pausing
is a row in queue_states: it survives restarts, and every claim reads it in the claim
statement itself (no extra round trip), so a claim that starts after `pause` returned
takes none of the queue's steps.
"""

from __future__ import annotations

import builtins

from flowledger.aio.repositories.base import AsyncRepository
from flowledger.records.runs import QueueMark, QueueState
from flowledger.repositories._checks import as_queue

__all__ = ["AsyncQueuesReader", "AsyncQueuesRepository"]


class AsyncQueuesReader(AsyncRepository):
    """Named queues: list them with their counts."""

    async def list(self) -> builtins.list[QueueState]:
        """Every queue holding queued or running steps, or ever paused or resumed, by name,
        with its queued and running steps."""
        found: builtins.list[QueueState] = await self._fetch("list_queues", {})
        return found


class AsyncQueuesRepository(AsyncQueuesReader):
    """Named queues: pause, resume, list."""

    async def pause(self, *, name: str) -> QueueMark:
        """The queue, now paused (also one no step uses yet): its queued steps stay queued
        and no claim starting from now on takes them. Raises InvalidInput."""
        found: QueueMark = await self._fetch("set_queue_paused", {"name": as_queue(name, "name")})
        return found

    async def resume(self, *, name: str) -> QueueMark:
        """The queue, running again; the workers' wake-up is sent in the same statement when
        it holds queued steps. Raises InvalidInput."""
        found: QueueMark = await self._fetch("set_queue_running", {"name": as_queue(name, "name")})
        return found
