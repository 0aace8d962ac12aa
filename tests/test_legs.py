"""The asyncio shell around a session (``gateway/shells/legs.py``): what it commits, holds and re-arms.

* A read's next target number is committed (deferred ``FileStore``) before
  any event of the read goes on, once per read; when it cannot be, nothing
  of the read goes on and the session ends.
* Frames are held while pumps nest and leave as one write per connection.
* The heartbeat timer is moved only when it would fire too late.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from gateway.core.fix import codec
from gateway.core.fix import tags as T
from gateway.core.fix.dictionary import standard_validator
from gateway.core.fix.session import AppMessageReceived, Disconnected, Event, Role, Session, SessionConfig
from gateway.core.fix.store import MemoryStore, SessionStore
from gateway.core.fix.utctime import format_utc_timestamp
from gateway.edges.store import FileStore
from gateway.shells.legs import SessionProtocol, held_writes

V44 = standard_validator(b"FIX.4.4")
NOS = [(11, b"ID"), (21, b"1"), (38, b"100"), (40, b"1"), (54, b"1"), (55, b"X"), (60, b"20240101-00:00:00")]


class Wire:
    """The shell's transport: records each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def writelines(self, frames: list[bytes]) -> None:
        self.writes.append(b"".join(frames))

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def frames(self) -> list[codec.Message]:
        framer = codec.Framer()
        framer.feed(b"".join(self.writes))
        out = []
        while (ev := framer.next_event()) is not None:
            assert isinstance(ev, codec.FrameReceived)
            out.append(ev.message)
        return out


class Leg(SessionProtocol):
    def __init__(self, store: SessionStore, role: Role = Role.ACCEPTOR) -> None:
        super().__init__()
        sender, target = (b"GW", b"CLI") if role is Role.ACCEPTOR else (b"CLI", b"GW")
        self.session = Session(SessionConfig(b"FIX.4.4", sender, target, role, validator=V44), store)
        self.wire = Wire()
        self.connection_made(self.wire)  # type: ignore[arg-type]
        self.seen: list[Event] = []
        self.hook: Any = None

    def on_event(self, event: Event, now: float) -> None:
        self.seen.append(event)
        if self.hook is not None:
            self.hook(event)

    def read(self, data: bytes) -> None:
        assert self.session is not None
        self.session.receive_data(data, time.time())
        self.pump()


def frame(mt: bytes, seq: int, body: list[tuple[int, bytes]] = ()) -> bytes:  # type: ignore[assignment]
    hdr = sorted([(34, b"%d" % seq), (49, b"CLI"), (52, format_utc_timestamp(time.time())), (56, b"GW")])
    return codec.encode(b"FIX.4.4", [(35, mt), *hdr, *body])


def logged_on(store: SessionStore) -> Leg:
    leg = Leg(store)
    assert leg.session is not None
    leg.session.connection_made(time.time())
    leg.read(frame(b"A", 1, [(98, b"0"), (108, b"30")]))
    assert leg.session.is_logged_on
    return leg


