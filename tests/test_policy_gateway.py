"""The shipped policy (config/policy.toml) through the running gateway.

The seed's RFQ access matrix, row by row: each client connects from its own
loopback address (127.0.0.x), which the policy maps to its zone; people log
on with password + TOTP; device posture comes from the watched posture file;
the IT admin's JIT grant from the JIT file.  Then continuous verification:
posture flips, the kill switch, and refusals that never reach the exchange.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest

from gateway.edges import pki
from gateway.edges.feeds import write_json
from gateway.edges.mfa import add_user
from tests import harness
from tests.harness import FixClient, client_ssl

POLICY = harness.ROOT / "config" / "policy.toml"
TD = "spiffe://fixgw.dev/client/"
# name: (CompID, roles, source address, user for MFA or None, posture)
CLIENTS = {
    "trader-lan": ("TRLAN", ["trader"], "127.0.0.10", "alice", "compliant"),
    "trader-vpn": ("TRVPN", ["trader"], "127.0.0.11", "bob", "compliant"),
    "quant-prod": ("QPROD", ["quant"], "127.0.0.12", None, "compliant"),
    "quant-sandbox": ("QSBX", ["quant"], "127.0.0.13", None, "compliant"),
    "risk": ("RISK", ["risk_officer"], "127.0.0.10", "rita", "compliant"),
    "admin": ("ADMIN", ["it_admin"], "127.0.0.14", "adam", "highly-compliant"),
    "trader-wifi": ("TRWIFI", ["trader"], "127.0.0.15", "carol", "non-compliant"),
    "flip": ("FLIP", ["trader"], "127.0.0.10", "dave", "compliant"),
    "flip2": ("FLIP2", ["trader"], "127.0.0.10", "erin", "compliant"),
    "flip3": ("FLIP3", ["trader"], "127.0.0.10", "frank", "compliant"),
    "flip4": ("FLIP4", ["trader"], "127.0.0.10", "gina", "compliant"),
    "algo": ("ALGO", ["algo"], "127.0.0.1", None, "compliant"),
    "riskalgo": ("RALGO", ["algo"], "127.0.0.1", None, "compliant"),
}
PASSWORD = "a long enough password"
NOS = [(21, "1"), (38, "100"), (40, "2"), (44, "10.25"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")]


@dataclass
class World:
    tmp: Path
    certs: Path
    port: int
    totp: dict[str, str]
    admin_port: int = 0

    def audit(self) -> list[dict[str, object]]:
        return harness.audit_records(self.tmp / "state" / "audit")

    def decisions(self, session: str) -> list[dict[str, object]]:
        return [r for r in self.audit() if r["kind"] == "decision" and r["direction"] == "outbound"
                and str(r.get("session", "")).endswith(session)]

    def posture(self, name: str, level: str) -> None:
        data = json.loads((self.tmp / "posture.json").read_text())
        data[TD + name] = {"level": level, "asserted_at": time.time()}
        write_json(self.tmp / "posture.json", data)

    def mark(self) -> int:
        """The seq of the last record written so far: later records are what a step caused."""
        recs = harness.read_records(self.tmp / "state" / "audit")
        return int(recs[-1]["seq"]) if recs else 0

    def after(self, mark: int, pred: Callable[[dict[str, Any]], object], what: str) -> dict[str, Any]:
        """The first record after ``mark`` for which ``pred`` holds, once written (deadline 15 s)."""
        return harness.wait_record(self.tmp / "state" / "audit", lambda r: int(r["seq"]) > mark and pred(r), what)

    def logon(self, name: str) -> FixClient:
        comp, _, source, user, _ = CLIENTS[name]
        c = FixClient(self.port, client_ssl(self.certs, name), comp, source=source)
        fields: list[tuple[int, str]] = [(98, "0"), (108, "30"), (141, "Y")]
        if user is not None:
            fields += [(553, user), (554, PASSWORD + pyotp.TOTP(self.totp[user]).now())]
        c.send("A", fields)
        reply = c.recv()
        assert reply is not None and reply.msg_type == b"A", f"{name} could not log on"
        return c


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("policy")
    certs = harness.make_pki(tmp / "certs")
    identities = ""
    for name, (comp, roles, _, user, _level) in CLIENTS.items():
        pki.issue(certs, name)
        if user:
            add_user(tmp / "users.toml", tmp / "totp.secrets", user, PASSWORD)
        identities += (f'[[identities]]\nid = "{TD}{name}"\ncomp_ids = ["{comp}"]\nroles = {json.dumps(roles)}\n'
                       f"mfa = {'true' if user else 'false'}\n" + (f'users = ["{user}"]\n' if user else ""))
    write_json(tmp / "posture.json", {TD + n: {"level": c[4], "asserted_at": time.time()} for n, c in CLIENTS.items()})
    pki.issue(certs, "posture-agent")
    identities += f'[[identities]]\nid = "{TD}posture-agent"\ncomp_ids = []\nroles = ["posture_agent"]\n'
    admin_port = harness.free_port()
    policy = tmp / "policy.toml"
    # 127.0.0.22 joins the production analytics zone, but not the quant rule's ip_allowlist
    shipped = POLICY.read_bytes()
    zone = b'prod_analytics = ["10.20.1.0/24", "127.0.0.12/32"]'
    assert zone in shipped, "the shipped policy's prod_analytics zone changed: update this fixture"
    shipped = shipped.replace(zone, zone[:-1] + b', "127.0.0.22/32"]')
    policy.write_bytes(shipped.replace(b"# INTC = 30.15", b"COLLARED = 10.0") + f"""
