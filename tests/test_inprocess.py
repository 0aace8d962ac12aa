"""Routing and the shells in one process, with fake transports (tests/fakes.py).

Everything is the real gateway — ``Gateway(cfg)`` from a TOML file, its
``TLSConnection`` doing mutual TLS over memory BIOs with real dev
certificates, ``ClientProtocol``, ``UpstreamLeg`` (connecting through its own
reconnect loop), the ``Router``, the policy, the audit log on disk — except
the sockets: each connection is a ``FakeTransport`` driven through the
asyncio Protocol methods, with a real FIX session on the far side (the
client, the venue).  No listener, no subprocess: ``Gateway.start()`` (which
binds the listener and runs the watch loop) is not called; each test starts
the exchange leg itself (``UpstreamLeg.start()``, whose ``create_connection``
is ``FakeNet``'s) and hands client connections to a ``TLSConnection``.  The
audit writer is inline, so a record is in the file when the call that wrote
it returns; ``stop()`` is the gateway's own.

The end-to-end twins of these tests (real sockets, real processes) are in
tests/test_gateway.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.app.gateway import Gateway
from gateway.core.fix import tags as T
from gateway.core.fix.codec import Field, Message
from gateway.core.fix.store import MemoryStore
from gateway.core.fix.utctime import format_utc_timestamp
from gateway.edges import config, pki
from gateway.edges.audit import iter_records
from gateway.edges.store import FileStore
from gateway.shells.route import Route
from tests.fakes import ClientPeer, FakeNet, FakeTransport, VenuePeer, frames, settle, until

KEY = (b"FIX.4.4", b"ALGO1", b"FIXGW")
IDENTITY = "spiffe://fixgw.dev/client/algo1"
NO_RELATED_SYM = 146
POLICY = """
[zones]
colo = ["127.0.0.1/32"]

[actions.order_entry]
msg_types = ["D"]
[actions.create_rfq]
msg_types = ["R"]
[actions.receive_executions]
msg_types = ["8", "9"]
direction = "inbound"
[actions.receive_rejects]
msg_types = ["j"]
direction = "inbound"

[[rules]]
id = "algo-orders-colo"
roles = ["algo"]
actions = ["order_entry"]
zones = ["colo"]
decision = "allow"

[[rules]]
id = "no-restricted-symbol"
roles = ["algo"]
actions = ["order_entry"]
symbols = ["BAD"]
decision = "deny"

[[rules]]
id = "inbound-trading"
roles = ["algo"]
actions = ["receive_executions", "receive_rejects"]
decision = "allow"
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dev CA, the gateway's server certificate and one client identity (algo1)."""
    folder = tmp_path_factory.mktemp("certs")
    pki.init(folder)
    pki.issue(folder, "algo1")
    return folder


def write_config(tmp: Path, certs: Path, max_buffered_bytes: int = 1048576) -> Path:
    (tmp / "policy.toml").write_text(POLICY)
    path = tmp / "gateway.toml"
    path.write_text(f"""
[gateway]
state_dir = "{tmp}/state"
max_buffered_bytes = {max_buffered_bytes}
[listen]
port = 19878  # never bound: these tests hand the gateway its connections themselves
cert = "{certs}/gateway.crt"
key = "{certs}/gateway.key"
ca = "{certs}/ca.crt"
[audit]
dir = "{tmp}/audit"
writer = "inline"
[policy]
file = "{tmp}/policy.toml"

[[identities]]
id = "{IDENTITY}"
comp_ids = ["ALGO1"]
roles = ["algo"]

[[sessions]]
begin_string = "FIX.4.4"
client_comp_id = "ALGO1"
gateway_comp_id = "FIXGW"
[sessions.upstream]
host = "venue.test"
port = 19879
tls = false
sender_comp_id = "GW-ALGO1"
target_comp_id = "XCHG"
reconnect_min = 0.05
reconnect_max = 0.05
""")
    return path


