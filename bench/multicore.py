"""Several worker processes: throughput with 1 and 2 workers, and what a hand-off costs.

Throughput: ``clients`` sessions, each its own identity (so the partition
spreads them over the workers) and its own load-generator process, all
pipelining orders at once from a common start time; orders/s is every
order answered divided by the span from the first start to the last end.
Gateway CPU is the supervisor's and every worker's, over the same runs.
Placement: with 2 workers each is pinned to its own CPU (``pin_workers``);
the load generators and the simulator — and the single worker of the
1-worker run — are left to the scheduler, because the question is whether
the gateway can use the second core of a machine it shares with them.

Hand-off cost: the kernel, not the gateway, decides which worker accepts a
connection; one landing on the worker that does not own its identity is
relayed (``gateway/handoff.py``).  One session's closed-loop round trip is
measured on a 2-worker gateway over fresh connections until one run landed
on the owner and one was relayed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.e2e import ROOT, BenchError, Env, cpu_seconds, fixgw_config, process, verify_audit


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _gateway_cpu(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += cpu_seconds(p)
    return total


def _loadgen(env: Env, client: int, phases: list[str], warmup: int, start_at: float) -> list[str]:
    name = f"algo{client}"
    return [sys.executable, "-m", "bench.loadgen", "--port", str(env.relay_port), "--sender", name.upper(),
            "--target", "FIXGW", "--cert", str(env.certs / f"{name}.crt"), "--key", str(env.certs / f"{name}.key"),
            "--ca", str(env.certs / "ca.crt"), "--sign", f"hmac-sha256:{env.key('hmac-sha256')}",
            "--warmup", str(warmup), "--start-at", str(start_at), *[x for ph in phases for x in ("--phase", ph)]]


def _audit_folders(env: Env, name: str, workers: int) -> list[Path]:
    base = env.root / f"state-{name}" / "audit"
    return [base] if workers == 1 else [base / f"worker-{k}" for k in range(workers)]


def _handoffs(folder: Path) -> int:
    n = 0
    for seg in sorted(folder.glob("audit-*.jsonl")):
        n += sum(1 for line in seg.read_text().splitlines() if '"connection_handed_off"' in line)
    return n


def throughput(env: Env, workers: int, clients: int, orders: int, window: int, warmup: int,
               logs: Path) -> dict[str, Any]:
    """``clients`` pipelined sessions at once through a gateway with ``workers`` workers."""
    name = f"workers{workers}"
    cfg = fixgw_config(env, name, "hmac-sha256", "write", workers=workers, clients=clients)
    shutil.rmtree(env.root / f"state-{name}", ignore_errors=True)
    py = sys.executable
    with contextlib.ExitStack() as stack:
        stack.enter_context(process([py, "-m", "gateway", "exchange-sim", "--config", str(cfg)], None,
                                    logs / f"{name}-sim.log", env.sim_port))
        gw = stack.enter_context(process([py, "-m", "gateway", "run", "--config", str(cfg)], None,
                                         logs / f"{name}-relay.log", env.relay_port))
        time.sleep(1.0)  # every worker listening, exchange legs logged on
        pids = [gw.pid, *_children(gw.pid)]
        start_at = time.time() + 3.0 + 0.3 * clients  # every generator connected and ready by then
        gens = [subprocess.Popen(_loadgen(env, i, [f"pipe:{orders}:{window}"], warmup, start_at), cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in range(1, clients + 1)]
        time.sleep(max(0.0, start_at - time.time()))
        cpu0 = _gateway_cpu(pids)
        outs = [g.communicate(timeout=600) for g in gens]
        cpu1 = _gateway_cpu(pids)
        for g, (_out, err) in zip(gens, outs, strict=True):
            if g.returncode != 0:
                raise BenchError(f"{name}: load generator failed: {err.strip()[-1500:]}")
    phases = [json.loads(out)["phases"][0] for out, _ in outs]
    if min(p["t_start"] for p in phases) < start_at - 0.05:
        raise BenchError(f"{name}: a load generator started before the common start time")
    span = max(p["t_end"] for p in phases) - min(p["t_start"] for p in phases)
    answered = sum(int(p["received"]) for p in phases)
    folders = _audit_folders(env, name, workers)
    audits = [verify_audit(f) for f in folders]
    return {"workers": workers, "clients": clients, "orders": answered, "span_s": span,
            "orders_per_s": answered / span if span > 0 else 0.0,
            "per_session_orders_per_s": [p["received"] / p["elapsed_s"] for p in phases],
            "gateway_cpu_s": cpu1 - cpu0, "gateway_processes": len(pids),
            "handed_off": sum(_handoffs(f) for f in folders),
            "audit": {"ok": all(a["ok"] for a in audits), "records": sum(int(a["records"]) for a in audits)},
            "phases": phases}


def relay_cost(env: Env, count: int, warmup: int, logs: Path, attempts: int = 8) -> dict[str, Any]:
    """Closed-loop round trip of one session on a 2-worker gateway: landed on its owner vs relayed."""
    name = "relaycost"
    cfg = fixgw_config(env, name, "hmac-sha256", "write", workers=2, clients=1)
    shutil.rmtree(env.root / f"state-{name}", ignore_errors=True)
    py = sys.executable
    found: dict[str, dict[str, Any]] = {}
    tried = 0
    with contextlib.ExitStack() as stack:
        stack.enter_context(process([py, "-m", "gateway", "exchange-sim", "--config", str(cfg)], None,
                                    logs / f"{name}-sim.log", env.sim_port))
        stack.enter_context(process([py, "-m", "gateway", "run", "--config", str(cfg)], None,
                                    logs / f"{name}-relay.log", env.relay_port))
        time.sleep(1.0)
        other = env.root / f"state-{name}" / "audit" / "worker-1"  # algo1 is worker 0's: a relay is recorded here
        while len(found) < 2 and tried < attempts:
            tried += 1
            before = _handoffs(other)
            r = subprocess.run(_loadgen(env, 1, [f"closed:{count}"], warmup, 0.0), cwd=ROOT, capture_output=True,
                               text=True, timeout=300)
            if r.returncode != 0:
                raise BenchError(f"{name}: load generator failed: {r.stderr.strip()[-1500:]}")
            time.sleep(0.2)  # the hand-off record is on disk
            kind = "relayed" if _handoffs(other) > before else "owner"
            found.setdefault(kind, json.loads(r.stdout)["phases"][0])
    return {"attempts": tried, **found}


def run(env: Env, logs: Path, clients: int, orders: int, window: int, warmup: int, relay_count: int,
        progress: bool = True) -> dict[str, Any]:
    from bench.report import stats

    out: dict[str, Any] = {"throughput": []}
    for workers in (1, 2):
        if progress:
            print(f"[workers] {workers} worker(s), {clients} sessions pipelining ...", end="", flush=True,
                  file=sys.stderr)
        res = throughput(env, workers, clients, orders, window, warmup, logs)
        out["throughput"].append(res)
        if progress:
            print(f" {res['orders_per_s']:,.0f} orders/s, {res['handed_off']} handed off", file=sys.stderr)
    if relay_count:
        if progress:
            print("[workers] hand-off cost: closed loop, landed on the owner vs relayed ...", end="", flush=True,
                  file=sys.stderr)
        out["relay"] = relay_cost(env, relay_count, warmup, logs)
        if progress:
            notes = [f"{k} p50 {stats(out['relay'][k])['p50_us']:.0f} µs" for k in ("owner", "relayed")
                     if k in out["relay"]]
            print(" " + (", ".join(notes) or "no run"), file=sys.stderr)
    return out
