"""Admin API through a running gateway: role check, sessions, kill switch, revoke, reload, JIT — what lowers a
defence with two administrators —, the duration cap, the audit record of every call (400s, 404s and scrapes
included), and the ``fixgw admin`` CLI; the two-person rule's own logic without a gateway."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.edges import pki
from tests import harness
from tests.harness import ROOT, FixClient, client_ssl

TD = "spiffe://fixgw.dev/client/"
ORDER = [(21, "1"), (38, "10"), (40, "2"), (44, "10"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")]


@dataclass
class Env:
    tmp: Path
    certs: Path
    gw_port: int
    admin_port: int

    def api(self, who: str, method: str, path: str, body: object = None) -> tuple[int, dict[str, object]]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.admin_port, context=client_ssl(self.certs, who),
                                           timeout=10)
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = json.loads(resp.read() or b"{}")
        conn.close()
        return resp.status, data

    def audit(self) -> list[dict[str, object]]:
        return harness.audit_records(self.tmp / "state" / "audit")

    def admin_calls(self, path: str) -> list[dict[str, object]]:
        return [r for r in self.audit() if r["kind"] == "admin_call" and r["path"] == path]

    def client(self) -> FixClient:
        c = FixClient(self.gw_port, client_ssl(self.certs, "algo1"), "ALGO1")
        c.logon(reset=True)
        return c


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("admin")
    certs = harness.make_pki(tmp / "certs")
    for name in ("admin1", "admin2", "viewer"):
        pki.issue(certs, name)
    gw_port, sim_port, admin_port = harness.free_port(), harness.free_port(), harness.free_port()
    identities = f"""
