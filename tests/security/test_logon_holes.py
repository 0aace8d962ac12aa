"""Who may connect and log on: holes found in review (issue 15 items 3, 10, 14, 15, 18), each staged
against one running gateway and exchange simulator (real TLS, real processes, loopback only).

Every test: the attack is refused as the README's attack matrix says, an audit record gives the reason,
and the bystander session ALGO1 — logged on before the first test — still trades afterwards.  The
policy is this module's own (``POLICY``): small, so each rule a test relies on is in view.
"""

from __future__ import annotations

import base64
import json
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.core.fix import codec, signature
from gateway.core.fix.redact import redact
from gateway.edges import pki
from gateway.edges.feeds import write_json
from gateway.edges.mfa import add_user
from gateway.edges.registry import new_keys
from tests import harness
from tests.harness import FixClient, client_ssl

TD = "spiffe://fixgw.dev/client/"
PASSWORD = "a long enough password"
NOS = [(21, "1"), (38, "100"), (40, "2"), (44, "30.15"), (54, "1"), (55, "INTC"), (60, "20260101-00:00:00")]
COLO, DESK, ANALYTICS, SANDBOX = "127.0.0.1", "127.0.0.10", "127.0.0.12", "127.0.0.13"
POLICY = """
[zones]
colo = ["127.0.0.1/32"]
desk = ["127.0.0.10/32"]
analytics = ["127.0.0.12/32"]
sandbox = ["127.0.0.13/32"]

[posture]
logout_on = ["non-compliant"]

[actions.order_entry]
msg_types = ["D"]
[actions.cancel]
msg_types = ["F"]
[actions.user_admin]
msg_types = ["BE"]
[actions.analytics]
msg_types = ["V"]
[actions.receive]
msg_types = ["8", "9", "j", "BF", "W", "Y"]
direction = "inbound"

[[rules]]
id = "algo-orders-colo"
roles = ["algo"]
actions = ["order_entry", "cancel"]
zones = ["colo"]
decision = "allow"

[[rules]]
id = "trader-orders-desk"
roles = ["trader"]
actions = ["order_entry", "cancel"]
zones = ["desk"]
decision = "allow"
controls = ["mfa"]

[[rules]]
id = "risk-cancels-desk"
roles = ["risk_officer"]
actions = ["cancel"]
zones = ["desk"]
decision = "allow"
controls = ["mfa"]

[[rules]]
id = "admin-captured"
roles = ["it_admin"]
actions = ["user_admin", "order_entry"]
zones = ["colo"]
decision = "allow"
controls = ["full_capture"]

[[rules]]
id = "quant-analytics"
roles = ["quant"]
actions = ["analytics"]
zones = ["analytics"]
decision = "allow"

[[rules]]
id = "quant-sandbox-deny"
roles = ["quant"]
actions = ["analytics"]
zones = ["sandbox"]
decision = "deny"

[[rules]]
id = "inbound"
actions = ["receive"]
decision = "allow"
"""
# certificate name: (CompID, roles, extra identity lines)
IDENTITIES = {
    "algo1": ("ALGO1", ["algo"], ""),
    "algo-ed": ("ALGOED", ["algo"], 'signing = "ed25519"\nkeys = [{{ path = "{keys}/ed.pub" }}]\n'
                                    "max_bad_signatures = 5\n"),
    "trader-laptop": ("TRADER", ["trader"], 'mfa = true\nusers = ["alice"]\n'),
    "risk-rita": ("RISK", ["risk_officer"], 'mfa = true\nusers = ["rita"]\n'),
    "bea-laptop": ("BEAL", ["trader"], 'mfa = true\nusers = ["bea"]\n'),
    "bea-desktop": ("BEAD", ["trader"], 'mfa = true\nusers = ["bea"]\n'),
    "trader-nc": ("TRNC", ["trader"], 'mfa = true\nusers = ["nina"]\n'),
    "quant": ("QUANT", ["quant"], ""),
    "admin": ("ADMIN", ["it_admin"], ""),
}
USERS = ("alice", "rita", "bea", "nina")


