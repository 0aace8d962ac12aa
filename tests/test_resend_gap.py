"""Session core under floods (issue 15, items 4 and 7), sans-IO: time is an argument.

Resends are served a chunk at a time, within a bound per session and a
rate; what arrives above a sequence gap is held within a byte budget,
invalid frames never, and a gap that stops filling ends the session.  The
end-to-end proof through a running gateway is ``tests/security/test_session_floods.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from gateway.core.fix import codec
from gateway.core.fix import session as S
from gateway.core.fix.gap import GapQueue
from gateway.core.fix.resend import CHUNK_BYTES, ResendQueue
from gateway.core.fix.store import MemoryStore, SessionStore
from gateway.core.fix.utctime import format_utc_timestamp
from gateway.edges.store import FileStore
from tests.test_session import T0, V44, frame, logon, sent


def session(store: SessionStore | None = None, **kw: object) -> S.Session:
    cfg = S.SessionConfig(b"FIX.4.4", b"GW", b"CLI", S.Role.ACCEPTOR, validator=V44, **kw)  # type: ignore[arg-type]
    s = S.Session(cfg, store or MemoryStore())
    s.connection_made(T0)
    logon(s)
    s.frames_to_send(), s.events()
    return s


def with_history(n: int, admin_every: int = 0, **kw: object) -> S.Session:
    """A logged-on session that sent ``n`` application messages (and a heartbeat every ``admin_every``)."""
    s = session(**kw)
    for i in range(n):
        s.send_app(b"8", [(37, b"O%d" % i), (17, b"E%d" % i)], T0)
        if admin_every and i % admin_every == 0:
            s.handle_timer(T0 + 31)  # a heartbeat: gap-filled, never resent
    s.frames_to_send(), s.events()
    return s


def resend_request(seq: int, begin: int = 1, end: int = 0, now: float = T0) -> bytes:
    return frame(b"2", seq, [(7, b"%d" % begin), (16, b"%d" % end)], now=now)


def steps(out: list[codec.Message]) -> list[tuple[bytes, bytes | None, bytes | None]]:
    return [(m.msg_type, m.get(34), m.get(36)) for m in out]


def serve_all(s: S.Session, now: float = T0) -> list[codec.Message]:
    out = sent(s)
    for _ in range(10_000):
        if not s.resend_pending:
            break
        s.continue_resend(now)
        out += sent(s)
    return out


# -- resends a chunk at a time --------------------------------------------------------------------------
def test_a_large_resend_is_served_a_chunk_at_a_time_and_ends_as_one_served_in_one_go() -> None:
    chunked = with_history(250, admin_every=7, resend_chunk_size=40)
    whole = with_history(250, admin_every=7, resend_chunk_size=100_000)
    chunked.receive_data(resend_request(2), T0)
    first = sent(chunked)
    assert sum(m.msg_type == b"8" for m in first) == 40  # only the first chunk at once
    assert chunked.resend_pending
    assert not any(isinstance(e, S.ResendServed) for e in chunked.events())
    rest = serve_all(chunked)
    whole.receive_data(resend_request(2), T0)
    assert steps(first + rest) == steps(sent(whole))  # same frames, gap fills never split at a chunk's end
    served = [e for e in chunked.events() if isinstance(e, S.ResendServed)]
    assert served == [e for e in whole.events() if isinstance(e, S.ResendServed)] and len(served) == 1
    assert served[0].resent == 250 and not chunked.resend_pending


def test_a_small_resend_goes_out_at_once_as_before() -> None:
    s = with_history(5, resend_chunk_size=100)
    s.receive_data(resend_request(2), T0)
    assert sum(m.msg_type == b"8" for m in sent(s)) == 5 and not s.resend_pending
    assert any(isinstance(e, S.ResendServed) for e in s.events())


def test_a_chunk_also_ends_after_chunk_bytes_of_stored_frames() -> None:
    s = session(resend_chunk_size=1000)
    for i in range(40):
        s.send_app(b"B", [(148, b"H%d" % i), (58, b"x" * 16_000)], T0)  # News(B), 16 KB each
    s.frames_to_send()
    s.receive_data(resend_request(2), T0)
    first = sum(len(f) for f in s.frames_to_send())
    assert CHUNK_BYTES <= first < CHUNK_BYTES + 40_000 and s.resend_pending


def test_requests_wait_their_turn_and_are_each_served_in_full() -> None:
    s = with_history(30, resend_chunk_size=10)
    s.receive_data(resend_request(2, 1, 20) + resend_request(3, 5, 6), T0)
    out = serve_all(s)
    assert [m.get(34) for m in out if m.msg_type == b"8"] == [b"%d" % n for n in [*range(2, 21), 5, 6]]
    assert [(e.begin, e.end) for e in s.events() if isinstance(e, S.ResendServed)] == [(1, 20), (5, 6)]


@pytest.mark.parametrize("make", ["memory", "file"])
def test_resend_reads_the_store_a_range_at_a_time(tmp_path: Path, make: str) -> None:
    store: SessionStore = MemoryStore() if make == "memory" else FileStore(tmp_path / "s")
    reads: list[tuple[int, int, int | None]] = []
    real = store.get_sent

    def counting(begin: int, end: int, limit: int | None = None) -> list[tuple[int, bytes]]:
        reads.append((begin, end, limit))
        return real(begin, end, limit)

    class Counting:  # a compiled (mypyc) store's methods cannot be replaced on the instance: wrap it
        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        get_sent = staticmethod(counting)

    s = session(cast(SessionStore, Counting()), resend_chunk_size=25)
    for i in range(60):
        s.send_app(b"8", [(37, b"O%d" % i)], T0)
    s.frames_to_send()
    s.receive_data(resend_request(2), T0)
    serve_all(s)
    assert reads and all(limit == 25 for _, _, limit in reads)  # never the whole range at once


# -- bound and rate ------------------------------------------------------------------------------------
def test_resend_requests_beyond_the_burst_end_the_session_with_a_logout_saying_so() -> None:
    s = with_history(3, resend_request_burst=3, resend_request_rate=1.0)
    s.receive_data(b"".join(resend_request(n) for n in range(2, 6)), T0)  # four at once
    out = sent(s)
    assert [m.msg_type for m in out].count(b"2") == 0 and out[-1].msg_type == b"5"
    text = (out[-1].get(58) or b"").decode()
    assert "ResendRequest(2) rate exceeded" in text and "at most 3 at once" in text
    assert any(isinstance(e, S.LoggedOut) and "rate exceeded" in e.reason for e in s.events())
    assert s.closed


def test_the_rate_refills_a_request_per_second() -> None:
    s = with_history(3, resend_request_burst=2, resend_request_rate=1.0)
    s.receive_data(resend_request(2) + resend_request(3), T0)
    s.receive_data(resend_request(4, now=T0 + 1.0), T0 + 1.0)  # one token back after a second
    assert s.is_logged_on and [m.msg_type for m in sent(s)].count(b"5") == 0
    s.receive_data(resend_request(5, now=T0 + 1.2), T0 + 1.2)
    assert s.closed and b"ResendRequest(2) rate exceeded" in (sent(s)[-1].get(58) or b"")


def test_requests_piling_up_unserved_end_the_session() -> None:
    """A peer that asks and never reads: its requests wait (the shell serves none while writes are paused)."""
    s = with_history(500, resend_chunk_size=10, resend_request_burst=3, resend_request_rate=1000.0)
    for n in range(2, 5):
        s.receive_data(resend_request(n, now=T0 + n), T0 + n)
    assert s.is_logged_on
    s.receive_data(resend_request(5, now=T0 + 9), T0 + 9)
    out = sent(s)
    text = (out[-1].get(58) or b"").decode()
    assert out[-1].msg_type == b"5" and "3 ResendRequest(2) not yet served" in text and s.closed
    assert any(isinstance(e, S.LoggedOut) and "not yet served" in e.reason for e in s.events())


def test_logout_and_reset_drop_pending_resend_work() -> None:
    s = with_history(300, resend_chunk_size=10)
    s.receive_data(resend_request(2), T0)
    assert s.resend_pending
    s.logout(T0, "bye")
    assert not s.resend_pending
    s.continue_resend(T0)
    assert [m.msg_type for m in sent(s)].count(b"8") == 10  # the first chunk only, then the Logout


def test_the_token_bucket_never_goes_above_its_burst_nor_backwards_in_time() -> None:
    q = ResendQueue(chunk=10, rate=1.0, burst=2)
    assert q.admit(100.0) is None and q.admit(100.0) is None
    assert q.admit(50.0) is not None  # a clock that went back refills nothing
    q2 = ResendQueue(chunk=10, rate=1.0, burst=2)
    assert q2.admit(0.0) is None
    assert [q2.admit(1_000.0), q2.admit(1_000.0), q2.admit(1_000.0) is not None] == [None, None, True]


# -- what is held above a gap ----------------------------------------------------------------------------
def test_what_is_held_above_a_gap_stays_within_its_byte_budget_and_nothing_is_lost() -> None:
    s = session(max_queue_bytes=20_000)
    big = [(33, b"1"), (58, b"x" * 3_000)]  # News(B): Headline(148), LinesOfText(33) with one Text(58)
    s.receive_data(b"".join(frame(b"B", n, [(148, b"H%d" % n), *big]) for n in range(3, 40)), T0)
    assert [m.msg_type for m in sent(s)] == [b"2"]  # one ResendRequest for the gap
    assert 0 < s._gap.bytes <= 20_000 and len(s._gap) < 10
    # the peer answers: 2 again, then everything it sent, PossDupFlag(43)=Y (what was held comes from the queue)
    dup = [(43, b"Y"), (122, format_utc_timestamp(T0 - 1))]
    resent = b"".join(frame(b"B", n, [(148, b"H%d" % n), *big], header=dup) for n in range(2, 40))
    s.receive_data(resent, T0)
    got = [e.message.seq_num for e in s.events() if isinstance(e, S.AppMessageReceived)]
    assert got == list(range(2, 40))  # each once, in order
    assert s._gap.bytes == 0 and s.is_logged_on


def test_an_invalid_message_above_a_gap_is_not_held_but_still_rejected_in_its_turn() -> None:
    s = session()
    bad = frame(b"D", 4, [(11, b"ID"), (21, b"9"), (38, b"100"), (40, b"1"), (54, b"1"), (55, b"X"),
                          (60, b"20240101-00:00:00"), (58, b"y" * 30_000)])  # HandlInst(21)=9: no such value
    s.receive_data(bad, T0)
    assert [m.msg_type for m in sent(s)] == [b"2"]
    assert s._gap.bytes < 1_000  # the Reject(3) it is owed, not its 30 KB
    s.receive_data(frame(b"0", 2) + frame(b"0", 3), T0)
    out = sent(s)
    assert [(m.msg_type, m.get(45), m.get(373), m.get(371)) for m in out] == [(b"3", b"4", b"5", b"21")]
    assert s.store.next_target_seq() == 5 and s.is_logged_on


def test_a_gap_that_does_not_move_ends_the_session_with_a_logout() -> None:
    s = session(gap_timeout=5.0)
    s.receive_data(frame(b"0", 10), T0)
    assert s.get_timer() == T0 + 5.0
    s.handle_timer(T0 + 4.9)
    assert s.is_logged_on
    s.receive_data(frame(b"0", 2, now=T0 + 4), T0 + 4)  # the gap moves: its deadline too
    assert s.get_timer() == T0 + 9.0
    s.handle_timer(T0 + 8.9)
    assert s.is_logged_on
    s.handle_timer(T0 + 9.0)
    out = sent(s)
    text = (out[-1].get(58) or b"").decode()
    assert out[-1].msg_type == b"5" and "MsgSeqNum(34) gap not filled: expecting 3" in text and "5 s" in text
    assert any(isinstance(e, S.LoggedOut) and "gap not filled" in e.reason for e in s.events()) and s.closed


def test_a_gap_that_fills_clears_its_deadline() -> None:
    s = session(gap_timeout=5.0)
    s.receive_data(frame(b"0", 4), T0)
    s.receive_data(frame(b"0", 2) + frame(b"0", 3), T0 + 1)
    assert s._gap.deadline is None and s.store.next_target_seq() == 5
    assert s.get_timer() == T0 + 30  # the heartbeat is next


def test_gap_queue_budget_counts_replacements_once() -> None:
    q = GapQueue(max_bytes=1_000, max_count=10, timeout=5.0)
    m = codec.parse(frame(b"0", 7))
    assert q.hold(7, m) and q.hold(7, m)
    assert q.bytes == len(m.raw) + 128
    assert q.take(7)[0] and q.bytes == 0


def test_a_gap_closed_by_a_gap_fill_leaves_no_deadline_behind() -> None:
    """A Logon above the expected number, then a SequenceReset-GapFill(4) over the gap: nothing is missing, so a
    peer with a long HeartBtInt is not logged out for a gap that is no longer there."""
    s = S.Session(S.SessionConfig(b"FIX.4.4", b"GW", b"CLI", validator=V44, gap_timeout=5.0), MemoryStore())
    s.connection_made(T0)
    s.receive_data(frame(b"A", 5, [(98, b"0"), (108, b"60")]), T0)
    assert [m.msg_type for m in sent(s)] == [b"A", b"2"]
    s.receive_data(frame(b"4", 1, [(36, b"5"), (123, b"Y")], header=[(43, b"Y"), (122, format_utc_timestamp(T0))]),
                   T0 + 1)
    assert s.store.next_target_seq() == 6 and s._gap.deadline is None
    s.handle_timer(T0 + 10)
    assert s.is_logged_on and [m.msg_type for m in sent(s)] == []
