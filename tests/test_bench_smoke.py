"""bench/ runs (speed is reported by bench, never asserted in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT


def test_codec_bench_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "codec.json"
    r = subprocess.run([sys.executable, "-m", "bench.codec", "--rounds", "1", "--n", "20", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert {row["case"] for row in data["rows"]} >= {"parse NewOrderSingle", "encode NewOrderSingle"}
    assert all(row["speedup"] > 0 for row in data["rows"])


def test_signature_bench_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "sig.json"
    r = subprocess.run([sys.executable, "-m", "bench.signatures", "--rounds", "1", "--n", "5", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    cases = {row["case"] for row in json.loads(out.read_text())["rows"]}
    assert {"verify ed25519", "verify hmac-sha256"} <= cases


def test_policy_bench_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "policy.json"
    r = subprocess.run([sys.executable, "-m", "bench.policy", "--n", "200", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert [row["rules"] for row in json.loads(out.read_text())["rows"]] == [13, 103, 1003]


def test_posture_bench_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "posture.json"
    r = subprocess.run([sys.executable, "-m", "bench.posture", "--rounds", "2", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    assert json.loads(out.read_text())["rounds"] == 2


def test_audit_bench_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    r = subprocess.run([sys.executable, "-m", "bench.audit", "--n", "300", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    modes = [row["mode"] for row in json.loads(out.read_text())["rows"]]
    assert modes[0] == "inline" and "thread write, 1 in flight" in modes and "thread fsync, 128 in flight" in modes