[risk.identities."{TD}riskalgo"]
max_order_qty = 500
max_msgs_per_sec = 4
burst = 8
restricted_symbols = ["BAD"]
""".encode())
    extra = (f'[users]\nfile = "{tmp}/users.toml"\nsecrets = "{tmp}/totp.secrets"\n'
             f'[posture]\nfile = "{tmp}/posture.json"\n[admin]\nport = {admin_port}\n')
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, clients=tuple(c[0] for c in CLIENTS.values()),
                                 identities=identities, extra=extra, reset_on_logon=True,
                                 sim_extra='rest_symbols = ["RESTING"]\nmd_interval_ms = 100')
    cfg.write_text(cfg.read_text().replace("[policy]\nallow_all = true", f'[policy]\nfile = "{policy}"'))
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp / "sim.log", sim_port)
    gw = harness.start(["run", "--config", str(cfg)], tmp / "gw.log", gw_port)
    w = World(tmp, certs, gw_port, tomllib.loads((tmp / "totp.secrets").read_text())["totp"], admin_port)
    harness.wait_for(lambda: sum(r["kind"] == "upstream_logon" for r in w.audit()) >= len(CLIENTS),
                     f"the {len(CLIENTS)} exchange legs to log on", proc=gw)
    yield w
    gw.stop()
    sim.stop()


def decision(w: World, mark: int, session: str, msg_type: str) -> dict[str, Any]:
    """The outbound decision on ``session``'s ``msg_type`` made after ``mark``, once written."""
    return w.after(mark, lambda r: r["kind"] == "decision" and r.get("direction") == "outbound"
                   and str(r.get("session", "")).endswith(session) and r.get("msg_type") == msg_type,
                   f"the decision record of {session}'s {msg_type}")


# --- the seven rows of the RFQ access matrix ----------------------------------------

def test_row1_trader_create_rfq_corporate_lan_compliant_is_allowed_with_mfa_and_logging(world: World) -> None:
    c = world.logon("trader-lan")
    mark = world.mark()
    c.send("R", [(131, "Q1"), (146, "1"), (55, "INTC")])
    quote = c.recv_type(b"S")  # the exchange answered: the request went through
    assert quote.get(131) == b"Q1"
    d = decision(world, mark, "TRLAN/FIXGW", "R")
    assert d["decision"] == "allow" and d["rules"] == ["trader-create-rfq-lan"]
    assert set(d["controls"]) == {"mfa", "session_logging"} and d["zone"] == "corporate_lan"  # type: ignore[arg-type]


