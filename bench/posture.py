"""Posture change -> enforcement latency, end to end (goal: p99 <= 50 ms).

Real processes on loopback: the gateway with the shipped policy, the
exchange simulator, and a client whose device posture flips from compliant
to non-compliant (a level in ``[posture] logout_on``).  Measured per flip:
from the posture file being replaced to the client receiving the gateway's
Logout.  Each round logs on again first.

    python -m bench.posture [--rounds 30] [--json bench/results/posture.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.edges import pki  # noqa: E402
from gateway.edges.feeds import write_json  # noqa: E402
from tests import harness  # noqa: E402

IDENT = "spiffe://fixgw.dev/client/flipper"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--json", type=Path, default=Path("bench/results/posture.json"))
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        certs = harness.make_pki(tmp / "certs")
        pki.issue(certs, "flipper")
        posture = tmp / "posture.json"
        write_json(posture, {IDENT: {"level": "compliant", "asserted_at": time.time()}})
        identities = f'[[identities]]\nid = "{IDENT}"\ncomp_ids = ["FLIP"]\nroles = ["algo"]\n'
        gw_port, sim_port = harness.free_port(), harness.free_port()
        cfg = harness.trading_config(tmp, certs, gw_port, sim_port, clients=("FLIP",), identities=identities,
                                     extra=f'[posture]\nfile = "{posture}"\n', reset_on_logon=True)
        cfg.write_text(cfg.read_text().replace("[policy]\nallow_all = true",
                                               f'[policy]\nfile = "{ROOT / "config" / "policy.toml"}"'))
        sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp / "sim.log", sim_port)
        gw = harness.start(["run", "--config", str(cfg)], tmp / "gw.log", gw_port)
        lat: list[float] = []
        try:
            time.sleep(0.3)
            for r in range(a.rounds):
                print(f"round {r + 1}/{a.rounds}", file=sys.stderr, end="\r", flush=True)
                write_json(posture, {IDENT: {"level": "compliant", "asserted_at": time.time()}})
                time.sleep(0.05)
                c = harness.FixClient(gw_port, harness.client_ssl(certs, "flipper"), "FLIP")
                c.logon(reset=True)
                time.sleep(0.02)
                t0 = time.perf_counter()
                write_json(posture, {IDENT: {"level": "non-compliant", "asserted_at": time.time()}})
                logout = c.recv_type(b"5", timeout=5)
                lat.append((time.perf_counter() - t0) * 1000)
                assert b"non-compliant" in (logout.get(58) or b"")
                c.close()
        finally:
            gw.stop()
            sim.stop()
    print(file=sys.stderr)
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else lat * 99
    row = {"rounds": len(lat), "p50_ms": round(q[49], 1), "p90_ms": round(q[89], 1), "p99_ms": round(q[98], 1),
           "max_ms": round(lat[-1], 1)}
    print(f"posture flip -> Logout at the client: p50 {row['p50_ms']} ms, p90 {row['p90_ms']} ms, "
          f"p99 {row['p99_ms']} ms, max {row['max_ms']} ms over {row['rounds']} flips")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"benchmark": "posture_enforcement", **row}, indent=2) + "\n")
    print(f"written {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
