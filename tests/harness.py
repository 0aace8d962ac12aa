"""Real processes for tests: dev PKI, configs, the gateway and the exchange simulator.

Everything runs on loopback with ports picked free at start; every process is
started by the test and stopped by it (SIGTERM, then SIGKILL after a bound).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import simplefix

from gateway.core.fix import codec, signature
from gateway.core.fix.signature import Signer
from gateway.core.fix.utctime import format_utc_timestamp  # noqa: F401  (tests use harness.format_utc_timestamp)
from gateway.edges import pki

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}:\n{out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def audit_records(folder: Path, settle: float = 0.05, timeout: float = 3.0) -> list[dict[str, object]]:
    """All records of a live gateway's audit folder, once writing has settled.

    The gateway's writer thread puts records on disk shortly after the event
    that caused them (a refused logon's connection may close first), so wait
    until the segments stop growing for ``settle`` seconds.
    """
    from gateway.edges.audit import segments

    deadline = time.monotonic() + timeout
    last = -1
    while True:
        size = sum(p.stat().st_size for _, p in segments(folder))
        if size == last or time.monotonic() > deadline:
            break
        last = size
        time.sleep(settle)
    return [json.loads(line) for _, p in segments(folder) for line in p.read_text().splitlines()]


def make_pki(folder: Path) -> Path:
    pki.init(folder)
    pki.issue(folder, "conformance", key_type="rsa")
    pki.issue(folder, "algo1")
    pki.issue(folder, "algo2")
    return folder


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)


def start(args: list[str], log: Path, port: int | None = None) -> Proc:
    fh = open(log, "ab")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "gateway", *args], stdout=fh, stderr=fh, cwd=ROOT, env=env)
    proc = Proc(p, log)
    if port is not None:
        try:
            wait_port(port, proc=None)
        except TimeoutError:
            proc.kill()
            raise RuntimeError(f"{args} did not listen on {port}; log:\n{log.read_text()}") from None
        if p.poll() is not None:
            raise RuntimeError(f"{args} exited {p.returncode}; log:\n{log.read_text()}")
    return proc


_LEG = re.compile(r"\bleg\"?[=:] ?\"?([^\s\",]+)")


def wait_legs_logged_on(log: Path, legs: int, proc: Proc | None = None, timeout: float = 20.0) -> None:
    """Until ``legs`` distinct exchange legs have logged on, as the gateway's log says (its
    ``upstream_logon`` lines); a gateway that exits meanwhile fails at once."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        done = {m.group(1) for line in text.splitlines() if "upstream_logon" in line and "upstream_logon_" not in line
                for m in [_LEG.search(line)] if m}
        if len(done) >= legs:
            return
        if proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"the gateway exited {proc.proc.returncode}; log:\n{text}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{legs} exchange legs did not log on within {timeout:g} s; log:\n{text[-3000:]}")
        time.sleep(0.02)


T = TypeVar("T")