def _algo_trades_and_quotes(world: World, symbol: str) -> bytes:
    """The algo (from the colo) trades ``symbol`` once and asks for a quote in it, then logs out: the
    venue's tape and quote book now hold something for the read-only rows to see.  The QuoteID."""
    c = world.logon("algo")
    c.send("D", [(11, f"TAPE-{symbol}"), (21, "1"), (38, "100"), (40, "2"), (44, "10.25"), (54, "1"), (55, symbol),
                 (60, "20240101-00:00:00")])
    assert c.recv_type(b"8").get(150) == b"0"
    assert c.recv_type(b"8").get(150) == b"F"
    c.send("R", [(131, f"RFQ-{symbol}"), (146, "1"), (55, symbol)])
    quote_id = c.recv_type(b"S").get(117) or b""
    c.send("5", [])
    c.recv_type(b"5")
    return quote_id


def test_row2_trader_view_historical_trades_remote_vpn_is_allowed(world: World) -> None:
    _algo_trades_and_quotes(world, "HIST")
    c = world.logon("trader-vpn")
    mark = world.mark()
    c.send("AD", [(568, "TR1"), (569, "0"), (55, "HIST")])
    ack = c.recv_type(b"AQ")  # the venue's TradeCaptureReportRequestAck ...
    assert (ack.get(568), ack.get(749), ack.get(748)) == (b"TR1", b"0", b"1")
    report = c.recv_type(b"AE")  # ... and its trade on the tape
    assert (report.get(568), report.get(55), report.get(32), report.get(31)) == (b"TR1", b"HIST", b"100", b"10.25")
    d = decision(world, mark, "TRVPN/FIXGW", "AD")
    assert d["decision"] == "allow" and d["rules"] == ["trader-history-vpn"] and d["zone"] == "remote_vpn"


def test_row3_quant_analytics_from_production_server_is_allowed_by_ip_allowlist(world: World) -> None:
    c = world.logon("quant-prod")
    c.send("V", [(262, "MD1"), (263, "1"), (264, "0"), (267, "2"), (269, "0"), (269, "1"), (146, "1"), (55, "INTC")])
    snapshot = c.recv_type(b"W")  # the venue's snapshot, then updates while subscribed
    assert (snapshot.get(262), snapshot.get(55), snapshot.get(268)) == (b"MD1", b"INTC", b"2")
    update = c.recv_type(b"X")
    assert update.get(262) == b"MD1" and update.get(279) == b"1"
    mark = world.mark()
    c.send("V", [(262, "MD1"), (263, "2"), (264, "0"), (267, "1"), (269, "0"), (146, "1"), (55, "INTC")])
    d = decision(world, mark, "QPROD/FIXGW", "V")
    assert d["decision"] == "allow" and "ip_allowlist" in d["controls"]  # type: ignore[operator]
    c.send("5", [])
    while True:  # updates already on their way, then the Logout
        m = c.recv()
        assert m is not None and m.msg_type in (b"0", b"X", b"5"), m
        if m.msg_type == b"5":
            break


def test_row3_the_ip_allowlist_refuses_the_same_server_identity_from_another_address_of_its_zone(
        world: World) -> None:
    # same certificate, same zone, same compliant posture: only the address is off the rule's allowlist
    comp = CLIENTS["quant-prod"][0]
    c = FixClient(world.port, client_ssl(world.certs, "quant-prod"), comp, source="127.0.0.22")
    c.send("A", [(98, "0"), (108, "30"), (141, "Y")])
    reply = c.recv()
    assert reply is not None and reply.msg_type == b"A"  # the zone can reach a rule: the Logon is answered
    mark = world.mark()
    c.send("V", [(262, "MD2"), (263, "0"), (264, "0"), (267, "1"), (269, "0"), (146, "1"), (55, "INTC")])
    bmr = c.recv_type(b"j")  # never at the venue: no snapshot, a BusinessMessageReject
    assert bmr.get(372) == b"V" and b"ip_allowlist" in (bmr.get(58) or b""), bmr
    d = decision(world, mark, f"{comp}/FIXGW", "V")
    assert d["decision"] == "deny" and d["zone"] == "prod_analytics" and d["peer"] == "127.0.0.22", d
    assert "ip_allowlist" in str(d["reason"]), d
    c.close()


