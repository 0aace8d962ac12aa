"""Integers beyond every bound, end to end through a running gateway (real TLS, real processes).

A sequence number the session store cannot hold, or an integer of thousands
of digits, used to raise out of the session core: the route's store became
unwritable (later orders consumed without an audit record, never delivered)
or the connection died with a traceback.  Now each gets a precise FIX
answer, an audit record, and the gateway goes on serving.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.core.fix import codec
from gateway.core.fix.utctime import format_utc_timestamp
from tests import harness
from tests.harness import FixClient, client_ssl

MAX_SEQ_NUM = 2**31 - 1
NOS = [(21, "1"), (38, "100"), (40, "2"), (44, "10.25"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")]


@dataclass
class Gateway:
    tmp: Path
    certs: Path
    port: int

    def audit(self) -> list[dict[str, object]]:
        return harness.audit_records(self.tmp / "state" / "audit")

    def log(self) -> str:
        return (self.tmp / "gw.log").read_text(errors="replace")

    def client(self, name: str, comp: str) -> FixClient:
        return FixClient(self.port, client_ssl(self.certs, name), comp)

    def audited(self, since: int, kind: str, match: Callable[[dict[str, object]], bool],
                timeout: float = 5.0) -> dict[str, object]:
        """The first record of ``kind`` after the first ``since`` records that ``match`` accepts."""
        deadline = time.monotonic() + timeout
        while True:
            for r in self.audit()[since:]:
                if r["kind"] == kind and match(r):
                    return r
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching {kind!r} audit record within {timeout} s")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("bounds")
    certs = harness.make_pki(tmp / "certs")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port)
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp / "sim.log", sim_port)
    gw: harness.Proc | None = None
    try:
        gw = harness.start(["run", "--config", str(cfg)], tmp / "gw.log", gw_port)
        g = Gateway(tmp, certs, gw_port)
        deadline = time.monotonic() + 15
        while sum(r["kind"] == "upstream_logon" for r in g.audit()) < 2:
            assert time.monotonic() < deadline, "the exchange legs did not log on"
            time.sleep(0.05)
        yield g
    finally:
        if gw is not None:
            gw.stop()
        sim.stop()


def order_roundtrip(c: FixClient, cl_ord_id: str) -> list[bytes | None]:
    c.send("D", [(11, cl_ord_id), *NOS])
    reports = [c.recv_type(b"8"), c.recv_type(b"8")]
    assert [r.get(11) for r in reports] == [cl_ord_id.encode()] * 2
    return [r.get(150) for r in reports]


def test_new_seq_no_of_2_to_the_64_is_rejected_and_the_route_still_trades(gateway: Gateway) -> None:
    since = len(gateway.audit())
    c = gateway.client("algo1", "ALGO1")
    c.logon(reset=True)
    # SequenceReset-Reset: its own MsgSeqNum(34) is not checked and a rejected one does not consume it
    c.send("4", [(36, str(2**64))], seq=c.seq)
    reject = c.recv_type(b"3")
    assert (reject.get(373), reject.get(371), reject.get(45)) == (b"5", b"36", b"%d" % c.seq)
    assert b"b'" not in (reject.get(58) or b"")
    assert order_roundtrip(c, "BOUND1") == [b"0", b"F"]  # the route's store is still writable
    record = gateway.audited(since, "session_reject", lambda r: r.get("tag") == 36)
    assert record["reason"] == 5 and record["msg_type"] == "4"
    detail = str(record["detail"])
    assert "NewSeqNo(36)" in detail and str(MAX_SEQ_NUM) in detail and "b'" not in detail
    assert "Traceback" not in gateway.log()
    c.close()


def test_msg_seq_num_of_5000_digits_logs_out_and_the_gateway_serves_the_next_connection(gateway: Gateway) -> None:
    since = len(gateway.audit())
    c = gateway.client("algo2", "ALGO2")
    c.logon(reset=True)
    header = [(34, b"9" * 5000), (49, b"ALGO2"), (52, format_utc_timestamp(time.time())), (56, b"FIXGW")]
    body = [(11, b"HUGE1"), *((t, v.encode()) for t, v in NOS)]
    c.send_raw(codec.encode(b"FIX.4.4", [(35, b"D"), *header, *body]))
    logout = c.recv_type(b"5")
    text = (logout.get(58) or b"").decode("latin-1")
    assert "MsgSeqNum(34)" in text and str(MAX_SEQ_NUM) in text and "b'" not in text and len(text) < 200
    assert c.recv(timeout=10) is None  # and the gateway closed the connection
    c.close()
    gateway.audited(since, "logout", lambda r: "MsgSeqNum(34)" in str(r.get("reason")))
    again = gateway.client("algo2", "ALGO2")
    again.logon(reset=True)
    assert order_roundtrip(again, "BOUND2") == [b"0", b"F"]
    assert not any(r.get("cl_ord_id") == "HUGE1" for r in gateway.audit()[since:])  # nothing of it went on
    assert "Traceback" not in gateway.log()
    again.close()
