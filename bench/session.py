"""Session engine throughput in memory: two sans-IO ``Session`` objects wired back to back.

No sockets, no TLS: an initiator and an acceptor (the gateway's own session
core) log on to each other through byte buffers, then the initiator sends N
NewOrderSingle messages and the acceptor takes each one in (framing,
parsing, sequence checks, validation against the FIX.4.4 dictionary, store).
Reported: application messages per second through send + receive, with and
without dictionary validation, median of rounds.

    python -m bench.session [--n 20000] [--rounds 5] [--json bench/results/session.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from gateway.core.fix import tags as T
from gateway.core.fix.dictionary import standard_validator
from gateway.core.fix.events import AppMessageReceived
from gateway.core.fix.session import Role, Session, SessionConfig
from gateway.core.fix.store import MemoryStore

BODY = [(T.ClOrdID, b"ORDER-000012345"), (T.Account, b"ACCT-42"), (T.HandlInst, b"1"), (T.OrderQty, b"2000"),
        (T.OrdType, b"2"), (T.Price, b"101.25"), (T.Side, b"1"), (T.Symbol, b"INTC"),
        (T.TransactTime, b"20240101-00:00:00.000")]


def pair(validate: bool) -> tuple[Session, Session]:
    v = standard_validator(b"FIX.4.4") if validate else None
    ini = Session(SessionConfig(begin_string=b"FIX.4.4", sender_comp_id=b"ALGO1", target_comp_id=b"FIXGW",
                                role=Role.INITIATOR, reset_on_logon=True, validator=v), MemoryStore())
    acc = Session(SessionConfig(begin_string=b"FIX.4.4", sender_comp_id=b"FIXGW", target_comp_id=b"ALGO1",
                                role=Role.ACCEPTOR, reset_on_logon=True, validator=v), MemoryStore())
    now = time.time()
    ini.connection_made(now)
    acc.connection_made(now)
    for _ in range(4):  # Logon there and back
        for src, dst in ((ini, acc), (acc, ini)):
            for frame in src.frames_to_send():
                dst.receive_data(frame, now)
            src.events()
    assert ini.is_logged_on and acc.is_logged_on, "the in-memory pair did not log on"
    return ini, acc


def round_trip(n: int, validate: bool) -> float:
    """Messages per second: initiator send_app -> bytes -> acceptor receive -> event."""
    ini, acc = pair(validate)
    got = 0
    t0 = time.perf_counter()
    now = time.time()
    for _ in range(n):
        ini.send_app(T.MT_NEW_ORDER_SINGLE, BODY, now)
        for frame in ini.frames_to_send():
            acc.receive_data(frame, now)
        for ev in acc.events():
            if isinstance(ev, AppMessageReceived):
                got += 1
    elapsed = time.perf_counter() - t0
    assert got == n, f"{got} of {n} messages arrived"
    return n / elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", type=Path, default=Path("bench/results/session.json"))
    a = p.parse_args(argv)
    rows = []
    for validate in (True, False):
        rates = [round_trip(a.n, validate) for _ in range(a.rounds)]
        rate = statistics.median(rates)
        rows.append({"case": "send + receive, " + ("validated" if validate else "no dictionary validation"),
                     "msgs_per_s": round(rate), "us_per_msg": round(1e6 / rate, 1)})
    for r in rows:
        print(r)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"benchmark": "session", "n": a.n, "rows": rows}, indent=2) + "\n")
    print(f"written {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
