"""Attacks on the admin plane, through a running gateway (real processes, real mutual TLS).

* A certificate listed in ``[revocation] crl`` is refused on every admin
  endpoint — operator endpoints, posture push, ``/metrics``, paths that do
  not exist — also over a connection kept alive from before the revocation;
  each refusal is an ``admin_call`` record (status 403, rule
  ``admin.revoked``) and nothing changes.
* One administrator alone (a stolen admin certificate) cannot lift the kill
  switch, revoke the other administrators or reinstate an identity: those are
  requests a *second* administrator approves; nobody approves their own
  request or a request about themselves; a request whose requester has been
  revoked meanwhile cannot be approved.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.edges import pki
from tests import harness
from tests.harness import FixClient, client_ssl

TD = "spiffe://fixgw.dev/client/"
ORDER = [(21, "1"), (38, "10"), (40, "2"), (44, "10"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")]
ADMINS = ("admin1", "admin2", "admin3", "admin4")
#: every endpoint of the admin API, with a body that would be valid, and two paths that do not exist
ENDPOINTS: list[tuple[str, str, object]] = [
    ("GET", "/v1/sessions", None),
    ("GET", "/v1/kill-switch", None),
    ("POST", "/v1/kill-switch", {"on": False, "global": True}),
    ("POST", "/v1/revoke", {"identity": TD + "admin2", "reason": "take over"}),
    ("POST", "/v1/reinstate", {"identity": TD + "algo1"}),
    ("POST", "/v1/policy/reload", None),
    ("POST", "/v1/jit/requests", {"identity": TD + "algo1", "minutes": 1, "reason": "x"}),
    ("GET", "/v1/jit/requests", None),
    ("POST", "/v1/jit/requests/0123456789abcdef/approve", None),
    ("GET", "/v1/requests", None),
    ("POST", "/v1/requests/0123456789abcdef/approve", None),
    ("POST", "/v1/posture", {"identity": TD + "algo1", "level": "compliant"}),
    ("GET", "/metrics", None),
    ("GET", "/v1/not-an-endpoint", None),
    ("DELETE", "/v1/sessions", None),
]


@dataclass
class Env:
    tmp: Path
    certs: Path
    gw_port: int
    admin_port: int

    def api(self, who: str, method: str, path: str, body: object = None,
            conn: http.client.HTTPSConnection | None = None) -> tuple[int, dict[str, object]]:
        own = conn is None
        c = conn or http.client.HTTPSConnection("127.0.0.1", self.admin_port, context=client_ssl(self.certs, who),
                                                timeout=10)
        c.request(method, path, body=None if body is None else json.dumps(body),
                  headers={"Content-Type": "application/json"})
        resp = c.getresponse()
        raw = resp.read()
        if own:
            c.close()
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            data = {"text": raw.decode(errors="replace")}
        return resp.status, data if isinstance(data, dict) else {"value": data}

    def calls(self) -> list[dict[str, object]]:
        return [r for r in harness.audit_records(self.tmp / "state" / "audit") if r["kind"] == "admin_call"]

    def order_state(self, c: FixClient, cl_ord_id: str) -> bytes | None:
        c.send("D", [(11, cl_ord_id), *ORDER])
        er = c.recv_type(b"8")
        if er.get(39) == b"0":
            c.recv_type(b"8")  # the fill
        return er.get(39)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("admin-plane")
    certs = harness.make_pki(tmp / "certs")
    for name in (*ADMINS, "agent"):
        pki.issue(certs, name)
    pki.revoke(certs, [])  # an empty CRL to start with
    gw_port, sim_port, admin_port = harness.free_port(), harness.free_port(), harness.free_port()
    identities = f'[[identities]]\nid = "{TD}algo1"\ncomp_ids = ["ALGO1"]\n'
    identities += "".join(f'[[identities]]\nid = "{TD}{n}"\ncomp_ids = []\nroles = ["gateway_admin"]\n'
                          for n in ADMINS)
    identities += f'[[identities]]\nid = "{TD}agent"\ncomp_ids = []\nroles = ["posture_agent"]\n'
    extra = (f'[revocation]\ncrl = "{certs}/ca.crl"\ncheck_interval = 0.1\n'
             f"[admin]\nport = {admin_port}\n")
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, reset_on_logon=True, clients=("ALGO1",),
                                 identities=identities, extra=extra)
    with harness.gateway_and_sim(tmp, cfg, gw_port, sim_port):
        yield Env(tmp, certs, gw_port, admin_port)


def test_a_crl_revoked_admin_and_posture_agent_are_refused_on_every_endpoint_and_each_refusal_is_audited(
        env: Env) -> None:
    # before: both work, and admin1 keeps its connection open (HTTP keep-alive)
    kept = http.client.HTTPSConnection("127.0.0.1", env.admin_port, context=client_ssl(env.certs, "admin1"),
                                       timeout=10)
    assert env.api("admin1", "GET", "/v1/sessions", conn=kept)[0] == 200
    assert env.api("agent", "POST", "/v1/posture", {"identity": TD + "algo1", "level": "compliant"})[0] == 200
    kill_before = env.api("admin2", "GET", "/v1/kill-switch")[1]
    pki.revoke(env.certs, ["admin1", "agent"])
    deadline = time.monotonic() + 10
    while env.api("admin1", "GET", "/metrics")[0] != 403:  # the watch reloads the CRL within check_interval
        assert time.monotonic() < deadline, "the CRL revocation did not reach the admin API within 10 s"
        time.sleep(0.05)
    before = len(env.calls())
    for who in ("admin1", "agent"):
        for method, path, body in ENDPOINTS:
            status, data = env.api(who, method, path, body)
            assert status == 403 and "is revoked (CRL)" in str(data.get("error")), (who, method, path, status, data)
    status, data = env.api("admin1", "POST", "/v1/kill-switch", {"on": False, "global": True}, conn=kept)
    assert status == 403 and "is revoked (CRL)" in str(data["error"])  # checked per call, not per connection
    kept.close()
    # nothing changed: no request to approve, no revocation, the kill switch as it was
    assert env.api("admin2", "GET", "/v1/requests")[1] == {"requests": []}
    assert env.api("admin2", "GET", "/v1/kill-switch")[1] == kill_before
    assert not (env.tmp / "state" / "admin-revoked.json").exists()
    assert env.api("admin2", "GET", "/v1/sessions")[0] == 200  # the other administrators are untouched
    deadline = time.monotonic() + 5
    while len(env.calls()) < before + 2 * len(ENDPOINTS) + 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    refused = [r for r in env.calls()[before:] if r["identity"] in (TD + "admin1", TD + "agent")]
    assert len(refused) == 2 * len(ENDPOINTS) + 1
    assert all(r["status"] == 403 and r["allowed"] is False and r["rule"] == "admin.revoked" for r in refused)
    assert {(r["method"], r["path"]) for r in refused} == {(m, p) for m, p, _ in ENDPOINTS}


def test_a_crl_revoked_posture_agent_cannot_push_posture(env: Env) -> None:
    """(The revocation of the previous test holds; on its own this test revokes the agent itself.)"""
    pki.revoke(env.certs, ["agent"])
    deadline = time.monotonic() + 10
    while True:
        status, data = env.api("agent", "POST", "/v1/posture", {"identity": TD + "algo1", "level": "highly-compliant"})
        if status == 403:
            break
        assert time.monotonic() < deadline, "the CRL revocation did not reach the admin API within 10 s"
        time.sleep(0.05)
    assert "is revoked (CRL)" in str(data["error"])
    pushed = [r for r in env.calls() if r["path"] == "/v1/posture" and r["identity"] == TD + "agent"]
    assert pushed[-1]["status"] == 403 and pushed[-1]["rule"] == "admin.revoked"
    assert "assertions" not in pushed[-1]


def test_one_administrator_alone_cannot_lift_the_kill_switch(env: Env) -> None:
    c = FixClient(env.gw_port, client_ssl(env.certs, "algo1"), "ALGO1")
    c.logon(reset=True)
    assert env.api("admin2", "POST", "/v1/kill-switch", {"on": True, "global": True, "reason": "incident"})[0] == 200
    assert env.order_state(c, "K1") == b"8"  # turning it on takes one administrator, at once
    status, req = env.api("admin2", "POST", "/v1/kill-switch", {"on": False, "global": True})
    assert status == 202 and req["state"] == "pending"
    status, data = env.api("admin2", "POST", f"/v1/requests/{req['id']}/approve")
    assert status == 409 and "second administrator" in str(data["error"])
    assert env.api("admin2", "GET", "/v1/kill-switch")[1]["global"] is True
    assert env.order_state(c, "K2") == b"8"  # still on
    status, data = env.api("admin3", "POST", f"/v1/requests/{req['id']}/approve")
    assert status == 200 and data["state"] == "done"
    assert env.order_state(c, "K3") == b"0"
    c.close()
    approvals = [r for r in env.calls() if r["path"] == f"/v1/requests/{req['id']}/approve"]
    assert [(r["identity"], r["status"]) for r in approvals] == [(TD + "admin2", 409), (TD + "admin3", 200)]


def test_one_administrator_alone_cannot_revoke_the_other_administrators(env: Env) -> None:
    status, req = env.api("admin4", "POST", "/v1/revoke", {"identity": TD + "admin3", "reason": "take over"})
    assert status == 202 and req["state"] == "pending"
    assert env.api("admin3", "GET", "/v1/sessions")[0] == 200  # not revoked by asking
    status, data = env.api("admin4", "POST", f"/v1/requests/{req['id']}/approve")
    assert status == 409 and "second administrator" in str(data["error"])
    status, data = env.api("admin3", "POST", f"/v1/requests/{req['id']}/approve")
    assert status == 409 and "about itself" in str(data["error"])
    assert env.api("admin3", "GET", "/v1/sessions")[0] == 200
    assert not (env.tmp / "state" / "admin-revoked.json").exists() or \
        TD + "admin3" not in json.loads((env.tmp / "state" / "admin-revoked.json").read_text())
    # the honest administrators revoke the rogue one; its pending request dies with it
    status, cut = env.api("admin2", "POST", "/v1/revoke", {"identity": TD + "admin4", "reason": "rogue"})
    assert status == 202 and env.api("admin3", "POST", f"/v1/requests/{cut['id']}/approve")[0] == 200
    assert env.api("admin4", "GET", "/v1/sessions")[0] == 403
    status, data = env.api("admin2", "POST", f"/v1/requests/{req['id']}/approve")
    assert status == 409 and "may no longer act" in str(data["error"])
    assert env.api("admin3", "GET", "/v1/sessions")[0] == 200


def test_one_administrator_alone_cannot_reinstate(env: Env) -> None:
    status, cut = env.api("admin2", "POST", "/v1/revoke", {"identity": TD + "algo1", "reason": "key leaked"})
    assert status == 202 and env.api("admin3", "POST", f"/v1/requests/{cut['id']}/approve")[0] == 200
    status, req = env.api("admin2", "POST", "/v1/reinstate", {"identity": TD + "algo1", "reason": "new key"})
    assert status == 202
    status, data = env.api("admin2", "POST", f"/v1/requests/{req['id']}/approve")
    assert status == 409 and "second administrator" in str(data["error"])
    refused = FixClient(env.gw_port, client_ssl(env.certs, "algo1"), "ALGO1")
    with pytest.raises((ConnectionError, OSError, AssertionError, TimeoutError)):
        refused.logon(reset=True)  # still revoked
    assert env.api("admin3", "POST", f"/v1/requests/{req['id']}/approve")[0] == 200
    c = FixClient(env.gw_port, client_ssl(env.certs, "algo1"), "ALGO1")
    c.logon(reset=True)
    c.close()
