"""Codec: framing from any split, strict frame checks, byte-exact values."""

from __future__ import annotations

import simplefix
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.fix import codec
from gateway.core.fix.codec import FrameGarbled, Framer, FrameReceived

NOS = codec.encode(
    b"FIX.4.4",
    [(35, b"D"), (34, b"2"), (49, b"TW44"), (52, b"20240101-00:00:00.000"), (56, b"ISLD"),
     (11, b"ID"), (21, b"1"), (38, b"002000.00"), (40, b"2"), (44, b"10.5"), (54, b"1"),
     (55, b"INTC"), (60, b"20240101-00:00:00")],
)


def drain(f: Framer) -> list[codec.FrameEvent]:
    out = []
    while (ev := f.next_event()) is not None:
        out.append(ev)
    return out


def frames(data: bytes, chunk: int | None = None) -> list[codec.FrameEvent]:
    f = Framer()
    out: list[codec.FrameEvent] = []
    if chunk is None:
        f.feed(data)
        out += drain(f)
    else:
        for i in range(0, len(data), chunk):
            f.feed(data[i : i + chunk])
            out += drain(f)
    return out


def test_encode_fills_body_length_and_checksum() -> None:
    body = NOS[NOS.index(b"35=") : NOS.rindex(b"10=")]
    assert f"9={len(body)}\x01".encode() in NOS
    assert NOS.endswith(b"10=%03d\x01" % (sum(NOS[: NOS.rindex(b"10=")]) % 256))


def test_values_are_kept_byte_exact() -> None:
    m = codec.parse(NOS)
    assert m.get(38) == b"002000.00"
    assert m.raw == NOS


def test_whole_byte_by_byte_and_trailing_bytes_give_the_same_message() -> None:
    whole = frames(NOS)
    split = frames(NOS, chunk=1)
    assert [type(e) for e in whole] == [FrameReceived]
    assert isinstance(split[0], FrameReceived) and isinstance(whole[0], FrameReceived)
    assert split[0].message.fields == whole[0].message.fields
    f = Framer()
    f.feed(NOS + NOS[:10])
    evs = drain(f)
    assert len(evs) == 1 and isinstance(evs[0], FrameReceived)
    assert f.buffered == 10
    f.feed(NOS[10:])
    assert isinstance(f.next_event(), FrameReceived)


def test_many_messages_per_read() -> None:
    evs = frames(NOS * 50)
    assert len(evs) == 50 and all(isinstance(e, FrameReceived) for e in evs)


def test_wrong_checksum_is_garbled_and_the_next_frame_survives() -> None:
    bad = NOS[:-4] + b"000\x01" if not NOS.endswith(b"000\x01") else NOS[:-4] + b"001\x01"
    evs = frames(bad + NOS)
    assert isinstance(evs[0], FrameGarbled) and "CheckSum(10)" in evs[0].reason
    assert isinstance(evs[1], FrameReceived)


def test_body_length_too_short_or_long_is_garbled() -> None:
    n = int(NOS.split(b"\x01")[1][2:])
    longer = NOS.replace(b"9=%d" % n, b"9=%d" % (n + 20), 1)
    # as in test case 2m: the frame runs into the next message; both are dropped
    evs = frames(longer + NOS + NOS)
    assert isinstance(evs[0], FrameGarbled) and "BodyLength(9)" in evs[0].reason
    assert [type(e) for e in evs] == [FrameGarbled, FrameReceived]
    shorter = NOS.replace(b"9=%d" % n, b"9=%d" % (n - 5), 1)
    evs = frames(shorter + NOS)
    assert isinstance(evs[0], FrameGarbled)
    assert isinstance(evs[-1], FrameReceived)


def test_msgtype_must_be_third_and_garbage_before_a_frame_is_reported() -> None:
    body = b"34=2\x0135=0\x01"
    head = b"8=FIX.4.4\x019=%d\x01" % len(body) + body
    wrong = head + b"10=%03d\x01" % (sum(head) % 256)
    evs = frames(b"garbage!" + wrong + NOS)
    assert isinstance(evs[0], FrameGarbled) and "before BeginString" in evs[0].reason
    assert isinstance(evs[1], FrameGarbled) and "MsgType(35)" in evs[1].reason
    assert isinstance(evs[2], FrameReceived)


def test_declared_length_over_the_maximum_is_dropped() -> None:
    f = Framer(max_frame=256)
    f.feed(b"8=FIX.4.4\x019=100000\x0135=0\x01" + NOS)
    ev = f.next_event()
    assert isinstance(ev, FrameGarbled) and "maximum frame size" in ev.reason
    assert isinstance(f.next_event(), FrameReceived)


