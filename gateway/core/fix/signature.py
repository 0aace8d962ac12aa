"""Per-message signatures in the FIX trailer (DESIGN §4), pure.

Wire format, fixed because other programs depend on it:

* SignatureLength(93) and Signature(89) are the last fields before
  CheckSum(10);
* Signature(89) is standard base64 (with padding, no line breaks) of the raw
  signature; SignatureLength(93) is the length of that base64 text;
* the signed bytes run from the first byte of ``8=`` up to and including the
  SOH that ends the field before ``93=``;
* schemes: ``ed25519`` (public key per identity: non-repudiation) and
  ``hmac-sha256`` (shared secret per identity: integrity only).

Because BodyLength(9) covers the signature fields, the signer needs their
length before signing; both schemes have fixed-size signatures (64 and 32
bytes, 88 and 44 base64 characters), so it is known up front.

A valid signature says who wrote a frame, not that it is new: MsgSeqNum(34)
stops a replay inside one session, but after a sequence reset a captured
Logon and the orders behind it would verify again while their SendingTime(52)
is inside the window.  ``ReplayWindow`` remembers a digest of every signed
span an identity used for as long as that frame could still pass the
SendingTime check, so a second use is refused.  The digest covers the signed
bytes, not the Signature(89) text: base64 has spare bits, so one signature
can be spelt several ways.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.core.fix.codec import SOH, Field, checksum, encode_fields

SCHEMES = ("ed25519", "hmac-sha256")
_B64_LEN = {"ed25519": 88, "hmac-sha256": 44}


class SignatureError(ValueError):
    """Why a frame's signature is not acceptable (text for audit and Reject)."""


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """One acceptable key; ``valid_until`` (epoch seconds) closes a rotation overlap."""

    scheme: str
    key: Ed25519PublicKey | bytes
    valid_until: float | None = None
    key_id: str = ""


@dataclass(frozen=True, slots=True)
class Signer:
    scheme: str
    key: Ed25519PrivateKey | bytes

    @property
    def b64_len(self) -> int:
        return _B64_LEN[self.scheme]

    def sign(self, data: bytes) -> bytes:
        if self.scheme == "ed25519":
            assert isinstance(self.key, Ed25519PrivateKey)
            raw = self.key.sign(data)
        else:
            assert isinstance(self.key, bytes)
            raw = hmac.new(self.key, data, hashlib.sha256).digest()
        return base64.b64encode(raw)


def encode_signed(begin_string: bytes, fields: Sequence[Field], signer: Signer) -> bytes:
    """Frame ``fields`` (from MsgType(35)) and append 93/89 signed per DESIGN §4."""
    body = encode_fields(fields)
    n = signer.b64_len
    trailer_len = len(b"93=%d\x0189=" % n) + n + 1
    head = b"8=%s\x019=%d\x01%s" % (begin_string, len(body) + trailer_len, body)
    sig = signer.sign(head)
    assert len(sig) == n
    framed = b"%s93=%d\x0189=%s\x01" % (head, n, sig)
    return b"%s10=%03d\x01" % (framed, checksum(framed))


def signed_span(raw: bytes) -> tuple[bytes, bytes]:
    """(signed bytes, Signature(89) value) of a frame, or ``SignatureError``."""
    i89 = raw.rfind(b"\x0189=")
    if i89 < 0:
        raise SignatureError("Signature(89) missing")
    i93 = raw.rfind(b"\x0193=", 0, i89)
    if i93 < 0:
        if raw.find(b"\x0193=", i89) >= 0:  # e.g. QuickFIX 1.15 orders trailer fields by tag number
            raise SignatureError("SignatureLength(93) comes after Signature(89); it must come right before it")
        raise SignatureError("SignatureLength(93) missing")
    length_b = raw[i93 + 4 : i89]
    end89 = raw.find(SOH, i89 + 4)
    value = raw[i89 + 4 : end89]
    if not length_b.isdigit() or int(length_b) != len(value):
        raise SignatureError(
            f"SignatureLength(93) is {length_b.decode('latin-1')} but Signature(89) has {len(value)} characters"
        )
    if raw[end89 + 1 : end89 + 4] != b"10=":
        raise SignatureError("Signature(89) is not the last field before CheckSum(10)")
    return raw[: i93 + 1], value


def verify(raw: bytes, keys: Sequence[VerifyKey], now: float) -> str:
    """Verify a frame's signature with any currently valid key; returns its key id."""
    signed, value = signed_span(raw)
    try:
        sig = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("Signature(89) is not valid base64") from None
    live = [k for k in keys if k.valid_until is None or now <= k.valid_until]
    if not live:
        raise SignatureError("no signing key of this identity is valid now")
    for k in live:
        if k.scheme == "ed25519":
            assert isinstance(k.key, Ed25519PublicKey)
            try:
                k.key.verify(sig, signed)
                return k.key_id
            except InvalidSignature:
                continue
        else:
            assert isinstance(k.key, bytes)
            if hmac.compare_digest(hmac.new(k.key, signed, hashlib.sha256).digest(), sig):
                return k.key_id
    raise SignatureError(f"Signature(89) does not verify ({live[0].scheme})")


#: signed frames one identity may have in its replay window at once; beyond it new frames are refused
#: (fail closed) rather than older ones forgotten
MAX_REMEMBERED = 1_000_000


def span_digest(raw: bytes) -> bytes:
    """16-byte digest of a frame's signed bytes (``SignatureError`` when it carries no signature)."""
    signed, _ = signed_span(raw)
    return hashlib.blake2b(signed, digest_size=16).digest()


class ReplayWindow:
    """Digests of the signed frames one identity used, each kept until its SendingTime(52) window closes.

    Pure: time is an argument.  ``first_use`` is check-and-remember in one
    step, so two frames with the same signed bytes can never both pass.
    """

    __slots__ = ("_until", "_order")

    def __init__(self) -> None:
        self._until: dict[bytes, float] = {}  # digest -> when a replay of it would fail SendingTime anyway
        self._order: deque[tuple[float, bytes]] = deque()  # in insertion order, for expiry

    def __len__(self) -> int:
        return len(self._until)

    def first_use(self, digest: bytes, sending_time: float | None, window: float, now: float) -> str | None:
        """None (and remembered) when ``digest`` was not used within the window; else why not.

        A frame passes the SendingTime check while |now - SendingTime| <= window,
        so it is kept until SendingTime + window; SendingTime is clamped to
        ``now ± window`` (the session refuses anything outside), so nothing is
        kept longer than two windows."""
        self._expire(now)
        until = self._until.get(digest)
        if until is not None and until >= now:
            return "this signed frame was already used (replay)"
        if len(self._until) >= MAX_REMEMBERED:
            return f"more than {MAX_REMEMBERED} signed frames within the SendingTime window"
        st = now if sending_time is None else min(max(sending_time, now - window), now + window)
        until = st + window
        self._until[digest] = until
        self._order.append((until, digest))
        return None

    def _expire(self, now: float) -> None:
        order, table = self._order, self._until
        while order and order[0][0] < now:
            until, digest = order.popleft()
            if table.get(digest) == until:
                del table[digest]
