"""Posture between workers (issue 15 item 5): a push is answered 200 only once every worker applied it.

Real processes: the supervisor (``fixgw run`` with ``workers = 2``), its two workers, the exchange
simulator, mutual-TLS clients and a posture agent calling worker 0's admin API over HTTPS.  ALGO1 is
pinned to worker 0, ALGO2 to worker 1, so every push below has to cross from worker 0 to worker 1.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.edges import pki
from tests import harness
from tests.harness import FixClient, client_ssl
from tests.test_workers import free_ports

TD = "spiffe://fixgw.dev/client/"
POLICY = """
[posture]
ttl = 300
logout_on = ["non-compliant"]
[actions.order_entry]
msg_types = ["D", "F"]
[actions.receive_executions]
msg_types = ["8", "9"]
direction = "inbound"
[[rules]]
id = "algos-trade"
roles = ["algo"]
actions = ["order_entry"]
decision = "allow"
[[rules]]
id = "algos-hear-back"
roles = ["algo"]
actions = ["receive_executions"]
decision = "allow"
"""
BODY_LIMIT = 1024 * 1024  # the admin API's request body limit (aiohttp's client_max_size)


@dataclass
class World:
    tmp: Path
    certs: Path
    port: int
    admin: int
    gw: harness.Proc

    def push(self, items: list[dict[str, str]] | bytes, worker: int = 0) -> tuple[int, dict[str, object]]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.admin + worker,
                                           context=client_ssl(self.certs, "posture-agent"), timeout=30)
        conn.request("POST", "/v1/posture", body=items if isinstance(items, bytes) else json.dumps(items),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        try:
            return resp.status, json.loads(raw or b"{}")
        except ValueError:
            return resp.status, {"not_json": raw.decode(errors="replace")}

    def chain(self, k: int) -> list[dict[str, object]]:
        return harness.audit_records(self.tmp / "state" / "audit" / f"worker-{k}")

    def wait(self, k: int, pred: Callable[[list[dict[str, object]]], object], what: str,
             timeout: float = 15.0) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while True:
            records = self.chain(k)
            if pred(records):
                return records
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what} in worker {k}'s chain")
            time.sleep(0.05)

    def worker_pid(self, k: int) -> int:
        from bench.multicore import children

        for pid in children(self.gw.proc.pid):
            if f"--index\x00{k}\x00" in Path(f"/proc/{pid}/cmdline").read_text():
                return pid
        raise AssertionError(f"worker {k} is not running")

    def client(self, name: str) -> FixClient:
        c = FixClient(self.port, client_ssl(self.certs, name), name.upper())
        c.logon(reset=True)
        return c


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("workers-posture")
    certs = harness.make_pki(tmp / "certs")
    pki.issue(certs, "posture-agent")
    identities = "".join(f'[[identities]]\nid = "{TD}{n}"\ncomp_ids = ["{n.upper()}"]\nroles = ["algo"]\n'
                         f"worker = {k}\n" for k, n in enumerate(("algo1", "algo2")))
    identities += f'[[identities]]\nid = "{TD}posture-agent"\ncomp_ids = []\nroles = ["posture_agent"]\n'
    port, sim_port, admin = harness.free_port(), harness.free_port(), free_ports(2)
    (tmp / "policy.toml").write_text(POLICY)
    cfg = harness.trading_config(tmp, certs, port, sim_port, clients=("ALGO1", "ALGO2"), identities=identities,
                                 reset_on_logon=True, gateway_extra="workers = 2", extra=f"[admin]\nport = {admin}\n")
    cfg.write_text(cfg.read_text().replace("[policy]\nallow_all = true", f'[policy]\nfile = "{tmp}/policy.toml"'))
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp / "sim.log", sim_port)
    gw = harness.start(["run", "--config", str(cfg)], tmp / "gw.log", port)
    w = World(tmp, certs, port, admin, gw)
    try:
        for k in (0, 1):  # both workers up: admin API listening, exchange leg logged on
            harness.wait_port(admin + k)
            w.wait(k, lambda rs: any(r["kind"] == "upstream_logon" for r in rs), "the exchange leg's logon")
        yield w
    finally:
        gw.stop(20)
        sim.stop()


def test_a_batch_over_16_kib_is_applied_by_every_worker_before_the_200(world: World) -> None:
    c = world.client("algo2")  # a session of worker 1
    try:
        batch = [{"identity": f"{TD}device-{i:04d}", "level": "compliant"} for i in range(400)]
        batch.append({"identity": TD + "algo2", "level": "non-compliant"})
        assert len(json.dumps(batch)) > 16 * 1024
        assert world.push(batch) == (200, {"accepted": 401})
        # worker 1 applied it before worker 0 answered: its Logout is already on the way
        logout = c.recv_type(b"5", timeout=5)
        assert b"non-compliant" in (logout.get(58) or b"")
    finally:
        c.close()
        assert world.push([{"identity": TD + "algo2", "level": "compliant"}])[0] == 200
    shared = world.wait(1, lambda rs: any(r["kind"] == "session_revoked" for r in rs), "session_revoked")
    told = [a for r in shared if r["kind"] == "posture_shared" for a in r["assertions"]]  # type: ignore[attr-defined]
    assert f"{TD}algo2=non-compliant" in told and f"{TD}device-0399=compliant" in told


def test_a_worker_that_cannot_apply_a_push_makes_it_a_503_naming_it(world: World) -> None:
    pid = world.worker_pid(1)
    before = sum(1 for r in world.chain(1) if r["kind"] == "posture_shared")
    os.kill(pid, signal.SIGSTOP)  # worker 1 reads nothing now
    try:
        t0 = time.monotonic()
        status, body = world.push([{"identity": TD + "algo2", "level": "compliant"}])
        assert status == 503 and "[1]" in str(body["error"]), body
        assert time.monotonic() - t0 < 15
    finally:
        os.kill(pid, signal.SIGCONT)
    # the stream waited in its inbox: worker 1 applies it once it runs again, and a retry is a 200
    world.wait(1, lambda rs: sum(1 for r in rs if r["kind"] == "posture_shared") > before, "the late push")
    assert world.push([{"identity": TD + "algo2", "level": "compliant"}]) == (200, {"accepted": 1})
    refused = [r for r in world.chain(0) if r["kind"] == "admin_call" and r.get("workers_not_reached") == [1]]
    assert refused and refused[-1]["allowed"] is False


def test_a_batch_above_the_body_limit_is_413_naming_the_limit_and_audited(world: World) -> None:
    n = BODY_LIMIT // 60 + 100
    body = json.dumps([{"identity": f"{TD}device-{i:06d}", "level": "compliant"} for i in range(n)]).encode()
    assert len(body) > BODY_LIMIT
    status, answer = world.push(body)
    assert status == 413 and answer.get("limit_bytes") == BODY_LIMIT and str(BODY_LIMIT) in str(answer["error"])
    world.wait(0, lambda rs: any(r["kind"] == "admin_call" and r.get("allowed") is False
                                 and r.get("status") == 413 and str(BODY_LIMIT) in str(r.get("error"))
                                 for r in rs), "the refused call")
