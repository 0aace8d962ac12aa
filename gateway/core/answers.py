"""What the client hears when the gateway refuses a message (pure; time passed in).

A refused message is consumed on the client leg and answered there, in the
message type the client's order state machine expects (DESIGN §1): orders get
ExecutionReport(8) with OrdStatus(39)=8 / ExecType(150)=8, cancels
OrderCancelReject(9), everything else BusinessMessageReject(j).  Text(58)
says why.  FIX.4.2 lacks a few values (ExecTransType(20) is required, no
OrdRejReason(103)=99 / CxlRejReason(102)=99), so the builders take the
version into account.
"""

from __future__ import annotations

from gateway.core.fix import tags as T
from gateway.core.fix.codec import Field, Message
from gateway.core.fix.utctime import format_utc_timestamp
from gateway.core.policy.risk import NEW_ORDER_TYPES

#: New orders: what gets an ExecutionReport(8) refusal (and what the kill switch blocks).
ORDER_TYPES = NEW_ORDER_TYPES


def refusal_kind(msg_type: bytes) -> str:
    """Which refusal a client's order state machine expects: ``order`` (ExecutionReport(8)),
    ``cancel`` (OrderCancelReject(9)) or ``other`` (BusinessMessageReject(j))."""
    if msg_type in ORDER_TYPES:
        return "order"
    if msg_type == T.MT_ORDER_CANCEL_REQUEST:
        return "cancel"
    return "other"


def order_refusal(msg: Message, text: bytes, exec_id: bytes, fix42: bool, now: float) -> list[Field]:
    """ExecutionReport(8) body: the order rejected (OrdStatus(39)=8), nothing left open."""
    g = msg.get
    body: list[Field] = [(T.AvgPx, b"0"), (T.ClOrdID, g(T.ClOrdID) or b"NONE"), (T.CumQty, b"0"),
                         (T.ExecID, exec_id)]
    if fix42:
        body.append((T.ExecTransType, b"0"))
    body.append((T.OrderID, b"NONE"))
    qty = g(T.OrderQty)
    if qty:
        body.append((T.OrderQty, qty))
    body += [(T.OrdStatus, b"8"), (T.Side, g(T.Side) or b"1"), (T.Symbol, g(T.Symbol) or b"NONE"),
             (T.Text, text), (T.TransactTime, format_utc_timestamp(now)),
             (T.OrdRejReason, b"0" if fix42 else b"99"), (T.ExecType, b"8"), (T.LeavesQty, b"0")]
    return body


def cancel_refusal(msg: Message, text: bytes, fix42: bool) -> list[Field]:
    """OrderCancelReject(9) body for a refused OrderCancelRequest(F)."""
    g = msg.get
    return [(T.ClOrdID, g(T.ClOrdID) or b"NONE"), (T.OrderID, g(T.OrderID) or b"NONE"),
            (T.OrdStatus, b"8"), (T.OrigClOrdID, g(T.OrigClOrdID) or b"NONE"), (T.Text, text),
            (T.CxlRejReason, b"2" if fix42 else b"99"), (T.CxlRejResponseTo, b"1")]


def business_reject(msg: Message, reason: int, text: str) -> list[Field]:
    """BusinessMessageReject(j) body naming the refused message by MsgSeqNum, MsgType and its ID."""
    body: list[Field] = []
    seq = msg.get(T.MsgSeqNum)
    if seq:
        body.append((T.RefSeqNum, seq))
    body.append((T.Text, text.encode("latin-1", "replace")))
    body.append((T.RefMsgType, msg.msg_type))
    ref_id = msg.get(T.ClOrdID) or msg.get(T.QuoteReqID)
    if ref_id:
        body.append((T.BusinessRejectRefID, ref_id))
    body.append((T.BusinessRejectReason, b"%d" % reason))
    return body
