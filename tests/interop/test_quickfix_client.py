"""Interop: a QuickFIX (C++) algo client through the gateway over mutual TLS.

``quickfix_client.cpp`` is built against Debian's libquickfix-dev and logs on
to fixgw with an RSA client certificate (QuickFIX 1.15 negotiates TLS 1.2),
sends 10,000 NewOrderSingle orders with up to 200 in flight, and waits for
every fill before it logs out.  The gateway runs the shipped decision path
(identity, policy, audit) in front of our exchange simulator.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.edges import pki
from gateway.edges.audit import load_or_create_key, verify
from tests import harness

pytestmark = pytest.mark.interop
HERE = Path(__file__).resolve().parent
ORDERS = 10_000


def build_client(out: Path) -> Path:
    if shutil.which("g++") is None or not Path("/usr/include/quickfix/SSLSocketInitiator.h").exists():
        pytest.fail("QuickFIX interop needs g++ and libquickfix-dev: run `make system-deps`")
    exe = out / "quickfix_client"
    # Debian's library is built with OpenSSL; its headers need HAVE_SSL to expose the SSL classes
    r = subprocess.run(["g++", "-std=c++14", "-O1", "-Wno-deprecated", "-DHAVE_SSL=1", "-o", str(exe),
                        str(HERE / "quickfix_client.cpp"), "-lquickfix", "-lpthread", "-lssl", "-lcrypto"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return exe


def settings(tmp: Path, certs: Path, port: int) -> Path:
    text = f"""[DEFAULT]
ConnectionType=initiator
SocketConnectHost=127.0.0.1
SocketConnectPort={port}
HeartBtInt=30
ReconnectInterval=1
StartTime=00:00:00
EndTime=00:00:00
UseDataDictionary=N
ResetOnLogon=Y
ClientCertificateFile={certs}/qfclient.crt
ClientCertificateKeyFile={certs}/qfclient.key
CertificationAuthoritiesFile={certs}/ca.crt
SSLProtocol=all -SSLv2 -SSLv3 -TLSv1 -TLSv1_1
SSLCipherSuite=ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384

