"""Handshake floods (issue 15 item 9): one source connecting and closing hundreds of times a second used
to drain the one shared handshake bucket and lock everybody else out.  Now each source has its own
bucket, charged when its ClientHello arrives, and part of the shared bucket is kept for sources a
Logon completed from.

The rules are pure (``gateway/core/admission.py``) and tested as such; then one flood through a
running gateway, bounded in count and time, loopback only.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.admission import Admission
from tests import harness
from tests.harness import FixClient, client_ssl

NOS = [(21, "1"), (38, "10"), (40, "2"), (44, "10"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")]
ATTACKER = "127.0.0.50"


# --- the rules, pure -------------------------------------------------------------------------------

def test_a_noisy_source_drains_only_its_own_bucket() -> None:
    a = Admission(rate=100, burst=100, source_rate=5, source_burst=10, reserve=0.25)
    refused = [a.hello("10.0.0.66", 0.0) for _ in range(200)]
    assert refused[:10] == [None] * 10 and all("per source" in str(r) for r in refused[10:])
    assert all(a.hello(f"10.0.1.{i}", 0.0) is None for i in range(50))  # the shared bucket barely moved
    assert a.hello("10.0.0.66", 0.2) is None  # its own bucket refills at its own rate: 1 token per 200 ms


def test_connections_that_send_nothing_spend_no_handshake_token() -> None:
    a = Admission(max_total=10_000, max_per_source=10_000, rate=1, burst=1, source_rate=1, source_burst=1, reserve=0)
    for _ in range(1000):  # accept and close: the caps count, the buckets do not
        assert a.admit("10.0.0.66", 0.0) is None
        a.release("10.0.0.66")
    assert a.hello("10.0.0.7", 0.0) is None


def test_the_reserve_is_kept_for_sources_with_a_good_record() -> None:
    """Many new addresses, each within its own rate, exhaust the shared bucket down to the reserve; a
    source a Logon completed from still gets in, a new one does not."""
    a = Admission(rate=10, burst=40, source_rate=5, source_burst=10, reserve=0.25)
    a.good("10.0.9.9", 0.0)
    admitted = sum(a.hello(f"10.1.{i // 200}.{i % 200}", 0.0) is None for i in range(1000))
    assert admitted == 30  # 40 - the reserve of 10
    assert "good record" in str(a.hello("10.2.0.1", 0.0))
    assert [a.hello("10.0.9.9", 0.0) for _ in range(10)] == [None] * 10
    assert a.hello("10.0.9.9", 0.0) is not None  # the reserve is spent too: nothing is unlimited
    a.good("10.0.9.9", 1.0)
    assert not a.has_good_record("10.0.9.9", 1.0 + 24 * 3600 + 1)  # a good record ages out


def test_an_ipv6_host_cannot_escape_its_bucket_by_changing_address() -> None:
    a = Admission(rate=1000, burst=1000, source_rate=1, source_burst=3)
    results = [a.hello(f"2001:db8:1:2::{i:x}", 0.0) for i in range(1, 10)]  # one /64
    assert results[:3] == [None] * 3 and all(r is not None for r in results[3:])
    assert a.hello("2001:db8:1:3::1", 0.0) is None  # another /64 is another source


# --- through the running gateway ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, int, FixClient]]:
    tmp = tmp_path_factory.mktemp("flood")
    certs = harness.make_pki(tmp / "certs")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, reset_on_logon=True,
                                 gateway_extra="handshake_rate = 50\nhandshake_burst = 50\n"
                                               "handshake_rate_per_source = 5\nhandshake_burst_per_source = 10\n")
    with harness.gateway_and_sim(tmp, cfg, gw_port, sim_port):
        bystander = FixClient(gw_port, client_ssl(certs, "algo2"), "ALGO2")
        bystander.logon(reset=True)
        yield tmp, certs, gw_port, bystander


def client_hello() -> bytes:
    """The first flight of a TLS client without a certificate (what the attacker sends, ready-made)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_one_source_flooding_handshakes_does_not_lock_out_other_clients(
        gw: tuple[Path, Path, int, FixClient]) -> None:
    tmp, certs, port, bystander = gw
    hello = client_hello()
    stop = threading.Event()
    attempts = [0]

    def flood() -> None:  # bounded: at most 3000 connections or until stopped (<= 10 s)
        deadline = time.monotonic() + 10
        while not stop.is_set() and attempts[0] < 3000 and time.monotonic() < deadline:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2, source_address=(ATTACKER, 0))
                s.sendall(hello)
                s.close()
                attempts[0] += 1
            except OSError:
                pass

    attacker = threading.Thread(target=flood, daemon=True)
    t0 = time.monotonic()
    attacker.start()
    logons = 0
    try:
        deadline = time.monotonic() + 5
        while attempts[0] < 200:  # the flood is on before the first logon
            assert time.monotonic() < deadline, "the flood did not start"
            time.sleep(0.01)
        for i in range(10):  # ten other clients, each from its own address (one address would be held
            try:              # to its own per-source burst of 10 with the bystander's handshake counted)
                c = FixClient(port, client_ssl(certs, "algo1"), "ALGO1", source=f"127.0.0.{40 + i}")
                c.logon(reset=True)
                c.send("5", [])
                c.recv_type(b"5")
                c.close()
                logons += 1
            except (OSError, ssl.SSLError, ConnectionError, TimeoutError):
                pass
        flooded = attempts[0] / (time.monotonic() - t0)
    finally:
        stop.set()
        attacker.join(15)
    print(f"flood: {attempts[0]} connections, {flooded:.0f}/s")
    assert flooded > 150, f"{flooded:.0f} connections/s: not a flood (the shared rate here is 50/s)"
    assert logons == 10, f"{10 - logons} of 10 logons refused during the flood"
    audit = tmp / "state" / "audit"
    deadline = time.monotonic() + 5
    while True:  # refusals are audited in aggregate, once a second
        recs = harness.audit_records(audit)
        agg = [r for r in recs if r["kind"] == "connections_refused" and ATTACKER in json.dumps(r)]
        if agg and "per source" in json.dumps(agg):
            break
        assert time.monotonic() < deadline, "no aggregate record of the refused handshakes"
        time.sleep(0.1)
    one_each = [r for r in recs if r["kind"] == "tls_refused" and str(r.get("peer", "")).startswith(ATTACKER)]
    assert len(one_each) < attempts[0] / 3, "a record per refused connection: the flood became an audit flood"
    bystander.send("D", [(11, "AFTER-FLOOD"), *NOS])
    assert bystander.recv_type(b"8").get(150) == b"0"