def test_data_fields_may_contain_soh_and_are_read_by_length() -> None:
    raw_data = b"a\x01b=\x0110=123\x01"
    sig = b"c2lnbmF0dXJl\x01x"
    m = codec.parse(codec.encode(b"FIX.4.4", [(35, b"B"), (34, b"1"), (95, b"%d" % len(raw_data)),
                                               (96, raw_data), (93, b"%d" % len(sig)), (89, sig)]))
    assert m.get(96) == raw_data
    assert m.get(89) == sig


@settings(max_examples=300, deadline=None)
@given(fields=st.lists(st.tuples(st.integers(min_value=1, max_value=9999).filter(lambda t: t not in (8, 9, 10, 35)),
                                 st.binary(min_size=1, max_size=12).filter(lambda v: b"\x01" not in v)),
                       max_size=12),
       sig=st.binary(min_size=1, max_size=64), lie=st.sampled_from([0, 0, 0, -1, 1]))
def test_a_trailing_signature_parses_as_the_field_by_field_walk_does(
        fields: list[tuple[int, bytes]], sig: bytes, lie: int) -> None:
    # the fast path cuts 93/89 off the end by length; any body it cannot be sure of (a lying
    # length, SOH or "93=" inside the signature, data fields earlier) must give the strict result
    body = codec.encode_fields([(35, b"D"), *fields, (93, b"%d" % (len(sig) + lie)), (89, sig)])
    try:
        strict: list[tuple[int, bytes]] | str = codec._parse_fields_slow(body)
    except codec.ParseError as exc:
        strict = str(exc)
    try:
        fast: list[tuple[int, bytes]] | str = codec.parse_fields(body)
    except codec.ParseError as exc:
        fast = str(exc)
    assert fast == strict


def test_a_signed_order_takes_the_fast_path() -> None:
    body = codec.encode_fields([(35, b"D"), (11, b"A"), (93, b"8"), (89, b"c2lnbg==")])
    assert codec._signed_tail(body) == (b"35=D\x0111=A\x01", b"8", b"c2lnbg==")
    assert codec.parse_fields(body) == [(35, b"D"), (11, b"A"), (93, b"8"), (89, b"c2lnbg==")]
    assert codec._signed_tail(body[:-2] + b"\x01") is None  # one byte short of its length


def test_bad_data_length_is_garbled() -> None:
    raw = codec.encode(b"FIX.4.4", [(35, b"B"), (34, b"1"), (95, b"50"), (96, b"short")])
    evs = frames(raw)
    assert isinstance(evs[0], FrameGarbled)


# --- differential against simplefix (the independent reference codec) -------

_REF = simplefix.FixParser()
_RAW_TAGS = {int(t) for t in (*_REF.raw_len_tags, *_REF.raw_data_tags)}
_RAW_TAGS |= set(codec.T.DATA_LENGTH_TAGS) | set(codec.T.DATA_LENGTH_TAGS.values())
tag_st = st.integers(min_value=1, max_value=9999).filter(lambda t: t not in (8, 9, 10, 35) and t not in _RAW_TAGS)
value_st = st.binary(min_size=1, max_size=30).filter(lambda v: b"\x01" not in v)
fields_st = st.lists(st.tuples(tag_st, value_st), min_size=1, max_size=25)


@settings(max_examples=300, deadline=None)
@given(msg_type=st.sampled_from([b"D", b"8", b"0", b"AE", b"j"]), fields=fields_st,
       chunk=st.integers(min_value=1, max_value=64))
def test_parse_agrees_with_simplefix(msg_type: bytes, fields: list[tuple[int, bytes]], chunk: int) -> None:
    raw = codec.encode(b"FIX.4.4", [(35, msg_type), *fields])
    ours = frames(raw, chunk)
    assert len(ours) == 1 and isinstance(ours[0], FrameReceived)
    p = simplefix.FixParser()
    p.append_buffer(raw)
    ref = p.get_message()
    assert ref is not None
    ref_pairs = [(int(t), v) for t, v in ref.pairs if int(t) not in (8, 9, 10)]
    assert list(ours[0].message.fields) == ref_pairs


@settings(max_examples=200, deadline=None)
@given(fields=fields_st)
def test_our_encoding_is_what_simplefix_encodes(fields: list[tuple[int, bytes]]) -> None:
    ref = simplefix.FixMessage()
    ref.append_pair(8, b"FIX.4.2")
    ref.append_pair(35, b"D")
    for t, v in fields:
        ref.append_pair(t, v)
    assert codec.encode(b"FIX.4.2", [(35, b"D"), *fields]) == ref.encode()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), chunk=st.integers(min_value=1, max_value=97))
def test_arbitrary_bytes_never_raise_and_memory_stays_bounded(data: bytes, chunk: int) -> None:
    f = Framer(max_frame=512)
    for i in range(0, len(data), chunk):
        f.feed(data[i : i + chunk])
        drain(f)
        assert f.buffered <= 512 + chunk + 64
