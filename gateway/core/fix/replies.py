"""Bodies of the session-level messages the session core answers with: Logon(A) and Reject(3).

Pure functions of their inputs, apart from the state machine (``session.py``)
so that what a reply holds, per FIX version, reads in one place.
"""

from __future__ import annotations

from gateway.core.fix import tags as T
from gateway.core.fix.codec import Field, Message

_LOCATION_IDS = frozenset({T.OnBehalfOfLocationID, T.DeliverToLocationID})  # FIX.4.1 on


def logon_body(heart_bt_int: bytes, reset: bool, default_appl_ver_id: bytes | None,
               begin_string: bytes) -> list[Field]:
    """Logon(A): EncryptMethod(98)=0, HeartBtInt(108), ResetSeqNumFlag(141)=Y when ``reset``
    (from FIX.4.1 on: FIX.4.0 has no such field, the reset stays local, as QuickFIX's
    ``shouldSendReset``), DefaultApplVerID(1137) on FIXT.1.1."""
    body: list[Field] = [(T.EncryptMethod, b"0"), (T.HeartBtInt, heart_bt_int)]
    if reset and begin_string != b"FIX.4.0":
        body.append((T.ResetSeqNumFlag, b"Y"))
    if default_appl_ver_id:
        body.append((T.DefaultApplVerID, default_appl_ver_id))
    return body


def reject_fields(msg: Message, reason: int, tag: int | None, begin_string: bytes) -> tuple[list[Field], list[Field]]:
    """Reject(3) of ``msg``: its body (the spec's wording in Text(58); the detail goes to the event only)
    and the header fields that route it back (reverse route of OnBehalfOf/DeliverTo ...).

    Before FIX.4.2 there is no RefTagID(371), RefMsgType(372) or SessionRejectReason(373): the tag
    goes into Text(58) as "Invalid tag number (999)"; FIX.4.0 has no *LocationID to route back on
    (QuickFIX's ``populateRejectReason`` and ``reverseRoute``)."""
    seq_b = msg.get(T.MsgSeqNum)
    body: list[Field] = []
    if seq_b:
        body.append((T.RefSeqNum, seq_b))
    fix42_up = begin_string >= b"FIX.4.2" or begin_string.startswith(b"FIXT")
    text = T.SESSION_REJECT_TEXT.get(reason, "Other")
    if tag is not None and not fix42_up:
        text += f" ({tag})"
    body.append((T.Text, text.encode()))
    if tag is not None and fix42_up:
        body.append((T.RefTagID, b"%d" % tag))
    if fix42_up:
        body.append((T.RefMsgType, msg.msg_type))
        if begin_string != b"FIX.4.2" or reason <= T.SRR_INVALID_MSGTYPE:
            body.append((T.SessionRejectReason, b"%d" % reason))
    header = [(T.REVERSE_ROUTE[t], v) for t, v in msg.fields if t in T.REVERSE_ROUTE and v
              and (begin_string != b"FIX.4.0" or t not in _LOCATION_IDS)]
    return body, header
