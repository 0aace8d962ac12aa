"""``python -m bench`` — the end-to-end harness (and, with ``--components``, every component bench).

    python -m bench                  # default run: both placements, all configurations (< 5 min on 2 cores)
    python -m bench --quick          # smoke run (< 60 s): one placement, small counts
    python -m bench --components     # also codec, session, signatures, policy, pipeline, audit, posture
    python -m bench --quickfix       # instead: QuickFIX C++ client and venue, direct vs haproxy vs fixgw
                                     # (bench/quickfix.py; more options: python -m bench.quickfix --help)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import e2e, report

DEFAULT_PHASES = ["closed:2500", "open:1000:2", "open:2000:1.5", "pipe:15000:64"]
QUICK_PHASES = ["closed:400", "open:500:1", "pipe:2000:32"]


def _workers_args(a: argparse.Namespace) -> dict[str, int] | None:
    clients = a.workers if a.workers is not None else (2 if a.quick else 4)
    if clients <= 0:
        return None
    if clients > e2e.MAX_CLIENTS:
        raise SystemExit(f"python -m bench: --workers {clients}: at most {e2e.MAX_CLIENTS} sessions")
    small = a.quick
    return {"clients": clients, "orders": 150 if small else 3000, "window": 32 if small else 64,
            "warmup": 10 if small else 200, "relay_count": 40 if small else 800}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=e2e.__doc__.split("\n\n")[0],
                                epilog="Phases: closed:N (one in flight), open:RATE:SECONDS (fixed rate, "
                                       "coordinated-omission corrected), pipe:N:WINDOW (max throughput).")
    p.add_argument("--quick", action="store_true", help="smoke run: one placement, small counts (< 60 s)")
    p.add_argument("--placements", default=None,
                   help="comma list of one-core, split (default: both; --quick: split)")
    p.add_argument("--configs", default=",".join(e2e.DEFAULT_CONFIGS),
                   help=f"comma list of {', '.join(e2e.CONFIGS)} (default: all but fixgw-thread)")
    p.add_argument("--phase", action="append", default=None, help="replace the phases (repeatable)")
    p.add_argument("--warmup", type=int, default=None, help="unrecorded orders before each phase")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for e2e.json/.md/.png")
    p.add_argument("--profile", default="fixgw-hmac", metavar="CONFIG",
                   help="sample this configuration's relay with py-spy and add the profile to the summary "
                        "(default fixgw-hmac; 'none' to skip)")
    p.add_argument("--scale", default=None, metavar="N,N",
                   help="extra logged-on sessions for the scale runs (default 100,1000; --quick: none; 0: skip)")
    p.add_argument("--flood", type=float, default=None, metavar="RATE",
                   help="also measure fixgw-hmac during a connection flood of RATE/s (default 200; --quick: 0)")
    p.add_argument("--workers", type=int, default=None, metavar="SESSIONS",
                   help="1 vs 2 worker processes with SESSIONS pipelining sessions, and the hand-off cost "
                        "(default 4; --quick: 2; 0: skip)")
    p.add_argument("--components", action="store_true",
                   help="afterwards run the component benches (codec, session, signatures, policy, pipeline, audit, "
                        "posture)")
    p.add_argument("--quickfix", action="store_true",
                   help="run the QuickFIX-peer bench instead (bench/quickfix.py: QuickFIX C++ client and venue, "
                        "direct vs haproxy vs fixgw; with --quick a smoke run; --out as here)")
    a = p.parse_args(argv)
    if a.quickfix:
        from bench import quickfix

        return quickfix.main(["--out", str(a.out), *(["--quick"] if a.quick else [])])
    phases = a.phase or (QUICK_PHASES if a.quick else DEFAULT_PHASES)
    place = (a.placements or ("split" if a.quick else "one-core,split")).split(",")
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in e2e.CONFIGS]
    if unknown:
        p.error(f"unknown configuration {unknown[0]!r}; valid: {', '.join(e2e.CONFIGS)}")
    for ph in phases:
        try:
            from bench.loadgen import Phase

            Phase.parse(ph)
        except argparse.ArgumentTypeError as exc:
            p.error(str(exc))
    warmup = a.warmup if a.warmup is not None else (50 if a.quick else 300)
    try:
        scale_text = a.scale if a.scale is not None else ("0" if a.quick else "100,1000")
        scale = tuple(n for n in (int(x) for x in scale_text.split(",") if x.strip()) if n > 0)
        result = e2e.run_all(a.out, place, configs, phases, warmup,
                             profile=None if a.profile == "none" else a.profile, scale=scale,
                             flood_rate=a.flood if a.flood is not None else (0.0 if a.quick else 200.0),
                             workers=_workers_args(a))
    except e2e.BenchError as exc:
        print(f"\nbench: {exc}", file=sys.stderr)
        return 1
    for path in report.write(result, a.out):
        print(f"written {path}")
    print(report.markdown(result))
    if a.components:
        from bench import audit, codec, pipeline, policy, posture, session, signatures

        return (codec.main([]) or session.main([]) or signatures.main([]) or policy.main([]) or pipeline.main([])
                or audit.main([]) or posture.main([]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
