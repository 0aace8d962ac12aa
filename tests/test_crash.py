"""SIGKILL the gateway under load, repeatedly, with persistent sequence numbers.

After every restart: the audit chain verifies; both of the client's sequence
numbers resume where the killed process left them (the gateway's Logon answer
continues its own numbering, and the client's next number is accepted or
recovered by a ResendRequest the client fills); the messages the client missed
are resent on request; the exchange leg logs on again.  At the end, every order
the exchange received has its allow record (fail closed survives crashes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from gateway.core.fix import codec
from gateway.core.fix import tags as T
from gateway.core.fix.utctime import format_utc_timestamp
from gateway.edges.audit import load_or_create_key, verify
from tests import harness
from tests.harness import FixClient, client_ssl

CYCLES = int(os.environ.get("FIXGW_CRASH_CYCLES", "20"))


class Client:
    """A FIX client whose numbers outlive its connections, as a real engine's store does."""

    def __init__(self, port: int, certs: Path) -> None:
        self.port, self.certs = port, certs
        self.next_out = 1  # our next MsgSeqNum(34)
        self.next_in = 1  # the gateway's MsgSeqNum(34) we expect next
        self.c: FixClient | None = None

    def connect(self) -> codec.Message:
        """Log on without a reset; returns the gateway's Logon."""
        c = self.c = FixClient(self.port, client_ssl(self.certs, "algo1"), "ALGO1")
        c.seq = self.next_out
        c.send("A", [(98, "0"), (108, "30")])
        self.next_out = c.seq
        logon = c.recv_type(b"A")
        return logon

    def take(self, m: codec.Message) -> None:
        n = m.seq_num
        if n is not None and m.get(T.PossDupFlag) != b"Y" and m.msg_type != b"4":
            self.next_in = max(self.next_in, n + 1)

    def drain(self) -> None:
        """Read what the killed gateway sent until the connection ends, noting its numbers."""
        assert self.c is not None
        while True:
            try:
                m = self.c.recv(timeout=5)
            except (TimeoutError, OSError):
                return
            if m is None:
                return
            self.take(m)


def _gap_fill(c: FixClient, begin: int, new_seq: int) -> None:
    now = format_utc_timestamp(time.time()).decode()
    c.send("4", [(123, "Y"), (36, str(new_seq))], seq=begin, header=[(43, "Y"), (122, now)])


