"""The EXPLAIN checker: every query annotated `-- plan:` must use the index it names.

Each annotated query is prepared on the server (so PostgreSQL itself tells the type of
every parameter) and explained with custom plans, once with every parameter set to a
sample value of its type, once with the optional filters (`%(x)s::t IS NULL OR ...`)
NULL; then its generic plan (the one the library's connections run once a statement is
prepared, `plan_cache_mode=force_generic_plan`), which must hold for any value. Two
modes:

* strict (default): `enable_seqscan = off`, so the verdict does not depend on the data: a
  Seq Scan that survives it means no index can serve the query. The same verdicts hold
  on an empty database, a seeded one and one of realistic volume.
* realistic (`strict=False`): the planner's own choice, meant for a database holding
  realistic volume (`flowledger seed --scale N`, then ANALYZE) such as staging. A Seq
  Scan of a table of at most SMALL_TABLE_PAGES pages is then accepted: for a table that
  small it is the right plan.

Verdicts judge the plan's shape, not the name of the index the planner happened to pick
(on a tiny table with scans off, any index will do, even one read end to end):

* a Seq Scan on an application table fails unless the annotation is `seqscan-ok (...)`;
* every index the plan reads must be *purposeful*: named by the annotation, or one whose
  leading key column the scan constrains (its Index Cond) or, with no condition, one
  whose leading key column the query orders by (the scan yields the order), or a partial
  one. On a table of at most SMALL_TABLE_PAGES pages, where every index costs the planner
  the same, any read passes when some index of that table leads with a column the plan's
  conditions (or the joins above it) constrain;
* with `index a, b` the all-parameters-set plan must read at least one purposeful index.

A partitioned table (step_logs) is read through the indexes of its partitions, which
PostgreSQL makes for each partition of a partitioned index: reading one of them counts
as reading the partitioned index it belongs to, the one the annotation names.

Every setting is `SET LOCAL` inside the check's own transaction: nothing outlives the
check on the connection (a pooled one stays as it was).
"""

from __future__ import annotations

import datetime
import json
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
from psycopg import sql

from flowledger.repositories.queries import Query, get_queries
from flowledger.settings import PLAN_CACHE_MODE

_PARAM = re.compile(r"%\((\w+)\)s")
_OPTIONAL = re.compile(r"%\((\w+)\)s(?:::[\w\[\]. ]+?)?\s+IS\s+NULL", re.IGNORECASE)
_ORDER_BY = re.compile(r"ORDER\s+BY\s+(.+?)(?:\bLIMIT\b|\bFOR\b|\)|;|$)", re.IGNORECASE | re.DOTALL)
_JOIN_CONDS = ("Merge Cond", "Hash Cond", "Join Filter")
# In realistic mode a Seq Scan on a table of at most this many 8 KiB pages is accepted.
SMALL_TABLE_PAGES = 8
_BOOKKEEPING = frozenset(
    {"_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock", "_flowledger_migration_checksum"}
)


@dataclass
class PlanResult:
    """The verdict on one query in one parameter variant."""

    query: str
    variant: str
    ok: bool
    problems: list[str]
    indexes: list[str]
    seq_scans: list[str]
    plan: str
    location: str

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "query": self.query,
            "variant": self.variant,
            "ok": self.ok,
            "problems": self.problems,
            "indexes": self.indexes,
            "seq_scans": self.seq_scans,
            "location": self.location,
            "plan": self.plan,
        }


