"""Audit append cost per durability mode (write vs fsync group commit), in one run.

First ``AuditLog.record`` alone, writing on the caller's thread (encode, hash,
os.write) — the floor.  Then as the gateway runs it: ``record`` queues, the
writer thread writes in batches (``write``) or writes and fsyncs (``fsync``,
group commit); reported are the throughput when 1, 16 and 128 records wait
together (messages in flight across sessions) and the mean wait from
``record`` to the thread's report — what a message waits before it is
forwarded.  Last the loop writer (``[audit] writer = "inline"``): ``record``
queues, and the event loop writes a turn's records with one ``write`` and
reports at once — here the turn is run by hand, on the caller's thread.

    python -m bench.audit [--n 20000] [--json bench/results/audit.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.edges.audit import AuditLog

FIELDS = {"direction": "outbound", "decision": "allow", "rules": ["algo-orders-colo"], "controls": ["session_logging"],
          "identity": "spiffe://fixgw.dev/client/algo1", "session": "FIX.4.4/ALGO1/FIXGW", "msg_type": "D",
          "client_seq": 1234, "upstream_seq": 5678, "cl_ord_id": "ORDER-000012345", "symbol": "INTC", "side": "1",
          "qty": "100", "price": "10.25", "zone": "colo", "posture": "compliant", "signature_scheme": "ed25519",
          "signature": "A" * 88, "decide_us": 4}


def bench_write(n: int) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        log = AuditLog(Path(d), Ed25519PrivateKey.generate())
        samples = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            log.record("decision", **FIELDS)
            samples.append((time.perf_counter_ns() - t0) / 1000)
        log.close()
    return samples


def bench_writer(n: int, in_flight: int, fsync: bool) -> tuple[float, float]:
    """Through the writer thread, as the gateway runs it: (records per second, mean
    wait in µs from ``record`` to the thread's report) with ``in_flight`` records per batch."""
    with tempfile.TemporaryDirectory() as d:
        log = AuditLog(Path(d), Ed25519PrivateKey.generate())
        durable = threading.Condition()
        state = {"seq": 0}

        def on_durable(seq: int) -> None:
            with durable:
                state["seq"] = seq
                durable.notify_all()

        log.start_writer(fsync, on_durable, lambda error: None)
        waits = []
        t_start = time.perf_counter()
        done = 0
        while done < n:
            t0 = time.perf_counter()
            last = 0
            for _ in range(in_flight):
                last = log.record("decision", **FIELDS)
            with durable:
                durable.wait_for(lambda last=last: state["seq"] >= last, timeout=5)
            waits.append((time.perf_counter() - t0) * 1e6)
            done += in_flight
        elapsed = time.perf_counter() - t_start
        log.close()
    return done / elapsed, statistics.mean(waits)


def bench_loop_writer(n: int, in_flight: int) -> tuple[float, float]:
    """The loop writer, as the gateway runs it (``in_flight`` records per loop turn): (records per second,
    mean wait in µs from the first ``record`` of a turn to the report)."""
    with tempfile.TemporaryDirectory() as d:
        log = AuditLog(Path(d), Ed25519PrivateKey.generate())
        turn: list[Callable[[], None]] = []  # what the loop's call_soon would run at the end of this turn
        reported = [0]

        def report(seq: int) -> None:
            reported[0] = seq

        def retry(delay: float, fn: Callable[[], None]) -> None:  # a write never fails here
            raise AssertionError("audit write failed")

        log.start_loop_writer(report, lambda error: None, turn.append, retry)
        waits = []
        t_start = time.perf_counter()
        done = 0
        while done < n:
            t0 = time.perf_counter()
            last = 0
            for _ in range(in_flight):
                last = log.record("decision", **FIELDS)
            ready, turn[:] = list(turn), []
            for fn in ready:
                fn()
            assert reported[0] >= last
            waits.append((time.perf_counter() - t0) * 1e6)
            done += in_flight
        elapsed = time.perf_counter() - t_start
        log.close()
    return done / elapsed, statistics.mean(waits)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--json", type=Path, default=Path("bench/results/audit.json"))
    a = p.parse_args(argv)
    w = sorted(bench_write(a.n))
    q = statistics.quantiles(w, n=100)
    rows = [{"mode": "inline", "p50_us": round(q[49], 2),
             "p99_us": round(q[98], 2), "records_per_s": round(len(w) / (sum(w) / 1e6))}]
    for mode in ("write", "fsync"):
        for k in (1, 16, 128):
            rate, wait = bench_writer(max(a.n // 10, k * 20), k, mode == "fsync")
            rows.append({"mode": f"thread {mode}, {k} in flight", "records_per_s": round(rate),
                         "wait_us": round(wait, 1)})
    for k in (1, 16, 128):
        rate, wait = bench_loop_writer(max(a.n // 10, k * 20), k)
        rows.append({"mode": f"loop write, {k} in flight", "records_per_s": round(rate), "wait_us": round(wait, 1)})
    for r in rows:
        print(r)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"benchmark": "audit", "rows": rows}, indent=2) + "\n")
    print(f"written {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
