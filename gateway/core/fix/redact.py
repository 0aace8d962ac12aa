"""Frames as the audit stream may keep them: secret values replaced (pure).

Full capture (a policy obligation) writes every frame of a session to the
audit stream.  It works on *framed* messages — never on socket reads — because
a value can be split across TLS records (``554=hun`` | ``ter2`` ...), and a
pattern over one read would miss the half it does not see.  A frame is
parsed into fields and every value of a secret tag is replaced; the frame is
then written back from its fields (BodyLength(9) and CheckSum(10) kept as
received, so they no longer match: a capture is evidence, not a message to
resend).

Always secret: Password(554), NewPassword(925), EncryptedPassword(1402),
EncryptedNewPassword(1404) and RawData(96) (free binary data: venues carry
credentials in it).  The lengths that go with them (RawDataLength(95),
EncryptedPasswordLen(1401) ...) are kept: they say nothing.  ``[audit]
redact_tags`` adds a venue's own.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.core.fix.codec import Message, encode_fields

SECRET_TAGS: frozenset[int] = frozenset({554, 925, 1402, 1404, 96})
REDACTED = b"REDACTED"


def redact(msg: Message, extra: Iterable[int] = ()) -> tuple[bytes, list[int]]:
    """(the frame with every secret value replaced, the tags that were), for ``msg`` as received."""
    secret = SECRET_TAGS.union(extra)
    hit = sorted({tag for tag, _ in msg.fields if tag in secret})
    raw = msg.raw
    start = raw.find(b"\x0135=")
    end = raw.rfind(b"\x0110=")
    head = raw[: start + 1] if start >= 0 else b"8=%s\x01" % msg.begin_string
    tail = raw[end + 1 :] if end >= 0 else b""
    body = encode_fields((tag, REDACTED if tag in secret else value) for tag, value in msg.fields)
    return head + body + tail, hit
