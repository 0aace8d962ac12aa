"""The QuickFIX acceptance scripts of every FIX version, played against the running gateway.

One gateway process (config/conformance.toml with free ports and temporary
folders) over mutual TLS, the exchange simulator in echo mode upstream.  The
eight versions — FIX.4.0, 4.1, 4.2, 4.3, 4.4 and FIXT.1.1 with FIX.5.0,
5.0SP1, 5.0SP2 — run concurrently (they use different sessions); each script
is reported as its own test.

``KNOWN_GAPS`` names the scripts that fail for a reason outside the gateway's
session layer, each marked ``xfail(strict=True)``: the day one passes, the
marker must go.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness
from tests.conformance.runner import VERSIONS, Result, Runner, all_scripts, client_context, run_all, version_scripts

pytestmark = pytest.mark.conformance

SCRIPT_IDS = [f"{p.parent.name}/{p.name}" for p in all_scripts()]
#: scripts per version as QuickFIX ships them (FIX.4.0/4.1 have no repeating-group cases 14i and 21)
SCRIPT_COUNTS = {"fix40": 56, "fix41": 56, "fix42": 58, "fix43": 58, "fix44": 59, "fix50": 60, "fix50sp1": 60,
                 "fix50sp2": 60}
#: the sessions of QuickFIX's acceptance acceptor (test/cfg/at.cfg): CompID -> (BeginString, DefaultApplVerID)
AT_CFG_SESSIONS = {"TW40": ("FIX.4.0", None), "TW41": ("FIX.4.1", None), "TW42": ("FIX.4.2", None),
                   "TW43": ("FIX.4.3", None), "TW44": ("FIX.4.4", None), "TW": ("FIX.4.4", None),
                   "NO_CHECK_FIELDS_HAVE_VALUES": ("FIX.4.4", None), "TW50": ("FIXT.1.1", "7"),
                   "TW50SP1": ("FIXT.1.1", "8"), "TW50SP2": ("FIXT.1.1", "9")}
#: script -> why it fails for a reason outside the gateway (none: fix40/fix41 2r pass since the venue's Reject(3) of
#: a carried message reaches the client)
KNOWN_GAPS: dict[str, str] = {}


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
        yield {r.script: r for r in run_all(Runner("127.0.0.1", gw_port, ctx))}
    finally:
        gw_rc = gw.stop()
        sim_rc = sim.stop()
    assert gw_rc == 0, f"gateway did not shut down cleanly (exit {gw_rc}):\n{(tmp / 'gw.log').read_text()[-3000:]}"
    assert sim_rc == 0
    verify = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", str(tmp / "state" / "audit"),
         "--pubkey", str(tmp / "state" / "audit" / "audit.pub")],
        capture_output=True, text=True, cwd=harness.ROOT,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_every_version_s_scripts_are_present() -> None:
    assert {v: len(version_scripts(v)) for v in VERSIONS} == SCRIPT_COUNTS
    assert len(SCRIPT_IDS) == sum(SCRIPT_COUNTS.values()) == 467
    assert set(KNOWN_GAPS) <= set(SCRIPT_IDS)


@pytest.mark.parametrize("script", [
    pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[s])) if s in KNOWN_GAPS else s
    for s in SCRIPT_IDS])
def test_acceptance_script(results: dict[str, Result], script: str) -> None:
    r = results[script]
    assert r.passed, r.detail


def test_shipped_conformance_config_loads() -> None:
    from gateway.edges.config import load

    cfg = load(Path(harness.ROOT) / "config" / "conformance.toml")
    assert cfg.listen is not None and cfg.listen.port == 9878
    assert {s.client_comp_id: (s.begin_string, s.default_appl_ver_id) for s in cfg.sessions} == AT_CFG_SESSIONS
    assert {c for i in cfg.identities for c in i.comp_ids} == set(AT_CFG_SESSIONS)
    assert all(s.upstream.port == 9879 and not s.upstream.tls for s in cfg.sessions)


def test_every_script_passes_through_two_workers_whichever_accepts_the_connection(
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
        results = run_all(Runner("127.0.0.1", gw_port, ctx))
    finally:
        gw_rc, sim_rc = gw.stop(), sim.stop()
    assert gw_rc == 0 and sim_rc == 0, (tmp_path / "gw.log").read_text()[-3000:]
    failed = [f"{r.script}: {r.detail[:200]}" for r in results if not r.passed and r.script not in KNOWN_GAPS]
    assert len(results) == len(SCRIPT_IDS) and not failed, "\n".join(failed)
    audit = tmp_path / "state" / "audit"
    verify = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", str(audit),
                             "--pubkey", str(audit / "worker-0" / "audit.pub")],
                            capture_output=True, text=True, cwd=harness.ROOT)
    assert verify.returncode == 0 and verify.stdout.count("chain intact") == 2, verify.stdout + verify.stderr
    handed = sum(p.read_text().count('"connection_handed_off"') for p in audit.glob("worker-*/audit-*.jsonl"))
    assert handed > 0, "no connection landed on the other worker"