@dataclass
class Report:
    """Every verdict of a run."""

    results: list[PlanResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every checked query passed."""
        return all(r.ok for r in self.results)


def annotated(queries: Mapping[str, Query] | None = None) -> list[Query]:
    """The queries carrying a `-- plan:` annotation, by name."""
    qs = queries if queries is not None else get_queries()
    return [q for _, q in sorted(qs.items()) if q.plan is not None]


def check_plans(
    conn: psycopg.Connection[Any],
    *,
    strict: bool = True,
    queries: Mapping[str, Query] | None = None,
) -> Report:
    """Explain every annotated query on `conn` (nothing is executed) and judge each plan."""
    report = Report()
    with conn.transaction():
        conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        conn.execute(f"SET LOCAL enable_seqscan = {'off' if strict else 'on'}")
        indexes = _indexes(conn)
        for q in annotated(queries):
            try:
                # A savepoint: a query that fails to prepare leaves the transaction usable.
                with conn.transaction():
                    for variant, values in _variants(conn, q):
                        generic = variant == GENERIC
                        if generic:
                            # The mode the library's connections run prepared statements in.
                            conn.execute(f"SET LOCAL plan_cache_mode = {PLAN_CACHE_MODE}")
                        result = _judge(conn, q, variant, values, strict=strict, indexes=indexes)
                        report.results.append(result)
                        if generic:
                            conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            finally:
                # PREPARE is not transactional; one that failed left nothing to deallocate.
                prepared = conn.execute(
                    "SELECT 1 FROM pg_prepared_statements WHERE name = 'fl_plan'"
                ).fetchone()
                if prepared is not None:
                    conn.execute("DEALLOCATE fl_plan")
    return report


@dataclass(frozen=True)
class _Index:
    """What the judge needs to know of one index."""

    table: str
    # The first key column or expression; None for a partial index, whose rows are all
    # candidates of a query its predicate fits.
    leading: str | None
    # Pages of the table: on a table this small every index costs the planner the same,
    # so which one it reads says nothing about the query.
    table_pages: int
    # For the index of one partition, the partitioned index it belongs to (at the top of
    # the tree): the one a `-- plan:` annotation names. None for an index of a plain table.
    parent: str | None = None


def _indexes(conn: psycopg.Connection[Any]) -> dict[str, _Index]:
    """Every index of the application schema, by name; the index of a partition with the
    partitioned index it belongs to (pg_partition_root), which plans never name."""
    rows = conn.execute(
        "SELECT c.relname, t.relname,"
        "       CASE WHEN i.indpred IS NULL THEN pg_get_indexdef(i.indexrelid, 1, true) END,"
        "       t.relpages,"
        "       (SELECT r.relname FROM pg_class r"
        "         WHERE r.oid = pg_partition_root(i.indexrelid) AND r.oid <> i.indexrelid)"
        "  FROM pg_index i"
        "  JOIN pg_class c ON c.oid = i.indexrelid"
        "  JOIN pg_class t ON t.oid = i.indrelid"
        " WHERE c.relnamespace = 'public'::regnamespace"
    ).fetchall()
    return {
        name: _Index(table, leading, pages, parent) for name, table, leading, pages, parent in rows
    }


def _mentions(text: str, key: str) -> bool:
    # "id" must not match inside "user_id"; "users.id" and "(id" are fine.
    return re.search(rf"(?<![\w]){re.escape(key)}(?![\w(])", text) is not None


def _orders_by(sql_text: str, key: str) -> bool:
    return any(_mentions(clause, key) for clause in _ORDER_BY.findall(sql_text))


def _index_reads(
    q: Query, plan: Mapping[str, Any], indexes: Mapping[str, _Index]
) -> tuple[set[str], list[str]]:
    """The indexes the plan reads on purpose, and a problem for each index read the
    query gives no reason for."""
    assert q.plan is not None
    purposeful: set[str] = set()
    problems: list[str] = []
    for node, joins in _with_join_conds(plan):
        name = node.get("Index Name")
        if name is None:
            continue
        index = indexes.get(name)
        cond = str(node.get("Index Cond", ""))
        if (
            index is None  # outside the application schema (a catalog): not ours to judge
            or name in q.plan.indexes
            # A partitioned table is read through its partitions' own indexes.
            or index.parent in q.plan.indexes
            or index.leading is None
            or (cond and _mentions(cond, index.leading))
            or (not cond and _orders_by(q.sql, index.leading))
        ):
            purposeful.add(name)
        elif index.table_pages <= SMALL_TABLE_PAGES and _servable(node, joins, index, indexes):
            # On a table of a few pages every index costs the planner the same, so its pick
            # among them is no verdict; that one of them serves the query is.
            purposeful.add(name)
        else:
            problems.append(
                f"plan reads {name} without using its leading key {index.leading}"
                f" ({'Index Cond: ' + cond if cond else 'no Index Cond'})"
            )
    return purposeful, problems


def _servable(
    node: Mapping[str, Any], joins: str, index: _Index, indexes: Mapping[str, _Index]
) -> bool:
    """Whether some index of the node's table leads with a column the node's conditions
    (or the joins above it) constrain: the schema can serve the query."""
    own = " ".join(str(node.get(k, "")) for k in ("Index Cond", "Filter"))
    alias = str(node.get("Alias", index.table))
    return any(
        other.table == index.table
        and other.leading is not None
        and (_mentions(own, other.leading) or _mentions(joins, f"{alias}.{other.leading}"))
        for other in indexes.values()
    )


def _with_join_conds(
    node: Mapping[str, Any], above: str = ""
) -> Iterator[tuple[Mapping[str, Any], str]]:
    """Every node of the plan with the join conditions of the nodes above it."""
    here = " ".join([above, *(str(node[k]) for k in _JOIN_CONDS if k in node)])
    yield node, here
    for child in node.get("Plans", ()):
        yield from _with_join_conds(child, here)


def _to_positional(text: str) -> tuple[str, list[str]]:
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    return _PARAM.sub(number, text).replace("%%", "%"), names


GENERIC: Final = "generic plan"


def _variants(conn: psycopg.Connection[Any], q: Query) -> Iterator[tuple[str, list[str | None]]]:
    text, names = _to_positional(q.sql)
    conn.execute(f"PREPARE fl_plan AS {text}".encode())
    row = conn.execute(
        "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = 'fl_plan'"
    ).fetchone()
    types: list[str] = row[0] if row else []
    samples = [_sample(t) for t in types]
    yield "all set", samples
    optional = {m.group(1) for m in _OPTIONAL.finditer(q.sql)}
    if optional:
        nulls = [None if n in optional else v for n, v in zip(names, samples, strict=True)]
        yield "optional NULL", nulls
    # The values only fill the EXECUTE: a generic plan is made without looking at them. A
    # query never prepared never runs one.
    if q.prepared:
        yield GENERIC, samples


def _sample(pg_type: str) -> str | None:
    """A literal of `pg_type` that is plausible as a parameter value."""
    base = pg_type.removesuffix("[]")
    scalar: dict[str, str] = {
        "uuid": str(uuid.UUID(int=1)),
        "text": "sample",
        "character varying": "sample",
        "integer": "10",
        "bigint": "10",
        "smallint": "1",
        "double precision": "0.5",
        "real": "0.5",
        "numeric": "1",
        "boolean": "true",
        "timestamp with time zone": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).isoformat(),
        "interval": "30 seconds",
        "jsonb": "{}",
        "json": "{}",
        "bytea": "\\x00",
        "tsquery": "sample",
    }
    value = scalar.get(base, "sample")
    if pg_type.endswith("[]"):
        return "{" + json.dumps(value) + "}"
    return value


def _larger_than(conn: psycopg.Connection[Any], tables: Sequence[str], pages: int) -> list[str]:
    if not tables:
        return []
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relkind IN ('r', 'p')"
        " AND relnamespace = 'public'::regnamespace AND relpages > %s",
        (list(tables), pages),
    ).fetchall()
    return sorted(r[0] for r in rows)


def _judge(
    conn: psycopg.Connection[Any],
    q: Query,
    variant: str,
    values: Sequence[str | None],
    *,
    strict: bool,
    indexes: Mapping[str, _Index],
) -> PlanResult:
    assert q.plan is not None
    args = sql.SQL(", ").join(sql.Literal(v) if v is not None else sql.SQL("NULL") for v in values)
    stmt = sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE fl_plan") + (
        sql.SQL("({})").format(args) if values else sql.SQL("")
    )
    explain_row = conn.execute(stmt).fetchone()
    assert explain_row is not None
    raw = explain_row[0]
    plan = raw if isinstance(raw, list) else json.loads(raw)
    nodes = list(_walk(plan[0]["Plan"]))
    used = sorted({n["Index Name"] for n in nodes if "Index Name" in n})
    seq_scans = sorted(
        {
            n["Relation Name"]
            for n in nodes
            if n.get("Node Type") == "Seq Scan" and n.get("Relation Name") not in _BOOKKEEPING
        }
    )
    problems: list[str] = []
    # With the planner's own choices, scanning a table of a few pages is the right plan:
    # only tables that hold volume must be reached through an index.
    large = seq_scans if strict else _larger_than(conn, seq_scans, SMALL_TABLE_PAGES)
    if q.plan.kind == "index":
        purposeful, aimless = _index_reads(q, plan[0]["Plan"], indexes)
        if large:
            problems.append(f"Seq Scan on {', '.join(large)}")
        problems.extend(aimless)
        judged = variant in ("all set", GENERIC)
        if judged and not purposeful and (strict or large or not seq_scans):
            read = ", ".join(used) or "no index"
            problems.append(f"expected index {' or '.join(q.plan.indexes)}, plan uses {read}")
    text_plan = conn.execute(
        sql.SQL("EXPLAIN EXECUTE fl_plan")
        + (sql.SQL("({})").format(args) if values else sql.SQL(""))
    ).fetchall()
    return PlanResult(
        query=q.name,
        variant=variant,
        ok=not problems,
        problems=problems,
        indexes=used,
        seq_scans=seq_scans,
        plan="\n".join(r[0] for r in text_plan),
        location=f"{q.file}:{q.line}",
    )


def _walk(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _walk(child)


def format_report(report: Report, *, verbose: bool = True) -> list[str]:
    """Human-readable lines: each query's verdict, and its plan when `verbose`."""
    lines: list[str] = []
    for r in report.results:
        verdict = "ok  " if r.ok else "FAIL"
        lines.append(f"{verdict} {r.query} [{r.variant}] ({r.location})")
        for p in r.problems:
            lines.append(f"     {p}")
        if verbose or not r.ok:
            lines.extend(f"       {line}" for line in r.plan.splitlines())
    passed = sum(r.ok for r in report.results)
    lines.append(f"{passed} passed, {len(report.results) - passed} failed")
    return lines
