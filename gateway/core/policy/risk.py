"""Pre-trade risk checks: state per identity, time passed in, no I/O.

The message-rate throttle applies to every application message, cancels in
a bucket of their own (below).  Every ORDER-kind message (``actions.py``: NewOrderSingle(D), NewOrderList(E),
NewOrderMultileg(AB), QuoteRequest(R), Quote(S), MassQuote(i) ... and a
policy's own declarations; the caller passes the kind) gets the order checks
below, after policy allowed it.  A refusal names the check (``risk.<name>``)
and why.  The checks read every occurrence of their fields, in every
repeating-group entry (``engine.scan``), and every quantity and price must
be a positive FIX decimal (``gateway/core/numbers.py``) — one that is not
refuses, naming the field and value.

* ``max_msgs_per_sec`` / ``burst`` — token bucket for every message but
  cancels.  CANCEL-kind messages (``actions.py``: OrderCancelRequest(F),
  OrderMassCancelRequest(q) ... and a policy's own) reduce risk, so they
  never draw on the order budget and orders never use up theirs: cancels
  have a bucket of the same rate whose depth is ``burst`` *plus the orders
  open now* — a client can always pull every open order at once, and a
  flood of cancels is still bounded (``risk.cancel_throttle``);
* duplicate ClOrdID(11) — every ClOrdID of the message (a NewOrderList(E)
  carries one per order) must be new to this book and unique in the message:
  ``risk.duplicate_clordid``; with PossResend(97)=Y the check is
  ``risk.possresend_duplicate`` — the venue would fill the copy again, and the
  gateway consumes such a message without an answer, as FIX session test
  case 19a says of a PossResend the application has already seen
  (``duplicate_clordid = false`` turns both off, for venues that deduplicate);
* ``restricted_symbols`` — any instrument the message names, by any name
  (``instruments.py``: normalised, aliases, a SecurityID under any source);
* ``max_order_qty`` — every quantity;
* ``max_notional`` — largest quantity x largest price over all entries (an
  upper bound, conservative); where the message carries fewer prices than
  quantities (unpriced entries: market orders, an RFQ), the reference price
  of every instrument it names joins the prices, and an instrument without
  one fails closed;
* ``price_collar_pct`` — every price but StopPx(99) within the collar of the
  reference of an instrument the message names (the configured price or the
  last LastPx(31) seen from the exchange; without any, the collar cannot
  apply: configure a reference for instruments that must be collared from
  their first order);
* ``max_open_orders`` — orders not yet filled, cancelled, rejected or done.

A QuoteRequest(R) commits to nothing: its size and price are optional in
FIX, and the order or QuoteResponse(AJ) that trades on the answer is checked
itself.  So an RFQ without a size or price is not refused for the lack of
one; every size and price it does carry is checked as above.  Every other
order without a size, or without a price or reference for its notional, is
refused (fail closed).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from gateway.core.fix import tags as T
from gateway.core.fix.codec import Message
from gateway.core.policy.actions import CANCEL, ORDER, kind_of
from gateway.core.policy.engine import Facts, Mention, describe, field_text, scan
from gateway.core.policy.instruments import DEFAULT_INSTRUMENTS, SEP, Instruments

#: single orders, answered with an ExecutionReport(8) when refused (``answers.py``); the scope of the
#: order checks is the ORDER kind (``actions.py``), not this set
NEW_ORDER_TYPES = frozenset({T.MT_NEW_ORDER_SINGLE, T.MT_ORDER_CANCEL_REPLACE_REQUEST})
TERMINAL_STATUS = frozenset({b"2", b"3", b"4", b"8", b"C"})  # filled, done, canceled, rejected, expired
#: ORDER-kind MsgTypes that must carry a ClOrdID(11); one without is tracked under the empty ClOrdID
CLORDID_TYPES = frozenset({b"D", b"G", b"E", b"AB", b"AC", b"s", b"t", b"DJ"})
#: ORDER-kind MsgTypes that may carry more than one ClOrdID(11) / OrigClOrdID(41) (lists, crosses, mass orders)
MULTI_CLORDID_TYPES = frozenset({b"E", b"s", b"t", b"DJ"})
#: size and price optional: a request that commits to nothing (see the module docstring)
UNCOMMITTED_TYPES = frozenset({T.MT_QUOTE_REQUEST})
_NO_QTY = "no quantity (OrderQty(38), CashOrderQty(152), ...) to check (fail closed)"


@dataclass(frozen=True, slots=True)
class Limits:
    max_msgs_per_sec: float | None = None
    burst: float | None = None
    #: instrument keys (``Instruments.entry_keys(..., any_source=True)``; plain symbols work as they are)
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
    """Risk state of one identity.

    ``seen`` and ``open_orders`` are what a restart must not forget (a
    duplicate ClOrdID let through, open orders counted from zero): the
    gateway rebuilds them at start-up from the audit stream with ``accept``
    and ``close`` (``gateway/app/risk_state.py``).  The token buckets are
    not rebuilt: they are full again within ``burst / rate`` seconds anyway."""

    limits: Limits
    tokens: float = -1.0
    last: float = 0.0
    cancel_tokens: float = -1.0  # cancels: a bucket of their own (see the module docstring)
    cancel_last: float = 0.0
    seen: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    open_orders: set[bytes] = field(default_factory=set)
    max_seen: int = 100_000

    def check(self, msg: Message, now: float, account_limits: Limits | Iterable[Limits] | None,
              reference: Mapping[bytes, float], kind: str | None = None,
              instruments: Instruments = DEFAULT_INSTRUMENTS, facts: Facts | None = None) -> tuple[str, str] | None:
        """(check name, reason) when the message must be refused.

        ``account_limits``: the limits of the accounts the message names (one,
        several, or None); ``kind``: the MsgType's kind under the policy
        (``Policy.kind_of``; default the FIX table's); ``instruments``: the
        policy's (``Policy.instruments``); ``facts``: this message's scan under
        those instruments when the caller has it (``Decision.facts``), else
        the message is scanned here.
        """
        lim = self.limits
        if kind is None:
            kind = kind_of(msg.msg_type)
        if lim.max_msgs_per_sec:
            rate = lim.max_msgs_per_sec
            cap = lim.burst or rate
            if kind == CANCEL:
                return self._cancel_throttle(rate, cap, now)
            if self.tokens < 0:
                self.tokens, self.last = cap, now
            self.tokens = min(cap, self.tokens + (now - self.last) * rate)
            self.last = now
            if self.tokens < 1:
                return "risk.throttle", f"message rate above {rate:g}/s"
            self.tokens -= 1
        if kind != ORDER:
            return None
        f = facts if facts is not None else scan(msg, instruments)
        ids = f.clordids or ([b""] if msg.msg_type in CLORDID_TYPES else [])
        if lim.duplicate_clordid and ids:
            hit = self._duplicate(ids, msg)
            if hit is not None:
                return hit
        if account_limits is None:
            checks: Iterable[Limits] = (lim,)
        elif isinstance(account_limits, Limits):
            checks = (lim, account_limits)
        else:
            checks = (lim, *account_limits)
        uncommitted = msg.msg_type in UNCOMMITTED_TYPES
        for lm in checks:
            hit = _order_checks(lm, f, uncommitted, reference, instruments)
            if hit is not None:
                return hit
        if lim.max_open_orders is not None and ids:
            new = (ids[0] not in self.open_orders) if len(ids) == 1 else len(set(ids) - self.open_orders)
            if new and len(self.open_orders) + new > lim.max_open_orders:
                return "risk.max_open_orders", f"{len(self.open_orders)} open orders (max {lim.max_open_orders})"
        return None

    def _cancel_throttle(self, rate: float, burst: float, now: float) -> tuple[str, str] | None:
        """Cancels' own bucket: ``burst`` deep plus one per open order, refilled at ``rate``."""
        cap = burst + len(self.open_orders)
        if self.cancel_tokens < 0:
            self.cancel_tokens, self.cancel_last = cap, now
        self.cancel_tokens = min(cap, self.cancel_tokens + (now - self.cancel_last) * rate)
        self.cancel_last = now
        if self.cancel_tokens < 1:
            return "risk.cancel_throttle", (f"cancel rate above {rate:g}/s (burst {burst:g} plus "
                                            f"{len(self.open_orders)} open orders)")
        self.cancel_tokens -= 1
        return None

    def _duplicate(self, ids: list[bytes], msg: Message) -> tuple[str, str] | None:
        seen = self.seen
        again = (ids if ids[0] in seen else ()) if len(ids) == 1 else [c for c in ids if c in seen]
        if again:
            cl = again[0].decode("latin-1")
            if msg.get(T.PossResend) == b"Y":
                return "risk.possresend_duplicate", f"PossResend(97)=Y and ClOrdID(11) {cl} was already accepted"
            return "risk.duplicate_clordid", f"ClOrdID(11) {cl} was already used"
        if len(ids) > 1 and len(set(ids)) < len(ids):
            twice = next(c for i, c in enumerate(ids) if c in ids[:i]).decode("latin-1")
            return "risk.duplicate_clordid", f"ClOrdID(11) {twice} appears more than once in the message"
        return None

    def accepted(self, msg: Message, kind: str | None = None) -> None:
        """The message went to the exchange: remember its ClOrdIDs and count them open."""
        if (kind if kind is not None else kind_of(msg.msg_type)) != ORDER:
            return
        ids: list[bytes] = []
        replaced: list[bytes] = []
        for tag, value in msg.fields:
            if tag == T.ClOrdID:
                ids.append(value)
            elif tag == T.OrigClOrdID:
                replaced.append(value)
        if not ids and msg.msg_type in CLORDID_TYPES:
            ids.append(b"")
        self.accept(ids, replaced)

    def accept(self, ids: Iterable[bytes], replaced: Iterable[bytes] = ()) -> None:
        """Orders at the exchange: ``ids`` seen and open; ``replaced`` (OrigClOrdID(41) of a replace:
        G, AC, t) no longer open.  ``accepted`` for a live message, the start-up rebuild for a recorded one."""
        seen = self.seen
        for cl in ids:
            seen[cl] = None
            if len(seen) > self.max_seen:
                seen.popitem(last=False)
            self.open_orders.add(cl)
        for orig in replaced:
            self.open_orders.discard(orig)

    def on_execution(self, msg: Message) -> None:
        """An ExecutionReport from the exchange: close finished orders."""
        if msg.get(T.OrdStatus) in TERMINAL_STATUS:
            self.close((msg.get(T.ClOrdID), msg.get(T.OrigClOrdID)))

    def close(self, ids: Iterable[bytes | None]) -> None:
        """Finished orders (a terminal OrdStatus(39) for their ClOrdID(11) or OrigClOrdID(41))."""
        for v in ids:
            if v:
                self.open_orders.discard(v)



class References(Mapping[bytes, float]):
    """Reference prices: the configured ones win, else the last LastPx(31) seen (a live view).

    Two dict lookups per ``get``; ``collections.ChainMap`` answers ``get`` with a
    generator over its maps, which showed up at 7% of the gateway's time.
    """

    __slots__ = ("configured", "live")

    def __init__(self, configured: Mapping[bytes, float], live: Mapping[bytes, float]) -> None:
        self.configured, self.live = configured, live

    def get(self, key: bytes, default: float | None = None) -> float | None:  # type: ignore[override]
        v = self.configured.get(key)
        return v if v is not None else self.live.get(key, default)

    def __getitem__(self, key: bytes) -> float:
        v = self.get(key)
        if v is None:
            raise KeyError(key)
        return v

    def __contains__(self, key: object) -> bool:
        return key in self.configured or key in self.live

    def __iter__(self) -> Iterator[bytes]:
        yield from self.configured
        yield from (k for k in self.live if k not in self.configured)

    def __len__(self) -> int:
        return len(self.configured) + sum(1 for k in self.live if k not in self.configured)

def _order_checks(lm: Limits, f: Facts, uncommitted: bool, reference: Mapping[bytes, float],
                  instruments: Instruments) -> tuple[str, str] | None:
    if lm.restricted_symbols:
        restricted = lm.restricted_symbols
        for m in f.instruments:
            if m[1] in restricted or m[0] in restricted:
                return "risk.restricted_symbol", f"{describe(m)} is restricted"
    if lm.max_order_qty is not None:
        if f.qty_bad is not None:
            return "risk.max_order_qty", f.qty_bad
        if not f.qty_n:
            if not uncommitted:
                return "risk.max_order_qty", _NO_QTY
        elif f.qty_max > lm.max_order_qty:
            return "risk.max_order_qty", f"{field_text(*f.qty_top)} above {lm.max_order_qty:g}"
    if lm.max_notional is not None:
        hit = _notional(lm.max_notional, f, uncommitted, reference, instruments)
        if hit is not None:
            return "risk.max_notional", hit
    if lm.price_collar_pct is not None:
        if f.px_bad is not None:
            return "risk.price_collar", f.px_bad
        if f.collar:
            refs = [r for m in f.instruments if (r := _reference(m, reference, instruments)) is not None]
            pct = lm.price_collar_pct
            for tag, value, px in f.collar if refs else ():
                for r in refs:  # within the collar of some instrument it names (groups are not paired up)
                    if abs(px - r) <= r * pct / 100:
                        break
                else:
                    near = min(refs, key=lambda r: abs(px - r))
                    return "risk.price_collar", (f"{field_text(tag, value)} is more than {pct:g}% "
                                                 f"from the reference {near:g}")
    return None


def _notional(bound: float, f: Facts, uncommitted: bool, reference: Mapping[bytes, float],
              instruments: Instruments) -> str | None:
    """Why the notional is over ``bound`` or cannot be known; None when within."""
    if f.qty_bad is not None:
        return f.qty_bad
    if f.px_bad is not None:
        return f.px_bad
    if not f.qty_n:
        return None if uncommitted else _NO_QTY
    px = f.px_max
    if f.px_n < f.qty_n:  # entries without a price: their instruments' references bound them
        refs = [_reference(m, reference, instruments) for m in f.instruments]
        if refs and None not in refs:
            px = max(px, *(r for r in refs if r is not None))
        elif uncommitted:
            if not f.px_n:
                return None  # an RFQ without prices or references: nothing to bound (see the docstring)
        else:
            why = next((f"{describe(m)} has no reference price" for m, r in zip(f.instruments, refs, strict=True)
                        if r is None), "no instrument named to find a reference price for")
            return f"no price to check the notional against: {why} (fail closed)"
    if f.qty_max * px > bound:
        return f"notional up to {f.qty_max * px:g} ({field_text(*f.qty_top)} x {px:g}) above {bound:g}"
    return None


def _reference(m: Mention, reference: Mapping[bytes, float], instruments: Instruments) -> float | None:
    """The reference price of one instrument name: by its symbol (an identifier's alias), then as sent."""
    key = instruments.symbol_of(m[0])
    ref = reference.get(key)
    if ref is None:
        if SEP in key:  # an identifier without alias, as the loader writes it: SOURCE:ID
            ref = reference.get(key.replace(SEP, b":"))
        elif m[3] != key:
            ref = reference.get(m[3])
    return ref if ref is not None and ref > 0 else None
