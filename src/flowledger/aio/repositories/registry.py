"""Every repository, as attributes of `AsyncDatabase` and `AsyncTransaction`; their read
methods alone, as attributes of `AsyncReplica`.

Each repository's read methods (lookups, lists, statistics: SQL that writes nothing) live
in its reader class, which the full repository extends: a replica's `steps` is an
`AsyncStepsReader`, which has no `claim` at all. Each is built on first use and bound to
its owner, which hands it the executor (the pool for a database, one connection for a
transaction, the replica's pool), the cursor codec, and its neighbours: a repository
reaches another only as `self._repos.<name>`.
"""

from __future__ import annotations

import datetime
import math
from functools import cached_property

from flowledger.aio.repositories.actions import AsyncActionsReader, AsyncActionsRepository
from flowledger.aio.repositories.api_keys import AsyncApiKeysReader, AsyncApiKeysRepository
from flowledger.aio.repositories.base import AsyncExecutor
from flowledger.aio.repositories.config import AsyncConfigReader, AsyncConfigRepository
from flowledger.aio.repositories.executions import AsyncExecutionsReader, AsyncExecutionsRepository
from flowledger.aio.repositories.memory import (
    AsyncMemoryItemsReader,
    AsyncMemoryItemsRepository,
    AsyncMemoryModulesReader,
    AsyncMemoryModulesRepository,
    AsyncMemoryPacksReader,
    AsyncMemoryPacksRepository,
)
from flowledger.aio.repositories.metrics import AsyncMetricsRepository
from flowledger.aio.repositories.outbox import AsyncOutboxReader, AsyncOutboxRepository
from flowledger.aio.repositories.packs import AsyncPacksReader, AsyncPacksRepository
from flowledger.aio.repositories.queues import AsyncQueuesReader, AsyncQueuesRepository
from flowledger.aio.repositories.schedules import AsyncSchedulesReader, AsyncSchedulesRepository
from flowledger.aio.repositories.sessions import AsyncSessionsReader, AsyncSessionsRepository
from flowledger.aio.repositories.signals import AsyncSignalsReader, AsyncSignalsRepository
from flowledger.aio.repositories.stages import AsyncStagesReader, AsyncStagesRepository
from flowledger.aio.repositories.step_logs import AsyncStepLogsReader, AsyncStepLogsRepository
from flowledger.aio.repositories.steps import AsyncStepsReader, AsyncStepsRepository
from flowledger.aio.repositories.tasks import AsyncTasksReader, AsyncTasksRepository
from flowledger.aio.repositories.tool_executions import (
    AsyncToolExecutionsReader,
    AsyncToolExecutionsRepository,
)
from flowledger.aio.repositories.users import AsyncUsersReader, AsyncUsersRepository
from flowledger.aio.repositories.workflows import AsyncWorkflowsReader, AsyncWorkflowsRepository
from flowledger.records.metrics import EngineMetrics
from flowledger.repositories.pagination import CursorCodec

__all__ = ["AsyncReadRepositories", "AsyncRepositories"]


class AsyncReadRepositories:
    """The read methods of every repository (lookups, lists, statistics): what a replica
    serves, and what a database, its transactions and pinned blocks extend."""

    def __init__(self, executor: AsyncExecutor, codec: CursorCodec, slow: float = math.inf) -> None:
        self._executor = executor
        self._codec = codec
        # Seconds over which a repository call is logged as slow (math.inf: never).
        self._slow = slow

    @cached_property
    def users(self) -> AsyncUsersReader:
        """Users: look up by id or email (any case), list."""
        return AsyncUsersReader(self)

    @cached_property
    def api_keys(self) -> AsyncApiKeysReader:
        """API keys: verify (recording nothing), look up, list a user's keys."""
        return AsyncApiKeysReader(self)

    @cached_property
    def packs(self) -> AsyncPacksReader:
        """Packs: look up by id or ref, list."""
        return AsyncPacksReader(self)

    @cached_property
    def actions(self) -> AsyncActionsReader:
        """Actions: look up by id, ref or workflow, list by pack or the workflow-backed ones."""
        return AsyncActionsReader(self)

    @cached_property
    def executions(self) -> AsyncExecutionsReader:
        """Executions: look up, list, find paused ones, progress."""
        return AsyncExecutionsReader(self)

    @cached_property
    def steps(self) -> AsyncStepsReader:
        """Steps: look up, list, attempts, find by task or child, retries due, overruns."""
        return AsyncStepsReader(self)

    @cached_property
    def queues(self) -> AsyncQueuesReader:
        """Named queues: list with queued and running counts."""
        return AsyncQueuesReader(self)

    @cached_property
    def signals(self) -> AsyncSignalsReader:
        """Signals to executions: list an execution's."""
        return AsyncSignalsReader(self)

    @cached_property
    def schedules(self) -> AsyncSchedulesReader:
        """Schedules of cron-triggered workflows: look up, list, the next planned tick."""
        return AsyncSchedulesReader(self)

    @cached_property
    def tasks(self) -> AsyncTasksReader:
        """Tasks: look up, keyset listings, counts by status, a workflow's tasks in order."""
        return AsyncTasksReader(self)

    @cached_property
    def outbox(self) -> AsyncOutboxReader:
        """Outbox events of an aggregate."""
        return AsyncOutboxReader(self)

    @cached_property
    def step_logs(self) -> AsyncStepLogsReader:
        """Step logs: pages of a step's or an execution's lines."""
        return AsyncStepLogsReader(self)

    @cached_property
    def tool_executions(self) -> AsyncToolExecutionsReader:
        """Tool calls: look up, per-tool statistics."""
        return AsyncToolExecutionsReader(self)

    @cached_property
    def workflows(self) -> AsyncWorkflowsReader:
        """Workflows: look up (id, owner+name, ref), filtered keyset lists, versions."""
        return AsyncWorkflowsReader(self)

    @cached_property
    def stages(self) -> AsyncStagesReader:
        """Stages of a workflow in position order, one by id."""
        return AsyncStagesReader(self)

    @cached_property
    def sessions(self) -> AsyncSessionsReader:
        """Client sessions: look up by id or client, list active ones."""
        return AsyncSessionsReader(self)

    @cached_property
    def config(self) -> AsyncConfigReader:
        """Configuration: typed reads of dotted keys, raw entries, prefix lists."""
        return AsyncConfigReader(self)

    @cached_property
    def memory_items(self) -> AsyncMemoryItemsReader:
        """Memory items: look up, recall lists."""
        return AsyncMemoryItemsReader(self)

    @cached_property
    def memory_modules(self) -> AsyncMemoryModulesReader:
        """Context modules: look up, list, their ordered items."""
        return AsyncMemoryModulesReader(self)

    @cached_property
    def memory_packs(self) -> AsyncMemoryPacksReader:
        """Context packs: look up, list."""
        return AsyncMemoryPacksReader(self)

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


class AsyncRepositories(AsyncReadRepositories):
    """The repository attributes shared by a database, its transactions and pinned blocks:
    every read method and every write."""

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
