"""Budget holes (issue 15 items 8, 16, 17), each tried through a running gateway as an attacker or a
crashing host would: a refused flood that fills the disk, a burst of cancels caught in the order
throttle, and a restart that forgets every risk limit.

Real processes throughout: the gateway (``fixgw run``) in front of the exchange simulator (orders in
REST rest until cancelled, every message it receives journalled), mutual-TLS clients.  Every flood
is bounded in count and time; every wait polls what it waits for, with a deadline.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.core.fix import codec
from gateway.edges import pki
from gateway.edges.audit_chain import segments
from tests import harness
from tests.harness import FixClient, client_ssl

TD = "spiffe://fixgw.dev/client/"
MUTE = TD + "mute"
POLICY = """
[anomaly]
enabled = true
learn_orders = 3
[actions.order_entry]
msg_types = ["D"]
[actions.cancel]
msg_types = ["F"]
[actions.receive]
msg_types = ["8", "9", "j"]
direction = "inbound"
[[rules]]
id = "algos-trade"
roles = ["algo"]
actions = ["order_entry", "cancel"]
decision = "allow"
[[rules]]
id = "algos-receive"
roles = ["algo"]
actions = ["receive"]
decision = "allow"
[[rules]]
id = "observers-hear-only"
roles = ["observer"]
actions = ["receive"]
decision = "allow"

