"""Tampering with the audit stream after the fact: ``fixgw audit verify --pubkey KEY`` must fail.

The stream is a real one: a gateway with two worker processes (one chain
each, ``worker-0`` and ``worker-1``), small segments so that they rotate,
mutual-TLS clients trading through it, and a clean shutdown (SIGTERM).  Each
test copies it, tampers with the copy as an attacker with write access to
the audit folder would (but without the signing key), and runs the real
``fixgw audit verify`` with the key the auditor took out of band.  Every one
of these tampered copies passed verification before (exit 0).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.edges import pki
from gateway.edges.audit import GENESIS, load_or_create_key, segments
from tests import harness
from tests.harness import FixClient, client_ssl

TD = "spiffe://fixgw.dev/client/"
NAMES = ["algo1", "algo2"]
ORDER = [(21, "1"), (38, "100"), (40, "2"), (44, "10.25"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")]


@dataclass
class Stream:
    audit: Path  # the pristine folder, never changed
    pubkey: Path  # the auditor's copy of the verifying key, kept away from the data

    def copy(self, tmp: Path) -> Path:
        out = tmp / "audit"
        shutil.copytree(self.audit, out)
        return out

    def verify(self, folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", str(folder),
                               "--pubkey", str(self.pubkey), *extra],
                              cwd=harness.ROOT, capture_output=True, text=True, timeout=60)


def _chain_records(folder: Path) -> list[dict[str, object]]:
    return [json.loads(line) for _, p in segments(folder) for line in p.read_text().splitlines()]


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stream]:
    tmp = tmp_path_factory.mktemp("tamper")
    certs = harness.make_pki(tmp / "certs")
    pki.issue(certs, "algo2")
    identities = "".join(f'[[identities]]\nid = "{TD}{n}"\ncomp_ids = ["{n.upper()}"]\n' for n in NAMES)
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, clients=tuple(n.upper() for n in NAMES),
                                 identities=identities, reset_on_logon=True, gateway_extra="workers = 2")
    # small segments: every chain rotates, so "the newest segment" is one of several
    cfg.write_text(cfg.read_text().replace(f'dir = "{tmp}/state/audit"',
                                           f'dir = "{tmp}/state/audit"\nmax_segment_mb = 0.004'))
    audit = tmp / "state" / "audit"
    with harness.gateway_and_sim(tmp, cfg, gw_port, sim_port):
        # each chain signs a first checkpoint (time-based, within a second) before the orders below
        deadline = time.monotonic() + 15
        while not all((audit / f"worker-{k}").is_dir() and any(r["kind"] == "checkpoint" for r in
                      _chain_records(audit / f"worker-{k}")) for k in (0, 1)):
            assert time.monotonic() < deadline, "the workers' chains signed no checkpoint within 15 s"
            time.sleep(0.05)
        for name in NAMES:
            c = FixClient(gw_port, client_ssl(certs, name), name.upper())
            c.logon(reset=True)
            for i in range(6):
                c.send("D", [(11, f"{name}-{i}"), *ORDER])
                c.recv_type(b"8")
                c.recv_type(b"8")
            c.send("5", [])
            c.recv_type(b"5")
            c.close()
    # the auditor's key: derived from the gateway's signing key and kept outside the audit folder
    pub = load_or_create_key(tmp / "state" / "audit-signing.key").public_key()
    (tmp / "auditor").mkdir()
    (tmp / "auditor" / "audit.pub").write_bytes(
        pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    s = Stream(audit, tmp / "auditor" / "audit.pub")
    pristine = s.verify(audit)
    assert pristine.returncode == 0, pristine.stdout + pristine.stderr
    assert pristine.stdout.count("closed cleanly") == 2 and "worker-1:" in pristine.stdout
    for k in (0, 1):
        assert len(segments(audit / f"worker-{k}")) >= 2, f"worker-{k} did not rotate"
    yield s


def _lines(folder: Path) -> list[bytes]:
    return [line for _, p in segments(folder) for line in p.read_bytes().splitlines()]


def _rewrite(folder: Path, lines: list[bytes]) -> None:
    """Replace a chain's segments with ``lines`` in one segment."""
    for _, p in segments(folder):
        p.unlink()
    (folder / "audit-000001.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))


def _rechain(lines: list[bytes], first_seq: int, prev: str) -> list[bytes]:
    """What an attacker without the key can do: renumber and re-hash records so the chain is consistent."""
    out = []
    for line in lines:
        rec = json.loads(line)
        rec.pop("prev")
        rec["seq"] = first_seq
        rec["prev"] = prev
        new = json.dumps(rec, separators=(",", ":")).encode()
        out.append(new)
        prev = hashlib.sha256(new).hexdigest()
        first_seq += 1
    return out


def _anchor(out: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("anchor ")]


def test_records_after_the_last_checkpoint_removed_and_the_rest_rechained_fail(stream: Stream, tmp_path: Path) -> None:
    folder = stream.copy(tmp_path) / "worker-0"
    lines = _lines(folder)
    recs = [json.loads(x) for x in lines]
    first_cp = next(i for i, r in enumerate(recs) if r["kind"] == "checkpoint")
    # hide one order: keep everything up to a signed checkpoint, drop one decision after it, re-chain the
    # rest; the later checkpoints (and the clean end) cannot be re-signed without the key, so they go too
    tail = [x for x, r in zip(lines[first_cp + 1:], recs[first_cp + 1:], strict=True)
            if r["kind"] not in ("checkpoint", "audit_closed")]
    hidden = next(i for i, x in enumerate(tail) if json.loads(x)["kind"] == "decision")
    del tail[hidden]
    tail += [tail[-1]] * (len(lines) - first_cp - 1 - len(tail))  # padded back to the length it had
    head = lines[:first_cp + 1]
    _rewrite(folder, head + _rechain(tail, first_cp + 2, hashlib.sha256(head[-1]).hexdigest()))
    assert len(_lines(folder)) == len(lines)
    r = stream.verify(folder.parent)
    assert r.returncode == 1, r.stdout
    assert "worker-0: FAILED" in r.stdout and "open tail" in r.stdout and "not signed" in r.stdout
    # allowing an open tail (a live gateway's stream) is no way round the anchor the auditor kept
    anchor = _anchor(stream.verify(stream.audit).stdout)
    expect = [a for x in anchor if x.startswith("worker-0=") for a in ("--expect-head", x)]
    r = stream.verify(folder.parent, "--allow-open-tail", *expect)
    assert r.returncode == 1 and "worker-0: FAILED" in r.stdout and "does not match the anchor" in r.stdout, r.stdout


def test_every_segment_deleted_fails(stream: Stream, tmp_path: Path) -> None:
    audit = stream.copy(tmp_path)
    for k in (0, 1):
        for _, p in segments(audit / f"worker-{k}"):
            p.unlink()
    r = stream.verify(audit)
    assert r.returncode == 1 and r.stdout.count("no records: the audit stream is empty") == 2, r.stdout
    shutil.rmtree(audit)  # the folders too
    audit.mkdir()
    r = stream.verify(audit)
    assert r.returncode == 1 and "no records" in r.stdout, r.stdout


def test_the_newest_segment_deleted_fails(stream: Stream, tmp_path: Path) -> None:
    audit = stream.copy(tmp_path)
    segments(audit / "worker-1")[-1][1].unlink()  # what is left ends at a rotation's signed checkpoint
    r = stream.verify(audit)
    assert r.returncode == 1, r.stdout
    assert "worker-1: FAILED" in r.stdout and "without the audit_closed record a clean shutdown writes" in r.stdout
    assert "worker-0: " in r.stdout and "closed cleanly" in r.stdout.split("worker-1:")[0]


def test_a_forged_chain_with_no_checkpoint_fails(stream: Stream, tmp_path: Path) -> None:
    audit = stream.copy(tmp_path)
    # a consistent chain of the attacker's own making: no checkpoint, since nothing can sign one
    recs = [json.loads(x) for x in _lines(audit / "worker-0")]
    forged = [json.dumps({k: v for k, v in r.items() if k != "prev"} | {"prev": ""}).encode()
              for r in recs if r["kind"] not in ("checkpoint", "audit_closed") and r.get("decision") != "deny"]
    _rewrite(audit / "worker-0", _rechain(forged, 1, GENESIS))
    r = stream.verify(audit)
    assert r.returncode == 1 and "worker-0: FAILED" in r.stdout and "no signed checkpoint" in r.stdout, r.stdout
    r = stream.verify(audit, "--allow-open-tail")  # nothing signed is never an allowable open tail
    assert r.returncode == 1 and "no signed checkpoint" in r.stdout, r.stdout


def test_one_workers_chain_deleted_fails(stream: Stream, tmp_path: Path) -> None:
    audit = stream.copy(tmp_path)
    shutil.rmtree(audit / "worker-1")
    r = stream.verify(audit)
    assert r.returncode == 1, r.stdout
    assert "chain worker-1 is missing (a gateway_started record names 2 workers)" in r.stdout
    shutil.rmtree(audit / "worker-0")  # and a lone worker-1 still misses worker-0
    shutil.copytree(stream.audit / "worker-1", audit / "worker-1")
    r = stream.verify(audit)
    assert r.returncode == 1 and "chain worker-0 is missing" in r.stdout, r.stdout


def test_the_verifying_key_is_never_taken_from_beside_the_data(stream: Stream, tmp_path: Path) -> None:
    """Without --pubkey only the hash links are checked (DESIGN's `fixgw audit verify DIR`), and the output
    says so: a stream cut and re-chained, with an attacker's audit.pub put beside it, is never reported as
    signed or cleanly closed; with the auditor's key the same stream fails."""
    audit = stream.copy(tmp_path)
    lines = _lines(audit / "worker-0")
    _rewrite(audit / "worker-0", _rechain(lines[:-5], 1, GENESIS))
    (audit / "audit.pub").write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    r = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", str(audit)],
                       cwd=harness.ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "NOT checked" in r.stdout and "--pubkey" in r.stdout, r.stdout
    assert "closed cleanly" not in r.stdout and "last checkpoint" not in r.stdout  # nothing claimed as signed
    assert not _anchor(r.stdout)  # and no anchor offered for an unverified stream
    assert stream.verify(audit).returncode == 1
    r = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", str(audit), "--allow-open-tail"],
                       cwd=harness.ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--pubkey" in r.stderr and "Traceback" not in r.stderr


def test_a_chain_cut_back_to_a_signed_checkpoint_fails_against_the_anchor_even_when_open_tails_are_allowed(
        stream: Stream, tmp_path: Path) -> None:
    """What the stream cannot show by itself once an open tail is allowed (a live gateway's stream): a cut
    back to any signed checkpoint.  The anchor an auditor kept elsewhere (``--write-anchor``) shows it."""
    kept = tmp_path / "anchor.txt"
    assert stream.verify(stream.audit, "--write-anchor", str(kept)).returncode == 0
    assert {line.split("=")[0] for line in kept.read_text().splitlines()} == {"worker-0", "worker-1"}
    audit = stream.copy(tmp_path)
    lines = _lines(audit / "worker-1")
    cut = next(i for i, x in enumerate(lines) if json.loads(x)["kind"] == "checkpoint")
    _rewrite(audit / "worker-1", lines[:cut + 1])
    r = stream.verify(audit, "--allow-open-tail", "--anchor", str(kept))
    assert r.returncode == 1 and "before the anchored head" in r.stdout, r.stdout
    bad = tmp_path / "bad-anchor.txt"
    bad.write_text("worker-0=12:nothex\n")
    r = stream.verify(audit, "--anchor", str(bad))
    assert r.returncode == 2 and "bad-anchor.txt line 1" in r.stderr and "CHAIN=SEQ:SHA256" in r.stderr
