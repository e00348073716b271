"""Every repository, as attributes of `AsyncDatabase` and `AsyncTransaction`.

Each is built on first use and bound to its owner, which hands it the executor (the
pool for a database, one connection for a transaction), the cursor codec, and its
neighbours: a repository reaches another only as `self._repos.<name>`.
"""

from __future__ import annotations

import datetime
import math
from functools import cached_property

from flowledger.aio.repositories.actions import AsyncActionsRepository
from flowledger.aio.repositories.api_keys import AsyncApiKeysRepository
from flowledger.aio.repositories.base import AsyncExecutor
from flowledger.aio.repositories.config import AsyncConfigRepository
from flowledger.aio.repositories.executions import AsyncExecutionsRepository
from flowledger.aio.repositories.memory import (
    AsyncMemoryItemsRepository,
    AsyncMemoryModulesRepository,
    AsyncMemoryPacksRepository,
)
from flowledger.aio.repositories.metrics import AsyncMetricsRepository
from flowledger.aio.repositories.outbox import AsyncOutboxRepository
from flowledger.aio.repositories.packs import AsyncPacksRepository
from flowledger.aio.repositories.queues import AsyncQueuesRepository
from flowledger.aio.repositories.schedules import AsyncSchedulesRepository
from flowledger.aio.repositories.sessions import AsyncSessionsRepository
from flowledger.aio.repositories.signals import AsyncSignalsRepository
from flowledger.aio.repositories.stages import AsyncStagesRepository
from flowledger.aio.repositories.step_logs import AsyncStepLogsRepository
from flowledger.aio.repositories.steps import AsyncStepsRepository
from flowledger.aio.repositories.tasks import AsyncTasksRepository
from flowledger.aio.repositories.tool_executions import AsyncToolExecutionsRepository
from flowledger.aio.repositories.users import AsyncUsersRepository
from flowledger.aio.repositories.workflows import AsyncWorkflowsRepository
from flowledger.records.metrics import EngineMetrics
from flowledger.repositories.pagination import CursorCodec

__all__ = ["AsyncRepositories"]


class AsyncRepositories:
    """The repository attributes shared by a database, its transactions and pinned blocks."""

    def __init__(self, executor: AsyncExecutor, codec: CursorCodec, slow: float = math.inf) -> None:
        self._executor = executor
        self._codec = codec
        # Seconds over which a repository call is logged as slow (math.inf: never).
        self._slow = slow

    @cached_property
    def users(self) -> AsyncUsersRepository:
        """Users: create, look up by id or email (any case), list, update, delete."""
        return AsyncUsersRepository(self)

    @cached_property
    def api_keys(self) -> AsyncApiKeysRepository:
        """API keys: issue (secret shown once), verify, revoke, list a user's keys."""
        return AsyncApiKeysRepository(self)

    @cached_property
    def packs(self) -> AsyncPacksRepository:
        """Packs: the catalog's namespaces of actions."""
        return AsyncPacksRepository(self)

    @cached_property
    def actions(self) -> AsyncActionsRepository:
        """Actions of packs, and their link to the workflow implementing them."""
        return AsyncActionsRepository(self)

    @cached_property
    def executions(self) -> AsyncExecutionsRepository:
        """Executions: start (idempotent), list, pause/resume/cancel/fail, prune finished."""
        return AsyncExecutionsRepository(self)

    @cached_property
    def steps(self) -> AsyncStepsRepository:
        """Steps: claim with a lease, heartbeat, complete, fail with retries, reap."""
        return AsyncStepsRepository(self)

    @cached_property
    def queues(self) -> AsyncQueuesRepository:
        """Named queues: pause and resume (durable), list with queued and running counts."""
        return AsyncQueuesRepository(self)

    @cached_property
    def signals(self) -> AsyncSignalsRepository:
        """Signals to executions: each consumed once by a step waiting for its name."""
        return AsyncSignalsRepository(self)

    @cached_property
    def outbox(self) -> AsyncOutboxRepository:
        """Outbox: events appended in the caller's transaction, relayed, pruned."""
        return AsyncOutboxRepository(self)

    @cached_property
    def step_logs(self) -> AsyncStepLogsRepository:
        """Step logs: lines appended with binary COPY, read by step or execution."""
        return AsyncStepLogsRepository(self)

    @cached_property
    def tool_executions(self) -> AsyncToolExecutionsRepository:
        """Tool calls of steps and sessions: start, finish, per-tool statistics."""
        return AsyncToolExecutionsRepository(self)

    @cached_property
    def workflows(self) -> AsyncWorkflowsRepository:
        """Workflows: create, look up (id, owner+name, "<email>/<name>"), optimistic-locking
        edits, filtered keyset listing, definition versions."""
        return AsyncWorkflowsRepository(self)

    @cached_property
    def stages(self) -> AsyncStagesRepository:
        """Stages of workflows: add, reorder, remove, update; positions stay 0..n-1."""
        return AsyncStagesRepository(self)

    @cached_property
    def schedules(self) -> AsyncSchedulesRepository:
        """Schedules of cron-triggered workflows: fire due ticks once each, catch-up policy."""
        return AsyncSchedulesRepository(self)

    @cached_property
    def tasks(self) -> AsyncTasksRepository:
        """Tasks: planning and work items; attach to workflows in order, reorder, list."""
        return AsyncTasksRepository(self)

    @cached_property
    def sessions(self) -> AsyncSessionsRepository:
        """Client sessions: open, heartbeat, close, deactivate stale ones, list active."""
        return AsyncSessionsRepository(self)

    @cached_property
    def config(self) -> AsyncConfigRepository:
        """Configuration: typed reads of dotted keys, compare-and-set writes, prefix lists."""
        return AsyncConfigRepository(self)

    @cached_property
    def memory_items(self) -> AsyncMemoryItemsRepository:
        """Memory items: deduplicated create, recall lists, lifecycle, usage, expiry."""
        return AsyncMemoryItemsRepository(self)

    @cached_property
    def memory_modules(self) -> AsyncMemoryModulesRepository:
        """Context modules of memory and their ordered items."""
        return AsyncMemoryModulesRepository(self)

    @cached_property
    def memory_packs(self) -> AsyncMemoryPacksRepository:
        """Immutable context packs built from modules under a token budget."""
        return AsyncMemoryPacksRepository(self)

    async def metrics(
        self, *, tool_window: datetime.timedelta = datetime.timedelta(minutes=15)
    ) -> EngineMetrics:
        """A snapshot of the engine: the step queue (due, delayed, oldest due age, running,
        expired leases), executions per status, steps per status (the planner's estimate),
        the outbox backlog and its oldest age, per-tool failure rates over `tool_window`.
        Each figure comes from an indexed query. Raises InvalidInput (window)."""
        return await self._metrics.collect(tool_window=tool_window)

    @cached_property
    def _metrics(self) -> AsyncMetricsRepository:
        return AsyncMetricsRepository(self)
