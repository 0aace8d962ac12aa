"""asyncio shell around a sans-IO ``Session`` (edge).

``SessionProtocol`` owns one transport and at most one session.  After
every input it drains the session: writes its frames, hands its events to
``on_event``, re-arms a single timer — the aioquic pattern.  Flow control is
explicit: when our transport's buffer fills, the *other* leg stops reading
(``pause_reading``) until it drains.

A large resend is served a chunk at a time (``Session.continue_resend``),
and only while our transport is not paused: a peer that asks for
everything and reads nothing stalls its own resend, not the event loop, and
holds at most a write buffer and a chunk in memory.  After a chunk that
took *t* seconds the next one waits *t* (``call_later``): one session's
resend gets at most half of the loop, and the other sessions, the audit
writer thread and the exchange legs the rest — a peer that reads as fast as
we send cannot turn its resend into everybody's latency.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

from gateway.core.fix.session import Disconnected, Event, Session


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY: FIX messages are small and latency matters more than packets."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class SessionProtocol(asyncio.Protocol):
    session: Session | None = None

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.peer: tuple[str, int] | None = None
        self.on_pause: Callable[[bool], None] | None = None  # tell the other leg
        self.write_paused = False
        self._resend: asyncio.Handle | None = None  # the next resend chunk, scheduled
        self._resend_pause = 0.0  # seconds the last chunk took: the next one waits as long
        self._serving_resend = False

    # -- asyncio.Protocol --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop transports are not subclasses
        set_nodelay(transport)
        self.peer = transport.get_extra_info("peername")

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.on_pause:
            self.on_pause(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.on_pause:
            self.on_pause(False)
        self._schedule_resend()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._resend is not None:
            self._resend.cancel()
            self._resend = None
        if self.session is not None and not self.session.closed:
            self.session.close("connection lost" + (f": {exc}" if exc else ""))
            self.pump()
        self.on_closed(exc)

    # -- hooks ----------------------------------------------------------------
    def on_event(self, event: Event, now: float) -> None:  # pragma: no cover - overridden
        pass

    def on_closed(self, exc: Exception | None) -> None:  # pragma: no cover - overridden
        pass

    def on_frames_out(self, frames: list[bytes]) -> None:
        """Frames about to be written (full capture hooks in here)."""

    # -- driving the session ----------------------------------------------------
    def pump(self) -> None:
        """Write what the session produced, hand over its events, re-arm the timer."""
        s = self.session
        if s is None:
            return
        now = time.time()
        for _ in range(1000):
            frames = s.frames_to_send()
            if frames and self.transport is not None and not self._closed:
                self.on_frames_out(frames)
                self.transport.writelines(frames)
            events = s.events()
            if not events:
                break
            disconnect = False
            for ev in events:
                self.on_event(ev, now)
                if isinstance(ev, Disconnected):
                    disconnect = True
            if disconnect:
                frames = s.frames_to_send()
                if frames and self.transport is not None and not self._closed:
                    self.on_frames_out(frames)
                    self.transport.writelines(frames)
                self.close_transport()
                return
        self._arm_timer()
        self._schedule_resend()

    def close_transport(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _arm_timer(self) -> None:
        s = self.session
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if s is None or self._closed:
            return
        deadline = s.get_timer()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, deadline - time.time()), self._on_timer)

    def _schedule_resend(self) -> None:
        """Ask for the next resend chunk on a later turn of the loop, unless our writes are paused."""
        s = self.session
        if (self._resend is None and s is not None and s.resend_pending and not self.write_paused
                and not self._closed and not self._serving_resend):
            self._resend = asyncio.get_running_loop().call_later(self._resend_pause, self._continue_resend)

    def _continue_resend(self) -> None:
        self._resend = None
        if self.session is None or self._closed:
            return
        started = time.perf_counter()
        self._serving_resend = True
        try:
            self.session.continue_resend(time.time())
            self.pump()  # encrypting and writing the chunk is part of its cost
        finally:
            self._serving_resend = False
        self._resend_pause = time.perf_counter() - started
        self._schedule_resend()

    def _on_timer(self) -> None:
        self._timer = None
        if self.session is None:
            return
        self.session.handle_timer(time.time())
        self.pump()


def text(v: bytes | None) -> str | None:
    """A FIX value for logs and audit records (latin-1, byte for byte)."""
    return v.decode("latin-1") if v is not None else None


def peer_text(peer: Any) -> str | None:
    """``host:port`` of a socket peer address, or None."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return None