def test_sigkill_under_load_resumes_sequence_numbers_resends_and_keeps_the_chain(tmp_path: Path) -> None:
    certs = harness.make_pki(tmp_path / "certs")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, reset_on_logon=False,
                                 sim_extra=f'journal = "{tmp_path}/exchange-received.log"')
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp_path / "sim.log", sim_port)
    audit_dir = tmp_path / "state" / "audit"
    client = Client(gw_port, certs)
    gw: harness.Proc | None = None
    resumed = resent = 0
    try:
        for cycle in range(CYCLES):
            log = tmp_path / f"gw-{cycle}.log"
            gw = harness.start(["run", "--config", str(cfg)], log, gw_port)
            harness.wait_legs_logged_on(log, 2, gw)  # the exchange legs resume too
            logon = client.connect()
            c = client.c
            assert c is not None
            gw_seq = logon.seq_num
            assert gw_seq is not None
            if cycle:
                # the gateway continues its numbering: never back to 1, never below what we saw
                assert gw_seq >= client.next_in, (cycle, gw_seq, client.next_in)
                resumed += 1
            # what we missed while it died: ask for it (FIX gap recovery across the restart)
            want_from, want_to = client.next_in, gw_seq - 1
            client.next_in = gw_seq + 1
            if want_to >= want_from:
                c.send("2", [(7, str(want_from)), (16, "0")])
                client.next_out = c.seq
            # then in step both ways before the load starts (the load thread is the only writer after this):
            # a TestRequest answered means the gateway has every message of ours below it; a ResendRequest
            # from it (it lost some of ours in the kill) is gap-filled and answered by a new TestRequest
            covered: set[int] = set()
            sync = f"sync-{cycle}-0"
            c.send("1", [(112, sync)])
            synced = False
            deadline = time.monotonic() + 10
            while not synced or (want_to >= want_from and not covered >= set(range(want_from, want_to + 1))):
                assert time.monotonic() < deadline, f"cycle {cycle}: resend of {want_from}-{want_to} incomplete"
                m = c.recv(timeout=max(0.1, deadline - time.monotonic()))
                assert m is not None, f"cycle {cycle}: closed during the resend"
                n = m.seq_num or 0
                if m.msg_type == b"4" and m.get(123) == b"Y":  # GapFill: admin messages skipped
                    covered.update(range(n, int(m.get(36) or n)))
                elif m.get(T.PossDupFlag) == b"Y":
                    covered.add(n)
                elif m.msg_type == b"2":  # the gateway lost some of ours: fill the gap it names, ask again
                    _gap_fill(c, int(m.get(7) or 0), c.seq)
                    sync = f"sync-{cycle}-{n}"
                    c.send("1", [(112, sync)])
                else:
                    client.take(m)
                    synced = synced or (m.msg_type == b"0" and m.get(112) == sync.encode())
            resent += len(covered)
            stop = threading.Event()

            def load(c: FixClient = c, cycle: int = cycle, stop: threading.Event = stop) -> None:
                i = 0
                while not stop.is_set():
                    try:
                        c.send("D", [(11, f"C{cycle}-{i}"), (21, "1"), (38, "10"), (40, "2"), (44, "10"),
                                     (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")])
                    except OSError:
                        return
                    i += 1
                    time.sleep(0.001)

            # until the venue received some orders of this cycle (its journal), then SIGKILL mid-stream; the
            # main thread does not read meanwhile: one SSL object must not be read and written by two threads
            t = threading.Thread(target=load, daemon=True)
            t.start()
            journal = tmp_path / "exchange-received.log"
            want = 5 + 5 * (cycle % 3)
            def arrived(journal: Path = journal, tag: str = f" C{cycle}-", want: int = want) -> bool:
                return journal.exists() and journal.read_text().count(tag) >= want

            harness.wait_for(arrived, f"cycle {cycle}: {want} orders at the venue", timeout=15)
            gw.kill()  # SIGKILL mid-stream
            stop.set()
            t.join(5)
            client.next_out = c.seq
            client.drain()
            c.close()
            # the client "lost" the last three messages it got (its own crash): the restarted gateway must
            # resend them from its store (or gap-fill the admin ones), whatever was in flight at the kill
            client.next_in = max(1, client.next_in - 3)
            # killed: the stream ends open (no clean close), signed up to its last checkpoint
            result = verify(audit_dir, load_or_create_key(tmp_path / "state" / "audit-signing.key").public_key(),
                            allow_open_tail=True)
            assert result.ok, f"cycle {cycle}: {result.summary()}"
        assert resumed == CYCLES - 1
        assert resent >= 3 * (CYCLES - 1), "every restart resent at least what the client lost"
        # every order the exchange received was allowed, in the audit stream, before it was forwarded
        allowed = {r["cl_ord_id"] for p in sorted(audit_dir.glob("audit-*.jsonl"))
                   for r in map(json.loads, p.read_text().splitlines())
                   if r["kind"] == "decision" and r.get("direction") == "outbound" and r["decision"] == "allow"}
        received = [line.split()[2] for line in (tmp_path / "exchange-received.log").read_text().splitlines()
                    if line.split()[1] == "D"]
        assert received, "the exchange received nothing: the load did not run"
        missing = [cl for cl in received if cl not in allowed]
        assert not missing, f"orders at the exchange without an allow record: {missing[:5]}"
        starts = [r for p in sorted(audit_dir.glob("audit-*.jsonl"))
                  for r in map(json.loads, p.read_text().splitlines()) if r["kind"] == "gateway_started"]
        assert len(starts) == CYCLES, "each start continues the one chain"
        r = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", str(audit_dir), "--pubkey",
                            str(audit_dir / "audit.pub"), "--allow-open-tail"], cwd=harness.ROOT,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout
    finally:
        if gw is not None:
            gw.kill()  # a failed cycle must not leave its gateway running
        sim.stop()
