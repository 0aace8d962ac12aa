"""Audit stream: segments, chain, checkpoints; verify names every kind of tampering."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.edges.audit import AuditError, AuditLog, load_or_create_key, read_public_key, segments, verify
from tests.harness import ROOT


def make(folder: Path, n: int = 30, key: Ed25519PrivateKey | None = None, **kw: object) -> Ed25519PrivateKey:
    key = key or Ed25519PrivateKey.generate()
    log = AuditLog(folder, key, **kw)  # type: ignore[arg-type]
    for i in range(n):
        log.record("decision", n=i, decision="allow", identity="spiffe://fixgw.dev/client/a")
    log.close()
    return key


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def gateway_key(tmp: Path) -> Ed25519PublicKey:
    """The verifying key of a harness gateway, from its signing key (out of band, not the audit.pub
    beside the data)."""
    return load_or_create_key(tmp / "state" / "audit-signing.key").public_key()


def test_an_untouched_log_verifies_with_checkpoints(tmp_path: Path) -> None:
    key = make(tmp_path, 25, checkpoint_every=10)
    r = verify(tmp_path, key.public_key())
    # 25 records, checkpoints after 10 and 20, then the clean end: audit_closed and its checkpoint
    assert r.ok and r.records == 25 + 2 + 2 and r.last_checkpoint == 29 and r.closed, r.summary()
    assert "chain intact" in r.summary() and "last checkpoint" in r.summary() and "closed cleanly" in r.summary()
    recs = [json.loads(x) for x in lines(segments(tmp_path)[0][1])]
    assert [r["kind"] for r in recs[-2:]] == ["audit_closed", "checkpoint"] and recs[-1]["head_seq"] == 28


def test_rotation_carries_the_chain_across_segments(tmp_path: Path) -> None:
    key = make(tmp_path, 60, max_segment_bytes=2000)
    segs = segments(tmp_path)
    assert len(segs) >= 3
    first = json.loads(lines(segs[1][1])[0])
    assert first["kind"] == "segment_start" and first["previous_segment"] == segs[0][1].name
    assert verify(tmp_path, key.public_key()).ok


def test_one_changed_byte_is_a_hash_mismatch(tmp_path: Path) -> None:
    key = make(tmp_path)
    p = segments(tmp_path)[0][1]
    p.write_bytes(p.read_bytes().replace(b'"n":7,', b'"n":8,', 1))
    r = verify(tmp_path, key.public_key())
    assert not r.ok and r.problem is not None
    assert r.problem.line == 9 and "hash mismatch" in r.problem.what  # the record after the edited one


def test_a_deleted_record_is_a_sequence_gap(tmp_path: Path) -> None:
    key = make(tmp_path)
    p = segments(tmp_path)[0][1]
    ls = lines(p)
    p.write_bytes(b"\n".join(ls[:5] + ls[6:]) + b"\n")
    r = verify(tmp_path, key.public_key())
    assert not r.ok and "expected seq 6, found 7" in r.problem.what  # type: ignore[union-attr]


def test_swapped_records_are_caught(tmp_path: Path) -> None:
    key = make(tmp_path)
    p = segments(tmp_path)[0][1]
    ls = lines(p)
    ls[3], ls[4] = ls[4], ls[3]
    p.write_bytes(b"\n".join(ls) + b"\n")
    r = verify(tmp_path, key.public_key())
    assert not r.ok and r.problem.line == 4  # type: ignore[union-attr]


def test_a_truncated_segment_is_caught_at_the_next_segment(tmp_path: Path) -> None:
    key = make(tmp_path, 60, max_segment_bytes=2000)
    p = segments(tmp_path)[0][1]
    ls = lines(p)
    p.write_bytes(b"\n".join(ls[:-2]) + b"\n")
    r = verify(tmp_path, key.public_key())
    assert not r.ok and r.problem.segment == segments(tmp_path)[1][1].name  # type: ignore[union-attr]


def test_a_torn_last_record_is_reported_as_truncation(tmp_path: Path) -> None:
    key = make(tmp_path)
    p = segments(tmp_path)[0][1]
    p.write_bytes(p.read_bytes()[:-25])
    r = verify(tmp_path, key.public_key())
    assert not r.ok and "truncated" in r.problem.what  # type: ignore[union-attr]


def test_a_dropped_segment_is_a_gap_between_segments(tmp_path: Path) -> None:
    key = make(tmp_path, 60, max_segment_bytes=2000)
    segments(tmp_path)[1][1].unlink()
    r = verify(tmp_path, key.public_key())
    assert not r.ok and "gap between segments" in r.problem.what  # type: ignore[union-attr]


def test_a_forged_checkpoint_fails_with_the_real_public_key(tmp_path: Path) -> None:
    real = make(tmp_path, 25, checkpoint_every=10)
    # an attacker rewrites the whole folder with their own key: the chain is consistent again...
    for _, p in segments(tmp_path):
        p.unlink()
    make(tmp_path, 25, checkpoint_every=10)
    # ...and verifies against the audit.pub beside it (replaced too): why that file is never the key
    assert verify(tmp_path, read_public_key(tmp_path / "audit.pub")).ok
    r = verify(tmp_path, real.public_key())  # but not against the key the auditor holds
    assert not r.ok and "bad checkpoint signature" in r.problem.what  # type: ignore[union-attr]


def test_after_a_crash_the_torn_record_is_cut_recorded_and_the_chain_continues(tmp_path: Path) -> None:
    key = make(tmp_path, 10)
    p = segments(tmp_path)[0][1]
    p.write_bytes(p.read_bytes() + b'{"seq":99,"ts":"2026-')  # SIGKILL mid-write
    log = AuditLog(tmp_path, key)
    log.record("decision", n=100)
    log.close()
    recs = [json.loads(x) for x in lines(p)]
    recovery = [r for r in recs if r["kind"] == "recovery"]
    assert recovery and recovery[0]["truncated_bytes"] == len(b'{"seq":99,"ts":"2026-')
    assert verify(tmp_path, key.public_key()).ok


def test_audit_cli_verify_query_and_tail(tmp_path: Path) -> None:
    key = make(tmp_path / "a", 12, checkpoint_every=5)
    pub = tmp_path / "auditor.pub"  # the auditor's own copy, kept away from the data
    pub.write_bytes((tmp_path / "a" / "audit.pub").read_bytes())
    run = [sys.executable, "-m", "gateway", "audit"]
    v = subprocess.run([*run, "verify", str(tmp_path / "a"), "--pubkey", str(pub)],
                       cwd=ROOT, capture_output=True, text=True)
    assert v.returncode == 0 and "chain intact" in v.stdout
    head = [x for x in v.stdout.splitlines() if x.startswith("anchor main=")]
    assert head == [f"anchor main=16:{hashlib.sha256(lines(segments(tmp_path / 'a')[0][1])[-1]).hexdigest()}"]
    assert verify(tmp_path / "a", key.public_key(), expect=(16, head[0].rsplit(":", 1)[1])).ok
    q = subprocess.run([*run, "query", str(tmp_path / "a"), "--kind", "decision", "--format", "json"],
                       cwd=ROOT, capture_output=True, text=True)
    assert q.returncode == 0 and len(q.stdout.splitlines()) == 12
    c = subprocess.run([*run, "query", str(tmp_path / "a"), "--kind", "checkpoint", "--format", "csv"],
                       cwd=ROOT, capture_output=True, text=True)
    assert c.stdout.splitlines()[0].startswith("seq,ts,kind") and len(c.stdout.splitlines()) == 1 + 3
    t = subprocess.run([*run, "tail", str(tmp_path / "a"), "-n", "3"], cwd=ROOT, capture_output=True, text=True)
    assert t.returncode == 0 and len(t.stdout.splitlines()) == 3
    p = segments(tmp_path / "a")[0][1]
    p.write_bytes(p.read_bytes().replace(b'"n":3,', b'"n":4,', 1))
    bad = subprocess.run([*run, "verify", str(tmp_path / "a"), "--pubkey", str(pub)], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "audit-000001.jsonl record 5" in bad.stdout and "hash mismatch" in bad.stdout


def test_a_rotation_is_signed_by_the_next_checkpoint_not_left_as_an_unsigned_tail(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, Ed25519PrivateKey.generate())
    log.record("decision", n=1)
    log.rotate()  # checkpoint, then segment_start in the new segment
    log.checkpoint()  # the watch's tick: the segment_start must not stay unsigned
    last = json.loads(lines(segments(tmp_path)[-1][1])[-1])
    assert last["kind"] == "checkpoint" and last["head_seq"] == log.seq - 1
    log.close()


def test_the_first_tick_of_a_run_signs_so_a_gateway_killed_in_its_first_second_leaves_a_signed_stream(
        tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    log = AuditLog(tmp_path, key, checkpoint_ms=3_600_000)
    log.record("gateway_started", sessions=1)
    log.tick()  # the watch's first tick, long before checkpoint_ms
    log.record("decision", n=1)
    # SIGKILL here: no close; what is there verifies as an open tail with one signature
    r = verify(tmp_path, key.public_key(), allow_open_tail=True)
    assert r.ok and r.last_checkpoint == 2 and not r.closed, r.summary()
    log.tick()  # later ticks wait for checkpoint_ms again
    assert verify(tmp_path, key.public_key(), allow_open_tail=True).last_checkpoint == 2
    log.close()


def test_a_clean_close_is_told_from_a_stream_whose_end_is_open(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    log = AuditLog(tmp_path, key, checkpoint_every=5)
    for i in range(7):
        log.record("decision", n=i)
    # the gateway is still running: two records after the checkpoint at seq 6
    r = verify(tmp_path, key.public_key())
    assert not r.ok and "open tail: 2 records after the last signed checkpoint (seq 6)" in str(r.problem)
    r = verify(tmp_path, key.public_key(), allow_open_tail=True)
    assert r.ok and not r.closed and "open tail" in r.summary() and "(allowed)" in r.summary()
    log.close()
    r = verify(tmp_path, key.public_key())
    assert r.ok and r.closed and r.head == (r.records, hashlib.sha256(lines(segments(tmp_path)[0][1])[-1]).hexdigest())


@pytest.mark.parametrize("n", [1, 3])
def test_record_reaches_the_os_before_returning(tmp_path: Path, n: int) -> None:
    log = AuditLog(tmp_path, Ed25519PrivateKey.generate())
    for i in range(n):
        log.record("decision", n=i)
        assert len(lines(segments(tmp_path)[0][1])) == i + 1  # visible to another reader at once
    log.close()


@pytest.mark.parametrize("fsync", [False, True])
def test_writer_thread_reports_progress_for_whole_batches_in_order(tmp_path: Path, fsync: bool) -> None:
    import threading

    key = Ed25519PrivateKey.generate()
    log = AuditLog(tmp_path, key, checkpoint_every=7, max_segment_bytes=1500)
    seen: list[int] = []
    done = threading.Event()

    def progress(seq: int) -> None:
        seen.append(seq)
        if seq >= 50:
            done.set()

    writer = log.start_writer(fsync, progress, lambda error: None)
    for i in range(50):
        log.record("decision", n=i)
    log.close()  # drains the queue
    assert done.is_set() and seen == sorted(seen) and seen[-1] == log.seq and writer.lag == 0
    assert len(seen) <= log.seq  # batches share writes
    assert len(segments(tmp_path)) > 2  # rotation happened on the writer's thread, in order
    result = verify(tmp_path, key.public_key())
    assert result.ok and result.records == log.seq and result.last_checkpoint is not None


def test_writer_thread_keeps_the_batch_through_a_failing_disk_and_the_chain_stays_whole(tmp_path: Path) -> None:
    import threading

    key = Ed25519PrivateKey.generate()
    log = AuditLog(tmp_path / "a", key, max_segment_bytes=2000)
    log.fault_file = tmp_path / "full"
    failures: list[str] = []
    progress: list[int] = []
    failed, recovered = threading.Event(), threading.Event()
    writer = log.start_writer(False, lambda s: (progress.append(s), recovered.set()),
                              lambda e: (failures.append(e), failed.set()))
    log.fault_file.touch()
    queued = 0
    for i in range(30):  # enough to rotate while the disk is "full"
        try:
            log.record("decision", n=i)
            queued += 1
        except AuditError:
            break  # the writer has already reported the failure: refused, nothing queued unwritten
    assert failed.wait(5) and "No space left" in failures[0]
    with pytest.raises(AuditError, match="No space left"):
        log.record("decision", n=99)
    assert queued >= 1 and not recovered.is_set() and writer.lag >= queued
    log.fault_file.unlink()
    assert recovered.wait(5) and progress[-1] == log.seq
    log.close()
    result = verify(tmp_path / "a", key.public_key())
    assert result.ok and result.records >= queued


def test_gateway_in_fsync_mode_forwards_after_the_group_commit(tmp_path: Path) -> None:

    from tests import harness
    from tests.harness import FixClient, client_ssl

    certs = harness.make_pki(tmp_path / "certs")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, reset_on_logon=True)
    cfg.write_text(cfg.read_text().replace(f'dir = "{tmp_path}/state/audit"',
                                           f'dir = "{tmp_path}/state/audit"\ndurability = "fsync"'))
    with harness.gateway_and_sim(tmp_path, cfg, gw_port, sim_port):
        c = FixClient(gw_port, client_ssl(certs, "algo1"), "ALGO1")
        c.logon(reset=True)
        for i in range(20):
            c.send("D", [(11, f"F{i}"), (21, "1"), (38, "10"), (40, "2"), (44, "10"), (54, "1"), (55, "INTC"),
                         (60, "20240101-00:00:00")])
        fills = 0
        while fills < 20:
            if c.recv_type(b"8").get(150) == b"F":
                fills += 1
    assert verify(tmp_path / "state" / "audit", gateway_key(tmp_path)).ok


@pytest.mark.parametrize("writer", ["thread", "inline"])
def test_a_full_disk_refuses_new_orders_lets_cancels_through_and_recovers(tmp_path: Path, writer: str) -> None:
    from tests import harness
    from tests.harness import FixClient, client_ssl

    certs = harness.make_pki(tmp_path / "certs")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    full = tmp_path / "disk-full"
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, reset_on_logon=True,
                                 sim_extra=f'journal = "{tmp_path}/received.log"')
    cfg.write_text(cfg.read_text().replace(
        f'dir = "{tmp_path}/state/audit"',
        f'dir = "{tmp_path}/state/audit"\ncancels_when_unavailable = "allow"\ninject_enospc_if_exists = "{full}"'
        f'\nwriter = "{writer}"'))
    base = [(21, "1"), (38, "10"), (40, "2"), (44, "10"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")]
    with harness.gateway_and_sim(tmp_path, cfg, gw_port, sim_port):
        c = FixClient(gw_port, client_ssl(certs, "algo1"), "ALGO1")
        c.logon(reset=True)
        c.send("D", [(11, "OK1"), *base])
        assert c.recv_type(b"8").get(150) == b"0"
        c.recv_type(b"8")
        full.touch()  # the disk fills up
        c.send("D", [(11, "DISKFULL"), *base])
        bmr = c.recv_type(b"j")
        assert bmr.get(380) == b"4" and b"audit stream cannot record" in (bmr.get(58) or b"")
        c.send("F", [(11, "CXL1"), (41, "OK1"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")])
        journal = tmp_path / "received.log"
        harness.wait_for(lambda: journal.exists() and " CXL1" in journal.read_text(),
                         "the cancel to cross to the venue during the outage (CXL1 in its journal)")
        full.unlink()  # space again
        cxl_reply = c.recv_type(b"9", timeout=5)  # held during the outage, delivered after it
        assert cxl_reply.get(41) == b"OK1"
        c.send("D", [(11, "OK2"), *base])
        assert c.recv_type(b"8").get(150) == b"0"
    received = [line.split()[2] for line in (tmp_path / "received.log").read_text().splitlines()]
    assert "DISKFULL" not in received and "CXL1" in received and "OK2" in received
    recs = [json.loads(x) for _, p in segments(tmp_path / "state" / "audit") for x in lines(p)]
    alert = [r for r in recs if r["kind"] == "alert" and "resumed" in str(r.get("what"))]
    assert alert and alert[0]["refused"] >= 1 and alert[0]["late_records"] == 1
    assert any(r["kind"] == "decision" and r.get("cl_ord_id") == "CXL1" and r.get("written_late") for r in recs)
    assert verify(tmp_path / "state" / "audit", gateway_key(tmp_path)).ok


def test_flows_report_and_ocsf_export_over_a_real_gateways_stream(tmp_path: Path) -> None:
    from tests import harness
    from tests.harness import FixClient, client_ssl

    certs = harness.make_pki(tmp_path / "certs")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, reset_on_logon=True)
    with harness.gateway_and_sim(tmp_path, cfg, gw_port, sim_port):  # returns once the exchange legs logged on
        c = FixClient(gw_port, client_ssl(certs, "algo1"), "ALGO1")
        c.logon(reset=True)
        for i in range(3):
            c.send("D", [(11, f"R{i}"), (21, "1"), (38, "10"), (40, "2"), (44, "10"), (54, "1"), (55, "INTC"),
                         (60, "20240101-00:00:00")])
            c.recv_type(b"8")
            c.recv_type(b"8")
        bad = FixClient(gw_port, client_ssl(certs, "algo1"), "ALGO2")  # not its CompID
        bad.send("A", [(98, "0"), (108, "30")])
        assert bad.recv() is None
    audit = str(tmp_path / "state" / "audit")
    run = [sys.executable, "-m", "gateway", "audit"]
    flows = subprocess.run([*run, "flows", audit, "--format", "json"], cwd=ROOT, capture_output=True, text=True)
    rows = [json.loads(x) for x in flows.stdout.splitlines()]
    assert rows and rows[0]["identity"].endswith("/algo1") and rows[0]["msg_types"] == {"D": 3}
    day = json.loads((tmp_path / "state" / "audit" / "audit-000001.jsonl").read_text().splitlines()[0])["ts"][:10]
    rep = subprocess.run([*run, "report", audit, "--day", day, "--format", "json"], cwd=ROOT, capture_output=True,
                         text=True)
    report = json.loads(rep.stdout)
    assert report["logons"] == 1 and report["logons_refused"] == 1 and report["decisions"] == {"allow": 3}
    exp = subprocess.run([*run, "export", audit, "--format", "ocsf"], cwd=ROOT, capture_output=True, text=True)
    events = [json.loads(x) for x in exp.stdout.splitlines()]
    auth = [e for e in events if e["class_uid"] == 3002]
    assert any(e["status_id"] == 2 for e in auth) and any(e["status_id"] == 1 for e in auth)
    api = [e for e in events if e["class_uid"] == 6003 and "api" in e]
    assert len(api) >= 3 and all(e["type_uid"] == 600399 for e in api)
    assert all(e["metadata"]["product"]["name"] == "fixgw" for e in events)


def test_encrypted_stream_verifies_without_the_key_and_reads_only_with_it(tmp_path: Path) -> None:
    import os as _os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from gateway.edges.audit import load_encryption_key

    key_file = tmp_path / "audit.aes"
    key_file.write_text(_os.urandom(32).hex())
    key_file.chmod(0o600)
    signer = Ed25519PrivateKey.generate()
    log = AuditLog(tmp_path / "a", signer, checkpoint_every=4)
    log.aead = load_encryption_key(key_file)
    for i in range(10):
        log.record("decision", cl_ord_id=f"SECRET-ORDER-{i}", identity="spiffe://fixgw.dev/client/a")
    log.close()
    stored = b"".join(p.read_bytes() for _, p in segments(tmp_path / "a"))
    assert b"SECRET-ORDER" not in stored and b'"kind":"sealed"' in stored and b'"kind":"checkpoint"' in stored
    assert verify(tmp_path / "a", signer.public_key()).ok  # no key needed for integrity
    run = [sys.executable, "-m", "gateway", "audit", "query", str(tmp_path / "a"), "--format", "json"]
    denied = subprocess.run(run, cwd=ROOT, capture_output=True, text=True)
    assert denied.returncode != 0 and "encrypted at rest" in denied.stderr
    ok = subprocess.run([*run, "--key", str(key_file), "--kind", "decision"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and len(ok.stdout.splitlines()) == 10 and "SECRET-ORDER-3" in ok.stdout
    wrong = tmp_path / "wrong.aes"
    wrong.write_text(AESGCM.generate_key(bit_length=256).hex())
    wrong.chmod(0o600)
    bad = subprocess.run([*run, "--key", str(wrong)], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "does not decrypt" in bad.stderr


def test_printable_escapes_controls_bidi_overrides_and_separators_and_csv_cells_never_start_a_formula() -> None:
    from gateway.cli.audit import csv_cell, printable

    assert printable("plain ClOrdID-1 é") == "plain ClOrdID-1 é"
    assert printable("a\x1b[31mb\x07\x9b\u202e\u2028\\") == "a\\x1b[31mb\\x07\\x9b\\u202e\\u2028\\\\"
    assert [csv_cell(v) for v in ("=1+1", "+1", "-1", "@x", "\t=1", "\r=1", "ok", 7, -7, None, ["a"])] == \
        ["'=1+1", "'+1", "'-1", "'@x", "'\\x09=1", "'\\x0d=1", "ok", 7, -7, "", '["a"]']


def test_a_line_that_is_json_but_not_a_record_is_named_not_a_traceback(tmp_path: Path) -> None:
    key = make(tmp_path / "a", 5)
    p = segments(tmp_path / "a")[0][1]
    ls = lines(p)
    p.write_bytes(b"\n".join(ls[:2] + [b"[1,2]"] + ls[3:]) + b"\n")
    pub = tmp_path / "auditor.pub"
    pub.write_bytes((tmp_path / "a" / "audit.pub").read_bytes())
    r = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", str(tmp_path / "a"), "--pubkey", str(pub)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "record 3: not a JSON object" in r.stdout and "Traceback" not in r.stderr
    assert verify(tmp_path / "a", key.public_key()).problem.line == 3  # type: ignore[union-attr]


class _Loop:
    """What ``LoopWriter`` needs of the event loop: ``call_soon`` and ``call_later``, run by hand."""

    def __init__(self) -> None:
        self.soon: list[object] = []
        self.later: list[tuple[float, object]] = []

    def call_soon(self, fn: object) -> None:
        self.soon.append(fn)

    def call_later(self, delay: float, fn: object) -> None:
        self.later.append((delay, fn))

    def turn(self) -> None:
        ready, self.soon = self.soon, []
        for fn in ready:
            fn()  # type: ignore[operator]


def test_loop_writer_writes_an_iterations_records_at_once_then_reports(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    log = AuditLog(tmp_path, key, checkpoint_every=7, max_segment_bytes=1500)
    loop, seen = _Loop(), []
    writer = log.start_loop_writer(seen.append, lambda error: None, loop.call_soon, loop.call_later)
    written = lambda: len(lines(segments(tmp_path)[-1][1]))  # noqa: E731
    for turn in range(10):
        before = written()
        for i in range(5):
            log.record("decision", n=turn * 5 + i)
            assert written() == before  # queued, not written: the loop writes when this turn's work is done
        assert len(loop.soon) == 1  # one write asked for, however many records
        loop.turn()
        assert seen[-1] == log.seq and writer.done_seq == log.seq and writer.lag == 0
    log.record("outcome", n=-1)
    log.record_fields("outcome", {"n": -2}, wake=False)  # nobody waits for it: rides with the next write
    loop.turn()
    log.record_fields("outcome", {"n": -3}, wake=False)
    assert not loop.soon and writer.lag == 1
    log.tick()  # the watch loop's flush
    assert writer.lag == 0
    log.close()
    assert seen == sorted(seen) and len(seen) <= 13  # reports per turn, not per record
    assert len(segments(tmp_path)) > 2  # rotations went through the queue in order
    result = verify(tmp_path, key.public_key())
    assert result.ok and result.records == log.seq


def test_loop_writer_keeps_the_batch_through_a_failing_disk_and_refuses_meanwhile(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    log = AuditLog(tmp_path, key)
    full = tmp_path / "disk-full"
    log.fault_file = full
    loop, seen, failures = _Loop(), [], []
    writer = log.start_loop_writer(seen.append, failures.append, loop.call_soon, loop.call_later)
    log.record("decision", n=1)
    loop.turn()
    full.touch()
    log.record("decision", n=2)
    log.record("decision", n=3)
    loop.turn()
    assert failures and "No space left" in failures[0] and writer.failed is not None
    assert writer.done_seq < log.seq and len(loop.later) == 1  # kept and retried, not dropped
    with pytest.raises(AuditError):
        log.record("decision", n=4)  # fail closed while the stream cannot write
    _, retry = loop.later.pop()
    retry()  # type: ignore[operator]
    assert len(failures) == 1 and len(loop.later) == 1  # still failing: one report, another retry
    full.unlink()
    _, retry = loop.later.pop()
    retry()  # type: ignore[operator]
    assert writer.failed is None and seen[-1] == writer.done_seq == log.seq
    log.close()
    recs = [json.loads(x) for _, p in segments(tmp_path) for x in lines(p)]
    assert [r["n"] for r in recs if r["kind"] == "decision"] == [1, 2, 3]
    assert verify(tmp_path, key.public_key()).ok


def test_after_durable_runs_a_forward_only_once_its_record_is_in_the_os(tmp_path: Path) -> None:
    """The gate's contract with the loop writer: the action waits for the write; when it runs, the
    record is in the file; a write that fails refuses instead."""
    from gateway.app.audit_gate import AuditGate
    from gateway.edges.metrics import Metrics

    log = AuditLog(tmp_path, Ed25519PrivateKey.generate())
    gate = AuditGate(log, Metrics())
    loop = _Loop()
    log.start_loop_writer(gate.on_written, gate.on_failed, loop.call_soon, loop.call_later)
    ran: list[str] = []

    def forward(name: str) -> None:
        in_file = [json.loads(x) for x in lines(segments(tmp_path)[-1][1])]
        assert any(r.get("name") == name for r in in_file), "forwarded before its record was written"
        ran.append(name)

    for name in ("a", "b"):
        seq = gate.record("decision", name=name)
        gate.after_durable(seq, lambda name=name: forward(name), lambda: ran.append("refused"))  # type: ignore[misc]
    assert ran == []
    loop.turn()
    assert ran == ["a", "b"]
    full = tmp_path / "disk-full"
    log.fault_file = full
    full.touch()
    seq = gate.record("decision", name="c")
    gate.after_durable(seq, lambda: forward("c"), lambda: ran.append("refused"))
    loop.turn()
    assert ran == ["a", "b", "refused"] and gate.down
    log.close()