[[identities]]
id = "{TD}algo1"
comp_ids = ["ALGO1"]
[[identities]]
id = "{TD}admin1"
comp_ids = []
roles = ["gateway_admin"]
[[identities]]
id = "{TD}admin2"
comp_ids = []
roles = ["gateway_admin"]
[[identities]]
id = "{TD}viewer"
comp_ids = []
roles = ["risk_officer"]
"""
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, reset_on_logon=True, clients=("ALGO1",),
                                 identities=identities, gateway_extra="jit_max_minutes = 5",
                                 extra=f"[admin]\nport = {admin_port}\n")
    with harness.gateway_and_sim(tmp, cfg, gw_port, sim_port):
        yield Env(tmp, certs, gw_port, admin_port)


def test_operator_endpoints_need_the_gateway_admin_role_and_refusals_are_audited(env: Env) -> None:
    for method, path in (("GET", "/v1/sessions"), ("POST", "/v1/kill-switch"), ("POST", "/v1/revoke"),
                         ("POST", "/v1/jit/requests"), ("POST", "/v1/policy/reload")):
        status, data = env.api("viewer", method, path, {})
        assert status == 403 and "lacks role gateway_admin" in str(data["error"]), path
    refused = [r for r in env.admin_calls("/v1/sessions") if r["allowed"] is False]
    assert refused and refused[-1]["identity"] == TD + "viewer"
    status, _ = env.api("algo1", "GET", "/v1/sessions")  # a trading identity is no administrator either
    assert status == 403


def test_sessions_list_shows_identity_zone_sequence_numbers_and_the_last_decision(env: Env) -> None:
    c = env.client()
    c.send("D", [(11, "LIST1"), *ORDER])
    assert c.recv_type(b"8").get(150) == b"0"
    status, data = env.api("admin1", "GET", "/v1/sessions")
    assert status == 200
    [s] = [s for s in data["sessions"] if s["identity"] == TD + "algo1"]  # type: ignore[union-attr]
    assert s["sender_comp_id"] == "ALGO1" and s["logged_on"] is True and s["exchange"]["logged_on"] is True
    assert s["client_seq"]["next_in"] >= 3 and s["messages"]["in"] >= 1 and s["messages"]["out"] >= 1
    assert s["last_decision"]["decision"] == "allow" and s["last_decision"]["msg_type"] == "D"
    allowed = [r for r in env.admin_calls("/v1/sessions") if r["allowed"] is True]
    assert allowed and allowed[-1]["identity"] == TD + "admin1" and allowed[-1]["sessions"] >= 1
    c.close()


def test_kill_switch_over_the_api_blocks_new_orders_at_once_and_cancels_still_pass(env: Env) -> None:
    c = env.client()
    status, data = env.api("admin1", "POST", "/v1/kill-switch",
                           {"on": True, "identities": [TD + "algo1"], "reason": "drill"})
    assert status == 200 and data["identities"] == [TD + "algo1"]
    c.send("D", [(11, "KILLED"), *ORDER])
    er = c.recv_type(b"8")
    assert er.get(39) == b"8" and b"kill" in (er.get(58) or b"")
    c.send("F", [(11, "CXL-K"), (41, "KILLED"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")])
    assert c.recv_type(b"9").get(41) == b"KILLED"  # the cancel reached the exchange (unknown order there)
    status, req = env.api("admin1", "POST", "/v1/kill-switch", {"on": False, "identities": [TD + "algo1"]})
    assert status == 202 and req["state"] == "pending" and req["action"] == "kill_switch_off"
    c.send("D", [(11, "STILL-KILLED"), *ORDER])  # lifting it waits for a second administrator
    assert c.recv_type(b"8").get(39) == b"8"
    status, data = env.api("admin2", "POST", f"/v1/requests/{req['id']}/approve")
    assert status == 200 and data["state"] == "done" and data["approved_by"] == TD + "admin2"
    status, data = env.api("admin2", "GET", "/v1/kill-switch")
    assert status == 200 and data["identities"] == []
    c.send("D", [(11, "ALIVE"), *ORDER])
    assert c.recv_type(b"8").get(150) == b"0"
    on = [r for r in env.admin_calls("/v1/kill-switch") if r.get("allowed") and r.get("on")]
    assert on[-1]["reason"] == "drill" and on[-1]["identities"] == [TD + "algo1"] and on[-1]["status"] == 200
    asked = [r for r in env.admin_calls("/v1/kill-switch") if r.get("action") == "kill_switch_off"]
    assert asked[-1]["status"] == 202 and asked[-1]["request_id"] == req["id"]
    [done] = env.admin_calls(f"/v1/requests/{req['id']}/approve")
    assert done["status"] == 200 and done["requested_by"] == TD + "admin1" and done["identity"] == TD + "admin2"
    status, data = env.api("admin1", "POST", "/v1/kill-switch", {"on": True})
    assert status == 400 and "say what" in str(data["error"])
    c.close()


def test_jit_needs_a_second_administrator_and_ends_by_itself(env: Env) -> None:
    status, req = env.api("admin1", "POST", "/v1/jit/requests",
                          {"identity": TD + "algo1", "minutes": 0.03, "reason": "hotfix window"})
    assert status == 201 and req["state"] == "pending"
    rid = req["id"]
    status, data = env.api("admin1", "POST", f"/v1/jit/requests/{rid}/approve")
    assert status == 409 and "second administrator" in str(data["error"])
    approved_at = time.time()
    status, data = env.api("admin2", "POST", f"/v1/jit/requests/{rid}/approve")
    assert status == 200 and data["state"] == "active" and data["approved_by"] == TD + "admin2"
    grants = json.loads((env.tmp / "state" / "jit.json").read_text())
    assert grants[TD + "algo1"] > time.time()
    status, data = env.api("admin2", "POST", f"/v1/jit/requests/{rid}/approve")
    assert status == 409 and "is active" in str(data["error"])
    # the grant (0.03 minutes = 1.8 s from approval) runs out by itself: watch the request's state
    def state() -> object:
        _, data = env.api("admin2", "GET", "/v1/jit/requests")
        return next(r["state"] for r in data["requests"] if r["id"] == rid)  # type: ignore[union-attr]

    harness.wait_for(lambda: state() == "expired", "the JIT grant to expire", timeout=15)
    assert time.time() >= approved_at + 1.8 - 0.05  # not before its time
    approvals = [r for r in env.admin_calls(f"/v1/jit/requests/{rid}/approve")]
    assert [r["allowed"] for r in approvals] == [False, True, False]
    assert [r["status"] for r in approvals] == [409, 200, 409]
    assert approvals[1]["requested_by"] == TD + "admin1" and approvals[1]["target"] == TD + "algo1"


def test_jit_duration_is_capped_by_config(env: Env) -> None:
    status, data = env.api("admin1", "POST", "/v1/jit/requests",
                           {"identity": TD + "algo1", "minutes": 6, "reason": "too long"})
    assert status == 400 and "at most 5" in str(data["error"]) and "jit_max_minutes" in str(data["error"])
    status, data = env.api("admin1", "POST", "/v1/jit/requests", {"identity": TD + "algo1", "minutes": 5})
    assert status == 400 and "reason" in str(data["error"])
    status, data = env.api("admin1", "POST", "/v1/jit/requests",
                           {"identity": TD + "nobody", "minutes": 1, "reason": "x"})
    assert status == 400 and "not in the identity registry" in str(data["error"])


def test_policy_reload_says_when_there_is_no_policy_file(env: Env) -> None:
    status, data = env.api("admin1", "POST", "/v1/policy/reload")
    assert status == 409 and "allow_all" in str(data["error"])
    assert env.admin_calls("/v1/policy/reload")[-1]["result"] == "no policy file"


def test_fixgw_admin_cli_lists_sessions_and_reports_refusals(env: Env) -> None:
    c = env.client()
    base = [sys.executable, "-m", "gateway", "admin", "--url", f"https://127.0.0.1:{env.admin_port}",
            "--ca", str(env.certs / "ca.crt")]
    me = ["--cert", str(env.certs / "admin1.crt"), "--key", str(env.certs / "admin1.key")]
    r = subprocess.run([*base, *me, "sessions"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("IDENTITY") and "algo1" in r.stdout
    viewer = ["--cert", str(env.certs / "viewer.crt"), "--key", str(env.certs / "viewer.key")]
    r = subprocess.run([*base, *viewer, "kill", "status"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "HTTP 403" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "gateway", "admin", "--url", f"https://127.0.0.1:{harness.free_port()}",
                        "--ca", str(env.certs / "ca.crt"), *me, "sessions"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "cannot reach" in r.stderr
    # lifting the kill switch: one administrator asks, another approves with the id the first was given
    r = subprocess.run([*base, *me, "kill", "on", "--account", "CLI-ACC", "--reason", "cli drill"], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "CLI-ACC" in r.stdout
    r = subprocess.run([*base, *me, "kill", "off", "--account", "CLI-ACC"], cwd=ROOT, capture_output=True, text=True,
                       timeout=30)
    asked = json.loads(r.stdout)
    assert r.returncode == 0 and asked["state"] == "pending" and f"approve {asked['id']}" in r.stderr
    other = ["--cert", str(env.certs / "admin2.crt"), "--key", str(env.certs / "admin2.key")]
    r = subprocess.run([*base, *other, "approve", asked["id"]], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "done"
    r = subprocess.run([*base, *other, "approve", asked["id"]], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "HTTP 409" in r.stderr and "is done" in r.stderr
    r = subprocess.run([*base, *me, "requests"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and asked["id"] in r.stdout
    assert env.api("admin1", "GET", "/v1/kill-switch")[1]["accounts"] == []
    c.close()


def test_revoke_cuts_the_live_session_refuses_reconnects_until_reinstated(env: Env) -> None:
    c = env.client()
    status, data = env.api("admin1", "POST", "/v1/revoke", {"identity": TD + "admin1", "reason": "oops"})
    assert status == 400 and "cannot revoke itself" in str(data["error"])
    status, req = env.api("admin1", "POST", "/v1/revoke", {"identity": TD + "algo1", "reason": "key leaked"})
    assert status == 202 and req["state"] == "pending" and req["identity"] == TD + "algo1"
    c.send("1", [(112, "not-yet")])  # nothing happens before a second administrator approves
    assert c.recv_type(b"0").get(112) == b"not-yet"
    status, data = env.api("admin2", "POST", f"/v1/requests/{req['id']}/approve")
    assert status == 200 and data["state"] == "done"
    assert b"revoked by an administrator" in (c.recv_type(b"5", timeout=5).get(58) or b"")
    again = FixClient(env.gw_port, client_ssl(env.certs, "algo1"), "ALGO1")
    with pytest.raises((ConnectionError, OSError, AssertionError, TimeoutError)):
        again.logon(reset=True)
    persisted = json.loads((env.tmp / "state" / "admin-revoked.json").read_text())
    assert "key leaked" in persisted[TD + "algo1"] and f"approved by {TD}admin2" in persisted[TD + "algo1"]
    status, req = env.api("admin2", "POST", "/v1/reinstate", {"identity": TD + "algo1", "reason": "new key"})
    assert status == 202
    status, _ = env.api("admin1", "POST", f"/v1/requests/{req['id']}/approve")
    assert status == 200
    env.client().close()
    status, data = env.api("admin1", "POST", "/v1/reinstate", {"identity": TD + "algo1"})
    assert status == 404 and "is not revoked" in str(data["error"])
    revoked = [r for r in env.audit() if r["kind"] == "session_revoked" and r["identity"] == TD + "algo1"]
    assert revoked and "key leaked" in str(revoked[-1]["reason"])


def test_metrics_scrape_shows_sessions_decisions_rule_hits_latency_and_leg_state(env: Env) -> None:
    c = env.client()
    c.send("D", [(11, "MET1"), *ORDER])
    assert c.recv_type(b"8").get(150) == b"0"
    conn = http.client.HTTPSConnection("127.0.0.1", env.admin_port, context=client_ssl(env.certs, "viewer"),
                                       timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values['fixgw_decisions_total{decision="allow",direction="outbound"}'] >= 1
    assert any(k.startswith("fixgw_rule_hits_total{") and v >= 1 for k, v in values.items())
    assert values["fixgw_decision_seconds_count"] >= 1
    assert values['fixgw_sessions{state="logged_on"}'] >= 1
    assert values['fixgw_upstream_logged_on{session="FIX.4.4/ALGO1/FIXGW"}'] == 1
    assert "fixgw_audit_write_lag_records" in values
    assert f'fixgw_posture_age_seconds{{identity="{TD}algo1"}}' in values
    c.close()


def test_every_call_is_audited_once_with_its_status_bad_requests_unknown_paths_and_scrapes_too(env: Env) -> None:
    def calls() -> list[dict[str, object]]:
        return [r for r in env.audit() if r["kind"] == "admin_call"]

    before = len(calls())
    assert env.api("admin1", "POST", "/v1/kill-switch", {"on": "yes"})[0] == 400
    assert env.api("admin1", "POST", "/v1/revoke", {"identity": 7})[0] == 400
    assert env.api("admin1", "GET", "/v1/no-such-endpoint")[0] == 404
    assert env.api("admin1", "DELETE", "/v1/sessions")[0] == 405
    assert env.api("admin1", "POST", "/v1/requests/nope/approve")[0] == 404
    for _ in range(3):
        conn = http.client.HTTPSConnection("127.0.0.1", env.admin_port, context=client_ssl(env.certs, "viewer"),
                                           timeout=10)
        conn.request("GET", "/metrics")
        assert conn.getresponse().status == 200
        conn.close()
    harness.wait_for(lambda: len(calls()) >= before + 8, "8 new admin_call records, one per call")
    new = calls()[before:]
    assert [(r["method"], r["path"], r["status"], r["allowed"]) for r in new] == [
        ("POST", "/v1/kill-switch", 400, False), ("POST", "/v1/revoke", 400, False),
        ("GET", "/v1/no-such-endpoint", 404, False), ("DELETE", "/v1/sessions", 405, False),
        ("POST", "/v1/requests/nope/approve", 404, False),
        ("GET", "/metrics", 200, True), ("GET", "/metrics", 200, True), ("GET", "/metrics", 200, True)]
    assert all(r["identity"] == TD + ("viewer" if r["path"] == "/metrics" else "admin1") for r in new)
    assert "say" in str(new[0]["error"]) and str(new[2]["error"]) == "Not Found"
    assert all(str(r["peer"]).startswith("127.0.0.1") for r in new)


def test_the_two_person_rule_refuses_self_approval_the_target_and_a_requester_who_lost_the_right() -> None:
    from gateway.core import approvals
    from gateway.core.approvals import REVOKE, Request

    req = Request("r1", REVOKE, TD + "admin2", "why", TD + "admin1", 1000.0)
    assert "second administrator" in str(approvals.refusal(req, TD + "admin1", 1001.0, None))
    assert "about itself" in str(approvals.refusal(req, TD + "admin2", 1001.0, None))
    assert "may no longer act: revoked" in str(approvals.refusal(req, TD + "admin3", 1001.0, "revoked"))
    assert approvals.refusal(req, TD + "admin3", 1000.0 + approvals.REQUEST_TTL + 1, None) == "the request is lapsed"
    assert approvals.refusal(req, TD + "admin3", 1001.0, None) is None
    approvals.approve(req, TD + "admin3", 1002.0)
    assert req.state(1003.0) == "done" and approvals.refusal(req, TD + "admin4", 1003.0, None) == "the request is done"
    jit = Request("r2", approvals.JIT, TD + "algo1", "why", TD + "admin1", 1000.0, {"minutes": 1.0})
    approvals.approve(jit, TD + "admin2", 1010.0)
    assert jit.expires_at == 1070.0 and jit.state(1069.0) == "active" and jit.state(1070.0) == "expired"
