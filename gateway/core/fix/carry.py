"""What crosses from one leg to the other (pure).

Session header fields (sequence numbers, CompIDs, times, PossDup) belong to
one leg and are written fresh by the other; routing fields and PossResend(97)
are carried, as is the body, byte-exact.  SignatureLength(93)/Signature(89)
belong to one leg too.
"""

from __future__ import annotations

from gateway.core.fix import tags as T
from gateway.core.fix.codec import Field, Message


def split_for_carry(msg: Message, header_tags: frozenset[int]) -> tuple[list[Field], list[Field]]:
    """Header fields to carry to the other leg, and the body (signature stripped).

    Session header fields (sequence numbers, CompIDs, times, PossDup) belong
    to one leg and are written fresh by the other; routing and PossResend(97)
    are carried.  SignatureLength(93)/Signature(89) belong to one leg too.
    """
    fields = msg.fields
    n = len(fields)
    i = 1  # after MsgType(35)
    header: list[Field] = []
    while i < n and fields[i][0] in header_tags:
        if fields[i][0] not in T.SESSION_HEADER_TAGS:
            header.append(fields[i])
        i += 1
    if T.Signature in msg or T.SignatureLength in msg:
        body = [f for f in fields[i:] if f[0] != T.SignatureLength and f[0] != T.Signature]
    else:
        body = list(fields[i:])
    return header, body