def test_row4_quant_analytics_from_development_sandbox_is_denied(world: World) -> None:
    # no rule allows a quant anything from the sandbox: refused at connect (issue 15 item 15)
    c = FixClient(world.port, client_ssl(world.certs, "quant-sandbox"), "QSBX", source="127.0.0.13")
    c.send("A", [(98, "0"), (108, "30"), (141, "Y")])
    assert c.recv() is None
    assert any(r["kind"] == "connection_refused" and r.get("rule") == "identity.reach"
               and r.get("zone") == "dev_sandbox" for r in world.audit())


def test_row5_risk_officer_views_open_rfqs_read_only(world: World) -> None:
    quote_id = _algo_trades_and_quotes(world, "OPENQ")
    c = world.logon("risk")
    mark = world.mark()
    c.send("a", [(649, "QS1"), (55, "OPENQ")])
    report = c.recv_type(b"AI")  # the venue's QuoteStatusReport of the open quote
    assert (report.get(649), report.get(117), report.get(55), report.get(297)) == (b"QS1", quote_id, b"OPENQ", b"0")
    d = decision(world, mark, "RISK/FIXGW", "a")
    assert d["decision"] == "allow" and "read_only" in d["controls"]  # type: ignore[operator]
    c.send("D", [(11, "RISK-ORDER"), *NOS])
    er = c.recv_type(b"8")
    assert (er.get(39), er.get(150)) == (b"8", b"8") and b"read-only" in (er.get(58) or b"")


def test_row6_it_admin_system_configuration_needs_jit_mfa_and_gets_full_capture(world: World) -> None:
    c = world.logon("admin")
    c.send("BE", [(923, "U1"), (924, "1"), (553, "adam")])
    bmr = c.recv_type(b"j")
    assert b"needs jit" in (bmr.get(58) or b"")  # no grant yet
    mark = world.mark()
    write_json(world.tmp / "state" / "jit.json", {TD + "admin": time.time() + 600})
    world.after(mark, lambda r: r["kind"] == "jit_grants" and TD + "admin" in r["grants"], "the JIT grant applied")
    mark = world.mark()
    c.send("BE", [(923, "U2"), (924, "1"), (553, "adam")])
    response = c.recv_type(b"BF")  # the venue's UserResponse
    assert (response.get(923), response.get(553), response.get(926)) == (b"U2", b"adam", b"1")
    d = decision(world, mark, "ADMIN/FIXGW", "BE")
    assert d["decision"] == "allow" and {"jit", "mfa", "full_capture"} <= set(d["controls"])  # type: ignore[arg-type]
    assert any(r["kind"] == "full_capture_on" for r in world.audit())
    c.send("1", [(112, "SECRETTRY"), (554, "not-a-real-password")])  # from now on every byte is kept
    assert c.recv_type(b"3").get(371) == b"554"  # (554 is not defined for TestRequest)
    c.send("1", [(112, "CAPTURED")])
    assert c.recv_type(b"0").get(112) == b"CAPTURED"
    import base64

    world.after(0, lambda r: r["kind"] == "capture" and r.get("direction") == "out"
                and b"112=CAPTURED" in base64.b64decode(str(r["data"])), "the captured Heartbeat")

    caps = [(r["direction"], base64.b64decode(str(r["data"]))) for r in world.audit()
            if r["kind"] == "capture" and str(r.get("session", "")).startswith("FIX.4.4/ADMIN")]
    assert any(d == "in" and b"112=CAPTURED" in b for d, b in caps)
    assert any(d == "out" and b"35=0" in b and b"112=CAPTURED" in b for d, b in caps)
    assert not any(b"not-a-real-password" in b for _, b in caps)  # Password(554) is redacted


