# Generated from src/flowledger/aio/repositories/registry.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""Every repository, as attributes of `Database` and `Transaction`.

Each is built on first use and bound to its owner, which hands it the executor (the
pool for a database, one connection for a transaction), the cursor codec, and its
neighbours: a repository reaches another only as `self._repos.<name>`.
"""

from __future__ import annotations

import datetime
import math
from functools import cached_property

from flowledger.records.metrics import EngineMetrics
from flowledger.repositories.actions import ActionsRepository
from flowledger.repositories.api_keys import ApiKeysRepository
from flowledger.repositories.base import Executor
from flowledger.repositories.config import ConfigRepository
from flowledger.repositories.executions import ExecutionsRepository
from flowledger.repositories.memory import (
    MemoryItemsRepository,
    MemoryModulesRepository,
    MemoryPacksRepository,
)
from flowledger.repositories.metrics import MetricsRepository
from flowledger.repositories.outbox import OutboxRepository
from flowledger.repositories.packs import PacksRepository
from flowledger.repositories.pagination import CursorCodec
from flowledger.repositories.queues import QueuesRepository
from flowledger.repositories.schedules import SchedulesRepository
from flowledger.repositories.sessions import SessionsRepository
from flowledger.repositories.signals import SignalsRepository
from flowledger.repositories.stages import StagesRepository
from flowledger.repositories.step_logs import StepLogsRepository
from flowledger.repositories.steps import StepsRepository
from flowledger.repositories.tasks import TasksRepository
from flowledger.repositories.tool_executions import ToolExecutionsRepository
from flowledger.repositories.users import UsersRepository
from flowledger.repositories.workflows import WorkflowsRepository

__all__ = ["Repositories"]


class Repositories:
    """The repository attributes shared by a database, its transactions and pinned blocks."""

    def __init__(self, executor: Executor, codec: CursorCodec, slow: float = math.inf) -> None:
        self._executor = executor
        self._codec = codec
        # Seconds over which a repository call is logged as slow (math.inf: never).
        self._slow = slow

    @cached_property
    def users(self) -> UsersRepository:
        """Users: create, look up by id or email (any case), list, update, delete."""
        return UsersRepository(self)

    @cached_property
    def api_keys(self) -> ApiKeysRepository:
        """API keys: issue (secret shown once), verify, revoke, list a user's keys."""
        return ApiKeysRepository(self)

    @cached_property
    def packs(self) -> PacksRepository:
        """Packs: the catalog's namespaces of actions."""
        return PacksRepository(self)

    @cached_property
    def actions(self) -> ActionsRepository:
        """Actions of packs, and their link to the workflow implementing them."""
        return ActionsRepository(self)

    @cached_property
    def executions(self) -> ExecutionsRepository:
        """Executions: start (idempotent), list, pause/resume/cancel/fail, prune finished."""
        return ExecutionsRepository(self)

    @cached_property
    def steps(self) -> StepsRepository:
        """Steps: claim with a lease, heartbeat, complete, fail with retries, reap."""
        return StepsRepository(self)

    @cached_property
    def queues(self) -> QueuesRepository:
        """Named queues: pause and resume (durable), list with queued and running counts."""
        return QueuesRepository(self)

    @cached_property
    def signals(self) -> SignalsRepository:
        """Signals to executions: each consumed once by a step waiting for its name."""
        return SignalsRepository(self)

    @cached_property
    def outbox(self) -> OutboxRepository:
        """Outbox: events appended in the caller's transaction, relayed, pruned."""
        return OutboxRepository(self)

    @cached_property
    def step_logs(self) -> StepLogsRepository:
        """Step logs: lines appended with binary COPY, read by step or execution."""
        return StepLogsRepository(self)

    @cached_property
    def tool_executions(self) -> ToolExecutionsRepository:
        """Tool calls of steps and sessions: start, finish, per-tool statistics."""
        return ToolExecutionsRepository(self)

    @cached_property
    def workflows(self) -> WorkflowsRepository:
        """Workflows: create, look up (id, owner+name, "<email>/<name>"), optimistic-locking
        edits, filtered keyset listing, definition versions."""
        return WorkflowsRepository(self)

    @cached_property
    def stages(self) -> StagesRepository:
        """Stages of workflows: add, reorder, remove, update; positions stay 0..n-1."""
        return StagesRepository(self)

    @cached_property
    def schedules(self) -> SchedulesRepository:
        """Schedules of cron-triggered workflows: fire due ticks once each, catch-up policy."""
        return SchedulesRepository(self)

    @cached_property
    def tasks(self) -> TasksRepository:
        """Tasks: planning and work items; attach to workflows in order, reorder, list."""
        return TasksRepository(self)

    @cached_property
    def sessions(self) -> SessionsRepository:
        """Client sessions: open, heartbeat, close, deactivate stale ones, list active."""
        return SessionsRepository(self)

    @cached_property
    def config(self) -> ConfigRepository:
        """Configuration: typed reads of dotted keys, compare-and-set writes, prefix lists."""
        return ConfigRepository(self)

    @cached_property
    def memory_items(self) -> MemoryItemsRepository:
        """Memory items: deduplicated create, recall lists, lifecycle, usage, expiry."""
        return MemoryItemsRepository(self)

    @cached_property
    def memory_modules(self) -> MemoryModulesRepository:
        """Context modules of memory and their ordered items."""
        return MemoryModulesRepository(self)

    @cached_property
    def memory_packs(self) -> MemoryPacksRepository:
        """Immutable context packs built from modules under a token budget."""
        return MemoryPacksRepository(self)

    def metrics(
        self, *, tool_window: datetime.timedelta = datetime.timedelta(minutes=15)
    ) -> EngineMetrics:
        """A snapshot of the engine: the step queue (due, delayed, oldest due age, running,
        expired leases), executions per status, steps per status (the planner's estimate),
        the outbox backlog and its oldest age, per-tool failure rates over `tool_window`.
        Each figure comes from an indexed query. Raises InvalidInput (window)."""
        return self._metrics.collect(tool_window=tool_window)

    @cached_property
    def _metrics(self) -> MetricsRepository:
        return MetricsRepository(self)
