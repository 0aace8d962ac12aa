"""Resource limits: connections in total and per source, handshake rate, logon timeout — and a flood
of connections that never log on, while a logged-on session keeps trading."""

from __future__ import annotations

import os
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.admission import Admission
from tests import harness
from tests.harness import FixClient, client_ssl

NOS = [(21, "1"), (38, "10"), (40, "2"), (44, "10"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")]


# --- the admission rules, pure -------------------------------------------------------

def test_admission_caps_total_and_per_source_and_releases() -> None:
    a = Admission(max_total=3, max_per_source=2, rate=1000, burst=1000)
    assert a.admit("10.0.0.1", 0.0) is None and a.admit("10.0.0.1", 0.0) is None
    assert "per-source limit" in str(a.admit("10.0.0.1", 0.0))
    assert a.admit("10.0.0.2", 0.0) is None
    assert "connection limit" in str(a.admit("10.0.0.3", 0.0))
    a.release("10.0.0.1")
    assert a.admit("10.0.0.3", 0.0) is None
    assert sorted(n for _, _, n in a.drain()) == [1, 1] and a.drain() == []


def test_handshake_rate_refills_over_time() -> None:
    a = Admission(max_total=100, max_per_source=100, rate=10, burst=2, reserve=0)  # charged per ClientHello
    assert a.hello("s", 0.0) is None and a.hello("s", 0.0) is None
    assert "handshake rate" in str(a.hello("s", 0.0))
    assert a.hello("s", 0.15) is None  # 1.5 tokens back after 150 ms at 10/s


# --- through the running gateway -----------------------------------------------------

@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, int, FixClient]]:
    tmp = tmp_path_factory.mktemp("limits")
    certs = harness.make_pki(tmp / "certs")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, reset_on_logon=True, clients=("ALGO1",),
                                 gateway_extra="max_connections = 40\nmax_connections_per_source = 5\n"
                                               "handshake_rate = 100\nhandshake_burst = 40\nlogon_timeout = 1.0")
    with harness.gateway_and_sim(tmp, cfg, gw_port, sim_port):
        c = FixClient(gw_port, client_ssl(certs, "algo1"), "ALGO1")
        c.logon(reset=True)
        yield tmp, certs, gw_port, c


def order(c: FixClient, cl: str) -> float:
    t0 = time.perf_counter()
    c.send("D", [(11, cl), *NOS])
    assert c.recv_type(b"8").get(150) == b"0"
    rtt = time.perf_counter() - t0
    assert c.recv_type(b"8").get(150) == b"F"
    return rtt


def admitted(port: int, source: str) -> socket.socket:
    """A connection the gateway has admitted, and shown it: admission comes at accept, before TLS, so
    an answer to our ClientHello proves it.  The handshake is never finished (the slot stays held)."""
    sock = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    out = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), out)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    sock.sendall(out.read())  # the ClientHello
    sock.settimeout(10)
    assert sock.recv(1), f"the gateway did not answer a ClientHello from {source}"
    return sock


def closed_at_once(sock: socket.socket, within: float = 3.0) -> bool:
    """True when the gateway closed the connection (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(10) == b""
    except TimeoutError:
        return False
    except (ConnectionResetError, ssl.SSLError, OSError):
        return True


def test_per_source_limit_refuses_before_tls_and_other_sources_still_connect(
        gw: tuple[Path, Path, int, FixClient]) -> None:
    tmp, certs, port, c = gw
    held = [admitted(port, "127.0.0.5") for _ in range(5)]  # the source's limit, each one admitted
    extra = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.5", 0))
    assert closed_at_once(extra, within=1)  # refused before TLS: no 10 s handshake wait
    other = FixClient(port, client_ssl(certs, "algo2"), "ALGO2", source="127.0.0.6")  # TLS goes through
    other.send("A", [(98, "0"), (108, "30")])
    assert other.recv() is None  # (ALGO2 has no session here: refused at Logon, after TLS)
    for s in held:
        s.close()
    harness.wait_record(tmp / "state" / "audit", lambda r: r["kind"] == "connections_refused"
                        and "per-source limit" in str(r["by"]) and "127.0.0.5" in str(r["by"]),
                        "an aggregate connections_refused record for the refused connection from 127.0.0.5")
    order(c, "AFTER-LIMIT")


def test_connections_that_never_log_on_are_closed_after_the_logon_timeout(
        gw: tuple[Path, Path, int, FixClient]) -> None:
    _, certs, port, c = gw
    raw = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.7", 0))
    tls_sock = client_ssl(certs, "algo1").wrap_socket(raw, server_hostname="127.0.0.1")
    t0 = time.monotonic()
    assert closed_at_once(tls_sock, within=4)  # logon_timeout = 1 s
    assert 0.8 < time.monotonic() - t0 < 3
    order(c, "AFTER-SLOW")


def test_a_flood_of_connections_and_garbage_leaves_the_logged_on_session_trading(
        gw: tuple[Path, Path, int, FixClient]) -> None:
    """Loose by design (shared machines are noisy): bench/ reports the ratio; here the session must keep
    trading with a p50 within 10x of its quiet p50 while 6 threads connect, handshake or not, and spray."""
    _, certs, port, c = gw
    quiet = [order(c, f"Q{i}") for i in range(60)]
    stop = threading.Event()
    attempts = [0]

    def flood(n: int) -> None:
        ctx = client_ssl(certs, "algo1")
        while not stop.is_set():
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=2,
                                               source_address=(f"127.0.1.{n}", 0))
                attempts[0] += 1
                if n % 2:
                    raw.sendall(os.urandom(512))  # garbage instead of a TLS ClientHello
                    raw.close()
                else:
                    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")  # handshake, then nothing
                    time.sleep(0.05)  # pacing the flood (an idle connection held a moment), no event awaited
                    s.close()
            except (OSError, ssl.SSLError):
                pass

    threads = [threading.Thread(target=flood, args=(n,), daemon=True) for n in range(1, 7)]
    for t in threads:
        t.start()
    try:
        harness.wait_for(lambda: attempts[0] >= 12, "the flood to get going (12 connection attempts)")
        flooded = [order(c, f"F{i}") for i in range(60)]
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert attempts[0] > 20
    assert statistics.median(flooded) < 10 * statistics.median(quiet) + 0.005


# --- the refusal budget's keys are checked before anything starts -----------------------------------

@pytest.mark.parametrize(("key", "value"), [("refusal_rate", "0"), ("refusal_burst", "0.5")])
def test_a_refusal_budget_that_could_never_refuse_is_a_config_error_naming_the_key(
        tmp_path: Path, key: str, value: str) -> None:
    import subprocess
    import sys

    certs = harness.make_pki(tmp_path / "certs")
    cfg = harness.trading_config(tmp_path, certs, harness.free_port(), harness.free_port(),
                                 gateway_extra=f"{key} = {value}")
    r = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=30, cwd=harness.ROOT)
    assert r.returncode == 2, r.stderr
    assert f"gateway.{key}" in r.stderr and str(cfg) in r.stderr and "Traceback" not in r.stderr
