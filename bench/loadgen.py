"""Load generator for the end-to-end bench: one FIX session over mutual TLS, orders out, latency in.

Runs as its own process (the harness in ``bench/e2e.py`` starts it pinned to
a core).  It logs on, sends NewOrderSingle messages and measures, per order,
the time from *send* to the *first* ExecutionReport(8) for that ClOrdID(11),
into an HDR histogram (nanoseconds, 3 significant digits).  Phases:

``closed:N``          one order in flight at a time, N orders: pure round-trip latency.
``open:RATE:SECONDS`` orders at a fixed rate regardless of replies.  The clock is a
                      periodic ``timerfd`` (microsecond pacing, not the event loop's
                      1 ms timers); latency is measured from each order's *intended*
                      send time, so when the system under test falls behind, the
                      queueing delay is counted (coordinated-omission correction).
``pipe:N:WINDOW``     N orders with up to WINDOW in flight: maximum throughput.

Each phase is preceded by a short warm-up that is not recorded.  The result
is one JSON object on stdout (or ``--out``): per phase the encoded histogram,
counts, elapsed time and the load generator's own CPU seconds.

    python -m bench.loadgen --port 9880 --cert c.crt --key c.key --ca ca.crt \\
        --sender ALGO1 --target FIXGW --sign hmac-sha256:algo.hmac --phase closed:2000
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hdrh.histogram import HdrHistogram

from gateway.core.fix import tags as T
from gateway.core.fix.codec import Field
from gateway.core.fix.events import AppMessageReceived, Disconnected, Event, LoggedOn, LoggedOut, LogonRefused
from gateway.core.fix.session import Role, Session, SessionConfig
from gateway.core.fix.store import MemoryStore
from gateway.core.fix.utctime import format_utc_timestamp
from gateway.edges import tls
from gateway.sdk import load_signer
from gateway.shells.legs import SessionProtocol

HIGHEST_NS = 60_000_000_000


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, HIGHEST_NS, 3)


# -- a periodic timerfd (Linux), so open-loop pacing is not limited to 1 ms timers --------------
class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK


def periodic_timerfd(interval_ns: int) -> int:
    fd = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "timerfd_create failed")
    ts = _Timespec(interval_ns // 1_000_000_000, interval_ns % 1_000_000_000)
    spec = _Itimerspec(ts, ts)
    if _libc.timerfd_settime(fd, 0, ctypes.byref(spec), None) != 0:
        raise OSError(ctypes.get_errno(), "timerfd_settime failed")
    return fd


@dataclass
class Phase:
    kind: str  # closed | open | pipe
    count: int = 0
    rate: float = 0.0
    seconds: float = 0.0
    window: int = 1

    @classmethod
    def parse(cls, text: str) -> Phase:
        parts = text.split(":")
        try:
            if parts[0] == "closed" and len(parts) == 2:
                return cls("closed", count=int(parts[1]))
            if parts[0] == "open" and len(parts) == 3:
                return cls("open", rate=float(parts[1]), seconds=float(parts[2]))
            if parts[0] == "pipe" and len(parts) == 3:
                return cls("pipe", count=int(parts[1]), window=int(parts[2]))
        except ValueError:
            pass
        raise argparse.ArgumentTypeError(f"{text!r}: use closed:N, open:RATE:SECONDS or pipe:N:WINDOW")

    @property
    def name(self) -> str:
        if self.kind == "closed":
            return "closed"
        if self.kind == "open":
            return f"open@{self.rate:g}/s"
        return f"pipe/{self.window}"


@dataclass
class Recorder:
    hist: HdrHistogram = field(default_factory=new_histogram)
    sent_at: dict[bytes, int] = field(default_factory=dict)  # ClOrdID -> intended send time (ns)
    received: int = 0
    record: bool = True
    waiter: asyncio.Future[None] | None = None


class LoadProtocol(SessionProtocol):
    def __init__(self, gen: LoadGen) -> None:
        super().__init__()
        self.gen = gen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.session = self.gen.session
        self.session.connection_made(time.time())
        self.pump()

    def data_received(self, data: bytes) -> None:
        self.gen.rx_ns = time.perf_counter_ns()  # before parsing: the bytes are here
        assert self.session is not None
        self.session.receive_data(data, time.time())
        self.pump()

    def on_event(self, event: Event, now: float) -> None:
        self.gen.on_event(event)


class LoadGen:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.protocol: LoadProtocol | None = None
        self.rx_ns = 0
        self.rec = Recorder()
        self.logged_on: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gone = False
        self.refused = 0
        self.seq = 0
        # unique per process: a second generator against the same gateway must not reuse ClOrdIDs
        # (the risk check refuses duplicates, and a refusal is a fast reply that measures nothing)
        self.prefix = b"B%x-" % os.getpid()

    def on_event(self, event: Event) -> None:
        if isinstance(event, AppMessageReceived):
            msg = event.message
            if msg.msg_type == T.MT_EXECUTION_REPORT:
                if msg.get(T.OrdStatus) == b"8":
                    self.refused += 1
                t0 = self.rec.sent_at.pop(msg.get(T.ClOrdID) or b"", None)
                if t0 is not None:
                    if self.rec.record:
                        self.rec.hist.record_value(max(1, self.rx_ns - t0))
                    self.rec.received += 1
                    w = self.rec.waiter
                    if w is not None and not w.done():
                        w.set_result(None)
            elif msg.msg_type == T.MT_BUSINESS_MESSAGE_REJECT:
                self.refused += 1
                w = self.rec.waiter
                if w is not None and not w.done():
                    w.set_result(None)
        elif isinstance(event, LoggedOn):
            if not self.logged_on.done():
                self.logged_on.set_result(None)
        elif isinstance(event, (LoggedOut, LogonRefused, Disconnected)):
            self.gone = True
            if not self.logged_on.done():
                self.logged_on.set_exception(ConnectionError(getattr(event, "reason", "closed before Logon")))
            w = self.rec.waiter
            if w is not None and not w.done():
                w.set_exception(ConnectionError("session closed during the run"))

    def send_order(self, intended_ns: int | None = None) -> None:
        self.seq += 1
        cl = self.prefix + b"%d" % self.seq
        body: list[Field] = [
            (T.ClOrdID, cl), (T.Account, b"BENCH"), (T.HandlInst, b"1"), (T.OrderQty, b"100"), (T.OrdType, b"2"),
            (T.Price, b"30.15"), (T.Side, b"1"), (T.Symbol, b"INTC"),
            (T.TransactTime, format_utc_timestamp(time.time(), 3)),
        ]
        self.rec.sent_at[cl] = intended_ns if intended_ns is not None else time.perf_counter_ns()
        self.session.send_app(T.MT_NEW_ORDER_SINGLE, body, time.time())
        assert self.protocol is not None
        self.protocol.pump()

    async def wait_reply(self, timeout: float = 10.0) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.rec.waiter = fut
        await asyncio.wait_for(fut, timeout)

    # -- phases ------------------------------------------------------------------
    async def closed(self, n: int) -> None:
        for _ in range(n):
            self.send_order()
            await self.wait_reply()

    async def pipe(self, n: int, window: int) -> None:
        sent = 0
        while self.rec.received < n:
            while sent < n and len(self.rec.sent_at) < window:
                self.send_order()
                sent += 1
            await self.wait_reply()

    async def open(self, rate: float, seconds: float) -> None:
        interval = int(1e9 / rate)
        total = int(rate * seconds)
        loop = asyncio.get_running_loop()
        fd = periodic_timerfd(interval)
        start = time.perf_counter_ns()
        sent = 0
        finished: asyncio.Future[None] = loop.create_future()

        def tick() -> None:
            nonlocal sent
            try:
                expirations = int.from_bytes(os.read(fd, 8), "little")
            except BlockingIOError:
                return
            for _ in range(expirations):
                if sent >= total:
                    break
                sent += 1
                self.send_order(start + sent * interval)  # intended time, not actual (CO correction)
            if sent >= total and not finished.done():
                finished.set_result(None)

        loop.add_reader(fd, tick)
        try:
            await asyncio.wait_for(finished, seconds * 3 + 10)
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        deadline = time.monotonic() + 10
        while self.rec.sent_at and time.monotonic() < deadline and not self.gone:
            await asyncio.sleep(0.001)

    async def ready(self, timeout: float = 15.0) -> None:
        """Until an order comes back filled: a relay's exchange leg may still be logging on."""
        deadline = time.monotonic() + timeout
        self.rec = Recorder(record=False)
        while True:
            self.send_order()
            await self.wait_reply()
            if not self.rec.sent_at:
                self.refused = 0
                return
            self.rec.sent_at.clear()  # refused (BusinessMessageReject): not ready yet
            if time.monotonic() > deadline:
                raise ConnectionError("orders are still refused; is the exchange leg up?")
            await asyncio.sleep(0.1)

    async def run_phase(self, phase: Phase, warmup: int, start_at: float = 0.0) -> dict[str, object]:
        self.rec = Recorder(record=False)  # warm-up: caches, JIT-less but branch predictors and buffers
        await self.closed(warmup)
        if start_at:  # several load generators measure together (worker runs)
            await asyncio.sleep(max(0.0, start_at - time.time()))
        self.rec = Recorder()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.time()
        t0 = time.perf_counter()
        if phase.kind == "closed":
            await self.closed(phase.count)
        elif phase.kind == "pipe":
            await self.pipe(phase.count, phase.window)
        else:
            await self.open(phase.rate, phase.seconds)
        elapsed = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        h = self.rec.hist
        return {
            "phase": phase.name, "kind": phase.kind, "rate": phase.rate or None, "window": phase.window,
            "sent": self.seq, "received": h.get_total_count(), "lost": len(self.rec.sent_at),
            "elapsed_s": elapsed, "t_start": wall0, "t_end": wall0 + elapsed,
            "loadgen_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
            "histogram": h.encode().decode("ascii"),
        }


