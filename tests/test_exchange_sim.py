"""Exchange simulator applications (pure: message in, replies out).

The venue answers in the session's own FIX version: every reply of every
request is validated against that version's dictionary, for FIX.4.0 through
FIXT.1.1 with each application version.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.app.exchange_sim import EchoApp, sort_body
from gateway.app.venue import Market, Reply, Venue, VenueSettings
from gateway.core.fix import codec
from gateway.core.fix import tags as T
from gateway.core.fix.compose import layout
from gateway.core.fix.dictionary import Validator, standard_validator
from gateway.core.fix.versions import APPL_VERSIONS, FIXT11
from gateway.edges.config import ConfigError, load

V44 = standard_validator(b"FIX.4.4")
HDR = [(34, b"7"), (49, b"GW"), (52, b"20240101-00:00:00.000"), (56, b"XCHG")]
VERSIONS = [(b, None) for b in (b"FIX.4.0", b"FIX.4.1", b"FIX.4.2", b"FIX.4.3", b"FIX.4.4")] + [
    (FIXT11, a) for a in APPL_VERSIONS if a >= b"7"]
IDS = [f"{b.decode()}{'/' + a.decode() if a else ''}" for b, a in VERSIONS]
_VALIDATORS: dict[tuple[bytes, bytes | None], Validator] = {}


def msg(mt: bytes, body: list[tuple[int, bytes]], header: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
        begin: bytes = b"FIX.4.4") -> codec.Message:
    return codec.parse(codec.encode(begin, [(35, mt), *HDR, *header, *body]))


def valid(begin: bytes, appl: bytes | None, replies: list[Reply]) -> list[codec.Message]:
    """The venue's replies as its session sends them, each validated against the session's dictionary."""
    v = _VALIDATORS.get((begin, appl))
    if v is None:
        v = _VALIDATORS[(begin, appl)] = standard_validator(begin, default_appl_ver_id=appl)
    out = []
    for mt, header, body in replies:
        m = codec.parse(codec.encode(begin, [(35, mt), (34, b"3"), (49, b"XCHG"), (52, b"20260101-00:00:00"),
                                             (56, b"GW"), *header, *body]))
        err = v.validate(m)
        assert err is None, f"{begin.decode()}/{appl!r} {mt.decode()}: {err.detail if err else ''}: {m!r}"
        out.append(m)
    return out


def order(begin: bytes, cl: bytes, symbol: bytes = b"X", qty: bytes = b"100", price: bytes = b"10.5"
          ) -> codec.Message:
    return msg(b"D", [(11, cl), (21, b"1"), (38, qty), (40, b"2"), (44, price), (54, b"1"), (55, symbol)],
               begin=begin)


def kinds(ms: list[codec.Message]) -> list[tuple[bytes, bytes | None, bytes | None]]:
    return [(m.msg_type, m.get(T.ExecType), m.get(T.OrdStatus)) for m in ms]


# -- orders, in every version ------------------------------------------------------------------------

@pytest.mark.parametrize("begin,appl", VERSIONS, ids=IDS)
def test_an_order_gets_new_and_fill_valid_in_its_version(begin: bytes, appl: bytes | None) -> None:
    new, fill = valid(begin, appl, Venue(begin, appl, Market()).on_message(order(begin, b"A"), 0.0))
    assert (new.get(T.OrdStatus), fill.get(T.OrdStatus)) == (b"0", b"2")
    assert fill.get(T.LastPx) == b"10.5" and fill.get(T.CumQty) == b"100" and fill.get(T.ClOrdID) == b"A"
    if begin in (b"FIX.4.0", b"FIX.4.1", b"FIX.4.2"):
        assert new.get(T.ExecTransType) == fill.get(T.ExecTransType) == b"0"  # required up to FIX.4.2
    else:
        assert T.ExecTransType not in fill
    if begin == b"FIX.4.0":
        assert T.ExecType not in fill and new.get(T.LastPx) == new.get(T.LastQty) == b"0"  # required in 4.0
    elif begin in (b"FIX.4.1", b"FIX.4.2"):
        assert (new.get(T.ExecType), fill.get(T.ExecType)) == (b"0", b"2")  # 2 = Fill
    else:
        assert (new.get(T.ExecType), fill.get(T.ExecType)) == (b"0", b"F")  # F = Trade
    precision = layout(begin, appl).timestamp_precision
    assert len(fill.get(T.TransactTime) or b"") == 17 + (precision and precision + 1)


@pytest.mark.parametrize("begin,appl", VERSIONS, ids=IDS)
def test_partial_fills_resting_orders_cancels_and_replaces_are_valid_in_every_version(
        begin: bytes, appl: bytes | None) -> None:
    partial = Venue(begin, appl, Market(), VenueSettings(fill="partial", partial_fills=3))
    ms = valid(begin, appl, partial.on_message(order(begin, b"P"), 0.0))
    assert [m.get(T.OrdStatus) for m in ms] == [b"0", b"1", b"1", b"2"]
    assert [m.get(T.LastQty) for m in ms[1:]] == [b"33", b"33", b"34"] and ms[-1].get(T.CumQty) == b"100"
    rest = Venue(begin, appl, Market(), VenueSettings(fill="rest"))
    (new,) = valid(begin, appl, rest.on_message(order(begin, b"R1"), 0.0))
    assert new.get(T.OrdStatus) == b"0"
    (replaced,) = valid(begin, appl, rest.on_message(msg(b"G", [(11, b"R2"), (41, b"R1"), (38, b"50"), (44, b"11"),
                                                               (54, b"1"), (55, b"X")], begin=begin), 0.0))
    assert replaced.get(T.ClOrdID) == b"R2" and replaced.get(T.OrderQty) == b"50"
    assert replaced.get(T.ExecType, b"5") == b"5"
    (canceled,) = valid(begin, appl, rest.on_message(msg(b"F", [(11, b"R3"), (41, b"R2"), (54, b"1"), (55, b"X")],
                                                         begin=begin), 0.0))
    assert canceled.get(T.OrdStatus) == b"4" and canceled.get(T.ClOrdID) == b"R3"
    assert canceled.get(T.OrigClOrdID, b"R2") == b"R2"  # FIX.4.0's ExecutionReport has no OrigClOrdID(41)
    (late,) = valid(begin, appl, rest.on_message(msg(b"F", [(11, b"R4"), (41, b"R2"), (54, b"1"), (55, b"X")],
                                                     begin=begin), 0.0))
    assert late.msg_type == b"9"
    (unknown,) = valid(begin, appl, rest.on_message(msg(b"G", [(11, b"R5"), (41, b"NOPE"), (54, b"1")], begin=begin),
                                                    0.0))
    assert unknown.msg_type == b"9" and unknown.get(434, b"2") == b"2"


def test_delayed_executions_follow_one_per_delay_and_stop_at_a_cancel() -> None:
    v = Venue(b"FIX.4.4", None, Market(), VenueSettings(fill="partial", partial_fills=4, fill_delay=1.0))
    assert kinds(valid(b"FIX.4.4", None, v.on_message(order(b"FIX.4.4", b"D1"), 0.0))) == [(b"8", b"0", b"0")]
    assert v.next_due() == 1.0 and v.due(0.5) == []
    assert kinds(valid(b"FIX.4.4", None, v.due(1.0))) == [(b"8", b"F", b"1")]
    assert v.next_due() == 2.0
    (canceled,) = valid(b"FIX.4.4", None, v.on_message(msg(b"F", [(11, b"D2"), (41, b"D1"), (54, b"1")]), 1.5))
    assert canceled.get(T.OrdStatus) == b"4" and canceled.get(T.CumQty) == b"25"
    assert v.due(10.0) == [] and v.next_due() is None


def test_a_replace_between_delayed_executions_carries_on_under_the_new_clordid() -> None:
    v = Venue(b"FIX.4.4", None, Market(), VenueSettings(fill="partial", partial_fills=2, fill_delay=1.0))
    v.on_message(order(b"FIX.4.4", b"A1"), 0.0)
    (first,) = valid(b"FIX.4.4", None, v.due(1.0))
    assert (first.get(T.LastQty), first.get(T.OrdStatus)) == (b"50", b"1")
    (replaced,) = valid(b"FIX.4.4", None, v.on_message(msg(b"G", [(11, b"A2"), (41, b"A1"), (38, b"80"), (40, b"2"),
                                                                  (54, b"1"), (60, b"20260101-00:00:00")]), 1.5))
    assert (replaced.get(T.ExecType), replaced.get(T.OrdStatus), replaced.get(T.LeavesQty)) == (b"5", b"1", b"30")
    (last,) = valid(b"FIX.4.4", None, v.due(2.0))
    assert (last.get(T.ClOrdID), last.get(T.LastQty), last.get(T.CumQty), last.get(T.OrdStatus)) == (
        b"A2", b"30", b"80", b"2")
    assert v.due(10.0) == [] and v.next_due() is None


# -- the other requests of the matrix ------------------------------------------------------------------

@pytest.mark.parametrize("begin,appl", [v for v in VERSIONS if v[0] not in (b"FIX.4.0", b"FIX.4.1", b"FIX.4.2")],
                         ids=[i for i, v in zip(IDS, VERSIONS, strict=True)
                              if v[0] not in (b"FIX.4.0", b"FIX.4.1", b"FIX.4.2")])
def test_a_trade_capture_request_gets_an_ack_and_the_venue_s_trades(begin: bytes, appl: bytes | None) -> None:
    market = Market()
    Venue(begin, appl, market).on_message(order(begin, b"T1", symbol=b"INTC"), 0.0)
    Venue(begin, appl, market).on_message(order(begin, b"T2", symbol=b"MSFT"), 0.0)
    ms = valid(begin, appl, Venue(begin, appl, market).on_message(
        msg(b"AD", [(568, b"TR1"), (569, b"0"), (55, b"INTC")], begin=begin), 5.0))
    reports = [m for m in ms if m.msg_type == b"AE"]
    assert len(reports) == 1 and reports[0].get(T.Symbol) == b"INTC" and reports[0].get(T.LastPx) == b"10.5"
    if layout(begin, appl).has(b"AQ"):
        assert ms[0].msg_type == b"AQ" and ms[0].get(568) == b"TR1" and ms[0].get(748) == b"1"
    (none,) = valid(begin, appl, Venue(begin, appl, market).on_message(
        msg(b"AD", [(568, b"TR2"), (569, b"0"), (55, b"NONE")], begin=begin), 5.0))
    assert none.msg_type in (b"AQ", b"j")


@pytest.mark.parametrize("begin,appl", [v for v in VERSIONS if v[0] not in (b"FIX.4.0", b"FIX.4.1")],
                         ids=[i for i, v in zip(IDS, VERSIONS, strict=True) if v[0] not in (b"FIX.4.0", b"FIX.4.1")])
def test_market_data_snapshot_then_updates_until_unsubscribed(begin: bytes, appl: bytes | None) -> None:
    v = Venue(begin, appl, Market(), VenueSettings(md_interval=0.25))
    req = [(262, b"MD1"), (263, b"1"), (264, b"0"), (267, b"2"), (269, b"0"), (269, b"1"), (146, b"1"), (55, b"INTC")]
    (snap,) = valid(begin, appl, v.on_message(msg(b"V", req, begin=begin), 0.0))
    assert snap.msg_type == b"W" and snap.get(262) == b"MD1" and snap.get(268) == b"2"
    assert v.next_due() == 0.25
    (upd,) = valid(begin, appl, v.due(0.25))
    assert upd.msg_type == b"X" and upd.get(262) == b"MD1" and upd.get(279) == b"1"
    (dup,) = valid(begin, appl, v.on_message(msg(b"V", req, begin=begin), 0.3))
    assert dup.msg_type == b"Y"
    assert v.on_message(msg(b"V", [(262, b"MD1"), (263, b"2"), (264, b"0"), (267, b"1"), (269, b"0"),
                                   (146, b"1"), (55, b"INTC")], begin=begin), 0.4) == []
    assert v.next_due() is None and v.due(5.0) == []


@pytest.mark.parametrize("begin,appl", [v for v in VERSIONS if v[0] not in (b"FIX.4.0", b"FIX.4.1")],
                         ids=[i for i, v in zip(IDS, VERSIONS, strict=True) if v[0] not in (b"FIX.4.0", b"FIX.4.1")])
def test_quote_status_request_reports_the_venue_s_quotes(begin: bytes, appl: bytes | None) -> None:
    market = Market()
    (quote,) = valid(begin, appl, Venue(begin, appl, market).on_message(
        msg(b"R", [(131, b"Q1"), (146, b"1"), (55, b"INTC")], begin=begin), 0.0))
    ms = valid(begin, appl, Venue(begin, appl, market).on_message(
        msg(b"a", [(649, b"QS1"), (55, b"INTC")], begin=begin), 1.0))
    assert len(ms) == 1 and ms[0].get(T.QuoteID) == quote.get(T.QuoteID)
    if layout(begin, appl).has(b"AI"):
        assert ms[0].msg_type == b"AI" and ms[0].get(649) == b"QS1" and ms[0].get(297) == b"0"
        (missing,) = valid(begin, appl, Venue(begin, appl, market).on_message(
            msg(b"a", [(649, b"QS2"), (55, b"NONE")], begin=begin), 1.0))
        assert missing.get(297) == b"9"  # Quote not found
    else:
        assert ms[0].msg_type == b"S"  # FIX.4.2: the quote again


@pytest.mark.parametrize("begin,appl", [v for v in VERSIONS if v[0] in (b"FIX.4.4", FIXT11)],
                         ids=[i for i, v in zip(IDS, VERSIONS, strict=True) if v[0] in (b"FIX.4.4", FIXT11)])
def test_user_request_gets_a_user_response(begin: bytes, appl: bytes | None) -> None:
    market = Market()
    v = Venue(begin, appl, market)
    (on,) = valid(begin, appl, v.on_message(msg(b"BE", [(923, b"U1"), (924, b"1"), (553, b"adam")], begin=begin), 0))
    assert on.msg_type == b"BF" and (on.get(923), on.get(553), on.get(926)) == (b"U1", b"adam", b"1")
    (status,) = valid(begin, appl, v.on_message(msg(b"BE", [(923, b"U2"), (924, b"4"), (553, b"adam")], begin=begin),
                                                0))
    assert status.get(926) == b"1"


@pytest.mark.parametrize("begin,appl", VERSIONS, ids=IDS)
def test_the_misbehaviour_hooks_and_unsupported_types(begin: bytes, appl: bytes | None) -> None:
    v = Venue(begin, appl, Market(), VenueSettings(malformed_prefix=b"BAD-", reject_prefix=b"REJ-"))
    (bad,) = v.on_message(order(begin, b"BAD-1"), 0.0)
    assert bad[0] == b"8" and T.OrdStatus not in dict(bad[2])  # invalid on purpose
    (rej,) = valid(begin, appl, v.on_message(order(begin, b"REJ-1"), 0.0))
    assert rej.msg_type == b"3" and rej.get(T.RefSeqNum) == b"7"
    (unsupported,) = valid(begin, appl, v.on_message(msg(b"C", [(148, b"x")], begin=begin), 0.0))
    assert unsupported.msg_type == (b"j" if layout(begin, appl).has(b"j") else b"3")


def test_a_fixt_request_in_another_appl_ver_id_is_answered_in_that_version() -> None:
    v = Venue(FIXT11, b"9", Market())
    (mt, header, body), _ = v.on_message(msg(b"D", [(11, b"A"), (21, b"1"), (38, b"10"), (40, b"2"), (44, b"1"),
                                                    (54, b"1"), (55, b"X")], header=[(1128, b"7")], begin=FIXT11), 0)
    assert header == [(1128, b"7")] and mt == b"8"
    assert Decimal(dict(body)[T.LeavesQty].decode()) == 10


# -- the acceptance-test application -----------------------------------------------------------------

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


# -- its configuration -------------------------------------------------------------------------------

@pytest.mark.parametrize("line,key,words", [
    ("partial_fills = 1", "exchange_sim.partial_fills", "valid: an integer >= 2"),
    ("md_interval_ms = 0", "exchange_sim.md_interval_ms", "valid: milliseconds > 0"),
    ("fill_delay_ms = -5", "exchange_sim.fill_delay_ms", "valid: milliseconds >= 0"),
    ('fill = "sometimes"', "exchange_sim.fill", "Invalid enum value"),
])
def test_a_bad_simulator_key_names_file_key_and_what_is_valid(tmp_path: Path, line: str, key: str,
                                                              words: str) -> None:
    p = tmp_path / "sim.toml"
    p.write_text(f"[exchange_sim]\nport = 9000\n{line}\n")
    with pytest.raises(ConfigError) as exc:
        load(p, need_gateway=False)
    text = str(exc.value)
    assert str(p) in text and key in text and words in text, text