[SESSION]
BeginString=FIX.4.4
SenderCompID=QFALGO
TargetCompID=FIXGW
"""
    path = tmp / "qf-client.cfg"
    path.write_text(text)
    return path


def test_quickfix_client_sends_10000_orders_through_the_gateway_and_gets_every_fill(tmp_path: Path) -> None:
    exe = build_client(tmp_path)
    certs = harness.make_pki(tmp_path / "certs")
    pki.issue(certs, "qfclient", key_type="rsa")  # QuickFIX 1.15 loads RSA keys
    gw_port, sim_port = harness.free_port(), harness.free_port()
    identities = '[[identities]]\nid = "spiffe://fixgw.dev/client/qfclient"\ncomp_ids = ["QFALGO"]\n'
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, reset_on_logon=True, clients=("QFALGO",),
                                 identities=identities, sim_extra=f'journal = "{tmp_path}/received.log"')
    with harness.gateway_and_sim(tmp_path, cfg, gw_port, sim_port):
        r = subprocess.run([str(exe), str(settings(tmp_path, certs, gw_port)), str(ORDERS), "200"],
                           capture_output=True, text=True, timeout=420)
        assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert f"sent={ORDERS} filled={ORDERS} rejected=0" in r.stdout
    received = (tmp_path / "received.log").read_text().splitlines()
    orders = [line.split()[2] for line in received if line.split()[1] == "D"]
    assert len(orders) == ORDERS and len(set(orders)) == ORDERS  # none lost, none twice
    records = harness.audit_records(tmp_path / "state" / "audit")
    allowed = {r["cl_ord_id"] for r in records if r["kind"] == "decision" and r["direction"] == "outbound"
               and r["decision"] == "allow"}
    assert allowed == set(orders)  # every order that crossed has its allow record
    assert any(r["kind"] == "logout" for r in records)  # QuickFIX logged out cleanly
    assert verify(tmp_path / "state" / "audit", load_or_create_key(tmp_path / "state" / "audit-signing.key")
                  .public_key()).ok


def test_quickfix_client_resends_orders_queued_while_the_gateway_was_down(tmp_path: Path) -> None:
    """Gateway SIGKILLed between two batches; QuickFIX stores the orders sent meanwhile under the
    next sequence numbers, logs on again when the gateway is back (numbers continue, no reset), and
    the gateway's ResendRequest brings them over as PossDupFlag(43)=Y resends — each filled once."""
    exe = build_client(tmp_path)
    certs = harness.make_pki(tmp_path / "certs")
    pki.issue(certs, "qfclient", key_type="rsa")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    identities = '[[identities]]\nid = "spiffe://fixgw.dev/client/qfclient"\ncomp_ids = ["QFALGO"]\n'
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, clients=("QFALGO",), identities=identities,
                                 sim_extra=f'journal = "{tmp_path}/received.log"')
    qf_cfg = settings(tmp_path, certs, gw_port)
    qf_cfg.write_text(qf_cfg.read_text().replace("ResetOnLogon=Y", "ResetOnLogon=N"))
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp_path / "sim.log", sim_port)
    gw = harness.start(["run", "--config", str(cfg)], tmp_path / "gw.log", gw_port)
    qf = subprocess.Popen([str(exe), str(qf_cfg), "300", "50", "200"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    def wait_for(line: str) -> None:  # QuickFIX also prints its certificate checks on stdout
        assert qf.stdout is not None
        while True:
            got = qf.stdout.readline()
            assert got, f"the client ended before printing {line!r}: {qf.stderr.read() if qf.stderr else ''}"
            if got.strip() == line:
                return

    try:
        wait_for("READY")  # the first 300 orders filled
        gw.kill()
        wait_for("QUEUED 200")  # stored by QuickFIX while the gateway was down
        gw = harness.start(["run", "--config", str(cfg)], tmp_path / "gw2.log", gw_port)
        out, err = qf.communicate(timeout=180)
        assert qf.returncode == 0, out + err[-2000:]
        assert "sent=500 filled=500 rejected=0" in out
    finally:
        if qf.poll() is None:
            qf.kill()
        gw.stop()
        sim.stop()
    orders = [line.split()[2] for line in (tmp_path / "received.log").read_text().splitlines()
              if line.split()[1] == "D"]
    assert sorted(orders) == sorted(f"QF{i}" for i in range(1, 501))  # each exactly once
    records = harness.audit_records(tmp_path / "state" / "audit")
    logons = [r for r in records if r["kind"] == "logon"]
    assert len(logons) == 2 and not logons[1].get("reset")  # numbers continued across the restart
    resent = {r["cl_ord_id"] for r in records if r["kind"] == "decision" and r["direction"] == "outbound"
              and r.get("poss_dup")}
    assert resent == {f"QF{i}" for i in range(301, 501)}  # exactly the queued ones came as resends
    assert verify(tmp_path / "state" / "audit", load_or_create_key(tmp_path / "state" / "audit-signing.key")
                  .public_key()).ok


def test_quickfix_1_15_cannot_produce_the_signature_wire_format_and_is_told_why(tmp_path: Path) -> None:
    """A QuickFIX 1.15 client signing in toAdmin/toApp (see the .cpp) is refused at Logon: QuickFIX writes
    trailer fields in tag order, Signature(89) before SignatureLength(93), while DESIGN §4 (like every
    FIX data field) needs the length first.  The refusal names exactly that."""
    import os

    from gateway.edges.registry import new_keys

    exe = build_client(tmp_path)
    certs = harness.make_pki(tmp_path / "certs")
    pki.issue(certs, "qfclient", key_type="rsa")
    new_keys("hmac-sha256", tmp_path / "qf")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    identities = ('[[identities]]\nid = "spiffe://fixgw.dev/client/qfclient"\ncomp_ids = ["QFALGO"]\n'
                  f'signing = "hmac-sha256"\nkeys = [{{ path = "{tmp_path}/qf.hmac" }}]\n')
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, reset_on_logon=True, clients=("QFALGO",),
                                 identities=identities)
    qf_cfg = settings(tmp_path, certs, gw_port)
    qf_cfg.write_text(qf_cfg.read_text().replace("ReconnectInterval=1", "ReconnectInterval=30"))
    env = dict(os.environ, FIXGW_HMAC_KEY=(tmp_path / "qf.hmac").read_text().strip(), QF_LOGON_WAIT="3")
    with harness.gateway_and_sim(tmp_path, cfg, gw_port, sim_port):
        r = subprocess.run([str(exe), str(qf_cfg), "1", "1"], capture_output=True, text=True, timeout=90, env=env)
    assert r.returncode != 0 and "no Logon answer" in r.stderr
    refused = [x for x in harness.audit_records(tmp_path / "state" / "audit") if x["kind"] == "logon_refused"]
    assert refused and "SignatureLength(93) comes after Signature(89)" in str(refused[0]["reason"])