async def connect(a: argparse.Namespace, ctx: object, sender: str, signer: object, heartbeat: int) -> LoadGen:
    """One session: TCP, mutual TLS handshake, Logon answered."""
    config = SessionConfig(begin_string=b"FIX.4.4", sender_comp_id=sender.encode(), target_comp_id=a.target.encode(),
                           role=Role.INITIATOR, heartbeat_interval=heartbeat, reset_on_logon=True,
                           signer=signer)  # type: ignore[arg-type]
    gen = LoadGen(Session(config, MemoryStore()))
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: LoadProtocol(gen), a.host, a.port, ssl=ctx,  # type: ignore[arg-type]
                                            server_hostname=a.server_name or a.host)
    gen.protocol = proto
    await asyncio.wait_for(gen.logged_on, 30)
    return gen


async def open_idle(a: argparse.Namespace, ctx: object, signer: object) -> tuple[list[LoadGen], float]:
    """``--idle`` extra sessions, ``--idle-concurrency`` handshakes at a time; returns them and the seconds taken."""
    sem = asyncio.Semaphore(a.idle_concurrency)

    async def one(i: int) -> LoadGen:
        async with sem:
            return await connect(a, ctx, f"{a.idle_prefix}{i:04d}", signer, a.idle_heartbeat)

    t0 = time.perf_counter()
    gens = await asyncio.gather(*(one(i) for i in range(1, a.idle + 1)))
    return list(gens), time.perf_counter() - t0


