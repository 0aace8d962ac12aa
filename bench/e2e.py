"""End-to-end latency and throughput: fixgw side by side with a direct connection and haproxy, in one run.

Every configuration carries the same orders over the same TLS (mutual TLS on
both legs, certificates from one dev CA) between the same load generator
(``bench/loadgen.py``) and exchange simulator, each a separate process:

* ``direct``     load generator → exchange simulator (no relay): the floor;
* ``haproxy``    a TLS→TLS relay that inspects nothing (Debian's haproxy, one thread);
* ``fixgw-hmac``    fixgw: mTLS both legs, HMAC-SHA256 signature on every order,
                    the shipped RFQ policy, pre-trade risk, audit ``write`` (the loop
                    writes each turn's records: ``[audit] writer = "auto"``);
* ``fixgw-ed25519`` the same with Ed25519 signatures;
* ``fixgw-fsync``   the same as hmac with audit ``fsync`` (group commit, writer thread);
* ``fixgw-thread``  the same as hmac with the audit write done by a writer thread
                    (``[audit] writer = "thread"``): what the thread costs.

Each fixgw configuration runs right after its own haproxy baseline, so the
ratios absorb the drift of a shared machine.  Two placements (``taskset``):
``one-core`` — every process on CPU 0; ``split`` — the relay alone on CPU 1,
load generator and simulator on CPU 0.  Results: JSON, a PNG of latency CDFs
and a markdown summary in ``bench/results/``.

    python -m bench --help
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXGW_VARIANTS = {
    "fixgw-hmac": {"signing": "hmac-sha256", "durability": "write"},
    "fixgw-ed25519": {"signing": "ed25519", "durability": "write"},
    "fixgw-fsync": {"signing": "hmac-sha256", "durability": "fsync"},
    "fixgw-thread": {"signing": "hmac-sha256", "durability": "write", "writer": "thread"},
}
CONFIGS = ["direct", "haproxy", *FIXGW_VARIANTS]
MAX_CLIENTS = 4
DEFAULT_CONFIGS = [c for c in CONFIGS if c != "fixgw-thread"]


class BenchError(Exception):
    """Something the bench needs is missing or a process failed; one line for the user."""


@dataclass
class Env:
    """Certificates, keys and config files for one run, under a temporary folder."""

    root: Path
    certs: Path
    sim_port: int
    relay_port: int

    def key(self, scheme: str) -> Path:
        return self.root / ("algo.hmac" if scheme == "hmac-sha256" else "algo.key")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free ports."""
    for _ in range(200):
        base = free_port()
        with contextlib.ExitStack() as stack:
            try:
                for k in range(n):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", base + k))
            except OSError:
                continue
        return base
    raise BenchError(f"no {n} consecutive free ports on 127.0.0.1")


def make_env(root: Path) -> Env:
    from gateway.edges import pki
    from gateway.edges.registry import new_keys

    certs = root / "certs"
    pki.init(certs)
    for i in range(1, MAX_CLIENTS + 1):  # algo2 … : one identity per session in the worker runs
        pki.issue(certs, f"algo{i}")
    pki.issue(certs, "gw-upstream")  # the relay's client certificate towards the exchange
    for name in ("gateway", "gw-upstream"):  # haproxy wants certificate and key in one PEM
        pem = certs / f"{name}.pem"
        pem.write_bytes((certs / f"{name}.crt").read_bytes() + (certs / f"{name}.key").read_bytes())
        pem.chmod(0o600)
    new_keys("hmac-sha256", root / "algo")
    new_keys("ed25519", root / "algo")
    policy = (ROOT / "config" / "policy.toml").read_text()
    # the shipped RFQ policy, with the per-identity throttle lifted so throughput is measurable
    # (every check still runs; only the limits a load test would trip are raised)
    policy = policy.replace("max_msgs_per_sec = 200 ", "max_msgs_per_sec = 10000000 ").replace(
        "burst = 400", "burst = 10000000").replace("max_open_orders = 1000\n", "max_open_orders = 10000000\n")
    (root / "policy.toml").write_text(policy)
    return Env(root, certs, free_port(), free_port())


