"""What the client hears when its message is refused — by the gateway or by the venue (pure).

A refused message is consumed on the client leg and answered there, in the
message type the client's order state machine expects (DESIGN §1): orders get
ExecutionReport(8) with OrdStatus(39)=8 / ExecType(150)=8, cancels
OrderCancelReject(9), everything else BusinessMessageReject(j) — or, before
FIX.4.2, which has no BusinessMessageReject, Reject(3).  Text(58) says why.

Every answer is written in the client session's own version (its BeginString,
and for FIXT.1.1 its ApplVerID) through ``gateway.core.fix.compose``: the
meaning is given once, the version's dictionary decides the fields.  So
FIX.4.0 gets ExecTransType(20) and LastShares(32)/LastPx(31), which it
requires, and no ExecType(150), which it lacks; OrdRejReason(103) and
CxlRejReason(102) are 99 (Other) where the version has it and the nearest
value it has otherwise (0 Broker option; 2 Broker option for cancels; none
before FIX.4.2); OrderCancelReject(9) carries OrdStatus(39) only where the
version defines it there.  ``tests/test_answers.py`` validates every answer
of every version against that version's dictionary.

The venue can refuse too: a session-level Reject(3) of a message we carried
(``venue_reject``), or a message of its own that the exchange leg rejects as
invalid (``venue_invalid``).  The client is told either way, in the answer
its session is configured for (``[sessions] venue_reject_answer``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from gateway.core.fix import tags as T
from gateway.core.fix.codec import Field, Message
from gateway.core.fix.compose import Layout, layout
from gateway.core.fix.utctime import format_utc_timestamp
from gateway.core.policy.risk import NEW_ORDER_TYPES

#: New orders: what gets an ExecutionReport(8) refusal (and what the kill switch blocks).
ORDER_TYPES = NEW_ORDER_TYPES

#: How a session's client hears that the venue refused its message or sent something invalid about it:
#: ``business_reject`` (BusinessMessageReject(j); Reject(3) before FIX.4.2) or ``execution_report``
#: (the answer its order state machine expects: ExecutionReport(8) rejected for orders, OrderCancelReject(9)
#: for cancels, as the gateway's own refusals).
VenueAnswer = Literal["business_reject", "execution_report"]


class Answer(NamedTuple):
    """One message for the client: its MsgType and body."""

    msg_type: bytes
    body: list[Field]


def refusal_kind(msg_type: bytes) -> str:
    """Which refusal a client's order state machine expects: ``order`` (ExecutionReport(8)),
    ``cancel`` (OrderCancelReject(9)) or ``other`` (BusinessMessageReject(j))."""
    if msg_type in ORDER_TYPES:
        return "order"
    if msg_type == T.MT_ORDER_CANCEL_REQUEST:
        return "cancel"
    return "other"


def _text(text: str) -> bytes:
    """Text(58) as one field: latin-1 (anything else as ``?``), no SOH even if a quoted value had one."""
    return text.encode("latin-1", "replace").replace(b"\x01", b" ")


def _numeric(ident: bytes) -> tuple[bytes, bytes]:
    """An identifier and, for versions that type it as an integer (FIX.4.0's ExecID(17)), its digits."""
    digits = bytes(c for c in ident if 48 <= c <= 57)
    return (ident, digits or b"0")


def _by_tag(body: list[Field]) -> list[Field]:
    """Answers carry no repeating group: tag order, as the acceptance application writes its messages."""
    body.sort(key=lambda f: f[0])
    return body


def refusal(msg: Message, text: str, reason: int, exec_id: bytes, now: float, begin_string: bytes,
            appl_ver_id: bytes | None = None) -> Answer:
    """The answer to a refused ``msg`` by what it is (``refusal_kind``); ``reason`` is the
    BusinessRejectReason(380) when it gets a BusinessMessageReject."""
    kind = refusal_kind(msg.msg_type)
    if kind == "order":
        return order_refusal(msg, text, exec_id, now, begin_string, appl_ver_id)
    if kind == "cancel":
        return cancel_refusal(msg, text, begin_string, appl_ver_id)
    return business_reject(msg, reason, text, begin_string, appl_ver_id)


def order_refusal(msg: Message, text: str, exec_id: bytes, now: float, begin_string: bytes,
                  appl_ver_id: bytes | None = None) -> Answer:
    """ExecutionReport(8): the order rejected (OrdStatus(39)=8), nothing left open."""
    lay = layout(begin_string, appl_ver_id)
    g = msg.get
    side = g(T.Side)
    qty = g(T.OrderQty)
    body = lay.compose(T.MT_EXECUTION_REPORT, [
        (T.AvgPx, b"0"), (T.ClOrdID, g(T.ClOrdID) or b"NONE"), (T.CumQty, b"0"), (T.ExecID, _numeric(exec_id)),
        (T.ExecTransType, b"0"), (T.OrderID, b"NONE"), *([(T.OrderQty, qty)] if qty else []), (T.OrdStatus, b"8"),
        (T.Side, (side, b"1") if side else b"1"), (T.Symbol, g(T.Symbol) or b"NONE"), (T.Text, _text(text)),
        (T.TransactTime, format_utc_timestamp(now, lay.timestamp_precision)), (T.OrdRejReason, (b"99", b"0")),
        (T.ExecType, b"8"), (T.LeavesQty, b"0"),
    ], fallback={T.OrderQty: b"0", T.LastQty: b"0", T.LastPx: b"0"})
    return Answer(T.MT_EXECUTION_REPORT, _by_tag(body))


def cancel_refusal(msg: Message, text: str, begin_string: bytes, appl_ver_id: bytes | None = None) -> Answer:
    """OrderCancelReject(9) for a refused OrderCancelRequest(F)."""
    lay = layout(begin_string, appl_ver_id)
    g = msg.get
    body = lay.compose(T.MT_ORDER_CANCEL_REJECT, [
        (T.ClOrdID, g(T.ClOrdID) or b"NONE"), (T.OrderID, g(T.OrderID) or b"NONE"), (T.OrdStatus, b"8"),
        (T.OrigClOrdID, g(T.OrigClOrdID) or b"NONE"), (T.Text, _text(text)), (T.CxlRejReason, (b"99", b"2")),
        (T.CxlRejResponseTo, b"1"),
    ])
    return Answer(T.MT_ORDER_CANCEL_REJECT, _by_tag(body))


def business_reject(msg: Message, reason: int, text: str, begin_string: bytes,
                    appl_ver_id: bytes | None = None) -> Answer:
    """BusinessMessageReject(j) naming the refused message by MsgSeqNum, MsgType and its ID; a
    ``reason`` the version lacks becomes 0 (Other).  Before FIX.4.2: Reject(3) with RefSeqNum(45)
    (0 when ``msg`` has no MsgSeqNum: it names no message of the client's) and Text(58)."""
    lay = layout(begin_string, appl_ver_id)
    seq = msg.get(T.MsgSeqNum)
    mt = lay.business_reject_type()
    if mt == T.MT_REJECT:
        return Answer(mt, lay.compose(mt, [(T.RefSeqNum, seq or b"0"), (T.Text, _text(text))]))
    ref_id = msg.get(T.ClOrdID) or msg.get(T.QuoteReqID)
    body = lay.compose(mt, [
        *([(T.RefSeqNum, seq)] if seq else []), (T.Text, _text(text)), (T.RefMsgType, msg.msg_type),
        *([(T.BusinessRejectRefID, ref_id)] if ref_id else []),
        (T.BusinessRejectReason, (b"%d" % reason, b"%d" % T.BRR_OTHER)),
    ])
    return Answer(mt, body)


# -- when the venue refuses -----------------------------------------------------------------------

def venue_reject(carried: Message, venue_text: str, answer: VenueAnswer, exec_id: bytes, now: float,
                 begin_string: bytes, appl_ver_id: bytes | None = None) -> Answer:
    """The venue refused a message we carried with a session-level Reject(3).

    ``carried`` is the client's message as it reached the venue, numbered with
    the client's MsgSeqNum(34).  ``execution_report``: orders and cancels get
    the answer their state machine expects, the rest BusinessMessageReject(j);
    ``business_reject``: BusinessMessageReject(j) always.  Where that would be a
    BusinessMessageReject and the version has none (FIX.4.0/4.1), the client
    gets the venue's Reject(3) itself: RefSeqNum(45) its own, Text(58) the
    venue's words as they were (the acceptance scripts 2r expect exactly that).
    """
    said = venue_text or "no reason given"
    if answer == "execution_report" and refusal_kind(carried.msg_type) != "other":
        return refusal(carried, f"rejected by the venue: {said}", T.BRR_OTHER, exec_id, now, begin_string,
                       appl_ver_id)
    lay = layout(begin_string, appl_ver_id)
    text = f"rejected by the venue: {said}" if lay.has(T.MT_BUSINESS_MESSAGE_REJECT) else said
    return business_reject(carried, T.BRR_OTHER, text, begin_string, appl_ver_id)


def venue_invalid(venue_msg: Message, detail: str, answer: VenueAnswer, order: tuple[bytes, bytes, bytes] | None,
                  client_seq: int | None, exec_id: bytes, now: float, begin_string: bytes,
                  appl_ver_id: bytes | None = None) -> Answer:
    """The exchange leg refused the venue's ``venue_msg`` as invalid (``detail`` says why): it is
    not delivered, and the client hears that something about its order did not arrive.

    ``execution_report`` and a message naming a ClOrdID(11): ExecutionReport(8)
    rejected for that ClOrdID (Side, Symbol, OrderQty from ``order`` — the open
    order's — or the venue's message).  Otherwise BusinessMessageReject(j) whose
    RefMsgType(372) is the venue's MsgType and BusinessRejectRefID(379) its
    ClOrdID; before FIX.4.2 Reject(3) with RefSeqNum(45) = ``client_seq``, the
    client's message the ClOrdID names (0: none known).
    """
    lay = layout(begin_string, appl_ver_id)
    text = f"the venue's {_name(lay, venue_msg.msg_type)} was refused by the gateway ({detail}); not delivered"
    g = venue_msg.get
    cl = g(T.ClOrdID)
    if answer == "execution_report" and cl:
        side, symbol, qty = order or (g(T.Side) or b"", g(T.Symbol) or b"", g(T.OrderQty) or b"")
        ref = Message(begin_string, T.MT_NEW_ORDER_SINGLE,
                      [(t, v) for t, v in ((T.ClOrdID, cl), (T.Side, side), (T.Symbol, symbol), (T.OrderQty, qty))
                       if v])
        return order_refusal(ref, text, exec_id, now, begin_string, appl_ver_id)
    fields: list[Field] = []
    if client_seq is not None and not lay.has(T.MT_BUSINESS_MESSAGE_REJECT):
        fields.append((T.MsgSeqNum, b"%d" % client_seq))
    if cl:
        fields.append((T.ClOrdID, cl))
    return business_reject(Message(begin_string, venue_msg.msg_type, fields), T.BRR_OTHER, text, begin_string,
                           appl_ver_id)


def _name(lay: Layout, msg_type: bytes) -> str:
    """``ExecutionReport(8)``: a MsgType as the version's dictionary names it."""
    md = lay.dictionary.messages.get(msg_type)
    label = msg_type[:16].decode("latin-1")
    return f"{md.name}({label})" if md is not None else f"MsgType(35)={label}"
