"""Feed and rollback holes (issue 15 items 6, 11, 12, 13, 19), each against a real gateway.

One gateway process for the module (plus the exchange simulator) watches a
posture file, a CRL, a denylist, the JIT and kill-switch files and a signed
policy; its admin API takes posture pushes and serves ``/metrics``.  Each
test writes what an operator, a broken tool or an attacker with write access
to one file could write, and checks what the gateway answers, what it
audits, and that the watch still applies the next good change.  A bystander
session logged on for the whole module still trades after every test.

6.  malformed feed input (a JSON array, a non-numeric or NaN ``asserted_at``,
    a non-UTF-8 byte in the denylist, a kill switch that says ``"no"``)
    stopped the watch: refused, alerted, counted; last good state in force;
    a stale posture feed raises an alert;
11. a posture assertion dated in the future outranked a later
    non-compliant push (200 with no effect);
12. an older CRL replaced a newer one; nextUpdate was never looked at;
13. an earlier signed policy with its .sig reloaded;
19. ``fixgw jit grant`` wrote a grant with no second approver and no record.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from gateway.edges import pki
from gateway.edges.feeds import PostureFeed, Watched, write_json
from gateway.edges.registry import new_keys
from tests import harness
from tests.harness import FixClient, client_ssl

T = TypeVar("T")
TD = "spiffe://fixgw.dev/client/"
#: name -> CompID; every one an algo identity that may trade while its device is compliant
NAMES = {"algo1": "ALGO1", "post1": "POST1", "post2": "POST2", "post3": "POST3", "post4": "POST4",
         "deny1": "DENY1", "crl1": "CRL1", "jit1": "JIT1", "rfq1": "RFQ1"}
NOS = [(21, "1"), (38, "100"), (40, "2"), (44, "10.25"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")]
RFQ_RULE = """
[[rules]]
id = "algo-rfq"
roles = ["algo"]
actions = ["create_rfq"]
decision = "allow"
"""
POLICY = """version = {version}
[zones]
colo = ["127.0.0.1/32"]

[posture]
ttl = 300
logout_on = ["non-compliant"]
cancel_open_orders = false

[actions.order_entry]
msg_types = ["D"]
[actions.cancel]
msg_types = ["F"]
[actions.order_status]
msg_types = ["H"]
[actions.create_rfq]
msg_types = ["R"]
[actions.receive]
msg_types = ["8", "9", "j", "S", "b", "AG"]
direction = "inbound"

[[rules]]
id = "algo-orders-compliant"
roles = ["algo"]
actions = ["order_entry"]
posture = ["compliant", "highly-compliant"]
decision = "allow"

[[rules]]
id = "algo-cancels"
roles = ["algo"]
actions = ["cancel"]
decision = "allow"

[[rules]]
id = "order-status-needs-jit"
roles = ["algo"]
actions = ["order_status"]
controls = ["jit"]
decision = "allow"

[[rules]]
id = "inbound"
roles = ["algo"]
actions = ["receive"]
decision = "allow"
"""


def until(what: str, probe: Callable[[], T | None], timeout: float = 10.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def replace_file(path: Path, data: bytes) -> None:
    """Write the way a careful tool does (whole file, then rename): the watch never sees half of it."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def make_crl(certs: Path, serials: list[int], number: int | None, this_update: dt.datetime,
             next_update: dt.datetime) -> bytes:
    """A CRL signed by the dev CA with the given CRLNumber (None: without the extension)."""
    ca = pki.load_ca(certs)
    b = x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject).last_update(this_update) \
        .next_update(next_update)
    if number is not None:
        b = b.add_extension(x509.CRLNumber(number), critical=False)
    for s in serials:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s)
                                      .revocation_date(this_update).build())
    return b.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def serial_of(certs: Path, name: str) -> int:
    return int(x509.load_pem_x509_certificate((certs / f"{name}.crt").read_bytes()).serial_number)


def legs_up(audit: Path, legs: int) -> None:
    """Until ``legs`` exchange legs have logged on (their ``upstream_logon`` records)."""
    until(f"{legs} exchange legs to log on",
          lambda: sum(r["kind"] == "upstream_logon" for r in harness.audit_records(audit)) >= legs, timeout=20)