@dataclass
class World:
    tmp: Path
    certs: Path
    gw: Gateway
    net: FakeNet

    @property
    def route(self) -> Route:
        return self.gw.routes[KEY]

    @property
    def venue(self) -> VenuePeer:
        return self.net.venues[-1]

    @property
    def exchange_transport(self) -> FakeTransport:
        return self.venue.transport

    async def exchange_up(self) -> VenuePeer:
        """Start the route's exchange leg (its own connect loop) and wait until it is logged on."""
        self.route.upstream.start()
        await until(lambda: self.route.upstream.logged_on, "the exchange leg to log on")
        return self.venue

    async def client(self, store: MemoryStore | None = None) -> ClientPeer:
        """A client connected over mutual TLS and logged on."""
        c = ClientPeer(self.gw, self.certs, "algo1", b"ALGO1", store if store is not None else MemoryStore())
        c.logon()
        await until(lambda: c.session.is_logged_on, "the client to log on")
        return c

    def audit(self) -> list[dict[str, Any]]:
        out = []
        for _, _, _, rec in iter_records(self.tmp / "audit"):
            assert rec is not None, "a torn audit record"
            out.append(rec)
        return out

    def records(self, kind: str, **match: object) -> list[dict[str, Any]]:
        return [r for r in self.audit() if r["kind"] == kind and all(r.get(k) == v for k, v in match.items())]


async def make_world(tmp: Path, certs: Path, monkeypatch: pytest.MonkeyPatch, **cfg: Any) -> World:
    net = FakeNet(b"FIX.4.4", b"XCHG", b"GW-ALGO1")
    monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", net.create_connection)
    gw = Gateway(config.load(write_config(tmp, certs, **cfg)))
    return World(tmp, certs, gw, net)


async def close_world(w: World) -> None:
    """The gateway's own shutdown: Logout on every session; the peers answer, so it does not wait long."""
    await w.gw.stop(grace=2.0)
    me = asyncio.current_task()
    await until(lambda: all(t.done() for t in asyncio.all_tasks() if t is not me), "the gateway's tasks to end")


