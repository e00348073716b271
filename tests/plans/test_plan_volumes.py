"""Strict check-plans gives the same verdicts, all passing, whatever the data volume."""

from __future__ import annotations

import json
import time

import pytest

from flowledger.tools.cli import EXIT_OK, main
from flowledger.tools.migrate import Migrator


def _verdicts(url: str, capsys: pytest.CaptureFixture[str]) -> dict[tuple[str, str], bool]:
    code = main(["check-plans", "--database", url, "--json"])
    doc = json.loads(capsys.readouterr().out)
    verdicts = {(r["query"], r["variant"]): r["ok"] for r in doc["results"]}
    failed = [
        f"{r['query']} [{r['variant']}]: {r['problems']}" for r in doc["results"] if not r["ok"]
    ]
    assert code == EXIT_OK and failed == [], "\n".join(failed)
    return verdicts


def _seed(url: str, scale: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["seed", "--database", url, "--scale", str(scale), "--quiet", "--json"]) == EXIT_OK
    capsys.readouterr()


def test_strict_verdicts_are_the_same_empty_and_seeded(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = _verdicts(db_url, capsys)
    _seed(db_url, 2_000, capsys)  # the README's `seed --scale`, then ANALYZE (it runs one)

    assert _verdicts(db_url, capsys) == empty


# ~70 s on 2 cores (measured), most of it writing the volume: marked slow.
@pytest.mark.slow
def test_strict_verdicts_are_the_same_at_50_000_executions(
    db_url: str, empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = _verdicts(db_url, capsys)
    with Migrator(empty_db_url) as mig:
        mig.apply()
    started = time.monotonic()
    _seed(empty_db_url, 50_000, capsys)

    assert _verdicts(empty_db_url, capsys) == empty
    print(f"seed --scale 50000 and check-plans: {time.monotonic() - started:.0f} s")
