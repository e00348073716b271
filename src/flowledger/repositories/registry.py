"""Every repository, as attributes of `Database` and `Transaction`.

Each is built on first use and bound to the owner's executor: the pool for a Database,
one connection for a Transaction.
"""

from __future__ import annotations

from functools import cached_property

from flowledger.repositories.base import Executor
from flowledger.repositories.pagination import CursorCodec


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


__all__ = ["Repositories", "cached_property"]