def test_row7_trader_create_rfq_public_wifi_non_compliant_is_denied(world: World) -> None:
    # a device already non-compliant gets no session: posture rules apply at Logon (issue 15 item 14)
    comp, _, source, user, _ = CLIENTS["trader-wifi"]
    c = FixClient(world.port, client_ssl(world.certs, "trader-wifi"), comp, source=source)
    c.send("A", [(98, "0"), (108, "30"), (141, "Y"), (553, str(user)),
                 (554, PASSWORD + pyotp.TOTP(world.totp[str(user)]).now())])
    assert c.recv() is None
    assert any(r["kind"] == "logon_refused" and "device posture is non-compliant" in str(r.get("reason"))
               for r in world.audit())


# --- continuous verification --------------------------------------------------------

def test_posture_flip_logs_a_live_session_out(world: World) -> None:
    c = world.logon("flip")
    c.send("D", [(11, "F1"), *NOS])
    assert c.recv_type(b"8").get(150) == b"0"
    c.recv_type(b"8")
    t0 = time.monotonic()
    world.posture("flip", "non-compliant")
    logout = c.recv_type(b"5", timeout=5)
    assert b"non-compliant" in (logout.get(58) or b"")
    assert time.monotonic() - t0 < 1.0
    assert any(r["kind"] == "posture_change" and r.get("new") == "non-compliant" for r in world.audit())
    world.posture("flip", "compliant")


