"""Sans-IO session engine: time is an argument, nothing touches a socket."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.fix import codec
from gateway.core.fix import session as S
from gateway.core.fix.dictionary import standard_validator
from gateway.core.fix.store import MemoryStore
from gateway.core.fix.utctime import format_utc_timestamp

T0 = 1_800_000_000.0
V44 = standard_validator(b"FIX.4.4")


def acceptor(store: MemoryStore | None = None, **kw: object) -> S.Session:
    cfg = S.SessionConfig(b"FIX.4.4", b"GW", b"CLI", S.Role.ACCEPTOR, validator=V44, **kw)  # type: ignore[arg-type]
    s = S.Session(cfg, store or MemoryStore())
    s.connection_made(T0)
    return s


def frame(mt: bytes, seq: int, body: list[tuple[int, bytes]] = (), now: float = T0,  # type: ignore[assignment]
          sender: bytes = b"CLI", header: list[tuple[int, bytes]] = ()) -> bytes:  # type: ignore[assignment]
    hdr = sorted([(34, b"%d" % seq), (49, sender), (52, format_utc_timestamp(now)), (56, b"GW"), *header])
    return codec.encode(b"FIX.4.4", [(35, mt), *hdr, *body])


def logon(s: S.Session, seq: int = 1, now: float = T0, extra: list[tuple[int, bytes]] = ()) -> None:  # type: ignore[assignment]
    s.receive_data(frame(b"A", seq, [(98, b"0"), (108, b"30"), *extra], now), now)


def sent(s: S.Session) -> list[codec.Message]:
    return [codec.parse(f) for f in s.frames_to_send()]


NOS = [(11, b"ID"), (21, b"1"), (38, b"100"), (40, b"1"), (54, b"1"), (55, b"X"), (60, b"20240101-00:00:00")]


def test_valid_logon_is_answered_and_reported() -> None:
    s = acceptor()
    logon(s)
    out = sent(s)
    assert [m.msg_type for m in out] == [b"A"]
    assert out[0].get(108) == b"30" and out[0].get(34) == b"1"
    assert isinstance(s.events()[0], S.LoggedOn)
    assert s.is_logged_on


def test_logon_with_bad_sending_time_closes_silently() -> None:
    s = acceptor()
    s.receive_data(frame(b"A", 1, [(98, b"0"), (108, b"30")], now=T0 - 500), T0)
    assert s.frames_to_send() == []  # no answer at all (1d)
    evs = s.events()
    assert any(isinstance(e, S.LogonRefused) and "SendingTime(52)" in e.reason for e in evs)
    assert isinstance(evs[-1], S.Disconnected) and s.closed


def test_failed_logon_never_resets_stored_sequence_numbers() -> None:
    store = MemoryStore()
    store.set_next_sender_seq(7)
    store.set_next_target_seq(9)
    s = acceptor(store)
    s.receive_data(frame(b"A", 1, [(98, b"0"), (108, b"30"), (141, b"Y")], sender=b"EVIL"), T0)
    assert s.closed
    assert (store.next_sender_seq(), store.next_target_seq()) == (7, 9)


def test_gap_triggers_resend_request_and_queued_messages_are_processed_in_order() -> None:
    s = acceptor()
    logon(s)
    s.frames_to_send(), s.events()
    s.receive_data(frame(b"D", 4, NOS), T0)
    out = sent(s)
    assert [(m.msg_type, m.get(7), m.get(16)) for m in out] == [(b"2", b"2", b"0")]
    s.receive_data(frame(b"0", 2) + frame(b"0", 3), T0)
    apps = [e for e in s.events() if isinstance(e, S.AppMessageReceived)]
    assert [a.message.seq_num for a in apps] == [4]
    assert s.store.next_target_seq() == 5


def test_resend_serves_app_messages_with_possdup_and_gap_fills_admin() -> None:
    s = acceptor()
    logon(s)
    s.send_app(b"8", [(37, b"O1")], T0)          # seq 2
    s.handle_timer(T0 + 31)                     # heartbeat, seq 3
    s.send_app(b"8", [(37, b"O2")], T0 + 31)    # seq 4
    s.frames_to_send()
    s.receive_data(frame(b"2", 2, [(7, b"1"), (16, b"0")], now=T0 + 32), T0 + 32)
    out = sent(s)
    kinds = [(m.msg_type, m.get(34), m.get(43), m.get(36)) for m in out]
    assert kinds == [(b"4", b"1", b"Y", b"2"), (b"8", b"2", b"Y", None), (b"4", b"3", b"Y", b"4"),
                     (b"8", b"4", b"Y", None)]
    assert out[1].get(122) is not None


def test_garbled_frame_is_dropped_without_consuming_a_sequence_number() -> None:
    s = acceptor()
    logon(s)
    s.events()
    bad = frame(b"0", 2)[:-4] + b"999\x01"
    s.receive_data(bad + frame(b"0", 2), T0)
    evs = s.events()
    assert isinstance(evs[0], S.FrameDropped)
    assert s.store.next_target_seq() == 3 and not s.closed


def test_heartbeat_test_request_and_timeout_follow_the_clock_passed_in() -> None:
    s = acceptor()
    s.receive_data(frame(b"A", 1, [(98, b"0"), (108, b"10")]), T0)
    s.frames_to_send()
    s.handle_timer(T0 + 10)
    assert [m.msg_type for m in sent(s)] == [b"0"]
    s.handle_timer(T0 + 15)
    assert [(m.msg_type, m.get(112)) for m in sent(s)] == [(b"1", b"TEST")]
    s.handle_timer(T0 + 24)
    assert s.closed


def test_clock_jump_outside_the_sending_time_window_rejects_and_logs_out() -> None:
    s = acceptor()
    logon(s)
    s.frames_to_send()
    s.receive_data(frame(b"0", 2, now=T0), T0 + 3600)  # our clock jumped an hour
    out = sent(s)
    assert [(m.msg_type, m.get(373)) for m in out] == [(b"3", b"10"), (b"5", None)]


def test_initiator_and_acceptor_talk_to_each_other() -> None:
    a = acceptor()
    i = S.Session(S.SessionConfig(b"FIX.4.4", b"CLI", b"GW", S.Role.INITIATOR, heartbeat_interval=30,
                                  validator=V44), MemoryStore())
    i.connection_made(T0)

    def shuttle() -> None:
        for _ in range(10):
            fi, fa = i.frames_to_send(), a.frames_to_send()
            if not fi and not fa:
                return
            for f in fi:
                a.receive_data(f, T0)
            for f in fa:
                i.receive_data(f, T0)

    shuttle()
    assert a.is_logged_on and i.is_logged_on
    i.send_app(b"D", NOS, T0)
    shuttle()
    got = [e for e in a.events() if isinstance(e, S.AppMessageReceived)]
    assert got and got[0].message.get(11) == b"ID"


def test_peer_input_never_raises_out_of_the_core() -> None:
    s = acceptor()
    s.receive_data(b"\x00\xff garbage 8=FIX.4.4\x019=abc\x01", T0)
    assert s.closed  # garbled first message: closed, no exception


_valid = st.sampled_from([b"0", b"1", b"2", b"4", b"5", b"D", b"A", b"3", b"*"])


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(_valid, st.integers(0, 12), st.integers(-200, 200),
                                st.booleans(), st.binary(max_size=12)), max_size=25))
def test_random_session_traffic_never_raises(steps: list[tuple[bytes, int, int, bool, bytes]]) -> None:
    s = acceptor()
    logon(s)
    now = T0
    for mt, seq, skew, possdup, noise in steps:
        now += 1
        hdr = [(43, b"Y"), (122, format_utc_timestamp(now))] if possdup else []
        body = {b"2": [(7, b"1"), (16, b"0")], b"4": [(36, b"%d" % (seq + 2))], b"1": [(112, b"x")],
                b"D": NOS}.get(mt, [])
        data = frame(mt, seq, body, now + skew, header=hdr)
        if noise:
            cut = len(noise) % max(1, len(data))
            data = data[:cut] + noise + data[cut:]
        s.receive_data(data, now)
        s.handle_timer(now)
        s.frames_to_send()
        s.events()
        assert s.framer.buffered <= 64 * 1024


_mutation = st.tuples(st.sampled_from(["flip", "insert", "delete", "dup", "truncate"]), st.integers(0, 10_000),
                      st.binary(min_size=1, max_size=8))


@settings(max_examples=300, deadline=None)
@given(mt=_valid, seq=st.integers(1, 6), mutations=st.lists(_mutation, min_size=1, max_size=6),
       chunk=st.integers(1, 80))
def test_mutated_well_formed_frames_never_raise_and_the_buffer_stays_bounded(
        mt: bytes, seq: int, mutations: list[tuple[str, int, bytes]], chunk: int) -> None:
    s = acceptor()
    logon(s)
    data = bytearray(frame(mt, seq + 1, NOS if mt == b"D" else [(112, b"t")] if mt == b"1" else []))
    for op, at, blob in mutations:
        if not data:
            break
        i = at % len(data)
        if op == "flip":
            data[i] ^= blob[0] or 1
        elif op == "insert":
            data[i:i] = blob
        elif op == "delete":
            del data[i:i + len(blob)]
        elif op == "dup":
            data += data[i:]
        else:
            del data[i:]
    for k in range(0, len(data), chunk):
        s.receive_data(bytes(data[k:k + chunk]), T0 + 1)
    s.handle_timer(T0 + 40)
    s.frames_to_send()
    s.events()
    assert s.framer.buffered <= 64 * 1024
    assert s.is_logged_on or s.closed
