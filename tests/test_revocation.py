"""Revocation and rotation without restart, through the running gateway."""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from gateway.edges import pki
from tests import harness
from tests.harness import FixClient, client_ssl

NOS = [(21, "1"), (38, "100"), (40, "2"), (44, "10.25"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")]
NAMES = ["algo1", "victim1", "victim2", "victim3", "shortlived"]


@dataclass
class World:
    tmp: Path
    certs: Path
    gw_port: int
    gw: harness.Proc
    admin_port: int = 0

    def wait_record(self, pred: Callable[[dict[str, object]], object], what: str) -> dict[str, object]:
        return harness.wait_record(self.tmp / "state" / "audit", pred, what, proc=self.gw)

    def client(self, name: str) -> FixClient:
        return FixClient(self.gw_port, client_ssl(self.certs, name), name.upper())


def make_world(tmp: Path, interval: float) -> World:
    certs = harness.make_pki(tmp / "certs")
    for n in NAMES[1:4]:
        pki.issue(certs, n)
    pki.issue(certs, "shortlived", not_before=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2),
              valid_for=dt.timedelta(seconds=8))
    pki.revoke(certs, [])  # an empty CRL to start with
    (tmp / "denylist").write_text("# identities refused at once\n")
    identities = "".join(f'[[identities]]\nid = "spiffe://fixgw.dev/client/{n}"\ncomp_ids = ["{n.upper()}"]\n'
                         for n in NAMES)
    gw_port, sim_port, admin_port = harness.free_port(), harness.free_port(), harness.free_port()
    extra = (f'[revocation]\ncrl = "{certs}/ca.crl"\ndenylist = "{tmp}/denylist"\ncheck_interval = {interval}\n'
             f'[admin]\nport = {admin_port}\n')
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, clients=tuple(n.upper() for n in NAMES),
                                 identities=identities, extra=extra, reset_on_logon=True)
    gw = harness.start(["run", "--config", str(cfg)], tmp / "gw.log", gw_port)
    return World(tmp, certs, gw_port, gw, admin_port)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("revocation"), 0.25)
    by = w.client("algo1")
    by.logon()
    w.bystander = by  # type: ignore[attr-defined]
    yield w
    w.gw.stop()


