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


def test_duplicate_clordid_is_refused_even_with_possresend() -> None:
    book = RiskBook(Limits())
    book.accepted(order(b"X"))
    assert book.check(order(b"X"), T0, None, {})[0] == "risk.duplicate_clordid"  # type: ignore[index]
    # the venue would fill a PossResend(97)=Y copy again: refused under its own name (the gateway consumes it)
    hit = book.check(order(b"X", possresend=True), T0, None, {})
    assert hit == ("risk.possresend_duplicate", "PossResend(97)=Y and ClOrdID(11) X was already accepted")
    assert book.check(order(b"Y", possresend=True), T0, None, {}) is None  # not seen: a real resend


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


def msg(mt: bytes, *fields: tuple[int, bytes]) -> codec.Message:
    return codec.parse(codec.encode(b"FIX.4.4", [(35, mt), (34, b"2"), *fields]))


def test_the_kind_decides_which_checks_run() -> None:
    book = RiskBook(Limits(max_order_qty=10, duplicate_clordid=False))
    huge = order(b"K", qty=b"1000")
    assert book.check(huge, T0, None, {}, kind="cancel") is None  # only the throttle for other kinds
    assert book.check(huge, T0, None, {}, kind="order")[0] == "risk.max_order_qty"  # type: ignore[index]
    venue = msg(b"U1", (11, b"V"), (55, b"INTC"), (38, b"1000"), (44, b"1"))
    assert book.check(venue, T0, None, {}) is None  # a custom MsgType is "other" by default
    assert book.check(venue, T0, None, {}, kind="order")[0] == "risk.max_order_qty"  # type: ignore[index]
    quote = msg(b"S", (117, b"Q"), (55, b"INTC"), (132, b"1"), (133, b"2"), (134, b"5"), (135, b"500"))
    assert "OfferSize(135) 500 above 10" in book.check(quote, T0, None, {})[1]  # type: ignore[index]


def test_a_quote_request_without_size_or_price_commits_to_nothing_but_its_sizes_are_checked() -> None:
    book = RiskBook(Limits(max_order_qty=1000, max_notional=10_000, duplicate_clordid=False))
    assert book.check(msg(b"R", (131, b"Q"), (146, b"1"), (55, b"INTC")), T0, None, {}) is None
    assert book.check(msg(b"R", (131, b"Q"), (146, b"1"), (55, b"INTC"), (38, b"500")), T0, None, {}) is None
    hit = book.check(msg(b"R", (131, b"Q"), (146, b"1"), (55, b"INTC"), (38, b"500")), T0, None, {b"INTC": 30.0})
    assert hit is not None and hit[0] == "risk.max_notional"  # with a reference, the notional is known
    hit = book.check(msg(b"R", (131, b"Q"), (146, b"1"), (55, b"INTC"), (38, b"-1")), T0, None, {})
    assert hit == ("risk.max_order_qty", "OrderQty(38) -1 is not a positive number")
    # an order without a size is refused, as before
    no_size = msg(b"D", (11, b"N"), (55, b"INTC"), (44, b"1"))
    assert book.check(no_size, T0, None, {})[0] == "risk.max_order_qty"  # type: ignore[index]


def test_notional_of_unpriced_entries_needs_a_reference_for_every_instrument() -> None:
    book = RiskBook(Limits(max_notional=100_000, duplicate_clordid=False))
    two = msg(b"E", (73, b"2"), (11, b"A"), (55, b"INTC"), (38, b"100"), (11, b"B"), (55, b"MSFT"), (38, b"100"))
    assert book.check(two, T0, None, {b"INTC": 30.0, b"MSFT": 400.0}) is None
    hit = book.check(two, T0, None, {b"INTC": 30.0})
    assert hit is not None and hit[0] == "risk.max_notional" and "fail closed" in hit[1]
    hit = book.check(two, T0, None, {b"INTC": 30.0, b"MSFT": 4000.0})
    assert hit is not None and hit[0] == "risk.max_notional"


def test_price_collar_checks_every_price() -> None:
    book = RiskBook(Limits(price_collar_pct=10, duplicate_clordid=False))
    ok = msg(b"S", (117, b"Q"), (55, b"INTC"), (132, b"29"), (133, b"31"), (134, b"1"), (135, b"1"))
    assert book.check(ok, T0, None, {b"INTC": 30.0}) is None
    far = msg(b"S", (117, b"Q"), (55, b"INTC"), (132, b"29"), (133, b"300"), (134, b"1"), (135, b"1"))
    hit = book.check(far, T0, None, {b"INTC": 30.0})
    assert hit is not None and hit[0] == "risk.price_collar" and "OfferPx(133) 300" in hit[1]


def test_every_clordid_of_a_list_is_tracked() -> None:
    book = RiskBook(Limits(max_open_orders=3))
    lst = msg(b"E", (73, b"2"), (11, b"L1"), (55, b"INTC"), (38, b"1"), (11, b"L2"), (55, b"INTC"), (38, b"1"))
    assert book.check(lst, T0, None, {}) is None
    book.accepted(lst)
    assert book.open_orders == {b"L1", b"L2"}
    again = msg(b"E", (73, b"2"), (11, b"L3"), (55, b"INTC"), (38, b"1"), (11, b"L4"), (55, b"INTC"), (38, b"1"))
    assert book.check(again, T0, None, {})[0] == "risk.max_open_orders"  # type: ignore[index]
    twice = msg(b"E", (73, b"2"), (11, b"L5"), (55, b"INTC"), (38, b"1"), (11, b"L5"), (55, b"INTC"), (38, b"1"))
    assert book.check(twice, T0, None, {})[0] == "risk.duplicate_clordid"  # type: ignore[index]
    # a replace frees the ClOrdID it replaces
    book.accepted(msg(b"G", (11, b"L6"), (41, b"L1"), (55, b"INTC"), (38, b"1")))
    assert book.open_orders == {b"L2", b"L6"}


def test_limits_of_every_account_apply() -> None:
    book = RiskBook(Limits(duplicate_clordid=False))
    lst = msg(b"E", (73, b"2"), (11, b"A"), (1, b"ACC-1"), (55, b"INTC"), (38, b"10"),
              (11, b"B"), (1, b"ACC-2"), (55, b"INTC"), (38, b"600"))
    per_account = [Limits(max_order_qty=1000), Limits(max_order_qty=500)]
    assert book.check(lst, T0, per_account, {})[0] == "risk.max_order_qty"  # type: ignore[index]
    assert book.check(lst, T0, per_account[:1], {}) is None


def test_restricted_instruments_by_any_name() -> None:
    from gateway.core.policy.instruments import compile_instruments

    inst = compile_instruments(["trim", "upper"], {"BAD": ["ISIN:US9"]})
    book = RiskBook(Limits(restricted_symbols=inst.entry_keys(["BAD"], any_source=True), duplicate_clordid=False))
    for fields in ([(55, b" bad")], [(48, b"US9"), (22, b"4")], [(311, b"BAD")], [(309, b"us9"), (305, b"4")]):
        hit = book.check(msg(b"D", (11, b"R"), *fields, (38, b"1")), T0, None, {}, instruments=inst)
        assert hit is not None and hit[0] == "risk.restricted_symbol", fields
