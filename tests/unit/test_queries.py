"""The named-query loader: what it accepts, and file:line for everything it refuses."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from flowledger.errors import FlowledgerError
from flowledger.repositories.queries import (
    QUERY_VERBS,
    PlanSpec,
    Query,
    QueryFileError,
    UnknownQuery,
    get_queries,
    load_queries,
    lookup_query,
    name_comment,
    parse_queries,
)

GOOD = """\
-- Queries of the workflows aggregate.
-- (comments and blank lines may come before the first block)

-- name: get_workflow_by_id
-- One workflow by primary key.
-- returns: one
-- record: workflows.Workflow
SELECT id, name
  FROM workflows
 WHERE id = %(id)s::uuid;

-- name: list_workflows_by_status
-- Workflows of one owner,
-- newest first.
-- plan: index workflows_owner_status_updated_idx, workflows_owner_id_idx
-- returns: many
-- Keyset: (updated_at, id) strictly after the cursor.
SELECT id, name
  FROM workflows
 WHERE owner_id = %(owner_id)s::uuid
   -- the status filter keeps the index when NULL
   AND (%(status)s::text IS NULL OR status = %(status)s::text)
   AND name LIKE 'a%%;'
 ORDER BY updated_at DESC, id DESC
 LIMIT %(limit)s
;

-- ---------------------------------------------------------------
-- Counting
-- ---------------------------------------------------------------