def fixgw_config(env: Env, name: str, signing: str, durability: str, writer: str = "auto",
                 extra_sessions: int = 0, heartbeat: int = 5, workers: int = 1, clients: int = 1,
                 pin_workers: bool = True, worker_port_base: int | None = None) -> Path:
    """One gateway config (also read by the simulator for its session table).

    ``extra_sessions`` adds sessions S0001 … for the scale runs: same identity,
    each with its own persistent exchange leg, heartbeats every ``heartbeat`` s.
    ``clients`` > 1 adds identities algo2 … with sessions ALGO2 … (worker runs:
    each identity is owned by one worker); ``workers`` sets ``[gateway] workers``
    (``pin_workers``: each on its own CPU; ``worker_port_base``: each also on its own port)."""
    c = env.certs
    extra = [f"S{i:04d}" for i in range(1, extra_sessions + 1)]
    more = [f"ALGO{i}" for i in range(2, clients + 1)]
    # scale runs open up to 1,000 sessions from one address: lift the admission limits above them
    # (every other run, the flood included, keeps the defaults)
    limits = ("max_connections = 5000\nmax_connections_per_source = 5000\nhandshake_rate = 5000\n"
              "handshake_burst = 5000\nhandshake_rate_per_source = 5000\nhandshake_burst_per_source = 5000"
              if extra_sessions else "")
    comp_ids = ", ".join(f'"{x}"' for x in ["ALGO1", *extra])
    key = env.key(signing).with_suffix(".pub" if signing == "ed25519" else ".hmac")
    text = f"""
[gateway]
state_dir = "{env.root}/state-{name}"
workers = {workers}
pin_workers = {"true" if workers > 1 and pin_workers else "false"}
{limits}
[listen]
host = "127.0.0.1"
port = {env.relay_port}
cert = "{c}/gateway.crt"
key = "{c}/gateway.key"
ca = "{c}/ca.crt"
{f"worker_port_base = {worker_port_base}" if worker_port_base and workers > 1 else ""}
[audit]
dir = "{env.root}/state-{name}/audit"
durability = "{durability}"
writer = "{writer}"
[policy]
file = "{env.root}/policy.toml"
[[identities]]
id = "spiffe://fixgw.dev/client/algo1"
comp_ids = [{comp_ids}]
roles = ["algo"]
signing = "{signing}"
keys = [{{ path = "{key}" }}]
""" + "".join(f"""
[[identities]]
id = "spiffe://fixgw.dev/client/{comp.lower()}"
comp_ids = ["{comp}"]
roles = ["algo"]
signing = "{signing}"
keys = [{{ path = "{key}" }}]
""" for comp in more) + f"""
[exchange_sim]
host = "127.0.0.1"
port = {env.sim_port}
mode = "fill"
tls = true
cert = "{c}/gateway.crt"
key = "{c}/gateway.key"
ca = "{c}/ca.crt"
require_client_cert = true
validate = true
[[sessions]]
begin_string = "FIX.4.4"
client_comp_id = "ALGO1"
gateway_comp_id = "FIXGW"
reset_on_logon = true
[sessions.upstream]
host = "127.0.0.1"
port = {env.sim_port}
tls = true
ca = "{c}/ca.crt"
cert = "{c}/gw-upstream.crt"
key = "{c}/gw-upstream.key"
sender_comp_id = "GW-ALGO1"
target_comp_id = "XCHG"
reset_on_logon = true
"""
    for comp in more + extra:
        text += f"""
[[sessions]]
begin_string = "FIX.4.4"
client_comp_id = "{comp}"
gateway_comp_id = "FIXGW"
reset_on_logon = true
[sessions.upstream]
host = "127.0.0.1"
port = {env.sim_port}
tls = true
ca = "{c}/ca.crt"
cert = "{c}/gw-upstream.crt"
key = "{c}/gw-upstream.key"
sender_comp_id = "GW-{comp}"
target_comp_id = "XCHG"
reset_on_logon = true
heartbeat_interval = {heartbeat}
"""
    path = env.root / f"{name}.toml"
    path.write_text(text)
    return path


