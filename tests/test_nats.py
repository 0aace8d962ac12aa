"""Audit replication to a real nats-server with JetStream: stop it mid-stream, restart it,
nothing is lost and nothing is duplicated; the replicated chain verifies from NATS."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
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


def test_replication_survives_a_nats_outage_without_loss_or_duplicates(tmp_path: Path) -> None:
    if not Path(NATS).exists():
        pytest.fail("nats-server is missing: run `make system-deps` (Debian: apt-get install -y nats-server)")
    certs = harness.make_pki(tmp_path / "certs")
    gw_port, sim_port, nats_port = harness.free_port(), harness.free_port(), harness.free_port()
    url = f"nats://127.0.0.1:{nats_port}"
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, reset_on_logon=True)
    audit = tmp_path / "state" / "audit"
    cfg.write_text(cfg.read_text().replace(f'dir = "{audit}"', f'dir = "{audit}"\n[audit.nats]\nurl = "{url}"'))
    nats = start_nats(nats_port, tmp_path / "js")
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp_path / "sim.log", sim_port)
    gw = harness.start(["run", "--config", str(cfg)], tmp_path / "gw.log", gw_port)
    base = [(21, "1"), (38, "10"), (40, "2"), (44, "10"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")]
    try:
        harness.wait_legs_logged_on(tmp_path / "gw.log", 2, gw)
        c = FixClient(gw_port, client_ssl(certs, "algo1"), "ALGO1")
        c.logon(reset=True)

        def trade(prefix: str, n: int) -> None:
            for i in range(n):
                c.send("D", [(11, f"{prefix}{i}"), *base])
                c.recv_type(b"8")
                c.recv_type(b"8")

        trade("A", 5)
        first = wait_replicated(url, audit)  # equal to the local records then (a checkpoint may follow any time)
        assert first
        nats.kill()  # NATS goes away mid-stream
        nats.wait(5)
        trade("B", 10)  # the gateway keeps trading; records spool in the local segments
        nats = start_nats(nats_port, tmp_path / "js")
        msgs = wait_replicated(url, audit)  # NATS holds exactly the local records
        seqs = [json.loads(d)["seq"] for _, d in msgs]
        assert seqs == list(range(1, len(seqs) + 1)), "lost or duplicated records"
        assert len(seqs) > len(first)
        r = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", "--nats", url,
                            "--pubkey", str(audit / "audit.pub"), "--allow-open-tail"],  # the gateway is running
                           cwd=harness.ROOT, capture_output=True, text=True)
        assert r.returncode == 0 and "chain intact" in r.stdout, r.stdout + r.stderr
    finally:
        gw.stop()
        sim.stop()
        nats.terminate()
        nats.wait(5)


def test_with_two_workers_the_stream_holds_two_chains_and_each_verifies(tmp_path: Path) -> None:
    """Each worker keeps its own chain and replicates it into the one stream, interleaved; the records
    name their chain (``Fixgw-Chain``), so ``verify --nats`` takes the stream apart and verifies each,
    with anchor names that match the local folder's (``worker-0``, ``worker-1``)."""
    if not Path(NATS).exists():
        pytest.fail("nats-server is missing: run `make system-deps` (Debian: apt-get install -y nats-server)")
    certs = harness.make_pki(tmp_path / "certs")
    gw_port, sim_port, nats_port = harness.free_port(), harness.free_port(), harness.free_port()
    url = f"nats://127.0.0.1:{nats_port}"
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, reset_on_logon=True, gateway_extra="workers = 2")
    audit = tmp_path / "state" / "audit"
    cfg.write_text(cfg.read_text().replace(f'dir = "{audit}"', f'dir = "{audit}"\n[audit.nats]\nurl = "{url}"'))
    nats = start_nats(nats_port, tmp_path / "js")
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp_path / "sim.log", sim_port)
    gw = harness.start(["run", "--config", str(cfg)], tmp_path / "gw.log", gw_port)
    base = [(21, "1"), (38, "10"), (40, "2"), (44, "10"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")]
    try:
        harness.wait_legs_logged_on(tmp_path / "gw.log", 2, gw)
        for name in ("algo1", "algo2"):  # one identity per worker
            c = FixClient(gw_port, client_ssl(certs, name), name.upper())
            c.logon(reset=True)
            for i in range(3):
                c.send("D", [(11, f"{name}-{i}"), *base])
                c.recv_type(b"8")
                c.recv_type(b"8")
            c.close()
        folders = [audit / "worker-0", audit / "worker-1"]
        for f in folders:
            harness.wait_for(lambda f=f: any(r.get("cl_ord_id", "").startswith("algo")  # type: ignore[misc]
                                             for r in harness.read_records(f)), f"orders in {f.name}")

        def replicated() -> bool:
            return len(asyncio.run(fetch_stream(url, "FIXGW_AUDIT"))) >= sum(len(local_seqs(f)) for f in folders)

        harness.wait_for(replicated, "both workers' records in the stream", 30, interval=0.05)
        r = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", "--nats", url,
                            "--pubkey", str(folders[0] / "audit.pub"), "--allow-open-tail"],
                           cwd=harness.ROOT, capture_output=True, text=True)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert "worker-0: " in out and "worker-1: " in out and out.count("chain intact") == 2, out
        assert "anchor worker-0=" in out and "anchor worker-1=" in out, out
    finally:
        gw.stop()
        sim.stop()
        nats.terminate()
        nats.wait(5)
