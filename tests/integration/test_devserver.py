"""The embedded default: `flowledger db start|stop|status|url`, and a configured URL wins."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from flowledger.cli import EXIT_ERROR, EXIT_OK, main


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLOWLEDGER_HOME", str(tmp_path / "fl"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("FLOWLEDGER_URL", raising=False)
    return tmp_path / "fl"


def test_db_lifecycle_and_default_database(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "status"]) == EXIT_ERROR
    assert "not running" in capsys.readouterr().out
    try:
        assert main(["db", "start"]) == EXIT_OK
        capsys.readouterr()
        assert main(["db", "status", "--json"]) == EXIT_OK
        status = json.loads(capsys.readouterr().out)
        assert status["running"] and status["pgdata"] == str(home / "pgdata")
        assert main(["db", "url"]) == EXIT_OK
        url = capsys.readouterr().out.strip()
        with psycopg.connect(url) as conn:  # the URL libpq clients (psql) accept
            assert conn.execute("SELECT current_database()").fetchone() == ("flowledger",)
        # Asked for with --embedded, migrate uses the embedded server and keeps it running.
        assert main(["migrate", "apply", "--embedded", "--json"]) == EXIT_OK
        assert json.loads(capsys.readouterr().out)["migrations"]
        assert main(["migrate", "status", "--check", "--embedded"]) == EXIT_OK
        assert main(["db", "start"]) == EXIT_OK  # already running: left alone
    finally:
        capsys.readouterr()
        assert main(["db", "stop"]) == EXIT_OK
    assert capsys.readouterr().out.strip() == "stopped"
    assert main(["db", "stop"]) == EXIT_OK
    assert capsys.readouterr().out.strip() == "not running"
    assert (home / "pgdata" / "PG_VERSION").exists()  # data kept between runs


def test_configured_url_wins(
    home: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert main(["migrate", "status", "--check"]) == EXIT_OK
    assert not home.exists(), "the embedded server must not start when a URL is configured"
