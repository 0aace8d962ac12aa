"""DESIGN §4's wire format, pure: what verifies and the exact reason for what does not."""

from __future__ import annotations

import os
import time

import pytest

from gateway.core.fix import codec, signature

FIELDS = [(35, b"D"), (34, b"2"), (49, b"A"), (52, b"20260101-00:00:00.000"), (56, b"GW"), (11, b"X")]


def hmac_pair() -> tuple[signature.Signer, tuple[signature.VerifyKey, ...]]:
    secret = os.urandom(32)
    return signature.Signer("hmac-sha256", secret), (signature.VerifyKey("hmac-sha256", secret, key_id="k"),)



def test_a_signed_frame_verifies() -> None:
    signer, keys = hmac_pair()
    raw = signature.encode_signed(b"FIX.4.4", FIELDS, signer)
    signature.verify(raw, keys, time.time())


def test_signature_length_after_signature_is_named_as_the_problem() -> None:
    """QuickFIX 1.15 writes trailer fields in tag order (89 before 93): refused with that reason."""
    signer, _ = hmac_pair()
    raw = signature.encode_signed(b"FIX.4.4", FIELDS, signer)
    i93, i89 = raw.rindex(b"\x0193="), raw.rindex(b"\x0189=")
    i10 = raw.rindex(b"\x0110=")
    swapped = raw[:i93] + raw[i89:i10] + raw[i93:i89] + raw[i10:]
    with pytest.raises(signature.SignatureError, match=r"SignatureLength\(93\) comes after Signature\(89\)"):
        signature.signed_span(swapped)


def test_missing_and_misplaced_signatures_are_named() -> None:
    signer, _ = hmac_pair()
    with pytest.raises(signature.SignatureError, match=r"Signature\(89\) missing"):
        signature.signed_span(codec.encode(b"FIX.4.4", FIELDS))
    raw = signature.encode_signed(b"FIX.4.4", FIELDS, signer)
    i10 = raw.rindex(b"\x0110=")
    late = raw[:i10] + b"\x0158=x" + raw[i10:]
    with pytest.raises(signature.SignatureError, match="not the last field before CheckSum"):
        signature.signed_span(late)
