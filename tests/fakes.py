"""Fake transports and peers for in-process tests: the gateway's real protocols, no sockets.

``FakeTransport`` is the gateway's end of one connection, with what an
asyncio socket transport does that the shells rely on: writes reach the
peer on a later loop iteration (never re-entrantly), ``pause_reading`` holds
the peer's bytes back until ``resume_reading``, a peer that stops reading
(``stall``) makes the write buffer grow and calls the protocol's
``pause_writing`` above the high-water mark and ``resume_writing`` once it
drained, and ``close``/``abort`` end in ``connection_lost`` on a later
iteration.  It records everything the protocol wrote (``written``) and every
call that changed reading (``reading_calls``).

The peers on the other end are real: ``ClientPeer`` is a FIX initiator
``Session`` behind a client-side ``ssl.SSLObject`` over memory BIOs, talking
mutual TLS with the gateway's own ``TLSConnection`` (a real certificate is
what gives the connection its identity); ``VenuePeer`` is a FIX acceptor
``Session`` for the exchange leg, reached through ``FakeNet``, which stands
in for ``loop.create_connection``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.core.fix import codec
from gateway.core.fix.codec import Field, Message
from gateway.core.fix.session import AppMessageReceived, Disconnected, Event, Role, Session, SessionConfig
from gateway.core.fix.store import MemoryStore, SessionStore
from gateway.shells.client_leg import TLSConnection
from gateway.shells.ports import Hub

#: asyncio's own defaults for a socket transport's write buffer
DEFAULT_HIGH = 64 * 1024


async def until(cond: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    """Wait (with a deadline, never a fixed sleep) until ``cond()`` is true."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.001)


async def settle(iterations: int = 20) -> None:
    """Let every callback already scheduled (and the ones they schedule) run: for asserting that
    something did *not* happen.  Deliveries here are loop callbacks, so this is deterministic."""
    for _ in range(iterations):
        await asyncio.sleep(0)


def frames(data: bytes | bytearray) -> list[Message]:
    """Every FIX message in a byte stream (codec's framer; a garbled frame fails the test)."""
    framer = codec.Framer(max_frame=1 << 20)
    framer.feed(bytes(data))
    out: list[Message] = []
    while (ev := framer.next_event()) is not None:
        assert isinstance(ev, codec.FrameReceived), f"garbled frame on the wire: {ev}"
        out.append(ev.message)
    return out


