"""Several worker processes on one machine (edge): the supervisor.

``[gateway] workers = N`` (N > 1) makes ``fixgw run`` a supervisor that does
no FIX work itself.  It

* checks the config and the partition (``gateway/core/partition.py``) before any
  worker starts, so a config mistake is one clear error, not N;
* creates what the workers must share before they race to create it — the
  audit checkpoint key, the state folder — and one anonymous inbox per
  worker (a SOCK_SEQPACKET pair) for hand-offs (``gateway/shells/handoff.py``);
* starts worker K as ``python -m gateway _worker`` with the inboxes
  inherited; each worker listens on the same port with SO_REUSEPORT, owns
  its share of identities, sessions, exchange legs, risk books and its own
  audit chain in ``[audit] dir``/worker-K;
* forwards SIGTERM / SIGINT (graceful stop) and SIGHUP (reload) to every
  worker, and restarts a worker that died — its sessions are then down until
  their clients log on again, exactly as after a restart of a one-process
  gateway, and the other workers' sessions never notice.  A worker that dies
  ``MAX_RESTARTS`` times within ``RESTART_WINDOW`` seconds stops the gateway
  (exit 1): crash loops are not hidden.

Why processes and not threads: CPython runs one thread of Python at a time;
the hot path is Python, so only processes use a second core.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import structlog

from gateway.core.partition import partition
from gateway.edges.audit import AuditError, load_or_create_key
from gateway.edges.config import Config, ConfigError

log = structlog.get_logger("fixgw.workers")
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


def prepare(cfg: Config) -> None:
    """Everything the workers would otherwise race to create, and a check that the port is free.

    The workers bind with SO_REUSEPORT, which would let them *share* the port with a gateway of
    the same user that is still running; a plain bind first fails with EADDRINUSE instead."""
    assert cfg.audit is not None and cfg.listen is not None
    partition(cfg)  # raises ConfigError naming the identity
    state = cfg.resolve(cfg.gateway.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    try:
        load_or_create_key(cfg.resolve(cfg.audit.key) if cfg.audit.key else state / "audit-signing.key")
    except (AuditError, ValueError, OSError) as exc:
        raise ConfigError(cfg.path, "audit.key", str(exc)) from None
    with socket.socket(socket.AF_INET6 if ":" in cfg.listen.host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((cfg.listen.host, cfg.listen.port))  # OSError EADDRINUSE: `fixgw: cannot listen`


class Supervisor:
    def __init__(self, cfg: Config, config_path: str, log_level: str = "info") -> None:
        self.cfg, self.config_path, self.log_level = cfg, config_path, log_level
        self.count = cfg.gateway.workers
        # inbox K: worker K reads end [0]; every worker may write to end [1]
        self.inboxes = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(self.count)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * self.count
        self.deaths: deque[float] = deque()
        self.stopping = False
        self.exit_code = 0

    def _start(self, k: int) -> None:
        outboxes = ",".join(str(b.fileno()) for _, b in self.inboxes)
        fds = [self.inboxes[k][0].fileno()] + [b.fileno() for _, b in self.inboxes]  # its inbox, all outboxes
        cmd = [sys.executable, "-m", "gateway", "--log-level", self.log_level, "_worker", "--config",
               self.config_path, "--index", str(k), "--count", str(self.count),
               "--inbox", str(self.inboxes[k][0].fileno()), "--outboxes", outboxes]
        self.procs[k] = subprocess.Popen(cmd, pass_fds=fds)
        log.info("worker_started", worker=k, pid=self.procs[k].pid)  # type: ignore[union-attr]

    def _signal_all(self, sig: int) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                try:
                    p.send_signal(sig)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        def on_stop(signum: int, _frame: object) -> None:
            self.stopping = True

        def on_hup(_signum: int, _frame: object) -> None:
            self._signal_all(signal.SIGHUP)

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        for k in range(self.count):
            self._start(k)
        while not self.stopping:
            time.sleep(0.1)
            for k, p in enumerate(self.procs):
                if p is None or p.poll() is None or self.stopping:
                    continue
                now = time.monotonic()
                self.deaths.append(now)
                while self.deaths and self.deaths[0] < now - RESTART_WINDOW:
                    self.deaths.popleft()
                log.error("worker_died", worker=k, pid=p.pid, returncode=p.returncode)
                if p.returncode == 2 or len(self.deaths) > MAX_RESTARTS:
                    # 2: the worker refused its config (it said why on stderr); a crash loop: stop
                    log.error("workers_stopping", reason="worker keeps failing" if p.returncode != 2
                              else "worker refused the config")
                    self.stopping, self.exit_code = True, 1 if p.returncode != 2 else 2
                    break
                self._start(k)
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.gateway.shutdown_grace + 5.0
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker_killed", pid=p.pid, reason="did not stop within the grace period")
                p.kill()
                p.wait()
        for a, b in self.inboxes:
            a.close()
            b.close()
        return self.exit_code


def run(cfg: Config, config_path: str, log_level: str = "info") -> int:
    prepare(cfg)
    return Supervisor(cfg, str(Path(config_path).resolve()), log_level).run()


def pin_to_core(index: int) -> None:
    """Worker K on the K-th CPU this process may use (round robin): no cross-core wake-ups."""
    cpus = sorted(os.sched_getaffinity(0))
    if cpus:
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})


def die_with_parent() -> None:
    """A worker ends with its supervisor, even when the supervisor is killed (Linux PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the supervisor's SIGTERM still stops us
        pass
    if os.getppid() == 1:  # the supervisor died before prctl took effect
        sys.exit(1)
