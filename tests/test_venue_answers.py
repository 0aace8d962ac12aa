"""A venue that answers like one, and a gateway that never goes quiet when it does not.

One gateway and one exchange simulator (fill mode) as real processes, a
client session per FIX version — FIX.4.0, 4.1, 4.2, 4.3, 4.4 and FIXT.1.1
with FIX.5.0SP2 — and every message the client receives validated against
its own version's dictionary:

* an order gets New + Fill written in the session's version (ExecTransType(20)
  up to FIX.4.2, ExecType(150)=2 in FIX.4.1/4.2 and F from FIX.4.3, no
  ExecType and LastShares(32)/LastPx(31) on every report in FIX.4.0);
* a refused order (kill switch) gets an ExecutionReport valid in its version;
* the venue's invalid ExecutionReport (``malformed_prefix``) and its
  session-level Reject(3) of an order (``reject_prefix``) reach the client as
  the session's ``venue_reject_answer`` says (BusinessMessageReject(j) or
  ExecutionReport rejected; Reject(3) before FIX.4.2), naming the reason, and
  are audited.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.core.fix import codec
from gateway.core.fix import tags as T
from gateway.core.fix.dictionary import Validator, standard_validator
from gateway.edges.feeds import write_json
from tests import harness
from tests.harness import FixClient, client_ssl

#: CompID -> (BeginString, DefaultApplVerID, venue_reject_answer)
SESSIONS = {
    "C40": ("FIX.4.0", None, "business_reject"),
    "C41": ("FIX.4.1", None, "business_reject"),
    "C42": ("FIX.4.2", None, "business_reject"),
    "C43": ("FIX.4.3", None, "business_reject"),
    "C44": ("FIX.4.4", None, "business_reject"),
    "C50": ("FIXT.1.1", "9", "business_reject"),
    "E40": ("FIX.4.0", None, "execution_report"),
    "E44": ("FIX.4.4", None, "execution_report"),
}
VERSION_SESSIONS = ["C40", "C41", "C42", "C43", "C44", "C50"]


@dataclass
class World:
    tmp: Path
    certs: Path
    port: int
    validators: dict[str, Validator]

    def audit(self) -> list[dict[str, object]]:
        return harness.audit_records(self.tmp / "state" / "audit")

    def audited(self, kind: str, cl_ord_id: str, timeout: float = 5.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.audit() if r["kind"] == kind and r.get("cl_ord_id") == cl_ord_id]
            if found:
                return found[-1]
            assert time.monotonic() < deadline, f"no {kind} record for {cl_ord_id}"
            time.sleep(0.05)

    def logon(self, comp: str) -> FixClient:
        begin, appl, _ = SESSIONS[comp]
        c = FixClient(self.port, client_ssl(self.certs, "algo1"), comp, begin=begin)
        fields = [(98, "0"), (108, "30")] + ([(1137, appl)] if appl else [])
        c.send("A", fields)
        assert c.recv_type(b"A").msg_type == b"A"
        return c

    def recv(self, c: FixClient, comp: str) -> codec.Message:
        """The next application message, validated against the session's version."""
        while True:
            m = c.recv(timeout=10)
            assert m is not None, f"{comp}: the gateway closed the connection"
            if m.msg_type == b"0":
                continue
            err = self.validators[comp].validate(m)
            assert err is None, f"{comp}: {err.detail if err else ''} in {m!r}"
            return m


def bye(c: FixClient) -> None:
    """Log out and wait for the answer, so the next test can log the same session on."""
    c.send("5", [])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = c.recv(timeout=max(0.1, deadline - time.monotonic()))
        if m is None or m.msg_type == b"5":
            break
    c.close()


