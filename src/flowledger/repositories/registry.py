"""Every repository, as attributes of `Database` and `Transaction`.

Each is built on first use and bound to the owner's executor: the pool for a Database,
one connection for a Transaction.
"""

from __future__ import annotations

from functools import cached_property

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
from flowledger.repositories.outbox import OutboxRepository
from flowledger.repositories.packs import PacksRepository
from flowledger.repositories.pagination import CursorCodec
from flowledger.repositories.sessions import SessionsRepository
from flowledger.repositories.stages import StagesRepository
from flowledger.repositories.step_logs import StepLogsRepository
from flowledger.repositories.steps import StepsRepository
from flowledger.repositories.tool_executions import ToolExecutionsRepository
from flowledger.repositories.users import UsersRepository
from flowledger.repositories.workflows import WorkflowsRepository


class Repositories:
    """The repository attributes shared by Database and Transaction."""

    def __init__(self, executor: Executor, codec: CursorCodec) -> None:
        self._executor = executor
        self._codec = codec

    # Repository properties follow, one per aggregate, e.g.:
    #
    #     @cached_property
    #     def users(self) -> UsersRepository:
    #         """Users: ..."""
    #         return UsersRepository(self._executor, self._codec)

    @cached_property
    def users(self) -> UsersRepository:
        """Users: create, look up by id or email (any case), list, update, delete."""
        return UsersRepository(self._executor, self._codec)

    @cached_property
    def api_keys(self) -> ApiKeysRepository:
        """API keys: issue (secret shown once), verify, revoke, list a user's keys."""
        return ApiKeysRepository(self._executor, self._codec)

    @cached_property
    def packs(self) -> PacksRepository:
        """Packs: the catalog's namespaces of actions."""
        return PacksRepository(self._executor, self._codec)

    @cached_property
    def actions(self) -> ActionsRepository:
        """Actions of packs, and their link to the workflow implementing them."""
        return ActionsRepository(self._executor, self._codec)

    @cached_property
    def executions(self) -> ExecutionsRepository:
        """Executions: start (idempotent), list, pause/resume/cancel/fail, prune finished."""
        return ExecutionsRepository(self._executor, self._codec)

    @cached_property
    def steps(self) -> StepsRepository:
        """Steps: claim with a lease, heartbeat, complete, fail with retries, reap."""
        return StepsRepository(self._executor, self._codec)

    @cached_property
    def outbox(self) -> OutboxRepository:
        """Outbox: events appended in the caller's transaction, relayed, pruned."""
        return OutboxRepository(self._executor, self._codec)

    @cached_property
    def step_logs(self) -> StepLogsRepository:
        """Step logs: lines appended with binary COPY, read by step or execution."""
        return StepLogsRepository(self._executor, self._codec)

    @cached_property
    def tool_executions(self) -> ToolExecutionsRepository:
        """Tool calls of steps and sessions: start, finish, per-tool statistics."""
        return ToolExecutionsRepository(self._executor, self._codec)

    @cached_property
    def workflows(self) -> WorkflowsRepository:
        """Workflows: create, look up (id, owner+name, "<email>/<name>"), optimistic-locking
        edits, filtered keyset listing, definition versions."""
        return WorkflowsRepository(self._executor, self._codec)

    @cached_property
    def stages(self) -> StagesRepository:
        """Stages of workflows: add, reorder, remove, update; positions stay 0..n-1."""
        return StagesRepository(self._executor, self._codec)

    @cached_property
    def sessions(self) -> SessionsRepository:
        """Client sessions: open, heartbeat, close, deactivate stale ones, list active."""
        return SessionsRepository(self._executor, self._codec)

    @cached_property
    def config(self) -> ConfigRepository:
        """Configuration: typed reads of dotted keys, compare-and-set writes, prefix lists."""
        return ConfigRepository(self._executor, self._codec)

    @cached_property
    def memory_items(self) -> MemoryItemsRepository:
        """Memory items: deduplicated create, recall lists, lifecycle, usage, expiry."""
        return MemoryItemsRepository(self._executor, self._codec)

    @cached_property
    def memory_modules(self) -> MemoryModulesRepository:
        """Context modules of memory and their ordered items."""
        return MemoryModulesRepository(self._executor, self._codec)

    @cached_property
    def memory_packs(self) -> MemoryPacksRepository:
        """Immutable context packs built from modules under a token budget."""
        return MemoryPacksRepository(self._executor, self._codec)


__all__ = ["Repositories", "cached_property"]
