# Generated from src/flowledger/aio/repositories/registry.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""Every repository, as attributes of `Database` and `Transaction`; their read
methods alone, as attributes of `Replica`.

Each repository's read methods (lookups, lists, statistics: SQL that writes nothing) live
in its reader class, which the full repository extends: a replica's `steps` is an
`StepsReader`, which has no `claim` at all. Each is built on first use and bound to
its owner, which hands it the executor (the pool for a database, one connection for a
transaction, the replica's pool), the cursor codec, and its neighbours: a repository
reaches another only as `self._repos.<name>`.
"""

from __future__ import annotations

import datetime
import math
from functools import cached_property

from flowledger.records.metrics import EngineMetrics
from flowledger.repositories.actions import ActionsReader, ActionsRepository
from flowledger.repositories.api_keys import ApiKeysReader, ApiKeysRepository
from flowledger.repositories.base import Executor
from flowledger.repositories.config import ConfigReader, ConfigRepository
from flowledger.repositories.executions import ExecutionsReader, ExecutionsRepository
from flowledger.repositories.memory import (
    MemoryItemsReader,
    MemoryItemsRepository,
    MemoryModulesReader,
    MemoryModulesRepository,
    MemoryPacksReader,
    MemoryPacksRepository,
)
from flowledger.repositories.metrics import MetricsRepository
from flowledger.repositories.outbox import OutboxReader, OutboxRepository
from flowledger.repositories.packs import PacksReader, PacksRepository
from flowledger.repositories.pagination import CursorCodec
from flowledger.repositories.queues import QueuesReader, QueuesRepository
from flowledger.repositories.schedules import SchedulesReader, SchedulesRepository
from flowledger.repositories.sessions import SessionsReader, SessionsRepository
from flowledger.repositories.signals import SignalsReader, SignalsRepository
from flowledger.repositories.stages import StagesReader, StagesRepository
from flowledger.repositories.step_logs import StepLogsReader, StepLogsRepository
from flowledger.repositories.steps import StepsReader, StepsRepository
from flowledger.repositories.tasks import TasksReader, TasksRepository
from flowledger.repositories.tool_executions import (
    ToolExecutionsReader,
    ToolExecutionsRepository,
)
from flowledger.repositories.users import UsersReader, UsersRepository
from flowledger.repositories.workflows import WorkflowsReader, WorkflowsRepository

__all__ = ["ReadRepositories", "Repositories"]


class ReadRepositories:
    """The read methods of every repository (lookups, lists, statistics): what a replica
    serves, and what a database, its transactions and pinned blocks extend."""

    def __init__(self, executor: Executor, codec: CursorCodec, slow: float = math.inf) -> None:
        self._executor = executor
        self._codec = codec
        # Seconds over which a repository call is logged as slow (math.inf: never).
        self._slow = slow

    @cached_property
    def users(self) -> UsersReader:
        """Users: look up by id or email (any case), list."""
        return UsersReader(self)

    @cached_property
    def api_keys(self) -> ApiKeysReader:
        """API keys: verify (recording nothing), look up, list a user's keys."""
        return ApiKeysReader(self)

    @cached_property
    def packs(self) -> PacksReader:
        """Packs: look up by id or ref, list."""
        return PacksReader(self)

    @cached_property
    def actions(self) -> ActionsReader:
        """Actions: look up by id, ref or workflow, list by pack or the workflow-backed ones."""
        return ActionsReader(self)

    @cached_property
    def executions(self) -> ExecutionsReader:
        """Executions: look up, list, find paused ones, progress."""
        return ExecutionsReader(self)

    @cached_property
    def steps(self) -> StepsReader:
        """Steps: look up, list, attempts, find by task or child, retries due, overruns."""
        return StepsReader(self)

    @cached_property
    def queues(self) -> QueuesReader:
        """Named queues: list with queued and running counts."""
        return QueuesReader(self)

    @cached_property
    def signals(self) -> SignalsReader:
        """Signals to executions: list an execution's."""
        return SignalsReader(self)

    @cached_property
    def schedules(self) -> SchedulesReader:
        """Schedules of cron-triggered workflows: look up, list, the next planned tick."""
        return SchedulesReader(self)

    @cached_property
    def tasks(self) -> TasksReader:
        """Tasks: look up, keyset listings, counts by status, a workflow's tasks in order."""
        return TasksReader(self)

    @cached_property
    def outbox(self) -> OutboxReader:
        """Outbox events of an aggregate."""
        return OutboxReader(self)

    @cached_property
    def step_logs(self) -> StepLogsReader:
        """Step logs: pages of a step's or an execution's lines."""
        return StepLogsReader(self)

    @cached_property
    def tool_executions(self) -> ToolExecutionsReader:
        """Tool calls: look up, per-tool statistics."""
        return ToolExecutionsReader(self)

    @cached_property
    def workflows(self) -> WorkflowsReader:
        """Workflows: look up (id, owner+name, ref), filtered keyset lists, versions."""
        return WorkflowsReader(self)

    @cached_property
    def stages(self) -> StagesReader:
        """Stages of a workflow in position order, one by id."""
        return StagesReader(self)

    @cached_property
    def sessions(self) -> SessionsReader:
        """Client sessions: look up by id or client, list active ones."""
        return SessionsReader(self)

    @cached_property
    def config(self) -> ConfigReader:
        """Configuration: typed reads of dotted keys, raw entries, prefix lists."""
        return ConfigReader(self)

    @cached_property
    def memory_items(self) -> MemoryItemsReader:
        """Memory items: look up, recall lists."""
        return MemoryItemsReader(self)

    @cached_property
    def memory_modules(self) -> MemoryModulesReader:
        """Context modules: look up, list, their ordered items."""
        return MemoryModulesReader(self)

    @cached_property
    def memory_packs(self) -> MemoryPacksReader:
        """Context packs: look up, list."""
        return MemoryPacksReader(self)

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


class Repositories(ReadRepositories):
    """The repository attributes shared by a database, its transactions and pinned blocks:
    every read method and every write."""

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
