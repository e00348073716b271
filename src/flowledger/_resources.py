"""Locate the SQL files shipped with the package (wheel) or lying in the source tree."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def _find(name: str) -> Path:
    # A built wheel carries sql/ and migrations/ inside the package (hatch force-include);
    # an editable install or a checkout reads them from the top level of the repository.
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parents[1] / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"flowledger cannot find its {name}/ directory (looked beside {_PACKAGE_DIR})"
    )


def sql_dir() -> Path:
    """The directory holding the named-query files and schema.sql."""
    return _find("sql")


def migrations_dir() -> Path:
    """The directory holding the yoyo migrations."""
    return _find("migrations")
