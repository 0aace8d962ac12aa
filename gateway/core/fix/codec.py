"""FIX tag=value codec: framing from a byte stream, parsing, encoding.

This is the hot path, so it works on ``bytes`` with C-level helpers
(``find``, ``split``, ``sum``) and never decodes values: every value is kept
byte-exact (``38=002000.00`` stays so) and carried across legs untouched.

Framing follows what the FIX session specification asks of a receiver and
what mature engines do in practice:

* a frame starts at ``8=FIX``; anything before it is skipped and reported;
* ``BodyLength(9)`` must be the second field and ``MsgType(35)`` the third;
* after the declared body length the receiver looks for ``<SOH>10=`` and the
  frame ends at the SOH that closes the checksum.  If the declared length was
  wrong the frame then spans a different number of bytes and is *garbled*;
* a garbled frame is dropped whole, consumes no sequence number and is
  reported as an event (FIX session test cases 2d, 2m, 2t, 3b, 3c).

The framer is sans-IO: ``feed(data)`` then ``next_event()`` until ``None``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.core.fix import tags as T

SOH = b"\x01"
_adler32 = zlib.adler32
_FRAME_START = b"8=FIX"
_CHECKSUM_MARK = b"\x0110="

#: Default upper bound on one frame; larger declared lengths are garbled.
DEFAULT_MAX_FRAME = 64 * 1024

Field = tuple[int, bytes]


class ParseError(ValueError):
    """A frame whose fields cannot be read (not a validation failure)."""


#: Longest run of significant digits read as a number.  Every bound the core
#: checks is far below it (MAX_SEQ_NUM has 10 digits); ``int()`` of at most
#: 18 digits is cheap and exact, and never meets Python's 4300-digit limit.
MAX_INT_DIGITS: Final = 18
#: What ``parse_uint`` gives for a longer digit string: above every bound, yet
#: an ordinary int that compares, formats and packs in 64 bits.
INT_TOO_LARGE: Final = 10**MAX_INT_DIGITS


def parse_uint(value: bytes) -> int | None:
    """A non-negative decimal integer from the peer; ``None`` when ``value`` is not one.

    The one parser for integers the core reads from the wire.  Only ASCII
    digits count (``int()`` alone would also take a sign, spaces and ``_``);
    leading zeros are allowed.  A value with more than ``MAX_INT_DIGITS``
    significant digits reads as ``INT_TOO_LARGE``, so callers answer "above the
    bound" precisely and ``int()`` never sees unbounded peer input.
    """
    if not value.isdigit():
        return None
    if len(value) > MAX_INT_DIGITS:
        value = value.lstrip(b"0") or b"0"
        if len(value) > MAX_INT_DIGITS:
            return INT_TOO_LARGE
    return int(value)


def excerpt(value: bytes, limit: int = 20) -> str:
    """Peer bytes for an error text: decoded as they are, cut to ``limit``, never a Python repr."""
    if len(value) <= limit:
        return value.decode("latin-1")
    return f"{value[:limit].decode('latin-1')}... ({len(value)} bytes)"


class Message:
    """One parsed FIX message; immutable by convention.

    ``fields`` holds every field after BodyLength(9) in wire order, starting
    with MsgType(35) and ending before CheckSum(10).  ``raw`` is the exact
    frame as received (or as encoded), which the resend store and the audit
    stream keep verbatim.
    """

    __slots__ = ("begin_string", "msg_type", "fields", "raw", "_index")

    def __init__(
        self,
        begin_string: bytes,
        msg_type: bytes,
        fields: Sequence[Field],
        raw: bytes = b"",
    ) -> None:
        self.begin_string = begin_string
        self.msg_type = msg_type
        self.fields = fields
        self.raw = raw
        self._index: dict[int, bytes] | None = None

    def _idx(self) -> dict[int, bytes]:
        idx = self._index
        if idx is None:  # built in C; reversed, so the first occurrence of a tag wins
            idx = self._index = dict(reversed(self.fields))
        return idx

    def get(self, tag: int, default: bytes | None = None) -> bytes | None:
        """First value of ``tag`` or ``default``."""
        return self._idx().get(tag, default)

    def __contains__(self, tag: object) -> bool:
        return tag in self._idx()

    def distinct_tags(self) -> int:
        """How many different tags the message carries (fewer than ``len(fields)``: a tag repeats)."""
        return len(self._idx())

    def has_all(self, tags: frozenset[int]) -> bool:
        """Every tag of ``tags`` is in the message."""
        return self._idx().keys() >= tags

    def get_int(self, tag: int) -> int | None:
        """Value of ``tag`` as an int, ``None`` when absent or not digits only.

        ``parse_uint`` inlined for the short values of the hot path: a value
        longer than ``MAX_INT_DIGITS`` reads as ``INT_TOO_LARGE`` at most.
        """
        value = self._idx().get(tag)
        if value is None or not value.isdigit():
            return None
        if len(value) > MAX_INT_DIGITS:
            return parse_uint(value)
        return int(value)

    @property
    def seq_num(self) -> int | None:
        return self.get_int(T.MsgSeqNum)

    def is_admin(self) -> bool:
        return self.msg_type in T.ADMIN_MSG_TYPES

    def __repr__(self) -> str:
        text = b"|".join(b"%d=%s" % f for f in self.fields[:12]).decode("latin-1")
        more = "|..." if len(self.fields) > 12 else ""
        return f"Message({self.begin_string.decode('latin-1')} {text}{more})"


class FrameReceived:
    """A well-formed frame: BeginString, BodyLength, MsgType order, CheckSum ok.

    A plain slotted class rather than a frozen dataclass: one is built per
    message on the hot path and frozen dataclasses construct several times
    slower.  Treat it as immutable.
    """

    __slots__ = ("message",)

    def __init__(self, message: Message) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"FrameReceived({self.message!r})"


@dataclass(frozen=True, slots=True)
class FrameGarbled:
    """Bytes dropped as garbled; ``reason`` names what was wrong."""

    data: bytes
    reason: str


FrameEvent = FrameReceived | FrameGarbled


#: Digits a tag number may have (tags are int32 in every FIX engine); a longer
#: one makes the frame unreadable rather than reach ``int()``.
_MAX_TAG_DIGITS = 10


def _valid_tag(tag: bytes) -> bool:
    if len(tag) > _MAX_TAG_DIGITS:
        return False
    return tag.isdigit() or (tag[:1] == b"-" and tag[1:].isdigit())


#: ``b"35"`` -> 35 for every tag a message may carry; a dict lookup in C is
#: several times cheaper than ``int()`` on the hot path.
#: Length tags of data fields are left out on purpose: a body carrying one
#: misses the table and takes the strict path that reads data by length.
_TAG_TABLE: dict[bytes, int] = {
    b"%d" % i: i for i in range(1, 10000) if i not in T.DATA_LENGTH_TAGS
}


def parse_fields(body: bytes) -> list[Field]:
    """Split ``body`` (fields, each ending in SOH) into ``(tag, value)`` pairs.

    Fast path, all in C: when no value contains ``=`` (as many ``=`` as SOH),
    replacing SOH by ``=`` and splitting alternates tags and values.  A signed
    message takes it too: its trailing SignatureLength(93) + Signature(89)
    (DESIGN §4: last before CheckSum) is cut off by length first, and the rest
    must pass the same test.  Bodies with other data fields, ``=`` inside
    values or unusual tags take the strict path.  Length-prefixed data fields
    (RawData(96), Signature(89) ...) are read by the length their length field
    gave, since they may contain SOH.
    Raises ``ParseError`` when a field has no ``=`` or a non-numeric tag.
    """
    if b"\x0193=" in body:
        signed = _signed_tail(body)
        if signed is not None:
            fields = _parse_fields_fast(signed[0])
            if fields is not None:
                fields.append((T.SignatureLength, signed[1]))
                fields.append((T.Signature, signed[2]))
                return fields
    else:
        fields = _parse_fields_fast(body)
        if fields is not None:
            return fields
    return _parse_fields_strict(body)


def _parse_fields_fast(body: bytes) -> list[Field] | None:
    """The all-C split, or None when the body needs the strict path."""
    items = body.replace(SOH, b"=").split(b"=")
    # as many '=' as SOH (no '=' inside a value) and a final SOH
    if len(items) == 2 * body.count(SOH) + 1 and body[-1:] == SOH:
        items.pop()
        try:
            return list(zip(map(_TAG_TABLE.__getitem__, items[0::2]), items[1::2], strict=False))
        except KeyError:
            pass
    return None


def _signed_tail(body: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(fields before 93, SignatureLength(93) value, Signature(89) value) when the body ends in
    exactly ``93=N<SOH>89=<N bytes><SOH>``; None otherwise (the strict path decides)."""
    cut = body.rfind(b"\x0193=")
    sig = body.find(b"\x0189=", cut + 4)
    if sig < 0:
        return None
    n = parse_uint(body[cut + 4 : sig])
    if n is None or sig + 4 + n + 1 != len(body) or body[-1:] != SOH:
        return None
    return body[: cut + 1], body[cut + 4 : sig], body[sig + 4 : -1]