class FakeTransport(asyncio.Transport):
    """The gateway's end of one connection; ``peer_receive`` is the other end's reader."""

    def __init__(self, protocol: asyncio.BaseProtocol, peername: tuple[str, int],
                 peer_receive: Callable[[bytes], None], on_lost: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self.protocol = protocol
        self.peer_receive = peer_receive
        self.on_lost = on_lost
        self.extra: dict[str, Any] = {"peername": peername, "sockname": ("127.0.0.1", 1), "socket": None}
        self.written = bytearray()  # every byte the protocol wrote, in order
        self.buffer = bytearray()  # written while the peer does not read (stalled)
        self.inbound: list[bytes] = []  # from the peer, not yet handed to the protocol
        self.stalled = False
        self.high, self.low = DEFAULT_HIGH, DEFAULT_HIGH // 4
        self.protocol_paused = False  # we called pause_writing
        self.reading = True
        self.reading_calls: list[str] = []  # "pause" / "resume", as the protocol called them
        self.closing = False
        self.lost = False
        self.aborted = False
        self.writes_after_close = 0

    # -- what the protocol calls ---------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing:
            self.writes_after_close += 1  # asyncio drops them too (with a warning)
            return
        chunk = bytes(data)
        if not chunk:
            return
        self.written += chunk
        if self.stalled:
            self.buffer += chunk
            self._maybe_pause()
        else:
            self._loop.call_soon(self._to_peer, chunk)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if not self.buffer:  # asyncio: connection_lost once the buffer is flushed
            self._loop.call_soon(self._lost)

    def abort(self) -> None:
        self.aborted = True
        self.closing = True
        self.buffer.clear()
        self._loop.call_soon(self._lost)

    def pause_reading(self) -> None:
        self.reading_calls.append("pause")
        self.reading = False

    def resume_reading(self) -> None:
        self.reading_calls.append("resume")
        self.reading = True
        if self.inbound:
            self._loop.call_soon(self._deliver)

    def is_reading(self) -> bool:
        return self.reading and not self.closing

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = DEFAULT_HIGH if low is None else 4 * low
        if low is None:
            low = high // 4
        self.high, self.low = high, low
        self._maybe_pause()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.low, self.high

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    # -- what the test (the peer, the network) does ----------------------------------
    def feed(self, data: bytes) -> None:
        """Bytes from the peer: handed to the protocol on a later iteration, unless it paused reading."""
        if self.closing or self.lost or not data:
            return
        self.inbound.append(data)
        if self.reading:
            self._loop.call_soon(self._deliver)

    def peer_closed(self) -> None:
        """The peer closed its end: EOF after whatever it sent, then (protocol agreeing) close."""
        self._loop.call_soon(self._eof)

    def stall(self) -> None:
        """The peer stops reading: what the protocol writes stays in our buffer."""
        self.stalled = True

    def unstall(self) -> None:
        """The peer reads again: the buffer drains, ``resume_writing`` once below the low-water mark."""
        self.stalled = False
        if self.buffer:
            chunk, self.buffer = bytes(self.buffer), bytearray()
            self._loop.call_soon(self._to_peer, chunk)
        if self.protocol_paused and len(self.buffer) <= self.low:
            self.protocol_paused = False
            self.protocol.resume_writing()
        if self.closing and not self.lost:
            self._loop.call_soon(self._lost)

    # -- internals ---------------------------------------------------------------------
    def _maybe_pause(self) -> None:
        if not self.protocol_paused and len(self.buffer) > self.high:
            self.protocol_paused = True
            self.protocol.pause_writing()

    def _to_peer(self, chunk: bytes) -> None:
        if not self.aborted:
            self.peer_receive(chunk)

    def _deliver(self) -> None:
        proto = self.protocol
        assert isinstance(proto, asyncio.Protocol)
        while self.inbound and self.reading and not self.lost:
            proto.data_received(self.inbound.pop(0))

    def _eof(self) -> None:
        if self.lost:
            return
        if self.inbound and not self.reading:  # EOF is read after the data: it waits too
            self._loop.call_soon(self._eof)
            return
        self._deliver()
        proto = self.protocol
        assert isinstance(proto, asyncio.Protocol)
        if not proto.eof_received():
            self.close()

    def _lost(self) -> None:
        if self.lost:
            return
        self.lost = True
        self.closing = True
        self.protocol.connection_lost(None)
        if self.on_lost is not None:
            self.on_lost()


class _FixPeer:
    """A real FIX ``Session`` on the far side of a ``FakeTransport``."""

    transport: FakeTransport

    def __init__(self, config: SessionConfig, store: SessionStore) -> None:
        self.session = Session(config, store)
        self.received: list[Message] = []  # every frame that reached us, session-level ones too
        self.app: list[Message] = []  # application messages our session accepted
        self.events: list[Event] = []
        self.closed = False

    def app_of(self, msg_type: bytes) -> list[Message]:
        return [m for m in self.app if m.msg_type == msg_type]

    def _plaintext_in(self, data: bytes) -> None:
        self.received += frames(data)
        self.session.receive_data(data, time.time())
        self._drain()

    def _drain(self) -> None:
        out = self.session.frames_to_send()
        ended = False
        for ev in self.session.events():
            self.events.append(ev)
            if isinstance(ev, AppMessageReceived):
                self.app.append(ev.message)
            elif isinstance(ev, Disconnected):
                ended = True
        out += self.session.frames_to_send()
        if out:
            self._plaintext_out(b"".join(out))
        if ended:
            self._end()

    def _plaintext_out(self, data: bytes) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _end(self) -> None:
        """Our session ended (Logout exchanged): close our end of the connection."""
        self.transport.peer_closed()

    def _on_lost(self) -> None:
        self.closed = True
        self.session.close("connection lost")

    def send(self, msg_type: bytes, body: list[Field]) -> Message:
        sent = self.session.send_app(msg_type, body, time.time())
        assert sent is not None, "the peer's session is not logged on"
        self._drain()
        return sent


class VenuePeer(_FixPeer):
    """The exchange: a FIX acceptor session behind the exchange leg's fake transport."""

    def __init__(self, begin: bytes, venue_comp: bytes, gateway_comp: bytes) -> None:
        super().__init__(SessionConfig(begin, venue_comp, gateway_comp, Role.ACCEPTOR), MemoryStore())
        self.session.connection_made(time.time())

    def _plaintext_out(self, data: bytes) -> None:
        self.transport.feed(data)

    def on_bytes(self, data: bytes) -> None:
        self._plaintext_in(data)


class FakeNet:
    """Stands in for ``loop.create_connection``: every connect reaches a new ``VenuePeer``
    (or is refused while ``refuse`` is set)."""

    def __init__(self, begin: bytes, venue_comp: bytes, gateway_comp: bytes) -> None:
        self.begin, self.venue_comp, self.gateway_comp = begin, venue_comp, gateway_comp
        self.refuse = False
        self.attempts: list[tuple[str, int]] = []
        self.venues: list[VenuePeer] = []

    async def create_connection(self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: str,
                                port: int, **kw: Any) -> tuple[FakeTransport, asyncio.BaseProtocol]:
        self.attempts.append((host, port))
        if self.refuse:
            raise ConnectionRefusedError(111, f"Connect call failed ('{host}', {port})")
        venue = VenuePeer(self.begin, self.venue_comp, self.gateway_comp)
        protocol = protocol_factory()
        venue.transport = FakeTransport(protocol, (host, port), venue.on_bytes, venue._on_lost)
        protocol.connection_made(venue.transport)
        self.venues.append(venue)
        return venue.transport, protocol


class ClientPeer(_FixPeer):
    """A FIX client: initiator session, client-side TLS over memory BIOs, the gateway's real
    ``TLSConnection`` on the server side of a fake socket."""

    def __init__(self, gw: Hub, certs: Path, name: str, comp: bytes, store: SessionStore,
                 begin: bytes = b"FIX.4.4", gateway_comp: bytes = b"FIXGW",
                 peername: tuple[str, int] = ("127.0.0.1", 50001)) -> None:
        super().__init__(SessionConfig(begin, comp, gateway_comp, Role.INITIATOR), store)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / "ca.crt"))
        ctx.load_cert_chain(str(certs / f"{name}.crt"), str(certs / f"{name}.key"))
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self._in, self._out, server_hostname="localhost")
        self.handshake_done = False
        self._logon_pending = False
        self.conn = TLSConnection(gw)
        self.transport = FakeTransport(self.conn, peername, self.on_bytes, self._on_lost)
        self.conn.connection_made(self.transport)
        self._handshake()

    @property
    def protocol(self) -> Any:
        """What sits on the gateway's TLS layer once the handshake is done (its ``ClientProtocol``)."""
        return self.conn.app

    def logon(self) -> None:
        """Send Logon(A) as soon as TLS is up."""
        self._logon_pending = True
        self._start_if_ready()

    def logout(self, text: str = "") -> None:
        self.session.logout(time.time(), text)
        self._drain()

    def _start_if_ready(self) -> None:
        if self._logon_pending and self.handshake_done:
            self._logon_pending = False
            self.session.connection_made(time.time())
            self._drain()

    def _handshake(self) -> None:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        else:
            self.handshake_done = True
        self._flush_tls()
        self._start_if_ready()

    def on_bytes(self, data: bytes) -> None:
        """Ciphertext the gateway wrote."""
        self._in.write(data)
        if not self.handshake_done:
            self._handshake()
            if not self.handshake_done:
                return
        plain = bytearray()
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                break
            if not chunk:
                break
            plain += chunk
        self._flush_tls()  # post-handshake messages the read produced
        if plain:
            self._plaintext_in(bytes(plain))

    def _plaintext_out(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush_tls()

    def _flush_tls(self) -> None:
        out = self._out.read()
        if out:
            self.transport.feed(out)
