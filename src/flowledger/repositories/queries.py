"""Named SQL queries: the ``-- name:`` blocks of the .sql files as an immutable map.

A file holds blocks. Each block is::

    -- name: list_workflows_by_status
    -- One or more description lines.
    -- plan: index workflows_owner_status_updated_idx
    -- returns: many
    -- record: workflows.Workflow
    SELECT ...;

The header is the run of comment lines right after ``-- name:``: description lines
first, then the optional annotations ``plan`` (``index <name>[, <name>...]`` or
``seqscan-ok (<reason>)``), ``returns`` (one|many|none|scalar|rowcount) and ``record``
(the msgspec struct the rows decode into, ``<module>.<Struct>`` under
``flowledger.records``, e.g. ``catalog.Action``). The body
runs to the next ``-- name:`` line or the end of the file; comments inside it are kept,
trailing comments and blank lines (commentary between blocks) and the final ``;`` are
dropped. A body holds one statement: a line ending in ``;`` may not be followed by more SQL.

``Query.sql``, the text sent to the server, opens with the query's name as a comment in
the sqlcommenter style, ``/* flowledger:claim_steps */ SELECT ...``: the server keeps
comments, so the name shows in pg_stat_statements, pg_stat_activity, the server log and
pg_prepared_statements. ``Query.text`` is the body as written.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, get_args

import msgspec

from flowledger._resources import sql_dir
from flowledger.errors import FlowledgerError

__all__ = [
    "ANNOTATIONS",
    "QUERY_VERBS",
    "PlanSpec",
    "Query",
    "QueryFileError",
    "Returns",
    "UnknownQuery",
    "get_queries",
    "load_queries",
    "lookup_query",
    "name_comment",
    "parse_queries",
    "query",
]

# The first word of every query name; add a verb here when a new kind of query needs one.
# fmt: off
QUERY_VERBS: Final[tuple[str, ...]] = (
    "add", "append", "build", "cancel", "claim", "close", "complete", "count", "deactivate",
    "delete", "exists", "expire", "fail", "find", "finish", "get", "heartbeat", "insert",
    "list", "lock", "mark", "open", "prune", "publish", "queue", "record", "refresh", "release",
    "remove", "renumber", "reorder", "requeue", "retry", "revoke", "select", "set", "shift",
    "skip", "snapshot", "start", "stats", "touch", "update", "upsert", "verify", "wait",
)
# fmt: on

ANNOTATIONS: Final[tuple[str, ...]] = ("plan", "returns", "record", "prepare")

Returns = Literal["one", "many", "none", "scalar", "rowcount"]
_RETURNS: Final[tuple[Returns, ...]] = get_args(Returns)

_QUERY_NAME = re.compile(rf"^(?:{'|'.join(QUERY_VERBS)})_[a-z0-9_]+$")
_NAME_LINE = re.compile(r"^--\s*name:(.*)$")
_ANNOTATION_LINE = re.compile(r"^--\s*([a-z][a-z0-9_-]*):(.*)$")
_INDEX_PLAN = re.compile(r"^index\s+(.+)$")
_SEQSCAN_PLAN = re.compile(r"^seqscan-ok\s*\((.*)\)$")
_INDEX_NAME = re.compile(r"^[a-z_][a-z0-9_$]*$")
_RECORD = re.compile(r"^(?:[a-z_][a-z0-9_]*\.)+[A-Z][A-Za-z0-9]*$")
_PLAN_SYNTAX = "expected 'index <name>[, <name>...]' or 'seqscan-ok (<reason>)'"
_NEVER_PREPARED = re.compile(r"^never\s*\((.*)\)$")


class PlanSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What the plan checker expects of a query: one of some indexes, or a justified seq scan."""

    kind: Literal["index", "seqscan-ok"]
    indexes: tuple[str, ...] = ()
    reason: str = ""


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """One named SQL statement and where it was written: ``sql`` is what is sent to the
    server (``text`` behind the name comment), ``text`` the body as written."""

    name: str
    sql: str
    text: str
    description: str
    file: str
    line: int
    plan: PlanSpec | None = None
    returns: Returns | None = None
    record: str | None = None
    # False (`-- prepare: never (<reason>)`): always planned for the values at hand, never
    # prepared, for a query whose generic plan cannot serve every value (the library's
    # connections run generic plans once a statement is prepared).
    prepared: bool = True


