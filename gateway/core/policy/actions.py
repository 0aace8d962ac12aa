"""What a FIX MsgType does, by kind: the scopes of the kill switch, risk and read-only.

* ``order`` — creates or changes market exposure (blocked by the kill
  switch, checked by pre-trade risk, refused to read-only sessions);
* ``cancel`` — reduces exposure (passes the kill switch);
* ``read`` — a query a read-only session may send;
* ``other`` — anything else (a write, as far as read-only is concerned).

A policy action may declare the kind of a venue's own MsgType; it can never
make a FIX order type anything but an order.
"""

from __future__ import annotations

from collections.abc import Mapping

ORDER = "order"
CANCEL = "cancel"
READ = "read"
OTHER = "other"
KINDS = (ORDER, CANCEL, READ, OTHER)

#: FIX MsgTypes that create or change exposure
ORDER_TYPES = frozenset({
    b"D",   # NewOrderSingle
    b"G",   # OrderCancelReplaceRequest
    b"E",   # NewOrderList
    b"AB",  # NewOrderMultileg
    b"AC",  # MultilegOrderCancelReplace
    b"R",   # QuoteRequest
    b"S",   # Quote
    b"i",   # MassQuote
    b"s",   # NewOrderCross
    b"t",   # CrossOrderCancelReplaceRequest
    b"AJ",  # QuoteResponse (hits or lifts a quote)
})
CANCEL_TYPES = frozenset({
    b"F",   # OrderCancelRequest
    b"q",   # OrderMassCancelRequest
    b"u",   # CrossOrderCancelRequest
    b"Z",   # QuoteCancel
})
READ_TYPES = frozenset({
    b"V",   # MarketDataRequest
    b"AD",  # TradeCaptureReportRequest
    b"a",   # QuoteStatusRequest
    b"x",   # SecurityListRequest
    b"c",   # SecurityDefinitionRequest
    b"e",   # SecurityStatusRequest
    b"H",   # OrderStatusRequest
    b"AF",  # OrderMassStatusRequest
    b"g",   # TradingSessionStatusRequest
    b"v",   # SecurityTypeRequest
    b"AN",  # RequestForPositions
})


def kind_of(msg_type: bytes, overrides: Mapping[bytes, str] | None = None) -> str:
    """The kind of ``msg_type``: the FIX table first (an order stays an order), then the policy's own."""
    if msg_type in ORDER_TYPES:
        return ORDER
    if overrides:
        declared = overrides.get(msg_type)
        if declared is not None:
            return declared
    if msg_type in CANCEL_TYPES:
        return CANCEL
    if msg_type in READ_TYPES:
        return READ
    return OTHER
