"""Every named query against the migrated schema: it prepares, its columns match its record,
every query is used by a repository and every query a repository asks for exists."""

from __future__ import annotations

import datetime
import importlib
import re
import uuid
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg.pq import ExecStatus

from flowledger.repositories.queries import Query, get_queries

SRC = Path(__file__).resolve().parents[2] / "src" / "flowledger"
QUERIES = get_queries()
_PARAM = re.compile(r"%\((\w+)\)s")

# Column type (pg_type oid) -> the Python types a record field may declare for it.
_COMPATIBLE: dict[int, tuple[type, ...]] = {
    16: (bool,),
    17: (bytes,),
    20: (int,),
    21: (int,),
    23: (int,),
    25: (str,),
    700: (float,),
    701: (float,),
    1184: (datetime.datetime,),
    1186: (datetime.timedelta,),
    2950: (uuid.UUID,),
    1009: (list,),
    1007: (list,),
    2951: (list,),
    3802: (dict, list, object),
    114: (dict, list, object),
}


def _to_libpq(sql: str) -> tuple[bytes, int]:
    names: dict[str, int] = {}

    def number(m: re.Match[str]) -> str:
        return f"${names.setdefault(m.group(1), len(names) + 1)}"

    return _PARAM.sub(number, sql).replace("%%", "%").encode(), len(names)


def describe(conn: psycopg.Connection[Any], q: Query) -> list[tuple[str, int]]:
    """Prepare the query on the server; its result columns as (name, type oid)."""
    text, _ = _to_libpq(q.sql)
    res = conn.pgconn.prepare(b"", text)
    if res.status != ExecStatus.COMMAND_OK:
        msg = (res.error_message or b"").decode()
        raise AssertionError(f"{q.file}:{q.line}: {q.name} does not prepare: {msg}")
    desc = conn.pgconn.describe_prepared(b"")
    return [((desc.fname(i) or b"").decode(), desc.ftype(i)) for i in range(desc.nfields)]


def _python_types(annotation: Any) -> tuple[type, ...]:
    info = msgspec.inspect.type_info(annotation)
    return tuple(_core(info))


def _core(info: msgspec.inspect.Type) -> list[type]:
    mapping: dict[type, type] = {
        msgspec.inspect.BoolType: bool,
        msgspec.inspect.BytesType: bytes,
        msgspec.inspect.IntType: int,
        msgspec.inspect.StrType: str,
        msgspec.inspect.FloatType: float,
        msgspec.inspect.DateTimeType: datetime.datetime,
        msgspec.inspect.TimeDeltaType: datetime.timedelta,
        msgspec.inspect.UUIDType: uuid.UUID,
        msgspec.inspect.ListType: list,
        msgspec.inspect.TupleType: list,
        msgspec.inspect.VarTupleType: list,
        msgspec.inspect.DictType: dict,
        msgspec.inspect.AnyType: object,
        msgspec.inspect.StructType: dict,
        msgspec.inspect.LiteralType: str,
    }
    if isinstance(info, msgspec.inspect.UnionType):
        return [t for member in info.types for t in _core(member)]
    if isinstance(info, msgspec.inspect.NoneType):
        return []
    return [mapping.get(type(info), object)]


def _record(q: Query) -> type[msgspec.Struct]:
    assert q.record, q.name
    module, _, name = q.record.rpartition(".")
    cls: object = getattr(importlib.import_module(f"flowledger.records.{module}"), name)
    assert isinstance(cls, type) and issubclass(cls, msgspec.Struct)
    return cls


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_query_prepares_and_matches_its_record(conn: psycopg.Connection[Any], name: str) -> None:
    q = QUERIES[name]
    columns = describe(conn, q)
    if q.record is None:
        return
    cls = _record(q)
    fields = msgspec.structs.fields(cls)
    assert [c for c, _ in columns] == [f.name for f in fields], (
        f"{q.file}:{q.line}: columns of {name} differ from {q.record}'s fields"
    )
    for (column, oid), f in zip(columns, fields, strict=True):
        allowed = _COMPATIBLE.get(oid)
        declared = _python_types(f.type)
        if allowed is None or object in declared:
            continue
        assert any(issubclass(d, allowed) for d in declared), (
            f"{name}.{column}: column type oid {oid} does not fit field type {f.type}"
        )


def _repository_sources() -> str:
    return "\n".join(p.read_text() for p in SRC.rglob("*.py"))


def test_every_query_is_used_and_every_used_name_exists() -> None:
    source = _repository_sources()
    unused = sorted(n for n in QUERIES if f'"{n}"' not in source)
    assert unused == [], f"queries no module uses: {unused}"
    asked = set(re.findall(r"self\._(?:fetch|require)\(\s*\"(\w+)\"", source))
    assert asked, "no repository names a query"
    missing = sorted(asked - set(QUERIES))
    assert missing == [], f"repositories ask for queries that do not exist: {missing}"


def test_every_query_says_what_it_returns() -> None:
    # The annotation is what the repositories decode by: a query without one cannot run.
    lacking = sorted(n for n, q in QUERIES.items() if q.returns is None)
    assert lacking == [], f"queries without a '-- returns:' annotation: {lacking}"


def test_every_row_query_names_its_record() -> None:
    lacking = sorted(
        n for n, q in QUERIES.items() if q.returns in ("one", "many") and q.record is None
    )
    assert lacking == [], f"queries returning rows without a '-- record:' annotation: {lacking}"