@pytest.fixture
async def world(tmp_path: Path, certs: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    w = await make_world(tmp_path, certs, monkeypatch)
    yield w
    await close_world(w)


def order(cl_ord_id: str, symbol: str = "INTC", qty: str = "100") -> list[Field]:
    return [(T.ClOrdID, cl_ord_id.encode()), (T.HandlInst, b"1"), (T.OrderQty, qty.encode()), (T.OrdType, b"2"),
            (T.Price, b"10.25"), (T.Side, b"1"), (T.Symbol, symbol.encode()), (T.TransactTime, b"20240101-00:00:00")]


def execution_report(cl_ord_id: str, exec_id: str, exec_type: bytes = b"0", qty: bytes = b"100") -> list[Field]:
    """What a venue answers (the fields of gateway/app/exchange_sim.py): New (0) or Fill (F)."""
    filled = exec_type == b"F"
    body: list[Field] = [(T.AvgPx, b"10.25" if filled else b"0"), (T.ClOrdID, cl_ord_id.encode()),
                         (T.CumQty, qty if filled else b"0"), (T.ExecID, exec_id.encode())]
    if filled:
        body += [(T.LastPx, b"10.25"), (T.LastQty, qty)]
    body += [(T.OrderID, b"O-" + cl_ord_id.encode()), (T.OrderQty, qty), (T.OrdStatus, b"2" if filled else b"0"),
             (T.Price, b"10.25"), (T.Side, b"1"), (T.Symbol, b"INTC"), (T.TransactTime, format_utc_timestamp(0.0)),
             (T.ExecType, exec_type), (T.LeavesQty, b"0" if filled else qty)]
    return body


def app_frames(transport: FakeTransport) -> list[Message]:
    """Application messages the gateway wrote on a plaintext transport (the exchange leg)."""
    return [m for m in frames(transport.written) if not m.is_admin()]


# -- 1. client -> exchange ------------------------------------------------------------------
async def test_allowed_order_crosses_with_the_exchange_legs_comp_ids_and_is_recorded(world: World) -> None:
    venue = await world.exchange_up()
    client = await world.client()
    client.send(T.MT_NEW_ORDER_SINGLE, order("ORD-0", symbol="BAD"))  # refused: the two legs' numbers now differ
    await until(lambda: client.app_of(b"8"), "the refusal")
    sent = client.send(T.MT_NEW_ORDER_SINGLE, order("ORD-1"))
    await until(lambda: venue.app_of(b"D"), "the order at the venue")

    on_wire = app_frames(world.exchange_transport)
    assert [m.msg_type for m in on_wire] == [b"D"]
    nos = on_wire[0]
    assert (nos.get(T.SenderCompID), nos.get(T.TargetCompID)) == (b"GW-ALGO1", b"XCHG")
    assert nos.get(T.ClOrdID) == b"ORD-1" and nos.get(T.Symbol) == b"INTC" and nos.get(T.OrderQty) == b"100"
    assert venue.app_of(b"D")[0].get(T.MsgSeqNum) == nos.get(T.MsgSeqNum)  # the venue's session accepted it

    [decision] = world.records("decision", direction="outbound", cl_ord_id="ORD-1")
    assert decision["decision"] == "allow" and decision["rules"] == ["algo-orders-colo"]
    assert decision["identity"] == IDENTITY and decision["zone"] == "colo"
    assert decision["client_seq"] == sent.seq_num and decision["session"] == "FIX.4.4/ALGO1/FIXGW"
    [outcome] = world.records("outcome", cl_ord_id="ORD-1")
    assert outcome["result"] == "forwarded" and outcome["decision_seq"] == decision["seq"]
    assert outcome["upstream_seq"] == nos.seq_num  # the MsgSeqNum(34) actually on the exchange wire
    assert nos.seq_num != sent.seq_num  # re-sequenced: the exchange leg's own numbers
    assert decision["seq"] < outcome["seq"]
    # the identity came from the certificate, through the gateway's own TLS layer
    [accepted] = world.records("connection_accepted")
    assert accepted["identity"] == IDENTITY and accepted["tls"] in ("TLSv1.2", "TLSv1.3")


# -- 2. exchange -> client ------------------------------------------------------------------
async def test_execution_report_reaches_the_client_decided_and_recorded(world: World) -> None:
    venue = await world.exchange_up()
    client = await world.client()
    client.send(T.MT_NEW_ORDER_SINGLE, order("ORD-2"))
    await until(lambda: venue.app_of(b"D"), "the order at the venue")
    from_venue = venue.send(T.MT_EXECUTION_REPORT, execution_report("ORD-2", "E-2"))
    await until(lambda: client.app_of(b"8"), "the ExecutionReport at the client")

    # what the client's fake transport carried (decrypted): the report, re-sequenced on the client leg
    reports = [m for m in client.received if m.msg_type == b"8"]
    assert len(reports) == 1
    er = reports[0]
    assert (er.get(T.SenderCompID), er.get(T.TargetCompID)) == (b"FIXGW", b"ALGO1")
    assert er.get(T.ClOrdID) == b"ORD-2" and er.get(T.ExecID) == b"E-2" and er.get(T.ExecType) == b"0"
    [decision] = world.records("decision", direction="inbound", cl_ord_id="ORD-2")
    assert decision["decision"] == "allow" and decision["rules"] == ["inbound-trading"]
    assert decision["upstream_seq"] == from_venue.seq_num and decision["exec_type"] == "0"
    assert "client_online" not in decision


# -- 3. refused by policy -------------------------------------------------------------------
async def test_policy_refusal_is_answered_on_the_client_leg_and_never_reaches_the_exchange(world: World) -> None:
    await world.exchange_up()
    client = await world.client()
    client.send(T.MT_NEW_ORDER_SINGLE, order("ORD-BAD", symbol="BAD"))
    await until(lambda: client.app_of(b"8"), "the refusal")
    [er] = client.app_of(b"8")
    assert er.get(T.OrdStatus) == b"8" and er.get(T.ExecType) == b"8" and er.get(T.ClOrdID) == b"ORD-BAD"
    assert b"no-restricted-symbol" in (er.get(T.Text) or b"")
    [decision] = world.records("decision", direction="outbound", cl_ord_id="ORD-BAD")
    assert decision["decision"] == "deny" and decision["rules"] == ["no-restricted-symbol"]

    # a message that is not an order: BusinessMessageReject(j), NotAuthorized (no rule allows QuoteRequest
    # from this identity: default deny)
    rfq = client.send(T.MT_QUOTE_REQUEST, [(T.QuoteReqID, b"RFQ-1"), (NO_RELATED_SYM, b"1"),
                                                 (T.Symbol, b"INTC")])
    await until(lambda: client.app_of(b"j"), "the BusinessMessageReject")
    [bmr] = client.app_of(b"j")
    assert bmr.get(T.BusinessRejectReason) == b"%d" % T.BRR_NOT_AUTHORIZED
    assert bmr.get(T.RefSeqNum) == str(rfq.seq_num).encode() and bmr.get(T.RefMsgType) == b"R"
    [decision] = world.records("decision", direction="outbound", msg_type="R")
    assert decision["decision"] == "deny"

    await settle()
    assert app_frames(world.exchange_transport) == []  # neither crossed
    assert world.records("outcome") == []


# -- 4. exchange leg down -------------------------------------------------------------------
async def test_allowed_order_while_the_exchange_leg_is_down_gets_380_4(world: World) -> None:
    world.net.refuse = True  # the venue does not answer: the leg keeps retrying, never logged on
    world.route.upstream.start()
    await until(lambda: len(world.net.attempts) >= 2, "the exchange leg to retry")
    client = await world.client()
    sent = client.send(T.MT_NEW_ORDER_SINGLE, order("ORD-4"))
    await until(lambda: client.app_of(b"j"), "the BusinessMessageReject")

    [bmr] = client.app_of(b"j")
    assert bmr.get(T.BusinessRejectReason) == b"4"  # ApplicationNotAvailable
    assert bmr.get(T.RefSeqNum) == str(sent.seq_num).encode() and bmr.get(T.BusinessRejectRefID) == b"ORD-4"
    [decision] = world.records("decision", direction="outbound", cl_ord_id="ORD-4")
    assert decision["decision"] == "allow"  # policy allowed it: the gateway could not carry it
    [outcome] = world.records("outcome", cl_ord_id="ORD-4")
    assert outcome["result"] == "not_forwarded" and outcome["decision_seq"] == decision["seq"]
    assert "not logged on" in outcome["reason"] and "upstream_seq" not in outcome
    assert world.net.venues == []


# -- 5. client offline ----------------------------------------------------------------------
async def test_report_for_an_offline_client_is_decided_recorded_stored_then_resent_at_logon(world: World) -> None:
    venue = await world.exchange_up()
    store = MemoryStore()  # the client's own store: it keeps its sequence numbers across connections
    first = await world.client(store)
    first.send(T.MT_NEW_ORDER_SINGLE, order("ORD-5"))
    await until(lambda: venue.app_of(b"D"), "the order at the venue")
    first.logout("done for now")
    await until(lambda: first.closed and world.route.client is None, "the client to be gone")
    written_before = len(first.transport.written)

    venue.send(T.MT_EXECUTION_REPORT, execution_report("ORD-5", "E-5F", b"F"))
    await until(lambda: world.records("stored_for_offline_client"), "the report to be stored")
    [decision] = world.records("decision", direction="inbound", cl_ord_id="ORD-5")
    [stored] = world.records("stored_for_offline_client")
    assert decision["decision"] == "allow" and decision["client_online"] is False
    assert decision["seq"] < stored["seq"]  # decided and recorded first, then stored
    assert stored["cl_ord_id"] == "ORD-5" and stored["ord_status"] == "2"
    assert len(first.transport.written) == written_before and first.transport.writes_after_close == 0

    second = await world.client(store)  # the gateway's Logon is ahead: the client asks for the gap
    await until(lambda: second.app_of(b"8"), "the stored report at the next logon")
    [er] = second.app_of(b"8")
    assert er.get(T.ClOrdID) == b"ORD-5" and er.get(T.ExecID) == b"E-5F" and er.get(T.ExecType) == b"F"
    assert er.get(T.PossDupFlag) == b"Y" and er.seq_num == stored["client_seq"]
    assert len(world.records("decision", direction="inbound", cl_ord_id="ORD-5")) == 1  # decided once


# -- 6. backpressure ------------------------------------------------------------------------
async def test_slow_client_pauses_reading_on_the_exchange_leg_until_it_drains(
        tmp_path: Path, certs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = await make_world(tmp_path, certs, monkeypatch, max_buffered_bytes=2048)
    try:
        venue = await w.exchange_up()
        client = await w.client()
        raw = client.transport
        assert raw.get_write_buffer_limits()[1] == 2048  # the gateway's [gateway] max_buffered_bytes
        xchg = w.exchange_transport

        async def decided(n: int) -> None:
            await until(lambda: len(w.records("decision", direction="inbound")) == n or not xchg.reading,
                        f"report {n} to be decided")

        raw.stall()  # the client stops reading
        sent = 0
        while xchg.reading:
            assert sent < 50, "the exchange leg was never paused"
            venue.send(T.MT_EXECUTION_REPORT, execution_report(f"BP-{sent}", f"E-{sent}"))
            sent += 1
            await decided(sent)
        assert raw.get_write_buffer_size() > 2048 and xchg.reading_calls == ["pause"]

        # while paused, what the venue sends waits in the exchange leg's socket, undecided
        before = len(w.records("decision", direction="inbound"))
        venue.send(T.MT_EXECUTION_REPORT, execution_report("BP-held", "E-held"))
        await settle()
        assert xchg.inbound and len(w.records("decision", direction="inbound")) == before == sent

        raw.unstall()  # the client drains: the exchange leg reads again, everything arrives in order
        await until(lambda: len(client.app_of(b"8")) == sent + 1, "every report at the client")
        assert xchg.reading_calls == ["pause", "resume"] and xchg.reading
        assert [m.get(T.ClOrdID) for m in client.app_of(b"8")] == (
            [f"BP-{i}".encode() for i in range(sent)] + [b"BP-held"])
    finally:
        await close_world(w)


async def test_slow_exchange_pauses_reading_on_the_client_leg_until_it_drains(world: World) -> None:
    await world.exchange_up()
    client = await world.client()
    xchg = world.exchange_transport
    xchg.set_write_buffer_limits(high=4096)  # the exchange leg's socket buffer (the gateway keeps asyncio's default)
    raw = client.transport

    async def forwarded(n: int) -> None:
        await until(lambda: len(world.records("outcome")) == n or not raw.reading, f"order {n} to be forwarded")

    xchg.stall()  # the venue stops reading
    sent = 0
    while raw.reading:
        assert sent < 100, "the client leg was never paused"
        client.send(T.MT_NEW_ORDER_SINGLE, order(f"SX-{sent}"))
        sent += 1
        await forwarded(sent)
    assert xchg.get_write_buffer_size() > 4096 and raw.reading_calls == ["pause"]

    client.send(T.MT_NEW_ORDER_SINGLE, order("SX-held"))
    await settle()
    assert raw.inbound and world.records("decision", direction="outbound", cl_ord_id="SX-held") == []

    xchg.unstall()
    venue = world.venue
    await until(lambda: len(venue.app_of(b"D")) == sent + 1, "every order at the venue")
    assert raw.reading_calls == ["pause", "resume"] and raw.reading
    assert [m.get(T.ClOrdID) for m in venue.app_of(b"D")] == [f"SX-{i}".encode() for i in range(sent)] + [b"SX-held"]


# -- the loop writer: records written once per loop turn, nothing crosses before its own ---------
async def test_with_the_loop_writer_no_message_leaves_before_its_record_and_store_write_and_each_is_one_write(
        world: World) -> None:
    loop = asyncio.get_running_loop()
    writer = world.gw.audit.start_loop_writer(world.gw.gate.on_written, world.gw.gate.on_failed, loop.call_soon,
                                              loop.call_later)  # wired as Gateway.start wires it
    venue = await world.exchange_up()
    client = await world.client()
    checked: list[bytes] = []
    writes: list[int] = []  # application messages per write
    assert world.route.upstream.protocol is not None and world.route.upstream.protocol.session is not None
    assert world.route.client is not None and world.route.client.session is not None
    up_store, client_store = world.route.upstream.protocol.session.store, world.route.client.session.store
    assert isinstance(up_store, FileStore) and isinstance(client_store, FileStore)

    def watch(transport: Any, direction: str, store: FileStore) -> None:
        """At the moment a leg writes, the decision record of every application message in it is on disk,
        and so is the message itself, in the leg's store (a resend could repeat it)."""
        write = transport.write

        def checking(data: bytes) -> None:
            n = 0
            for m in frames(data):
                if not m.is_admin():
                    cl = (m.get(T.ClOrdID) or b"").decode()
                    assert world.records("decision", direction=direction, cl_ord_id=cl), f"{cl} left unrecorded"
                    assert m.raw in (store.folder / "messages.log").read_bytes(), f"{cl} left unstored"
                    checked.append(m.msg_type)
                    n += 1
            if n:
                writes.append(n)
            write(data)

        transport.write = checking

    watch(world.exchange_transport, "outbound", up_store)
    watch(client.protocol.transport, "inbound", client_store)  # the TLS layer: plaintext, before encryption
    batches = writer.batches
    store_writes = up_store.log_writes, client_store.log_writes
    for i in range(5):  # one turn of the loop: five orders, their records written together
        client.send(T.MT_NEW_ORDER_SINGLE, order(f"LW-{i}"))
    await until(lambda: len(venue.app_of(b"D")) == 5, "every order at the venue")
    for i in range(5):
        venue.send(T.MT_EXECUTION_REPORT, execution_report(f"LW-{i}", f"E-LW-{i}"))
    await until(lambda: len(client.app_of(b"8")) == 5, "every report at the client")
    assert checked.count(b"D") == 5 and checked.count(b"8") == 5
    assert writes == [5, 5]  # the forwards a write released left together, and so did the deliveries
    # ... and each leg's store kept them with one write
    assert (up_store.log_writes - store_writes[0], client_store.log_writes - store_writes[1]) == (1, 1)
    assert writer.batches - batches < 20  # 5 orders + 5 reports = 10 decision and 5 outcome records


# -- shutdown ---------------------------------------------------------------------------------
async def test_shutdown_without_grace_still_records_every_session_ending(tmp_path: Path, certs: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With no grace left the connections are aborted; their logout records are written before the
    audit log closes (they used to fail with "audit log is closed" and start a false outage)."""
    w = await make_world(tmp_path, certs, monkeypatch)
    await w.exchange_up()
    await w.client()
    await w.gw.stop(grace=0)
    kinds = [r["kind"] for r in w.audit()]
    assert "logout" in kinds and "upstream_logout" in kinds, kinds
    assert kinds.index("logout") < kinds.index("gateway_stopped")
    assert w.gw.gate.outage is None
