"""Audit replication to a real nats-server with JetStream: stop it mid-stream, restart it,
nothing is lost and nothing is duplicated; the replicated chain verifies from NATS."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.edges.replicate import fetch_stream
from tests import harness
from tests.harness import FixClient, client_ssl

NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"


def start_nats(port: int, store: Path) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([NATS, "-js", "-p", str(port), "-a", "127.0.0.1", "-sd", str(store)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    harness.wait_port(port, timeout=15)
    return p


def local_seqs(audit: Path) -> list[int]:
    return [int(r["seq"]) for r in harness.read_records(audit)]


def wait_replicated(url: str, audit: Path, timeout: float = 30) -> list[tuple[int, bytes]]:
    """The stream's messages once they are exactly the local segments' records (the consumer caught up)."""
    got: list[tuple[int, bytes]] = []

    def caught_up() -> bool:
        nonlocal got
        got = asyncio.run(fetch_stream(url, "FIXGW_AUDIT"))
        return [json.loads(d)["seq"] for _, d in got] == local_seqs(audit)

    try:
        harness.wait_for(caught_up, "the NATS stream to hold exactly the local audit records", timeout,
                         interval=0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: NATS has seqs {[json.loads(d)['seq'] for _, d in got]}, "
                             f"the local segments {local_seqs(audit)}") from None
    return got


BASE = [(21, "1"), (38, "10"), (40, "2"), (44, "10"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")]


@dataclass
class World:
    """A real nats-server, the simulator and a gateway replicating its audit stream to that server."""

    tmp: Path
    certs: Path
    gw_port: int
    nats_port: int
    audit: Path
    nats: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"


@contextmanager
def running(tmp_path: Path, gateway_extra: str = "") -> Iterator[World]:
    if not Path(NATS).exists():
        pytest.fail("nats-server is missing: run `make system-deps` (Debian: apt-get install -y nats-server)")
    certs = harness.make_pki(tmp_path / "certs")
    gw_port, sim_port, nats_port = harness.free_port(), harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, reset_on_logon=True,
                                 gateway_extra=gateway_extra)
    audit = tmp_path / "state" / "audit"
    url = f"nats://127.0.0.1:{nats_port}"
    cfg.write_text(cfg.read_text().replace(f'dir = "{audit}"', f'dir = "{audit}"\n[audit.nats]\nurl = "{url}"'))
    w = World(tmp_path, certs, gw_port, nats_port, audit, start_nats(nats_port, tmp_path / "js"))
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp_path / "sim.log", sim_port)
    gw = harness.start(["run", "--config", str(cfg)], tmp_path / "gw.log", gw_port)
    try:
        harness.wait_legs_logged_on(tmp_path / "gw.log", 2, gw)
        yield w
    finally:
        gw.stop()
        sim.stop()
        w.nats.terminate()
        w.nats.wait(5)


def trade(c: FixClient, prefix: str, n: int) -> None:
    for i in range(n):
        c.send("D", [(11, f"{prefix}{i}"), *BASE])
        c.recv_type(b"8")
        c.recv_type(b"8")


def verify_nats(url: str, pubkey: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", "--nats", url, "--pubkey", str(pubkey),
                           "--allow-open-tail"],  # the gateway is still running
                          cwd=harness.ROOT, capture_output=True, text=True)


def test_replication_survives_a_nats_outage_without_loss_or_duplicates(tmp_path: Path) -> None:
    with running(tmp_path) as w:
        c = FixClient(w.gw_port, client_ssl(w.certs, "algo1"), "ALGO1")
        c.logon(reset=True)
        trade(c, "A", 5)
        first = wait_replicated(w.url, w.audit)  # equal to the local records then (a checkpoint may follow any time)
        assert first
        w.nats.kill()  # NATS goes away mid-stream
        w.nats.wait(5)
        trade(c, "B", 10)  # the gateway keeps trading; records spool in the local segments
        w.nats = start_nats(w.nats_port, tmp_path / "js")
        msgs = wait_replicated(w.url, w.audit)  # NATS holds exactly the local records
        seqs = [json.loads(d)["seq"] for _, d in msgs]
        assert seqs == list(range(1, len(seqs) + 1)), "lost or duplicated records"
        assert len(seqs) > len(first)
        r = verify_nats(w.url, w.audit / "audit.pub")
        assert r.returncode == 0 and "chain intact" in r.stdout, r.stdout + r.stderr


def test_with_two_workers_the_stream_holds_two_chains_and_each_verifies(tmp_path: Path) -> None:
    """Each worker keeps its own chain and replicates it into the one stream, interleaved; the records
    name their chain (``Fixgw-Chain``), so ``verify --nats`` takes the stream apart and verifies each,
    with anchor names that match the local folder's (``worker-0``, ``worker-1``)."""
    with running(tmp_path, gateway_extra="workers = 2") as w:
        for name in ("algo1", "algo2"):  # one identity per worker
            c = FixClient(w.gw_port, client_ssl(w.certs, name), name.upper())
            c.logon(reset=True)
            trade(c, f"{name}-", 3)
            c.close()
        folders = [w.audit / "worker-0", w.audit / "worker-1"]
        for f in folders:
            harness.wait_for(lambda f=f: any(r.get("cl_ord_id", "").startswith("algo")  # type: ignore[misc]
                                             for r in harness.read_records(f)), f"orders in {f.name}")

        def replicated() -> bool:
            return len(asyncio.run(fetch_stream(w.url, "FIXGW_AUDIT"))) >= sum(len(local_seqs(f)) for f in folders)

        harness.wait_for(replicated, "both workers' records in the stream", 30, interval=0.05)
        r = verify_nats(w.url, folders[0] / "audit.pub")
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert "worker-0: " in out and "worker-1: " in out and out.count("chain intact") == 2, out
        assert "anchor worker-0=" in out and "anchor worker-1=" in out, out