def fixgw(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI; bounded, since a ``run`` that should have been refused would otherwise serve for ever."""
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=harness.ROOT, capture_output=True,
                          text=True, timeout=30)


@dataclass
class World:
    tmp: Path
    certs: Path
    cfg: Path
    port: int
    admin_port: int
    gw: harness.Proc
    bystander: FixClient | None = None
    crl_number: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    def audit(self) -> list[dict[str, Any]]:
        return harness.audit_records(self.state / "audit")

    def last_seq(self) -> int:
        records = self.audit()
        return int(records[-1]["seq"]) if records else 0

    def records_after(self, seq: int, kind: str, **match: str) -> list[dict[str, Any]]:
        """Records of ``kind`` after ``seq`` whose fields contain the given words."""
        return [r for r in self.audit() if int(r["seq"]) > seq and r["kind"] == kind
                and all(words in str(r.get(k, "")) for k, words in match.items())]

    def alert_after(self, seq: int, feed: str, *words: str) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            hits = [r for r in self.records_after(seq, "alert", feed=feed)
                    if all(w in json.dumps(r) for w in words)]
            return hits[-1] if hits else None
        return until(f"an alert for feed {feed} saying {words}", probe)

    def logon(self, name: str) -> FixClient:
        c = FixClient(self.port, client_ssl(self.certs, name), NAMES[name])
        c.send("A", [(98, "0"), (108, "30"), (141, "Y")])
        reply = c.recv()
        assert reply is not None and reply.msg_type == b"A", f"{name} could not log on"
        return c

    def refused_at_connect(self, name: str) -> bool:
        c = FixClient(self.port, client_ssl(self.certs, name), NAMES[name])
        c.send("A", [(98, "0"), (108, "30"), (141, "Y")])
        return c.recv() is None

    def posture(self, levels: dict[str, str] | None = None, at: float | None = None) -> None:
        data = {TD + n: {"level": "compliant", "asserted_at": time.time() if at is None else at} for n in NAMES}
        for n, level in (levels or {}).items():
            data[TD + n]["level"] = level
        write_json(self.tmp / "posture.json", data)

    def metric(self, name: str, feed: str) -> float:
        conn = http.client.HTTPSConnection("127.0.0.1", self.admin_port, context=client_ssl(self.certs, "algo1"),
                                           timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        m = re.search(rf'^{name}{{feed="{feed}"}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    def push(self, identity: str, level: str) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.admin_port,
                                           context=client_ssl(self.certs, "posture-agent"), timeout=10)
        conn.request("POST", "/v1/posture", body=json.dumps({"identity": identity, "level": level}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = json.loads(resp.read() or b"{}")
        conn.close()
        return resp.status, data


def trades(c: FixClient, cl_ord_id: str) -> bool:
    """Send an order; True when the exchange acknowledged it, False when the gateway refused it."""
    c.send("D", [(11, cl_ord_id), *NOS])
    er = c.recv_type(b"8")
    if er.get(150) == b"0":
        c.recv_type(b"8")  # its fill
        return True
    return False


def is_cut(c: FixClient, words: bytes) -> bool:
    logout = c.recv_type(b"5", timeout=10)
    return words in (logout.get(58) or b"")


def sign(w: World, policy: Path) -> None:
    r = fixgw("policy", "sign", str(policy), "--key", str(w.tmp / "admin.key"))
    assert r.returncode == 0, r.stderr


def write_config(tmp: Path, certs: Path, gw_port: int, sim_port: int, admin_port: int, *,
                 revocation: str = "", posture: str = "") -> Path:
    identities = "".join(f'[[identities]]\nid = "{TD}{n}"\ncomp_ids = ["{c}"]\nroles = ["algo"]\n'
                         for n, c in NAMES.items())
    identities += f'[[identities]]\nid = "{TD}posture-agent"\ncomp_ids = []\nroles = ["posture_agent"]\n'
    extra = (f'[revocation]\ncrl = "{tmp}/ca.crl"\ndenylist = "{tmp}/denylist"\ncheck_interval = 0.1\n{revocation}'
             f'[posture]\nfile = "{tmp}/posture.json"\nmax_age = 2\n{posture}[admin]\nport = {admin_port}\n')
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, clients=tuple(NAMES.values()),
                                 identities=identities, extra=extra, reset_on_logon=True)
    cfg.write_text(cfg.read_text().replace(
        "[policy]\nallow_all = true", f'[policy]\nfile = "{tmp}/policy.toml"\nsigner_key = "{tmp}/admin.pub"'))
    return cfg


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("feeds")
    certs = harness.make_pki(tmp / "certs")
    for n in [*NAMES, "posture-agent"]:
        if not (certs / f"{n}.crt").exists():
            pki.issue(certs, n)
    now = dt.datetime.now(dt.UTC)
    (tmp / "ca.crl").write_bytes(make_crl(certs, [], 1, now - dt.timedelta(minutes=10), now + dt.timedelta(days=1)))
    (tmp / "denylist").write_text("# identities refused at once\n")
    new_keys("ed25519", tmp / "admin")
    (tmp / "policy.toml").write_text(POLICY.format(version=1) + RFQ_RULE)
    gw_port, sim_port, admin_port = harness.free_port(), harness.free_port(), harness.free_port()
    cfg = write_config(tmp, certs, gw_port, sim_port, admin_port)
    w = World(tmp, certs, cfg, gw_port, admin_port, gw=None)  # type: ignore[arg-type]
    w.posture()
    sign(w, tmp / "policy.toml")
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp / "sim.log", sim_port)
    w.gw = harness.start(["run", "--config", str(cfg)], tmp / "gw.log", gw_port)
    try:
        legs_up(w.state / "audit", len(NAMES))
        w.bystander = w.logon("algo1")
        yield w
    finally:
        w.gw.stop()
        sim.stop()


@pytest.fixture(autouse=True)
def bystander_still_trades(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "world" in request.fixturenames:
        w: World = request.getfixturevalue("world")
        assert w.bystander is not None
        w.posture()  # whatever the test left in the posture file, a good one again
        assert trades(w.bystander, f"BY-{request.node.name[:20]}-{time.monotonic_ns()}"), "the bystander"


# --- 6: malformed feed input is refused, alerted, counted; the watch goes on -----------------

def test_bad_posture_input_is_refused_and_the_watch_goes_on(world: World) -> None:
    path = world.tmp / "posture.json"
    c2 = world.logon("post2")
    seq = world.last_seq()
    replace_file(path, b'[{"level": "compliant"}]')  # an array where an object belongs
    alert = world.alert_after(seq, "posture", "a JSON object", "found an array", str(path))
    assert "last good state stays" in alert["what"]
    assert trades(c2, "P6-1")  # post2's last good assertion (compliant) stays in force
    seq = world.last_seq()
    replace_file(path, b'{"x": {"level": "compliant", "asserted_at": NaN}}')
    world.alert_after(seq, "posture", "NaN is not a number JSON allows")
    seq = world.last_seq()
    replace_file(path, b'{"x": {"level": "compliant\xff"}}')
    world.alert_after(seq, "posture", "byte 0xff", "not UTF-8")
    # one bad entry (post1's asserted_at is not a number) next to a good one: the good one applies
    data = {TD + n: {"level": "compliant", "asserted_at": time.time()} for n in NAMES}
    data[TD + "post1"]["asserted_at"] = "soon"
    data[TD + "post2"]["level"] = "non-compliant"
    seq = world.last_seq()
    write_json(path, data)
    assert is_cut(c2, b"non-compliant"), "the watch applied the good entry next to the bad one"
    alert = world.alert_after(seq, "posture", f"{TD}post1", "asserted_at 'soon' is not epoch seconds")
    assert str(path) in alert["reason"]
    assert world.metric("fixgw_feed_errors_total", "posture") >= 4
    log = (world.tmp / "gw.log").read_text()
    assert "feed_refused" in log and "found an array" in log and "Traceback" not in log


def test_bad_denylist_byte_is_refused_and_the_watch_goes_on(world: World) -> None:
    c = world.logon("deny1")
    seq = world.last_seq()
    replace_file(world.tmp / "denylist", b"# refused at once\n\xff\xfe" + f"{TD}deny1\n".encode())
    alert = world.alert_after(seq, "denylist", "line 2", "byte 0xff", "not UTF-8", str(world.tmp / "denylist"))
    assert "last good list stays" in alert["what"]
    assert trades(c, "D6-1")  # the last good (empty) denylist stays; the session lives
    replace_file(world.tmp / "denylist", f"# refused at once\n{TD}deny1\n".encode())
    assert is_cut(c, b"denylist"), "the watch still applies revocation data"
    assert world.refused_at_connect("deny1")
    assert world.metric("fixgw_feed_errors_total", "denylist") >= 1
    replace_file(world.tmp / "denylist", b"# refused at once\n")


def test_bad_kill_switch_and_jit_input_keep_the_last_good_state(world: World) -> None:
    kill = world.state / "killswitch.json"
    c = world.logon("post3")
    write_json(kill, {"global": False, "identities": [TD + "post3"]})
    until("the kill switch to stop post3's orders", lambda: not trades(c, f"K6-{time.monotonic_ns()}"))
    for bad, words in ((b'{"global": "no", "identities": []}', "global must be true or false"),
                       (b'{"identities": "' + TD.encode() + b'post3"}', "identities must be a list of strings"),
                       (b"[]", "found an array"),
                       (b'{"global": false,', "not valid JSON")):
        seq = world.last_seq()
        replace_file(kill, bad)
        world.alert_after(seq, "kill_switch", words, str(kill))
        assert not trades(c, f"K6-{time.monotonic_ns()}"), f"after {bad!r} the last good switch stays on"
    seq = world.last_seq()
    replace_file(world.state / "jit.json", json.dumps({TD + "jit1": "tomorrow"}).encode())
    world.alert_after(seq, "jit", f"{TD}jit1", "'tomorrow' is not an expiry")
    write_json(kill, {"global": False})
    until("the good kill switch file to let post3 trade", lambda: trades(c, f"K6-{time.monotonic_ns()}"))
    assert world.metric("fixgw_feed_errors_total", "kill_switch") >= 4
    assert world.metric("fixgw_feed_errors_total", "jit") >= 1
    replace_file(world.state / "jit.json", b"{}")


def test_a_stale_posture_feed_raises_an_alert_until_it_is_rewritten(world: World) -> None:
    world.posture()
    seq = world.last_seq()
    alert = world.alert_after(seq, "posture", "not rewritten", "max_age 2 s")  # [posture] max_age = 2
    assert alert["reason"] == "stale" and world.metric("fixgw_feed_stale", "posture") == 1
    seq = world.last_seq()
    world.posture()
    until("the posture feed to be fresh again", lambda: world.records_after(seq, "feed_fresh", feed="posture"))
    assert world.metric("fixgw_feed_stale", "posture") == 0


async def test_a_watch_step_that_raises_does_not_stop_the_watch(tmp_path: Path) -> None:
    """The backstop: whatever a tick raises (here the gateway's own housekeeping, once), the loop
    goes on and the next change is applied.  In-process: the real Gateway and its real watch loop."""
    import asyncio

    from gateway.app.gateway import Gateway
    from gateway.edges import config
    from gateway.edges.audit import iter_records
    from tests.fakes import until as until_async
    from tests.test_inprocess import write_config

    certs = tmp_path / "certs"
    pki.init(certs)
    gw = Gateway(config.load(write_config(tmp_path, certs)))
    stopping = False
    ticks = 0

    def housekeeping(mono: float) -> None:
        nonlocal ticks
        ticks += 1
        if ticks == 1:
            raise RuntimeError("disk on fire")

    task = asyncio.get_running_loop().create_task(gw.watch.run(lambda: stopping, housekeeping))
    try:
        await until_async(lambda: ticks >= 2, "a second tick")
        write_json(tmp_path / "state" / "killswitch.json", {"global": True})
        await until_async(lambda: gw.kill.everything, "the kill switch to be applied after the failed tick")
        assert not task.done()
    finally:
        stopping = True
        await asyncio.wait_for(task, 5)
        await gw.stop(grace=0.1)
    alerts = [r for _, _, _, r in iter_records(tmp_path / "audit") if r and r["kind"] == "alert"]
    assert any(r["feed"] == "watch" and "RuntimeError: disk on fire" in r["reason"] for r in alerts)


# --- 11: a posture assertion from the future neither lasts nor outranks a push -------------

def test_future_dated_posture_does_not_outrank_a_non_compliant_push(world: World) -> None:
    seq = world.last_seq()
    world.posture(at=time.time() + 10 * 365 * 86400)  # "compliant", dated ten years ahead
    world.alert_after(seq, "posture", "in the future", "counted from the time read")
    c = world.logon("post4")
    assert trades(c, "F11-1")
    status, data = world.push(TD + "post4", "non-compliant")
    assert (status, data) == (200, {"accepted": 1})
    assert is_cut(c, b"non-compliant"), "the push took effect"
    world.push(TD + "post4", "compliant")


def test_posture_times_are_clamped_and_the_more_restrictive_source_wins(tmp_path: Path) -> None:
    path = tmp_path / "posture.json"
    feed = PostureFeed(Watched(path), ttl=300)
    t0 = 1_800_000_000.0
    write_json(path, {"a": {"level": "compliant", "asserted_at": t0 + 1e9}, "b": {"level": "non-compliant",
                                                                               "asserted_at": t0}})
    problems = feed.reload(t0)
    assert len(problems) == 1 and "'a'" in problems[0] and "in the future" in problems[0]
    assert feed.level("a", t0 + 299) == "compliant"
    assert feed.level("a", t0 + 301) == "unknown"  # aged from the time read, not from 2087
    feed.push("b", "compliant", t0 + 10)  # a newer, looser push does not lift the file's restriction
    assert feed.level("b", t0 + 20) == "non-compliant"
    feed.push("a", "non-compliant", t0 + 10)  # a stricter push wins over the file
    assert feed.level("a", t0 + 20) == "non-compliant"
    assert feed.level("b", t0 + 305) == "compliant"  # the file's assertion aged out; the push is fresh


# --- 12: CRLs only move forward; nextUpdate is watched ----------------------------------------

def test_an_older_crl_is_refused_and_the_revoked_certificate_stays_refused(world: World) -> None:
    crl = world.tmp / "ca.crl"
    older = crl.read_bytes()  # CRLNumber 1, nothing revoked
    c = world.logon("crl1")
    now = dt.datetime.now(dt.UTC)
    replace_file(crl, make_crl(world.certs, [serial_of(world.certs, "crl1")], 2, now - dt.timedelta(minutes=1),
                               now + dt.timedelta(days=1)))
    assert is_cut(c, b"revoked (CRL)")
    seq = world.last_seq()
    replace_file(crl, older)  # validly signed, just older
    alert = world.alert_after(seq, "crl", "CRLNumber 1 is lower than 2", "rollback")
    assert "last good data stays" in alert["what"]
    assert world.refused_at_connect("crl1"), "the rolled-back CRL did not un-revoke crl1"
    seq = world.last_seq()
    replace_file(crl, make_crl(world.certs, [], None, now, now + dt.timedelta(days=1)))
    world.alert_after(seq, "crl", "has no CRLNumber", "CRLNumber 2")
    seq = world.last_seq()
    replace_file(crl, make_crl(world.certs, [], 2, now, now + dt.timedelta(days=1)))
    world.alert_after(seq, "crl", "CRLNumber 2 is the one in force but lists other certificates")
    assert world.refused_at_connect("crl1")
    assert world.metric("fixgw_feed_errors_total", "crl") >= 3
    world.crl_number = 2


def test_a_crl_past_its_next_update_raises_an_alert(world: World) -> None:
    crl = world.tmp / "ca.crl"
    now = dt.datetime.now(dt.UTC)
    world.crl_number += 1
    seq = world.last_seq()
    replace_file(crl, make_crl(world.certs, [serial_of(world.certs, "crl1")], world.crl_number,
                               now - dt.timedelta(seconds=1), now + dt.timedelta(seconds=2)))
    alert = world.alert_after(seq, "crl", "past its nextUpdate", "it stays in use")
    assert alert["reason"] == "stale" and world.metric("fixgw_feed_stale", "crl") == 1
    world.crl_number += 1
    seq = world.last_seq()
    replace_file(crl, make_crl(world.certs, [serial_of(world.certs, "crl1")], world.crl_number,
                               dt.datetime.now(dt.UTC), now + dt.timedelta(days=1)))
    until("the CRL feed to be fresh again", lambda: world.records_after(seq, "feed_fresh", feed="crl"))


def test_stale_crl_refuse_fails_closed_and_a_rollback_is_refused_after_a_restart(tmp_path: Path) -> None:
    certs = harness.make_pki(tmp_path / "certs")
    now = dt.datetime.now(dt.UTC)
    crl = tmp_path / "ca.crl"
    crl.write_bytes(make_crl(certs, [], 5, now - dt.timedelta(seconds=1), now + dt.timedelta(seconds=6)))
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, reset_on_logon=True,
                                 extra=f'[revocation]\ncrl = "{crl}"\ncheck_interval = 0.1\nstale_crl = "refuse"\n')
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp_path / "sim.log", sim_port)
    gw = harness.start(["run", "--config", str(cfg)], tmp_path / "gw.log", gw_port)
    try:
        legs_up(tmp_path / "state" / "audit", 2)
        c = FixClient(gw_port, client_ssl(certs, "algo1"), "ALGO1")
        c.send("A", [(98, "0"), (108, "30"), (141, "Y")])
        assert c.recv_type(b"A") is not None
        assert is_cut(c, b"past its nextUpdate"), "the live session is cut once revocation status is unknown"
        again = FixClient(gw_port, client_ssl(certs, "algo1"), "ALGO1")
        again.send("A", [(98, "0"), (108, "30"), (141, "Y")])
        assert again.recv() is None, "a new connection is refused"
        replace_file(crl, make_crl(certs, [], 6, dt.datetime.now(dt.UTC), now + dt.timedelta(days=1)))

        def logs_on() -> bool:
            c = FixClient(gw_port, client_ssl(certs, "algo1"), "ALGO1")
            c.send("A", [(98, "0"), (108, "30"), (141, "Y")])
            reply = c.recv()
            return reply is not None and reply.msg_type == b"A"
        until("a fresh CRL to let algo1 back in", logs_on)
        records = harness.audit_records(tmp_path / "state" / "audit")
        assert any(r["kind"] == "connection_refused" and "past its nextUpdate" in str(r.get("reason"))
                   for r in records)
    finally:
        gw.stop()
        sim.stop()
    # CRLNumber 6 is recorded under state_dir: CRLNumber 5, written back, stops the restart
    crl.write_bytes(make_crl(certs, [], 5, now - dt.timedelta(seconds=1), now + dt.timedelta(days=1)))
    r = fixgw("run", "--config", str(cfg))
    assert r.returncode == 2 and "CRLNumber 5 is lower than 6" in r.stderr and "Traceback" not in r.stderr


# --- 13: signed policies only move forward -----------------------------------------------------

def test_an_older_signed_policy_is_refused_and_the_refusal_survives_a_restart(world: World, tmp_path: Path) -> None:
    policy, sig = world.tmp / "policy.toml", world.tmp / "policy.toml.sig"
    v1, v1_sig = policy.read_bytes(), sig.read_bytes()  # allows QuoteRequest(R)
    c = world.logon("rfq1")
    c.send("R", [(131, "Q13-1"), (146, "1"), (55, "INTC")])
    assert c.recv_type(b"S").get(131) == b"Q13-1"  # allowed: the venue quoted
    seq = world.last_seq()
    staged = tmp_path / "policy.toml"
    staged.write_text(POLICY.format(version=2))  # version 2 removes the RFQ permission
    sign(world, staged)
    replace_file(sig, (tmp_path / "policy.toml.sig").read_bytes())
    replace_file(policy, staged.read_bytes())

    def rfq_refused() -> bool:
        c.send("R", [(131, f"Q13-{time.monotonic_ns()}"), (146, "1"), (55, "INTC")])
        reply = c.recv()
        while reply is not None and reply.msg_type not in (b"S", b"j"):
            reply = c.recv()
        assert reply is not None
        return reply.msg_type == b"j" and b"refused" in (reply.get(58) or b"")
    until("policy version 2 to remove the RFQ permission", rfq_refused)
    assert world.records_after(seq, "policy_loaded", version="2")
    v2, v2_sig = policy.read_bytes(), sig.read_bytes()
    seq = world.last_seq()
    replace_file(sig, v1_sig)
    replace_file(policy, v1)  # the old signed policy, signature and all
    alert = world.alert_after(seq, "policy", "version 1 is older than version 2", "rollback")
    assert "previous policy stays in force" in alert["what"]
    assert rfq_refused(), "the RFQ permission stays removed"
    seq = world.last_seq()
    staged.write_text(POLICY.format(version=2).replace("version = 2\n", "") + RFQ_RULE)
    (tmp_path / "policy.toml.sig").write_bytes(b"")
    r = fixgw("policy", "sign", str(staged), "--key", str(world.tmp / "admin.key"))
    assert r.returncode == 2 and "no version" in r.stderr and "Traceback" not in r.stderr
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway.edges.policy_file import sign as sign_file

    key = serialization.load_pem_private_key((world.tmp / "admin.key").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    sign_file(staged, key)  # by hand: the CLI refuses to sign a policy without a version
    replace_file(sig, (tmp_path / "policy.toml.sig").read_bytes())
    replace_file(policy, staged.read_bytes())
    world.alert_after(seq, "policy", "has no version", "version 2 was loaded before")
    assert world.metric("fixgw_feed_errors_total", "policy") >= 2
    # the mark is under state_dir: a gateway started on version 1 refuses to start
    state = tmp_path / "restart" / "state"
    state.mkdir(parents=True)
    shutil.copy(world.state / "policy-version.json", state / "policy-version.json")
    (tmp_path / "restart" / "policy.toml").write_bytes(v1)
    (tmp_path / "restart" / "policy.toml.sig").write_bytes(v1_sig)
    text = world.cfg.read_text().replace(str(world.state), str(state)) \
        .replace(f'"{world.tmp}/policy.toml"', f'"{tmp_path}/restart/policy.toml"')
    cfg = tmp_path / "restart" / "gateway.toml"
    cfg.write_text(text)
    r = fixgw("run", "--config", str(cfg))
    assert r.returncode == 2 and "version 1 is older than version 2" in r.stderr and "Traceback" not in r.stderr
    replace_file(sig, v2_sig)  # leave version 2 in force on disk too
    replace_file(policy, v2)


# --- 19: a JIT grant needs a second person; the exception is loud -------------------------------

def test_jit_grant_needs_two_people_and_break_glass_is_audited(world: World) -> None:
    c = world.logon("jit1")
    c.send("H", [(11, "JIT-0"), (54, "1"), (55, "INTC")])
    assert b"needs jit" in (c.recv_type(b"j").get(58) or b"")
    r = fixgw("jit", "grant", TD + "jit1", "--minutes", "5", "--config", str(world.cfg))
    assert r.returncode == 2 and "second administrator" in r.stderr and "jit request" in r.stderr
    assert "break-glass" in r.stderr and "Traceback" not in r.stderr
    jit_file = world.state / "jit.json"
    assert not jit_file.exists() or TD + "jit1" not in json.loads(jit_file.read_text() or "{}")
    r = fixgw("jit", "break-glass", TD + "jit1", "--minutes", "5", "--reason", "", "--config", str(world.cfg))
    assert r.returncode == 2 and "--reason" in r.stderr
    seq = world.last_seq()
    r = fixgw("jit", "break-glass", TD + "jit1", "--minutes", "5", "--reason", "venue outage, admin API down",
              "--config", str(world.cfg))
    assert r.returncode == 0 and "BREAK-GLASS" in r.stdout, r.stderr
    me = pwd.getpwuid(os.getuid()).pw_name
    [record] = until("the jit_break_glass record",
                     lambda: world.records_after(seq, "jit_break_glass", identity=TD + "jit1"))
    assert record["by"].startswith(os.environ.get("SUDO_USER") or me)
    assert record["reason"] == "venue outage, admin API down"

    def status_passes() -> bool:
        c.send("H", [(11, f"JIT-{time.monotonic_ns()}"), (54, "1"), (55, "INTC")])
        return b"needs jit" not in (c.recv_type(b"j").get(58) or b"")  # the venue answered instead
    until("the break-glass grant to count", status_passes)
    allowed = [r for r in world.records_after(seq, "decision", identity=TD + "jit1")
               if r.get("msg_type") == "H" and r.get("decision") == "allow"]
    assert allowed and int(allowed[0]["seq"]) > int(record["seq"])  # recorded before it counted
    # a break-glass entry that does not say who and why is no grant
    seq = world.last_seq()
    path = world.state / "jit-break-glass.json"
    write_json(path, {TD + "post1": {"until": time.time() + 60, "at": time.time(), "by": "", "reason": ""}})
    world.alert_after(seq, "jit_break_glass", f"{TD}post1", "must say who (by) and why (reason)")
    assert not world.records_after(seq, "jit_break_glass", identity=TD + "post1")
    write_json(path, {})
