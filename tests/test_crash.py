"""SIGKILL the gateway under load, repeatedly: the audit chain verifies after each restart,
and every order the exchange received has its allow record (fail closed survives crashes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from gateway.edges.audit import verify
from tests import harness
from tests.harness import FixClient, client_ssl

CYCLES = int(os.environ.get("FIXGW_CRASH_CYCLES", "20"))


def test_sigkill_under_load_keeps_the_chain_and_every_forwarded_order_has_its_allow_record(tmp_path: Path) -> None:
    certs = harness.make_pki(tmp_path / "certs")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, reset_on_logon=True,
                                 sim_extra=f'journal = "{tmp_path}/exchange-received.log"')
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp_path / "sim.log", sim_port)
    audit_dir = tmp_path / "state" / "audit"
    sent_total = 0
    try:
        for cycle in range(CYCLES):
            gw = harness.start(["run", "--config", str(cfg)], tmp_path / "gw.log", gw_port)
            time.sleep(0.3)
            c = FixClient(gw_port, client_ssl(certs, "algo1"), "ALGO1")
            c.logon(reset=True)
            stop = threading.Event()

            def load(c: FixClient = c, cycle: int = cycle, stop: threading.Event = stop) -> None:
                i = 0
                while not stop.is_set():
                    try:
                        c.send("D", [(11, f"C{cycle}-{i}"), (21, "1"), (38, "10"), (40, "2"), (44, "10"),
                                     (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")])
                    except OSError:
                        return
                    i += 1
                    time.sleep(0.001)

            t = threading.Thread(target=load, daemon=True)
            t.start()
            time.sleep(0.4 + 0.1 * (cycle % 3))
            gw.kill()  # SIGKILL mid-stream
            stop.set()
            t.join(5)
            c.close()
            result = verify(audit_dir)
            assert result.ok, f"cycle {cycle}: {result.summary()}"
            sent_total += 1
        # every order the exchange received was allowed, in the audit stream, before it was forwarded
        allowed = {r["cl_ord_id"] for p in sorted(audit_dir.glob("audit-*.jsonl"))
                   for r in map(json.loads, p.read_text().splitlines())
                   if r["kind"] == "decision" and r.get("direction") == "outbound" and r["decision"] == "allow"}
        received = [line.split()[2] for line in (tmp_path / "exchange-received.log").read_text().splitlines()
                    if line.split()[1] == "D"]
        assert received, "the exchange received nothing: the load did not run"
        missing = [cl for cl in received if cl not in allowed]
        assert not missing, f"orders at the exchange without an allow record: {missing[:5]}"
        recoveries = [r for p in sorted(audit_dir.glob("audit-*.jsonl"))
                      for r in map(json.loads, p.read_text().splitlines()) if r["kind"] == "recovery"]
        r = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", str(audit_dir)], cwd=harness.ROOT,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout
        assert sent_total == CYCLES and isinstance(recoveries, list)
    finally:
        sim.stop()
