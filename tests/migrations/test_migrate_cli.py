"""The `flowledger migrate` command as a deployment pipeline uses it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from _migrations import write_migrations
from flowledger.errors import MigrationError, Unavailable
from flowledger.tools.cli import EXIT_EDITED, EXIT_ERROR, EXIT_OK, EXIT_PENDING, main
from flowledger.tools.migrate import ADVISORY_LOCK_KEY, Migrator, Settings

MIGRATIONS = {
    "0001_create_things.sql": "-- things\n"
    "CREATE TABLE things (id int PRIMARY KEY, name text NOT NULL);\n"
    "CREATE INDEX things_name_idx ON things (name);\n",
    "0001_create_things.rollback.sql": "DROP TABLE things;\n",
    "0002_add_things_color.sql": "-- colour\nALTER TABLE things ADD COLUMN color text;\n",
    "0002_add_things_color.rollback.sql": "ALTER TABLE things DROP COLUMN color;\n",
    "0003_create_widgets.sql": "-- widgets\nCREATE TABLE widgets (id int PRIMARY KEY);\n",
    "0003_create_widgets.rollback.sql": "DROP TABLE widgets;\n",
}


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    return write_migrations(tmp_path, MIGRATIONS)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def cli(url: str, mdir: Path, *argv: str) -> list[str]:
    return [*argv, "--database", url, "--migrations-dir", str(mdir)]


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename NOT LIKE '\\_%' AND tablename <> 'yoyo_lock'"
        ).fetchall()
    return {r[0] for r in rows}


def test_apply_status_rollback_cycle(
    empty_db_url: str, mdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *cli(empty_db_url, mdir, "migrate", "status", "--check", "--json"))
    assert code == EXIT_PENDING
    doc = json.loads(out)
    assert doc["counts"] == {"applied": 0, "pending": 3, "edited": 0, "missing": 0}

    code, out, _ = run(
        capsys, *cli(empty_db_url, mdir, "migrate", "apply", "--to", "0002_add_things_color")
    )
    assert code == EXIT_OK
    assert "applied 0001_create_things" in out and "0003" not in out
    assert tables(empty_db_url) == {"things"}

    code, out, _ = run(capsys, *cli(empty_db_url, mdir, "migrate", "apply", "--json"))
    assert json.loads(out)["migrations"] == ["0003_create_widgets"]
    code, out, _ = run(capsys, *cli(empty_db_url, mdir, "migrate", "status", "--check"))
    assert code == EXIT_OK, out
    code, out, _ = run(capsys, *cli(empty_db_url, mdir, "migrate", "apply"))
    assert "nothing to apply" in out

    code, out, _ = run(capsys, *cli(empty_db_url, mdir, "migrate", "rollback"))
    assert out.strip() == "rolled back 0003_create_widgets"
    code, out, _ = run(
        capsys,
        *cli(empty_db_url, mdir, "migrate", "rollback", "--to", "0001_create_things", "--json"),
    )
    assert json.loads(out)["migrations"] == ["0002_add_things_color"]
    code, out, _ = run(capsys, *cli(empty_db_url, mdir, "migrate", "apply"))
    code, out, _ = run(capsys, *cli(empty_db_url, mdir, "migrate", "rollback", "--steps", "2"))
    assert out.split() == [
        "rolled",
        "back",
        "0003_create_widgets",
        "rolled",
        "back",
        "0002_add_things_color",
    ]
    code, out, _ = run(capsys, *cli(empty_db_url, mdir, "migrate", "rollback", "--all"))
    assert code == EXIT_OK and tables(empty_db_url) == set()
    code, out, _ = run(capsys, *cli(empty_db_url, mdir, "migrate", "apply"))
    assert tables(empty_db_url) == {"things", "widgets"}


def test_dry_run_prints_sql_and_changes_nothing(
    empty_db_url: str, mdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *cli(empty_db_url, mdir, "migrate", "apply", "--dry-run"))
    assert code == EXIT_OK
    assert "CREATE TABLE things" in out and "would apply 0003_create_widgets" in out
    assert tables(empty_db_url) == set()
    run(capsys, *cli(empty_db_url, mdir, "migrate", "apply"))
    code, out, _ = run(
        capsys, *cli(empty_db_url, mdir, "migrate", "rollback", "--dry-run", "--json")
    )
    doc = json.loads(out)
    assert doc["migrations"] == ["0003_create_widgets"]
    assert "DROP TABLE widgets" in doc["sql"]["0003_create_widgets"]
    assert "widgets" in tables(empty_db_url)


def test_edited_applied_migration_is_reported_and_blocks_apply(
    empty_db_url: str, mdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, *cli(empty_db_url, mdir, "migrate", "apply", "--to", "0002_add_things_color"))
    (mdir / "0001_create_things.sql").write_text(MIGRATIONS["0001_create_things.sql"] + "-- edit\n")
    code, out, _ = run(capsys, *cli(empty_db_url, mdir, "migrate", "status", "--check", "--json"))
    assert code == EXIT_EDITED
    states = {m["id"]: m["state"] for m in json.loads(out)["migrations"]}
    assert states == {
        "0001_create_things": "edited",
        "0002_add_things_color": "applied",
        "0003_create_widgets": "pending",
    }
    code, out, err = run(capsys, *cli(empty_db_url, mdir, "migrate", "verify"))
    assert code == EXIT_EDITED and "0001_create_things: file changed" in out
    code, out, err = run(capsys, *cli(empty_db_url, mdir, "migrate", "apply"))
    assert (
        code == EXIT_EDITED and "refusing to apply" in err and "widgets" not in tables(empty_db_url)
    )
    code, out, err = run(capsys, *cli(empty_db_url, mdir, "migrate", "apply", "--allow-edited"))
    assert code == EXIT_OK and "widgets" in tables(empty_db_url)


def test_missing_migration_file_is_reported(
    empty_db_url: str, mdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, *cli(empty_db_url, mdir, "migrate", "apply"))
    (mdir / "0003_create_widgets.sql").unlink()
    (mdir / "0003_create_widgets.rollback.sql").unlink()
    code, out, _ = run(capsys, *cli(empty_db_url, mdir, "migrate", "status", "--check"))
    assert code == EXIT_EDITED and "missing  0003_create_widgets" in out
    code, _, err = run(capsys, *cli(empty_db_url, mdir, "migrate", "rollback", "--all"))
    assert code == EXIT_ERROR and "0003_create_widgets" in err and "no file" in err


def test_failing_migration_leaves_database_unchanged_and_names_statement(
    empty_db_url: str, mdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (mdir / "0004_add_broken.sql").write_text(
        "-- broken\nCREATE TABLE gadgets (id int);\nINSERT INTO gadgets VALUES (1);\n"
        "ALTER TABLE things ADD COLUMN nope no_such_type;\n"
    )
    code, out, err = run(capsys, *cli(empty_db_url, mdir, "migrate", "apply"))
    assert code == EXIT_ERROR
    assert "0004_add_broken.sql:4" in err and "ALTER TABLE things ADD COLUMN nope" in err
    assert 'type "no_such_type" does not exist' in err
    assert "Traceback" not in err
    assert tables(empty_db_url) == {"things", "widgets"}  # 0001-0003 landed, 0004 not at all
    code, out, _ = run(capsys, *cli(empty_db_url, mdir, "migrate", "status", "--json"))
    assert json.loads(out)["counts"]["pending"] == 1


def test_statement_timeout_applies_during_migrations(
    empty_db_url: str, mdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (mdir / "0004_add_slow.sql").write_text("-- slow\nSELECT pg_sleep(5);\n")
    code, _, err = run(
        capsys, *cli(empty_db_url, mdir, "migrate", "apply", "--statement-timeout", "200ms")
    )
    assert code == EXIT_ERROR and "statement timeout" in err


def test_lock_timeout_applies_during_migrations(
    empty_db_url: str, mdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, *cli(empty_db_url, mdir, "migrate", "apply"))
    (mdir / "0004_add_things_size.sql").write_text(
        "-- size\nALTER TABLE things ADD COLUMN size int;\n"
    )
    with psycopg.connect(empty_db_url) as blocker:
        blocker.execute("LOCK TABLE things IN ACCESS SHARE MODE")
        code, _, err = run(
            capsys, *cli(empty_db_url, mdir, "migrate", "apply", "--lock-timeout", "200ms")
        )
    assert code == EXIT_ERROR and "lock timeout" in err


def test_unknown_target_is_a_clear_error(
    empty_db_url: str, mdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for verb in ("apply", "rollback"):
        code, _, err = run(capsys, *cli(empty_db_url, mdir, "migrate", verb, "--to", "0099_nope"))
        assert (
            code == EXIT_ERROR
            and err.strip() == "flowledger: error: unknown migration id '0099_nope'"
        )


def test_concurrent_applies_serialise_on_the_advisory_lock(empty_db_url: str, mdir: Path) -> None:
    (mdir / "0004_add_slow.sql").write_text("-- slow\nSELECT pg_sleep(1.5);\n")
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def worker(name: str, delay: float) -> None:
        time.sleep(delay)
        try:
            with Migrator(empty_db_url, directory=mdir) as mig:
                results[name] = mig.apply().migrations
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(n, d)) for n, d in (("first", 0), ("second", 0.3))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results["first"] == [
        "0001_create_things",
        "0002_add_things_color",
        "0003_create_widgets",
        "0004_add_slow",
    ]
    assert results["second"] == []
    with psycopg.connect(empty_db_url) as conn:
        rows = conn.execute(
            "SELECT migration_id, count(*) FROM _yoyo_migration GROUP BY 1"
        ).fetchall()
    assert sorted(rows) == [(m, 1) for m in sorted(results["first"])]


def test_lock_wait_expires_with_a_clear_error_and_crash_leaves_no_lock(
    empty_db_url: str, mdir: Path
) -> None:
    holder = psycopg.connect(empty_db_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    with Migrator(empty_db_url, directory=mdir, settings=Settings(wait_timeout=0.3)) as mig:
        with pytest.raises(MigrationError, match="another migration run holds the migration lock"):
            mig.apply()
    # The holder "crashes": its session ends without unlocking.
    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (holder.info.backend_pid,))
    holder.close()
    with Migrator(empty_db_url, directory=mdir, settings=Settings(wait_timeout=5)) as mig:
        assert len(mig.apply().migrations) == 3


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://x@localhost/db", "malformed database URL"),
        ("not a url", "malformed database URL"),
        ("postgresql://u@127.0.0.1:1/db", "cannot connect to postgresql://u@127.0.0.1:1/db"),
        ("postgresql://u@/db?host=/nonexistent-dir", "cannot connect to"),
    ],
)
def test_connection_errors_are_one_line(
    url: str, expected: str, mdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "migrate", "status", "--database", url, "--migrations-dir", str(mdir)
    )
    assert code == EXIT_ERROR
    assert err.startswith("flowledger: error: ") and expected in err
    assert len(err.strip().splitlines()) == 1


def test_missing_migrations_directory(
    empty_db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *cli(empty_db_url, tmp_path / "nope", "migrate", "apply"))
    assert code == EXIT_ERROR and "migrations directory not found" in err


def test_wrong_password_is_a_clear_error(
    empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Switch the server to password auth for one role, then log in with a wrong password."""
    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        hba_file = admin.execute("SHOW hba_file").fetchone()
        assert hba_file is not None
        original = admin.execute("SELECT pg_read_file(%s)", (hba_file[0],)).fetchone()
        assert original is not None
        admin.execute("DROP ROLE IF EXISTS fl_pw_probe")
        admin.execute("CREATE ROLE fl_pw_probe LOGIN PASSWORD 'right-password'")
        rule = "local all fl_pw_probe scram-sha-256\nhost all fl_pw_probe all scram-sha-256\n"
        _write_server_file(admin, hba_file[0], rule + original[0])
        try:
            base = empty_db_url.split("@", 1)[1]
            url = f"postgresql://fl_pw_probe:wrong@{base}"
            code, _, err = run(capsys, "migrate", "status", "--database", url)
            assert code == EXIT_ERROR
            assert "password authentication failed" in err
            assert "wrong" not in err  # the password is redacted
        finally:
            _write_server_file(admin, hba_file[0], original[0])
            admin.execute("DROP ROLE fl_pw_probe")


def _write_server_file(admin: psycopg.Connection[Any], path: str, text: str) -> None:
    admin.execute("CREATE TEMP TABLE IF NOT EXISTS hba_text (line text)")
    admin.execute("TRUNCATE hba_text")
    with admin.cursor().copy("COPY hba_text (line) FROM STDIN") as copy:
        for line in text.splitlines():
            if line.strip():  # CSV would write an empty value as ""
                copy.write_row((line,))
    # CSV with delimiter and quote characters that never occur writes each line verbatim.
    admin.execute(
        psycopg.sql.SQL(
            "COPY hba_text TO {} WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')"
        ).format(psycopg.sql.Literal(path))
    )
    admin.execute("SELECT pg_reload_conf()")
    time.sleep(0.3)


def test_console_script_never_prints_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowledger.tools.cli",
            "migrate",
            "apply",
            "--database",
            "postgresql://u@127.0.0.1:1/x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == EXIT_ERROR
    assert "Traceback" not in proc.stderr and proc.stderr.startswith(
        "flowledger: error: cannot connect"
    )


def test_unavailable_is_raised_for_unreachable_server(mdir: Path) -> None:
    with pytest.raises(Unavailable):
        Migrator("postgresql://u@127.0.0.1:1/x", directory=mdir).status()