async def test_a_read_commits_its_target_number_once_before_any_of_its_messages_goes_on(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s", deferred_target=True)
    leg = logged_on(store)
    on_disk: list[int] = []

    def check(ev: Event) -> None:
        if isinstance(ev, AppMessageReceived):  # what a crash now would leave: the number already kept
            again = FileStore(tmp_path / "s")
            on_disk.append(again.next_target_seq())
            again.close()

    leg.hook = check
    before = store._generation  # one slot write per commit
    leg.read(b"".join(frame(b"D", seq, [(11, b"O%d" % seq), *NOS[1:]]) for seq in (2, 3, 4)))
    assert on_disk == [5, 5, 5]
    assert store._generation == before + 1  # three messages received, one write
    store.close()


async def test_a_read_whose_number_cannot_be_kept_goes_nowhere_and_ends_the_session(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s", deferred_target=True)
    leg = logged_on(store)
    written = len(leg.wire.writes)
    full = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
    os.dup2(full, store._seq_fd)
    os.close(full)
    leg.read(frame(b"D", 2, NOS) + frame(b"1", 3, [(T.TestReqID, b"t")]))
    assert not [ev for ev in leg.seen if isinstance(ev, AppMessageReceived)]
    assert any(isinstance(ev, Disconnected) and "store cannot write" in ev.reason for ev in leg.seen)
    assert len(leg.wire.writes) == written and leg.wire.closed  # not even the Heartbeat the TestRequest asked for
    store.close()


async def test_frames_whose_batched_records_could_not_be_written_never_leave(tmp_path: Path) -> None:
    """Inside a batch the store holds the records of what is sent; if writing them fails before the
    batch ends (here a read's commit writes them first), the frames they belong to stay unsent too."""
    store = FileStore(tmp_path / "s", deferred_target=True, batched=True)
    leg = logged_on(store)
    assert leg.session is not None
    with held_writes():
        leg.session.send_app(b"8", [(11, b"B1")], time.time())
        leg.pump()
        full = os.open("/dev/full", os.O_WRONLY)  # every write from now on: ENOSPC
        os.dup2(full, store._log_fd)
        os.close(full)
        leg.read(frame(b"1", 2, [(T.TestReqID, b"t")]))
    assert not [m for m in leg.wire.frames() if m.get(11) == b"B1"]
    assert any(isinstance(ev, Disconnected) and "store cannot write" in ev.reason for ev in leg.seen)
    assert leg.wire.closed
    store.close()


async def test_frames_of_nested_pumps_leave_as_one_write_per_connection() -> None:
    client = logged_on(MemoryStore())
    venue = Leg(MemoryStore(), Role.INITIATOR)
    assert venue.session is not None
    venue.session.state = client.session.state  # type: ignore[union-attr]  # as logged on: send_app works

    def forward(ev: Event) -> None:
        if isinstance(ev, AppMessageReceived):
            assert venue.session is not None
            venue.session.send_app(b"D", [f for f in ev.message.fields if f[0] == 11], time.time())
            venue.pump()

    client.hook = forward
    client.read(b"".join(frame(b"D", seq, [(11, b"O%d" % seq), *NOS[1:]]) for seq in (2, 3, 4)))
    assert len(venue.wire.writes) == 1
    assert [m.get(11) for m in venue.wire.frames()] == [b"O2", b"O3", b"O4"]

    with held_writes():
        for i in range(3):
            venue.session.send_app(b"D", [(11, b"H%d" % i)], time.time())
            venue.pump()
        assert len(venue.wire.writes) == 1  # held until the block ends
    assert len(venue.wire.writes) == 2 and [m.get(11) for m in venue.wire.frames()][-3:] == [b"H0", b"H1", b"H2"]

    with held_writes():  # a close writes what is held first: the Logout leaves before the connection ends
        venue.session.logout(time.time(), "bye")
        venue.pump()
        venue.close_transport()
        assert venue.wire.closed and venue.wire.frames()[-1].msg_type == T.MT_LOGOUT


async def test_the_heartbeat_timer_moves_only_when_it_would_fire_too_late() -> None:
    leg = logged_on(MemoryStore())
    s = leg.session
    assert s is not None
    first = leg._timer
    assert first is not None and leg._timer_at == s.get_timer()
    now = time.time()
    for seq in range(2, 12):  # every message in and out moves the deadline later: the timer stays
        s.receive_data(frame(b"0", seq), now + seq)
        s.send_app(b"8", [(11, b"x")], now + seq)
        leg.pump()
    assert leg._timer is first and leg._timer_at < (s.get_timer() or 0)
    leg._on_timer()  # fires early: nothing is due, nothing is sent, armed again for the deadline now
    assert leg._timer is not first and leg._timer_at == s.get_timer()
    assert [m.msg_type for m in leg.wire.frames()] == [T.MT_LOGON] + [b"8"] * 10
    s.logout(time.time(), "bye")  # the Logout's own deadline is sooner: the timer moves earlier
    armed = leg._timer
    leg.pump()
    assert leg._timer is not armed and leg._timer_at == s.get_timer()
    leg.close_transport()
    await asyncio.sleep(0)

