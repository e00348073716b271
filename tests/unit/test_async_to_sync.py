"""The generator of the sync face: its rewriting rules, and that the committed sync
modules are exactly what it makes from their async source."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "async_to_sync.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("async_to_sync", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def test_async_keywords_go_and_async_names_become_sync_ones() -> None:
    source = (
        "from flowledger.aio.repositories.base import AsyncRepository\n"
        "class AsyncThings(AsyncRepository):\n"
        "    async def get(self) -> AsyncIterator[int]:\n"
        '        """Read with `async with db.transaction()` on an AsyncDatabase."""\n'
        "        async with self._atomic() as conn:  # an AsyncConnection\n"
        "            async for row in conn.rows():\n"
        "                return await self._fetch('q', {})\n"
        "    async def __aenter__(self) -> None: ...\n"
    )
    assert GEN.transform(source) == (
        "from flowledger.repositories.base import Repository\n"
        "class Things(Repository):\n"
        "    def get(self) -> Iterator[int]:\n"
        '        """Read with `with db.transaction()` on an Database."""\n'
        "        with self._atomic() as conn:  # an Connection\n"
        "            for row in conn.rows():\n"
        "                return self._fetch('q', {})\n"
        "    def __enter__(self) -> None: ...\n"
    )


def test_directives_replace_drop_and_add_lines() -> None:
    source = (
        "import asyncio  # sync: import time\n"
        "x = 1  # async-only\n"
        "# sync-only: y = 2\n"
        "# sync-only:     z = 3\n"
        "# async-only: begin\n"
        "a = 4\n"
        "# async-only: end\n"
        "await asyncio.sleep(1)  # sync: time.sleep(1)\n"
        '__all__ = ["connect_async"]\n'
    )
    assert GEN.transform(source) == (
        'import time\ny = 2\n    z = 3\ntime.sleep(1)\n__all__ = ["connect"]\n'
    )


def test_an_unclosed_async_only_block_is_refused() -> None:
    try:
        GEN.transform("# async-only: begin\nx = 1\n")
    except SystemExit as exc:
        assert "async-only: end" in str(exc)
    else:
        raise AssertionError("an unclosed block was accepted")


def test_every_generated_module_says_so_and_names_its_source() -> None:
    for source in GEN.sources():
        target = ROOT / "src" / "flowledger" / source.relative_to(GEN.SOURCE)
        first = target.read_text().splitlines()[0]
        assert first.startswith("# Generated from src/flowledger/aio/"), target
        assert str(source.relative_to(ROOT)) in first


def test_the_committed_sync_face_is_what_the_generator_makes() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_names_a_sync_module_that_was_edited_by_hand(tmp_path: Path) -> None:
    # On a copy of the tree: the suite runs twice side by side in one clone on CI, and
    # the other run's check must never see this edit.
    shutil.copytree(ROOT / ".ci", tmp_path / ".ci")
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    source = GEN.sources()[0]
    target = tmp_path / "src" / "flowledger" / source.relative_to(GEN.SOURCE)
    target.write_text(target.read_text() + "\n# edited by hand\n")
    done = subprocess.run(
        [sys.executable, str(tmp_path / ".ci" / "async_to_sync.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert str(target.relative_to(tmp_path)) in done.stdout
    assert done.stdout.count("\n  ") == 1, done.stdout
