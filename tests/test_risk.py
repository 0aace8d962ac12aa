"""Pre-trade risk book: each check, time passed in."""

from __future__ import annotations

from gateway.core.fix import codec
from gateway.core.policy.risk import Limits, RiskBook

T0 = 1_800_000_000.0


def order(cl: bytes, qty: bytes = b"10", px: bytes | None = b"10", sym: bytes = b"INTC",
          possresend: bool = False, mt: bytes = b"D") -> codec.Message:
    fields = [(35, mt), (34, b"2")] + ([(97, b"Y")] if possresend else []) + [(11, cl), (38, qty), (55, sym)]
    if px is not None:
        fields.append((44, px))
    return codec.parse(codec.encode(b"FIX.4.4", fields))


def er(cl: bytes, status: bytes) -> codec.Message:
    return codec.parse(codec.encode(b"FIX.4.4", [(35, b"8"), (34, b"3"), (11, cl), (39, status)]))


def test_max_open_orders_counts_until_a_terminal_execution_report() -> None:
    book = RiskBook(Limits(max_open_orders=2))
    for cl in (b"A", b"B"):
        assert book.check(order(cl), T0, None, {}) is None
        book.accepted(order(cl))
    assert book.check(order(b"C"), T0, None, {})[0] == "risk.max_open_orders"  # type: ignore[index]
    book.on_execution(er(b"A", b"1"))  # partial fill: still open
    assert book.check(order(b"C"), T0, None, {}) is not None
    book.on_execution(er(b"A", b"2"))  # filled
    assert book.check(order(b"C"), T0, None, {}) is None


def test_duplicate_clordid_is_refused_unless_possresend() -> None:
    book = RiskBook(Limits())
    book.accepted(order(b"X"))
    assert book.check(order(b"X"), T0, None, {})[0] == "risk.duplicate_clordid"  # type: ignore[index]
    assert book.check(order(b"X", possresend=True), T0, None, {}) is None


def test_notional_uses_the_reference_for_orders_without_price_and_fails_closed_without_one() -> None:
    book = RiskBook(Limits(max_notional=1000, duplicate_clordid=False))
    assert book.check(order(b"M", qty=b"50", px=None), T0, None, {b"INTC": 10.0}) is None
    assert book.check(order(b"M", qty=b"500", px=None), T0, None, {b"INTC": 10.0})[0] == "risk.max_notional"  # type: ignore[index]
    assert "fail closed" in book.check(order(b"M", px=None), T0, None, {})[1]  # type: ignore[index]


def test_account_limits_apply_on_top_of_the_identity_limits() -> None:
    book = RiskBook(Limits(max_order_qty=1000, duplicate_clordid=False))
    assert book.check(order(b"A", qty=b"600"), T0, Limits(max_order_qty=500), {})[0] == "risk.max_order_qty"  # type: ignore[index]
    assert book.check(order(b"A", qty=b"600"), T0, None, {}) is None


def test_throttle_refills_with_the_time_passed_in() -> None:
    book = RiskBook(Limits(max_msgs_per_sec=2, burst=2, duplicate_clordid=False))
    results = [book.check(order(b"T"), T0, None, {}) for _ in range(3)]
    assert results[:2] == [None, None] and results[2][0] == "risk.throttle"  # type: ignore[index]
    assert book.check(order(b"T"), T0 + 0.6, None, {}) is None


def test_identity_limits_override_the_defaults() -> None:
    merged = Limits(max_order_qty=100, max_notional=5).merged(Limits(max_order_qty=7))
    assert (merged.max_order_qty, merged.max_notional) == (7, 5)