def _parse_fields_strict(body: bytes) -> list[Field]:
    parts = body.split(SOH)
    if parts[-1] != b"":
        raise ParseError("last field is not terminated by SOH")
    out: list[Field] = []
    append = out.append
    data_len = T.DATA_LENGTH_TAGS
    for i in range(len(parts) - 1):
        tag_b, sep, value = parts[i].partition(b"=")
        if not sep:
            raise ParseError(f"field {excerpt(parts[i])} has no '='")
        if not _valid_tag(tag_b):
            raise ParseError(f"tag {excerpt(tag_b)} is not a tag number")
        tag = int(tag_b)
        if tag in data_len:
            return _parse_fields_slow(body)
        append((tag, value))
    return out


def _parse_fields_slow(body: bytes) -> list[Field]:
    """Field-by-field walk used when the body carries length-prefixed data."""
    out: list[Field] = []
    i = 0
    end = len(body)
    pending: tuple[int, int] | None = None  # (data tag, byte length)
    while i < end:
        eq = body.find(b"=", i)
        if eq < 0:
            raise ParseError(f"field {excerpt(body[i:])} has no '='")
        tag_b = body[i:eq]
        if not _valid_tag(tag_b):
            raise ParseError(f"tag {excerpt(tag_b)} is not a tag number")
        tag = int(tag_b)
        if pending is not None and pending[0] == tag:
            n = pending[1]
            stop = eq + 1 + n
            if stop >= end or body[stop : stop + 1] != SOH:
                raise ParseError(f"data field {tag} is not {n} bytes long as its length field says")
            value = body[eq + 1 : stop]
            i = stop + 1
        else:
            soh = body.find(SOH, eq + 1)
            if soh < 0:
                raise ParseError("last field is not terminated by SOH")
            value = body[eq + 1 : soh]
            i = soh + 1
        pending = None
        data_tag = T.DATA_LENGTH_TAGS.get(tag)
        if data_tag is not None:
            length = parse_uint(value)
            if length is None:
                raise ParseError(f"length field {tag} has non-numeric value {excerpt(value)}")
            if length > end:
                raise ParseError(f"length field {tag} value {excerpt(value)} is longer than the frame")
            pending = (data_tag, length)
        out.append((tag, value))
    return out


