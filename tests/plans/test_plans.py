"""Every annotated query's plan on the migrated schema, and the checker's own verdicts."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
import pytest

from flowledger.repositories.queries import get_queries, parse_queries
from flowledger.tools.cli import EXIT_OK, main
from flowledger.tools.plans import (
    SMALL_TABLE_PAGES,
    _Index,
    _index_reads,
    _to_positional,
    _walk,
    annotated,
    check_plans,
    format_report,
)

# A query whose name starts with one of these reads rows through a predicate and must
# carry a `-- plan:` annotation.
_MUST_BE_CHECKED = re.compile(r"^(get|list|find|claim|count|reap|requeue|lock)_")


def test_every_annotated_query_uses_its_index(conn: psycopg.Connection[Any]) -> None:
    report = check_plans(conn)
    assert report.results, "no annotated queries were checked"
    failures = [r for r in report.results if not r.ok]
    assert not failures, "\n".join(format_report(report, verbose=False))


def test_every_lookup_list_and_claim_query_is_annotated() -> None:
    missing = sorted(
        n for n, q in get_queries().items() if _MUST_BE_CHECKED.match(n) and q.plan is None
    )
    assert missing == [], f"queries without a '-- plan:' annotation: {missing}"


BAD = """
-- name: get_user_by_display_name
-- No index on display_name: the checker must refuse it.
-- plan: index users_pkey
SELECT id FROM users WHERE display_name = %(name)s::text;

-- name: list_users_any
-- Scans on purpose.
-- plan: seqscan-ok (tiny table, read once at start-up)
SELECT id FROM users;

-- name: get_user_by_id
-- The primary key.
-- plan: index users_pkey
SELECT id FROM users WHERE id = %(id)s::uuid;

-- name: list_users_optional_role
-- An optional filter that keeps the index when NULL and when set.
-- plan: index users_pkey
SELECT id FROM users
 WHERE id = %(id)s::uuid AND (%(role)s::text IS NULL OR role = %(role)s::text);
"""


def test_checker_verdicts(conn: psycopg.Connection[Any]) -> None:
    queries = parse_queries(BAD, file="bad.sql")
    report = check_plans(conn, queries=queries)
    verdicts = {(r.query, r.variant): r for r in report.results}
    bad = verdicts[("get_user_by_display_name", "all set")]
    assert not bad.ok and bad.seq_scans == ["users"]
    assert any("expected index users_pkey" in p for p in bad.problems)
    assert verdicts[("list_users_any", "all set")].ok
    good = verdicts[("get_user_by_id", "all set")]
    assert good.ok and good.indexes == ["users_pkey"] and "Index" in good.plan
    assert verdicts[("list_users_optional_role", "optional NULL")].ok
    assert not report.ok


GENERIC = """
-- name: get_user_by_email_or_any
-- Custom plans fold the NULL test away and read the email key; a generic plan cannot.
-- plan: index users_email_key
SELECT id FROM users WHERE %(email)s::text IS NULL OR lower(email) = lower(%(email)s::text);