@dataclass
class World:
    tmp: Path
    certs: Path
    port: int
    signer: signature.Signer
    totp: dict[str, str]
    bystander: FixClient | None = None
    audit_mark: int = 0
    used_steps: dict[str, int] = field(default_factory=dict)

    def audit(self) -> list[dict[str, object]]:
        return harness.audit_records(self.tmp / "state" / "audit")

    def journal(self) -> list[str]:
        path = self.tmp / "received.log"
        return path.read_text().splitlines() if path.exists() else []

    def client(self, name: str, source: str = COLO, signed: bool = False) -> FixClient:
        return FixClient(self.port, client_ssl(self.certs, name), IDENTITIES[name][0],
                         signer=self.signer if signed else None, source=source)

    def code(self, user: str) -> str:
        """A TOTP code of ``user`` the gateway has not seen yet (each is accepted once): this step's or
        the next one's (±1 step of skew is accepted); when both are spent, wait for the clock."""
        deadline = time.monotonic() + 65
        while True:
            step = int(time.time() // 30)
            candidate = max(step, self.used_steps.get(user, -1) + 1)
            if candidate <= step + 1:
                self.used_steps[user] = candidate
                return pyotp.TOTP(self.totp[user]).at(candidate * 30)
            assert time.monotonic() < deadline, "no fresh TOTP step"
            time.sleep(0.2)

    def human(self, name: str, user: str, source: str = DESK, code: str | None = None,
              password: str = PASSWORD) -> tuple[FixClient, bytes | None]:
        code = code if code is not None else self.code(user)  # (may wait: before connecting)
        c = self.client(name, source=source)
        c.send("A", [(98, "0"), (108, "30"), (141, "Y"), (553, user), (554, password + code)])
        m = c.recv(timeout=5)
        return c, (m.msg_type if m is not None else None)

    def since(self) -> list[dict[str, object]]:
        return self.audit()[self.audit_mark:]

    def audited(self, kind: str, words: str = "", timeout: float = 3.0) -> dict[str, object]:
        """The first record of ``kind`` since the test began whose text holds ``words``."""
        deadline = time.monotonic() + timeout
        while True:
            for r in self.since():
                if r["kind"] == kind and words in json.dumps(r):
                    return r
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kind!r} record with {words!r} since the test began")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("logon-holes")
    certs = harness.make_pki(tmp / "certs")
    keys = tmp / "keys"
    for name in IDENTITIES:
        if name != "algo1":
            pki.issue(certs, name)
    new_keys("ed25519", keys / "ed")
    ed_key = serialization.load_pem_private_key((keys / "ed.key").read_bytes(), password=None)
    signer = signature.Signer("ed25519", ed_key)  # type: ignore[arg-type]
    for user in USERS:
        add_user(tmp / "users.toml", tmp / "totp.secrets", user, PASSWORD)
    now = time.time()
    posture = {TD + n: {"level": "compliant", "asserted_at": now} for n in IDENTITIES}
    posture[TD + "trader-nc"] = {"level": "non-compliant", "asserted_at": now}
    write_json(tmp / "posture.json", posture)
    (tmp / "policy.toml").write_text(POLICY)
    identities = "".join(
        f'[[identities]]\nid = "{TD}{n}"\ncomp_ids = ["{comp}"]\nroles = {json.dumps(roles)}\n'
        + extra.format(keys=keys) for n, (comp, roles, extra) in IDENTITIES.items())
    extra = (f'[users]\nfile = "{tmp}/users.toml"\nsecrets = "{tmp}/totp.secrets"\nmax_failures = 3\n'
             f'[posture]\nfile = "{tmp}/posture.json"\n')
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, reset_on_logon=True,
                                 clients=tuple(c for c, _, _ in IDENTITIES.values()), identities=identities,
                                 extra=extra, sim_extra=f'journal = "{tmp}/received.log"')
    text = cfg.read_text()
    assert "[policy]\nallow_all = true" in text
    cfg.write_text(text.replace("[policy]\nallow_all = true",
                                f'redact_tags = [58]\n[policy]\nfile = "{tmp}/policy.toml"'))
    w = World(tmp, certs, gw_port, signer, tomllib.loads((tmp / "totp.secrets").read_text())["totp"])
    with harness.gateway_and_sim(tmp, cfg, gw_port, sim_port):
        w.bystander = w.client("algo1")
        w.bystander.logon(reset=True)
        yield w