def order(comp: str, cl: str) -> list[tuple[int, str]]:
    """A limit order as the session's version writes one (TransactTime(60) from FIX.4.2 on)."""
    begin = SESSIONS[comp][0]
    fields = [(11, cl), (21, "1"), (38, "100"), (40, "2"), (44, "10.5"), (54, "1"), (55, "INTC")]
    if begin not in ("FIX.4.0", "FIX.4.1"):
        fields.append((60, harness.format_utc_timestamp(time.time()).decode()))
    return fields


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("venue")
    certs = harness.make_pki(tmp / "certs")
    identities = f'[[identities]]\nid = "spiffe://fixgw.dev/client/algo1"\ncomp_ids = {json.dumps(list(SESSIONS))}\n'
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, reset_on_logon=True, identities=identities,
                                 clients=tuple(f"{b}:{comp}" for comp, (b, _, _) in SESSIONS.items()),
                                 sim_extra='malformed_prefix = "BAD-"\nreject_prefix = "REJ-"')
    text = cfg.read_text()
    for comp, (_, appl, answer) in SESSIONS.items():
        marker = f'client_comp_id = "{comp}"\n'
        if appl:
            text = text.replace(marker, f'{marker}default_appl_ver_id = "{appl}"\n')
        marker = f'sender_comp_id = "GW-{comp}"\n'
        text = text.replace(marker, f'{marker}venue_reject_answer = "{answer}"\n')
    cfg.write_text(text)
    validators = {comp: standard_validator(b.encode(), default_appl_ver_id=appl.encode() if appl else None)
                  for comp, (b, appl, _) in SESSIONS.items()}
    with harness.gateway_and_sim(tmp, cfg, gw_port, sim_port):
        yield World(tmp, certs, gw_port, validators)


# -- the venue answers in the session's version ------------------------------------------------------

@pytest.mark.parametrize("comp", VERSION_SESSIONS)
def test_an_order_gets_new_and_fill_valid_in_the_session_s_version(world: World, comp: str) -> None:
    c = world.logon(comp)
    c.send("D", order(comp, f"N-{comp}"))
    new, fill = world.recv(c, comp), world.recv(c, comp)
    bye(c)
    assert (new.msg_type, fill.msg_type) == (b"8", b"8")
    assert (new.get(T.ClOrdID), fill.get(T.ClOrdID)) == (f"N-{comp}".encode(),) * 2
    assert (new.get(T.OrdStatus), fill.get(T.OrdStatus)) == (b"0", b"2")
    assert (fill.get(T.LastPx), fill.get(T.LastQty), fill.get(T.CumQty)) == (b"10.5", b"100", b"100")
    begin = SESSIONS[comp][0]
    if begin in ("FIX.4.0", "FIX.4.1", "FIX.4.2"):
        assert new.get(T.ExecTransType) == fill.get(T.ExecTransType) == b"0"
    else:
        assert T.ExecTransType not in new and T.ExecTransType not in fill
    if begin == "FIX.4.0":
        assert T.ExecType not in fill and (new.get(T.LastPx), new.get(T.LastQty)) == (b"0", b"0")
    else:
        assert new.get(T.ExecType) == b"0"
        assert fill.get(T.ExecType) == (b"2" if begin in ("FIX.4.1", "FIX.4.2") else b"F")


def test_refused_orders_are_answered_validly_in_every_version(world: World) -> None:
    write_json(world.tmp / "state" / "killswitch.json", {"global": True})
    deadline = time.monotonic() + 10
    while not any(r["kind"] == "kill_switch" and r.get("everything") for r in world.audit()):
        assert time.monotonic() < deadline, "the kill switch was not applied"
        time.sleep(0.05)
    try:
        for comp in VERSION_SESSIONS:
            c = world.logon(comp)
            c.send("D", order(comp, f"K-{comp}"))
            er = world.recv(c, comp)  # validated against the session's own dictionary
            bye(c)
            assert er.msg_type == b"8" and er.get(T.OrdStatus) == b"8" and b"kill-switch" in (er.get(T.Text) or b"")
    finally:
        write_json(world.tmp / "state" / "killswitch.json", {"global": False})
        deadline = time.monotonic() + 10
        while [r for r in world.audit() if r["kind"] == "kill_switch"][-1].get("everything") is not False:
            assert time.monotonic() < deadline, "the kill switch was not lifted"
            time.sleep(0.05)


# -- when the venue misbehaves, the client is told -------------------------------------------------

@pytest.mark.parametrize("comp,answer", [("C44", b"j"), ("E44", b"8"), ("C42", b"j"), ("C40", b"3"), ("E40", b"8"),
                                         ("C50", b"j")])
