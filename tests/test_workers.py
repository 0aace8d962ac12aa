"""Several worker processes: partition, hand-off between workers, one chain per worker, crash isolation.

Real processes throughout: the supervisor (`fixgw run` with ``workers = 2``),
its two workers listening on one port with SO_REUSEPORT, the exchange
simulator, and mutual-TLS clients.  The kernel picks the worker that accepts
each connection, so a client often lands on the worker that does not own its
identity: those sessions must be handed off and work exactly the same.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.core.partition import partition
from gateway.edges import config as config_mod
from gateway.edges import pki
from gateway.edges.config import ConfigError
from tests import harness
from tests.harness import FixClient, client_ssl

NOS = [(11, "ORD"), (21, "1"), (38, "100"), (40, "2"), (44, "10.25"), (54, "1"), (55, "INTC"),
       (60, "20240101-00:00:00")]
NAMES = ["algo1", "algo2", "algo3", "algo4"]
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


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free ports (worker K's admin API is on admin.port + K)."""
    import socket

    for _ in range(100):
        base = harness.free_port()
        socks = []
        try:
            for k in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no consecutive free ports")


# -- partition (pure) ----------------------------------------------------------------------
def _cfg(workers: int, idents: list[dict[str, object]]) -> config_mod.Config:
    cfg = msgspec.convert({"gateway": {"workers": workers}, "identities": idents}, config_mod.Config)
    cfg.path = "gw.toml"
    return cfg


def _ident(name: str, comp_ids: list[str], worker: int | None = None) -> dict[str, object]:
    d: dict[str, object] = {"id": f"spiffe://fixgw.dev/client/{name}", "comp_ids": comp_ids}
    if worker is not None:
        d["worker"] = worker
    return d


def test_identities_are_spread_evenly_over_workers_in_config_order() -> None:
    p = partition(_cfg(2, [_ident(n, [n.upper()]) for n in NAMES]))
    assert [p.owner_of_identity(f"spiffe://fixgw.dev/client/{n}") for n in NAMES] == [0, 1, 0, 1]
    assert p.owner_of_session("ALGO2") == 1
    assert p.owner_of_session("NOBODY") == 0
    assert p.owner_of_identity("spiffe://fixgw.dev/client/stranger") == -1


def test_identities_sharing_a_comp_id_stay_on_one_worker() -> None:
    p = partition(_cfg(2, [_ident("a", ["A", "SHARED"]), _ident("b", ["B"]), _ident("c", ["SHARED", "C"])]))
    a, b, c = (p.owner_of_identity(f"spiffe://fixgw.dev/client/{n}") for n in "abc")
    assert a == c != b
    assert p.owner_of_session("C") == p.owner_of_session("A") == a


def test_an_explicit_worker_wins_and_the_rest_fill_around_it() -> None:
    p = partition(_cfg(2, [_ident("a", ["A"], worker=1), _ident("b", ["B"]), _ident("c", ["C"])]))
    assert [p.owner_of_identity(f"spiffe://fixgw.dev/client/{n}") for n in "abc"] == [1, 0, 0]


def test_conflicting_explicit_workers_for_a_shared_comp_id_are_a_config_error() -> None:
    with pytest.raises(ConfigError) as e:
        partition(_cfg(2, [_ident("a", ["X"], worker=0), _ident("b", ["X"], worker=1)]))
    assert "identities[1].worker" in str(e.value) and "same worker" in str(e.value)


def test_a_worker_index_out_of_range_names_the_key(tmp_path: Path) -> None:
    certs = harness.make_pki(tmp_path / "certs")
    ident = '[[identities]]\nid = "spiffe://fixgw.dev/client/algo1"\ncomp_ids = ["ALGO1"]\nworker = 5\n'
    cfg = harness.trading_config(tmp_path, certs, harness.free_port(), harness.free_port(), clients=("ALGO1",),
                                 identities=ident, gateway_extra="workers = 2")
    r = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=30, cwd=harness.ROOT)
    assert r.returncode == 2
    assert "identities[0].worker" in r.stderr and "0-1" in r.stderr and "Traceback" not in r.stderr