@pytest.fixture(autouse=True)
def bystander_untouched(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "world" in request.fixturenames:
        w: World = request.getfixturevalue("world")
        w.bystander.send("1", [(112, "still-here")])  # type: ignore[attr-defined]
        assert w.bystander.recv_type(b"0").get(112) == b"still-here"  # type: ignore[attr-defined]


def cut_within(c: FixClient, seconds: float) -> tuple[float, bytes]:
    """Seconds until the gateway logged the session out and closed it, and the Logout text."""
    t0 = time.monotonic()
    logout = c.recv_type(b"5", timeout=seconds + 5)
    assert c.recv(timeout=5) is None  # closed right after the Logout
    return time.monotonic() - t0, logout.get(58) or b""


def test_crl_revocation_cuts_a_live_session_within_one_second(world: World) -> None:
    c = world.client("victim1")
    c.logon()
    t0 = time.monotonic()
    pki.revoke(world.certs, ["victim1"])
    elapsed, text = cut_within(c, 1.0)
    assert time.monotonic() - t0 < 1.0, f"cut after {time.monotonic() - t0:.2f} s"
    assert b"revoked (CRL)" in text
    again = world.client("victim1")
    again.send("A", [(98, "0"), (108, "30")])
    assert again.recv() is None
    world.wait_record(lambda r: r["kind"] == "session_revoked" and "CRL" in str(r.get("reason")),
                      "a session_revoked record naming the CRL")
    world.wait_record(lambda r: r["kind"] == "connection_refused" and "CRL" in str(r.get("reason")),
                      "a connection_refused record naming the CRL")


def test_denylist_cuts_a_live_session_within_one_second(world: World) -> None:
    c = world.client("victim2")
    c.logon()
    t0 = time.monotonic()
    with open(world.tmp / "denylist", "a") as f:
        f.write("spiffe://fixgw.dev/client/victim2\n")
    _, text = cut_within(c, 1.0)
    assert time.monotonic() - t0 < 1.0
    assert b"denylist" in text
    again = world.client("victim2")
    again.send("A", [(98, "0"), (108, "30")])
    assert again.recv() is None


def test_certificate_expiring_while_the_session_lives_logs_it_out(world: World) -> None:
    c = world.client("shortlived")
    c.logon()
    leaf = x509.load_pem_x509_certificate((world.certs / "shortlived.crt").read_bytes())
    remaining = leaf.not_valid_after_utc.timestamp() - time.time()
    t0 = time.monotonic()
    logout = c.recv_type(b"5", timeout=remaining + 5)
    assert b"expired" in (logout.get(58) or b"")
    assert time.monotonic() - t0 < remaining + 1.0


def test_a_crl_that_does_not_verify_is_not_used_and_raises_an_alert(world: World, tmp_path: Path) -> None:
    other = tmp_path / "other"
    pki.init(other)
    pki.issue(other, "x")
    forged = pki.revoke(other, ["x"])
    good = (world.certs / "ca.crl").read_bytes()
    shutil.copy(forged, world.certs / "ca.crl")
    world.wait_record(lambda r: r["kind"] == "alert" and "not signed by the listener CA" in str(r.get("reason")),
                      "an alert record refusing the forged CRL")
    # the last good CRL stays in force: victim1 is still refused
    again = world.client("victim1")
    again.send("A", [(98, "0"), (108, "30")])
    assert again.recv() is None
    (world.certs / "ca.crl").write_bytes(good)


def test_server_certificate_replaced_on_disk_serves_new_handshakes(world: World) -> None:
    import ssl

    def server_serial(port: int = world.gw_port) -> int:
        ctx = client_ssl(world.certs, "algo1")
        with ctx.wrap_socket(harness.socket.create_connection(("127.0.0.1", port)),
                             server_hostname="127.0.0.1") as s:
            der = s.getpeercert(binary_form=True)
        assert der is not None
        return int(x509.load_der_x509_certificate(der).serial_number)

    before = server_serial()
    assert server_serial(world.admin_port) == before  # the admin listener: the same certificate
    pki.issue(world.certs, "gw-next", server=True, kind="gateway",
              extra_sans=[x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))])
    shutil.copy(world.certs / "gw-next.key", world.certs / "gateway.key")
    shutil.copy(world.certs / "gw-next.crt", world.certs / "gateway.crt")
    # a reload between the two copies (new key, old certificate) fails and is retried: the first
    # server_cert_reloaded record is the pair in force
    world.wait_record(lambda r: r["kind"] == "server_cert_reloaded", "a server_cert_reloaded audit record")
    after = server_serial()
    assert after != before
    assert after == x509.load_pem_x509_certificate((world.certs / "gw-next.crt").read_bytes()).serial_number
    assert server_serial(world.admin_port) == after  # the admin listener follows the rotation too
    assert ssl  # the bystander session (old certificate) is checked by the autouse fixture


def test_sighup_reloads_at_once(tmp_path: Path) -> None:
    w = make_world(tmp_path, interval=60.0)  # the file watch would take a minute
    try:
        c = w.client("victim3")
        c.logon()
        (w.tmp / "denylist").write_text("spiffe://fixgw.dev/client/victim3\n")
        w.gw.proc.send_signal(signal.SIGHUP)
        _, text = cut_within(c, 1.0)
        assert b"denylist" in text
    finally:
        w.gw.stop()


def test_unreadable_crl_at_start_is_a_config_error(tmp_path: Path) -> None:
    certs = harness.make_pki(tmp_path / "certs")
    cfg = harness.trading_config(tmp_path, certs, harness.free_port(), harness.free_port(),
                                 extra=f'[revocation]\ncrl = "{tmp_path}/missing.crl"\n')
    r = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(cfg)], cwd=harness.ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "revocation" in r.stderr and "cannot read CRL" in r.stderr


def test_a_file_rewritten_within_one_clock_tick_is_seen_as_changed(tmp_path: Path) -> None:
    # `write_text`, an editor or `>` truncate first and write after: both can carry one modification
    # time, and a watch that read the empty file in between must still read the written one
    import os

    from gateway.edges.feeds import Watched
    from gateway.edges.revocation import stamp

    path = tmp_path / "admin-revoked.json"
    path.write_text("")
    watched = Watched(path)
    assert watched.changed()  # first sight
    truncated = stamp(path)
    assert truncated is not None
    path.write_text('{"spiffe://fixgw.dev/client/algo3": "stolen laptop"}')
    os.utime(path, ns=(truncated[0], truncated[0]))  # the same tick
    assert watched.changed(), "a write that kept the modification time went unseen"
    assert not watched.changed()
    replacement = tmp_path / "new.json"  # an atomic replacement of the same size and time
    replacement.write_text(path.read_text())
    written = stamp(path)
    assert written is not None
    os.utime(replacement, ns=(written[0], written[0]))
    replacement.replace(path)
    assert watched.changed(), "a rename over the file went unseen"