def test_kill_switch_blocks_new_orders_and_lets_cancels_through(world: World) -> None:
    c = world.logon("algo")
    mark = world.mark()
    write_json(world.tmp / "state" / "killswitch.json", {"global": False, "identities": [TD + "algo"]})
    world.after(mark, lambda r: r["kind"] == "kill_switch" and r["identities"] == [TD + "algo"], "kill switch on")
    c.send("D", [(11, "K1"), *NOS])
    er = c.recv_type(b"8")
    assert (er.get(150), er.get(39)) == (b"8", b"8") and b"kill-switch" in (er.get(58) or b"")
    c.send("F", [(11, "K2"), (41, "K0"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")])
    cxl = c.recv_type(b"9")  # the exchange answered (unknown order): the cancel went through
    assert b"unknown order" in (cxl.get(58) or b"")
    sent = [r for r in world.decisions("ALGO/FIXGW") if r.get("cl_ord_id") == "K1"]
    assert sent and sent[-1]["decision"] == "deny" and sent[-1]["rules"] == ["kill-switch"]
    mark = world.mark()
    write_json(world.tmp / "state" / "killswitch.json", {"global": False})
    world.after(mark, lambda r: r["kind"] == "kill_switch" and not r["identities"], "kill switch off")
    c.send("D", [(11, "K3"), *NOS])
    assert c.recv_type(b"8").get(150) == b"0"


def test_a_bad_policy_file_keeps_the_old_policy_and_says_what_is_wrong(world: World) -> None:
    path = Path(str(world.tmp / "policy.toml"))
    good = path.read_bytes()
    mark = world.mark()
    path.write_text(good.decode().replace('decision = "deny"', 'decision = "maybe"', 1))
    alert = world.after(mark, lambda r: r["kind"] == "alert" and "policy" in str(r.get("what")), "policy alert")
    assert "quant-analytics-sandbox-deny" in str(alert["reason"])
    c = FixClient(world.port, client_ssl(world.certs, "quant-sandbox"), "QSBX", source="127.0.0.13")
    c.send("A", [(98, "0"), (108, "30")])
    assert c.recv() is None  # the old policy still refuses the sandbox
    path.write_bytes(good)


def test_posture_flip_refuses_the_next_order_and_still_accepts_cancels(world: World) -> None:
    c = world.logon("flip2")
    c.send("D", [(11, "P1"), *NOS])
    assert c.recv_type(b"8").get(150) == b"0"
    c.recv_type(b"8")
    mark = world.mark()
    world.posture("flip2", "unknown")  # e.g. the agent stopped reporting; not a logout level
    world.after(mark, lambda r: r["kind"] == "posture_reloaded", "the posture file reloaded")
    c.send("D", [(11, "P2"), *NOS])
    er = c.recv_type(b"8")
    assert (er.get(150), er.get(39)) == (b"8", b"8") and b"device-health-deny" in (er.get(58) or b"")
    c.send("F", [(11, "P3"), (41, "P1"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")])
    assert c.recv_type(b"9").get(41) == b"P1"  # the exchange answered the cancel
    assert [r["decision"] for r in world.decisions("FLIP2/FIXGW")][-2:] == ["deny", "allow"]
    world.posture("flip2", "compliant")



def _risk_refusal(world: World, c: FixClient, cl: str, fields: list[tuple[int, str]]) -> bytes:
    def from_exchange() -> int:
        return sum(1 for r in world.audit() if r["kind"] == "decision" and r["direction"] == "inbound"
                   and r.get("cl_ord_id") == cl)

    before = from_exchange()
    c.send("D", [(11, cl), *fields])
    er = c.recv_type(b"8")
    assert (er.get(11), er.get(150), er.get(39)) == (cl.encode(), b"8", b"8")
    world.after(0, lambda r: r["kind"] == "decision" and r["direction"] == "outbound" and r.get("cl_ord_id") == cl
                and r["decision"] == "deny", f"the deny record of {cl}")  # a deny is answered, never carried
    assert from_exchange() == before  # nothing reached the exchange: it sent nothing back for this order
    return er.get(58) or b""


def test_pre_trade_risk_refuses_on_the_client_leg_and_nothing_reaches_the_exchange(world: World) -> None:
    c = world.logon("riskalgo")
    base = [(21, "1"), (40, "2"), (54, "1"), (60, "20240101-00:00:00")]
    assert b"risk.max_order_qty" in _risk_refusal(world, c, "R1", [(38, "1000"), (44, "10"), (55, "INTC"), *base])
    assert b"risk.restricted_symbol" in _risk_refusal(world, c, "R2", [(38, "10"), (44, "10"), (55, "BAD"), *base])
    assert b"risk.price_collar" in _risk_refusal(world, c, "R3", [(38, "10"), (44, "13"), (55, "COLLARED"), *base])
    time.sleep(2.1)  # refill the token bucket (4/s, burst 8)
    c.send("D", [(11, "R4"), (38, "10"), (44, "10.5"), (55, "COLLARED"), *base])
    assert c.recv_type(b"8").get(150) == b"0"
    c.recv_type(b"8")
    assert b"risk.duplicate_clordid" in _risk_refusal(world, c, "R4", [(38, "10"), (44, "10"), (55, "INTC"), *base])
    time.sleep(2.1)  # not a wait for an event: the throttle's token bucket refills in real time
    for i in range(12):  # a burst above the throttle
        c.send("D", [(11, f"T{i}"), (38, "1"), (44, "10"), (55, "INTC"), *base])
    texts = []
    for _ in range(12):
        er = c.recv_type(b"8")
        if er.get(150) == b"8":
            texts.append(er.get(58) or b"")
        elif er.get(150) == b"0":
            c.recv_type(b"8")  # its fill
    assert texts and all(b"risk.throttle" in t for t in texts)



def test_a_posture_logout_cancels_the_sessions_open_orders_upstream_first(world: World) -> None:
    c = world.logon("flip3")
    c.send("D", [(11, "REST1"), (21, "1"), (38, "100"), (40, "2"), (44, "10"), (54, "1"), (55, "RESTING"),
                 (60, "20240101-00:00:00")])
    assert c.recv_type(b"8").get(150) == b"0"  # acknowledged, resting on the book
    world.posture("flip3", "non-compliant")
    assert b"non-compliant" in (c.recv_type(b"5", timeout=5).get(58) or b"")
    world.after(0, lambda r: r["kind"] == "stored_for_offline_client" and r.get("orig_cl_ord_id") == "REST1",
                "the venue's answer to the cancel, kept for the client")
    records = world.audit()
    cancels = [r for r in records if r["kind"] == "cancel_on_logout" and r["orig_cl_ord_id"] == "REST1"]
    assert cancels
    canceled = [r for r in records if r["kind"] == "stored_for_offline_client" and r.get("orig_cl_ord_id") == "REST1"]
    assert canceled and canceled[-1]["ord_status"] == "4"  # the exchange cancelled it
    order = [r["seq"] for r in records if r["kind"] in ("cancel_on_logout", "session_revoked")
             and "flip3" in str(r.get("identity", "")) + str(r.get("session", "")).lower()]
    assert order == sorted(order)
    world.posture("flip3", "compliant")



def _post(world: World, name: str | None, body: object) -> tuple[int, dict[str, object]]:
    import http.client

    ctx = client_ssl(world.certs, name)
    conn = http.client.HTTPSConnection("127.0.0.1", world.admin_port, context=ctx, timeout=10)
    conn.request("POST", "/v1/posture", body=json.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read() or b"{}")
    conn.close()
    return resp.status, data


def test_posture_agent_pushes_over_the_admin_api_and_a_live_session_is_cut(world: World) -> None:
    c = world.logon("flip4")
    t0 = time.monotonic()
    status, data = _post(world, "posture-agent", {"identity": TD + "flip4", "level": "non-compliant"})
    assert (status, data) == (200, {"accepted": 1})
    assert b"non-compliant" in (c.recv_type(b"5", timeout=5).get(58) or b"")
    assert time.monotonic() - t0 < 0.5
    _post(world, "posture-agent", {"identity": TD + "flip4", "level": "compliant"})


def test_only_the_posture_agent_role_may_post_and_every_call_is_audited(world: World) -> None:
    import ssl

    status, data = _post(world, "algo", {"identity": TD + "algo", "level": "highly-compliant"})
    assert status == 403 and "lacks role posture_agent" in str(data["error"])
    status, data = _post(world, "posture-agent", {"identity": TD + "algo", "level": "excellent"})
    assert status == 400
    with pytest.raises((ssl.SSLError, OSError)):
        _post(world, None, {"identity": TD + "algo", "level": "compliant"})
    calls = [r for r in world.audit() if r["kind"] == "admin_call"]
    assert any(not r["allowed"] and "lacks role" in str(r["reason"]) for r in calls)
    assert any(r["allowed"] for r in calls)



def test_metrics_count_decisions_and_refusals(world: World) -> None:
    import http.client

    conn = http.client.HTTPSConnection("127.0.0.1", world.admin_port, context=client_ssl(world.certs, "algo"),
                                       timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    assert 'fixgw_decisions_total{decision="allow",direction="outbound"}' in text
    assert 'fixgw_decisions_total{decision="allow",direction="inbound"}' in text
    assert "fixgw_policy_rules" in text and "fixgw_refusals_total" in text


def test_policy_replay_reports_every_decision_a_new_policy_would_change(world: World, tmp_path: Path) -> None:
    import subprocess
    import sys

    mark = world.mark()
    c = world.logon("quant-prod")  # make sure the stream holds an allowed analytics request
    c.send("V", [(262, "MDR"), (263, "0"), (264, "0"), (267, "1"), (269, "0"), (146, "1"), (55, "INTC")])
    c.recv_type(b"W")
    world.after(mark, lambda r: r["kind"] == "decision" and r.get("msg_type") == "V" and r["decision"] == "allow",
                "the allowed MarketDataRequest recorded")
    new = tmp_path / "new-policy.toml"  # the sandbox deny, its zone dropped: it denies quants everywhere
    new.write_text(POLICY.read_text().replace('zones = ["dev_sandbox"]\ndecision = "deny"', 'decision = "deny"'))
    run = [sys.executable, "-m", "gateway", "policy", "replay", "--audit", str(world.tmp / "state" / "audit")]
    same = subprocess.run([*run, "--policy", str(POLICY), "--fail-on-change"], cwd=harness.ROOT,
                          capture_output=True, text=True)
    assert same.returncode == 0 and " 0 would change" in same.stdout, same.stdout
    r = subprocess.run([*run, "--policy", str(new), "--fail-on-change"], cwd=harness.ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "allow by quant-analytics-prod  ->  deny by quant-analytics-sandbox-deny" in r.stdout, r.stdout
    assert "e.g. " in r.stdout  # ClOrdID, or the record's seq for messages without one