def test_an_invalid_execution_report_from_the_venue_reaches_the_client_as_the_configured_answer(
        world: World, comp: str, answer: bytes) -> None:
    cl = f"BAD-{comp}"
    c = world.logon(comp)
    c.send("D", order(comp, cl))
    sent_seq = c.seq - 1
    m = world.recv(c, comp)
    bye(c)
    assert m.msg_type == answer, m
    assert b"OrdStatus(39)" in (m.get(T.Text) or b"") and b"not delivered" in (m.get(T.Text) or b"")
    if answer == b"8":
        assert (m.get(T.ClOrdID), m.get(T.OrdStatus), m.get(T.Symbol)) == (cl.encode(), b"8", b"INTC")
    elif answer == b"j":
        assert (m.get(T.RefMsgType), m.get(T.BusinessRejectRefID)) == (b"8", cl.encode())
    else:  # FIX.4.0: Reject(3) naming the client's order
        assert m.get(T.RefSeqNum) == b"%d" % sent_seq
    record = world.audited("venue_invalid", cl)
    assert record["answer"] == answer.decode() and "OrdStatus(39)" in str(record["reason"])


@pytest.mark.parametrize("comp,answer", [("C44", b"j"), ("E44", b"8"), ("C42", b"j"), ("C41", b"3"), ("E40", b"8"),
                                         ("C50", b"j")])
def test_a_venue_reject_of_an_order_reaches_the_client_as_the_configured_answer(
        world: World, comp: str, answer: bytes) -> None:
    cl = f"REJ-{comp}"
    c = world.logon(comp)
    c.send("D", order(comp, cl))
    sent_seq = c.seq - 1
    m = world.recv(c, comp)
    bye(c)
    assert m.msg_type == answer, m
    assert b"order refused by the simulator" in (m.get(T.Text) or b"")
    if answer == b"8":
        assert (m.get(T.ClOrdID), m.get(T.OrdStatus)) == (cl.encode(), b"8")
    else:  # BusinessMessageReject(j) or, before FIX.4.2, Reject(3): the client's own MsgSeqNum
        assert m.get(T.RefSeqNum) == b"%d" % sent_seq
    if answer == b"j":
        assert (m.get(T.RefMsgType), m.get(T.BusinessRejectRefID)) == (b"D", cl.encode())
    record = world.audited("venue_reject", cl)
    assert record["answer"] == answer.decode() and record["client_seq"] == sent_seq


# -- in one process: what the gateway's books make of a venue's Reject(3) --------------------------

@pytest.fixture(scope="module")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dev CA, the gateway's certificate and algo1's, for the in-process gateway of tests/test_inprocess.py."""
    return harness.make_pki(tmp_path_factory.mktemp("inprocess-certs"))


async def test_a_venue_reject_of_an_order_closes_it_in_the_gateway_s_books(
        tmp_path: Path, dev_pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The order never reached the venue's book, so it is no longer open for the gateway either (the
    open-order limit and the cancels sent on a forced logout count it no more); the client hears it as a
    BusinessMessageReject(j) naming its own MsgSeqNum."""
    from tests.fakes import until
    from tests.test_inprocess import IDENTITY, close_world, make_world
    from tests.test_inprocess import order as inprocess_order

    w = await make_world(tmp_path, dev_pki, monkeypatch)
    try:
        venue = await w.exchange_up()
        client = await w.client()
        sent = client.send(T.MT_NEW_ORDER_SINGLE, inprocess_order("VR-1"))
        await until(lambda: venue.app_of(b"D"), "the order at the venue")
        book = w.gw.router.risk_books[IDENTITY]
        assert b"VR-1" in w.route.open_orders and b"VR-1" in book.open_orders
        at_venue = venue.app_of(b"D")[0]
        venue.send(T.MT_REJECT, [(T.RefSeqNum, at_venue.get(T.MsgSeqNum) or b""), (T.RefMsgType, b"D"),
                                 (T.SessionRejectReason, b"5"), (T.Text, b"price out of band")])
        await until(lambda: client.app_of(b"j"), "the client's answer")
        (answer,) = client.app_of(b"j")
        assert answer.get(T.RefSeqNum) == sent.get(T.MsgSeqNum) and answer.get(T.BusinessRejectRefID) == b"VR-1"
        assert answer.get(T.Text) == b"rejected by the venue: price out of band"
        assert b"VR-1" not in w.route.open_orders and b"VR-1" not in book.open_orders
        assert w.records("venue_reject", cl_ord_id="VR-1", answer="j")
    finally:
        await close_world(w)