async def run(a: argparse.Namespace) -> dict[str, object]:
    signer = None
    if a.sign:
        scheme, _, path = a.sign.partition(":")
        signer = load_signer(scheme, path)
    ctx = tls.client_context(Path(a.ca), Path(a.cert), Path(a.key))
    gen = await connect(a, ctx, a.sender, signer, 30)
    await gen.ready()
    idle: list[LoadGen] = []
    out: dict[str, object] = {}
    if a.idle:
        idle, took = await open_idle(a, ctx, signer)
        out.update(idle_sessions=len(idle), logon_s=took, logons_per_s=len(idle) / took)
    phases = []
    for i, phase in enumerate(a.phase):
        phases.append(await gen.run_phase(phase, a.warmup, a.start_at if i == 0 else 0.0))
    if idle:
        out["idle_still_logged_on"] = sum(1 for g in idle if g.session.is_logged_on)
    for g in [gen, *idle]:
        g.session.logout(time.time(), "bench done")
        assert g.protocol is not None
        g.protocol.pump()
    await asyncio.sleep(0.05 + len(idle) / 5000)
    return {"phases": phases, "refused": gen.refused, **out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--server-name", default=None, help="TLS name to check (default: --host)")
    p.add_argument("--sender", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--sign", default=None, help="SCHEME:KEYFILE, e.g. hmac-sha256:algo.hmac")
    p.add_argument("--phase", type=Phase.parse, action="append", required=True)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--idle", type=int, default=0,
                   help="extra sessions logged on before the phases and kept alive (heartbeats) throughout")
    p.add_argument("--idle-prefix", default="S", help="their SenderCompIDs: PREFIX0001, PREFIX0002 ...")
    p.add_argument("--idle-heartbeat", type=int, default=5, help="HeartBtInt(108) of the extra sessions")
    p.add_argument("--idle-concurrency", type=int, default=32, help="handshakes in flight while opening them")
    p.add_argument("--start-at", type=float, default=0.0,
                   help="Unix time to start the first phase at (after its warm-up), so several generators "
                        "measure together")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    from gateway.cli.main import raise_fd_limit

    raise_fd_limit()
    try:
        import uvloop

        result = uvloop.run(run(a))
    except (ConnectionError, OSError, TimeoutError) as exc:
        print(f"loadgen: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(result)
    if a.out:
        a.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