def haproxy_relay(certs: Path, relay_port: int, server: str, out: Path) -> Path:
    """The baseline relay: haproxy terminating mTLS on ``relay_port`` and passing bytes to ``server``
    (a haproxy ``server`` line), one thread, as fixgw's one event loop."""
    text = f"""global
    nbthread 1
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend fix
    bind 127.0.0.1:{relay_port} ssl crt {certs}/gateway.pem ca-file {certs}/ca.crt verify required ssl-min-ver TLSv1.2
    default_backend upstream
backend upstream
    {server}
"""
    out.write_text(text)
    return out


def haproxy_config(env: Env) -> Path:
    c = env.certs
    return haproxy_relay(c, env.relay_port, f"server sim 127.0.0.1:{env.sim_port} ssl verify required "
                                            f"ca-file {c}/ca.crt crt {c}/gw-upstream.pem", env.root / "haproxy.cfg")


# -- processes -----------------------------------------------------------------------
def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"process exited ({proc.returncode}) before listening on {port}: "
                             f"{log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listening on 127.0.0.1:{port} after {timeout} s (log: {log})")


@contextlib.contextmanager
def process(args: list[str], cpu: int | None, log: Path, port: int | None) -> Iterator[subprocess.Popen[bytes]]:
    cmd = (["taskset", "-c", str(cpu)] if cpu is not None else []) + args
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=fh, cwd=ROOT, env=env)
    try:
        if port is not None:
            wait_port(port, proc, log)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Placement:
    name: str
    client_cpu: int | None  # load generator and exchange simulator
    relay_cpu: int | None


def placements(wanted: list[str]) -> list[Placement]:
    cpus = sorted(os.sched_getaffinity(0))
    if not shutil.which("taskset"):
        return [Placement("unpinned", None, None)]
    out = []
    for name in wanted:
        if name == "one-core":
            out.append(Placement(name, cpus[0], cpus[0]))
        elif name == "split" and len(cpus) >= 2:
            out.append(Placement(name, cpus[0], cpus[1]))
    return out


