"""Per-message cost of each signature scheme (DESIGN §4), in one run.

For a 208-byte NewOrderSingle: encoding with and without a signature
(client side), and verifying the signature (gateway side), for ``ed25519``
and ``hmac-sha256``.  Rounds alternate between cases; medians are reported
with the unsigned encode as the baseline.

    python -m bench.signatures [--rounds 15] [--json bench/results/signatures.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.codec import NOS_FIELDS
from gateway.core.fix import codec, signature


def per_op(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--json", type=Path, default=Path("bench/results/signatures.json"))
    a = p.parse_args(argv)
    ed = Ed25519PrivateKey.generate()
    secret = bytes(range(32))
    signers = {"ed25519": signature.Signer("ed25519", ed), "hmac-sha256": signature.Signer("hmac-sha256", secret)}
    keys = {"ed25519": [signature.VerifyKey("ed25519", ed.public_key())],
            "hmac-sha256": [signature.VerifyKey("hmac-sha256", secret)]}
    cases: dict[str, Callable[[], object]] = {
        "encode unsigned (baseline)": lambda: codec.encode(b"FIX.4.4", NOS_FIELDS),
    }
    for scheme, signer in signers.items():
        raw = signature.encode_signed(b"FIX.4.4", NOS_FIELDS, signer)
        now = time.time()
        cases[f"sign {scheme} (encode + sign)"] = lambda s=signer: signature.encode_signed(b"FIX.4.4", NOS_FIELDS, s)
        cases[f"verify {scheme}"] = lambda r=raw, k=keys[scheme], t=now: signature.verify(r, k, t)
    samples: dict[str, list[float]] = {c: [] for c in cases}
    for r in range(a.rounds):
        print(f"round {r + 1}/{a.rounds}", file=sys.stderr, end="\r", flush=True)
        for name, fn in cases.items():
            samples[name].append(per_op(fn, a.n))
    print(file=sys.stderr)
    base = statistics.median(samples["encode unsigned (baseline)"])
    rows = [{"case": c, "us": round(statistics.median(s) * 1e6, 2), "x_baseline": round(statistics.median(s) / base, 1)}
            for c, s in samples.items()]
    print(f"{'case':<32}{'µs/msg':>9}{'× unsigned encode':>20}")
    for row in rows:
        print(f"{row['case']:<32}{row['us']:>9}{row['x_baseline']:>20}")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"benchmark": "signatures", "message_bytes": len(codec.encode(b"FIX.4.4", NOS_FIELDS)),
                                  "rounds": a.rounds, "ops_per_round": a.n, "rows": rows}, indent=2) + "\n")
    print(f"written {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
