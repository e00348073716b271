"""Both faces under one suite: the async face driven through a blocking view of it.

A test written against `Database` gets, for its "async" run, `blocking(AsyncDatabase)`:
every call goes to the real async object, runs as a task on an event loop of its own
(one thread for the session), and the test blocks on its result. Async context managers
(`transaction()`, `pinned()`, `wake_ups()`) become blocking ones, awaitables are awaited,
and what the async face hands back that itself has async methods (a transaction, a
repository, a psycopg `AsyncConnection` or cursor) comes back wrapped the same way.
Records, pages and errors come back as they are: the very objects the async face made.

Threads of a test that share the database share its loop, so the concurrency tests run
the async face's calls as concurrent asyncio tasks, on one pool, as a service would.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

T = TypeVar("T")

_WRAPPED_MODULES = ("flowledger.aio", "psycopg")


class _Loop:
    """An event loop running in a daemon thread, started on first use."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="async-face", daemon=True).start()
                cls._loop = loop
            return cls._loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the async face's loop; its result, or its exception, raised."""
    return asyncio.run_coroutine_threadsafe(coro, _Loop.get()).result()


def _wrap(value: Any) -> Any:
    if isinstance(value, Blocking | BaseException):
        return value
    # Objects of the async face (entered as context managers too, when they are one) and
    # async context managers (transaction(), pinned()).
    if type(value).__module__.startswith(_WRAPPED_MODULES) or hasattr(value, "__aenter__"):
        return Blocking(value)
    return value


def _unwrap(value: Any) -> Any:
    return value._target if isinstance(value, Blocking) else value


class Blocking:
    """A blocking view of an object of the async face."""

    __slots__ = ("_target",)

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr) or inspect.isclass(attr):
            return _wrap(attr)

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            args = tuple(_unwrap(a) for a in args)
            kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
            result = attr(*args, **kwargs)
            if inspect.iscoroutine(result):
                result = run(result)
            return _wrap(result)

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, _unwrap(value))

    def __repr__(self) -> str:
        return f"blocking({self._target!r})"

    def __enter__(self) -> Any:
        return _wrap(run(self._target.__aenter__()))

    def __exit__(self, *exc: Any) -> Any:
        return run(self._target.__aexit__(*exc))


def blocking(target: Any, as_type: Callable[..., T] | type[T]) -> T:
    """`target` (an object of the async face) seen as the sync type `as_type`."""
    return cast(T, Blocking(target))