# -- two workers, real processes -----------------------------------------------------------
@dataclass
class World:
    tmp: Path
    certs: Path
    gw_port: int
    admin_port: int
    gw: harness.Proc
    sim: harness.Proc

    def post_posture(self, worker: int, identity: str, level: str) -> tuple[int, dict[str, object]]:
        import http.client
        import json

        conn = http.client.HTTPSConnection("127.0.0.1", self.admin_port + worker,
                                           context=client_ssl(self.certs, "posture-agent"), timeout=10)
        conn.request("POST", "/v1/posture", body=json.dumps({"identity": identity, "level": level}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = json.loads(resp.read() or b"{}")
        conn.close()
        return resp.status, data

    def client(self, name: str, source: str = "127.0.0.1") -> FixClient:
        return FixClient(self.gw_port, client_ssl(self.certs, name), name.upper(), source=source)

    def workers(self) -> list[int]:
        from bench.multicore import children

        return children(self.gw.proc.pid)

    def chain(self, k: int) -> list[dict[str, object]]:
        return harness.audit_records(self.tmp / "state" / "audit" / f"worker-{k}")

    def folder(self, k: int) -> Path:
        return self.tmp / "state" / "audit" / f"worker-{k}"

    def wait_record(self, k: int, pred: Callable[[dict[str, Any]], object], what: str) -> dict[str, Any]:
        return harness.wait_record(self.folder(k), pred, what, proc=self.gw)

    def scrape(self, worker: int, name: str = "posture-agent") -> int:
        """GET /metrics on ``worker``'s admin API with ``name``'s certificate: the HTTP status (every call
        leaves one admin_call record in that worker's chain; a revoked identity gets 403)."""
        import http.client

        conn = http.client.HTTPSConnection("127.0.0.1", self.admin_port + worker,
                                           context=client_ssl(self.certs, name), timeout=10)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def barrier(self, k: int) -> int:
        """The seq of a record worker ``k`` writes now (a /metrics scrape's): every record it queued
        before is in its chain ahead of it, on disk once this one is."""
        def scrapes() -> list[dict[str, Any]]:
            return [r for r in harness.read_records(self.folder(k))
                    if r["kind"] == "admin_call" and r["path"] == "/metrics"]

        seen = len(scrapes())
        assert self.scrape(k) == 200
        return int(harness.wait_for(lambda: scrapes()[seen:], f"worker {k}'s admin_call record of a /metrics scrape",
                                    proc=self.gw)[0]["seq"])


def trade(c: FixClient, cl_ord_id: str) -> None:
    c.send("D", [(11, cl_ord_id), *NOS[1:]])
    new = c.recv_type(b"8")
    fill = c.recv_type(b"8")
    assert new.get(11) == fill.get(11) == cl_ord_id.encode()
    assert {new.get(39), fill.get(39)} == {b"0", b"2"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("workers")
    certs = harness.make_pki(tmp / "certs")
    for n in [*NAMES[2:], "posture-agent"]:
        pki.issue(certs, n)
    identities = "".join(f'[[identities]]\nid = "{TD}{n}"\ncomp_ids = ["{n.upper()}"]\nroles = ["algo"]\n'
                         for n in NAMES)
    identities += f'[[identities]]\nid = "{TD}posture-agent"\ncomp_ids = []\nroles = ["posture_agent"]\n'
    gw_port, sim_port, admin_port = harness.free_port(), harness.free_port(), free_ports(2)
    (tmp / "policy.toml").write_text(POLICY)
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, clients=tuple(n.upper() for n in NAMES),
                                 identities=identities, reset_on_logon=True, gateway_extra="workers = 2",
                                 extra=f"[admin]\nport = {admin_port}\n")
    cfg.write_text(cfg.read_text().replace("[policy]\nallow_all = true", f'[policy]\nfile = "{tmp}/policy.toml"'))
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp / "sim.log", sim_port)
    gw = harness.start(["run", "--config", str(cfg)], tmp / "gw.log", gw_port)
    w = World(tmp, certs, gw_port, admin_port, gw, sim)
    try:
        harness.wait_for(lambda: len(w.workers()) == 2, "the supervisor to start 2 workers", proc=gw)
        harness.wait_for(lambda: {e.get("worker") for e in harness.log_events(tmp / "gw.log")
                                  if e.get("event") == "listening"} >= {0, 1},
                         "both workers to listen (their 'listening' log lines)", proc=gw)
        harness.wait_legs_logged_on(tmp / "gw.log", len(NAMES), gw)
        yield w
    finally:
        gw.stop()
        sim.stop()


def test_every_session_trades_whichever_worker_accepts_its_connection(world: World) -> None:
    # 4 identities x 5 connections from 4 source addresses: the kernel spreads them over the
    # workers, so about half land on the worker that does not own the identity
    for round_ in range(5):
        for i, name in enumerate(NAMES):
            c = world.client(name, source=f"127.0.0.{2 + i}")
            try:
                c.logon(reset=True)
                trade(c, f"{name}-{round_}")
                c.send("5", [])
                c.recv_type(b"5")
            finally:
                c.close()
    chains = [world.chain(0), world.chain(1)]
    for k, chain in enumerate(chains):
        decided = {r["identity"] for r in chain if r["kind"] == "decision" and r.get("direction") == "outbound"}
        owned = {f"spiffe://fixgw.dev/client/{n}" for j, n in enumerate(NAMES) if j % 2 == k}
        assert decided == owned, f"worker {k} decided for {decided}, owns {owned}"
        for r in chain:  # the owner sees the client's real address, also for handed-off sessions
            if r["kind"] == "decision" and r.get("direction") == "outbound":
                assert str(r["peer"]).startswith("127.0.0.") and r["peer"] != "127.0.0.1"
    handed = [r for chain in chains for r in chain if r["kind"] == "connection_handed_off"]
    assert handed, "20 connections and not one landed on the other worker"
    for r in handed:
        name = str(r["identity"]).rsplit("/", 1)[1]
        assert r["worker"] == NAMES.index(name) % 2
    fills = sum(1 for chain in chains for r in chain
                if r["kind"] == "decision" and r.get("direction") == "inbound" and r.get("ord_status") == "2")
    assert fills == 20


def test_audit_verify_checks_each_workers_chain(world: World) -> None:
    r = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", str(world.tmp / "state" / "audit"),
                        "--pubkey", str(world.tmp / "state" / "audit" / "worker-0" / "audit.pub"),
                        "--allow-open-tail"],  # the gateway is running
                       capture_output=True, text=True, timeout=60, cwd=harness.ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "worker-0:" in r.stdout and "worker-1:" in r.stdout and r.stdout.count("chain intact") == 2
    q = subprocess.run([sys.executable, "-m", "gateway", "audit", "query", str(world.tmp / "state" / "audit"),
                        "--kind", "gateway_started", "--format", "json"],
                       capture_output=True, text=True, timeout=60, cwd=harness.ROOT)
    assert q.returncode == 0, q.stderr
    assert '"worker-0"' in q.stdout and '"worker-1"' in q.stdout


