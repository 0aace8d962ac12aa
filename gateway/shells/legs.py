"""asyncio shell around a sans-IO ``Session`` (edge).

``SessionProtocol`` owns one transport and at most one session.  After
every input it drains the session: writes its frames, hands its events to
``on_event``, re-arms a single timer — the aioquic pattern.  Flow control is
explicit: when our transport's buffer fills, the *other* leg stops reading
(``pause_reading``) until it drains.
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

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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
