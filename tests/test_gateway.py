"""The gateway as a real process between real clients and the exchange simulator."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.edges import pki
from tests import harness
from tests.harness import FixClient, client_ssl

NOS = [(11, "C1"), (21, "1"), (38, "100"), (40, "2"), (44, "10.25"), (54, "1"), (55, "INTC"),
       (60, "20240101-00:00:00")]


@dataclass
class Env:
    tmp: Path
    certs: Path
    cfg: Path
    gw_port: int
    sim_port: int
    gw: harness.Proc | None = None
    sim: harness.Proc | None = None

    def start_sim(self) -> None:
        self.sim = harness.start(["exchange-sim", "--config", str(self.cfg)], self.tmp / "sim.log", self.sim_port)

    def start_gw(self) -> None:
        self.gw = harness.start(["run", "--config", str(self.cfg)], self.tmp / "gw.log", self.gw_port)

    def audit(self) -> list[dict[str, object]]:
        return harness.audit_records(self.tmp / "state" / "audit")

    def client(self, name: str = "algo1", comp: str = "ALGO1") -> FixClient:
        return FixClient(self.gw_port, client_ssl(self.certs, name), comp)


def make_env(tmp: Path, **kw: object) -> Env:
    certs = harness.make_pki(tmp / "certs")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, **kw)  # type: ignore[arg-type]
    return Env(tmp, certs, cfg, gw_port, sim_port)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = make_env(tmp_path)
    e.start_sim()
    e.start_gw()
    yield e
    for p in (e.gw, e.sim):
        if p is not None:
            p.stop()


def wait_upstream(e: Env, n: int = 2, timeout: float = 20.0) -> None:
    """Until ``n`` exchange legs logged on: their ``upstream_logon`` audit records."""
    def logged_on() -> bool:
        return sum(r["kind"] == "upstream_logon" for r in harness.read_records(e.tmp / "state" / "audit")) >= n

    harness.wait_for(logged_on, f"{n} upstream_logon audit records (exchange legs logged on)", timeout, proc=e.gw)


def order_roundtrip(c: FixClient, cl_ord_id: str) -> list[bytes]:
    c.send("D", [(11, cl_ord_id), *NOS[1:]])
    new = c.recv_type(b"8")
    fill = c.recv_type(b"8")
    assert new.get(11) == cl_ord_id.encode() and fill.get(11) == cl_ord_id.encode()
    return [new.get(150) or b"", fill.get(150) or b""]


def test_orders_cross_both_legs_and_come_back_filled(env: Env) -> None:
    wait_upstream(env)
    c = env.client()
    assert c.logon().get(49) == b"FIXGW"
    assert order_roundtrip(c, "A1") == [b"0", b"F"]
    c.send("5", [])
    assert c.recv_type(b"5") is not None
    decisions = [r for r in env.audit() if r["kind"] == "decision" and r["direction"] == "outbound"]
    assert decisions[-1]["decision"] == "allow" and decisions[-1]["cl_ord_id"] == "A1"
    assert decisions[-1]["client_seq"] == 2
    # what happened after the decision: its own record, naming the exchange leg's MsgSeqNum
    outcome = [r for r in env.audit() if r["kind"] == "outcome" and r["cl_ord_id"] == "A1"]
    assert outcome and outcome[-1]["result"] == "forwarded" and isinstance(outcome[-1]["upstream_seq"], int)
    assert outcome[-1]["decision_seq"] == decisions[-1]["seq"]
    assert decisions[-1]["decide_us"] >= 0
    inbound = [r for r in env.audit() if r["kind"] == "decision" and r["direction"] == "inbound"]
    assert [r["exec_type"] for r in inbound[-2:]] == ["0", "F"]  # both reports audited before delivery


def test_client_without_certificate_is_refused_at_the_handshake(env: Env) -> None:
    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
        c = FixClient(env.gw_port, client_ssl(env.certs, None), "ALGO1")
        c.logon()


def test_certificate_from_another_ca_is_refused_at_the_handshake(env: Env, tmp_path: Path) -> None:
    other = tmp_path / "other-ca"
    pki.init(other)
    pki.issue(other, "algo1")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(env.certs / "ca.crt"))
    ctx.load_cert_chain(str(other / "algo1.crt"), str(other / "algo1.key"))
    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
        c = FixClient(env.gw_port, ctx, "ALGO1")
        c.logon()
    harness.wait_record(env.tmp / "state" / "audit", lambda r: r["kind"] == "tls_refused",
                        "a tls_refused audit record for the foreign CA's certificate")


def test_plaintext_client_gets_nothing(env: Env) -> None:
    c = FixClient(env.gw_port, None, "ALGO1")
    c.send("A", [(98, "0"), (108, "30")])
    with pytest.raises((ConnectionError, TimeoutError, AssertionError)):
        assert c.recv(timeout=3) is None
        raise ConnectionError


def test_identity_cannot_log_on_with_a_compid_it_does_not_own(env: Env) -> None:
    c = env.client("algo1", "ALGO2")
    c.send("A", [(98, "0"), (108, "30")])
    assert c.recv() is None  # silent close
    harness.wait_record(env.tmp / "state" / "audit",
                        lambda r: r["kind"] == "logon_refused" and "ALGO2" in str(r["reason"]),
                        "a logon_refused audit record naming ALGO2")


def test_garbage_is_dropped_without_harming_other_sessions(env: Env) -> None:
    wait_upstream(env)
    good = env.client()
    good.logon()
    noisy = env.client("algo2", "ALGO2")
    noisy.logon()
    noisy.send_raw(b"\x00\xffnot fix at all 8=FIX.4.4\x019=5\x0135=D\x01garbage")
    assert order_roundtrip(good, "G1") == [b"0", b"F"]
    # the noisy session itself survives too: garbled frames consume no sequence number
    assert order_roundtrip(noisy, "N1") == [b"0", b"F"]
    # garbage before Logon: that connection is closed, the others go on
    raw = socket.create_connection(("127.0.0.1", env.gw_port))
    tls_sock = client_ssl(env.certs, "algo1").wrap_socket(raw, server_hostname="127.0.0.1")
    tls_sock.sendall(b"GET / HTTP/1.1\r\n\r\n" * 10 + b"8=FIX.4.4\x019=999999999\x01")
    tls_sock.settimeout(10)
    try:
        assert tls_sock.recv(100) == b""
    except (ConnectionResetError, ssl.SSLError):
        pass
    assert order_roundtrip(good, "G2") == [b"0", b"F"]
    harness.wait_record(env.tmp / "state" / "audit", lambda r: r["kind"] == "frame_dropped",
                        "a frame_dropped audit record for the garbage")


def test_duplicate_logon_is_refused_and_the_first_session_is_untouched(env: Env) -> None:
    wait_upstream(env)
    first = env.client()
    first.logon()
    second = env.client()
    second.send("A", [(98, "0"), (108, "30")])
    assert second.recv() is None
    assert order_roundtrip(first, "D1") == [b"0", b"F"]


def test_exchange_leg_down_answers_orders_with_business_reject(tmp_path: Path) -> None:
    e = make_env(tmp_path)
    e.start_gw()  # no simulator running
    try:
        c = e.client()
        c.logon()
        c.send("D", NOS)
        bmr = c.recv_type(b"j")
        assert bmr.get(380) == b"4" and bmr.get(45) == b"2" and b"not logged on" in (bmr.get(58) or b"")
    finally:
        assert e.gw is not None
        e.gw.stop()


def test_sigterm_logs_every_session_out_and_exits_cleanly(env: Env) -> None:
    wait_upstream(env)
    c = env.client()
    c.logon()
    assert env.gw is not None
    env.gw.proc.terminate()
    logout = c.recv_type(b"5")
    assert b"shutting down" in (logout.get(58) or b"")
    c.send("5", [])
    assert env.gw.proc.wait(10) == 0


def test_sigkill_and_restart_resume_sequence_numbers_on_both_legs(env: Env) -> None:
    wait_upstream(env)
    c = env.client()
    c.logon()
    for i in range(3):
        order_roundtrip(c, f"K{i}")
    # client sent 1 (logon) + 3 orders; gateway sent logon + 6 execution reports
    assert env.gw is not None
    env.gw.kill()
    c.close()
    env.start_gw()
    wait_upstream(env, n=4)  # both legs logged on again, without a sequence reset
    c2 = env.client()
    c2.seq = 5
    reply = c2.logon()
    assert reply.get(34) == b"8"  # gateway's client leg resumed after 7
    # a ResendRequest spanning the restart is served from the store
    c2.send("2", [(7, "2"), (16, "0")])
    resent = [c2.recv_type(b"8") for _ in range(6)]
    assert [m.get(43) for m in resent] == [b"Y"] * 6
    assert [m.get(34) for m in resent] == [b"2", b"3", b"4", b"5", b"6", b"7"]
    gap_fill = c2.recv_type(b"4")  # our Logon (8) is session-level: gap-filled, not resent
    assert (gap_fill.get(34), gap_fill.get(36), gap_fill.get(123)) == (b"8", b"9", b"Y")
    # the exchange leg resumed too: a sequence reset there would have been refused by the venue
    assert order_roundtrip(c2, "AFTER") == [b"0", b"F"]
    resets = [r for r in env.audit() if r["kind"] == "upstream_logon_refused"]
    assert resets == []


def test_exchange_leg_over_tls_verifies_the_venue_and_carries_orders(tmp_path: Path) -> None:
    e = make_env(tmp_path, upstream_tls=True)
    e.start_sim()
    e.start_gw()
    try:
        wait_upstream(e)
        c = e.client()
        c.logon()
        assert order_roundtrip(c, "TLS1") == [b"0", b"F"]
    finally:
        for p in (e.gw, e.sim):
            if p is not None:
                p.stop()


def test_exchange_leg_refuses_a_venue_certificate_from_another_ca(tmp_path: Path) -> None:
    e = make_env(tmp_path, upstream_tls=True)
    other = tmp_path / "venue-ca"
    pki.init(other)  # the simulator presents a certificate the gateway's CA did not sign
    head, sim = e.cfg.read_text().split("[exchange_sim]", 1)
    sim = sim.replace(f'"{e.certs}/gateway.', f'"{other}/gateway.')
    e.cfg.write_text(head + "[exchange_sim]" + sim)
    e.start_sim()
    e.start_gw()
    try:
        c = e.client()
        c.logon()
        c.send("D", NOS)
        assert c.recv_type(b"j").get(380) == b"4"  # exchange leg never came up
        assert "upstream_connect_failed" in (tmp_path / "gw.log").read_text()
    finally:
        for p in (e.gw, e.sim):
            if p is not None:
                p.stop()


@pytest.mark.parametrize("pin_matches", [True, False])
def test_exchange_leg_pin_of_the_venue_certificate(tmp_path: Path, pin_matches: bool) -> None:
    import hashlib

    from cryptography import x509 as _x509
    from cryptography.hazmat.primitives import serialization

    certs = harness.make_pki(tmp_path / "certs")
    der = _x509.load_pem_x509_certificate((certs / "gateway.crt").read_bytes()).public_bytes(
        serialization.Encoding.DER)
    pin = hashlib.sha256(der).hexdigest() if pin_matches else "ab" * 32
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, upstream_tls=True,
                                 upstream_extra=f'pin_sha256 = ["{pin}"]')
    e = Env(tmp_path, certs, cfg, gw_port, sim_port)
    e.start_sim()
    e.start_gw()
    try:
        c = e.client()
        c.logon()
        if pin_matches:
            wait_upstream(e)
            assert order_roundtrip(c, "PIN1") == [b"0", b"F"]
        else:
            c.send("D", NOS)
            assert c.recv_type(b"j").get(380) == b"4"
            harness.wait_record(tmp_path / "state" / "audit", lambda r: r["kind"] == "upstream_pin_mismatch",
                                "an upstream_pin_mismatch audit record")
    finally:
        for p in (e.gw, e.sim):
            if p is not None:
                p.stop()