def test_a_tampered_worker_chain_fails_verification_by_name(world: World, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "audit"
    shutil.copytree(world.tmp / "state" / "audit", copy)
    seg = sorted((copy / "worker-1").glob("audit-*.jsonl"))[0]
    lines = seg.read_text().splitlines()
    lines[2] = lines[2].replace('"kind":', '"kind":"x","was":', 1)
    seg.write_text("\n".join(lines) + "\n")
    r = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", str(copy), "--pubkey",
                        str(world.tmp / "state" / "audit" / "worker-0" / "audit.pub"), "--allow-open-tail"],
                       capture_output=True, text=True, timeout=60, cwd=harness.ROOT)
    assert r.returncode == 1
    assert "worker-0:" in r.stdout and "chain intact" in r.stdout.split("worker-1:")[0]
    assert "FAILED" in r.stdout.split("worker-1:")[1]


def test_a_worker_killed_mid_session_is_restarted_and_the_other_workers_sessions_keep_trading(
        world: World) -> None:
    # a session on each worker, each connection retried until it lands on its owner, so that
    # killing one worker cannot take the other's session down with its relay
    def direct(name: str, owner: int) -> FixClient:
        other = 1 - owner
        mark = world.barrier(other)
        for attempt in range(40):
            c = world.client(name, source=f"127.0.1.{attempt + 1}")
            c.logon(reset=True)
            # a worker that hands a connection off records it before the Logon can reach the owner, so
            # the record the other worker writes after the Logon's answer comes after any hand-off
            nxt = world.barrier(other)
            if not any(r["kind"] == "connection_handed_off" and mark < int(r["seq"]) < nxt
                       for r in harness.read_records(world.folder(other))):
                return c
            mark = nxt
            c.close()
        raise AssertionError(f"{name} never landed on worker {owner}")

    survivor = direct("algo1", 0)
    victim = direct("algo2", 1)
    try:
        trade(survivor, "before-kill")
        pids = world.workers()
        assert len(pids) == 2
        # which pid is worker 1: the one whose environment/args say --index 1
        w1 = next(p for p in pids if "--index\x001\x00" in Path(f"/proc/{p}/cmdline").read_text())
        log = world.tmp / "gw.log"
        legs = {e["leg"] for e in harness.log_events(log)
                if e.get("event") == "upstream_logon" and e.get("worker") == 1}
        assert legs, "worker 1 logged no exchange leg on"
        offset = log.stat().st_size  # what the new worker 1 logs comes after this
        os.kill(w1, signal.SIGKILL)
        assert victim.recv(10) is None  # its session is gone with its worker
        trade(survivor, "after-kill")  # the other worker never noticed
        harness.wait_for(lambda: len(pids := world.workers()) == 2 and w1 not in pids,
                         "the supervisor to restart worker 1", 20, proc=world.gw)

        def restarted() -> bool:  # the new worker 1 listens, and its exchange legs logged on again
            events = [e for e in harness.log_events(log, offset) if e.get("worker") == 1]
            return (any(e.get("event") == "listening" for e in events)
                    and legs <= {e.get("leg") for e in events if e.get("event") == "upstream_logon"})

        harness.wait_for(restarted, f"the new worker 1 to listen and log its exchange legs {sorted(legs)} on",
                         20, proc=world.gw)
        again = world.client("algo2", source="127.0.0.9")
        try:
            again.logon(reset=True)
            trade(again, "after-restart")
        finally:
            again.close()
    finally:
        survivor.close()
        victim.close()