[risk.default]
max_msgs_per_sec = 2
burst = 8
max_open_orders = 8
[risk.identities."spiffe://fixgw.dev/client/algo2"]
max_open_orders = 3
"""
#: the flood: refused messages sent, the budget, and what a refused message may cost on disk at most
FLOOD, BURST = 2000, 20
PER_REFUSAL = 3 * 1024  # its decision record (values capped) and its answer in the resend log (echo capped)
FIXED = 24 * 1024  # logon, logout, the budget's own records, checkpoints


def nos(cl: str, symbol: str = "REST", qty: str = "10") -> list[tuple[int, str]]:
    return [(11, cl), (21, "1"), (38, qty), (40, "2"), (44, "10"), (54, "1"), (55, symbol),
            (60, "20260101-00:00:00")]


def cxl(cl: str, orig: str) -> list[tuple[int, str]]:
    return [(11, cl), (41, orig), (54, "1"), (55, "REST"), (60, "20260101-00:00:00")]


@dataclass
class World:
    tmp: Path
    certs: Path
    cfg: Path
    port: int
    sim: harness.Proc
    gw: harness.Proc | None = None
    clients: list[FixClient] = field(default_factory=list)

    def start_gateway(self) -> None:
        starts = sum(1 for r in self.audit() if r["kind"] == "gateway_started") if self.audit_dir.exists() else 0
        self.gw = harness.start(["run", "--config", str(self.cfg)], self.tmp / "gw.log", self.port)
        # every exchange leg logged on again since this start (3 sessions)
        self.wait(lambda rs: sum(1 for r in rs[self._last_start(rs, starts):] if r["kind"] == "upstream_logon") >= 3,
                  "the exchange legs to log on")

    @staticmethod
    def _last_start(records: list[dict[str, object]], before: int) -> int:
        starts = [i for i, r in enumerate(records) if r["kind"] == "gateway_started"]
        return starts[before] if len(starts) > before else len(records)

    def restart(self, crash: bool) -> None:
        assert self.gw is not None
        for c in self.clients:
            c.close()
        self.clients.clear()
        if crash:
            self.gw.kill()  # SIGKILL: no shutdown, the audit stream ends open
        else:
            self.gw.stop()
        self.start_gateway()

    @property
    def audit_dir(self) -> Path:
        return self.tmp / "state" / "audit"

    def audit(self) -> list[dict[str, object]]:
        return harness.audit_records(self.audit_dir)

    def wait(self, pred: Callable[[list[dict[str, object]]], object], what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self.audit()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def client(self, name: str) -> FixClient:
        c = FixClient(self.port, client_ssl(self.certs, name), name.upper())
        c.logon(reset=True)
        self.clients.append(c)
        return c

    def disk(self, session_dir: str) -> int:
        """Bytes the gateway keeps for one client session: its audit chain and its resend log."""
        audit = sum(p.stat().st_size for _, p in segments(self.audit_dir))
        log = self.tmp / "state" / "client" / session_dir / "messages.log"
        return audit + (log.stat().st_size if log.exists() else 0)

    def journal(self) -> list[str]:
        path = self.tmp / "received.log"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    certs = harness.make_pki(tmp_path / "certs")
    pki.issue(certs, "mute")
    identities = "".join(f'[[identities]]\nid = "{TD}{n}"\ncomp_ids = ["{n.upper()}"]\nroles = ["{role}"]\n'
                         for n, role in (("algo1", "algo"), ("algo2", "algo"), ("mute", "observer")))
    (tmp_path / "policy.toml").write_text(POLICY)
    port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp_path, certs, port, sim_port, reset_on_logon=True,
                                 clients=("ALGO1", "ALGO2", "MUTE"), identities=identities,
                                 gateway_extra=(f"refusal_rate = 0.2\nrefusal_burst = {BURST}\n"
                                                f"malformed_rate = 0.2\nmalformed_burst = {BURST}"),
                                 sim_extra=f'rest_symbols = ["REST"]\njournal = "{tmp_path}/received.log"')
    cfg.write_text(cfg.read_text().replace("[policy]\nallow_all = true",
                                           f'[policy]\nfile = "{tmp_path}/policy.toml"'))
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp_path / "sim.log", sim_port)
    w = World(tmp_path, certs, cfg, port, sim)
    try:
        w.start_gateway()
        yield w
    finally:
        for c in w.clients:
            c.close()
        if w.gw is not None:
            w.gw.stop()
        sim.stop()


def trade(c: FixClient, cl: str) -> None:
    """An order that fills (any symbol but REST): both reports come back."""
    c.send("D", nos(cl, symbol="INTC"))
    assert c.recv_type(b"8").get(39) == b"0"
    assert c.recv_type(b"8").get(39) == b"2"


def until_closed(c: FixClient, timeout: float = 20.0) -> list[codec.Message]:
    """Every message until the gateway closes the connection."""
    out: list[codec.Message] = []
    deadline = time.monotonic() + timeout
    while True:
        m = c.recv(max(0.1, deadline - time.monotonic()))
        if m is None:
            return out
        out.append(m)


# -- item 8: refused traffic is bounded ----------------------------------------------------------
def test_a_refused_flood_costs_a_bounded_amount_of_disk_and_logs_the_identity_out(world: World) -> None:
    bystander = world.client("algo1")
    trade(bystander, "BEFORE")
    mute = world.client("mute")
    world.wait(lambda rs: any(r["kind"] == "logon" and r.get("identity") == MUTE for r in rs), "mute's logon")
    before = world.disk("FIX.4.4-MUTE-FIXGW")
    journal = len(world.journal())
    huge = "S" * 20_000  # every 10th order names a 20 KB Symbol(55): a refusal must not record or echo it whole
    frames = [mute.frame("D", nos(f"F{i}", symbol=huge if i % 10 == 0 else "INTC")) for i in range(FLOOD)]
    sent = 0
    try:
        for i in range(0, FLOOD, 100):
            mute.send_raw(b"".join(frames[i:i + 100]))
            sent += 100
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass  # the gateway logged the identity out and closed: the rest of the flood goes nowhere
    answers = until_closed(mute)
    logout = [m for m in answers if m.msg_type == b"5"]
    assert logout and b"refusal budget" in (logout[0].get(58) or b""), answers[-3:]
    refusals = [m for m in answers if m.msg_type == b"8"]
    assert len(refusals) == BURST  # each decided refusal answered; nothing after the budget
    assert all(len(m.get(55) or b"") <= 256 for m in refusals)  # the answer echoes at most 256 bytes
    world.wait(lambda rs: any(r["kind"] == "logout" and "MUTE" in str(r.get("session")) for r in rs), "logout")
    records = world.audit()
    decided = [r for r in records if r["kind"] == "decision" and r.get("identity") == MUTE]
    assert len(decided) == BURST and all(r["decision"] == "deny" for r in decided)
    capped = [r for r in decided if str(r["symbol"]).startswith("SSS")]
    assert capped and all(len(str(r["symbol"])) < 300 and str(r["symbol"]).endswith("[20000 chars]")
                          for r in capped)
    exhausted = [r for r in records if r["kind"] == "refusal_budget_exhausted"]
    assert len(exhausted) == 1 and exhausted[0]["identity"] == MUTE and exhausted[0]["refused"] == BURST
    grown = world.disk("FIX.4.4-MUTE-FIXGW") - before
    assert grown < BURST * PER_REFUSAL + FIXED, f"{grown} bytes for {sent} refused messages"
    assert len(world.journal()) == journal  # nothing of it reached the exchange

    # logging on again does not reset the budget (the identity's, refilled only by time): not decided, cut
    again = world.client("mute")
    again.send("D", nos("AGAIN", symbol="INTC"))
    answers = until_closed(again)
    assert [m.msg_type for m in answers] == [b"5"] and b"still used up" in (answers[0].get(58) or b"")
    world.wait(lambda rs: any(r["kind"] == "refused_unprocessed" and r.get("first_client_seq") == 2
                              for r in rs), "the unprocessed message's record")
    records = world.audit()
    assert not [r for r in records if r["kind"] == "decision" and r.get("cl_ord_id") == "AGAIN"]
    assert [r["logged_on_again"] for r in records if r["kind"] == "refusal_budget_exhausted"] == [False, True]
    trade(bystander, "AFTER")  # the bystander never noticed


def test_malformed_messages_and_garbled_frames_cost_the_same_budget(world: World) -> None:
    # messages the session layer refuses itself (Reject(3)) and frames it drops never reach the
    # pipeline: they must not be an unmetered way to fill the disk either
    bystander = world.client("algo1")
    mute = world.client("mute")
    world.wait(lambda rs: any(r["kind"] == "logon" and r.get("identity") == MUTE for r in rs), "mute's logon")
    before = world.disk("FIX.4.4-MUTE-FIXGW")
    frames = []
    for i in range(FLOOD):
        if i % 2:  # OrderQty(38) that is not a number: Reject(3) 373=6
            frames.append(mute.frame("D", nos(f"M{i}", qty="x" * 200)))
        else:  # a checksum that does not add up: dropped without a sequence number
            good = mute.frame("0", [], seq=mute.seq)  # numbered like the next message, not consuming it
            frames.append(good[:-4] + b"%03d\x01" % ((int(good[-4:-1]) + 1) % 256))
    try:
        for i in range(0, FLOOD, 100):
            mute.send_raw(b"".join(frames[i:i + 100]))
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass
    answers = until_closed(mute)
    logout = [m for m in answers if m.msg_type == b"5"]
    assert logout and b"malformed-message budget" in (logout[0].get(58) or b""), answers[-3:]
    rejects = [m for m in answers if m.msg_type == b"3"]
    assert len(rejects) <= BURST, f"{len(rejects)} Reject(3) answers for a budget of {BURST}"
    world.wait(lambda rs: any(r["kind"] == "refusal_budget_exhausted" and r.get("identity") == MUTE for r in rs),
               "the budget's record")
    world.wait(lambda rs: any(r["kind"] == "logout" and "MUTE" in str(r.get("session")) for r in rs), "logout")
    records = world.audit()
    recorded = [r for r in records
                if r["kind"] in ("session_reject", "frame_dropped") and "MUTE" in str(r.get("session"))]
    assert {r["kind"] for r in recorded} == {"session_reject", "frame_dropped"}
    assert len(recorded) == BURST, f"{len(recorded)} refusals recorded one by one for a budget of {BURST}"
    exhausted = [r for r in records if r["kind"] == "refusal_budget_exhausted"]
    assert len(exhausted) == 1 and exhausted[0]["refused"] == BURST
    assert exhausted[0]["budget"] == "malformed-message budget"
    grown = world.disk("FIX.4.4-MUTE-FIXGW") - before
    assert grown < BURST * PER_REFUSAL + FIXED, f"{grown} bytes for {FLOOD} refused frames"
    trade(bystander, "AFTER-MALFORMED")  # the bystander never noticed


def test_a_value_the_peer_chooses_is_capped_in_event_records_too(world: World) -> None:
    # a Logon naming a 30 KB SenderCompID(49): refused (no such session), and the record says so in 4 KB
    c = FixClient(world.port, client_ssl(world.certs, "mute"), "M" * 30_000)
    try:
        c.send("A", [(98, "0"), (108, "30")])
        assert c.recv(10) is None
    finally:
        c.close()
    def refused(records: list[dict[str, object]]) -> list[str]:
        return [str(r["reason"]) for r in records if r["kind"] == "logon_refused" and "MMMM" in str(r["reason"])]

    world.wait(lambda rs: refused(rs), "the refused Logon's record")
    reason = refused(world.audit())[0]
    assert len(reason) < 4200 and reason.endswith("chars]")
    # ... and in the gateway's log (each text value capped at 1,024 characters)
    logged = [line for line in (world.tmp / "gw.log").read_text().splitlines() if "MMMM" in line]
    assert logged and all(len(line) < 3000 for line in logged), [len(line) for line in logged]


# -- item 16: cancels reduce risk and have a budget of their own --------------------------------------
def test_a_burst_of_cancels_after_the_order_budget_is_spent_all_pass(world: World) -> None:
    c = world.client("algo1")
    for i in range(8):  # the whole order budget (burst 8, 2/s) on resting orders
        c.send("D", nos(f"O{i}"))
    news = [c.recv_type(b"8") for _ in range(8)]
    assert [m.get(39) for m in news] == [b"0"] * 8
    for i in range(8):  # and every one cancelled at once
        c.send("F", cxl(f"C{i}", f"O{i}"))
    cancelled = [c.recv() for _ in range(8)]
    assert [(m.msg_type, m.get(39)) for m in cancelled if m is not None] == [(b"8", b"4")] * 8, \
        [m.get(58) for m in cancelled if m is not None]
    # a flood of cancels is still bounded: the bucket is as deep as the orders that were open
    for i in range(8, 28):
        c.send("F", cxl(f"C{i}", f"O{i % 8}"))
    answers = [c.recv_type(b"9") for _ in range(20)]  # the venue's "not open", or the gateway's refusal
    throttled = [m for m in answers if b"risk.cancel_throttle" in (m.get(58) or b"")]
    assert 1 <= len(throttled) < 20


# -- item 17: a restart remembers ClOrdIDs, open orders and baselines ----------------------------------
@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "sigkill"])
def test_a_restart_refuses_a_duplicate_clordid_and_still_counts_open_orders(world: World, crash: bool) -> None:
    c = world.client("algo2")
    for cl in ("A", "B", "C"):  # max_open_orders = 3 for algo2; REST orders stay open
        c.send("D", nos(cl))
        assert c.recv_type(b"8").get(39) == b"0"
    c.send("D", nos("D"))
    assert b"risk.max_open_orders" in (c.recv_type(b"8").get(58) or b"")
    world.restart(crash)
    rebuilt = [r for r in world.audit() if r["kind"] == "risk_rebuilt"][-1]
    assert rebuilt["open_orders"] == 3 and rebuilt["clordids"] == 3, rebuilt
    c = world.client("algo2")
    journal = len(world.journal())
    c.send("D", nos("A"))  # the same ClOrdID, not a resend: the venue would take it as a second order
    refused = c.recv_type(b"8")
    assert refused.get(39) == b"8" and b"risk.duplicate_clordid" in (refused.get(58) or b"")
    c.send("D", nos("E", symbol="NEWSYM"))  # three still open; and a first order ever in NEWSYM
    assert b"risk.max_open_orders" in (c.recv_type(b"8").get(58) or b"")
    assert len(world.journal()) == journal  # neither reached the exchange
    c.send("F", cxl("XA", "A"))
    assert c.recv_type(b"8").get(39) == b"4"
    c.send("D", nos("E"))
    assert c.recv_type(b"8").get(39) == b"0"  # A's cancel freed a place
    # the baseline survived too (3 orders learned before the restart): the first NEWSYM order was judged
    world.wait(lambda rs: any(r["kind"] == "anomaly" and r.get("finding") == "new_symbol" for r in rs),
               "an anomaly record for the first order in NEWSYM")
