"""Sans-IO session engine: time is an argument, nothing touches a socket."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.fix import codec
from gateway.core.fix import session as S
from gateway.core.fix import tags as T
from gateway.core.fix.dictionary import standard_validator
from gateway.core.fix.store import MemoryStore, SessionStore
from gateway.core.fix.utctime import format_utc_timestamp
from gateway.edges.store import FileStore

T0 = 1_800_000_000.0
V44 = standard_validator(b"FIX.4.4")


def acceptor(store: SessionStore | None = None, **kw: object) -> S.Session:
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


def test_refusal_credit_stops_a_read_after_that_many_refusals_and_keeps_the_rest() -> None:
    s = acceptor()
    logon(s)
    sent(s), s.events()
    bad_qty = [(t, b"many" if t == 38 else v) for t, v in NOS]  # OrderQty(38) not a number: Reject(3)
    garbled = frame(b"0", 99)[:-4] + b"999\x01"
    read = b"".join([frame(b"D", 2, bad_qty), garbled, frame(b"D", 3, bad_qty), frame(b"0", 4), frame(b"0", 5)])
    s.refusal_credit = 2
    s.receive_data(read, T0)
    assert [type(e).__name__ for e in s.events()] == ["MessageRejected", "FrameDropped"]
    assert [m.msg_type for m in sent(s)] == [b"3"]
    assert s.store.next_target_seq() == 3  # the rest waits in the framer
    s.refusal_credit = 0  # even with none left, the next read handles one frame: the application hears of it
    s.receive_data(b"", T0)
    assert [type(e).__name__ for e in s.events()] == ["MessageRejected"] and s.store.next_target_seq() == 4
    s.refusal_credit = None  # no limit: the rest of the read
    s.receive_data(b"", T0)
    assert s.store.next_target_seq() == 6 and not s.events()
    s.reject(codec.parse(frame(b"D", 6, NOS)), 5, 89, "decided", T0)  # the application's own refusal
    assert s.events()[0].decided  # type: ignore[attr-defined]


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


# --- bounds: integers from the peer never raise and never reach a store out of range ---------------

MAX = 2**31 - 1  # MAX_SEQ_NUM: what QuickFIX holds in its signed 32-bit SEQNUM
#: one above the bound, 2^64 (overflows the file store's u64) and more digits than int() accepts
TOO_BIG = [b"2147483648", b"18446744073709551616", b"1" + b"0" * 5000]
_ids = ["bound+1", "2^64", "5001-digits"]


def raw_frame(mt: bytes, seq: bytes, body: list[tuple[int, bytes]] = (), now: float = T0,  # type: ignore[assignment]
              header: list[tuple[int, bytes]] = ()) -> bytes:  # type: ignore[assignment]
    """A frame whose MsgSeqNum(34) is given as bytes (any number of digits)."""
    hdr = sorted([(34, seq), (49, b"CLI"), (52, format_utc_timestamp(now)), (56, b"GW"), *header])
    return codec.encode(b"FIX.4.4", [(35, mt), *hdr, *body])


def on_file_store(tmp: Path) -> tuple[S.Session, FileStore]:
    store = FileStore(tmp / "store")
    s = acceptor(store)
    logon(s)
    s.frames_to_send(), s.events()
    return s, store


def assert_store_in_bounds_and_writable(store: FileStore, folder: Path) -> None:
    sender, target = store.next_sender_seq(), store.next_target_seq()
    assert 1 <= sender <= MAX + 1 and 1 <= target <= MAX + 1
    store.set_next_sender_seq(sender)
    store.set_next_target_seq(target)
    again = FileStore(folder)
    assert (again.next_sender_seq(), again.next_target_seq()) == (sender, target)
    again.close()


def test_the_bound_is_the_one_quickfix_holds() -> None:
    assert T.MAX_SEQ_NUM == MAX


def test_get_int_reads_digits_only_and_never_calls_int_on_thousands_of_digits() -> None:
    m = codec.parse(raw_frame(b"0", b"1" + b"0" * 6000, [(45, b"0" * 40 + b"7"), (371, b"1_0"), (373, b" 5")]))
    assert m.get_int(34) is not None and m.get_int(34) > MAX  # type: ignore[operator]
    assert m.get_int(45) == 7  # leading zeros are still the number
    assert m.get_int(371) is None and m.get_int(373) is None  # int() would accept both
    assert m.get_int(9999) is None


@pytest.mark.parametrize("gap_fill", [True, False], ids=["GapFill", "Reset"])
@pytest.mark.parametrize("new_seq_no", TOO_BIG, ids=_ids)
def test_sequence_reset_beyond_the_bound_is_rejected_and_the_store_is_unchanged(
        tmp_path: Path, gap_fill: bool, new_seq_no: bytes) -> None:
    s, store = on_file_store(tmp_path)
    before = (store.next_sender_seq(), store.next_target_seq())
    flag = [(123, b"Y")] if gap_fill else []
    s.receive_data(raw_frame(b"4", b"2", [(36, new_seq_no), *flag]), T0)
    out = sent(s)
    assert [(m.msg_type, m.get(373), m.get(371), m.get(45)) for m in out] == [(b"3", b"5", b"36", b"2")]
    ev = [e for e in s.events() if isinstance(e, S.MessageRejected)]
    assert len(ev) == 1 and ev[0].tag == 36 and ev[0].reason == 5
    assert "NewSeqNo(36)" in ev[0].detail and str(MAX) in ev[0].detail and "b'" not in ev[0].detail
    assert len(ev[0].detail) < 200
    assert store.next_target_seq() == before[1]  # the reset did not move the peer's number
    assert_store_in_bounds_and_writable(store, tmp_path / "store")
    s.receive_data(frame(b"0", 2), T0)  # the route goes on
    assert store.next_target_seq() == 3 and s.is_logged_on


def test_sequence_reset_to_the_bound_itself_is_accepted_and_its_last_number_ends_the_session(tmp_path: Path) -> None:
    s, store = on_file_store(tmp_path)
    s.receive_data(raw_frame(b"4", b"2", [(36, b"%d" % MAX)]), T0)
    assert store.next_target_seq() == MAX and s.frames_to_send() == []
    s.receive_data(raw_frame(b"D", b"%d" % MAX, NOS), T0)
    evs = s.events()
    assert any(isinstance(e, S.AppMessageReceived) for e in evs)  # the last number still carries its message
    out = sent(s)
    assert [m.msg_type for m in out] == [b"5"]
    text = (out[0].get(58) or b"").decode()
    assert "MsgSeqNum(34)" in text and str(MAX) in text
    assert s.closed and isinstance(evs[-1], S.Disconnected)
    assert store.next_target_seq() == MAX + 1  # every number used: only a reset goes on
    assert_store_in_bounds_and_writable(store, tmp_path / "store")


@pytest.mark.parametrize("seq", TOO_BIG, ids=_ids)
def test_msg_seq_num_beyond_the_bound_logs_out_and_disconnects(tmp_path: Path, seq: bytes) -> None:
    s, store = on_file_store(tmp_path)
    s.receive_data(raw_frame(b"D", seq, NOS), T0)
    out = sent(s)
    assert [m.msg_type for m in out] == [b"5"]
    text = (out[0].get(58) or b"").decode()
    assert "MsgSeqNum(34)" in text and str(MAX) in text and "b'" not in text and len(text) < 200
    evs = s.events()
    assert not any(isinstance(e, (S.AppMessageReceived, S.GapDetected)) for e in evs)
    assert any(isinstance(e, S.LoggedOut) and "MsgSeqNum(34)" in e.reason for e in evs)
    assert isinstance(evs[-1], S.Disconnected) and s.closed
    assert store.next_target_seq() == 2
    assert_store_in_bounds_and_writable(store, tmp_path / "store")


@pytest.mark.parametrize("seq", TOO_BIG, ids=_ids)
def test_logon_with_msg_seq_num_beyond_the_bound_is_refused_silently(seq: bytes) -> None:
    s = acceptor()
    s.receive_data(raw_frame(b"A", seq, [(98, b"0"), (108, b"30")]), T0)
    assert s.frames_to_send() == [] and s.closed
    refused = [e for e in s.events() if isinstance(e, S.LogonRefused)]
    assert refused and "MsgSeqNum(34)" in refused[0].reason and "b'" not in refused[0].reason
    assert s.store.next_target_seq() == 1


@pytest.mark.parametrize("tag", [7, 16], ids=["BeginSeqNo", "EndSeqNo"])
@pytest.mark.parametrize("value", TOO_BIG, ids=_ids)
def test_resend_request_beyond_the_bound_is_rejected_naming_the_field(tmp_path: Path, tag: int, value: bytes) -> None:
    s, store = on_file_store(tmp_path)
    s.send_app(b"8", [(37, b"O1")], T0)
    s.frames_to_send()
    body = {7: b"1", 16: b"0"}
    body[tag] = value
    s.receive_data(raw_frame(b"2", b"2", [(7, body[7]), (16, body[16])]), T0)
    out = sent(s)
    assert [(m.msg_type, m.get(373), m.get(371)) for m in out] == [(b"3", b"5", b"%d" % tag)]
    ev = [e for e in s.events() if isinstance(e, S.MessageRejected)]
    name = {7: "BeginSeqNo(7)", 16: "EndSeqNo(16)"}[tag]
    assert ev and name in ev[0].detail and "b'" not in ev[0].detail
    assert store.next_target_seq() == 3 and s.is_logged_on  # consumed like any rejected message
    assert_store_in_bounds_and_writable(store, tmp_path / "store")


@pytest.mark.parametrize("hb", [b"3601", *TOO_BIG], ids=["3601", *_ids])
def test_logon_with_an_absurd_heart_bt_int_is_refused_silently(hb: bytes) -> None:
    s = acceptor()
    s.receive_data(frame(b"A", 1, [(98, b"0"), (108, hb)]), T0)
    assert s.frames_to_send() == [] and s.closed
    refused = [e for e in s.events() if isinstance(e, S.LogonRefused)]
    assert refused and "HeartBtInt(108)" in refused[0].reason and "b'" not in refused[0].reason
    assert len(refused[0].reason) < 200


def test_logon_with_the_largest_heart_bt_int_is_accepted() -> None:
    s = acceptor()
    s.receive_data(frame(b"A", 1, [(98, b"0"), (108, b"3600")]), T0)
    assert [m.get(108) for m in sent(s)] == [b"3600"] and s.heartbeat_interval == 3600


def test_a_tag_number_of_thousands_of_digits_drops_the_frame() -> None:
    s = acceptor()
    logon(s)
    s.events()
    body = b"35=0\x0134=2\x0149=CLI\x0152=" + format_utc_timestamp(T0) + b"\x0156=GW\x01" + b"7" * 5000 + b"=x\x01"
    head = b"8=FIX.4.4\x019=%d\x01" % len(body) + body
    s.receive_data(head + b"10=%03d\x01" % codec.checksum(head), T0)
    evs = s.events()
    assert isinstance(evs[0], S.FrameDropped) and "b'" not in evs[0].reason
    assert s.store.next_target_seq() == 2 and s.is_logged_on


@pytest.mark.parametrize("make", [MemoryStore, "file"], ids=["MemoryStore", "FileStore"])
def test_stores_refuse_sequence_numbers_outside_the_bounds(tmp_path: Path, make: object) -> None:
    store: MemoryStore | FileStore = MemoryStore() if make is MemoryStore else FileStore(tmp_path / "s")
    store.set_next_target_seq(5)
    store.save_sent(MAX, b"last")
    store.set_next_sender_seq(MAX + 1)  # every number used
    for bad in (0, -1, MAX + 2, 2**64, 10**5000):
        with pytest.raises(ValueError):
            store.set_next_target_seq(bad)
        with pytest.raises(ValueError):
            store.set_next_sender_seq(bad)
    for bad in (0, -1, MAX + 1, 2**64):
        with pytest.raises(ValueError):
            store.save_sent(bad, b"x")
    assert (store.next_sender_seq(), store.next_target_seq()) == (MAX + 1, 5)
    assert store.get_sent(1, MAX) == [(MAX, b"last")]
    if isinstance(store, FileStore):
        again = FileStore(tmp_path / "s")
        assert (again.next_sender_seq(), again.next_target_seq()) == (MAX + 1, 5)
        assert again.get_sent(1, MAX) == [(MAX, b"last")]


def test_our_own_sequence_number_reaching_the_bound_logs_out_instead_of_raising() -> None:
    store = MemoryStore()
    store.set_next_sender_seq(MAX - 1)
    s = acceptor(store)
    logon(s)
    assert [m.get(34) for m in sent(s)] == [b"%d" % (MAX - 1)]
    s.events()
    assert s.send_app(b"8", [(37, b"O1")], T0) is None  # MAX is kept for the Logout
    out = sent(s)
    assert [(m.msg_type, m.get(34)) for m in out] == [(b"5", b"%d" % MAX)]
    text = (out[0].get(58) or b"").decode()
    assert "MsgSeqNum(34)" in text and str(MAX) in text and "ResetSeqNumFlag(141)" in text
    evs = s.events()
    assert any(isinstance(e, S.LoggedOut) for e in evs) and isinstance(evs[-1], S.Disconnected) and s.closed
    assert store.next_sender_seq() == MAX + 1


def test_our_heartbeat_at_the_bound_logs_out_instead_of_raising() -> None:
    store = MemoryStore()
    store.set_next_sender_seq(MAX - 1)
    s = acceptor(store)
    logon(s)
    s.frames_to_send()
    s.handle_timer(T0 + 30)
    assert [(m.msg_type, m.get(34)) for m in sent(s)] == [(b"5", b"%d" % MAX)]
    assert s.closed


def test_a_session_whose_numbers_are_used_up_needs_a_reset_logon() -> None:
    store = MemoryStore()
    store.set_next_sender_seq(MAX + 1)
    s = acceptor(store)
    logon(s)  # no number left to answer with, not even for a Logout
    assert s.frames_to_send() == [] and s.closed
    assert any(isinstance(e, S.LogonRefused) and "ResetSeqNumFlag(141)" in e.reason for e in s.events())
    s = acceptor(store)
    logon(s, extra=[(141, b"Y")])
    assert [(m.msg_type, m.get(34)) for m in sent(s)] == [(b"A", b"1")] and s.is_logged_on


def test_initiator_with_used_up_numbers_does_not_raise() -> None:
    store = MemoryStore()
    store.set_next_sender_seq(MAX + 1)
    i = S.Session(S.SessionConfig(b"FIX.4.4", b"CLI", b"GW", S.Role.INITIATOR, validator=V44), store)
    i.connection_made(T0)
    assert i.frames_to_send() == [] and i.closed


def test_store_app_with_used_up_numbers_raises_value_error() -> None:
    store = MemoryStore()
    store.set_next_sender_seq(MAX)
    s = S.Session(S.SessionConfig(b"FIX.4.4", b"GW", b"CLI", validator=V44), store)
    assert s.store_app(b"8", [(37, b"O1")], T0).seq_num == MAX  # offline: no Logout needs the last number
    with pytest.raises(ValueError, match="MsgSeqNum"):
        s.store_app(b"8", [(37, b"O2")], T0)
    assert store.next_sender_seq() == MAX + 1


# Every integer field of every session message, data lengths (RawDataLength(95), SignatureLength(93)) and a
# NewOrderSingle; BodyLength(9) and CheckSum(10) too.  (No repeating group: NumInGroup is read by the dictionary.)
_MESSAGES: dict[bytes, list[tuple[int, bytes]]] = {
    b"A": [(98, b"0"), (108, b"30"), (95, b"4"), (96, b"a\x01=b")],
    b"0": [(93, b"4"), (89, b"ab\x01c")],
    b"1": [(112, b"T")],
    b"2": [(7, b"1"), (16, b"0")],
    b"4": [(36, b"9"), (123, b"Y")],
    b"3": [(45, b"1"), (371, b"11"), (372, b"D"), (373, b"5")],
    b"5": [(58, b"bye")],
    b"D": NOS,
}
_huge = st.one_of(st.sampled_from([b"2147483648", b"18446744073709551616", b"4294967296"]),
                  st.integers(11, 6000).map(lambda n: b"9" * n),
                  st.text("0123456789", min_size=11, max_size=6000).map(str.encode))


@settings(max_examples=150, deadline=None)
@given(mt=st.sampled_from(sorted(_MESSAGES)), which=st.integers(0, 100), value=_huge,
       gap_fill=st.booleans())
def test_any_integer_field_replaced_by_a_huge_number_never_raises_and_the_store_stays_writable(
        mt: bytes, which: int, value: bytes, gap_fill: bool) -> None:
    body = list(_MESSAGES[mt])
    if mt == b"4" and not gap_fill:
        body = body[:1]
    fields = [(35, mt), (34, b"1" if mt == b"A" else b"2"), (49, b"CLI"), (52, format_utc_timestamp(T0)),
              (56, b"GW"), *body]
    ints = [i for i, (tag, v) in enumerate(fields) if v.isdigit() and tag not in (35, 52)]
    slots = ints + [-1, -2]  # -1: BodyLength(9), -2: CheckSum(10)
    slot = slots[which % len(slots)]
    good = codec.encode(b"FIX.4.4", fields)
    if slot >= 0:
        fields[slot] = (fields[slot][0], value)
        data = codec.encode(b"FIX.4.4", fields)
    elif slot == -1:
        head = good[: good.index(b"\x019=") + 3] + value + good[good.index(b"\x0135=") :]
        head = head[: head.rindex(b"10=")]
        data = head + b"10=%03d\x01" % codec.checksum(head)
    else:
        data = good[: good.rindex(b"10=") + 3] + value + b"\x01"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "store"
        store = FileStore(folder)
        s = acceptor(store)
        if mt != b"A":
            logon(s)
        s.receive_data(data, T0)  # never raises
        s.receive_data(frame(b"0", store.next_target_seq()), T0)
        s.handle_timer(T0 + 60)
        out = sent(s)
        assert all(b"b'" not in (m.get(58) or b"") for m in out)
        assert all(0 < (m.seq_num or 0) <= MAX for m in out)
        assert_store_in_bounds_and_writable(store, folder)
        store.close()


def test_a_store_that_cannot_write_ends_the_session_without_raising(tmp_path: Path) -> None:
    """Disk full under state_dir: no frame goes out that a resend could not repeat, and nothing raises
    out of the core — whichever entry point meets the failure (timer, peer input, send_app)."""
    import os

    def broken() -> tuple[S.Session, FileStore]:
        store = FileStore(tmp_path / f"s{len(list(tmp_path.iterdir()))}")
        s = acceptor(store)
        logon(s)
        sent(s)
        s.events()
        full = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC, as from a full disk
        for fd in (store._log_fd, store._seq_fd):
            os.dup2(full, fd)
        os.close(full)
        return s, store

    s, store = broken()
    s.handle_timer(T0 + 31)  # a Heartbeat is due: its number cannot be kept
    assert s.closed and not s.frames_to_send()
    reasons = [e.reason for e in s.events() if isinstance(e, (S.LoggedOut, S.Disconnected))]
    assert len(reasons) == 2 and all("store cannot write" in r for r in reasons), reasons
    store.close()

    s, store = broken()
    s.receive_data(frame(b"1", 2, [(T.TestReqID, b"t")]), T0 + 1)  # the answer cannot be kept
    assert s.closed and any(isinstance(e, S.Disconnected) for e in s.events())
    store.close()

    s, store = broken()
    with pytest.raises(OSError):  # the caller learns that nothing was sent
        s.send_app(b"D", [(T.ClOrdID, b"x")], T0 + 1)
    assert s.closed and not s.frames_to_send()
    store.close()


def no_seq_frame(mt: bytes, seq: bytes | None, body: list[tuple[int, bytes]]) -> bytes:
    """A frame whose MsgSeqNum(34) is missing (``seq`` None) or holds ``seq`` as it is."""
    hdr = [(49, b"CLI"), (52, format_utc_timestamp(T0)), (56, b"GW")]
    if seq is not None:
        hdr.insert(0, (34, seq))
    return codec.encode(b"FIX.4.4", [(35, mt), *hdr, *body])


@pytest.mark.parametrize("validate", [True, False], ids=["validator", "no-validator"])
@pytest.mark.parametrize(("seq", "says"), [(None, "MsgSeqNum(34) missing"), (b"", "MsgSeqNum(34) missing"),
                                           (b"-10", "MsgSeqNum(34) '-10' is not"), (b"1x", "'1x' is not")],
                         ids=["missing", "empty", "negative", "not-digits"])
def test_a_message_without_a_usable_msg_seq_num_gets_a_logout_and_the_session_closes(
        validate: bool, seq: bytes | None, says: str) -> None:
    """FIX session rules: without MsgSeqNum(34) nothing tells what was missed, so Logout and disconnect
    (it used to get a Reject(3) and the session stayed up)."""
    s = S.Session(S.SessionConfig(b"FIX.4.4", b"GW", b"CLI", validator=V44 if validate else None), MemoryStore())
    s.connection_made(T0)
    logon(s)
    s.frames_to_send(), s.events()
    s.receive_data(no_seq_frame(b"D", seq, NOS), T0)
    out = sent(s)
    assert [m.msg_type for m in out] == [b"5"]
    text = (out[0].get(58) or b"").decode()
    assert says in text and "b'" not in text
    evs = s.events()
    assert not any(isinstance(e, (S.AppMessageReceived, S.MessageRejected)) for e in evs)
    assert any(isinstance(e, S.LoggedOut) and says in e.reason for e in evs)
    assert isinstance(evs[-1], S.Disconnected) and s.closed
    assert s.store.next_target_seq() == 2


def test_a_logon_without_msg_seq_num_is_refused_silently() -> None:
    s = acceptor()
    s.receive_data(no_seq_frame(b"A", None, [(98, b"0"), (108, b"30")]), T0)
    assert s.frames_to_send() == [] and s.closed
    assert any(isinstance(e, S.LogonRefused) and "MsgSeqNum(34) missing" in e.reason for e in s.events())
