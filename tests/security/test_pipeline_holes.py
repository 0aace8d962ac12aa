"""Holes the one-trust-pipeline issue found, each tried through a running gateway as an attacker would.

One gateway with a policy (orders, RFQs, multileg and list orders under
``order_entry``; risk limits), the simulator in fill mode with a journal of
what reached it.  ALGO1 may act on behalf of CLIENT-A; ALGO2 may use no
routing field; ALGO3's route has dictionary validation off (so only the
pipeline stands between a malformed number and the venue).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.edges import pki
from gateway.edges.feeds import write_json
from tests import harness
from tests.harness import FixClient, client_ssl

TD = "spiffe://fixgw.dev/client/"
POLICY = """
[actions.order_entry]
msg_types = ["D", "G", "AB", "E"]
[actions.create_rfq]
msg_types = ["R"]
[actions.cancel]
msg_types = ["F"]
[actions.receive]
msg_types = ["8", "9", "j", "AG", "S"]
direction = "inbound"

[[rules]]
id = "algos-trade"
roles = ["algo"]
actions = ["order_entry", "create_rfq", "cancel"]
decision = "allow"
[[rules]]
id = "algos-receive"
roles = ["algo"]
actions = ["receive"]
decision = "allow"

[risk.default]
max_order_qty = 1000
max_notional = 1000000
restricted_symbols = ["XYZ-RESTRICTED"]
"""


@dataclass
class World:
    tmp: Path
    certs: Path
    port: int

    def client(self, name: str, comp: str) -> FixClient:
        c = FixClient(self.port, client_ssl(self.certs, name), comp)
        c.logon(reset=True)
        return c

    def audit(self) -> list[dict[str, object]]:
        return harness.audit_records(self.tmp / "state" / "audit")

    def journal(self) -> list[str]:
        path = self.tmp / "received.log"
        return path.read_text().splitlines() if path.exists() else []

    def wait_record(self, pred: object, timeout: float = 5.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while True:
            for r in self.audit():
                if pred(r):  # type: ignore[operator]
                    return r
            if time.monotonic() > deadline:
                raise AssertionError("no such audit record")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("pipeline")
    certs = harness.make_pki(tmp / "certs")
    pki.issue(certs, "algo3")
    (tmp / "policy.toml").write_text(POLICY)
    gw_port, sim_port = harness.free_port(), harness.free_port()
    identities = f"""
