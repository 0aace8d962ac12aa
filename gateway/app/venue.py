"""The exchange simulator's venue (``fixgw exchange-sim``, ``mode = "fill"``): pure, message in, replies out.

It answers what the policy's matrix lets clients ask, as a venue would, in
the session's own FIX version — every reply is written through
``gateway.core.fix.compose`` from the version's dictionary, so a FIX.4.2
order gets ExecTransType(20) and ExecType(150)=2 (Fill), a FIX.4.4 one
ExecType(150)=F (Trade), a FIX.4.0 one LastShares(32)/LastPx(31) on its New:

* NewOrderSingle(D) -> ExecutionReport New, then by ``fill``: ``full`` one
  Fill at the limit price, ``partial`` ``partial_fills`` executions (the last
  completes the order), ``rest`` nothing more (the order rests until
  cancelled or replaced; so do orders in ``rest_symbols``).  With
  ``fill_delay`` the executions follow one per delay (``due``); a cancel or
  replace meanwhile applies to what is left.
* OrderCancelRequest(F) -> Canceled, OrderCancelReplaceRequest(G) -> Replaced
  (OrdStatus(39)=5 where the version has no ExecType(150), the order's status
  otherwise), or OrderCancelReject(9) for an order that is not open.
* QuoteRequest(R) -> Quote(S); QuoteStatusRequest(a) -> QuoteStatusReport(AI)
  per matching quote (QuoteStatus(297)=9 Quote not found when none), FIX.4.2
  (no AI): the quotes again as Quote(S).
* TradeCaptureReportRequest(AD) -> TradeCaptureReportRequestAck(AQ, from
  FIX.4.4) and one TradeCaptureReport(AE) per trade of the venue (every
  session's fills: the venue's tape, filtered by Symbol(55) when asked).
* MarketDataRequest(V) -> MarketDataSnapshotFullRefresh(W) per symbol; with
  SubscriptionRequestType(263)=1 MarketDataIncrementalRefresh(X) every
  ``md_interval`` until 263=2 for the same MDReqID(262) (or the connection
  ends); an unknown or duplicate MDReqID -> MarketDataRequestReject(Y).
* UserRequest(BE) -> UserResponse(BF) with the UserStatus(926) the request
  leads to.
* anything else -> BusinessMessageReject(j) 380=3 (Reject(3) before FIX.4.2).

Two hooks for tests of what the gateway does with a venue that misbehaves:
an order whose ClOrdID starts with ``malformed_prefix`` gets one
ExecutionReport without OrdStatus(39) (invalid in every version) and
nothing more; one starting with ``reject_prefix`` gets a session-level
Reject(3).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Literal

from gateway.core.fix import tags as T
from gateway.core.fix.codec import Field, Message
from gateway.core.fix.compose import Entry, Layout, layout
from gateway.core.fix.utctime import format_utc_timestamp
from gateway.core.fix.versions import PRE_FIX42

Reply = tuple[bytes, list[Field], list[Field]]  # (MsgType, header fields, body fields)

# the vocabulary below the session layer's (``tags.py``): tag numbers as the FIX specification names them
MDReqID, SubscriptionRequestType, MDEntryType, MDEntryPx, MDEntrySize = 262, 263, 269, 270, 271
MDUpdateAction, MDReqRejReason, NoMDEntries = 279, 281, 268
QuoteStatus, QuoteStatusReqID = 297, 649
TradeRequestID, TradeRequestType, TradeReportID, PreviouslyReported = 568, 569, 571, 570
TradeRequestResult, TradeRequestStatus, TotNumTradeReports, LastRptRequested = 749, 750, 748, 912
TradeDate, NoSides, LastUpdateTime = 75, 552, 779
UserRequestID, UserRequestType, UserStatus, UserStatusText = 923, 924, 926, 927
MT_MARKET_DATA_REQUEST, MT_SNAPSHOT, MT_INCREMENTAL, MT_MD_REJECT = b"V", b"W", b"X", b"Y"
MT_QUOTE_STATUS_REQUEST, MT_QUOTE_STATUS_REPORT = b"a", b"AI"
MT_TRADE_REQUEST, MT_TRADE_REQUEST_ACK, MT_TRADE_REPORT = b"AD", b"AQ", b"AE"
MT_USER_REQUEST, MT_USER_RESPONSE = b"BE", b"BF"

#: UserRequestType(924) -> the UserStatus(926) it leads to: log on -> Logged In, log off -> Not Logged In,
#: change password -> Password Changed; status (4) answers the user's current status
_USER_STATUS = {b"1": b"1", b"2": b"2", b"3": b"5"}
#: MDEntryType(269) values the venue quotes: Bid, Offer, Trade
_MD_TYPES = (b"0", b"1", b"2")
MAX_TRADE_REPORTS = 100  # TradeCaptureReports per request, the newest


@dataclass(frozen=True, slots=True)
class VenueSettings:
    """The ``[exchange_sim]`` keys the venue reads."""

    fill: Literal["full", "partial", "rest"] = "full"
    partial_fills: int = 3
    rest_symbols: frozenset[bytes] = frozenset()
    fill_delay: float = 0.0  # seconds between an order's executions (0: all at once)
    md_interval: float = 0.25  # seconds between incremental refreshes of a subscription
    malformed_prefix: bytes = b""
    reject_prefix: bytes = b""


@dataclass(slots=True)
class _Trade:
    n: int
    symbol: bytes
    side: bytes
    qty: bytes
    px: bytes
    order_id: bytes
    at: float


@dataclass(slots=True)
class _Quote:
    quote_id: bytes
    quote_req_id: bytes
    symbol: bytes
    bid: bytes
    offer: bytes


@dataclass
class Market:
    """What every session of the venue shares: identifiers, the tape, quotes, users, prices."""

    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    trades: deque[_Trade] = field(default_factory=lambda: deque(maxlen=1000))
    quotes: dict[bytes, _Quote] = field(default_factory=dict)
    users: dict[bytes, bytes] = field(default_factory=dict)  # Username -> UserStatus(926)
    ticks: int = 0

    def next_id(self) -> int:
        return next(self.ids)

    def price(self, symbol: bytes) -> Decimal:
        """Where the market is for ``symbol``: the last trade, else 100, moving a little every tick."""
        last = next((t.px for t in reversed(self.trades) if t.symbol == symbol), b"100")
        return _dec(last) or Decimal(100)


@dataclass(slots=True)
class _Order:
    cl_ord_id: bytes
    order_id: bytes
    symbol: bytes
    side: bytes
    qty: Decimal
    price: Decimal
    has_price: bool
    cum: Decimal = Decimal(0)
    fills_left: int = 0
    open: bool = True


@dataclass(slots=True)
class _Subscription:
    req_id: bytes
    symbols: list[bytes]
    types: list[bytes]
    appl: bytes | None  # the ApplVerID(1128) it was asked in (FIXT.1.1), answered in the same
    next_at: float


def _dec(v: bytes | None) -> Decimal | None:
    """A positive finite decimal, or None (the venue refuses what it cannot read)."""
    if not v:
        return None
    try:
        d = Decimal(v.decode("ascii"))
    except (InvalidOperation, UnicodeDecodeError):
        return None
    return d if d.is_finite() and d > 0 else None


def _fmt(d: Decimal) -> bytes:
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s.encode()


def _alt(prefix: bytes, n: int) -> tuple[bytes, bytes]:
    """An identifier, and the bare number for versions that type it as an integer (FIX.4.0's ExecID)."""
    return (b"%s%d" % (prefix, n), b"%d" % n)


class Venue:
    """One session's view of the venue: its orders and market data subscriptions."""

    def __init__(self, begin_string: bytes, appl_ver_id: bytes | None, market: Market,
                 settings: VenueSettings | None = None) -> None:
        self.begin_string = begin_string
        self.appl_ver_id = appl_ver_id
        self.market = market
        self.settings = settings or VenueSettings()
        self.orders: dict[bytes, _Order] = {}  # every ClOrdID the order had -> the order
        self.subscriptions: dict[bytes, _Subscription] = {}
        self._fills: list[tuple[float, int, _Order]] = []  # (when, tie-break, order) of scheduled executions
        self._n = itertools.count()
        layout(begin_string, appl_ver_id)  # the dictionary is read now, not on the first order

    # -- the shell's interface ------------------------------------------------------------------
    def on_message(self, msg: Message, now: float) -> list[Reply]:
        """The venue's answer to one application message."""
        appl = msg.get(T.ApplVerID)
        lay = layout(self.begin_string, appl or self.appl_ver_id)
        header: list[Field] = [(T.ApplVerID, appl)] if appl else []
        handler = _HANDLERS.get(msg.msg_type)
        if handler is None:
            return [self._unsupported(lay, msg)]
        return [(mt, header if mt != T.MT_REJECT else [], body) for mt, _, body in handler(self, lay, msg, now)]

    def next_due(self) -> float | None:
        """When ``due`` has something to send next (None: nothing scheduled)."""
        times = [self._fills[0][0]] if self._fills else []
        times += [s.next_at for s in self.subscriptions.values()]
        return min(times) if times else None

    def due(self, now: float) -> list[Reply]:
        """Scheduled executions and incremental refreshes whose time has come."""
        out: list[Reply] = []
        lay = layout(self.begin_string, self.appl_ver_id)
        while self._fills and self._fills[0][0] <= now:
            _, _, o = heapq.heappop(self._fills)
            if o.open and o.fills_left > 0:  # a cancel meanwhile ends it; a replace carries on under its new ClOrdID
                out.append((T.MT_EXECUTION_REPORT, [], self._execute(lay, o, now)))
                if o.open and o.fills_left > 0:
                    heapq.heappush(self._fills, (now + self.settings.fill_delay, next(self._n), o))
        for sub in list(self.subscriptions.values()):
            if sub.next_at <= now:
                sub.next_at = now + self.settings.md_interval
                sub_lay = layout(self.begin_string, sub.appl or self.appl_ver_id)
                header: list[Field] = [(T.ApplVerID, sub.appl)] if sub.appl else []
                out.append((MT_INCREMENTAL, header, self._incremental(sub_lay, sub, now)))
        return out

    def disconnected(self) -> None:
        """Subscriptions live as long as the connection (orders and their executions go on)."""
        self.subscriptions.clear()

    # -- orders ---------------------------------------------------------------------------------
    def _report(self, lay: Layout, o: _Order, exec_type: bytes | tuple[bytes, ...], status: bytes | tuple[bytes, ...],
                now: float, last: tuple[Decimal, Decimal] | None = None, cl_ord_id: bytes | None = None,
                orig: bytes | None = None, extra: Entry = ()) -> list[Field]:
        """An ExecutionReport(8) of ``o`` in this version (see ``gateway.core.fix.compose``)."""
        n = self.market.next_id()
        values: Entry = [
            (T.OrderID, o.order_id), (T.ClOrdID, cl_ord_id or o.cl_ord_id), *([(T.OrigClOrdID, orig)] if orig else []),
            (T.ExecID, _alt(b"E", n)), (T.ExecTransType, b"0"), (T.ExecType, exec_type), (T.OrdStatus, status),
            (T.Symbol, o.symbol), (T.Side, o.side), (T.OrderQty, _fmt(o.qty)),
            *([(T.Price, _fmt(o.price))] if o.has_price else []),
            *([(T.LastQty, _fmt(last[0])), (T.LastPx, _fmt(last[1]))] if last else []),
            (T.LeavesQty, _fmt(o.qty - o.cum) if o.open else b"0"), (T.CumQty, _fmt(o.cum)),
            (T.AvgPx, _fmt(o.price) if o.cum else b"0"),
            (T.TransactTime, format_utc_timestamp(now, lay.timestamp_precision)),
            *extra,
        ]
        return lay.compose(T.MT_EXECUTION_REPORT, values, fallback={T.LastQty: b"0", T.LastPx: b"0"})

    def _status(self, o: _Order) -> bytes:
        """OrdStatus(39) of an order: New, Partially filled, Filled or Canceled."""
        if not o.open:
            return b"2" if o.cum >= o.qty else b"4"
        return b"1" if o.cum else b"0"

    def _new_order(self, lay: Layout, msg: Message, now: float) -> list[Reply]:
        g = msg.get
        cl = g(T.ClOrdID) or b""
        s = self.settings
        if s.reject_prefix and cl.startswith(s.reject_prefix):
            return [self._session_reject(msg, "order refused by the simulator (reject_prefix)")]
        qty, price = _dec(g(T.OrderQty)), _dec(g(T.Price))
        o = _Order(cl, b"O%d" % self.market.next_id(), g(T.Symbol) or b"", g(T.Side) or b"1", qty or Decimal(0),
                   price or self.market.price(g(T.Symbol) or b""), price is not None)
        if qty is None or cl in self.orders:
            o.open = False
            why = b"duplicate ClOrdID(11)" if cl in self.orders else b"OrderQty(38) is not a positive number"
            body = self._report(lay, o, b"8", b"8", now, extra=[(T.OrdRejReason, (b"99", b"0")), (T.Text, why)])
            return [(T.MT_EXECUTION_REPORT, [], body)]
        self.orders[cl] = o
        new = self._report(lay, o, b"0", b"0", now)
        if s.malformed_prefix and cl.startswith(s.malformed_prefix):
            o.open = False  # the hook: one invalid report, nothing more
            return [(T.MT_EXECUTION_REPORT, [], [f for f in new if f[0] != T.OrdStatus])]
        out: list[Reply] = [(T.MT_EXECUTION_REPORT, [], new)]
        if s.fill == "rest" or o.symbol in s.rest_symbols:
            return out
        o.fills_left = s.partial_fills if s.fill == "partial" else 1
        if s.fill_delay > 0:
            heapq.heappush(self._fills, (now + s.fill_delay, next(self._n), o))
            return out
        while o.open and o.fills_left:
            out.append((T.MT_EXECUTION_REPORT, [], self._execute(lay, o, now)))
        return out

    def _execute(self, lay: Layout, o: _Order, now: float) -> list[Field]:
        """The next execution of ``o``: its share of what is left, the last one all of it."""
        left = o.qty - o.cum
        if o.fills_left <= 1:
            part = left
        elif left == left.to_integral_value() and left >= o.fills_left:
            part = Decimal(int(left) // o.fills_left)
        else:
            part = (left / o.fills_left).quantize(Decimal("0.0001"), rounding=ROUND_DOWN) or left
        o.fills_left -= 1
        o.cum += part
        done = o.cum >= o.qty
        if done:
            o.open, o.fills_left = False, 0
        self.market.trades.append(_Trade(self.market.next_id(), o.symbol, o.side, _fmt(part), _fmt(o.price),
                                         o.order_id, now))
        return self._report(lay, o, (b"F", b"2") if done else (b"F", b"1"), b"2" if done else b"1", now,
                            last=(part, o.price))

    def _cancel(self, lay: Layout, msg: Message, now: float) -> list[Reply]:
        g = msg.get
        orig = g(T.OrigClOrdID) or b""
        o = self.orders.get(orig)
        if o is None or not o.open:
            return [self._cancel_reject(lay, msg, o, b"1")]
        o.open, o.fills_left = False, 0
        cl = g(T.ClOrdID) or b""
        self.orders[cl] = o
        return [(T.MT_EXECUTION_REPORT, [], self._report(lay, o, b"4", b"4", now, cl_ord_id=cl, orig=orig))]

    def _replace(self, lay: Layout, msg: Message, now: float) -> list[Reply]:
        g = msg.get
        orig = g(T.OrigClOrdID) or b""
        o = self.orders.get(orig)
        qty, price = _dec(g(T.OrderQty)), _dec(g(T.Price))
        if o is None or not o.open or (qty is not None and qty <= o.cum):
            return [self._cancel_reject(lay, msg, o, b"2")]
        o.cl_ord_id = g(T.ClOrdID) or b""
        self.orders[o.cl_ord_id] = o
        if qty is not None:
            o.qty = qty
        if price is not None:
            o.price, o.has_price = price, True
        status = self._status(o) if lay.defines(T.MT_EXECUTION_REPORT, T.ExecType) else b"5"
        return [(T.MT_EXECUTION_REPORT, [], self._report(lay, o, b"5", status, now, orig=orig))]

    def _cancel_reject(self, lay: Layout, msg: Message, o: _Order | None, response_to: bytes) -> Reply:
        g = msg.get
        why = b"unknown order" if o is None else b"order is not open"
        body = lay.compose(T.MT_ORDER_CANCEL_REJECT, [
            (T.OrderID, o.order_id if o else b"NONE"), (T.ClOrdID, g(T.ClOrdID) or b"NONE"),
            (T.OrigClOrdID, g(T.OrigClOrdID) or b"NONE"), (T.OrdStatus, self._status(o) if o else b"8"),
            (T.CxlRejResponseTo, response_to), (T.CxlRejReason, b"1" if o is None else b"0"), (T.Text, why),
        ])
        return (T.MT_ORDER_CANCEL_REJECT, [], body)

    # -- quotes -------------------------------------------------------------------------------------
    def _quote(self, lay: Layout, msg: Message, now: float) -> list[Reply]:
        req = msg.get(T.QuoteReqID) or b""
        sym = msg.get(T.Symbol) or b""
        mid = self.market.price(sym)
        q = _Quote(b"Q%d" % self.market.next_id(), req, sym, _fmt(mid - Decimal("0.5")), _fmt(mid + Decimal("0.5")))
        self.market.quotes[q.quote_id] = q
        return [(T.MT_QUOTE, [], self._quote_body(lay, q))]

    def _quote_body(self, lay: Layout, q: _Quote) -> list[Field]:
        return lay.compose(T.MT_QUOTE, [(T.QuoteReqID, q.quote_req_id), (T.QuoteID, q.quote_id),
                                        (T.Symbol, q.symbol), (T.BidPx, q.bid), (T.OfferPx, q.offer)])

    def _quote_status(self, lay: Layout, msg: Message, now: float) -> list[Reply]:
        g = msg.get
        want_id, want_sym = g(T.QuoteID), g(T.Symbol)
        found = [q for q in self.market.quotes.values()
                 if (want_id is None or q.quote_id == want_id) and (want_sym is None or q.symbol == want_sym)]
        if not lay.has(MT_QUOTE_STATUS_REPORT):  # FIX.4.2: the quotes again
            if not found:
                return [self._business_reject(lay, msg, T.BRR_UNKNOWN_ID, b"no quote matches")]
            return [(T.MT_QUOTE, [], self._quote_body(lay, q)) for q in found]
        ts = format_utc_timestamp(now, lay.timestamp_precision)
        req_id = g(QuoteStatusReqID)
        req: Entry = [(QuoteStatusReqID, req_id)] if req_id else []
        if not found:
            return [(MT_QUOTE_STATUS_REPORT, [], lay.compose(MT_QUOTE_STATUS_REPORT, [
                *req, (T.QuoteID, want_id or b"NONE"), *([(T.Symbol, want_sym)] if want_sym else []),
                (QuoteStatus, b"9"), (T.TransactTime, ts), (T.Text, b"no quote matches")]))]
        return [(MT_QUOTE_STATUS_REPORT, [], lay.compose(MT_QUOTE_STATUS_REPORT, [
            *req, (T.QuoteReqID, q.quote_req_id), (T.QuoteID, q.quote_id), (T.Symbol, q.symbol), (T.BidPx, q.bid),
            (T.OfferPx, q.offer), (QuoteStatus, b"0"), (T.TransactTime, ts)])) for q in found]

    # -- trades -------------------------------------------------------------------------------------
    def _trade_request(self, lay: Layout, msg: Message, now: float) -> list[Reply]:
        g = msg.get
        req_id, req_type = g(TradeRequestID) or b"NONE", g(TradeRequestType) or b"0"
        sym = g(T.Symbol)
        trades = [t for t in self.market.trades if sym is None or t.symbol == sym][-MAX_TRADE_REPORTS:]
        out: list[Reply] = []
        if lay.has(MT_TRADE_REQUEST_ACK):  # from FIX.4.4
            out.append((MT_TRADE_REQUEST_ACK, [], lay.compose(MT_TRADE_REQUEST_ACK, [
                (TradeRequestID, req_id), (TradeRequestType, req_type), (TotNumTradeReports, b"%d" % len(trades)),
                (TradeRequestResult, b"0"), (TradeRequestStatus, b"0" if trades else b"2"),
                *([(T.Symbol, sym)] if sym else []), *([] if trades else [(T.Text, b"no trades match")])])))
        elif not trades:  # FIX.4.3 has no acknowledgement: say so the way every version can
            return [self._business_reject(lay, msg, T.BRR_OTHER, b"no trades match")]
        for i, t in enumerate(trades, 1):
            ts = format_utc_timestamp(t.at, lay.timestamp_precision)
            out.append((MT_TRADE_REPORT, [], lay.compose(MT_TRADE_REPORT, [
                (TradeReportID, b"T%d" % t.n), (TradeRequestID, req_id), (T.ExecType, (b"F", b"2")),
                (TotNumTradeReports, b"%d" % len(trades)), *([(LastRptRequested, b"Y")] if i == len(trades) else []),
                (PreviouslyReported, b"Y"), (T.Symbol, t.symbol), (T.LastQty, t.qty), (T.LastPx, t.px),
                (TradeDate, ts[:8]), (T.TransactTime, ts),
                (NoSides, [[(T.Side, t.side), (T.OrderID, t.order_id)]]),
            ])))
        return out

    # -- market data --------------------------------------------------------------------------------
    def _market_data(self, lay: Layout, msg: Message, now: float) -> list[Reply]:
        g = msg.get
        req_id = g(MDReqID) or b""
        kind = g(SubscriptionRequestType) or b"0"
        if kind == b"2":
            if self.subscriptions.pop(req_id, None) is None:
                return [self._md_reject(lay, req_id, b"0", b"no subscription with this MDReqID(262)")]
            return []  # unsubscribed: FIX has no acknowledgement for it
        if kind == b"1" and req_id in self.subscriptions:
            return [self._md_reject(lay, req_id, b"1", b"duplicate MDReqID(262)")]
        symbols = [v for t, v in msg.fields if t == T.Symbol]
        types = [v for t, v in msg.fields if t == MDEntryType and v in _MD_TYPES]
        if not symbols or not types:
            return [self._md_reject(lay, req_id, b"0", b"no symbol, or no MDEntryType(269) the venue quotes")]
        if kind == b"1":
            self.subscriptions[req_id] = _Subscription(req_id, symbols, types, msg.get(T.ApplVerID),
                                                       now + self.settings.md_interval)
        ts = format_utc_timestamp(now, lay.timestamp_precision)
        return [(MT_SNAPSHOT, [], lay.compose(MT_SNAPSHOT, [
            (MDReqID, req_id), (T.Symbol, s), (LastUpdateTime, ts), (TradeDate, ts[:8]),
            (NoMDEntries, [self._entry(s, t) for t in types])])) for s in symbols]

    def _entry(self, symbol: bytes, md_type: bytes, action: bytes | None = None) -> Entry:
        """One NoMDEntries(268) entry: the bid half a point under the market, the offer above, the
        last trade at it, all moving a cent per tick."""
        m = self.market
        px = m.price(symbol) + Decimal(m.ticks % 7 - 3) / 100 + {b"0": Decimal("-0.5"), b"1": Decimal("0.5")}.get(
            md_type, Decimal(0))
        head: Entry = [(MDUpdateAction, action)] if action else []
        return [*head, (MDEntryType, md_type), (T.Symbol, symbol), (MDEntryPx, _fmt(px)), (MDEntrySize, b"100")]

    def _incremental(self, lay: Layout, sub: _Subscription, now: float) -> list[Field]:
        self.market.ticks += 1
        ts = format_utc_timestamp(now, lay.timestamp_precision)
        return lay.compose(MT_INCREMENTAL, [
            (MDReqID, sub.req_id), (TradeDate, ts[:8]),
            (NoMDEntries, [self._entry(s, t, b"1") for s in sub.symbols for t in sub.types])])

    def _md_reject(self, lay: Layout, req_id: bytes, reason: bytes, text: bytes) -> Reply:
        return (MT_MD_REJECT, [], lay.compose(MT_MD_REJECT, [
            (MDReqID, req_id or b"NONE"), (MDReqRejReason, reason), (T.Text, text)]))

    # -- users ---------------------------------------------------------------------------------------
    def _user(self, lay: Layout, msg: Message, now: float) -> list[Reply]:
        g = msg.get
        user = g(T.Username) or b""
        kind = g(UserRequestType) or b"4"
        status = _USER_STATUS.get(kind) or self.market.users.get(user, b"2")
        if kind in _USER_STATUS:
            self.market.users[user] = b"1" if status == b"5" else status
        text = {b"1": b"logged in", b"2": b"not logged in", b"5": b"password changed"}.get(status, b"")
        return [(MT_USER_RESPONSE, [], lay.compose(MT_USER_RESPONSE, [
            (UserRequestID, g(UserRequestID) or b"NONE"), (T.Username, user or b"NONE"), (UserStatus, status),
            (UserStatusText, text)]))]

    # -- refusals -----------------------------------------------------------------------------------
    def _business_reject(self, lay: Layout, msg: Message, reason: int, text: bytes) -> Reply:
        """BusinessMessageReject(j); Reject(3) before FIX.4.2 (as QuickFIX's application answers)."""
        seq = msg.get(T.MsgSeqNum)
        if not lay.has(T.MT_BUSINESS_MESSAGE_REJECT):
            return self._session_reject(msg, text.decode("latin-1"))
        return (T.MT_BUSINESS_MESSAGE_REJECT, [], lay.compose(T.MT_BUSINESS_MESSAGE_REJECT, [
            *([(T.RefSeqNum, seq)] if seq else []), (T.Text, text), (T.RefMsgType, msg.msg_type),
            (T.BusinessRejectReason, b"%d" % reason)]))

    def _unsupported(self, lay: Layout, msg: Message) -> Reply:
        return self._business_reject(lay, msg, T.BRR_UNSUPPORTED_MESSAGE_TYPE, b"Unsupported Message Type")

    def _session_reject(self, msg: Message, text: str) -> Reply:
        """A session-level Reject(3) of an application message, sent by the simulator like an application
        reply (numbered and stored): RefSeqNum(45), RefMsgType(372) from FIX.4.2, Text(58)."""
        body: list[Field] = [(T.RefSeqNum, msg.get(T.MsgSeqNum) or b"0")]
        if self.begin_string not in PRE_FIX42:
            body.append((T.RefMsgType, msg.msg_type))
        body.append((T.Text, text.encode("latin-1", "replace")))
        return (T.MT_REJECT, [], body)


_HANDLERS: dict[bytes, Callable[[Venue, Layout, Message, float], list[Reply]]] = {
    T.MT_NEW_ORDER_SINGLE: Venue._new_order,
    T.MT_ORDER_CANCEL_REQUEST: Venue._cancel,
    T.MT_ORDER_CANCEL_REPLACE_REQUEST: Venue._replace,
    T.MT_QUOTE_REQUEST: Venue._quote,
    MT_QUOTE_STATUS_REQUEST: Venue._quote_status,
    MT_TRADE_REQUEST: Venue._trade_request,
    MT_MARKET_DATA_REQUEST: Venue._market_data,
    MT_USER_REQUEST: Venue._user,
}
