"""A short, bounded pass of the coverage-guided fuzzers (the long runs: `make fuzz`)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.harness import ROOT


@pytest.mark.parametrize("target", ["codec", "session"])
def test_fuzz_target_runs_without_a_crash(target: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "fuzz" / "fuzz_fix.py"), target, "-runs=20000",
                        f"-artifact_prefix={tmp_path}/"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert re.search(r"Done 20000 runs", out), out[-2000:]
    assert not list(tmp_path.glob("crash-*"))
