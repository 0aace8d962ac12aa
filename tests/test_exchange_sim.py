"""Exchange simulator applications (pure: message in, replies out)."""

from __future__ import annotations

from gateway.app.exchange_sim import EchoApp, FillApp, sort_body
from gateway.core.fix import codec
from gateway.core.fix import tags as T
from gateway.core.fix.dictionary import standard_validator

V44 = standard_validator(b"FIX.4.4")
HDR = [(34, b"7"), (49, b"GW"), (52, b"20240101-00:00:00.000"), (56, b"XCHG")]


def msg(mt: bytes, body: list[tuple[int, bytes]], header: list[tuple[int, bytes]] = ()) -> codec.Message:  # type: ignore[assignment]
    return codec.parse(codec.encode(b"FIX.4.4", [(35, mt), *HDR, *header, *body]))


def test_fill_mode_acknowledges_then_fills_at_the_limit_price() -> None:
    app = FillApp()
    replies = app.on_message(msg(b"D", [(11, b"A"), (38, b"100"), (44, b"10.5"), (54, b"1"), (55, b"X")]), b"T")
    assert [(mt, dict(body)[T.ExecType], dict(body)[T.OrdStatus]) for mt, _, body in replies] == [
        (b"8", b"0", b"0"), (b"8", b"F", b"2")]
    fill = dict(replies[1][2])
    assert fill[T.LastPx] == b"10.5" and fill[T.CumQty] == b"100" and fill[T.LeavesQty] == b"0"


def test_cancel_of_unknown_order_is_an_order_cancel_reject() -> None:
    app = FillApp()
    (mt, _, body), = app.on_message(msg(b"F", [(11, b"C1"), (41, b"NOPE"), (54, b"1"), (55, b"X")]), b"T")
    assert mt == b"9" and dict(body)[T.CxlRejReason] == b"1"


def test_quote_request_gets_a_quote() -> None:
    (mt, _, body), = FillApp().on_message(msg(b"R", [(131, b"Q1"), (55, b"X")]), b"T")
    assert mt == b"S" and dict(body)[T.QuoteReqID] == b"Q1"


def test_echo_sorts_body_by_tag_and_keeps_values_and_routing_header() -> None:
    app = EchoApp(V44, frozenset(V44.transport.header.tags))
    (mt, header, body), = app.on_message(
        msg(b"D", [(55, b"X"), (11, b"id"), (38, b"002000.00")], header=[(115, b"JCD")]))
    assert mt == b"D" and header == [(115, b"JCD")]
    assert body == [(11, b"id"), (38, b"002000.00"), (55, b"X")]


def test_echo_drops_a_possresend_duplicate_and_rejects_unsupported_types() -> None:
    app = EchoApp(V44, frozenset(V44.transport.header.tags))
    assert app.on_message(msg(b"D", [(11, b"id")]))
    assert app.on_message(msg(b"D", [(11, b"id")], header=[(97, b"Y")])) == []
    assert app.on_message(msg(b"D", [(11, b"new")], header=[(97, b"Y")]))
    (mt, _, body), = app.on_message(msg(b"8", [(37, b"x")]))
    assert mt == b"j" and dict(body)[T.BusinessRejectReason] == b"3" and dict(body)[T.RefSeqNum] == b"7"


def test_sort_body_keeps_repeating_groups_whole() -> None:
    md = V44.message_def(b"D")
    body = [(55, b"X"), (386, b"2"), (336, b"B"), (336, b"A"), (11, b"id")]
    assert sort_body(body, md) == [(11, b"id"), (55, b"X"), (386, b"2"), (336, b"B"), (336, b"A")]
