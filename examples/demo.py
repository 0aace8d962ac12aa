"""`make demo`: zero trust on the order path, in one scripted minute.

The exchange simulator and the gateway run as real processes with
config/demo.toml (the shipped RFQ-matrix policy). A small cast connects over
mutual TLS, each from the loopback address of its network zone, and every
decision streams to the terminal as the gateway writes it to the audit
stream:

1. the algo engine (Ed25519-signed orders, colo zone) trades — filled;
2. the analyst's service account connects from the development sandbox —
   refused at connect: no rule lets a quant do anything there (network
   segmentation);
3. the risk officer (password + TOTP) views open RFQs — allowed, read-only —
   and tries an order — refused;
4. the trader (password + TOTP, corporate LAN) sends an RFQ and an order;
   her device posture goes stale: the next order is refused; then it turns
   non-compliant: she is logged out;
5. an operator turns the kill switch on over the admin API: new orders
   refused, cancels pass; then off;
6. the audit chain is verified and a summary printed (decisions by rule,
   decision latency); /metrics is scraped before and after.

Exit code 0 only if every expected outcome happened.

    python examples/demo.py                        # ports 9880/9881/9890, certs/dev, state/demo
    python examples/demo.py --workdir /tmp/d --base-port 19880    # isolated (the test runs this)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyotp  # noqa: E402

from gateway.edges import pki  # noqa: E402
from gateway.edges.feeds import write_json  # noqa: E402
from gateway.edges.mfa import add_user  # noqa: E402
from gateway.edges.registry import new_keys  # noqa: E402
from gateway.sdk import load_signer  # noqa: E402
from tests.harness import FixClient, wait_port  # noqa: E402

TD = "spiffe://fixgw.dev/client/"
TTY = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None
CAST = {  # certificate name: (CompID, source address = zone, user or None)
    "algo-demo": ("ALGO1", "127.0.0.1", None),
    "trader-alice": ("TRADER1", "127.0.0.10", "alice"),
    "risk-rita": ("RISK1", "127.0.0.10", "rita"),
    "quant-sandbox": ("QSBX", "127.0.0.13", None),
}
NOS = [(21, "1"), (38, "100"), (40, "2"), (44, "30.15"), (54, "1"), (55, "INTC"), (60, "20260101-00:00:00")]


def color(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if TTY else text


class Scene:
    def __init__(self, workdir: Path | None, base_port: int) -> None:
        if workdir is None:
            self.config = ROOT / "config" / "demo.toml"
            self.certs, self.state = ROOT / "certs" / "dev", ROOT / "state" / "demo"
            self.gw_port, self.sim_port, self.admin_port = 9880, 9881, 9890
        else:
            workdir.mkdir(parents=True, exist_ok=True)
            self.certs, self.state = workdir / "certs", workdir / "state"
            self.gw_port, self.sim_port, self.admin_port = base_port, base_port + 1, base_port + 2
            text = (ROOT / "config" / "demo.toml").read_text()
            text = (text.replace("../state/demo", str(self.state)).replace("../certs/dev", str(self.certs))
                    .replace('file = "policy.toml"', f'file = "{ROOT / "config" / "policy.toml"}"')
                    .replace("port = 9880", f"port = {self.gw_port}").replace("9881", str(self.sim_port))
                    .replace("port = 9890", f"port = {self.admin_port}"))
            self.config = workdir / "demo.toml"
            self.config.write_text(text)
        self.outcomes: list[tuple[str, bool]] = []
        self.passwords: dict[str, str] = {}
        self.totp: dict[str, str] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stream_stop = threading.Event()

    # -- bookkeeping -------------------------------------------------------------------
    def expect(self, what: str, ok: bool) -> None:
        self.outcomes.append((what, ok))
        time.sleep(0.15)  # let the decision stream catch up before the verdict line
        mark = color("✔ expected", "1;32") if ok else color("✘ NOT AS EXPECTED", "1;31")
        print(f"      {mark}: {what}")

    def step(self, text: str) -> None:
        print()
        print(color(text, "1"))

    # -- set-up --------------------------------------------------------------------------
    def prepare(self) -> None:
        for port in (self.gw_port, self.sim_port, self.admin_port):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    raise SystemExit(f"port {port} is in use; stop whatever runs there and retry")
        shutil.rmtree(self.state, ignore_errors=True)
        self.state.mkdir(parents=True)
        pki.init(self.certs)
        for name in (*CAST, "posture-agent", "ops1", "ops2"):
            pki.issue(self.certs, name)
        new_keys("ed25519", self.certs / "algo-demo-sign")
        for _, _, user in CAST.values():
            if user is not None:
                self.passwords[user] = secrets.token_urlsafe(18)  # made up on the spot, never stored in clear
                add_user(self.state / "users.toml", self.state / "totp.secrets", user, self.passwords[user])
        import tomllib

        self.totp = tomllib.loads((self.state / "totp.secrets").read_text())["totp"]
        now = time.time()
        write_json(self.state / "posture.json",
                   {TD + n: {"level": "compliant", "asserted_at": now} for n in CAST})

    def start(self) -> None:
        for args, log, port in ((["exchange-sim"], "exchange-sim.log", self.sim_port),
                                (["run"], "gateway.log", self.gw_port)):
            with open(self.state / log, "wb") as fh:
                p = subprocess.Popen([sys.executable, "-m", "gateway", *args, "--config", str(self.config)],
                                     cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
            self.procs.append(p)
            wait_port(port, proc=p)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.count("upstream_logon") < len(CAST):
            time.sleep(0.05)
        threading.Thread(target=self.stream, daemon=True).start()

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        time.sleep(0.3)
        self.stream_stop.set()

    # -- the audit stream, live ----------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        out = []
        for seg in sorted((self.state / "audit").glob("audit-*.jsonl")):
            for line in seg.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line being written
        return out

    def count(self, kind: str) -> int:
        return sum(1 for r in self.records() if r["kind"] == kind)

    def stream(self) -> None:
        """Follow the audit stream and print one readable line per decision and notable event."""
        seen = len(self.records())  # what happened before the scene (start-up, port probes) stays quiet
        while not self.stream_stop.is_set():
            recs = self.records()
            for r in recs[seen:]:
                line = self.describe(r)
                if line:
                    print(line, flush=True)
            seen = len(recs)
            time.sleep(0.03)

    @staticmethod
    def describe(r: dict[str, Any]) -> str | None:
        ts = r["ts"][11:23]
        who = str(r.get("identity") or "").removeprefix(TD)
        kind = r["kind"]
        if kind == "decision":
            verdict = {"allow": color("ALLOW ", "1;32"), "deny": color("DENY  ", "1;31"),
                       "shadow": color("SHADOW", "1;33")}.get(r["decision"], r["decision"])
            arrow = "→ exch" if r["direction"] == "outbound" else "← exch"
            what = r["msg_type"]
            if r.get("symbol"):
                what += f" {r['symbol']}"
                if r.get("qty"):
                    what += f" {r['qty']}@{r.get('price') or r.get('last_px') or 'mkt'}"
            rules = ",".join(r.get("rules") or [])
            zone = r.get("zone") or ""
            return (f"   {color(ts, '2')}  {verdict} {arrow}  {who:<14} {zone:<15} {what:<18} "
                    f"{color(rules, '36')}" + (f"  {color(r['reason'][:60], '2')}"
                                                if r["decision"] != "allow" and r.get("reason") else ""))
        notable = {"logon": "logon", "logon_refused": "logon refused", "logout": "logout",
                   "posture_change": "posture", "session_revoked": "session cut", "kill_switch": "kill switch",
                   "admin_call": "admin call", "signature_refused": "bad signature", "tls_refused": "TLS refused",
                   "connection_refused": "refused"}
        if kind not in notable:
            return None
        detail = ""
        if kind == "posture_change":
            detail = f"{r.get('old')} → {r.get('new')}"
        elif kind == "kill_switch":
            on = [*(["global"] if r.get("everything") else []), *r.get("identities", []), *r.get("accounts", [])]
            detail = f"ON for {', '.join(str(x).removeprefix(TD) for x in on)}" if on else "off"
        elif kind == "admin_call":
            detail = f"{r.get('method', '')} {r.get('path')} allowed={r.get('allowed')}"
        elif kind in ("logout", "session_revoked", "logon_refused", "connection_refused"):
            detail = f"{r.get('session') or ''} {str(r.get('reason') or '')[:70]}"
        elif kind == "logon":
            detail = str(r.get("session") or "")
        return f"   {color(ts, '2')}  {color(f'{notable[kind]:<13}', '35')} {who:<14} {detail}"

    # -- the cast ------------------------------------------------------------------------
    def ctx(self, name: str) -> ssl.SSLContext:
        c = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.certs / "ca.crt"))
        c.load_cert_chain(str(self.certs / f"{name}.crt"), str(self.certs / f"{name}.key"))
        return c

    def logon(self, name: str) -> FixClient:
        comp, source, user = CAST[name]
        signer = None
        if name == "algo-demo":
            signer = load_signer("ed25519", self.certs / "algo-demo-sign.key")
        c = FixClient(self.gw_port, self.ctx(name), comp, source=source, signer=signer)
        fields: list[tuple[int, str]] = [(98, "0"), (108, "30"), (141, "Y")]
        if user is not None:
            fields += [(553, user), (554, self.passwords[user] + pyotp.TOTP(self.totp[user]).now())]
        c.send("A", fields)
        reply = c.recv()
        if reply is None or reply.msg_type != b"A":
            raise SystemExit(f"{name} could not log on (see {self.state / 'gateway.log'})")
        return c

    def admin(self, who: str, method: str, path: str, body: object = None) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.admin_port, context=self.ctx(who), timeout=10)
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        return resp.status, (json.loads(raw) if raw.startswith(b"{") else raw.decode())

    def decisions_total(self) -> float:
        _, text = self.admin("ops1", "GET", "/metrics")
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
                   if line.startswith("fixgw_decisions_total{"))

    # -- the play --------------------------------------------------------------------------
    def play(self) -> None:
        before = self.decisions_total()

        self.step("1. The algo engine trades from the colo — every message signed with Ed25519")
        algo = self.logon("algo-demo")
        for i, (sym, qty, px) in enumerate((("AAPL", 100, "189.50"), ("MSFT", 250, "411.20"),
                                             ("INTC", 1000, "30.15")), 1):
            algo.send("D", [(11, f"A{i}"), (21, "1"), (38, str(qty)), (40, "2"), (44, px), (54, "1"), (55, sym),
                            (60, "20260101-00:00:00")])
        fills = sum(1 for _ in range(6) if algo.recv_type(b"8").get(150) == b"F")
        self.expect("3 signed orders accepted and filled", fills == 3)

        self.step("2. An analyst's service account connects from the development sandbox")
        comp, source, _ = CAST["quant-sandbox"]
        quant = FixClient(self.gw_port, self.ctx("quant-sandbox"), comp, source=source)
        quant.send("A", [(98, "0"), (108, "30"), (141, "Y")])
        self.expect("refused at connect: no rule lets a quant do anything from the sandbox (network segmentation)",
                    quant.recv(timeout=5) is None)
        quant.close()

        self.step("3. The risk officer (password + TOTP) views open RFQs, then tries to trade")
        rita = self.logon("risk-rita")
        rita.send("a", [(649, "QS1"), (55, "INTC")])
        rita.recv_type(b"AI")  # the venue's QuoteStatusReport (no quote in INTC yet: QuoteStatus(297)=9)
        last = [r for r in self.records() if r["kind"] == "decision" and r.get("identity") == TD + "risk-rita"
                and r["direction"] == "outbound"]
        self.expect("RFQ status allowed read-only (risk-open-rfqs-lan)",
                    bool(last) and last[-1]["decision"] == "allow" and "read_only" in last[-1].get("controls", []))
        rita.send("D", [(11, "R1"), *NOS])
        er = rita.recv_type(b"8")
        self.expect("her order refused before the exchange (read-only session)",
                    er.get(39) == b"8" and b"read-only" in (er.get(58) or b""))

        self.step("4. The trader (password + TOTP, corporate LAN) trades — until her device falls out of "
                  "compliance")
        alice = self.logon("trader-alice")
        alice.send("R", [(131, "RFQ1"), (146, "1"), (55, "INTC"), (38, "500")])
        quote = alice.recv_type(b"S")
        alice.send("D", [(11, "T1"), *NOS])
        self.expect("her RFQ quoted and her order filled (trader-create-rfq-lan, trader-orders-lan)",
                    quote.get(131) == b"RFQ1" and alice.recv_type(b"8").get(150) == b"0"
                    and alice.recv_type(b"8").get(150) == b"F")
        status, _ = self.admin("posture-agent", "POST", "/v1/posture",
                               {"identity": TD + "trader-alice", "level": "unknown"})
        alice.send("D", [(11, "T2"), *NOS])
        er = alice.recv_type(b"8")
        self.expect("posture unknown: her next order refused by device-health-deny, the session stays up",
                    status == 200 and er.get(39) == b"8" and b"device-health-deny" in (er.get(58) or b""))
        self.admin("posture-agent", "POST", "/v1/posture", {"identity": TD + "trader-alice", "level": "non-compliant"})
        logout = alice.recv_type(b"5", timeout=5)
        self.expect("posture non-compliant: logged out at once", b"non-compliant" in (logout.get(58) or b""))

        self.step("5. An operator turns the kill switch on over the admin API")
        status, _ = self.admin("ops1", "POST", "/v1/kill-switch", {"on": True, "global": True, "reason": "demo"})
        algo.send("D", [(11, "A4"), *NOS])
        er = algo.recv_type(b"8")
        self.expect("new order refused by the kill switch",
                    status == 200 and er.get(39) == b"8" and b"kill" in (er.get(58) or b""))
        algo.send("F", [(11, "C1"), (41, "A3"), (54, "1"), (55, "INTC"), (60, "20260101-00:00:00")])
        self.expect("cancel passes to the exchange", algo.recv_type(b"9").get(41) == b"A3")
        _, asked = self.admin("ops1", "POST", "/v1/kill-switch", {"on": False, "global": True})  # a request:
        self.admin("ops2", "POST", f"/v1/requests/{asked.get('id')}/approve")  # lifting it takes a second admin
        algo.send("D", [(11, "A5"), *NOS])
        self.expect("kill switch off (ops1 asked, ops2 approved): orders flow again",
                    algo.recv_type(b"8").get(150) == b"0")
        algo.recv_type(b"8")
        after = self.decisions_total()
        self.expect(f"/metrics counted the scene's decisions ({before:.0f} → {after:.0f})", after >= before + 12)
        for c in (algo, rita):
            c.send("5", [])
            c.close()
        time.sleep(0.3)

    def summary(self) -> None:
        self.step("6. The audit stream")
        verify = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", str(self.state / "audit"),
                                 "--pubkey", str(self.state / "audit" / "audit.pub")],
                                cwd=ROOT, capture_output=True, text=True)
        print("   " + (verify.stdout.strip() or verify.stderr.strip()))
        self.expect("fixgw audit verify: chain intact, checkpoints signed", verify.returncode == 0)
        recs = self.records()
        decisions = [r for r in recs if r["kind"] == "decision"]
        by_rule = Counter((r["decision"], ",".join(r.get("rules") or [])) for r in decisions)
        print("   decisions by rule:")
        for (outcome, rule), n in sorted(by_rule.items(), key=lambda x: (-x[1], x[0])):
            mark = color(f"{outcome:<6}", "32" if outcome == "allow" else "31")
            print(f"     {mark} {n:>3}  {rule}")
        us = sorted(r["decide_us"] for r in decisions if r.get("direction") == "outbound" and "decide_us" in r)
        if us:
            q = statistics.quantiles(us, n=100, method="inclusive") if len(us) > 1 else [us[0]] * 99
            print(f"   decision latency (kill switch + policy + risk, {len(us)} outbound messages): "
                  f"p50 {q[49]:.0f} µs, p99 {q[98]:.0f} µs, max {us[-1]} µs")
        secrets_found = [s for s in (*self.passwords.values(), *self.totp.values())
                         if s in "".join(p.read_text() for p in (self.state / "audit").glob("*.jsonl"))
                         or s in (self.state / "gateway.log").read_text()]
        self.expect("no password or TOTP secret in the audit stream or the log", not secrets_found)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=None, help="certs, state and config here (default: the repo's)")
    p.add_argument("--base-port", type=int, default=19880, help="with --workdir: gateway, simulator, admin ports")
    a = p.parse_args()
    scene = Scene(a.workdir, a.base_port)
    print(color("fixgw demo — zero trust on every FIX message", "1;4"))
    print(f"   config {scene.config}; decisions stream below as the gateway audits them")
    scene.prepare()
    t0 = time.monotonic()
    scene.start()
    try:
        scene.play()
    except (TimeoutError, AssertionError, ConnectionError, OSError) as exc:
        scene.outcomes.append((f"the scene ran to the end ({exc})", False))
        print(color(f"   scene stopped: {exc}", "1;31"))
    finally:
        scene.stop()
    scene.summary()
    passed = sum(ok for _, ok in scene.outcomes)
    total = len(scene.outcomes)
    print()
    print(color(f"{passed}/{total} expected outcomes in {time.monotonic() - t0:.1f} s", "1;32" if passed == total
                else "1;31"))
    return 0 if passed == total else 1


if __name__ == "__main__":
    sys.exit(main())