class QueryFileError(FlowledgerError):
    """A .sql file of named queries is malformed; the message starts with file:line."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        super().__init__(f"{file}:{line}: {reason}")
        self.file = file
        self.line = line
        self.reason = reason


class UnknownQuery(FlowledgerError, KeyError):
    """No query of that name was loaded."""

    def __str__(self) -> str:
        # KeyError would show the repr of the message, quotes and all.
        return self.message


def name_comment(name: str) -> str:
    """The comment that opens query ``name``'s SQL: ``/* flowledger:<name> */ ``."""
    # Safe to splice: a query name matches _QUERY_NAME, so it cannot close the comment.
    return f"/* flowledger:{name} */ "


def parse_queries(text: str, *, file: str) -> dict[str, Query]:
    """The queries of one file's text, by name; raises QueryFileError at the first defect."""
    lines = text.splitlines()
    headers = [
        (i, m.group(1).strip())
        for i, line in enumerate(lines)
        if (m := _NAME_LINE.match(line.strip()))
    ]
    starts = [i for i, _ in headers]
    for i, line in enumerate(lines[: starts[0] if starts else len(lines)]):
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            raise QueryFileError(
                file, i + 1, "SQL outside a query block (before the first '-- name:')"
            )
    queries: dict[str, Query] = {}
    for (start, name), end in zip(headers, [*starts, len(lines)][1:], strict=True):
        found = _parse_block(lines, name, start, end, file)
        if (first := queries.get(found.name)) is not None:
            raise QueryFileError(
                file,
                found.line,
                f"duplicate query name {found.name!r} (first at {first.file}:{first.line})",
            )
        queries[found.name] = found
    return queries


def load_queries(directory: Path | Traversable) -> Mapping[str, Query]:
    """Every query of the directory's .sql files but schema.sql, read in file-name order."""
    prefix = f"{directory.name}/" if directory.name else ""
    files = sorted(
        (entry for entry in directory.iterdir() if _is_query_file(entry)), key=lambda e: e.name
    )
    queries: dict[str, Query] = {}
    for entry in files:
        text = entry.read_text(encoding="utf-8")
        for name, found in parse_queries(text, file=prefix + entry.name).items():
            if (first := queries.get(name)) is not None:
                raise QueryFileError(
                    found.file,
                    found.line,
                    f"duplicate query name {name!r} (first at {first.file}:{first.line})",
                )
            queries[name] = found
    return MappingProxyType(queries)


def lookup_query(queries: Mapping[str, Query], name: str) -> Query:
    """The query called ``name``; raises UnknownQuery, suggesting near names."""
    try:
        return queries[name]
    except KeyError:
        # A high cutoff: query names share long verb and entity parts.
        close = difflib.get_close_matches(name, queries, n=3, cutoff=0.8)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownQuery(f"no query named {name!r} in the .sql files{hint}") from None


@functools.cache
def get_queries() -> Mapping[str, Query]:
    """The package's named queries, loaded once."""
    return load_queries(sql_dir())


def query(name: str) -> Query:
    """The package's query called ``name``; raises UnknownQuery."""
    return lookup_query(get_queries(), name)


def _is_query_file(entry: Path | Traversable) -> bool:
    return entry.name.endswith(".sql") and entry.name != "schema.sql" and entry.is_file()


