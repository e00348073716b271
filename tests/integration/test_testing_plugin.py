"""The pytest plugin flowledger.testing, used as a downstream service would: a small test
module run by pytest (pytester, in this process; and from the built wheel, installed with
the `testing` extra into a fresh venv) on this run's test server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, PgServer
from flowledger.testing import FlowledgerServer, embedded_home

pytest_plugins = ["pytester"]

# What a service's own tests would do with the fixtures: a migrated, empty database per
# test, both faces, the factories. Every test here passes only if the plugin works.
DOWNSTREAM = textwrap.dedent(
    """
    import asyncio

    import psycopg
    import pytest

    import flowledger
    from flowledger.records.identity import NewUser

    def test_a_fresh_migrated_database(flowledger_db, flowledger_url, flowledger_template):
        assert flowledger_db.users.list().items == []
        assert flowledger_db.stats()["max_size"] == 4
        with psycopg.connect(flowledger_url) as conn:
            name = conn.execute("SELECT current_database()").fetchone()[0]
        assert name.startswith("flowledger_test_") and name != flowledger_template

    @pytest.mark.parametrize("round", [1, 2])
    def test_each_test_has_its_own_database(flowledger_db, round):
        # The second round would hit Conflict if the first one's user were still there.
        flowledger_db.users.create(user=NewUser(email="same@example.com", display_name="S"))
        assert len(flowledger_db.users.list().items) == 1

    def test_factories(flowledger_factories, flowledger_db):
        run = flowledger_factories.execution(parameters={"env": "ci"})
        stages = flowledger_db.stages.list(workflow_id=run.workflow_id)
        assert [s.name for s in stages] == ["extract", "load"]
        claimed = flowledger_db.steps.claim(worker_id="w", limit=10)
        assert [(s.execution_id, s.task_name) for s in claimed] == [(run.id, "extract")]
        owner = flowledger_factories.user(display_name="Ada")
        wf = flowledger_factories.workflow(owner=owner, stages=["only"])
        assert (wf.owner_id, wf.version) == (owner.id, 2)

    @pytest.mark.anyio
    async def test_async_face_under_anyio(flowledger_async_db):
        async with flowledger_async_db() as db:
            assert isinstance(db, flowledger.AsyncDatabase)
            user = await db.users.create(user=NewUser(email="a@example.com", display_name="A"))
            assert (await db.users.get(id=user.id)).email == "a@example.com"

    def test_async_face_on_a_loop_of_its_own(flowledger_async_db, flowledger_db):
        async def main():
            async with flowledger_async_db(max_size=2) as db:
                await db.users.create(user=NewUser(email="b@example.com", display_name="B"))
        asyncio.run(main())
        assert flowledger_db.users.get_by_email(email="b@example.com").display_name == "B"
    """
)
DOWNSTREAM_TESTS = 6
# The same opener under pytest-asyncio (installed only in the wheel's venv).
UNDER_PYTEST_ASYNCIO = textwrap.dedent(
    """
    import pytest

    from flowledger.records.identity import NewUser

    @pytest.mark.asyncio
    async def test_async_face_under_pytest_asyncio(flowledger_async_db):
        async with flowledger_async_db() as db:
            await db.users.create(user=NewUser(email="c@example.com", display_name="C"))
            assert [u.email for u in (await db.users.list()).items] == ["c@example.com"]
    """
)


def readme_example() -> str:
    """The Python example of README.md's "Testing your service with flowledger"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Testing your service with flowledger", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def _server_options(pg_server: PgServer) -> list[str]:
    options = [
        f"--postgresql-host={pg_server.host}",
        f"--postgresql-port={pg_server.port}",
        f"--postgresql-user={pg_server.user}",
    ]
    if pg_server.password:
        options.append(f"--postgresql-password={pg_server.password}")
    return options


def _leftover_databases(pg_server: PgServer, pid: int) -> list[str]:
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s",
            (f"flowledger\\_%\\_{pid}\\_%",),
        ).fetchall()
    return [row[0] for row in rows]


def test_downstream_tests_pass_on_the_given_server(
    pytester: pytest.Pytester, pg_server: PgServer
) -> None:
    pytester.makepyfile(test_service=DOWNSTREAM, test_readme=readme_example())
    result = pytester.runpytest("-p", "no:cacheprovider", *_server_options(pg_server))
    result.assert_outcomes(passed=DOWNSTREAM_TESTS + 2)
    assert _leftover_databases(pg_server, os.getpid()) == []