-- name: find_user_by_email_or_any
-- The same, never prepared: only ever planned for its values.
-- plan: index users_email_key
-- prepare: never (planned for each value)
SELECT id FROM users WHERE %(email)s::text IS NULL OR lower(email) = lower(%(email)s::text);
"""


def test_generic_plans_are_judged_unless_a_query_is_never_prepared(
    conn: psycopg.Connection[Any],
) -> None:
    report = check_plans(conn, queries=parse_queries(GENERIC, file="generic.sql"))
    verdicts = {(r.query, r.variant): r for r in report.results}
    assert verdicts[("get_user_by_email_or_any", "all set")].ok
    generic = verdicts[("get_user_by_email_or_any", "generic plan")]
    assert not generic.ok and generic.seq_scans == ["users"]
    assert verdicts[("find_user_by_email_or_any", "all set")].ok
    assert ("find_user_by_email_or_any", "generic plan") not in verdicts


def test_check_plans_command(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check-plans", "--database", db_url, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK and doc["ok"] is True  # every shipped query passes
    assert {r["query"] for r in doc["results"]} == {q.name for q in annotated()}
    assert all("plan" in r and r["location"].startswith("sql/") for r in doc["results"])


def test_realistic_mode_accepts_scans_of_small_tables_only(conn: psycopg.Connection[Any]) -> None:
    queries = parse_queries(BAD, file="bad.sql")
    report = check_plans(conn, strict=False, queries=queries)
    # On empty tables the planner's own choice is a scan, and that is fine.
    assert report.ok, "\n".join(format_report(report, verbose=False))
    conn.execute(
        "INSERT INTO users (email, display_name)"
        " SELECT 'u' || g || '@example.com', repeat('x', 200) FROM generate_series(1, 20000) g"
    )
    conn.execute("ANALYZE users")
    report = check_plans(conn, strict=False, queries=queries)
    verdicts = {(r.query, r.variant): r for r in report.results}
    assert not verdicts[("get_user_by_display_name", "all set")].ok  # no index, a large table
    assert verdicts[("get_user_by_id", "all set")].ok


def test_check_plans_leaves_the_connection_settings_as_they_were(
    conn: psycopg.Connection[Any],
) -> None:
    broken = parse_queries(
        "-- name: get_nothing\n-- Fails to prepare.\n-- plan: index users_pkey\n"
        "SELECT id FROM no_such_table WHERE id = %(id)s::uuid;\n",
        file="broken.sql",
    )
    check_plans(conn, queries=parse_queries(BAD, file="bad.sql"))
    with pytest.raises(psycopg.errors.UndefinedTable):
        check_plans(conn, queries=broken)

    # Every setting was SET LOCAL: neither the finished nor the failed run leaks one.
    assert conn.execute("SHOW enable_seqscan").fetchone() == ("on",)
    assert conn.execute("SHOW plan_cache_mode").fetchone() == ("auto",)


LOOKUP = parse_queries(
    "-- name: get_user_by_id\n-- By id.\n-- plan: index users_pkey\n"
    "SELECT id FROM users WHERE id = %(id)s::uuid ORDER BY created_at;\n",
    file="lookup.sql",
)["get_user_by_id"]
BIG = SMALL_TABLE_PAGES + 1
INDEXES = {
    "users_pkey": _Index("users", "id", BIG),
    "users_created_idx": _Index("users", "created_at", BIG),
    "users_active_idx": _Index("users", None, BIG),
    "tiny_pkey": _Index("tiny", "id", SMALL_TABLE_PAGES),
    "tiny_made_idx": _Index("tiny", "made_at", SMALL_TABLE_PAGES),
}
TINY_BY_MADE = {"Index Name": "tiny_made_idx", "Alias": "t"}


@pytest.mark.parametrize(
    ("plan", "purposeful"),
    [
        ({"Index Name": "users_pkey"}, True),  # named by the annotation
        ({"Index Name": "users_created_idx", "Index Cond": "(created_at > $1)"}, True),
        ({"Index Name": "users_created_idx"}, True),  # no condition: yields ORDER BY order
        ({"Index Name": "users_created_idx", "Index Cond": "(id = $1)"}, False),  # skip scan
        ({"Index Name": "users_active_idx"}, True),  # partial: every row is a candidate
        # On a table of a few pages every index costs the same: the planner's pick is no
        # verdict, as long as some index of the table leads with a constrained column...
        ({**TINY_BY_MADE, "Index Cond": "(id = $1)"}, True),
        ({**TINY_BY_MADE, "Filter": "(t.id = $1)"}, True),
        ({"Merge Cond": "(s.tiny_id = t.id)", "Plans": [TINY_BY_MADE]}, True),
        # ...and none does here.
        ({**TINY_BY_MADE, "Index Cond": "(name = $1)"}, False),
        ({"Merge Cond": "(s.tiny_id = x.id)", "Plans": [TINY_BY_MADE]}, False),
    ],
)
def test_an_index_is_judged_by_how_the_plan_reads_it(
    plan: dict[str, Any], purposeful: bool
) -> None:
    used, problems = _index_reads(LOOKUP, plan, INDEXES)

    assert bool(used) is purposeful
    assert bool(problems) is not purposeful


def test_the_stage_read_of_a_start_uses_the_version_stages_key(
    conn: psycopg.Connection[Any],
) -> None:
    """start_executions reads a version's stages through version_stages_to_start (migration
    0028), whose query check-plans cannot EXPLAIN as a named query: auto_explain, asked to
    report nested statements as notices, shows its generic plan instead (strict, as
    check-plans: sequential scans off)."""
    owner = conn.execute(
        "INSERT INTO users (email, display_name) VALUES ('plan@example.com', 'P') RETURNING id"
    ).fetchone()
    assert owner is not None
    wf = conn.execute(
        "INSERT INTO workflows (owner_id, name) VALUES (%s, 'p') RETURNING id", (owner[0],)
    ).fetchone()
    assert wf is not None
    plans: list[dict[str, Any]] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        text = diag.message_primary or ""
        if text.startswith("duration:"):
            plans.append(json.loads(text.split("plan:", 1)[1]))

    conn.add_notice_handler(keep)
    with conn.transaction():
        conn.execute("LOAD 'auto_explain'")
        for setting, value in [
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_nested_statements", "on"),
            ("auto_explain.log_format", "json"),
            ("auto_explain.log_level", "notice"),
            ("plan_cache_mode", "force_generic_plan"),
            ("enable_seqscan", "off"),
        ]:
            conn.execute("SELECT set_config(%s, %s, true)", (setting, value))
        conn.execute("SELECT * FROM version_stages_to_start(%s, 1)", (wf[0],)).fetchall()
    conn.remove_notice_handler(keep)

    nested = [p["Plan"] for p in plans if "workflow_version_stages AS v" in p.get("Query Text", "")]
    assert nested, f"auto_explain showed no plan of the function's query: {plans}"
    scans = {
        (node.get("Node Type"), node.get("Relation Name"), node.get("Index Name"))
        for plan in nested
        for node in _walk(plan)
        if node.get("Relation Name") == "workflow_version_stages"
    }
    assert scans, nested
    assert all(index == "workflow_version_stages_name_key" for _, _, index in scans), scans


# PostgreSQL's default jit_above_cost: a plan estimated at that cost or more is compiled
# by a server built with LLVM (Debian's are) before it runs, on every execution.
_JIT_ABOVE_COST = 100_000


@pytest.mark.parametrize("seeded", [False, True], ids=["empty", "seeded"])
def test_the_largest_statements_stay_below_the_cost_that_compiles_them(
    db_url: str, capsys: pytest.CaptureFixture[str], seeded: bool
) -> None:
    """start_executions and claim_steps, the largest statements, run their generic plans
    (plan_cache_mode=force_generic_plan). Estimated at PostgreSQL's default jit_above_cost
    or more, a server with JIT would compile them on every call: version_stages_to_start
    without its ROWS estimate put the start at 173,000, 100 ms a start on PostgreSQL 15."""
    if seeded:
        assert main(["seed", "--database", db_url, "--scale", "2000", "--quiet", "--json"]) == 0
        capsys.readouterr()
    queries = get_queries()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        costs = {}
        for name in ("start_executions", "claim_steps"):
            text, params = _to_positional(queries[name].sql)
            conn.execute(f"PREPARE fl_cost AS {text}")
            nulls = ", ".join(["NULL"] * len(params))
            row = conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE fl_cost({nulls})").fetchone()
            conn.execute("DEALLOCATE fl_cost")
            assert row is not None
            costs[name] = row[0][0]["Plan"]["Total Cost"]
    assert all(cost < _JIT_ABOVE_COST for cost in costs.values()), costs