def trades(c: FixClient, cl: str) -> bool:
    c.send("D", [(11, cl), *NOS])
    return [c.recv_type(b"8").get(150), c.recv_type(b"8").get(150)] == [b"0", b"F"]


@pytest.fixture(autouse=True)
def bystander_untouched(world: World) -> Iterator[None]:
    world.audit_mark = len(world.audit())
    yield
    assert world.bystander is not None
    assert trades(world.bystander, f"BY{time.monotonic_ns()}"), "the bystander session stopped trading"


# --- item 3: an MFA identity opens only for the people it names ----------------------------------------

def test_another_persons_password_and_code_do_not_open_an_identity(world: World) -> None:
    """Rita (risk officer) with the trader's certificate and her own, valid password and code: refused
    before any factor is checked, audited with her name; through her own identity she gets in."""
    _, reply = world.human("trader-laptop", "rita")
    assert reply is None
    refused = world.audited("logon_refused", "nobody bound to")
    assert refused["user"] == "rita" and refused["identity"] == TD + "trader-laptop"
    assert not any(r["kind"] == "logon" for r in world.since())
    c, reply = world.human("risk-rita", "rita")
    assert reply == b"A"
    assert world.audited("logon", "risk-rita")["user"] == "rita"
    c.send("5", [])
    c.recv_type(b"5")


def test_decision_records_name_the_person(world: World) -> None:
    c, reply = world.human("trader-laptop", "alice")
    assert reply == b"A"
    assert trades(c, "ALICE-1")
    decision = world.audited("decision", "ALICE-1")
    assert decision["user"] == "alice" and decision["mfa"] is True
    c.send("5", [])
    c.recv_type(b"5")


def test_failures_through_one_identity_never_lock_the_person_out_of_another(world: World) -> None:
    """Anyone holding an MFA certificate used to be able to lock out any user by guessing: now a name
    not bound to the identity is refused before counting, and a bound person's failures lock her out
    through that identity only."""
    for _ in range(4):  # max_failures = 3: guessing rita's code with the trader's certificate
        _, reply = world.human("trader-laptop", "rita", code="000000")
        assert reply is None
    c, reply = world.human("risk-rita", "rita")
    assert reply == b"A", "rita was locked out by failures through an identity she is not bound to"
    c.send("5", [])
    c.recv_type(b"5")
    for _ in range(3):  # bea's own laptop certificate, wrong password: locked through the laptop
        _, reply = world.human("bea-laptop", "bea", code="000000", password="not her password")
        assert reply is None
    _, reply = world.human("bea-laptop", "bea")
    assert reply is None
    world.audited("logon_refused", "locked through this identity")
    c, reply = world.human("bea-desktop", "bea")
    assert reply == b"A", "failures through bea-laptop locked bea out of bea-desktop"
    c.send("5", [])
    c.recv_type(b"5")


def test_unknown_usernames_are_never_written_verbatim(world: World) -> None:
    typed = "Tr0ub4dor&3-typed-in-the-wrong-field"
    log = world.tmp / "gw.log"
    lines_before = log.read_text().count("logon_refused")
    _, reply = world.human("trader-laptop", typed, code="123456")
    assert reply is None
    record = world.audited("mfa")
    assert str(record["user"]).startswith("unknown user #")
    assert str(world.audited("logon_refused", "nobody bound to")["user"]).startswith("unknown user #")
    deadline = time.monotonic() + 3
    while log.read_text().count("logon_refused") == lines_before:  # the gateway's own log line of it
        assert time.monotonic() < deadline, "no logon_refused line in the gateway's log"
        time.sleep(0.05)
    for text in (log.read_text(), json.dumps(world.audit())):
        assert typed not in text


# --- item 10: full capture keeps no secret, whatever the TLS records ------------------------------------

def _captures(world: World) -> list[tuple[str, bytes, list[int]]]:
    out = []
    for r in world.since():
        if r["kind"] == "capture" and "data" in r:
            hidden = r.get("redacted")
            out.append((str(r["direction"]), base64.b64decode(str(r["data"])),
                        [int(t) for t in hidden] if isinstance(hidden, list) else []))
    return out