[[identities]]
id = "{TD}algo1"
comp_ids = ["ALGO1"]
roles = ["algo"]
routing = {{ OnBehalfOfCompID = ["CLIENT-A"] }}
[[identities]]
id = "{TD}algo2"
comp_ids = ["ALGO2"]
roles = ["algo"]
[[identities]]
id = "{TD}algo3"
comp_ids = ["ALGO3"]
roles = ["algo"]
"""
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, clients=("ALGO1", "ALGO2", "ALGO3"),
                                 identities=identities,
                                 sim_extra=f'journal = "{tmp}/received.log"\nfill_delay_ms = 1000')
    text = cfg.read_text().replace("[policy]\nallow_all = true", f'[policy]\nfile = "{tmp}/policy.toml"')
    # ALGO3: no dictionary validation on its client leg
    text = text.replace('client_comp_id = "ALGO3"\ngateway_comp_id = "FIXGW"\n',
                        'client_comp_id = "ALGO3"\ngateway_comp_id = "FIXGW"\nvalidate = false\n')
    cfg.write_text(text)
    with harness.gateway_and_sim(tmp, cfg, gw_port, sim_port):
        yield World(tmp, certs, gw_port)


def _nos(cl: str, symbol: str = "INTC", qty: str = "100", price: str = "30.15") -> list[tuple[int, str]]:
    return [(11, cl), (21, "1"), (38, qty), (40, "2"), (44, price), (54, "1"), (55, symbol),
            (60, "20260101-00:00:00")]


def _refused_order(c: FixClient, cl: str) -> str:
    """The ExecutionReport answering order ``cl`` (Fills of earlier orders may arrive in between)."""
    m = c.recv_type(b"8")
    while m.get(11) != cl.encode():
        m = c.recv_type(b"8")
    assert m.get(39) == b"8", m  # OrdStatus rejected
    return (m.get(58) or b"").decode()


def _bye(c: FixClient) -> None:
    """Log out and wait for the answer, so the next test can log the same session on."""
    c.send("5", [])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = c.recv(timeout=max(0.1, deadline - time.monotonic()))
        if m is None or m.msg_type == b"5":
            break
    c.close()


def _crossed(world: World, cl: str) -> bool:
    return any(line.endswith(" " + cl) for line in world.journal())


def test_routing_fields_need_a_grant(world: World) -> None:
    """Hole 1: OnBehalfOf/DeliverTo/SubID/LocationID fields crossed unchecked and unrecorded."""
    c2 = world.client("algo2", "ALGO2")
    for tag, value in ((115, "SOMEONE"), (128, "OTHERDESK"), (57, "SUB"), (142, "NYC")):
        cl = f"route-{tag}"
        c2.send("D", _nos(cl), header=[(tag, value)])
        assert "routing" in _refused_order(c2, cl)
        assert not _crossed(world, cl)
    c1 = world.client("algo1", "ALGO1")
    c1.send("D", _nos("obo-ok"), header=[(115, "CLIENT-A")])
    assert c1.recv_type(b"8").get(39) in (b"0", b"A", b"2")
    rec = world.wait_record(lambda r: r.get("kind") == "decision" and r.get("cl_ord_id") == "obo-ok")
    assert rec["routing"] == {"OnBehalfOfCompID": "CLIENT-A"}
    c1.send("D", _nos("obo-bad"), header=[(115, "CLIENT-B")])
    assert "OnBehalfOfCompID" in _refused_order(c1, "obo-bad")
    assert not _crossed(world, "obo-bad")
    _bye(c1)
    _bye(c2)


def test_kill_switch_covers_every_order_creating_msgtype(world: World) -> None:
    """Hole 3: a QuoteRequest(R) passed a global kill switch (it was wired to D/G only)."""
    c = world.client("algo2", "ALGO2")
    kill = world.tmp / "state" / "killswitch.json"
    write_json(kill, {"global": True})
    try:
        world.wait_record(lambda r: r.get("kind") == "kill_switch" and r.get("everything") is True)
        c.send("D", _nos("order-killed"))
        assert _refused_order(c, "order-killed").startswith("refused by kill-switch")
        c.send("R", [(131, "rfq-killed"), (146, "1"), (55, "INTC"), (38, "100")])
        m = c.recv_type(b"j")
        assert b"kill-switch" in (m.get(58) or b"")
        assert not _crossed(world, "rfq-killed")
    finally:
        write_json(kill, {"global": False})
        world.wait_record(lambda r: r.get("kind") == "kill_switch" and r.get("everything") is False)
    _bye(c)


def test_numbers_fail_closed_without_dictionary_validation(world: World) -> None:
    """Hole 4: NaN and negative quantities or prices passed every numeric check."""
    c = world.client("algo3", "ALGO3")
    for cl, qty, price in (("nan-qty", "NaN", "30"), ("neg-qty", "-5000000", "30"), ("neg-px", "100", "-30"),
                           ("inf-px", "100", "inf")):
        c.send("D", _nos(cl, qty=qty, price=price))
        assert _refused_order(c, cl).startswith("refused by risk"), cl
        assert not _crossed(world, cl)
    _bye(c)


def test_every_occurrence_in_repeating_groups_counts(world: World) -> None:
    """Hole 2: the second NoRelatedSym(146) entry of a QuoteRequest was never looked at."""
    c = world.client("algo3", "ALGO3")
    c.send("R", [(131, "rfq-2nd"), (146, "2"), (55, "INTC"), (38, "100"), (55, "XYZ-RESTRICTED"),
                 (38, "5000000")])
    m = c.recv_type(b"j")
    assert b"risk" in (m.get(58) or b"")
    assert not _crossed(world, "rfq-2nd")
    _bye(c)


def test_possresend_duplicate_is_not_a_second_order(world: World) -> None:
    """Hole 10: a reused ClOrdID with PossResend(97)=Y reached the venue twice."""
    c = world.client("algo2", "ALGO2")
    c.send("D", _nos("dup-1"))
    assert c.recv_type(b"8").get(39) in (b"0", b"A", b"2")
    c.send("D", _nos("dup-1"), header=[(97, "Y")])
    rec = world.wait_record(lambda r: r.get("kind") == "decision" and r.get("cl_ord_id") == "dup-1"
                            and r.get("poss_resend"))
    assert rec["decision"] == "ignore" and not rec.get("upstream_seq")
    c.send("D", _nos("after-dup"))  # the session goes on; the duplicate got no answer (FIX 19a)
    m = c.recv_type(b"8")
    while m.get(11) == b"dup-1":  # the first order's Fill may still be on its way
        m = c.recv_type(b"8")
    assert m.get(11) == b"after-dup"
    # the venue journals what it receives before answering, so the journal is complete here
    assert sum(1 for line in world.journal() if line.endswith(" dup-1")) == 1
    _bye(c)


def test_outcome_records_name_the_exchange_sequence_number_under_pipelining(world: World) -> None:
    """Hole 9: with pipelined orders, decision records named the wrong exchange-leg MsgSeqNum."""
    c = world.client("algo2", "ALGO2")
    ids = [f"pipe-{i}" for i in range(20)]
    for cl in ids:
        c.send("D", _nos(cl))
    outcomes: dict[str, object] = {}
    deadline = time.monotonic() + 10
    while len(outcomes) < len(ids) and time.monotonic() < deadline:
        outcomes = {str(r["cl_ord_id"]): r["upstream_seq"] for r in world.audit()
                    if r.get("kind") == "outcome" and str(r.get("cl_ord_id")).startswith("pipe-")}
        time.sleep(0.05)
    assert sorted(outcomes) == sorted(ids)
    seqs = [outcomes[cl] for cl in ids]
    assert len(set(seqs)) == len(ids), seqs
    assert seqs == sorted(seqs)  # sent in order, numbered in order
    _bye(c)


def test_messages_for_an_offline_client_are_decided_and_recorded_first(world: World) -> None:
    """Hole 5: exchange messages for an offline client skipped the inbound policy and its record."""
    c = world.client("algo2", "ALGO2")
    c.send("D", _nos("offline-1"))
    assert c.recv_type(b"8").get(11) == b"offline-1"  # the New; the Fill follows 1 s later, after the Logout
    c.send("5", [])
    c.recv_type(b"5")
    c.close()
    rec = world.wait_record(lambda r: r.get("kind") == "stored_for_offline_client"
                            and r.get("cl_ord_id") == "offline-1", timeout=5)
    records = world.audit()
    stored_at = records.index(rec)
    decided = [i for i, r in enumerate(records) if r.get("kind") == "decision" and r.get("direction") == "inbound"
               and r.get("cl_ord_id") == "offline-1" and r.get("client_online") is False]
    assert decided and decided[-1] < stored_at, json.dumps(records[-6:])


def test_an_order_followed_at_once_by_logout_is_forwarded_and_has_an_outcome(world: World) -> None:
    """Hole 7: an allowed order was dropped (``forward_dropped``, no answer) when the client's Logout
    arrived before the order's decision record was written."""
    c = world.client("algo2", "ALGO2")
    c.send_raw(c.frame("D", _nos("then-logout")) + c.frame("5", []))  # one write: both in one read
    assert c.recv_type(b"5") is not None  # the Logout is answered
    c.close()
    rec = world.wait_record(lambda r: r.get("kind") == "outcome" and r.get("cl_ord_id") == "then-logout")
    assert rec["result"] == "forwarded" and isinstance(rec["upstream_seq"], int), rec
    decision = world.wait_record(lambda r: r.get("kind") == "decision" and r.get("direction") == "outbound"
                                 and r.get("cl_ord_id") == "then-logout")
    assert decision["decision"] == "allow" and rec["decision_seq"] == decision["seq"]
    deadline = time.monotonic() + 5  # the venue journals what it receives
    while not _crossed(world, "then-logout") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _crossed(world, "then-logout")
    # its reports are kept for the client's next Logon, decided and recorded first
    world.wait_record(lambda r: r.get("kind") == "stored_for_offline_client" and r.get("cl_ord_id") == "then-logout")