def wait_for(cond: Callable[[], T], what: str, timeout: float = 15.0, interval: float = 0.02,
             proc: Proc | None = None) -> T:
    """Poll ``cond()`` until it returns something true, and return that: the way to wait for
    anything a test can observe (never a fixed sleep).  After ``timeout`` seconds an
    AssertionError says ``what`` did not happen; a ``proc`` that exits meanwhile fails at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"the process exited {proc.proc.returncode} while waiting for {what}; "
                               f"log:\n{proc.log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def read_records(folder: Path) -> list[dict[str, Any]]:
    """The records on disk right now in an audit folder's segments, without waiting (none while the
    folder does not exist yet); a record still being written (no newline yet) is left for the next read."""
    from gateway.edges.audit import segments

    if not folder.is_dir():
        return []
    out = []
    for _, p in segments(folder):
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            continue
        out.extend(json.loads(line) for line in data.split(b"\n")[:-1] if line.strip())
    return out


def wait_record(folder: Path, pred: Callable[[dict[str, Any]], object], what: str, timeout: float = 15.0,
                proc: Proc | None = None) -> dict[str, Any]:
    """The first record of ``folder`` (an audit folder, or one worker's) for which ``pred`` is true,
    once the gateway has written it; AssertionError naming ``what`` after ``timeout`` seconds."""
    return wait_for(lambda: next((r for r in read_records(folder) if pred(r)), None), what, timeout, proc=proc)


def log_events(log: Path, start: int = 0) -> list[dict[str, Any]]:
    """The JSON log lines (structlog events) of a process log from byte offset ``start`` on; other
    text, and a line still being written, left out.  Processes sharing the log (a supervisor's
    workers) write an event and its newline separately, so two events may share a line: each is read."""
    try:
        with open(log, "rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return []
    decoder = json.JSONDecoder()
    out = []
    for line in data.decode(errors="replace").split("\n")[:-1]:
        i = line.find("{")
        while i >= 0:
            try:
                ev, end = decoder.raw_decode(line, i)
            except ValueError:
                i = line.find("{", i + 1)
                continue
            if isinstance(ev, dict):
                out.append(ev)
            i = line.find("{", end)
    return out


@contextlib.contextmanager
def gateway_and_sim(tmp: Path, cfg: Path, gw_port: int, sim_port: int) -> Iterator[tuple[Proc, Proc]]:
    """The exchange simulator and the gateway from ``cfg``, stopped (SIGTERM) on the way out."""
    sim = start(["exchange-sim", "--config", str(cfg)], tmp / "sim.log", sim_port)
    try:
        gw = start(["run", "--config", str(cfg)], tmp / "gw.log", gw_port)
    except BaseException:
        sim.stop()
        raise
    try:
        wait_legs_logged_on(tmp / "gw.log", len(tomllib.loads(cfg.read_text()).get("sessions", [])), gw)
        yield gw, sim
    finally:
        gw.stop()
        sim.stop()


def conformance_config(tmp: Path, certs: Path, gw_port: int, sim_port: int) -> Path:
    """config/conformance.toml with free ports and temporary folders."""
    text = (ROOT / "config" / "conformance.toml").read_text()
    text = text.replace("9878", str(gw_port)).replace("9879", str(sim_port))
    text = text.replace('"../certs/dev/', f'"{certs}/').replace('"../state/conformance', f'"{tmp}/state')
    path = tmp / "conformance.toml"
    path.write_text(text)
    return path


def trading_config(
    tmp: Path,
    certs: Path,
    gw_port: int,
    sim_port: int,
    reset_on_logon: bool = False,
    mode: str = "persistent",
    heartbeat: int = 30,
    upstream_tls: bool = False,
    clients: tuple[str, ...] = ("ALGO1", "ALGO2"),
    identities: str | None = None,
    extra: str = "",
    gateway_extra: str = "",
    upstream_extra: str = "",
    sim_extra: str = "",
) -> Path:
    """A gateway in front of the simulator in fill mode; by default two algo identities.

    ``identities`` replaces the default [[identities]] tables; ``extra`` adds
    tables ([zones], [users] ...) before the sessions.
    """
    if identities is None:
        identities = """
[[identities]]
id = "spiffe://fixgw.dev/client/algo1"
comp_ids = ["ALGO1"]
[[identities]]
id = "spiffe://fixgw.dev/client/algo2"
comp_ids = ["ALGO2"]
"""
    r = "true" if reset_on_logon else "false"
    text = f"""
[gateway]
state_dir = "{tmp}/state"
{gateway_extra}
[listen]
port = {gw_port}
cert = "{certs}/gateway.crt"
key = "{certs}/gateway.key"
ca = "{certs}/ca.crt"
[audit]
dir = "{tmp}/state/audit"
[policy]
allow_all = true
{extra}
{identities}
[exchange_sim]
port = {sim_port}
mode = "fill"
tls = {"true" if upstream_tls else "false"}
cert = "{certs}/gateway.crt"
key = "{certs}/gateway.key"
state_dir = "{tmp}/sim-state"
reset_on_logon = {r}
{sim_extra}
"""
    for entry in clients:
        begin, _, name = entry.rpartition(":")
        begin = begin or "FIX.4.4"
        text += f"""
[[sessions]]
begin_string = "{begin}"
client_comp_id = "{name}"
gateway_comp_id = "FIXGW"
reset_on_logon = {r}
[sessions.upstream]
host = "127.0.0.1"
port = {sim_port}
tls = {"true" if upstream_tls else "false"}
ca = "{certs}/ca.crt"
sender_comp_id = "GW-{name}"
target_comp_id = "XCHG"
reset_on_logon = {r}
mode = "{mode}"
heartbeat_interval = {heartbeat}
{upstream_extra}
"""
    path = tmp / "trading.toml"
    path.write_text(text)
    return path


def client_ssl(certs: Path, name: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / "ca.crt"))
    if name is not None:
        ctx.load_cert_chain(str(certs / f"{name}.crt"), str(certs / f"{name}.key"))
    return ctx


class FixClient:
    """A minimal blocking FIX client for tests, built on simplefix for encoding."""

    def __init__(self, port: int, ctx: ssl.SSLContext | None, sender: str, target: str = "FIXGW",
                 begin: str = "FIX.4.4", signer: Signer | None = None, source: str | None = None) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10,
                                       source_address=(source, 0) if source else None)
        self.signer = signer
        self.last_sent = b""
        self.sock: socket.socket = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw
        self.sender, self.target, self.begin = sender, target, begin
        self.seq = 1
        self.framer = codec.Framer()

    def send(self, msg_type: str, fields: list[tuple[int, str]], seq: int | None = None,
             header: list[tuple[int, str]] | None = None) -> None:
        self.sock.sendall(self.frame(msg_type, fields, seq, header))

    def frame(self, msg_type: str, fields: list[tuple[int, str]], seq: int | None = None,
              header: list[tuple[int, str]] | None = None) -> bytes:
        """The next message's bytes, numbered as sent (``send_raw`` several in one write)."""
        m = simplefix.FixMessage()
        m.append_pair(8, self.begin)
        m.append_pair(35, msg_type)
        m.append_pair(34, seq if seq is not None else self.seq)
        m.append_pair(49, self.sender)
        m.append_pair(52, format_utc_timestamp(time.time()).decode())
        m.append_pair(56, self.target)
        for t, v in header or []:
            m.append_pair(t, v)
        for t, v in fields:
            m.append_pair(t, v)
        if self.signer is not None:
            pairs = [(int(t), v) for t, v in m.pairs[1:]]
            data = signature.encode_signed(self.begin.encode(), pairs, self.signer)
        else:
            data = m.encode()
        self.last_sent = data
        if seq is None:
            self.seq += 1
        return data

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float = 10.0) -> codec.Message | None:
        """Next message, or None when the gateway closed the connection."""
        deadline = time.monotonic() + timeout
        while True:
            ev = self.framer.next_event()
            if isinstance(ev, codec.FrameReceived):
                return ev.message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message from the gateway")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                return None
            self.framer.feed(data)

    def recv_type(self, msg_type: bytes, timeout: float = 10.0) -> codec.Message:
        """Next message of ``msg_type``, skipping heartbeats."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.recv(max(0.1, deadline - time.monotonic()))
            if m is None:
                raise ConnectionError(f"closed while waiting for MsgType {msg_type!r}")
            if m.msg_type == msg_type:
                return m
            if m.msg_type not in (b"0",):
                raise AssertionError(f"expected MsgType {msg_type!r}, got {m!r}")

    def logon(self, heartbeat: int = 30, reset: bool = False) -> codec.Message:
        fields = [(98, "0"), (108, str(heartbeat))]
        if reset:
            fields.append((141, "Y"))
        self.send("A", fields)
        return self.recv_type(b"A")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