def run_one(env: Env, config: str, place: Placement, phases: list[str], warmup: int,
            logs: Path, profile: bool = False, idle: int = 0, flood_rate: float = 0.0) -> dict[str, object]:
    """Start simulator (+ relay), run the load generator to completion, stop everything.
    ``idle``: that many extra sessions logged on and heartbeating throughout (scale runs)."""
    py = sys.executable
    variant = FIXGW_VARIANTS.get(config, {"signing": "hmac-sha256", "durability": "write"})
    cfg = fixgw_config(env, config if config in FIXGW_VARIANTS else "baseline", **variant,
                       extra_sessions=idle)  # type: ignore[arg-type]
    tag = f"{place.name}-{config}" + (f"-{idle}" if idle else "")
    sim_args = [py, "-m", "gateway", "exchange-sim", "--config", str(cfg)]
    signing = variant["signing"]
    load_args = [py, "-m", "bench.loadgen", "--cert", str(env.certs / "algo1.crt"),
                 "--key", str(env.certs / "algo1.key"), "--ca", str(env.certs / "ca.crt"),
                 "--sign", f"{signing}:{env.key(signing)}", "--warmup", str(warmup),
                 *[x for ph in phases for x in ("--phase", ph)]]
    if idle:
        load_args += ["--idle", str(idle), "--idle-prefix", "S"]
    if config == "direct":
        load_args += ["--port", str(env.sim_port), "--sender", "GW-ALGO1", "--target", "XCHG"]
    elif config == "haproxy":
        load_args += ["--port", str(env.relay_port), "--sender", "GW-ALGO1", "--target", "XCHG"]
    else:
        load_args += ["--port", str(env.relay_port), "--sender", "ALGO1", "--target", "FIXGW"]
    shutil.rmtree(env.root / f"state-{config}", ignore_errors=True)
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(process(sim_args, place.client_cpu, logs / f"{tag}-sim.log", env.sim_port))
        relay = None
        if config == "haproxy":
            relay = stack.enter_context(process(["haproxy", "-db", "-f", str(haproxy_config(env))],
                                                place.relay_cpu, logs / f"{tag}-relay.log", env.relay_port))
        elif config != "direct":
            relay = stack.enter_context(process([py, "-m", "gateway", "run", "--config", str(cfg)],
                                                place.relay_cpu, logs / f"{tag}-relay.log", env.relay_port))
            if idle:
                time.sleep(min(10.0, 0.5 + idle / 200))  # let the exchange legs log on
        cpu0 = {"sim": cpu_seconds(sim.pid), "relay": cpu_seconds(relay.pid) if relay else 0.0}
        cmd = (["taskset", "-c", str(place.client_cpu)] if place.client_cpu is not None else []) + load_args
        flooder = None
        if flood_rate and relay is not None:
            fcmd = (["taskset", "-c", str(place.client_cpu)] if place.client_cpu is not None else []) + [
                py, "-m", "bench.flood", "--port", str(env.relay_port), "--cert", str(env.certs / "algo1.crt"),
                "--key", str(env.certs / "algo1.key"), "--ca", str(env.certs / "ca.crt"), "--rate", str(flood_rate)]
            flooder = subprocess.Popen(fcmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            time.sleep(0.5)  # the flood is on before the first measured order
        sampler = None
        if profile and relay is not None:
            from bench.profile import Sampler

            sampler = Sampler(relay.pid, env.root / f"{tag}-profile.txt")
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
        if sampler is not None:
            sampler.stop()
        flood_stats = None
        if flooder is not None:
            flooder.send_signal(signal.SIGTERM)
            out, _ = flooder.communicate(timeout=20)
            flood_stats = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        if r.returncode != 0:
            raise BenchError(f"{tag}: load generator failed: {r.stderr.strip()[-1500:]}")
        result = json.loads(r.stdout)
        result["relay_cpu_s"] = (cpu_seconds(relay.pid) - cpu0["relay"]) if relay else None
        result["sim_cpu_s"] = cpu_seconds(sim.pid) - cpu0["sim"]
        result["wall_s"] = wall
    result.update(config=config, placement=place.name, idle=idle)
    if flood_stats is not None:
        result["flood"] = {"rate": flood_rate, **flood_stats}
    if sampler is not None:
        from bench.profile import summarise

        result["profile"] = ({"error": sampler.error} if sampler.error
                             else summarise(env.root / f"{tag}-profile.txt"))
    if config in FIXGW_VARIANTS:
        result["audit"] = verify_audit(env.root / f"state-{config}" / "audit")
    return result


def verify_audit(folder: Path) -> dict[str, object]:
    """The bench's traffic left an intact, signed, cleanly closed chain (and how many records); the key is
    the gateway's own signing key in its state folder, not the audit.pub beside the records."""
    from gateway.edges.audit import load_or_create_key, verify

    key = next((p / "audit-signing.key" for p in folder.parents if (p / "audit-signing.key").exists()),
               folder.parent / "audit-signing.key")  # a worker's chain sits one folder further down
    res = verify(folder, load_or_create_key(key).public_key())
    return {"ok": res.ok, "records": res.records, **({} if res.ok else {"problem": str(res.problem)})}


def run_all(out: Path, place_names: list[str], configs: list[str], phases: list[str], warmup: int,
            progress: bool = True, profile: str | None = "fixgw-hmac",
            scale: tuple[int, ...] = (), scale_phases: tuple[str, ...] = ("closed:2000",),
            flood_rate: float = 0.0, workers: dict[str, int] | None = None) -> dict[str, object]:
    """Every (placement, configuration) in order; ``profile`` names the configuration whose
    relay is sampled with py-spy (in the last placement, so the sample is of the relay alone on a core).
    ``workers``: arguments of ``bench.multicore.run`` (1 vs 2 worker processes), None to skip."""
    if "haproxy" in configs and not shutil.which("haproxy"):
        raise BenchError("haproxy is not installed: run `make bench-deps` (apt-get install -y haproxy)")
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, object]] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="fixgw-bench-") as tmp:
        env = make_env(Path(tmp))
        logs = Path(tmp) / "logs"
        logs.mkdir()
        order: list[str] = []
        if "direct" in configs:
            order.append("direct")
        gw = [c for c in configs if c in FIXGW_VARIANTS]
        for c in gw:  # each fixgw configuration right after its own haproxy baseline
            if "haproxy" in configs:
                order.append("haproxy")
            order.append(c)
        if not gw and "haproxy" in configs:
            order.append("haproxy")
        places = placements(place_names)
        plan = [(p, c) for p in places for c in order]
        for i, (place, config) in enumerate(plan, 1):
            if progress:
                print(f"[{i}/{len(plan)}] {place.name:8} {config:14} ...", end="", flush=True, file=sys.stderr)
            try:
                res = run_one(env, config, place, phases, warmup, logs)
            except BenchError:
                keep = out / "logs"
                shutil.rmtree(keep, ignore_errors=True)
                shutil.copytree(logs, keep)
                raise
            runs.append(res)
            if progress:
                closed = next((p for p in res["phases"] if p["kind"] == "closed"), None)  # type: ignore[union-attr]
                note = ""
                if closed is not None:
                    from bench.report import stats

                    s = stats(closed)
                    note = f" p50 {s['p50_us']:.0f} µs  p99 {s['p99_us']:.0f} µs"
                print(f" done in {res['wall_s']:.1f} s{note}", file=sys.stderr)
        prof = None
        if profile in configs and profile in FIXGW_VARIANTS and places:
            # a separate, unmeasured run: sampling slows the process it samples
            if progress:
                print(f"[profile] {places[-1].name:8} {profile:14} (py-spy, not in the table) ...", end="",
                      flush=True, file=sys.stderr)
            prof_run = run_one(env, profile, places[-1], phases, warmup, logs, profile=True)
            prof = {"config": profile, "placement": places[-1].name, **prof_run["profile"]}  # type: ignore[dict-item]
            if progress:
                print(" done", file=sys.stderr)
        scale_runs = []
        if scale and places:
            place = places[-1]
            for n in (0, *scale):
                if progress:
                    print(f"[scale] {place.name:8} fixgw-hmac + {n:4d} idle sessions ...", end="", flush=True,
                          file=sys.stderr)
                res = run_one(env, "fixgw-hmac", place, list(scale_phases), warmup, logs, idle=n)
                scale_runs.append(res)
                if progress:
                    from bench.report import stats

                    st = stats(res["phases"][0])  # type: ignore[index]
                    rate = f", {res['logons_per_s']:.0f} logons/s" if n else ""
                    print(f" p50 {st['p50_us']:.0f} µs  p99 {st['p99_us']:.0f} µs{rate}", file=sys.stderr)
        flood_runs = []
        if flood_rate and places:
            place = places[-1]
            for rate in (0.0, flood_rate):  # quiet, then flooded, back to back
                if progress:
                    label = f"flood {rate:.0f} conn/s" if rate else "no flood"
                    print(f"[flood] {place.name:8} fixgw-hmac, {label} ...", end="", flush=True, file=sys.stderr)
                res = run_one(env, "fixgw-hmac", place, list(scale_phases), warmup, logs, flood_rate=rate)
                flood_runs.append(res)
                if progress:
                    from bench.report import stats

                    st = stats(res["phases"][0])  # type: ignore[index]
                    print(f" p50 {st['p50_us']:.0f} µs  p99 {st['p99_us']:.0f} µs", file=sys.stderr)
        multi = None
        if workers:
            from bench import multicore

            multi = multicore.run(env, logs, progress=progress, **workers)
    return {"benchmark": "e2e", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 1), "machine": machine(), "phases": phases, "runs": runs,
            "profile": prof, "scale": scale_runs, "flood": flood_runs, "workers": multi}


def machine() -> dict[str, object]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    haproxy = ""
    if shutil.which("haproxy"):
        r = subprocess.run(["haproxy", "-v"], capture_output=True, text=True)
        haproxy = r.stdout.splitlines()[0] if r.stdout else ""
    import ssl

    return {"cpu": model, "cpus": len(os.sched_getaffinity(0)), "kernel": os.uname().release,
            "python": sys.version.split()[0], "openssl": ssl.OPENSSL_VERSION, "haproxy": haproxy}
