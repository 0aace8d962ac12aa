"""What crosses from one leg to the other (pure).

Session header fields (sequence numbers, CompIDs, times, PossDup) belong to
one leg and are written fresh by the other; routing fields and PossResend(97)
are carried, as is the body, byte-exact.  SignatureLength(93)/Signature(89)
belong to one leg too.
"""

from __future__ import annotations

from . import tags as T
from .codec import Field, Message


def split_for_carry(msg: Message, header_tags: frozenset[int]) -> tuple[list[Field], list[Field]]:
    """Header fields to carry to the other leg, and the body (signature stripped).

    Session header fields (sequence numbers, CompIDs, times, PossDup) belong
    to one leg and are written fresh by the other; routing and PossResend(97)
    are carried.  SignatureLength(93)/Signature(89) belong to one leg too.
    """
    header: list[Field] = []
    body: list[Field] = []
    in_header = True
    for tag, value in msg.fields[1:]:
        if in_header and tag in header_tags:
            if tag not in T.SESSION_HEADER_TAGS:
                header.append((tag, value))
            continue
        in_header = False
        if tag == T.SignatureLength or tag == T.Signature:
            continue
        body.append((tag, value))
    return header, body
