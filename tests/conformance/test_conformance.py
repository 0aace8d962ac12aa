"""The 177 QuickFIX acceptance scripts, played against the running gateway.

One gateway process (config/conformance.toml with free ports and temporary
folders) over mutual TLS, the exchange simulator in echo mode upstream.  The
three FIX versions run concurrently (they use different sessions); each
script is reported as its own test.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import harness
from tests.conformance.runner import SCRIPTS, Result, Runner, all_scripts, client_context

pytestmark = pytest.mark.conformance

SCRIPT_IDS = [f"{p.parent.name}/{p.name}" for p in all_scripts()]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Result]]:
    tmp = tmp_path_factory.mktemp("conformance")
    certs = harness.make_pki(tmp / "certs")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.conformance_config(tmp, certs, gw_port, sim_port)
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp / "sim.log", sim_port)
    gw = harness.start(["run", "--config", str(cfg)], tmp / "gw.log", gw_port)
    try:
        ctx = client_context(certs / "conformance.crt", certs / "conformance.key", certs / "ca.crt")
        runner = Runner("127.0.0.1", gw_port, ctx)

        def run_version(version: str) -> list[Result]:
            return [runner.run(p) for p in sorted((SCRIPTS / version).glob("*.def"))]

        with ThreadPoolExecutor(3) as pool:
            batches = list(pool.map(run_version, ["fix42", "fix44", "fix50sp2"]))
        out = {r.script: r for batch in batches for r in batch}
        yield out
    finally:
        gw_rc = gw.stop()
        sim_rc = sim.stop()
    assert gw_rc == 0, f"gateway did not shut down cleanly (exit {gw_rc}):\n{(tmp / 'gw.log').read_text()[-3000:]}"
    assert sim_rc == 0
    verify = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", str(tmp / "state" / "audit")],
        capture_output=True, text=True, cwd=harness.ROOT,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_all_177_scripts_are_present() -> None:
    assert len(SCRIPT_IDS) == 177


@pytest.mark.parametrize("script", SCRIPT_IDS)
def test_acceptance_script(results: dict[str, Result], script: str) -> None:
    r = results[script]
    assert r.passed, r.detail


def test_shipped_conformance_config_loads() -> None:
    from gateway.edges.config import load

    cfg = load(Path(harness.ROOT) / "config" / "conformance.toml")
    assert cfg.listen is not None and cfg.listen.port == 9878
    assert {s.client_comp_id for s in cfg.sessions} == {"TW42", "TW44", "TW", "NO_CHECK_FIELDS_HAVE_VALUES", "TW50SP2"}
    assert all(s.upstream.port == 9879 and not s.upstream.tls for s in cfg.sessions)


def test_all_177_scripts_pass_through_two_workers_whichever_accepts_the_connection(
        tmp_path: Path) -> None:
    """The same scripts against ``workers = 2``: the conformance identity is one worker's, so the
    connections the kernel gives the other worker are handed off — and must behave byte for byte
    the same (logons, rejects, resends, silent closes)."""
    certs = harness.make_pki(tmp_path / "certs")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.conformance_config(tmp_path, certs, gw_port, sim_port)
    cfg.write_text(cfg.read_text().replace("[gateway]\n", "[gateway]\nworkers = 2\n", 1))
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp_path / "sim.log", sim_port)
    gw = harness.start(["run", "--config", str(cfg)], tmp_path / "gw.log", gw_port)
    try:
        deadline = time.monotonic() + 20
        while (tmp_path / "gw.log").read_text().count('"event": "listening"') < 2:
            assert time.monotonic() < deadline, "both workers did not listen"
            time.sleep(0.05)
        ctx = client_context(certs / "conformance.crt", certs / "conformance.key", certs / "ca.crt")
        runner = Runner("127.0.0.1", gw_port, ctx)

        def run_version(version: str) -> list[Result]:
            return [runner.run(p) for p in sorted((SCRIPTS / version).glob("*.def"))]

        with ThreadPoolExecutor(3) as pool:
            results = [r for batch in pool.map(run_version, ["fix42", "fix44", "fix50sp2"]) for r in batch]
    finally:
        gw_rc, sim_rc = gw.stop(), sim.stop()
    assert gw_rc == 0 and sim_rc == 0, (tmp_path / "gw.log").read_text()[-3000:]
    failed = [f"{r.script}: {r.detail[:200]}" for r in results if not r.passed]
    assert len(results) == 177 and not failed, "\n".join(failed)
    audit = tmp_path / "state" / "audit"
    verify = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", str(audit)],
                            capture_output=True, text=True, cwd=harness.ROOT)
    assert verify.returncode == 0 and verify.stdout.count("chain intact") == 2, verify.stdout + verify.stderr
    handed = sum(p.read_text().count('"connection_handed_off"') for p in audit.glob("worker-*/audit-*.jsonl"))
    assert handed > 0, "no connection landed on the other worker"
