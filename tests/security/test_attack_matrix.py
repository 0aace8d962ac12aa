"""The attack matrix through one running gateway (see ``matrix.py`` for the rows).

Every test: the attack is refused as the row says, an audit record gives the
reason, the exchange simulator's journal shows nothing new (nothing from the
attacker crossed), and the bystander session ALGO1 — logged on before the
first attack — still trades afterwards.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import socket
import ssl
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.core.fix import signature
from gateway.edges import pki
from gateway.edges.feeds import write_json
from gateway.edges.mfa import add_user
from gateway.edges.registry import new_keys
from tests import harness
from tests.harness import FixClient, client_ssl
from tests.security import matrix

TD = "spiffe://fixgw.dev/client/"
NOS = [(21, "1"), (38, "100"), (40, "2"), (44, "30.15"), (54, "1"), (55, "INTC"), (60, "20260101-00:00:00")]
PASSWORD = "a long enough password"
# certificate name: (CompID, roles, extra identity lines)
IDENTITIES = {
    "algo1": ("ALGO1", ["algo"], ""),
    "algo2": ("ALGO2", ["algo"], ""),
    "algo-ed": ("ALGOED", ["algo"], 'signing = "ed25519"\nkeys = [{{ path = "{keys}/ed.pub" }}]\n'),
    "algo-hm": ("ALGOHM", ["algo"], 'signing = "hmac-sha256"\nkeys = [{{ path = "{keys}/hm.hmac" }}]\n'
                                    "max_bad_signatures = 5\n"),
    "riskalgo": ("RALGO", ["algo"], ""),
    "algo-lan": ("ALGOLAN", ["algo"], ""),
    "trader-laptop": ("TRADER", ["trader"], 'mfa = true\nusers = ["mallory", "rory", "brute"]\n'),
    "trader-nc": ("TRNC", ["trader"], 'mfa = true\nusers = ["nina"]\n'),
    "trader-stale": ("TRST", ["trader"], 'mfa = true\nusers = ["stan"]\n'),
    "victim-crl": ("CRL1", ["algo"], ""),
    "victim-deny": ("DENY1", ["algo"], ""),
}
USERS = ("mallory", "rory", "brute", "nina", "stan")


@dataclass
class World:
    tmp: Path
    certs: Path
    port: int
    signers: dict[str, signature.Signer]
    totp: dict[str, str]
    bystander: FixClient | None = None
    journal_mark: int = 0
    audit_mark: int = 0
    used: set[str] = field(default_factory=set)

    def audit(self) -> list[dict[str, object]]:
        return harness.audit_records(self.tmp / "state" / "audit")

    def journal(self) -> list[str]:
        path = self.tmp / "received.log"
        return path.read_text().splitlines() if path.exists() else []

    def client(self, name: str, comp: str | None = None, signer: str | None = None,
               source: str | None = None) -> FixClient:
        return FixClient(self.port, client_ssl(self.certs, name), comp or IDENTITIES[name][0],
                         signer=self.signers[signer] if signer else None, source=source)

    def human(self, name: str, user: str, code: str | None = None, password: str = PASSWORD,
              source: str = "127.0.0.10") -> tuple[FixClient, bytes | None]:
        c = self.client(name, source=source)
        if code is None:
            code = pyotp.TOTP(self.totp[user]).now()
        c.send("A", [(98, "0"), (108, "30"), (141, "Y"), (553, user), (554, password + code)])
        m = c.recv(timeout=5)
        return c, (m.msg_type if m is not None else None)

    def audited(self, kind: str, words: str = "", timeout: float = 3.0) -> dict[str, object]:
        """The first record of ``kind`` since the test began whose text holds ``words``."""
        deadline = time.monotonic() + timeout
        while True:
            for r in self.audit()[self.audit_mark:]:
                if r["kind"] == kind and words in json.dumps(r):
                    return r
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kind!r} record with {words!r} since the attack began")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("attacks")
    certs = harness.make_pki(tmp / "certs")
    keys = tmp / "keys"
    for name in IDENTITIES:
        if name not in ("algo1", "algo2"):
            pki.issue(certs, name)
    new_keys("ed25519", keys / "ed")
    new_keys("hmac-sha256", keys / "hm")
    ed_key = serialization.load_pem_private_key((keys / "ed.key").read_bytes(), password=None)
    signers = {"ed": signature.Signer("ed25519", ed_key),  # type: ignore[arg-type]
               "hm": signature.Signer("hmac-sha256", bytes.fromhex((keys / "hm.hmac").read_text().strip()))}
    for user in USERS:
        add_user(tmp / "users.toml", tmp / "totp.secrets", user, PASSWORD)
    pki.revoke(certs, ["victim-crl"])
    (tmp / "denylist").write_text(f"{TD}victim-deny\n")
    now = time.time()
    posture = {TD + n: {"level": "compliant", "asserted_at": now} for n in IDENTITIES}
    posture[TD + "trader-nc"] = {"level": "non-compliant", "asserted_at": now}
    posture[TD + "trader-stale"] = {"level": "compliant", "asserted_at": now - 3600}
    write_json(tmp / "posture.json", posture)
    (tmp / "state").mkdir()
    write_json(tmp / "state" / "killswitch.json", {"identities": [TD + "algo2"]})
    policy = tmp / "policy.toml"
    policy.write_text((harness.ROOT / "config" / "policy.toml").read_text()
                      + f'\n[risk.identities."{TD}riskalgo"]\nmax_order_qty = 500\n')
    identities = "".join(
        f'[[identities]]\nid = "{TD}{n}"\ncomp_ids = ["{comp}"]\nroles = {json.dumps(roles)}\n'
        + extra.format(keys=keys) for n, (comp, roles, extra) in IDENTITIES.items())
    extra = (f'[users]\nfile = "{tmp}/users.toml"\nsecrets = "{tmp}/totp.secrets"\nmax_failures = 3\n'
             f'[posture]\nfile = "{tmp}/posture.json"\n'
             f'[revocation]\ncrl = "{certs}/ca.crl"\ndenylist = "{tmp}/denylist"\n')
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, reset_on_logon=True,
                                 clients=tuple(c for c, _, _ in IDENTITIES.values()), identities=identities,
                                 extra=extra, gateway_extra="max_frame = 4096\nlogon_timeout = 1.0",
                                 sim_extra=f'journal = "{tmp}/received.log"')
    cfg.write_text(cfg.read_text().replace("[policy]\nallow_all = true", f'[policy]\nfile = "{policy}"'))
    w = World(tmp, certs, gw_port, signers, tomllib.loads((tmp / "totp.secrets").read_text())["totp"])
    with harness.gateway_and_sim(tmp, cfg, gw_port, sim_port):
        deadline = time.monotonic() + 15
        while sum(r["kind"] == "upstream_logon" for r in w.audit()) < len(IDENTITIES) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        w.bystander = w.client("algo1")
        w.bystander.logon(reset=True)
        yield w


def bystander_trades(w: World) -> bool:
    assert w.bystander is not None
    cl = f"BY{time.monotonic_ns()}"
    w.bystander.send("D", [(11, cl), *NOS])
    kinds = [w.bystander.recv_type(b"8").get(150), w.bystander.recv_type(b"8").get(150)]
    return kinds == [b"0", b"F"]


@pytest.fixture(autouse=True)
def each_row(world: World, request: pytest.FixtureRequest) -> Iterator[None]:
    world.audit_mark = len(world.audit())
    world.journal_mark = len(world.journal())
    yield
    # the bystander's order round trip first: anything the attack had sent on would be at the venue by then
    assert bystander_trades(world), "the bystander session stopped trading"
    crossed = [line for line in world.journal()[world.journal_mark:] if not line.split()[-1].startswith("BY")]
    assert crossed == [], f"reached the exchange during the attack: {crossed}"
    world.used.add(request.node.name.removeprefix("test_"))


def refused_handshake(ctx: ssl.SSLContext, world: World) -> bool:
    try:
        c = FixClient(world.port, ctx, "ALGO1")
        c.send("A", [(98, "0"), (108, "30")])
        return c.recv(timeout=5) is None
    except (ssl.SSLError, OSError):
        return True


def silent_close(c: FixClient, logon: list[tuple[int, str]] | None = None) -> bool:
    c.send("A", logon or [(98, "0"), (108, "30")])
    return c.recv(timeout=5) is None


# --- 1-4: the TLS handshake --------------------------------------------------------

def test_no_client_certificate(world: World) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(world.certs / "ca.crt"))
    assert refused_handshake(ctx, world)
    world.audited("tls_refused")


def test_certificate_from_another_ca(world: World) -> None:
    other = world.tmp / "other-ca"
    pki.init(other)
    pki.issue(other, "algo1")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(world.certs / "ca.crt"))
    ctx.load_cert_chain(str(other / "algo1.crt"), str(other / "algo1.key"))
    assert refused_handshake(ctx, world)
    world.audited("tls_refused")


def test_expired_certificate(world: World) -> None:
    pki.issue(world.certs, "expired", uri=TD + "algo1", days=1,
              not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    assert refused_handshake(client_ssl(world.certs, "expired"), world)
    world.audited("tls_refused", "CERTIFICATE")


def test_not_yet_valid_certificate(world: World) -> None:
    pki.issue(world.certs, "future", uri=TD + "algo1", not_before=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    assert refused_handshake(client_ssl(world.certs, "future"), world)
    world.audited("tls_refused", "CERTIFICATE")


# --- 5-11: identity ------------------------------------------------------------------

def test_revoked_by_crl(world: World) -> None:
    assert silent_close(world.client("victim-crl"))
    world.audited("connection_refused", "CRL")


def test_denylisted_identity(world: World) -> None:
    assert silent_close(world.client("victim-deny"))
    world.audited("connection_refused", "denylist")


def test_wrong_trust_domain(world: World) -> None:
    pki.issue(world.certs, "evil", uri="spiffe://evil.example/client/algo1")
    assert silent_close(world.client("evil", "ALGO1"))
    world.audited("connection_refused", "not in trust domain")


def test_two_uri_sans(world: World) -> None:
    pki.issue(world.certs, "twosans", extra_sans=[x509.UniformResourceIdentifier(TD + "algo1")])
    assert silent_close(world.client("twosans", "ALGO1"))
    world.audited("connection_refused", "2 URI SANs")


def test_compid_not_owned(world: World) -> None:
    assert silent_close(world.client("algo-lan", "RALGO"))
    world.audited("logon_refused", "may not log on as")


def test_duplicate_logon(world: World) -> None:
    assert silent_close(world.client("algo1"), [(98, "0"), (108, "30")])
    world.audited("logon_refused", "already")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_1_1_client(world: World) -> None:
    ctx = client_ssl(world.certs, "algo1")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    assert refused_handshake(ctx, world)
    world.audited("tls_refused", "PROTOCOL")


# --- 12-18: signatures and time ---------------------------------------------------------

SIGNED = {"ed25519": ("algo-ed", "ed"), "hmac": ("algo-hm", "hm")}


def _missing(world: World, scheme: str) -> None:
    name, signer = SIGNED[scheme]
    c = world.client(name, signer=signer)
    c.logon(reset=True)
    c.signer = None
    c.send("D", [(11, f"NOSIG-{scheme}"), *NOS])
    rej = c.recv_type(b"3")
    assert (rej.get(373), rej.get(371)) == (b"8", b"89")
    world.audited("signature_refused", "missing")
    c.signer = world.signers[signer]
    c.send("5", [])
    c.recv_type(b"5")


def test_missing_signature_ed25519(world: World) -> None:
    _missing(world, "ed25519")


def test_missing_signature_hmac(world: World) -> None:
    _missing(world, "hmac")


def _bad(world: World, scheme: str) -> None:
    name, signer = SIGNED[scheme]
    comp = IDENTITIES[name][0].encode()
    c = world.client(name, signer=signer)
    c.logon(reset=True)
    raw = signature.encode_signed(b"FIX.4.4", [(35, b"D"), (34, b"2"), (49, comp),
                                               (52, harness.format_utc_timestamp(time.time())), (56, b"FIXGW"),
                                               (11, f"BAD-{scheme}".encode())] + [(t, v.encode()) for t, v in NOS],
                                  world.signers[signer])
    tampered = raw.replace(b"38=100", b"38=900")
    body = tampered[: tampered.rindex(b"10=")]
    c.send_raw(body + b"10=%03d\x01" % harness.codec.checksum(body))
    c.seq += 1
    rej = c.recv_type(b"3")
    assert (rej.get(373), rej.get(371)) == (b"8", b"89")
    world.audited("signature_refused", "does not verify")
    c.send("5", [])
    c.recv_type(b"5")


def test_bad_signature_ed25519(world: World) -> None:
    _bad(world, "ed25519")


def test_bad_signature_hmac(world: World) -> None:
    _bad(world, "hmac")


def _replayed(world: World, scheme: str) -> None:
    name, signer = SIGNED[scheme]
    c = world.client(name, signer=signer)
    c.logon(reset=True)
    c.send("1", [(112, "before-replay")])  # a signed message that is not an order
    c.recv_type(b"0")
    c.send_raw(c.last_sent)  # byte-for-byte replay of a validly signed message
    logout = c.recv_type(b"5")
    assert b"MsgSeqNum too low" in (logout.get(58) or b"")
    world.audited("logout", "MsgSeqNum too low")


def test_replayed_signature_ed25519(world: World) -> None:
    _replayed(world, "ed25519")


def test_replayed_signature_hmac(world: World) -> None:
    _replayed(world, "hmac")


def test_sending_time_outside_window(world: World) -> None:
    c = world.client("algo-ed", signer="ed")
    c.logon(reset=True)
    raw = signature.encode_signed(b"FIX.4.4", [(35, b"D"), (34, b"2"), (49, b"ALGOED"),
                                               (52, harness.format_utc_timestamp(time.time() - 600)),
                                               (56, b"FIXGW"), (11, b"STALE")] + [(t, v.encode()) for t, v in NOS],
                                  world.signers["ed"])
    c.send_raw(raw)
    assert c.recv_type(b"3").get(373) == b"10"
    assert c.recv_type(b"5").msg_type == b"5"
    world.audited("session_reject", "SendingTime")


# --- 19-22: people: TOTP ----------------------------------------------------------------

def _wrong_code(world: World, user: str) -> str:
    good = {pyotp.TOTP(world.totp[user]).at(time.time() + d) for d in (-30, 0, 30)}
    return next(f"{n:06d}" for n in range(1000) if f"{n:06d}" not in good)


def test_wrong_totp(world: World) -> None:
    _, reply = world.human("trader-laptop", "mallory", code=_wrong_code(world, "mallory"))
    assert reply is None
    world.audited("logon_refused", "wrong TOTP code")


def test_replayed_totp(world: World) -> None:
    code = pyotp.TOTP(world.totp["rory"]).now()
    c, reply = world.human("trader-laptop", "rory", code=code)
    assert reply == b"A"
    c.send("5", [])
    c.recv_type(b"5")
    world.audit_mark = len(world.audit())
    _, again = world.human("trader-laptop", "rory", code=code)
    assert again is None
    world.audited("logon_refused", "already used")


def test_totp_brute_force(world: World) -> None:
    for _ in range(3):
        _, reply = world.human("trader-laptop", "brute", code=_wrong_code(world, "brute"))
        assert reply is None
    _, reply = world.human("trader-laptop", "brute")  # the right code now: locked all the same
    assert reply is None
    world.audited("logon_refused", "locked")


def test_failed_logon_resetting_sequence_numbers(world: World) -> None:
    assert world.bystander is not None
    attacker = world.client("algo2", "ALGO1")  # not its CompID, asking for a reset of ALGO1's numbers
    assert silent_close(attacker, [(98, "0"), (108, "30"), (141, "Y")])
    world.audited("logon_refused", "may not log on as")
    seq_before = world.bystander.seq
    world.bystander.send("1", [(112, "numbers-intact")])  # the live session's numbers were not reset
    assert world.bystander.recv_type(b"0").get(112) == b"numbers-intact"
    assert world.bystander.seq == seq_before + 1


# --- 23-28: policy, posture, risk, kill switch --------------------------------------------

def test_message_type_not_allowed_for_role(world: World) -> None:
    c = world.client("riskalgo")
    c.logon(reset=True)
    c.send("BE", [(923, "U1"), (924, "1"), (553, "someone")])
    bmr = c.recv_type(b"j")
    assert b"default-deny" in (bmr.get(58) or b"")
    world.audited("decision", "default-deny")
    c.send("5", [])
    c.recv_type(b"5")


def test_right_role_wrong_zone(world: World) -> None:
    c = world.client("algo-lan", source="127.0.0.10")  # role algo, but from the corporate LAN
    c.logon(reset=True)
    c.send("D", [(11, "LAN1"), *NOS])
    er = c.recv_type(b"8")
    assert er.get(39) == b"8" and b"default-deny" in (er.get(58) or b"")
    world.audited("decision", "default-deny")
    c.send("5", [])
    c.recv_type(b"5")


def _posture_refused(world: World, name: str, user: str) -> None:
    c, reply = world.human(name, user)
    assert reply == b"A"
    c.send("D", [(11, f"POS-{name}"), *NOS])
    er = c.recv_type(b"8")
    assert er.get(39) == b"8" and b"device-health-deny" in (er.get(58) or b"")
    world.audited("decision", "device-health-deny")
    c.send("5", [])
    c.recv_type(b"5")


def test_non_compliant_posture(world: World) -> None:
    _, reply = world.human("trader-nc", "nina")  # posture rules apply at Logon: no session at all
    assert reply is None
    world.audited("logon_refused", "device posture is non-compliant")


def test_stale_posture(world: World) -> None:
    _posture_refused(world, "trader-stale", "stan")


def test_order_outside_risk_limits(world: World) -> None:
    c = world.client("riskalgo")
    c.logon(reset=True)
    c.send("D", [(11, "BIG1"), (21, "1"), (38, "600"), (40, "2"), (44, "30.15"), (54, "1"), (55, "INTC"),
                 (60, "20260101-00:00:00")])
    er = c.recv_type(b"8")
    assert er.get(39) == b"8" and b"max_order_qty" in (er.get(58) or b"")
    world.audited("decision", "max_order_qty")
    c.send("5", [])
    c.recv_type(b"5")


def test_kill_switch_on(world: World) -> None:
    c = world.client("algo2")
    c.logon(reset=True)
    c.send("D", [(11, "KILL1"), *NOS])
    er = c.recv_type(b"8")
    assert er.get(39) == b"8" and b"kill switch" in (er.get(58) or b"")
    world.audited("decision", "kill switch")
    c.send("5", [])
    c.recv_type(b"5")


# --- 29-32: the wire --------------------------------------------------------------------

def test_frame_over_size_limit(world: World) -> None:
    c = world.client("riskalgo")
    c.logon(reset=True)
    c.send("D", [(11, "HUGE"), (58, "x" * 8192), *NOS], seq=c.seq)  # the next message reuses this number:
    world.audited("frame_dropped")
    c.send("1", [(112, "after-huge")])  # the dropped frame consumed no sequence number
    assert c.recv_type(b"0").get(112) == b"after-huge"  # and the session goes on
    c.send("5", [])
    c.recv_type(b"5")


def test_slowloris(world: World) -> None:
    raw = socket.create_connection(("127.0.0.1", world.port), timeout=10)
    tls_sock = client_ssl(world.certs, "algo-lan").wrap_socket(raw, server_hostname="127.0.0.1")
    t0 = time.monotonic()
    tls_sock.settimeout(10)
    try:
        assert tls_sock.recv(100) == b""  # nothing sent, ever: closed by the gateway
    except (ConnectionResetError, ssl.SSLError):
        pass
    assert time.monotonic() - t0 < 5  # logon_timeout = 1 s
    world.audited("logon_refused", "no Logon within")


def test_garbage_before_logon(world: World) -> None:
    raw = socket.create_connection(("127.0.0.1", world.port), timeout=10)
    tls_sock = client_ssl(world.certs, "algo-lan").wrap_socket(raw, server_hostname="127.0.0.1")
    tls_sock.sendall(b"GET / HTTP/1.1\r\n" + os.urandom(3000))
    t0 = time.monotonic()
    tls_sock.settimeout(10)
    try:
        assert tls_sock.recv(100) == b""
    except (ConnectionResetError, ssl.SSLError):
        pass
    assert time.monotonic() - t0 < 0.9  # closed on the garbage itself, not by the logon timeout
    world.audited("logon_refused", "garbled first message")


def test_garbage_after_logon(world: World) -> None:
    c = world.client("riskalgo")
    c.logon(reset=True)
    c.send_raw(b"\x00\xff" + os.urandom(500) + b"8=FIX.4.4\x019=5\x0135=D\x01junk")
    world.audited("frame_dropped")
    c.send("1", [(112, "after-garbage")])
    assert c.recv_type(b"0").get(112) == b"after-garbage"
    c.send("5", [])
    c.recv_type(b"5")


# --- the matrix itself ---------------------------------------------------------------------

def test_every_row_has_its_test_and_the_readme_table_is_current() -> None:
    tests = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    rows = {r.id for r in matrix.ROWS}
    assert rows <= tests, rows - tests
    for hole in matrix.HOLES:  # every row of the second table names a test that exists
        module, _, name = hole.test.partition("::")
        assert callable(getattr(importlib.import_module(f"tests.security.{module}"), name, None)), hole.test
    readme = (harness.ROOT / "docs" / "security.md").read_text()
    assert matrix.markdown() in readme, "run: python -m tests.security.matrix --write docs/security.md"
