"""Policy evaluation cost with 10 / 100 / 1,000 rules (target: p99 < 5 µs at 1,000).

Rules spread over 100 roles, 8 message types and 10 zones, with posture,
symbol and quantity predicates — the shape a large desk's policy has.  Each
decision is timed on its own (perf_counter_ns) for percentiles; the
context's role sees a realistic handful of candidate rules, so the cost
should stay flat as the rule count grows (rules are indexed by direction,
MsgType and role).

    python -m bench.policy [--n 20000] [--json bench/results/policy.json]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import statistics
import sys
import time
from pathlib import Path

from gateway.core.fix import codec
from gateway.core.policy.engine import Context, Policy, Rule

TYPES = [b"D", b"G", b"F", b"R", b"V", b"AD", b"a", b"BE"]


def make_rules(n: int, rng: random.Random) -> list[Rule]:
    out = []
    for i in range(n):
        out.append(Rule(
            id=f"rule-{i}", decision="deny" if i % 7 == 0 else "allow", shadow=i % 11 == 0,
            roles=frozenset({f"role-{rng.randrange(100)}"}), msg_types=frozenset(rng.sample(TYPES, 2)),
            direction="outbound", zones=frozenset({f"zone-{rng.randrange(10)}"}),
            posture=frozenset({"compliant", "highly-compliant"}), window=None,
            symbols=frozenset({b"INTC", b"MSFT", b"AAPL"}) if i % 3 == 0 else None, accounts=None,
            max_qty=10_000.0 if i % 2 == 0 else None, max_notional=None,
            controls=frozenset({"session_logging"}), ip_allowlist=()))
    # the role under test always has its own rules, like a real desk
    for j in range(3):
        out.append(Rule(f"desk-{j}", "allow", False, frozenset({"role-7"}), frozenset({b"D", b"F"}), "outbound",
                        frozenset({"zone-3"}), frozenset({"compliant"}), None, None, None, 10_000.0, None,
                        frozenset({"session_logging"}), ()))
    return out


def run(n_rules: int, n: int) -> dict[str, float]:
    rng = random.Random(42)
    policy = Policy(make_rules(n_rules, rng))
    ctx = Context("spiffe://fixgw.dev/client/x", frozenset({"role-7"}), "zone-3", "compliant", True,
                  ipaddress.ip_address("127.0.0.1"), False, time.time())
    msg = codec.parse(codec.encode(b"FIX.4.4", [(35, b"D"), (34, b"2"), (11, b"O1"), (38, b"100"),
                                                 (44, b"10.5"), (54, b"1"), (55, b"INTC")]))
    assert policy.decide(ctx, msg).allowed
    decide = policy.decide
    for _ in range(2000):
        decide(ctx, msg)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        decide(ctx, msg)
        samples.append(clock() - t0)
    samples.sort()
    q = statistics.quantiles(samples, n=1000)
    return {"rules": n_rules + 3, "p50_us": round(q[499] / 1000, 2), "p90_us": round(q[899] / 1000, 2),
            "p99_us": round(q[989] / 1000, 2), "p999_us": round(q[998] / 1000, 2),
            "max_us": round(samples[-1] / 1000, 2)}


def run_risk(n: int) -> dict[str, float]:
    """CPU added per order by the pre-trade risk checks (all of them enabled)."""
    from gateway.core.policy.risk import Limits, RiskBook

    limits = Limits(max_msgs_per_sec=1e9, burst=1e9, restricted_symbols=frozenset({b"BAD"}), max_order_qty=1e6,
                    max_notional=1e9, price_collar_pct=20, max_open_orders=10**9)
    book = RiskBook(limits)
    ref = {b"INTC": 10.0}
    msgs = [codec.parse(codec.encode(b"FIX.4.4", [(35, b"D"), (34, b"2"), (11, b"O%d" % i), (38, b"100"),
                                                   (44, b"10.5"), (54, b"1"), (55, b"INTC")])) for i in range(n)]
    clock = time.perf_counter_ns
    samples = []
    now = time.time()
    for m in msgs:
        t0 = clock()
        assert book.check(m, now, None, ref) is None
        book.accepted(m)
        samples.append(clock() - t0)
    samples.sort()
    q = statistics.quantiles(samples, n=1000)
    return {"case": "risk checks per order", "p50_us": round(q[499] / 1000, 2), "p99_us": round(q[989] / 1000, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--json", type=Path, default=Path("bench/results/policy.json"))
    a = p.parse_args(argv)
    rows = [run(k, a.n) for k in (10, 100, 1000)]
    print(f"{'rules':>6}{'p50 µs':>9}{'p90 µs':>9}{'p99 µs':>9}{'p99.9 µs':>10}{'max µs':>9}")
    for r in rows:
        print(f"{r['rules']:>6}{r['p50_us']:>9}{r['p90_us']:>9}{r['p99_us']:>9}{r['p999_us']:>10}{r['max_us']:>9}")
    risk = run_risk(a.n)
    print(f"{risk['case']}: p50 {risk['p50_us']} µs, p99 {risk['p99_us']} µs")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"benchmark": "policy", "decisions": a.n, "rows": rows, "risk": risk},
                                 indent=2) + "\n")
    print(f"written {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