def test_full_capture_redacts_passwords_even_split_across_tls_records(world: World) -> None:
    c = world.client("admin")
    c.logon(reset=True)
    c.send("BE", [(923, "U1"), (924, "1"), (553, "adam")])  # allowed with full_capture: on from here
    assert c.recv_type(b"BF") is not None  # the venue's UserResponse
    world.audited("full_capture_on")
    frame = c.frame("BE", [(923, "U2"), (924, "3"), (553, "adam"), (554, "old-SPLIT-secret"),
                           (925, "new-pw-secret"), (95, "10"), (96, "raw-secret")])
    cut = frame.index(b"SPLIT")  # Password(554) cut in two TLS records, read apart
    c.send_raw(frame[:cut])
    time.sleep(0.2)
    c.send_raw(frame[cut:])
    assert c.recv(timeout=5) is not None
    c.send("D", [(11, "CAP-1"), (58, "text-secret"), *NOS])  # Text(58) is in [audit] redact_tags
    assert [c.recv_type(b"8").get(150), c.recv_type(b"8").get(150)] == [b"0", b"F"]
    c.send("5", [])
    c.recv_type(b"5")
    deadline = time.monotonic() + 3
    while not any(b"CAP-1" in data for _, data, _ in _captures(world)):
        assert time.monotonic() < deadline, "the order after capture began was not captured"
        time.sleep(0.05)
    caps = _captures(world)
    joined = b"".join(data for _, data, _ in caps)
    for secret in (b"old-SPLIT", b"SPLIT-secret", b"old-", b"-secret", b"new-pw", b"raw-secret", b"text-secret"):
        assert secret not in joined, f"{secret!r} in the capture"
    user_request = next((d, data, hidden) for d, data, hidden in caps if b"923=U2" in data)
    assert user_request[0] == "in" and user_request[2] == [96, 554, 925]
    assert b"\x01554=REDACTED\x01" in user_request[1] and b"\x0196=REDACTED\x01" in user_request[1]
    assert any(b"11=CAP-1" in data and b"\x0158=REDACTED\x01" in data for _, data, _ in caps)


def test_redaction_covers_the_encrypted_password_fields() -> None:
    raw = codec.encode(b"FIXT.1.1", [(35, b"BE"), (34, b"2"), (49, b"A"), (52, b"20260101-00:00:00"), (56, b"B"),
                                     (923, b"U"), (924, b"1"), (553, b"adam"), (1401, b"9"), (1402, b"enc-old-1"),
                                     (1403, b"9"), (1404, b"enc-new-1"), (554, b"pw")])
    msg = codec.parse(raw)
    out, hidden = redact(msg, (553,))
    assert hidden == [553, 554, 1402, 1404]
    assert b"enc-" not in out and b"adam" not in out and b"=pw" not in out
    assert out.startswith(raw[: raw.index(b"35=")]) and out.endswith(raw[raw.rindex(b"10="):])
    assert b"\x011401=9\x01" in out  # the lengths say nothing


# --- item 14: posture applies at Logon -------------------------------------------------------------------

def test_a_device_already_non_compliant_is_refused_at_logon(world: World) -> None:
    _, reply = world.human("trader-nc", "nina")
    assert reply is None
    world.audited("logon_refused", "device posture is non-compliant")
    assert not any(r["kind"] in ("logon", "mfa") for r in world.since())  # refused before any factor


# --- item 15: a zone from which nothing can ever be allowed ------------------------------------------------

def test_a_zone_where_no_rule_can_ever_allow_anything_is_refused_at_connect(world: World) -> None:
    c = world.client("quant", source=SANDBOX)
    c.send("A", [(98, "0"), (108, "30"), (141, "Y")])
    assert c.recv(timeout=5) is None
    refused = world.audited("connection_refused", "zone sandbox")
    assert refused["rule"] == "identity.reach" and refused["zone"] == "sandbox"
    assert not any(r["kind"] in ("logon", "logon_refused") for r in world.since())  # never got as far
    c = world.client("quant", source=ANALYTICS)  # where a rule applies, the same identity gets in
    assert c.logon(reset=True).msg_type == b"A"
    c.send("5", [])
    c.recv_type(b"5")


# --- item 18: a signed frame is good once ---------------------------------------------------------------

