"""step_logs partitioned by UTC month: partitions listed, made ahead (moving lines out of
the default partition), dropped for retention; concurrent runs; bad input refused."""

from __future__ import annotations

import datetime
import itertools
import threading
import uuid
from typing import Any

import psycopg
import pytest

from _runs_factories import add_stage, make_workflow
from flowledger.database import Database
from flowledger.errors import Conflict, InvalidInput
from flowledger.records.runs import LogPartition, NewLogLine

Conn = psycopg.Connection[Any]
UTC = datetime.UTC


def _at(year: int, month: int, day: int = 1, hour: int = 0) -> datetime.datetime:
    return datetime.datetime(year, month, day, hour, tzinfo=UTC)


def _step(db: Database, conn: Conn) -> tuple[uuid.UUID, uuid.UUID]:
    wf = make_workflow(conn)
    add_stage(conn, wf, "s")
    ex = db.executions.start(workflow_id=wf)
    [step] = db.steps.list_by_execution(execution_id=ex.id)
    return ex.id, step.id


def _log(db: Database, ex: uuid.UUID, step: uuid.UUID, *at: datetime.datetime) -> None:
    lines = [
        NewLogLine(step_id=step, execution_id=ex, message=f"at {t.isoformat()}", logged_at=t)
        for t in at
    ]
    db.step_logs.append(lines=lines)


def _where(conn: Conn) -> dict[str, str]:
    """The partition holding each line, by message."""
    rows = conn.execute("SELECT message, tableoid::regclass::text FROM step_logs").fetchall()
    return dict(rows)


def _names(partitions: list[LogPartition]) -> list[str]:
    return [p.name for p in partitions]


def test_a_migrated_database_has_this_month_the_next_three_and_the_default(db: Database) -> None:
    now = datetime.datetime.now(UTC)
    first = _at(now.year, now.month)
    partitions = db.step_logs.partitions()
    assert partitions[-1] == LogPartition(
        name="step_logs_default",
        starts_at=None,
        ends_at=None,
        is_default=True,
        total_bytes=partitions[-1].total_bytes,
    )
    months = [p for p in partitions if not p.is_default]
    assert months[0].name == f"step_logs_{now:%Y_%m}" and months[0].starts_at == first
    assert len(months) == 4
    for before, after in itertools.pairwise(months):
        assert before.ends_at == after.starts_at  # contiguous, oldest first
    assert all(p.total_bytes > 0 for p in partitions)
    assert db.step_logs.ensure_partitions() == []  # already there


def test_ensure_partitions_makes_the_months_ahead_once(db: Database) -> None:
    made = db.step_logs.ensure_partitions(months_ahead=2, now=_at(2031, 11, 20, 23))
    assert [(p.name, p.starts_at, p.ends_at) for p in made] == [
        ("step_logs_2031_11", _at(2031, 11), _at(2031, 12)),
        ("step_logs_2031_12", _at(2031, 12), _at(2032, 1)),
        ("step_logs_2032_01", _at(2032, 1), _at(2032, 2)),
    ]
    assert not any(p.is_default for p in made)
    # Months are UTC months: 30 November 23:00 in UTC-3 is 1 December in UTC.
    west = datetime.timezone(datetime.timedelta(hours=-3))
    later = datetime.datetime(2031, 11, 30, 23, tzinfo=west)
    assert _names(db.step_logs.ensure_partitions(months_ahead=2, now=later)) == [
        "step_logs_2032_02"
    ]
    assert db.step_logs.ensure_partitions(months_ahead=3, now=_at(2031, 11)) == []