class Framer:
    """Cuts a byte stream into FIX frames (sans-IO).

    ``feed()`` any split of the stream, then drain ``next_event()``.  Each
    event is either a parsed ``FrameReceived`` or a ``FrameGarbled`` carrying
    the dropped bytes and why.  Memory is bounded by ``max_frame``.

    The buffer is immutable ``bytes``: the common case (a read holding whole
    frames) then slices without copying the stream into a bytearray first.
    """

    __slots__ = ("_buf", "_pos", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = b""
        self._pos = 0
        self.max_frame = max_frame

    def feed(self, data: bytes) -> None:
        if self._pos >= len(self._buf):
            self._buf = bytes(data)
        else:
            self._buf = self._buf[self._pos :] + data
        self._pos = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_event(self) -> FrameEvent | None:
        buf = self._buf
        pos = self._pos
        # Fast path: a complete frame with consistent 8/9/10 at the cursor.
        if buf.startswith(b"8=FIX", pos):
            e8 = buf.find(SOH, pos, pos + 32)
            if e8 > 0 and buf.startswith(b"9=", e8 + 1):
                e9 = buf.find(SOH, e8 + 3, e8 + 15)
                if e9 > 0:
                    length_b = buf[e8 + 3 : e9]
                    if length_b.isdigit():
                        body_start = e9 + 1
                        body_end = body_start + int(length_b)
                        stop = body_end + 7
                        if (
                            body_end - pos + 7 <= self.max_frame
                            and buf.startswith(b"10=", body_end)
                            and buf[stop - 1 : stop] == SOH
                            and buf[body_end - 1 : body_end] == SOH
                            and buf.startswith(b"35=", body_start)
                        ):
                            ck_b = buf[body_end + 3 : stop - 1]
                            span = memoryview(buf)[pos:body_end]
                            ck = (
                                ((_adler32(span) & 0xFFFF) - 1) & 0xFF if body_end - pos <= 256 else checksum(span)
                            )
                            if ck_b.isdigit() and int(ck_b) == ck:
                                try:
                                    fields = parse_fields(buf[body_start:body_end])
                                except ParseError:
                                    pass
                                else:
                                    self._pos = stop
                                    return FrameReceived(
                                        Message(buf[pos + 2 : e8], fields[0][1], fields, buf[pos:stop])
                                    )
        return self._next_event_slow()

    def _garble(self, start: int, stop: int, reason: str) -> FrameGarbled:
        data = self._buf[start:stop]
        self._pos = stop
        return FrameGarbled(data, reason)

    def _skip_to_next_start(self, start: int, reason: str) -> FrameGarbled:
        nxt = self._buf.find(_FRAME_START, start + 1)
        if nxt < 0:
            # keep a possible partial "8=FI" at the very end
            nxt = max(start + 1, len(self._buf) - (len(_FRAME_START) - 1))
        return self._garble(start, nxt, reason)

    def _next_event_slow(self) -> FrameEvent | None:
        buf = self._buf
        pos = self._pos
        blen = len(buf)
        if pos >= blen:
            return None
        start = buf.find(_FRAME_START, pos)
        if start < 0:
            keep = len(_FRAME_START) - 1
            if blen - pos > keep:
                return self._garble(pos, blen - keep, "no BeginString(8) in bytes")
            return None
        if start > pos:
            return self._garble(pos, start, "bytes before BeginString(8)")
        e8 = buf.find(SOH, start, start + 32)
        if e8 < 0:
            if blen - start >= 32:
                return self._skip_to_next_start(start, "BeginString(8) too long")
            return None
        if blen < e8 + 3:
            return None
        if buf[e8 + 1 : e8 + 3] != b"9=":
            return self._skip_to_next_start(start, "BodyLength(9) is not the second field")
        e9 = buf.find(SOH, e8 + 3, e8 + 3 + 12)
        if e9 < 0:
            if blen - e8 >= 15:
                return self._skip_to_next_start(start, "BodyLength(9) is not a number")
            return None
        length_b = buf[e8 + 3 : e9]
        if not length_b.isdigit():
            return self._skip_to_next_start(start, f"BodyLength(9) {excerpt(length_b)} is not a number")
        length = int(length_b)
        body_start = e9 + 1
        if body_start - start + length + 7 > self.max_frame:
            return self._skip_to_next_start(
                start, f"BodyLength(9) {length} exceeds the maximum frame size {self.max_frame}"
            )
        body_end = body_start + length
        if blen < body_end:
            return None
        ck = buf.find(_CHECKSUM_MARK, max(body_end - 1, body_start - 1))
        if ck < 0:
            if blen - start > self.max_frame:
                return self._skip_to_next_start(start, "no CheckSum(10) within the maximum frame size")
            return None
        if ck > body_end - 1:
            # the declared length was wrong; if a new frame starts after the
            # declared end, the garbled one ends there rather than swallowing it
            nxt = buf.find(_FRAME_START, body_end, ck)
            if nxt >= 0:
                return self._garble(start, nxt, f"BodyLength(9) {length} does not match the body")
        ck_end = buf.find(SOH, ck + 4)
        if ck_end < 0:
            if blen - ck > 16:
                return self._skip_to_next_start(start, "CheckSum(10) not terminated")
            return None
        stop = ck_end + 1
        frame = buf[start:stop]
        self._pos = stop
        return _check_frame(frame, e8 - start, body_start - start, length, ck - start)


class CapturingFramer(Framer):
    """The session's framer while full capture is on: the same byte stream and buffer (``inner``), every
    frame also handed to ``seen`` as the session takes it — after framing, so a value split across TLS
    records is captured whole and redacted whole."""

    __slots__ = ("inner", "seen")

    def __init__(self, inner: Framer, seen: Callable[[FrameEvent], None]) -> None:
        super().__init__(inner.max_frame)
        self.inner, self.seen = inner, seen

    def feed(self, data: bytes) -> None:
        self.inner.feed(data)

    @property
    def buffered(self) -> int:
        return self.inner.buffered

    def next_event(self) -> FrameEvent | None:
        ev = self.inner.next_event()
        if ev is not None:
            self.seen(ev)
        return ev


def _check_frame(frame: bytes, e8: int, body_start: int, length: int, ck: int) -> FrameEvent:
    """Validate one cut frame: BodyLength, CheckSum, MsgType third, fields."""
    actual = ck + 1 - body_start
    if actual != length:
        return FrameGarbled(frame, f"BodyLength(9) is {length} but the body is {actual} bytes")
    ck_value = frame[ck + 4 : -1]
    if len(ck_value) != 3 or not ck_value.isdigit():
        return FrameGarbled(frame, f"CheckSum(10) {excerpt(ck_value)} is not three digits")
    expected = checksum(memoryview(frame)[: ck + 1])
    if int(ck_value) != expected:
        return FrameGarbled(
            frame, f"CheckSum(10) expected {expected:03d} but received {ck_value.decode('latin-1')}"
        )
    if frame[body_start : body_start + 3] != b"35=":
        return FrameGarbled(frame, "MsgType(35) is not the third field")
    try:
        fields = parse_fields(frame[body_start : ck + 1])
    except ParseError as exc:
        return FrameGarbled(frame, str(exc))
    msg_type = fields[0][1]
    begin_string = frame[2:e8]
    return FrameReceived(Message(begin_string, msg_type, tuple(fields), frame))


def parse(frame: bytes) -> Message:
    """Parse exactly one complete frame; raise ``ParseError`` if garbled."""
    framer = Framer(max_frame=max(DEFAULT_MAX_FRAME, len(frame) + 64))
    framer.feed(frame)
    event = framer.next_event()
    if isinstance(event, FrameReceived) and framer.buffered == 0:
        return event.message
    if isinstance(event, FrameGarbled):
        raise ParseError(event.reason)
    raise ParseError("not exactly one complete frame")


def encode_fields(fields: Iterable[Field]) -> bytes:
    """Body bytes for ``fields`` (each ``tag=value<SOH>``)."""
    return b"".join([b"%d=%s\x01" % f for f in fields])


def encode(begin_string: bytes, fields: Sequence[Field] | Iterable[Field]) -> bytes:
    """Frame ``fields`` (starting with MsgType(35)): fills BodyLength(9) and CheckSum(10)."""
    body = encode_fields(fields)
    head = b"8=%s\x019=%d\x01%s" % (begin_string, len(body), body)
    return b"%s10=%03d\x01" % (head, checksum(head))


def checksum(data: bytes | memoryview) -> int:
    """FIX CheckSum(10): the byte sum modulo 256.

    Computed with Adler-32, whose low 16 bits are ``1 + sum(bytes)`` while that
    stays below 65521 (256 bytes of 0xFF at most), so every 256-byte chunk
    gives its exact byte sum in C instead of a Python-level loop.
    """
    n = len(data)
    if n <= 256:
        return ((zlib.adler32(data) & 0xFFFF) - 1) & 0xFF
    total = 0
    for i in range(0, n, 256):
        total += (zlib.adler32(data[i : i + 256]) & 0xFFFF) - 1
    return total & 0xFF
