"""asyncio shell around a sans-IO ``Session`` (edge).

``SessionProtocol`` owns one transport and at most one session.  After
every input it drains the session: writes its frames, hands its events to
``on_event``, re-arms a single timer — the aioquic pattern.  The timer is
re-armed lazily: every message moves the session's next deadline (a
heartbeat is due ``HeartBtInt`` after the last one sent), and moving an
asyncio timer costs a cancel and a new handle; so a timer that fires no
later than the deadline stays, and when it fires early the session finds
nothing due and the timer is armed again for the deadline then.  Flow control is
explicit: when our transport's buffer fills, the *other* leg stops reading
(``pause_reading``) until it drains.

Writes are held until the outermost ``pump`` returns (``held_writes``): a
read from the exchange that brings twenty ExecutionReports pumps the client
leg twenty times while its own events are handed on, and each client pump
would otherwise encrypt and send a TLS record of its own.  Held, they leave
as one write per connection when the read is done (and the orders of one
client read as one write to the exchange).  Holding only ever delays a
frame; nothing leaves earlier than before.

A session store in deferred mode (``FileStore(deferred_target=True)``)
keeps the next target number of a read in memory; ``pump`` commits it
before anything of that read goes on — a frame to the peer, an event to
the router — so a crash can never take back a number whose message went
on.  When the commit fails, nothing of the read goes on: its application
messages are dropped (the peer sends them again after the next Logon) and
the session ends as on any store failure.

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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from gateway.core.fix.session import AppMessageReceived, Disconnected, Event, Session
from gateway.edges.store import FileStore, close_batch, open_batch


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY: FIX messages are small and latency matters more than packets."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class _Held(threading.local):
    """Frames held while a pump (or ``held_writes``) runs: written when the outermost one ends.
    Per thread: each event loop (a test may run several, one per thread) holds its own."""

    def __init__(self) -> None:
        self.depth = 0
        self.protocols: list[SessionProtocol] = []  # with frames held, in the order they first held one


_held = _Held()


@contextmanager
def held_writes() -> Iterator[None]:
    """Hold every leg's writes until the block ends, then write each leg's frames at once
    (e.g. the forwards and deliveries of a whole batch of audit records done).  The session stores
    hold the records of what is sent meanwhile too (``gateway/edges/store.py``: ``open_batch``): one
    write per store when the block ends, before any frame of the block leaves.  A store whose write
    fails ends its session: that leg's held frames are dropped, never written."""
    held = _held
    held.depth += 1
    open_batch()
    try:
        yield
    finally:
        try:
            for store, error in close_batch():
                _store_failed(held, store, error)
        finally:
            held.depth -= 1
            if held.depth == 0:
                _write_held(held)


def _store_failed(held: _Held, store: FileStore, error: OSError) -> None:
    """The batched write of ``store`` failed: the session ends as on any store failure (the frames its
    leg holds are dropped by ``write_held``: their records were rolled back)."""
    for proto in list(held.protocols):
        s = proto.session
        if s is not None and s.store is store:
            s.store_failed(error)
            proto.pump()


def _write_held(held: _Held) -> None:
    protocols = held.protocols
    while protocols:  # a write may pump another leg (flow control): its frames join the list
        protocols.pop(0).write_held()


class SessionProtocol(asyncio.Protocol):
    session: Session | None = None

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # the deadline (wall clock) the armed timer fires at
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.peer: tuple[str, int] | None = None
        self.on_pause: Callable[[bool], None] | None = None  # tell the other leg
        self.write_paused = False
        self._resend: asyncio.Handle | None = None  # the next resend chunk, scheduled
        self._resend_pause = 0.0  # seconds the last chunk took: the next one waits as long
        self._serving_resend = False
        self._held: list[bytes] | None = None  # frames waiting for the outermost pump to end
        self._held_lost = 0  # the store's ``lost_batches`` when they started to wait

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
        """Write what the session produced, hand over its events, re-arm the timer.

        The frames are written when the outermost pump returns (see the module docstring)."""
        s = self.session
        if s is None:
            return
        held = _held
        held.depth += 1
        try:
            self._pump(s)
        finally:
            held.depth -= 1
            if held.depth == 0:
                _write_held(held)

    def _pump(self, s: Session) -> None:
        now = time.time()
        carried: list[Event] = []
        store = s.store
        if isinstance(store, FileStore) and store.target_pending:
            try:
                store.commit()
            except OSError as exc:
                carried = self._uncommitted(s, exc)
        for _ in range(1000):
            frames = s.frames_to_send()
            if frames:
                self._write(frames)
            events = s.events()
            if carried:
                events, carried = carried + events, []
            if not events:
                break
            disconnect = False
            for ev in events:
                self.on_event(ev, now)
                if isinstance(ev, Disconnected):
                    disconnect = True
            if disconnect:
                frames = s.frames_to_send()
                if frames:
                    self._write(frames)
                self.close_transport()
                return
        self._arm_timer()
        self._schedule_resend()

    @staticmethod
    def _uncommitted(s: Session, exc: OSError) -> list[Event]:
        """The read's target number could not be kept: its frames and application messages go nowhere
        (a crash would take the number back); what else happened is still told, then the session ends."""
        s.frames_to_send()
        kept: list[Event] = [ev for ev in s.events() if not isinstance(ev, AppMessageReceived)]
        s.store_failed(exc)
        return kept

    def _write(self, frames: list[bytes]) -> None:
        """Hold ``frames`` for the end of the outermost pump (``write_held``)."""
        if self.transport is None or self._closed:
            return
        self.on_frames_out(frames)
        held = _held
        if held.depth == 0:
            self.transport.writelines(frames)
        elif self._held is None:
            self._held = frames
            self._held_lost = self._lost_batches()
            held.protocols.append(self)
        else:
            self._held.extend(frames)

    def write_held(self) -> None:
        """Write the frames held for this connection (one write) — unless a batched write of the session's
        store failed meanwhile: some of them are messages a resend could not repeat, so none leaves."""
        frames, self._held = self._held, None
        if frames and self.transport is not None and not self._closed and self._lost_batches() == self._held_lost:
            self.transport.writelines(frames)

    def _lost_batches(self) -> int:
        store = self.session.store if self.session is not None else None
        return store.lost_batches if isinstance(store, FileStore) else 0

    def close_transport(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.write_held()  # what the session said last (a Logout) goes before the close
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _arm_timer(self) -> None:
        """Make the timer fire at the session's next deadline or before it (see the module docstring)."""
        s = self.session
        deadline = s.get_timer() if s is not None and not self._closed else None
        timer = self._timer
        if timer is not None:
            if deadline is not None and self._timer_at <= deadline:
                return  # fires in time (early at worst: the session then finds nothing due)
            timer.cancel()
            self._timer = None
        if deadline is None:
            return
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._timer_at = deadline
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


def peer_text(peer: Any) -> str | None:
    """``host:port`` of a socket peer address, or None."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return None