def test_lines_of_a_month_without_partition_go_to_the_default_one_and_move_into_it(
    db: Database, conn: Conn
) -> None:
    ex, step = _step(db, conn)
    _log(db, ex, step, _at(2020, 3, 31, 23), _at(2020, 4, 2), _at(2020, 6, 1))
    assert set(_where(conn).values()) == {"step_logs_default"}  # the append did not fail
    ids = conn.execute("SELECT message, id FROM step_logs ORDER BY id").fetchall()

    made = db.step_logs.ensure_partitions(months_ahead=1, now=_at(2020, 3, 15))

    assert _names(made) == ["step_logs_2020_03", "step_logs_2020_04"]
    assert _where(conn) == {
        "at 2020-03-31T23:00:00+00:00": "step_logs_2020_03",
        "at 2020-04-02T00:00:00+00:00": "step_logs_2020_04",
        "at 2020-06-01T00:00:00+00:00": "step_logs_default",  # no partition asked for June
    }
    assert conn.execute("SELECT message, id FROM step_logs ORDER BY id").fetchall() == ids
    page = db.step_logs.list_by_step(step_id=step)
    assert [line.message for line in page.items] == [m for m, _ in ids]
    # The moved lines' partition has the parent's indexes, constraints and foreign keys.
    indexes = conn.execute(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = ANY(ARRAY['step_logs_step_idx', 'step_logs_execution_idx',"
        "       'step_logs_logged_at_idx', 'step_logs_pkey']::regclass[])"
        "   AND c.relname LIKE 'step\\_logs\\_2020\\_03\\_%%'"
    ).fetchone()
    assert indexes == (4,)
    with pytest.raises(InvalidInput, match="step that does not exist"):
        _log(db, ex, uuid.uuid4(), _at(2020, 3, 2))
    with pytest.raises(psycopg.errors.CheckViolation, match="step_logs_level_check"):
        conn.execute(
            # With its id: before PostgreSQL 17 a partition has no identity of its own.
            "INSERT INTO step_logs_2020_03 (id, step_id, execution_id, message, level, logged_at)"
            " VALUES (-1, %s, %s, 'x', 'loud', '2020-03-02Z')",
            (step, ex),
        )


def test_concurrent_ensure_partitions_make_each_partition_once(db: Database, db_url: str) -> None:
    start = _at(2033, 1, 10)
    results: list[list[LogPartition]] = []
    errors: list[BaseException] = []
    with psycopg.connect(db_url, autocommit=True) as holder:
        # Both runs queue behind this lock, so they are released at the same moment.
        holder.execute(
            "SELECT pg_advisory_lock(hashtextextended('flowledger:step_logs partitions', 0))"
        )

        def run() -> None:
            try:
                results.append(db.step_logs.ensure_partitions(months_ahead=5, now=start))
            except BaseException as exc:  # reported to the main thread below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        for _ in range(200):
            row = holder.execute(waiting).fetchone()
            if row == (2,):
                break
            threading.Event().wait(0.05)
        assert holder.execute(waiting).fetchone() == (2,)
        holder.execute("SELECT pg_advisory_unlock_all()")
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    first, second = sorted(results, key=len)
    assert first == []
    assert _names(second) == [f"step_logs_2033_{m:02d}" for m in range(1, 7)]


def test_drop_partitions_drops_whole_months_before_the_cutoff_only(
    db: Database, conn: Conn
) -> None:
    ex, step = _step(db, conn)
    db.step_logs.ensure_partitions(months_ahead=2, now=_at(2021, 1, 5))
    _log(db, ex, step, _at(2021, 1, 31, 23), _at(2021, 2, 14), _at(2021, 3, 1), _at(2019, 1, 1))
    before = {p.name: p for p in db.step_logs.partitions()}

    dropped = db.step_logs.drop_partitions(older_than=_at(2021, 3, 10))

    assert dropped == [before["step_logs_2021_01"], before["step_logs_2021_02"]]
    assert [(p.starts_at, p.ends_at) for p in dropped] == [
        (_at(2021, 1), _at(2021, 2)),
        (_at(2021, 2), _at(2021, 3)),
    ]
    assert set(_names(db.step_logs.partitions())) == set(before) - set(_names(dropped))
    # March is kept: it may hold lines at or after the cutoff. The default is never dropped.
    assert _where(conn) == {
        "at 2021-03-01T00:00:00+00:00": "step_logs_2021_03",
        "at 2019-01-01T00:00:00+00:00": "step_logs_default",
    }
    assert db.step_logs.drop_partitions(older_than=_at(2021, 3, 10)) == []
    db.step_logs.drop_partitions(older_than=datetime.datetime.max.replace(tzinfo=UTC))
    assert _names(db.step_logs.partitions()) == ["step_logs_default"]
    assert len(db.step_logs.list_by_step(step_id=step).items) == 1


def test_a_table_in_the_way_is_a_conflict_and_nothing_is_made(db: Database, conn: Conn) -> None:
    conn.execute("CREATE TABLE step_logs_2034_02 (x int)")
    before = db.step_logs.partitions()
    with pytest.raises(Conflict, match="step_logs_2034_02 exists"):
        db.step_logs.ensure_partitions(months_ahead=2, now=_at(2034, 1))
    assert db.step_logs.partitions() == before  # January was not kept either
    conn.execute("DROP TABLE step_logs_2034_02")
    conn.execute(
        "CREATE TABLE step_logs_odd PARTITION OF step_logs"
        " FOR VALUES FROM ('2034-01-15Z') TO ('2034-02-15Z')"
    )
    with pytest.raises(Conflict, match="step_logs_odd of step_logs overlaps"):
        db.step_logs.ensure_partitions(months_ahead=0, now=_at(2034, 2))


NAIVE = datetime.datetime(2030, 1, 1)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"months_ahead": "3"}, "months_ahead"),
        ({"months_ahead": True}, "months_ahead"),
        ({"months_ahead": 1.0}, "months_ahead"),
        ({"months_ahead": None}, "months_ahead"),
        ({"months_ahead": -1}, "months_ahead"),
        ({"months_ahead": 61}, "months_ahead"),
        ({"months_ahead": 2**80}, "months_ahead"),
        ({"now": NAIVE}, "now"),
        ({"now": "2030-01-01T00:00:00Z"}, "now"),
        ({"now": datetime.date(2030, 1, 1)}, "now"),
        ({"now": datetime.datetime(9999, 11, 1, tzinfo=UTC)}, "now"),
    ],
)
def test_ensure_partitions_refuses_bad_input_before_touching_a_table(
    db: Database, conn: Conn, kwargs: dict[str, Any], argument: str
) -> None:
    before = db.step_logs.partitions()
    with pytest.raises(InvalidInput, match=argument):
        db.step_logs.ensure_partitions(**kwargs)
    assert db.step_logs.partitions() == before


@pytest.mark.parametrize(
    "older_than",
    [NAIVE, datetime.timedelta(days=30), "2030-01-01", None, 30, datetime.date(2030, 1, 1)],
)
def test_drop_partitions_refuses_a_cutoff_that_is_not_an_aware_datetime(
    db: Database, older_than: Any
) -> None:
    before = db.step_logs.partitions()
    with pytest.raises(InvalidInput, match="older_than"):
        db.step_logs.drop_partitions(older_than=older_than)
    assert db.step_logs.partitions() == before
