"""bench/ runs (speed is reported by bench, never asserted in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT


def test_codec_bench_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "codec.json"
    r = subprocess.run([sys.executable, "-m", "bench.codec", "--rounds", "1", "--n", "20", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert {row["case"] for row in data["rows"]} >= {"parse NewOrderSingle", "encode NewOrderSingle",
                                                  "parse signed NewOrderSingle"}
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


def test_pipeline_bench_measures_the_path_each_case_is_named_after(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "bench.pipeline", "--rounds", "1", "--n", "20", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    data = json.loads((tmp_path / "pipeline.json").read_text())
    verdicts = {row["case"]: (row["verdict"]["allowed"], row["verdict"]["stage"], row["verdict"]["rule_ids"][0])
                for row in data["cases"]}
    expected = {}
    for signed in ("", ", HMAC-signed"):
        expected |= {
            f"NewOrderSingle allowed{signed}": (True, "policy", "algo-orders-colo"),
            f"NewOrderSingle refused by policy (dev sandbox zone){signed}": (False, "policy", "default-deny"),
            f"NewOrderSingle refused by risk (qty above max){signed}": (False, "risk", "risk.max_order_qty"),
            f"OrderCancelRequest allowed{signed}": (True, "policy", "cancels-always"),
        }
    expected |= {"NewOrderSingle allowed, Ed25519-signed": (True, "policy", "algo-orders-colo"),
                 "NewOrderSingle refused: bad HMAC signature": (False, "signature", "signature"),
                 "ExecutionReport inbound allowed": (True, "policy", "inbound-trading")}
    assert verdicts == expected
    assert all(row["us"] > 0 and row["decisions_per_s"] > 0 for row in data["cases"])
    assert {row["stage"] for row in data["stages"]} >= {"signature.verify hmac-sha256", "RiskBook.check NewOrderSingle "
                                                        "allowed", "Policy.decide NewOrderSingle allowed"}
    assert all(row["us"] > 0 for row in data["stages"])
    md = (tmp_path / "pipeline.md").read_text()
    assert "| NewOrderSingle refused by risk (qty above max), HMAC-signed | deny at risk" in md and md in r.stdout


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


def test_end_to_end_harness_runs_every_configuration_with_tiny_counts(tmp_path: Path) -> None:
    """The harness itself cannot rot: simulator, haproxy, fixgw and load generator as separate
    processes, results as JSON, markdown and a PNG, the gateway's audit chain intact."""
    import shutil

    if not shutil.which("haproxy"):
        pytest.fail("haproxy missing: `make test` installs it (make bench-deps)")
    r = subprocess.run([sys.executable, "-m", "bench", "--quick", "--placements", "split",
                        "--configs", "direct,haproxy,fixgw-hmac,fixgw-ed25519,fixgw-fsync",
                        "--phase", "closed:40", "--phase", "open:200:0.25", "--phase", "pipe:200:16",
                        "--warmup", "10", "--workers", "0", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-2000:]
    result = json.loads((tmp_path / "e2e.json").read_text())
    runs = result["runs"]
    assert [x["config"] for x in runs] == ["direct", "haproxy", "fixgw-hmac", "haproxy", "fixgw-ed25519",
                                           "haproxy", "fixgw-fsync"]
    from bench.report import rows, stats

    for run in runs:
        closed, opened, pipe = run["phases"]
        assert stats(closed)["count"] == 40 and stats(pipe)["count"] == 200 and stats(opened)["count"] == 50
        assert all(p["lost"] == 0 for p in run["phases"]) and run["refused"] == 0
        if run["config"].startswith("fixgw"):
            assert run["audit"]["ok"] and run["audit"]["records"] > 2 * 290  # every order + its reports
            assert run["relay_cpu_s"] > 0
    assert all("ratio_p50" in row for row in rows(result) if row["config"].startswith("fixgw"))
    md = (tmp_path / "e2e.md").read_text()
    assert "| split | fixgw-ed25519 |" in md and "Goals" in md and "Where the gateway's time goes" in md
    assert (tmp_path / "e2e.png").read_bytes()[:4] == b"\x89PNG"


def test_session_engine_bench_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "session.json"
    r = subprocess.run([sys.executable, "-m", "bench.session", "--n", "300", "--rounds", "1", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["case"] for r in rows] == ["send + receive, validated", "send + receive, no dictionary validation"]
    assert all(r["msgs_per_s"] > 0 for r in rows)


def test_scale_and_flood_runs_keep_every_extra_session_logged_on(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "bench", "--quick", "--placements", "split", "--configs", "fixgw-hmac",
                        "--scale", "20", "--flood", "50", "--phase", "closed:30", "--warmup", "5", "--profile",
                        "none", "--workers", "0", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((tmp_path / "e2e.json").read_text())
    quiet, flooded = result["flood"]
    assert "flood" not in quiet and flooded["flood"]["attempts"] > 0 and flooded["phases"][0]["lost"] == 0
    assert "Flood (split, fixgw-hmac)" in (tmp_path / "e2e.md").read_text()
    scale = result["scale"]
    assert [run["idle"] for run in scale] == [0, 20]
    assert scale[1]["idle_still_logged_on"] == 20 and scale[1]["logons_per_s"] > 0
    assert "| 20 |" in (tmp_path / "e2e.md").read_text()


def test_worker_runs_compare_one_and_two_workers_and_measure_the_hand_off(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "bench", "--quick", "--placements", "split", "--configs", "fixgw-hmac",
                        "--phase", "closed:20", "--warmup", "5", "--scale", "0", "--flood", "0", "--profile", "none",
                        "--workers", "2", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    w = json.loads((tmp_path / "e2e.json").read_text())["workers"]
    one, two, own = w["throughput"]
    assert (one["workers"], two["workers"], own["workers"], own["own_ports"]) == (1, 2, 2, True)
    for run in (one, two, own):
        assert run["orders"] == 2 * 150 and run["orders_per_s"] > 0 and run["gateway_cpu_s"] > 0
        assert run["audit"]["ok"] and all(p["lost"] == 0 for p in run["phases"])
    assert one["handed_off"] == own["handed_off"] == 0 and two["gateway_processes"] == 3  # supervisor + 2
    assert [r["placement"] for r in w["relay"]] == ["split"]
    for rel in w["relay"]:
        assert rel["handed_off"] == 2 and rel["owner"]["received"] == rel["relayed"]["received"] == 40
    md = (tmp_path / "e2e.md").read_text()
    assert "Workers (fixgw-hmac)" in md and "- 2 workers (shared port): ×" in md and "| split | its owner |" in md


@pytest.mark.interop  # builds bench/quickfix/*.cpp against libquickfix-dev, like the interop tests
def test_quickfix_bench_runs_direct_haproxy_and_fixgw_with_tiny_counts(tmp_path: Path) -> None:
    """QuickFIX C++ client and venue through nothing, haproxy and fixgw: every order answered, every latency
    positive, results as JSON and markdown (the figures themselves are bench's business, not the test's)."""
    import shutil

    if not shutil.which("haproxy"):
        pytest.fail("haproxy missing: `make test` installs it (make bench-deps)")
    r = subprocess.run([sys.executable, "-m", "bench.quickfix", "--rounds", "1", "--steady", "200:0.5",
                        "--burst", "200", "--warmup", "50", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-2000:]
    result = json.loads((tmp_path / "quickfix.json").read_text())
    assert [run["config"] for run in result["runs"]] == ["direct", "haproxy", "fixgw"]
    for run in result["runs"]:
        phases = {p["phase"]: p for p in run["phases"]}
        assert sorted(phases) == ["burst", "steady"]
        for name, n in (("steady", 100), ("burst", 200)):
            p = phases[name]
            assert p["orders"] == p["answered"] == p["filled"] == n and p["lost"] == 0 and p["rejected"] == 0
            assert p["stats"]["count"] == n and p["stats"]["min_us"] > 0 and p["orders_per_s"] > 0
        assert run["business_rejects"] == run["session_rejects"] == 0
        if run["config"] != "direct":
            assert run["relay_cpu_us_per_msg"] > 0
    assert result["runs"][2]["audit"]["ok"]
    md = (tmp_path / "quickfix.md").read_text()
    assert "| fixgw |" in md and "Goals" in md and "Every order answered: yes." in md
