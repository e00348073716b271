"""The async face covers all of the sync API: the same classes, repositories, methods,
parameters and defaults; the async ones are awaited where the sync ones block."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

import flowledger
from flowledger.aio.database import AsyncDatabase, AsyncPinned, AsyncTransaction
from flowledger.aio.replica import AsyncReplica
from flowledger.aio.repositories.registry import AsyncReadRepositories, AsyncRepositories
from flowledger.aio.wakeups import AsyncWakeUps
from flowledger.database import Database, Pinned, Transaction
from flowledger.replica import Replica
from flowledger.repositories.registry import ReadRepositories, Repositories
from flowledger.wakeups import WakeUps

PAIRS = [
    (Database, AsyncDatabase),
    (Transaction, AsyncTransaction),
    (Pinned, AsyncPinned),
    (WakeUps, AsyncWakeUps),
    (Replica, AsyncReplica),
]


def _repositories(registry: type[Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, attr in vars(registry).items():
        if isinstance(attr, cached_property):
            found[name] = str(inspect.signature(attr.func).return_annotation)
    return found


def _repository_classes() -> Iterator[tuple[str, type[Any], type[Any]]]:
    """Every repository class and every reader class (what a replica has), by attribute
    name (`steps`, `replica.steps`), sync and async."""
    import flowledger.aio.repositories.registry as aio_registry
    import flowledger.repositories.registry as sync_registry

    registries = [
        ("", Repositories, AsyncRepositories),
        ("replica.", ReadRepositories, AsyncReadRepositories),
    ]
    for prefix, sync_registry_cls, aio_registry_cls in registries:
        sync, aio = _repositories(sync_registry_cls), _repositories(aio_registry_cls)
        assert sorted(sync) == sorted(aio)
        for name in sorted(sync):
            sync_cls = getattr(sync_registry, sync[name])
            yield prefix + name, sync_cls, getattr(aio_registry, aio[name])


def _public(cls: type[Any]) -> dict[str, Any]:
    return {
        name: attr
        for klass in reversed(cls.__mro__)
        if klass.__module__.startswith("flowledger")
        for name, attr in vars(klass).items()
        if not name.startswith("_") or name in ("__enter__", "__exit__")
    }


def _sync_text(annotation: str) -> str:
    annotation = re.sub(r"\bAsync([A-Z]\w*)", r"\1", annotation)
    return annotation.replace("Awaitable[None] | None", "None")


def _shape(function: Any, *, sync_text: bool) -> list[tuple[str, Any, str | None, str]]:
    signature = inspect.signature(function)
    shown = _sync_text if sync_text else (lambda a: a)
    params = [
        # Defaults by repr: a sentinel is a distinct object in each face's module.
        (p.name, p.kind, repr(p.default), shown(str(p.annotation)))
        for p in signature.parameters.values()
    ]
    return [*params, ("return", None, None, shown(str(signature.return_annotation)))]


def _function(attr: Any) -> Any:
    if isinstance(attr, cached_property):
        return attr.func
    if isinstance(attr, staticmethod | classmethod):
        return attr.__func__
    return attr


def _compare(sync_cls: type[Any], async_cls: type[Any]) -> None:
    sync, aio = _public(sync_cls), _public(async_cls)
    names = {n for n in sync if not n.startswith("__")}
    assert names == {n for n in aio if not n.startswith("__")}, sync_cls.__name__
    for name in sorted(names):
        s, a = _function(sync[name]), _function(aio[name])
        if not callable(s):
            continue
        where = f"{sync_cls.__name__}.{name}"
        assert _shape(s, sync_text=False) == _shape(a, sync_text=True), where
        wrapped = inspect.unwrap(a)
        # What blocks in the sync face is awaited (or entered with `async with`) in the
        # async one; what does no I/O (stats, cursor decoding) is plain in both.
        if inspect.iscoroutinefunction(inspect.unwrap(s)) or inspect.isasyncgenfunction(
            inspect.unwrap(s)
        ):
            raise AssertionError(f"{where} of the sync face is a coroutine function")
        sync_is_generator = inspect.isgeneratorfunction(inspect.unwrap(s))
        if sync_is_generator:
            assert inspect.isasyncgenfunction(wrapped), where


@pytest.mark.parametrize(("sync_cls", "async_cls"), PAIRS, ids=lambda c: c.__name__)
def test_the_database_objects_have_the_same_api(sync_cls: type[Any], async_cls: type[Any]) -> None:
    _compare(sync_cls, async_cls)


@pytest.mark.parametrize("name", [n for n, _, _ in _repository_classes()])
def test_every_repository_has_the_same_methods_and_signatures(name: str) -> None:
    pairs = {n: (s, a) for n, s, a in _repository_classes()}
    sync_cls, async_cls = pairs[name]
    _compare(sync_cls, async_cls)
    for method, attr in _public(async_cls).items():
        if method.startswith("_") or not callable(attr):
            continue
        # Every public repository method of the async face is awaited.
        assert inspect.iscoroutinefunction(attr), f"{async_cls.__name__}.{method}"


def test_the_package_exports_both_faces() -> None:
    for name in (
        "connect",
        "connect_async",
        "Database",
        "AsyncDatabase",
        "Replica",
        "AsyncReplica",
        "Transaction",
        "AsyncTransaction",
        "Pinned",
        "AsyncPinned",
    ):
        assert name in flowledger.__all__
        assert hasattr(flowledger, name)
    assert inspect.iscoroutinefunction(flowledger.connect_async)
    sync_shape = _shape(flowledger.connect, sync_text=False)[:-1]
    assert sync_shape == _shape(flowledger.connect_async, sync_text=True)[:-1]


def test_a_type_checker_refuses_a_coroutine_handler_on_the_sync_face(tmp_path: Path) -> None:
    from mypy import api

    (tmp_path / "handlers.py").write_text(
        "from flowledger import AsyncDatabase, Database\n"
        "from flowledger.records.events import OutboxEvent\n\n"
        "async def deliver(events: list[OutboxEvent]) -> None: ...\n\n"
        "def plain(events: list[OutboxEvent]) -> None: ...\n\n"
        "def sync_face(db: Database) -> None:\n"
        "    db.outbox.relay(handler=plain)\n"
        "    db.outbox.relay(handler=deliver)  # line 10: refused\n\n"
        "async def async_face(db: AsyncDatabase) -> None:\n"
        "    await db.outbox.relay(handler=deliver)\n"
        "    await db.outbox.relay(handler=plain)\n"
    )
    out, _, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir=/dev/null", str(tmp_path / "handlers.py")]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1 and len(errors) == 1, out
    assert "handlers.py:10:" in errors[0] and "handler" in errors[0]
