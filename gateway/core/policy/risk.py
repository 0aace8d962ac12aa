"""Pre-trade risk checks: state per identity, time passed in, no I/O.

Checked for every new order (NewOrderSingle(D), OrderCancelReplaceRequest(G))
after policy allowed it; the message-rate throttle applies to every
application message.  A refusal names the check (``risk.<name>``) and why.

* ``max_msgs_per_sec`` / ``burst`` — token bucket;
* ``restricted_symbols``;
* ``max_order_qty``;
* ``max_notional`` — OrderQty(38) × Price(44), or × the reference price for
  orders without a price; no price at all fails closed;
* ``price_collar_pct`` — |Price(44) − reference| / reference, the reference
  being the configured price or the last LastPx(31) seen from the exchange
  (with neither, the collar cannot apply: configure a reference for
  instruments that must be collared from their first order);
* duplicate ClOrdID(11) — refused unless PossResend(97)=Y (a resend of the
  same order, which the exchange deduplicates);
* ``max_open_orders`` — orders not yet filled, cancelled, rejected or done.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from gateway.core.fix import tags as T
from gateway.core.fix.codec import Message
from gateway.core.policy.engine import _num

NEW_ORDER_TYPES = frozenset({T.MT_NEW_ORDER_SINGLE, T.MT_ORDER_CANCEL_REPLACE_REQUEST})
TERMINAL_STATUS = frozenset({b"2", b"3", b"4", b"8", b"C"})  # filled, done, canceled, rejected, expired


@dataclass(frozen=True, slots=True)
class Limits:
    max_msgs_per_sec: float | None = None
    burst: float | None = None
    restricted_symbols: frozenset[bytes] = frozenset()
    max_order_qty: float | None = None
    max_notional: float | None = None
    price_collar_pct: float | None = None
    max_open_orders: int | None = None
    duplicate_clordid: bool = True

    def merged(self, other: Limits | None) -> Limits:
        """``other`` overrides what it sets (identity limits over the defaults)."""
        if other is None:
            return self
        changes = {f: getattr(other, f) for f in self.__dataclass_fields__
                   if getattr(other, f) not in (None, frozenset()) and f != "duplicate_clordid"}
        out = replace(self, **changes)
        return replace(out, duplicate_clordid=self.duplicate_clordid and other.duplicate_clordid)


@dataclass
class RiskBook:
    """Risk state of one identity."""

    limits: Limits
    tokens: float = -1.0
    last: float = 0.0
    seen: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    open_orders: set[bytes] = field(default_factory=set)
    max_seen: int = 100_000

    def check(self, msg: Message, now: float, account_limits: Limits | None,
              reference: Mapping[bytes, float]) -> tuple[str, str] | None:
        """(check name, reason) when the message must be refused."""
        lim = self.limits
        if lim.max_msgs_per_sec:
            rate = lim.max_msgs_per_sec
            cap = lim.burst or rate
            if self.tokens < 0:
                self.tokens, self.last = cap, now
            self.tokens = min(cap, self.tokens + (now - self.last) * rate)
            self.last = now
            if self.tokens < 1:
                return "risk.throttle", f"message rate above {rate:g}/s"
            self.tokens -= 1
        if msg.msg_type not in NEW_ORDER_TYPES:
            return None
        checks = [lim] + ([account_limits] if account_limits is not None else [])
        sym = msg.get(T.Symbol) or b""
        qty = _num(msg.get(T.OrderQty))
        price = _num(msg.get(T.Price))
        ref = reference.get(sym)
        for lm in checks:
            if sym in lm.restricted_symbols:
                return "risk.restricted_symbol", f"Symbol(55) {sym.decode('latin-1')} is restricted"
            if lm.max_order_qty is not None and (qty is None or qty > lm.max_order_qty):
                return "risk.max_order_qty", f"OrderQty(38) {_fmt(qty)} above {lm.max_order_qty:g}"
            if lm.max_notional is not None:
                px = price if price is not None else ref
                if px is None or qty is None:
                    return "risk.max_notional", "no price to check the notional against (fail closed)"
                if qty * px > lm.max_notional:
                    return "risk.max_notional", f"notional {qty * px:g} above {lm.max_notional:g}"
            if lm.price_collar_pct is not None and price is not None and ref is not None:
                if abs(price - ref) / ref * 100 > lm.price_collar_pct:
                    return "risk.price_collar", (f"Price(44) {price:g} is more than {lm.price_collar_pct:g}% "
                                                 f"from the reference {ref:g}")
        cl = msg.get(T.ClOrdID) or b""
        if lim.duplicate_clordid and cl in self.seen and msg.get(T.PossResend) != b"Y":
            return "risk.duplicate_clordid", f"ClOrdID(11) {cl.decode('latin-1')} was already used"
        if lim.max_open_orders is not None and cl not in self.open_orders \
                and len(self.open_orders) >= lim.max_open_orders:
            return "risk.max_open_orders", f"{len(self.open_orders)} open orders (max {lim.max_open_orders})"
        return None

    def accepted(self, msg: Message) -> None:
        """The order went to the exchange: remember its ClOrdID and count it open."""
        if msg.msg_type not in NEW_ORDER_TYPES:
            return
        cl = msg.get(T.ClOrdID) or b""
        self.seen[cl] = None
        if len(self.seen) > self.max_seen:
            self.seen.popitem(last=False)
        self.open_orders.add(cl)
        orig = msg.get(T.OrigClOrdID)
        if msg.msg_type == T.MT_ORDER_CANCEL_REPLACE_REQUEST and orig:
            self.open_orders.discard(orig)

    def on_execution(self, msg: Message) -> None:
        """An ExecutionReport from the exchange: close finished orders."""
        if msg.get(T.OrdStatus) in TERMINAL_STATUS:
            for tag in (T.ClOrdID, T.OrigClOrdID):
                v = msg.get(tag)
                if v:
                    self.open_orders.discard(v)


def _fmt(v: float | None) -> str:
    return "(none)" if v is None else f"{v:g}"
