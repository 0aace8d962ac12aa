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

A third run gives every client its owner's own port
(``[listen] worker_port_base``), so no session is handed off.

Hand-off cost: the kernel, not the gateway, decides which worker accepts a
connection on the shared port; one landing on the worker that does not own
its identity is relayed (``gateway/shells/handoff.py``).  One session's closed-loop
round trip on a 2-worker gateway, first through its owner's own port, then
through the other worker's port (relayed), in the e2e placements.
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

from bench.e2e import (
    ROOT,
    BenchError,
    Env,
    Placement,
    cpu_seconds,
    fixgw_config,
    free_ports,
    placements,
    process,
    verify_audit,
)


def children(pid: int) -> list[int]:
    """Live child processes of ``pid``, from /proc (no procps needed)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":  # ppid; zombies are gone already
                out.append(int(stat.parent.name))
    return sorted(out)


def _gateway_cpu(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += cpu_seconds(p)
    return total


def _loadgen(env: Env, client: int, phases: list[str], warmup: int, start_at: float, port: int | None = None,
             cpu: int | None = None) -> list[str]:
    name = f"algo{client}"
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    return [*pin, sys.executable, "-m", "bench.loadgen", "--port", str(port or env.relay_port),
            "--sender", name.upper(),
            "--target", "FIXGW", "--cert", str(env.certs / f"{name}.crt"), "--key", str(env.certs / f"{name}.key"),
            "--ca", str(env.certs / "ca.crt"), "--sign", f"hmac-sha256:{env.key('hmac-sha256')}",
            "--warmup", str(warmup), "--start-at", str(start_at), *[x for ph in phases for x in ("--phase", ph)]]


def _wait_workers(log: Path, workers: int, timeout: float = 30.0) -> None:
    """Until every worker logged that it listens (a worker still importing would steal the CPU)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.read_text(errors="replace").count('"event": "listening"') >= workers:
            time.sleep(0.5)  # exchange legs log on
            return
        time.sleep(0.05)
    raise BenchError(f"not every one of {workers} workers listened within {timeout:.0f} s (log: {log})")


