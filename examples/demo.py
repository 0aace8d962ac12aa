"""`make demo`: see the gateway work end to end in a few seconds.

1. dev PKI (CA, gateway certificate, the identity ``algo-demo``);
2. the exchange simulator (fill mode) and the gateway, as real processes;
3. an algo engine over mutual TLS: logs on, sends orders, gets fills;
4. what zero trust refuses: no client certificate, a certificate from
   another CA, an identity using a CompID it does not own;
5. the audit chain verified, a summary, exit 0 only if every outcome happened.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

import algo  # noqa: E402

from gateway import pki  # noqa: E402
from gateway.identity import new_keys  # noqa: E402
from tests.harness import FixClient, wait_port  # noqa: E402

CONFIG = ROOT / "config" / "demo.toml"
CERTS = ROOT / "certs" / "dev"
STATE = ROOT / "state" / "demo"
GW_PORT, SIM_PORT = 9880, 9881
TTY = sys.stdout.isatty()


def color(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if TTY else text


OK, BAD = color("PASS", "32"), color("FAIL", "31")
outcomes: list[tuple[str, bool]] = []


def expect(what: str, ok: bool) -> None:
    outcomes.append((what, ok))
    print(f"  [{OK if ok else BAD}] {what}")


def start(args: list[str], log: Path, port: int) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-m", "gateway", *args], cwd=ROOT,
                         stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    wait_port(port, proc=p)
    return p


def main() -> int:
    for port in (GW_PORT, SIM_PORT):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                print(f"port {port} is in use; stop whatever runs there and retry", file=sys.stderr)
                return 2
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir(parents=True)
    print(color("fixgw demo", "1"))
    print("1. dev PKI in certs/dev")
    pki.init(CERTS)
    _, _, identity = pki.issue(CERTS, "algo-demo")
    new_keys("ed25519", CERTS / "algo-demo-sign")
    print(f"   identity {identity} (ECDSA P-256, one URI SAN) + Ed25519 signing key")

    print("2. exchange simulator (fill) on :9881, gateway (mTLS) on :9880")
    sim = start(["exchange-sim", "--config", str(CONFIG)], STATE / "exchange-sim.log", SIM_PORT)
    gw = start(["run", "--config", str(CONFIG)], STATE / "gateway.log", GW_PORT)
    try:
        time.sleep(0.3)  # exchange leg logs on
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(CERTS / "ca.crt"))
        ctx.load_cert_chain(str(CERTS / "algo-demo.crt"), str(CERTS / "algo-demo.key"))

        print("3. algo engine ALGO1 (SDK, every message signed with Ed25519) trades through the gateway")
        rtts = asyncio.run(algo.run(GW_PORT, CERTS, "algo-demo", "ALGO1", CERTS / "algo-demo-sign.key", 5))
        expect("5/5 signed orders acknowledged and filled at their limit price", len(rtts) == 5)
        c = FixClient(GW_PORT, ctx, "ALGO1")
        c.send("A", [(98, "0"), (108, "30")])
        expect("the same algo with an unsigned Logon: closed silently", c.recv() is None)

        print("4. what zero trust refuses")
        plain_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(CERTS / "ca.crt"))
        try:
            FixClient(GW_PORT, plain_ctx, "ALGO1").logon()
            refused = False
        except (ssl.SSLError, OSError, ConnectionError):
            refused = True
        expect("client without a certificate: refused at the TLS handshake", refused)
        with tempfile.TemporaryDirectory() as other:
            pki.init(Path(other))
            pki.issue(Path(other), "algo-demo")
            rogue = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(CERTS / "ca.crt"))
            rogue.load_cert_chain(f"{other}/algo-demo.crt", f"{other}/algo-demo.key")
            try:
                FixClient(GW_PORT, rogue, "ALGO1").logon()
                refused = False
            except (ssl.SSLError, OSError, ConnectionError):
                refused = True
        expect("same name, certificate from another CA: refused at the handshake", refused)
        imp = FixClient(GW_PORT, ctx, "ALGO2")
        imp.send("A", [(98, "0"), (108, "30")])
        expect("algo-demo logging on as ALGO2 (not its CompID): closed silently", imp.recv() is None)

        print("5. audit stream")
        time.sleep(0.2)
    finally:
        gw.terminate()
        sim.terminate()
        gw.wait(10)
        sim.wait(10)
    verify = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", str(STATE / "audit")],
                            cwd=ROOT, capture_output=True, text=True)
    expect(f"fixgw audit verify: {verify.stdout.strip()}", verify.returncode == 0)
    records = [json.loads(line) for line in (STATE / "audit" / "audit-000001.jsonl").read_text().splitlines()]
    kinds: dict[str, int] = {}
    for r in records:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    print("   records: " + ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())))
    print()
    print(f"order -> fill round trip through both legs (client view, {len(rtts)} orders): "
          f"median {statistics.median(rtts):.0f} µs, max {max(rtts):.0f} µs  (bench/ measures properly)")
    passed = sum(ok for _, ok in outcomes)
    print(color(f"{passed}/{len(outcomes)} expected outcomes", "1;32" if passed == len(outcomes) else "1;31"))
    return 0 if passed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