def _parse_block(lines: list[str], name: str, start: int, end: int, file: str) -> Query:
    line_no = start + 1
    if end == start + 1 and end < len(lines):
        raise QueryFileError(
            file, line_no, f"'-- name: {name}' is directly followed by another '-- name:' line"
        )
    if not _QUERY_NAME.match(name):
        expected = "expected <verb>_<words> in lowercase, the verb one of QUERY_VERBS"
        raise QueryFileError(file, line_no, f"bad query name {name!r}: {expected}")

    k = start + 1
    description: list[str] = []
    while k < end and _is_comment(lines[k]) and not _ANNOTATION_LINE.match(lines[k].strip()):
        description.append(lines[k].strip().removeprefix("--").strip())
        k += 1
    if not any(description):
        raise QueryFileError(
            file,
            line_no,
            f"query {name!r} has no description: a comment line must follow '-- name:'",
        )

    plan: PlanSpec | None = None
    returns: Returns | None = None
    record: str | None = None
    prepared = True
    seen: set[str] = set()
    while k < end and (annotation := _ANNOTATION_LINE.match(lines[k].strip())):
        key, value = annotation.group(1), annotation.group(2).strip()
        if key not in ANNOTATIONS:
            raise QueryFileError(
                file, k + 1, f"unknown annotation {key!r} (known: {', '.join(ANNOTATIONS)})"
            )
        if key in seen:
            raise QueryFileError(file, k + 1, f"duplicate annotation {key!r}")
        seen.add(key)
        if key == "plan":
            plan = _parse_plan(value, file, k + 1)
        elif key == "returns":
            returns = _parse_returns(value, file, k + 1)
        elif key == "prepare":
            prepared = _parse_prepare(value, file, k + 1)
        else:
            record = _parse_record(value, file, k + 1)
        k += 1

    body = lines[k:end]
    while body and (not body[-1].strip() or _is_comment(body[-1])):
        body.pop()
    _check_body(body, name, file, first_line=k + 1)
    text = "\n".join(body).strip().removesuffix(";").rstrip()
    if all(not line.strip() or _is_comment(line) for line in text.splitlines()):
        raise QueryFileError(file, line_no, f"query {name!r} has an empty body")
    return Query(
        name=name,
        sql=name_comment(name) + text,
        text=text,
        description=" ".join(part for part in description if part),
        file=file,
        line=line_no,
        plan=plan,
        returns=returns,
        record=record,
        prepared=prepared,
    )


def _check_body(body: list[str], name: str, file: str, *, first_line: int) -> None:
    statement_end: int | None = None
    for offset, line in enumerate(body):
        stripped = line.strip()
        if not stripped:
            continue
        if _is_comment(line):
            annotation = _ANNOTATION_LINE.match(stripped)
            if annotation and annotation.group(1) in ANNOTATIONS:
                where = f"annotation {annotation.group(1)!r} must directly follow the description"
                raise QueryFileError(file, first_line + offset, where)
            continue
        if statement_end is not None:
            extra = f"query {name!r} has more than one statement (';' ends line {statement_end})"
            raise QueryFileError(file, first_line + offset, extra)
        if stripped.endswith(";"):
            statement_end = first_line + offset


def _parse_plan(spec: str, file: str, line: int) -> PlanSpec:
    if index := _INDEX_PLAN.match(spec):
        names = tuple(part.strip() for part in index.group(1).split(","))
        if all(_INDEX_NAME.match(n) for n in names):
            return PlanSpec(kind="index", indexes=names)
    elif (seqscan := _SEQSCAN_PLAN.match(spec)) and seqscan.group(1).strip():
        return PlanSpec(kind="seqscan-ok", reason=seqscan.group(1).strip())
    raise QueryFileError(file, line, f"malformed plan annotation {spec!r}: {_PLAN_SYNTAX}")


def _parse_prepare(value: str, file: str, line: int) -> bool:
    never = _NEVER_PREPARED.match(value)
    if never is None or not never.group(1).strip():
        raise QueryFileError(
            file, line, f"malformed prepare annotation {value!r}: expected 'never (<reason>)'"
        )
    return False


def _parse_returns(value: str, file: str, line: int) -> Returns:
    for allowed in _RETURNS:
        if value == allowed:
            return allowed
    expected = ", ".join(_RETURNS)
    raise QueryFileError(
        file, line, f"malformed returns annotation {value!r}: expected one of {expected}"
    )


def _parse_record(value: str, file: str, line: int) -> str:
    if not _RECORD.match(value):
        expected = "expected <module>.<Struct> under flowledger.records"
        raise QueryFileError(file, line, f"malformed record annotation {value!r}: {expected}")
    return value


def _is_comment(line: str) -> bool:
    return line.strip().startswith("--")
