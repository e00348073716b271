"""Generate flowledger's sync face from its async source.

The async modules under ``src/flowledger/aio/`` are the one source of every method that
talks to the database. Each ``aio/<path>.py`` (``__init__.py`` files excepted) becomes
``src/flowledger/<path>.py`` by a token-level rewrite that keeps comments and layout:

- ``async def`` / ``async with`` / ``async for`` lose ``async``; ``await`` is dropped;
- names ``AsyncFoo`` become ``Foo`` (``AsyncConnectionPool``, ``AsyncDatabase``...), and
  the few names in ``RENAMES`` map one to one (``asynccontextmanager``, ``__aenter__``...);
- ``flowledger.aio.`` in an import becomes ``flowledger.``;
- in docstrings and comments, ``AsyncFoo`` becomes ``Foo`` and ``async with`` /
  ``async for`` / ``async def`` lose ``async``;
- a line ending in ``# sync: <code>`` becomes ``<code>`` (same indentation); a line
  ending in ``# async-only`` is dropped; a comment line ``# sync-only: <code>`` becomes
  ``<code>``; lines between ``# async-only: begin`` and ``# async-only: end`` are dropped.

The result is sorted and formatted by ruff, and carries a header saying it is generated.
Run ``python .ci/async_to_sync.py`` after editing an async module; ``--check`` exits 1
(listing the files) when a committed sync module differs from what this script makes.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "flowledger"
SOURCE = PACKAGE / "aio"

RENAMES = {
    "asynccontextmanager": "contextmanager",
    "AbstractAsyncContextManager": "AbstractContextManager",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "aclose": "close",
    "connect_async": "connect",
    "StopAsyncIteration": "StopIteration",
}
_ASYNC_NAME = re.compile(r"\bAsync([A-Z]\w*)")
_SYNC_LINE = re.compile(r"^(\s*)(.*?)\s*#\s*sync:\s*(.*?)\s*$")
_SYNC_ONLY = re.compile(r"^(\s*)#\s*sync-only: ?(.*?)\s*$")
_ASYNC_ONLY = re.compile(r"#\s*async-only\s*$")


def header(source: Path) -> str:
    """The first line of every generated module."""
    rel = source.relative_to(ROOT)
    return (
        f"# Generated from {rel} by .ci/async_to_sync.py.\n"
        "# Do not edit: edit the async source, then run python .ci/async_to_sync.py.\n"
    )


def _apply_directives(text: str) -> str:
    out: list[str] = []
    dropping = False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if re.fullmatch(r"#\s*async-only:\s*begin", stripped):
            dropping = True
            continue
        if re.fullmatch(r"#\s*async-only:\s*end", stripped):
            dropping = False
            continue
        if dropping or _ASYNC_ONLY.search(line):
            continue
        if m := _SYNC_ONLY.match(line):
            out.append(f"{m.group(1)}{m.group(2)}\n")
        elif m := _SYNC_LINE.match(line):
            out.append(f"{m.group(1)}{m.group(3)}\n")
        else:
            out.append(line)
    if dropping:
        raise SystemExit("'# async-only: begin' without its '# async-only: end'")
    return "".join(out)


def _edits(text: str) -> list[tuple[int, int, str]]:
    """(start offset, end offset, replacement) for every token to rewrite."""
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def offset(pos: tuple[int, int]) -> int:
        return starts[pos[0] - 1] + pos[1]

    tokens = [
        t
        for t in tokenize.generate_tokens(io.StringIO(text).readline)
        if t.type not in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT)
    ]
    edits: list[tuple[int, int, str]] = []
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.type == tokenize.NAME:
            if tok.string == "async" and nxt is not None and nxt.string in ("def", "with", "for"):
                edits.append((offset(tok.start), offset(nxt.start), ""))
            elif tok.string == "await" and nxt is not None:
                edits.append((offset(tok.start), offset(nxt.start), ""))
            elif tok.string == "aio" and i >= 2 and tokens[i - 2].string == "flowledger":
                if tokens[i - 1].string == "." and nxt is not None and nxt.string == ".":
                    edits.append((offset(tokens[i - 1].start), offset(nxt.start), ""))
            elif tok.string in RENAMES:
                edits.append((offset(tok.start), offset(tok.end), RENAMES[tok.string]))
            elif m := _ASYNC_NAME.fullmatch(tok.string):
                edits.append((offset(tok.start), offset(tok.end), m.group(1)))
        elif tok.type == tokenize.STRING and tok.string.strip("\"'") in RENAMES:
            new = tok.string.replace(tok.string.strip("\"'"), RENAMES[tok.string.strip("\"'")])
            edits.append((offset(tok.start), offset(tok.end), new))
        elif tok.type in (tokenize.STRING, tokenize.COMMENT):
            new = _ASYNC_NAME.sub(r"\1", tok.string)
            new = re.sub(r"\basync (with|for|def)\b", r"\1", new)
            if new != tok.string:
                edits.append((offset(tok.start), offset(tok.end), new))
    return edits


def transform(text: str) -> str:
    """The sync text of one async module, before formatting."""
    text = _apply_directives(text)
    for start, end, new in sorted(_edits(text), reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _ruff(args: list[str], text: str, filename: Path) -> str:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        raise SystemExit("ruff not found: install the dev extras (pip install -e '.[dev]')")
    done = subprocess.run(
        [ruff, *args, "--stdin-filename", str(filename), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode not in (0, 1) or (done.returncode == 1 and not done.stdout):
        raise SystemExit(f"ruff {' '.join(args)} failed on {filename}:\n{done.stderr}")
    return done.stdout


def generate(source: Path) -> tuple[Path, str]:
    """The sync module's path and text for one async source module."""
    target = PACKAGE / source.relative_to(SOURCE)
    text = header(source) + transform(source.read_text())
    text = _ruff(
        ["check", "--fix", "--select", "I,F401,RUF022", "--quiet", "--exit-zero"], text, target
    )
    return target, _ruff(["format", "--quiet"], text, target)


def sources() -> list[Path]:
    """Every async source module with a sync twin."""
    return sorted(p for p in SOURCE.rglob("*.py") if p.name != "__init__.py")


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) every generated module; 1 when one differs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    stale = []
    for source in sources():
        target, text = generate(source)
        current = target.read_text() if target.exists() else None
        if current == text:
            continue
        stale.append(target.relative_to(ROOT))
        if not args.check:
            target.write_text(text)
    if args.check and stale:
        print("generated modules differ from their async source (run python .ci/async_to_sync.py):")
        for path in stale:
            print(f"  {path}")
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