def test_without_pytest_postgresql_the_embedded_server_under_the_ini_home(
    pytester: pytest.Pytester, pg_server: PgServer
) -> None:
    if not pg_server.embedded:
        pytest.skip("this run's server is not the embedded one (which this test reuses)")
    pytester.makeini(f"[pytest]\nflowledger_home = {ROOT / '.flowledger' / 'test'}\n")
    pytester.makepyfile(
        test_embedded="""
        def test_embedded(flowledger_server, flowledger_factories):
            assert flowledger_server.embedded
            assert flowledger_factories.execution().status == "running"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:pytest_postgresql")
    result.assert_outcomes(passed=1)


def test_the_embedded_home_is_the_ini_option_else_flowledger_home_else_dot_flowledger_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FLOWLEDGER_HOME", raising=False)
    assert embedded_home(pytester.parseconfig()) == pytester.path / ".flowledger" / "test"
    monkeypatch.setenv("FLOWLEDGER_HOME", str(tmp_path / "env-home"))
    assert embedded_home(pytester.parseconfig()) == tmp_path / "env-home"
    pytester.makeini("[pytest]\nflowledger_home = pg/here\n")
    assert embedded_home(pytester.parseconfig()) == pytester.path / "pg" / "here"


def test_a_bad_port_or_a_port_user_or_password_without_a_host_is_refused(
    pytester: pytest.Pytester,
) -> None:
    home = pytester.path / "home"
    pytester.makeini("[pytest]\nflowledger_home = home\n")
    pytester.makepyfile(test_server="def test_server(flowledger_server):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--postgresql-port=5433")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*InvalidInput: --postgresql-port given without *-host*"])
    assert not home.exists()
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--postgresql-host=h", "--postgresql-port=x"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*InvalidInput: --postgresql-port must be a port number, not 'x'"])


def test_an_unreachable_server_is_unavailable_and_its_password_never_shown(
    pytester: pytest.Pytester,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pytester.makepyfile(test_db="def test_db(flowledger_db):\n    pass\n")
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "--postgresql-host=127.0.0.1",
        f"--postgresql-port={port}",
        "--postgresql-password=s3cret-pw",
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*Unavailable: cannot connect to *127.0.0.1*{port}*"])
    assert "s3cret-pw" not in result.stdout.str() + result.stderr.str()
    server = FlowledgerServer("127.0.0.1", port, "postgres", "s3cret-pw", False)
    assert "s3cret-pw" not in repr(server)


def test_nothing_starts_unless_a_fixture_is_requested(pytester: pytest.Pytester) -> None:
    home = pytester.path / "home"
    pytester.makeini("[pytest]\nflowledger_home = home\n")
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not home.exists()


def _run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_CORE", "COVERAGE_"))}
    env.pop("FLOWLEDGER_HOME", None)
    proc = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=540,
    )
    assert proc.returncode == 0, (command, proc.stdout[-4000:], proc.stderr[-4000:])
    return proc


# Building the wheel and installing it with its dependencies into a new venv: ~1 minute.
@pytest.mark.slow
def test_the_wheel_with_the_testing_extra_runs_downstream_tests(
    tmp_path: Path, pg_server: PgServer
) -> None:
    try:
        _run(sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "-w", "dist", cwd=tmp_path)
        (wheel,) = (tmp_path / "dist").glob("flowledger-*.whl")
        _run(sys.executable, "-m", "venv", "venv", cwd=tmp_path)
        venv = tmp_path / "venv" / "bin"
        extras = ("anyio", "pytest-asyncio")
        _run(venv / "pip", "install", "-q", f"{wheel}[testing]", *extras, cwd=tmp_path)
        where = _run(venv / "python", "-c", "import flowledger.testing as t; print(t.__file__)")
        assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout
        service = tmp_path / "service"
        service.mkdir()
        (service / "test_service.py").write_text(DOWNSTREAM)
        (service / "test_asyncio.py").write_text(UNDER_PYTEST_ASYNCIO)
        (service / "test_readme.py").write_text(readme_example())
        args = ["-p", "no:cacheprovider", *_server_options(pg_server)]
        proc = _run(venv / "pytest", "-q", *args, cwd=service)
        assert f"{DOWNSTREAM_TESTS + 3} passed" in proc.stdout, proc.stdout
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
