"""`make demo`'s scene, headless, in its own folder and ports: every expected outcome must happen."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT


def free_run(n: int = 3) -> int:
    """A base port with ``n`` consecutive free ports after it."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n > 65535:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no run of free ports")


def test_demo_scene_runs_headless_with_every_expected_outcome(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "examples/demo.py", "--workdir", str(tmp_path), "--base-port",
                        str(free_run())], cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = r.stdout
    assert r.returncode == 0, out[-4000:] + r.stderr[-2000:]
    assert "13/13 expected outcomes" in out and "NOT AS EXPECTED" not in out
    assert "\033[" not in out  # no colour codes when stdout is not a terminal
    # the decision stream names the rule that decided each line
    for rule in ("algo-orders-colo", "no outbound rule of the policy allows roles", "risk-open-rfqs-lan", "read-only",
                 "trader-orders-lan", "device-health-deny", "kill-switch", "cancels-always"):
        assert rule in out, rule
    assert "chain intact" in out
