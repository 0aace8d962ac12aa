"""Imports point inward: the pure core never imports I/O, clocks or logging set-up."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.harness import ROOT

CORE = ROOT / "gateway" / "fix"
FORBIDDEN = {"asyncio", "socket", "ssl", "logging", "structlog", "uvloop", "time", "datetime",
             "os", "subprocess", "threading", "selectors"}
EDGE_MODULES = {"proxy", "legs", "tls", "store", "audit", "exchange_sim", "cli", "logs", "pki", "config", "guard"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif node.level >= 2 and node.module:
                names.add("gateway." + node.module.split(".")[0])
            elif node.level >= 2:
                names |= {"gateway." + a.name for a in node.names}
    return names


def test_core_modules_import_no_io_clock_or_logging() -> None:
    files = sorted(CORE.glob("*.py"))
    assert files
    for f in files:
        bad = imports_of(f) & FORBIDDEN
        assert not bad, f"{f.name} imports {bad}"


def test_core_never_imports_the_edges() -> None:
    for f in sorted(CORE.glob("*.py")):
        edges = {n for n in imports_of(f) if n.startswith("gateway.") and n.split(".")[1] in EDGE_MODULES}
        assert not edges, f"{f.name} imports edge modules {edges}"


def test_policy_engine_risk_and_anomaly_are_pure() -> None:
    pure = [ROOT / "gateway" / "policy" / f"{m}.py" for m in ("engine", "risk", "anomaly")]
    for f in pure:
        bad = imports_of(f) & (FORBIDDEN - {"datetime"})
        assert not bad, f"{f.name} imports {bad}"
        assert "now()" not in f.read_text(), f"{f.name} reads the clock"


def test_the_refusal_answers_and_the_worker_partition_are_pure() -> None:
    for name in ("answers", "partition"):
        f = ROOT / "gateway" / f"{name}.py"
        bad = imports_of(f) & FORBIDDEN
        assert not bad, f"{f.name} imports {bad}"