def _merged(phases: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase out of several runs of it: histograms added, counts and times summed."""
    from bench.loadgen import new_histogram
    from bench.report import histogram

    h = new_histogram()
    for p in phases:
        h.add(histogram(p))
    return {"phase": phases[0]["phase"], "kind": phases[0]["kind"], "histogram": h.encode().decode("ascii"),
            "received": sum(int(p["received"]) for p in phases), "lost": sum(int(p["lost"]) for p in phases),
            "elapsed_s": sum(float(p["elapsed_s"]) for p in phases)}


def _audit_folders(env: Env, name: str, workers: int) -> list[Path]:
    base = env.root / f"state-{name}" / "audit"
    return [base] if workers == 1 else [base / f"worker-{k}" for k in range(workers)]


def _handoffs(folder: Path) -> int:
    n = 0
    for seg in sorted(folder.glob("audit-*.jsonl")):
        n += sum(1 for line in seg.read_text().splitlines() if '"connection_handed_off"' in line)
    return n


def throughput(env: Env, workers: int, clients: int, orders: int, window: int, warmup: int,
               logs: Path, own_ports: bool = False) -> dict[str, Any]:
    """``clients`` pipelined sessions at once through a gateway with ``workers`` workers;
    ``own_ports``: each client connects to its owner's own port (no hand-offs)."""
    from gateway.core.partition import partition
    from gateway.edges.config import load

    name = f"workers{workers}" + ("-own" if own_ports else "")
    base = free_ports(workers) if own_ports else None
    cfg = fixgw_config(env, name, "hmac-sha256", "write", workers=workers, clients=clients, worker_port_base=base)
    owners = partition(load(cfg))
    shutil.rmtree(env.root / f"state-{name}", ignore_errors=True)
    py = sys.executable
    with contextlib.ExitStack() as stack:
        stack.enter_context(process([py, "-m", "gateway", "exchange-sim", "--config", str(cfg)], None,
                                    logs / f"{name}-sim.log", env.sim_port))
        gw = stack.enter_context(process([py, "-m", "gateway", "run", "--config", str(cfg)], None,
                                         logs / f"{name}-relay.log", env.relay_port))
        _wait_workers(logs / f"{name}-relay.log", workers)
        pids = [gw.pid, *children(gw.pid)]
        start_at = time.time() + 2.5 + 0.4 * clients  # every generator connected, ready and warm by then
        def port(i: int) -> int | None:
            return base + owners.owner_of_session(f"ALGO{i}") if base is not None else None

        gens = [subprocess.Popen(_loadgen(env, i, [f"pipe:{orders}:{window}"], warmup, start_at, port(i)),
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in range(1, clients + 1)]
        time.sleep(max(0.0, start_at - time.time()))
        cpu0 = _gateway_cpu(pids)
        outs = [g.communicate(timeout=600) for g in gens]
        cpu1 = _gateway_cpu(pids)
        for g, (_out, err) in zip(gens, outs, strict=True):
            if g.returncode != 0:
                raise BenchError(f"{name}: load generator failed: {err.strip()[-1500:]}")
    results = [json.loads(out) for out, _ in outs]
    refused = sum(int(r["refused"]) for r in results)
    if refused:  # a refusal is a fast answer that measures nothing: the run is not valid
        raise BenchError(f"{name}: {refused} orders were refused by the gateway (see {logs})")
    phases = [r["phases"][0] for r in results]
    if min(p["t_start"] for p in phases) < start_at - 0.05:
        raise BenchError(f"{name}: a load generator started before the common start time")
    span = max(p["t_end"] for p in phases) - min(p["t_start"] for p in phases)
    answered = sum(int(p["received"]) for p in phases)
    folders = _audit_folders(env, name, workers)
    audits = [verify_audit(f) for f in folders]
    return {"workers": workers, "own_ports": own_ports, "clients": clients, "orders": answered, "span_s": span,
            "orders_per_s": answered / span if span > 0 else 0.0,
            "per_session_orders_per_s": [p["received"] / p["elapsed_s"] for p in phases],
            "gateway_cpu_s": cpu1 - cpu0, "gateway_processes": len(pids),
            "handed_off": sum(_handoffs(f) for f in folders),
            "audit": {"ok": all(a["ok"] for a in audits), "records": sum(int(a["records"]) for a in audits)},
            "phases": phases}


def relay_cost(env: Env, place: Placement, count: int, warmup: int, logs: Path, rounds: int = 2) -> dict[str, Any]:
    """Closed-loop round trip of one session on a 2-worker gateway: to its owner's own port, and to the
    other worker's own port (so relayed) — the same gateway, alternating ``rounds`` times so drift
    cancels, pinned like the e2e placements (both workers on the relay CPU, not one per CPU, so the
    placement is the same for both paths)."""
    name = f"relaycost-{place.name}"
    base = free_ports(2)
    cfg = fixgw_config(env, name, "hmac-sha256", "write", workers=2, clients=1, pin_workers=False,
                       worker_port_base=base)
    shutil.rmtree(env.root / f"state-{name}", ignore_errors=True)
    py = sys.executable
    out: dict[str, Any] = {"placement": place.name}
    with contextlib.ExitStack() as stack:
        stack.enter_context(process([py, "-m", "gateway", "exchange-sim", "--config", str(cfg)], place.client_cpu,
                                    logs / f"{name}-sim.log", env.sim_port))
        stack.enter_context(process([py, "-m", "gateway", "run", "--config", str(cfg)], place.relay_cpu,
                                    logs / f"{name}-relay.log", env.relay_port))
        _wait_workers(logs / f"{name}-relay.log", 2)
        runs: dict[str, list[dict[str, Any]]] = {"owner": [], "relayed": []}
        for _ in range(rounds):
            for kind, worker in (("owner", 0), ("relayed", 1)):  # algo1 is worker 0's
                r = subprocess.run(_loadgen(env, 1, [f"closed:{max(1, count // rounds)}"], warmup, 0.0,
                                            base + worker, place.client_cpu),
                                   cwd=ROOT, capture_output=True, text=True, timeout=300)
                if r.returncode != 0:
                    raise BenchError(f"{name}: load generator failed: {r.stderr.strip()[-1500:]}")
                res = json.loads(r.stdout)
                if res["refused"]:
                    raise BenchError(f"{name}: {res['refused']} orders were refused by the gateway")
                runs[kind].append(res["phases"][0])
        out.update({kind: _merged(phases) for kind, phases in runs.items()})
    out["handed_off"] = _handoffs(env.root / f"state-{name}" / "audit" / "worker-1")
    return out


def run(env: Env, logs: Path, clients: int, orders: int, window: int, warmup: int, relay_count: int,
        progress: bool = True) -> dict[str, Any]:
    from bench.report import stats

    out: dict[str, Any] = {"throughput": [], "relay": []}
    for workers, own in ((1, False), (2, False), (2, True)):
        if progress:
            label = " (own ports)" if own else ""
            print(f"[workers] {workers} worker(s){label}, {clients} sessions pipelining ...", end="", flush=True,
                  file=sys.stderr)
        res = throughput(env, workers, clients, orders, window, warmup, logs, own)
        out["throughput"].append(res)
        if progress:
            print(f" {res['orders_per_s']:,.0f} orders/s, {res['handed_off']} handed off", file=sys.stderr)
    for place in placements(["split"])[-1:] if relay_count else []:  # as scale and flood: the relay alone
        if progress:
            print(f"[workers] hand-off cost, {place.name}: closed loop to the owner, then relayed ...", end="",
                  flush=True, file=sys.stderr)
        res = relay_cost(env, place, relay_count, warmup, logs)
        out["relay"].append(res)
        if progress:
            print(f" p50 {stats(res['owner'])['p50_us']:.0f} → {stats(res['relayed'])['p50_us']:.0f} µs",
                  file=sys.stderr)
    return out