def test_posture_pushed_to_one_workers_admin_api_cuts_a_session_on_the_other(world: World) -> None:
    # algo2 is worker 1's; the posture agent talks to worker 0's admin API only
    c = world.client("algo2", source="127.0.0.20")
    try:
        c.logon(reset=True)
        trade(c, "posture-before")
        t0 = time.monotonic()
        status, data = world.post_posture(0, TD + "algo2", "non-compliant")
        assert (status, data) == (200, {"accepted": 1})
        logout = c.recv_type(b"5", timeout=5)
        assert b"non-compliant" in (logout.get(58) or b"") and time.monotonic() - t0 < 1.0
    finally:
        c.close()
        world.post_posture(0, TD + "algo2", "compliant")
    shared = world.wait_record(1, lambda r: r["kind"] == "posture_shared", "worker 1's posture_shared record")
    assert shared["origin_worker"] == 0
    world.wait_record(1, lambda r: r["kind"] == "session_revoked" and r["identity"] == TD + "algo2",
                      "worker 1's session_revoked record for algo2")
    world.wait_record(0, lambda r: r["kind"] == "admin_call" and r["path"] == "/v1/posture",
                      "worker 0's admin_call record of POST /v1/posture")


def test_an_identity_revoked_through_one_worker_is_refused_by_all(world: World) -> None:
    import json

    # what POST /v1/revoke on any worker writes: every worker re-reads it
    state = world.tmp / "state" / "admin-revoked.json"
    state.write_text(json.dumps({TD + "algo3": "test: stolen laptop (by test)"}))
    # each worker re-reads it within revocation.check_interval: its admin API refuses algo3 from then on
    for k in (0, 1):
        harness.wait_for(lambda k=k: world.scrape(k, "algo3") == 403,
                         f"worker {k} to re-read admin-revoked.json (its admin API refusing algo3)",
                         interval=0.05, proc=world.gw)
    try:
        for i in range(4):  # whichever worker accepts, the connection is refused
            c = world.client("algo3", source=f"127.0.2.{i + 1}")
            try:
                c.send("A", [(98, "0"), (108, "30"), (141, "Y")])
                assert c.recv(5) is None
            finally:
                c.close()
    finally:
        state.write_text("{}")
        for k in (0, 1):  # reinstated everywhere before the next test
            harness.wait_for(lambda k=k: world.scrape(k, "algo3") == 200,
                             f"worker {k} to re-read admin-revoked.json (its admin API serving algo3 again)",
                             interval=0.05, proc=world.gw)

    def refused() -> list[dict[str, Any]]:
        return [r for k in (0, 1) for r in harness.read_records(world.folder(k)) if r["kind"] == "connection_refused"
                and "revoked by an administrator" in str(r.get("reason"))]

    harness.wait_for(lambda: len(refused()) >= 4, "4 connection_refused records naming the revocation",
                     proc=world.gw)
    assert len(refused()) == 4 and all(r["identity"] == TD + "algo3" for r in refused())


def test_a_second_gateway_on_the_same_port_is_refused_not_let_in_to_share_it(world: World) -> None:
    # the workers' SO_REUSEPORT would let a second gateway of the same user share the port
    r = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(world.tmp / "trading.toml")],
                       capture_output=True, text=True, timeout=30, cwd=harness.ROOT)
    assert r.returncode == 2 and "cannot listen" in r.stderr and "Traceback" not in r.stderr
    assert len(world.workers()) == 2


def test_sigterm_stops_the_supervisor_and_every_worker(world: World) -> None:
    pids = world.workers()
    assert world.gw.stop(20) == 0
    for p in pids:
        assert not Path(f"/proc/{p}").exists() or "zombie" in Path(f"/proc/{p}/status").read_text()
    for k in (0, 1):
        assert world.chain(k)[-1]["kind"] in ("gateway_stopped", "checkpoint")