def test_a_replayed_signed_logon_is_refused(world: World) -> None:
    c = world.client("algo-ed", signed=True)
    c.logon(reset=True)
    captured = c.last_sent
    c.send("5", [])
    c.recv_type(b"5")
    again = world.client("algo-ed")
    again.send_raw(captured)  # byte for byte, well inside the 120 s SendingTime window
    assert again.recv(timeout=5) is None
    world.audited("logon_refused", "already used (replay)")


def test_a_signed_order_replayed_after_a_sequence_reset_is_refused(world: World) -> None:
    c = world.client("algo-ed", signed=True)
    c.logon(reset=True)
    assert trades(c, "SIGNED-ONCE")
    captured = c.last_sent  # MsgSeqNum(34)=2, signed
    c.send("5", [])
    c.recv_type(b"5")
    c = world.client("algo-ed", signed=True)
    c.logon(reset=True)  # a fresh, validly signed Logon: MsgSeqNum 2 is expected again
    c.send_raw(captured)
    c.seq += 1
    rej = c.recv_type(b"3")
    assert (rej.get(373), rej.get(371), rej.get(45)) == (b"8", b"89", b"2")
    assert world.audited("signature_refused", "already used (replay)")["client_seq"] == 2
    c.send("5", [])
    c.recv_type(b"5")
    assert sum("SIGNED-ONCE" in line for line in world.journal()) == 1, "the replayed order reached the exchange"


def test_reach_asks_whether_a_zone_can_ever_allow_anything(tmp_path: Path) -> None:
    """Pure: posture, time windows and conditions can change while a session lives, the zone cannot;
    a receive-only identity (a drop copy) is judged by its inbound rules; global shadow refuses nothing."""
    from gateway.core.guard import reach
    from gateway.core.identity import Identity
    from gateway.edges.policy_file import load

    path = tmp_path / "policy.toml"
    path.write_text(POLICY + '\n[[rules]]\nid = "trader-rfq-desk-compliant"\nroles = ["trader"]\n'
                    'actions = ["analytics"]\nzones = ["desk"]\nposture = ["highly-compliant"]\n'
                    'decision = "allow"\ncontrols = ["mfa"]\n')
    policy, _ = load(path)

    def ident(*roles: str) -> Identity:
        return Identity("spiffe://fixgw.dev/client/x", frozenset(), frozenset(), frozenset(), roles, "none", (),
                        3, False, frozenset())

    now = time.time()
    assert not reach(policy, ident("quant"), "sandbox", now).allowed
    assert "zone sandbox" in reach(policy, ident("quant"), "sandbox", now).reason
    assert reach(policy, ident("quant"), "analytics", now).allowed
    assert not reach(policy, ident("quant"), None, now).allowed  # an address in no zone
    assert reach(policy, ident("trader"), "desk", now).allowed  # whatever its posture or MFA today
    assert reach(policy, ident("drop_copy"), "sandbox", now).allowed  # sends nothing anywhere: inbound decides
    assert not reach(policy, ident("quant", "drop_copy"), "sandbox", now).allowed
    policy.global_shadow = True
    assert reach(policy, ident("quant"), "sandbox", now).allowed


def test_the_replay_window_remembers_a_frame_exactly_as_long_as_it_could_pass_sending_time() -> None:
    """Pure: kept until SendingTime + window (SendingTime clamped to now ± window), then forgotten, so
    memory is bounded by what the SendingTime check would still let through."""
    from gateway.core.fix.signature import ReplayWindow

    w = ReplayWindow()
    a, b, c = b"a" * 16, b"b" * 16, b"c" * 16
    assert w.first_use(a, 1000.0, 120, 1000.0) is None
    assert "already used" in str(w.first_use(a, 1000.0, 120, 1119.0))  # still inside the window
    assert w.first_use(b, 1e12, 120, 1000.0) is None  # "far future": kept 2 windows at most, not forever
    assert w.first_use(c, 1121.0, 120, 1121.0) is None and len(w) == 2  # a's window closed: forgotten
    assert w.first_use(c, 1121.0, 120, 1200.0) is not None
    assert w.first_use(b, 1e12, 120, 1241.0) is None  # b expired at 1000 + 2 x 120