-- name: count_workflows
-- How many workflows exist.
-- plan: seqscan-ok (small table (under 10k rows); count(*) reads it all anyway)
SELECT count(*) FROM workflows
"""


def test_good_file_parses_every_block() -> None:
    queries = parse_queries(GOOD, file="sql/workflows.sql")
    assert list(queries) == ["get_workflow_by_id", "list_workflows_by_status", "count_workflows"]
    assert queries["get_workflow_by_id"] == Query(
        name="get_workflow_by_id",
        sql="/* flowledger:get_workflow_by_id */ SELECT id, name\n  FROM workflows\n"
        " WHERE id = %(id)s::uuid",
        text="SELECT id, name\n  FROM workflows\n WHERE id = %(id)s::uuid",
        description="One workflow by primary key.",
        file="sql/workflows.sql",
        line=4,
        plan=None,
        returns="one",
        record="workflows.Workflow",
    )


def test_description_lines_are_joined_and_annotations_parsed() -> None:
    listed = parse_queries(GOOD, file="f.sql")["list_workflows_by_status"]
    assert listed.description == "Workflows of one owner, newest first."
    assert listed.plan == PlanSpec(
        kind="index", indexes=("workflows_owner_status_updated_idx", "workflows_owner_id_idx")
    )
    assert listed.returns == "many"
    assert listed.line == 12
    assert listed.record is None


def test_body_keeps_its_comments_and_drops_commentary_between_blocks() -> None:
    sql = parse_queries(GOOD, file="f.sql")["list_workflows_by_status"].text
    assert sql.startswith("-- Keyset: (updated_at, id) strictly after the cursor.\nSELECT id")
    assert "   -- the status filter keeps the index when NULL\n" in sql
    assert "name LIKE 'a%%;'" in sql
    assert sql.endswith("LIMIT %(limit)s")
    assert "Counting" not in sql


def test_a_query_is_prepared_unless_it_says_never() -> None:
    text = (
        "-- name: prune_x\n-- Desc.\n-- prepare: never (a batch (of a pass))\nSELECT 1;\n"
        "-- name: get_y\n-- Desc.\nSELECT 2;\n"
    )
    queries = parse_queries(text, file="f.sql")
    assert (queries["prune_x"].prepared, queries["get_y"].prepared) == (False, True)


def test_seqscan_reason_may_contain_parentheses() -> None:
    counted = parse_queries(GOOD, file="f.sql")["count_workflows"]
    assert counted.plan == PlanSpec(
        kind="seqscan-ok", reason="small table (under 10k rows); count(*) reads it all anyway"
    )
    assert counted.returns is None
    assert counted.text == "SELECT count(*) FROM workflows"


def test_crlf_line_endings() -> None:
    text = "-- name: get_x\r\n-- Desc.\r\nSELECT 1;\r\n"
    assert parse_queries(text, file="f.sql")["get_x"].text == "SELECT 1"


def test_sql_sent_opens_with_the_name_comment() -> None:
    for name, found in parse_queries(GOOD, file="f.sql").items():
        assert found.sql == f"/* flowledger:{name} */ {found.text}"
    for name, found in get_queries().items():
        assert found.sql.startswith(f"/* flowledger:{name} */ "), name
        assert found.sql.removeprefix(name_comment(name)) == found.text


def test_empty_file_has_no_queries() -> None:
    assert parse_queries("-- nothing yet\n\n", file="f.sql") == {}


@pytest.mark.parametrize("verb", QUERY_VERBS)
def test_every_verb_starts_a_valid_name(verb: str) -> None:
    assert f"{verb}_things" in parse_queries(f"-- name: {verb}_things\n-- D.\nSELECT 1", file="f")


# (case, text, line of the defect, what the message must say)
BAD: list[tuple[str, str, int, str]] = [
    (
        "sql before first block",
        """
        -- header comment
        SELECT 1;
        -- name: get_x
        -- Desc.
        SELECT 1
        """,
        2,
        "SQL outside a query block (before the first '-- name:')",
    ),
    (
        "duplicate name in one file",
        """
        -- name: get_x
        -- Desc.
        SELECT 1;

        -- name: get_x
        -- Again.
        SELECT 2;
        """,
        5,
        "duplicate query name 'get_x' (first at bad.sql:1)",
    ),
    (
        "empty body",
        """
        -- name: get_x
        -- Desc.

        -- name: get_y
        -- Desc.
        SELECT 1
        """,
        1,
        "query 'get_x' has an empty body",
    ),
    (
        "body of comments only",
        """
        -- name: get_x
        -- Desc.
        -- plan: index x_idx
        -- TODO
        ;
        """,
        1,
        "query 'get_x' has an empty body",
    ),
    (
        "empty body at end of file",
        """
        -- name: get_x
        -- Desc.
        """,
        1,
        "query 'get_x' has an empty body",
    ),
    (
        "missing description",
        """
        -- name: get_x
        SELECT 1
        """,
        1,
        "query 'get_x' has no description: a comment line must follow '-- name:'",
    ),
    (
        "annotation before description",
        """
        -- name: get_x
        -- plan: index x_idx
        -- Desc.
        SELECT 1
        """,
        1,
        "query 'get_x' has no description",
    ),
    (
        "blank comment is no description",
        """
        -- name: get_x
        --
        SELECT 1
        """,
        1,
        "query 'get_x' has no description",
    ),
    (
        "unknown annotation",
        """
        -- name: get_x
        -- Desc.
        -- plna: index x_idx
        SELECT 1
        """,
        3,
        "unknown annotation 'plna' (known: plan, returns, record, prepare)",
    ),
    (
        "duplicate annotation",
        """
        -- name: get_x
        -- Desc.
        -- returns: one
        -- returns: many
        SELECT 1
        """,
        4,
        "duplicate annotation 'returns'",
    ),
    (
        "annotation lost in the body",
        """
        -- name: get_x
        -- Desc.
        SELECT 1
        -- plan: index x_idx
        FROM t
        """,
        4,
        "annotation 'plan' must directly follow the description",
    ),
    (
        "plan without index names",
        """
        -- name: get_x
        -- Desc.
        -- plan: index
        SELECT 1
        """,
        3,
        "malformed plan annotation 'index'",
    ),
    (
        "plan with a bad index name",
        """
        -- name: get_x
        -- Desc.
        -- plan: index x_idx, "Quoted Idx"
        SELECT 1
        """,
        3,
        "malformed plan annotation",
    ),
    (
        "plan with an empty list item",
        """
        -- name: get_x
        -- Desc.
        -- plan: index x_idx,
        SELECT 1
        """,
        3,
        "malformed plan annotation 'index x_idx,'",
    ),
    (
        "seqscan without reason",
        """
        -- name: get_x
        -- Desc.
        -- plan: seqscan-ok
        SELECT 1
        """,
        3,
        "malformed plan annotation 'seqscan-ok': expected 'index <name>[, <name>...]' or "
        "'seqscan-ok (<reason>)'",
    ),
    (
        "seqscan with empty reason",
        """
        -- name: get_x
        -- Desc.
        -- plan: seqscan-ok (  )
        SELECT 1
        """,
        3,
        "malformed plan annotation 'seqscan-ok (  )'",
    ),
    (
        "seqscan reason without parentheses",
        """
        -- name: get_x
        -- Desc.
        -- plan: seqscan-ok tiny table
        SELECT 1
        """,
        3,
        "malformed plan annotation 'seqscan-ok tiny table'",
    ),
    (
        "prepare without a reason",
        """
        -- name: prune_x
        -- Desc.
        -- prepare: never
        SELECT 1
        """,
        3,
        "malformed prepare annotation 'never': expected 'never (<reason>)'",
    ),
    (
        "prepare but always",
        """
        -- name: prune_x
        -- Desc.
        -- prepare: always (why not)
        SELECT 1
        """,
        3,
        "malformed prepare annotation 'always (why not)'",
    ),
    (
        "unknown plan kind",
        """
        -- name: get_x
        -- Desc.
        -- plan: bitmap x_idx
        SELECT 1
        """,
        3,
        "malformed plan annotation 'bitmap x_idx'",
    ),
    (
        "bad returns",
        """
        -- name: get_x
        -- Desc.
        -- returns: some
        SELECT 1
        """,
        3,
        "malformed returns annotation 'some': expected one of one, many, none, scalar, rowcount",
    ),
    (
        "record without module",
        """
        -- name: get_x
        -- Desc.
        -- record: Workflow
        SELECT 1
        """,
        3,
        "malformed record annotation 'Workflow': expected <module>.<Struct> under "
        "flowledger.records",
    ),
    (
        "record naming a module, not a struct",
        """
        -- name: get_x
        -- Desc.
        -- record: records.workflows
        SELECT 1
        """,
        3,
        "malformed record annotation 'records.workflows'",
    ),
    (
        "unknown verb",
        """
        -- name: fetch_x
        -- Desc.
        SELECT 1
        """,
        1,
        "bad query name 'fetch_x': expected <verb>_<words> in lowercase",
    ),
    (
        "upper case name",
        """
        -- name: get_X
        -- Desc.
        SELECT 1
        """,
        1,
        "bad query name 'get_X'",
    ),
    (
        "verb alone",
        """
        -- name: get
        -- Desc.
        SELECT 1
        """,
        1,
        "bad query name 'get'",
    ),
    (
        "empty name",
        """
        -- name:
        -- Desc.
        SELECT 1
        """,
        1,
        "bad query name ''",
    ),
    (
        "name with trailing words",
        """
        -- name: get_x returns one
        -- Desc.
        SELECT 1
        """,
        1,
        "bad query name 'get_x returns one'",
    ),
    (
        "name line repeated",
        """
        -- name: get_x
        -- name: get_x
        -- Desc.
        SELECT 1
        """,
        1,
        "'-- name: get_x' is directly followed by another '-- name:' line",
    ),
    (
        "two statements",
        """
        -- name: update_x
        -- Desc.
        UPDATE t SET a = 1;
        -- and then
        DELETE FROM t;
        """,
        5,
        "query 'update_x' has more than one statement (';' ends line 3)",
    ),
    (
        "next block without its name line",
        """
        -- name: get_x
        -- Desc.
        SELECT 1;

        -- Another query whose '-- name:' was forgotten.
        SELECT 2;
        """,
        6,
        "query 'get_x' has more than one statement (';' ends line 3)",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "reason"), [case[1:] for case in BAD], ids=[c[0] for c in BAD]
)
def test_bad_file_is_refused_with_file_and_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(QueryFileError) as caught:
        parse_queries(dedent(text).lstrip("\n"), file="bad.sql")
    error = caught.value
    assert (error.file, error.line) == ("bad.sql", line)
    assert error.reason.startswith(reason)
    assert str(error) == f"bad.sql:{line}: {error.reason}"
    assert isinstance(error, FlowledgerError)


def _write(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")


def test_load_reads_sql_files_in_name_order_and_skips_schema(tmp_path: Path) -> None:
    _write(
        tmp_path / "sql",
        {
            "b_runs.sql": "-- name: get_run\n-- A run.\nSELECT 2;\n",
            "a_workflows.sql": "-- name: get_workflow\n-- A workflow.\nSELECT 1;\n",
            "schema.sql": "CREATE TABLE t (id int);\n",
            "notes.txt": "not sql",
        },
    )
    queries = load_queries(tmp_path / "sql")
    assert list(queries) == ["get_workflow", "get_run"]
    assert queries["get_run"].file == "sql/b_runs.sql"
    with pytest.raises(TypeError):
        queries["get_x"] = queries["get_run"]  # type: ignore[index]


def test_load_refuses_a_name_defined_in_two_files(tmp_path: Path) -> None:
    _write(
        tmp_path / "sql",
        {
            "b.sql": "-- Later file.\n\n-- name: get_x\n-- Again.\nSELECT 2;\n",
            "a.sql": "-- name: get_x\n-- First.\nSELECT 1;\n",
        },
    )
    with pytest.raises(QueryFileError) as caught:
        load_queries(tmp_path / "sql")
    assert str(caught.value) == "sql/b.sql:3: duplicate query name 'get_x' (first at sql/a.sql:1)"


def test_load_reports_the_defective_file(tmp_path: Path) -> None:
    _write(tmp_path / "sql", {"a.sql": "-- name: get_x\n-- Desc.\n-- plan: index\nSELECT 1;\n"})
    with pytest.raises(QueryFileError, match=r"^sql/a\.sql:3: malformed plan annotation"):
        load_queries(tmp_path / "sql")


def test_unknown_query_suggests_near_names() -> None:
    queries = parse_queries(GOOD, file="f.sql")
    assert lookup_query(queries, "count_workflows").name == "count_workflows"
    with pytest.raises(UnknownQuery) as caught:
        lookup_query(queries, "get_workflow_by_ids")
    assert str(caught.value) == (
        "no query named 'get_workflow_by_ids' in the .sql files; did you mean 'get_workflow_by_id'?"
    )
    assert isinstance(caught.value, KeyError)
    assert isinstance(caught.value, FlowledgerError)
    with pytest.raises(UnknownQuery, match=r"^no query named 'zzz' in the \.sql files$"):
        lookup_query(queries, "zzz")


def test_shipped_query_files_load() -> None:
    queries = get_queries()
    assert queries
    assert get_queries() is queries
    assert all(q.file.startswith("sql/") for q in queries.values())
