"""The tree is the architecture (DESIGN §3): rings as sub-packages, imports point inward.

Rings, innermost first: ``core`` (pure: no I/O, clocks or logging set-up),
``edges`` (files, sockets, TLS, audit writer, feeds), ``shells`` (asyncio
protocols around the sans-IO core), ``app`` (wiring: one place builds
everything) and ``cli`` (entry points).  A module may import its own ring and
rings inside it, never one outside.  Every import counts for the direction —
module level, function-local and ``if TYPE_CHECKING:`` — and no import that
runs (module level or function-local) closes a cycle; annotations-only
imports under ``TYPE_CHECKING`` never run, so they may name a sibling back.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.harness import ROOT

PKG = ROOT / "gateway"
RINGS = {"core": 0, "edges": 1, "shells": 2, "app": 3, "cli": 4}
#: modules directly under gateway/: the client SDK sits with the application wiring
TOP = {"__init__": 0, "sdk": 3, "__main__": 4}
FORBIDDEN_IN_CORE = {"asyncio", "socket", "ssl", "logging", "structlog", "uvloop", "time", "os", "subprocess",
                     "threading", "selectors", "aiohttp", "nats"}
MAX_MODULE_LINES = 800
MAX_CLASS_LINES = 650


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def ring_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return 0
    if parts[1] in RINGS:
        return RINGS[parts[1]]
    return TOP[parts[1]]


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of import nodes inside ``if TYPE_CHECKING:`` blocks."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imports_of(module: str, path: Path, runtime_only: bool = False) -> set[str]:
    """Every module this one imports (anywhere in the file), resolved to absolute names."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree) if runtime_only else set()
    is_pkg = path.name == "__init__.py"
    package = module.split(".") if is_pkg else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


def graph(runtime_only: bool = False) -> dict[str, set[str]]:
    mods = modules()
    return {m: {i for i in imports_of(m, p, runtime_only) if i in mods and i != m and not (m.startswith(i + "."))}
            for m, p in mods.items()}


def test_every_module_is_in_a_ring() -> None:
    for m in modules():
        ring_of(m)  # KeyError names a module outside the rings


def test_imports_point_inward() -> None:
    bad = [f"{m} (ring {ring_of(m)}) imports {i} (ring {ring_of(i)})"
           for m, deps in graph().items() for i in sorted(deps) if ring_of(i) > ring_of(m)]
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    g = graph(runtime_only=True)
    # packages import nothing of substance; a cycle through an __init__ is not a real one
    g = {m: {d for d in deps if modules()[d].name != "__init__.py"} for m, deps in g.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g[m]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def test_core_imports_no_io_clock_or_logging() -> None:
    for m, path in modules().items():
        if ring_of(m) == 0 and m != "gateway":
            tops = {i.split(".")[0] for i in imports_of(m, path)}
            bad = tops & FORBIDDEN_IN_CORE
            assert not bad, f"{m} imports {sorted(bad)}"
            text = path.read_text()
            assert "time.time()" not in text and ".now()" not in text, f"{m} reads the clock"


def test_small_modules_and_classes() -> None:
    for m, path in modules().items():
        text = path.read_text()
        lines = text.count("\n")
        assert lines <= MAX_MODULE_LINES, f"{m} has {lines} lines (max {MAX_MODULE_LINES})"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                assert n <= MAX_CLASS_LINES, f"{m}.{node.name} has {n} lines (max {MAX_CLASS_LINES})"


def test_the_ordered_checks_live_in_one_pure_module() -> None:
    path = PKG / "core" / "pipeline.py"
    assert path.exists(), "gateway/core/pipeline.py holds the ordered checks"
