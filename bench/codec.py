"""Codec benchmark: our parser and encoder against simplefix, in one run.

Both sides get the same messages in the same process; rounds alternate
(ours, simplefix, ours, ...) so machine noise hits both alike, and the
report is the ratio of medians.  Parse means: bytes in, every (tag, value)
pair available (our ``Framer`` + ``FrameReceived``; simplefix's
``FixParser.get_message``).  Encode means: fields in, framed bytes with
BodyLength(9) and CheckSum(10) out.

    python -m bench.codec [--rounds 15] [--json bench/results/codec.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import simplefix

from gateway.core.fix import codec

NOS_FIELDS: list[tuple[int, bytes]] = [
    (35, b"D"), (34, b"1234"), (49, b"ALGO-ENGINE-1"), (52, b"20240101-00:00:00.000"), (56, b"FIXGW"),
    (11, b"ORDER-000012345"), (1, b"ACCT-42"), (21, b"1"), (38, b"002000.00"), (40, b"2"),
    (44, b"101.25"), (54, b"1"), (55, b"INTC"), (59, b"0"), (60, b"20240101-00:00:00.000"),
    (207, b"XNAS"), (15, b"USD"),
]
ER_FIELDS: list[tuple[int, bytes]] = [
    (35, b"8"), (34, b"98765"), (49, b"FIXGW"), (52, b"20240101-00:00:00.000"), (56, b"ALGO-ENGINE-1"),
    (6, b"101.25"), (11, b"ORDER-000012345"), (14, b"2000"), (17, b"EXEC-778899"), (31, b"101.25"),
    (32, b"2000"), (37, b"O-55667788"), (38, b"2000"), (39, b"2"), (44, b"101.25"), (54, b"1"),
    (55, b"INTC"), (60, b"20240101-00:00:00.000"), (150, b"F"), (151, b"0"),
]

#: what a signing client sends (DESIGN §4): SignatureLength(93) + Signature(89), base64 of 32 bytes, last
SIGNED_NOS_FIELDS = [*NOS_FIELDS, (93, b"44"), (89, b"n9UBPGwEz8Eio+fNe51rderDRDUhfijLSy3qH/dvJWE=")]


def _time_per_op(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def compare(name: str, ours: Callable[[], object], ref: Callable[[], object], rounds: int, n: int) -> dict[str, object]:
    a: list[float] = []
    b: list[float] = []
    for _ in range(rounds):
        a.append(_time_per_op(ours, n))
        b.append(_time_per_op(ref, n))
    ma, mb = statistics.median(a), statistics.median(b)
    return {
        "case": name,
        "fixgw_us": round(ma * 1e6, 3),
        "simplefix_us": round(mb * 1e6, 3),
        "fixgw_msgs_per_s": round(1 / ma),
        "simplefix_msgs_per_s": round(1 / mb),
        "speedup": round(mb / ma, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--n", type=int, default=5000, help="operations per round")
    p.add_argument("--json", type=Path, default=Path("bench/results/codec.json"))
    args = p.parse_args(argv)

    rows = []
    for label, fields in (("NewOrderSingle", NOS_FIELDS), ("signed NewOrderSingle", SIGNED_NOS_FIELDS),
                          ("ExecutionReport", ER_FIELDS)):
        raw = codec.encode(b"FIX.4.4", fields)
        framer = codec.Framer()

        def ours_parse(raw: bytes = raw, framer: codec.Framer = framer) -> object:
            framer.feed(raw)
            ev = framer.next_event()
            assert isinstance(ev, codec.FrameReceived)
            return ev.message.fields

        def ref_parse(raw: bytes = raw) -> object:
            parser = simplefix.FixParser()
            parser.append_buffer(raw)
            m = parser.get_message()
            assert m is not None
            return m.pairs

        def ours_encode(fields: list[tuple[int, bytes]] = fields) -> bytes:
            return codec.encode(b"FIX.4.4", fields)

        def ref_encode(fields: list[tuple[int, bytes]] = fields) -> bytes:
            m = simplefix.FixMessage()
            m.append_pair(8, b"FIX.4.4")
            for t, v in fields:
                m.append_pair(t, v)
            return m.encode()

        assert ours_encode() == ref_encode()
        print(f"{label} ({len(raw)} bytes): parse ...", file=sys.stderr, flush=True)
        rows.append({**compare(f"parse {label}", ours_parse, ref_parse, args.rounds, args.n), "bytes": len(raw)})
        print(f"{label} ({len(raw)} bytes): encode ...", file=sys.stderr, flush=True)
        rows.append({**compare(f"encode {label}", ours_encode, ref_encode, args.rounds, args.n), "bytes": len(raw)})

    print(f"\n{'case':<28}{'fixgw µs':>10}{'simplefix µs':>14}{'speedup':>9}")
    for r in rows:
        print(f"{r['case']:<28}{r['fixgw_us']:>10}{r['simplefix_us']:>14}{r['speedup']:>8}x")
    result = {
        "benchmark": "codec",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "simplefix": getattr(simplefix, "__version__", "?"),
        "rounds": args.rounds,
        "ops_per_round": args.n,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
