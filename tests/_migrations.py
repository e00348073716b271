"""A migrations directory of the test's own, for the migration CLI tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def write_migrations(tmp_path: Path, files: Mapping[str, str]) -> Path:
    """`tmp_path/migrations` holding `files` (name -> SQL text)."""
    d = tmp_path / "migrations"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    return d
