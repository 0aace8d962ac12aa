"""Refusal answers (pure): the message type and fields the client's order state machine expects."""

from __future__ import annotations

from gateway.core.answers import business_reject, cancel_refusal, order_refusal
from gateway.core.fix import codec

NOS = codec.parse(codec.encode(b"FIX.4.4", [(35, b"D"), (34, b"7"), (11, b"C1"), (38, b"100"), (54, b"2"),
                                            (55, b"INTC")]))


def test_a_refused_order_is_a_rejected_execution_report_with_nothing_left_open() -> None:
    body = dict(order_refusal(NOS, b"refused by r1: no", b"GW-REJ-1", fix42=False, now=0.0))
    assert (body[39], body[150], body[151], body[14], body[103]) == (b"8", b"8", b"0", b"0", b"99")
    assert (body[11], body[38], body[54], body[55], body[58]) == (b"C1", b"100", b"2", b"INTC", b"refused by r1: no")
    assert 20 not in body


def test_fix42_answers_use_the_values_fix42_has() -> None:
    body = dict(order_refusal(NOS, b"x", b"GW-REJ-2", fix42=True, now=0.0))
    assert body[20] == b"0" and body[103] == b"0"
    assert dict(cancel_refusal(NOS, b"x", fix42=True))[102] == b"2"
    assert dict(cancel_refusal(NOS, b"x", fix42=False))[102] == b"99"


def test_a_business_reject_names_the_refused_message() -> None:
    body = dict(business_reject(NOS, 6, "not authorized"))
    assert (body[45], body[372], body[379], body[380], body[58]) == (b"7", b"D", b"C1", b"6", b"not authorized")
