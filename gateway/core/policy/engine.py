"""Policy evaluation: a pure function of (context, message) -> decision.

Semantics:

* default deny — nothing is allowed unless an enforced rule allows it;
* deny overrides allow — one matching enforced deny decides;
* an allow rule matches only when its required *conditions* hold: ``mfa``
  (the session passed MFA), ``ip_allowlist`` (peer address in the rule's
  list), ``jit`` (an active just-in-time grant); the other controls
  (``session_logging``, ``read_only``, ``full_capture``) are obligations the
  decision carries;
* shadow rules are evaluated and reported but never change the outcome;
* the global shadow switch records what the policy would decide and lets
  the message through (logging-only roll-out);
* rules are compiled at load and indexed by (direction, MsgType, role), so
  the cost of a decision does not grow with the number of rules.

Field predicates (``symbols``, ``accounts``, ``max_qty``, ``max_notional``)
see every occurrence of their fields, in the body and in every
repeating-group entry (one pass over ``msg.fields``, :func:`scan`, done once
per decision and only when a rule needs it).  Each is judged in the
direction that fails closed:

* an **allow** rule needs it for every occurrence: every instrument the
  message names in ``symbols`` (see ``instruments.py``), every Account(1) and
  AllocAccount(79) in ``accounts``, every quantity at most ``max_qty``; and
  ``max_notional`` bounds largest quantity x largest price over all entries
  — an upper bound of any entry's notional, so a list of small orders may
  be refused where each alone would pass (conservative: the groups are not
  paired up without a dictionary);
* a **deny** rule needs it for any one occurrence (a listed instrument
  anywhere; some quantity at most ``max_qty``; smallest quantity x smallest
  price at most ``max_notional``);
* a field that is missing, or a quantity or price that is not a positive
  FIX decimal (``gateway/core/numbers.py``), keeps an allow rule from
  matching and makes a deny rule match; the default-deny reason then names
  the field and value (``OrderQty(38) -5 is not a positive number``).

Quantities: OrderQty(38), CashOrderQty(152), OrderQty2(192), LegQty(687),
Quantity(53), BidSize(134), OfferSize(135).  Prices: Price(44), StopPx(99),
Price2(640), LegPrice(566), BidPx(132), OfferPx(133).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple
from zoneinfo import ZoneInfo

from gateway.core.fix.codec import Message
from gateway.core.numbers import positive
from gateway.core.policy.actions import OTHER, merged
from gateway.core.policy.instruments import DEFAULT_INSTRUMENTS, SEP, Instruments

POSTURE_LEVELS = ("highly-compliant", "compliant", "non-compliant", "unknown")
CONDITIONS = frozenset({"mfa", "ip_allowlist", "jit"})
OBLIGATIONS = frozenset({"session_logging", "read_only", "full_capture"})
CONTROLS = CONDITIONS | OBLIGATIONS
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: the fields a predicate or risk check reads, by FIX name
FIELD_NAMES: dict[int, str] = {
    55: "Symbol", 311: "UnderlyingSymbol", 600: "LegSymbol",
    48: "SecurityID", 22: "SecurityIDSource", 309: "UnderlyingSecurityID", 305: "UnderlyingSecurityIDSource",
    602: "LegSecurityID", 603: "LegSecurityIDSource",
    38: "OrderQty", 152: "CashOrderQty", 192: "OrderQty2", 687: "LegQty", 53: "Quantity", 134: "BidSize",
    135: "OfferSize",
    44: "Price", 99: "StopPx", 640: "Price2", 566: "LegPrice", 132: "BidPx", 133: "OfferPx",
    1: "Account", 79: "AllocAccount", 11: "ClOrdID",
}
SYMBOL_TAGS = (55, 311, 600)
SECURITY_ID_TAGS = ((48, 22), (309, 305), (602, 603))  # (identifier, its source)
QTY_TAGS = (38, 152, 192, 687, 53, 134, 135)
PRICE_TAGS = (44, 99, 640, 566, 132, 133)
#: prices a price collar compares with the reference (StopPx(99) is a trigger, not a price to trade at)
COLLAR_TAGS = (44, 640, 566, 132, 133)
ACCOUNT_TAGS = (1, 79)
_SYM, _QTY, _PX, _ACCT, _CL, _ID, _SRC = range(7)
_ROLE: dict[int, int] = {
    **{t: _SYM for t in SYMBOL_TAGS}, **{t: _QTY for t in QTY_TAGS}, **{t: _PX for t in PRICE_TAGS},
    **{t: _ACCT for t in ACCOUNT_TAGS}, 11: _CL,
    **{i: _ID for i, _ in SECURITY_ID_TAGS}, **{s: _SRC for _, s in SECURITY_ID_TAGS},
}
_FAMILY = {t: n for n, pair in enumerate(SECURITY_ID_TAGS) for t in pair}
_COLLAR = frozenset(COLLAR_TAGS)

#: one name an instrument is given: (allow-list key, deny-list key, tag, value as sent, its source as sent or b"")
Mention = tuple[bytes, bytes, int, bytes, bytes]


def field_text(tag: int, value: bytes) -> str:
    """``OrderQty(38) 100``: a field as error texts name it."""
    return f"{FIELD_NAMES.get(tag, 'tag')}({tag}) {value.decode('latin-1')}"


def describe(m: Mention) -> str:
    """One instrument name as the message gave it, for reasons."""
    _, _, tag, value, source = m
    if tag in SYMBOL_TAGS:
        return field_text(tag, value)
    src_tag = SECURITY_ID_TAGS[_FAMILY[tag]][1]
    src = source.decode("latin-1") if source else "missing"
    return f"{field_text(tag, value)} ({FIELD_NAMES[src_tag]}({src_tag})={src})"


#: Facts' fields, for __eq__ (a mypyc-compiled class has no ``__slots__`` attribute to read)
_FACTS_FIELDS = ("instruments", "accounts", "clordids", "qty_n", "qty_max", "qty_min", "qty_top", "qty_bad",
                 "px_n", "px_max", "px_min", "px_top", "px_bad", "collar")


class Facts:
    """Every occurrence of the fields predicates and risk read, from one pass over a message.

    A plain slotted class (one per decision that needs fields; frozen
    dataclasses construct several times slower).  Treat it as immutable.
    """

    __slots__ = _FACTS_FIELDS

    instruments: list[Mention]
    accounts: list[tuple[int, bytes]]
    clordids: list[bytes]
    qty_n: int  # quantities seen, valid or not
    qty_max: float  # of the valid ones (all > 0; 0.0 when none)
    qty_min: float
    qty_top: tuple[int, bytes]  # the field that holds the largest
    qty_bad: str | None  # why the first bad one is bad
    px_n: int
    px_max: float
    px_min: float
    px_top: tuple[int, bytes]
    px_bad: str | None
    collar: list[tuple[int, bytes, float]]  # (tag, value, price) of the prices a collar compares

    def __eq__(self, other: object) -> bool:  # two scans of the same message are equal (decisions compare)
        if not isinstance(other, Facts):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in _FACTS_FIELDS)

    __hash__ = None  # type: ignore[assignment]


_NONE: tuple[int, bytes] = (0, b"")


def scan(msg: Message, instruments: Instruments = DEFAULT_INSTRUMENTS) -> Facts:
    """Every instrument, account, ClOrdID(11), quantity and price the message carries.

    One pass over ``msg.fields`` (the fields of interest picked in a
    comprehension, then sorted by role, numbers read inline: this runs for
    every decision that needs fields).  Names come in wire order, symbols
    first, then SecurityIDs, each paired with the nearest source of its
    family (the next one, or a waiting one before it); an identifier that
    pairs with none keeps an empty source, which no allow-list contains.
    """
    names: list[Mention] = []
    accounts: list[tuple[int, bytes]] = []
    clordids: list[bytes] = []
    collar: list[tuple[int, bytes, float]] = []
    ids: list[tuple[int, int, bytes]] | None = None
    qn = pn = 0
    qmax = qmin = pmax = pmin = 0.0
    qtop = ptop = _NONE
    qbad = pbad = None
    for tag, value in [f for f in msg.fields if f[0] in _ROLE]:
        role = _ROLE[tag]
        if role == _QTY or role == _PX:
            number = positive(value)
            if role == _QTY:
                qn += 1
                if number is None:
                    qbad = qbad or f"{field_text(tag, value)} is not a positive number"
                    continue
                if number > qmax:
                    qmax, qtop = number, (tag, value)
                if number < qmin or not qmin:
                    qmin = number
            else:
                pn += 1
                if number is None:
                    pbad = pbad or f"{field_text(tag, value)} is not a positive number"
                    continue
                if number > pmax:
                    pmax, ptop = number, (tag, value)
                if number < pmin or not pmin:
                    pmin = number
                if tag in _COLLAR:
                    collar.append((tag, value, number))
        elif role == _SYM:
            key = instruments.norm(value)
            names.append((key, key, tag, value, b""))
        elif role == _CL:
            clordids.append(value)
        elif role == _ACCT:
            accounts.append((tag, value))
        elif ids is None:
            ids = [(role, tag, value)]
        else:
            ids.append((role, tag, value))
    if ids is not None:
        _security_ids(ids, names, instruments)
    f = Facts()
    f.instruments, f.accounts, f.clordids, f.collar = names, accounts, clordids, collar
    f.qty_n, f.qty_max, f.qty_min, f.qty_top, f.qty_bad = qn, qmax, qmin, qtop, qbad
    f.px_n, f.px_max, f.px_min, f.px_top, f.px_bad = pn, pmax, pmin, ptop, pbad
    return f


def _security_ids(found: list[tuple[int, int, bytes]], names: list[Mention], instruments: Instruments) -> None:
    """Pair each SecurityID with its family's source (the next one, or the one just before) and name it."""
    waiting: dict[int, tuple[int, bytes]] = {}  # family -> identifier waiting for its source
    sources: dict[int, bytes] = {}  # family -> source waiting for its identifier
    for role, tag, value in found:
        fam = _FAMILY[tag]
        if role == _ID:
            if fam in waiting:  # the previous one of this family found no source
                _security_id(names, instruments, *waiting.pop(fam), b"")
            if fam in sources:
                _security_id(names, instruments, tag, value, sources.pop(fam))
            else:
                waiting[fam] = (tag, value)
        elif fam in waiting:
            _security_id(names, instruments, *waiting.pop(fam), value)
        else:
            sources[fam] = value
    for tag, value in waiting.values():
        _security_id(names, instruments, tag, value, b"")


def _security_id(names: list[Mention], instruments: Instruments, tag: int, value: bytes, source: bytes) -> None:
    ident = instruments.norm(value)
    src = instruments.norm(source)
    names.append(((src + SEP + ident) if src else SEP + ident, SEP + ident, tag, value, source))


class Context(NamedTuple):
    """Everything about the sender a decision may depend on (time is an argument).

    NamedTuple: immutable and cheap to build once per message."""

    identity: str
    roles: frozenset[str]
    zone: str | None
    posture: str
    mfa: bool
    peer: Address | None
    jit: bool
    now: float
    direction: str = "outbound"  # outbound: client -> exchange; inbound: exchange -> client


@dataclass(frozen=True, slots=True)
class TimeWindow:
    tz: ZoneInfo
    days: frozenset[int]  # 0 = Monday
    start: int  # minute of day, inclusive
    end: int  # minute of day, exclusive

    def contains(self, now: float) -> bool:
        local = dt.datetime.fromtimestamp(now, self.tz)
        minute = local.hour * 60 + local.minute
        if local.weekday() not in self.days:
            return False
        if self.start <= self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end  # window across midnight


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    decision: str  # allow | deny
    shadow: bool
    roles: frozenset[str]  # empty: any role
    msg_types: frozenset[bytes]
    direction: str
    zones: frozenset[str] | None
    posture: frozenset[str] | None
    window: TimeWindow | None
    symbols: frozenset[bytes] | None
    accounts: frozenset[bytes] | None
    max_qty: float | None
    max_notional: float | None
    controls: frozenset[str]
    ip_allowlist: tuple[Network, ...]
    reason: str = ""
    #: routing/attribution header fields the message must carry with one of these values (tag, values)
    routing: tuple[tuple[int, frozenset[bytes]], ...] = ()
    #: does any predicate read message fields? (set from the above; decide() scans a message only then)
    reads_fields: bool = field(init=False, default=False, repr=False, compare=False)
    #: the conditions among the controls (mfa, ip_allowlist, jit): most rules have none to check
    conditions: frozenset[str] = field(init=False, default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", self.controls & CONDITIONS)
        object.__setattr__(self, "reads_fields", not (self.symbols is None and self.accounts is None
                                                      and self.max_qty is None and self.max_notional is None))

    def matches(self, ctx: Context, msg: Message, facts: Facts | None = None) -> str | None:
        """None when the rule applies; otherwise why not (for explanations).

        ``facts``: the message's :func:`scan` under the policy's instruments
        (without: scanned here with the default normalisation).
        """
        why = self.context_mismatch(ctx)
        if why is None and self.routing:
            why = self.routing_mismatch(msg)
        if why is not None or not self.reads_fields:
            return why
        return self.field_mismatch(facts if facts is not None else scan(msg))

    def routing_mismatch(self, msg: Message) -> str | None:
        """OnBehalfOf*/DeliverTo*/... values: every occurrence listed for an allow, any one for a deny."""
        allow = self.decision == "allow"
        for tag, values in self.routing:
            found = [v for t, v in msg.fields if t == tag]
            if allow:
                if not found:
                    return f"no {tag} field (the rule names its values)"
                bad = [v for v in found if v not in values]
                if bad:
                    return f"{field_text(tag, bad[0])} not in the rule's list"
            elif not any(v in values for v in found):
                return f"no {tag} value in the rule's list"
        return None

    def context_mismatch(self, ctx: Context) -> str | None:
        if self.zones is not None and ctx.zone not in self.zones:
            return f"zone {ctx.zone or 'unknown'} not in {sorted(self.zones)}"
        if self.posture is not None and ctx.posture not in self.posture:
            return f"posture {ctx.posture} not in {sorted(self.posture)}"
        if self.window is not None and not self.window.contains(ctx.now):
            return "outside the rule's time window"
        return None

    def field_mismatch(self, f: Facts) -> str | None:
        """Field predicates: every occurrence for an allow rule, any one for a deny rule (fail closed)."""
        allow = self.decision == "allow"
        if self.symbols is not None:
            listed = self.symbols
            if allow:
                if not f.instruments:
                    return "no instrument named (Symbol(55), SecurityID(48), UnderlyingSymbol(311), LegSymbol(600) ...)"
                for m in f.instruments:
                    if m[0] not in listed:
                        return f"{describe(m)} not in the rule's list"
            elif not any(m[1] in listed for m in f.instruments):
                return "no instrument in the rule's list"
        if self.accounts is not None:
            accounts = self.accounts
            if allow:
                if not f.accounts:
                    return "no account named (Account(1), AllocAccount(79))"
                for tag, value in f.accounts:
                    if value not in accounts:
                        return f"{field_text(tag, value)} not in the rule's list"
            elif not any(value in accounts for _, value in f.accounts):
                return "no account in the rule's list"
        if self.max_qty is None and self.max_notional is None:
            return None
        missing = f.qty_bad or (None if f.qty_n else "no quantity (OrderQty(38), CashOrderQty(152), ...)")
        if self.max_notional is not None and missing is None:
            missing = f.px_bad or (None if f.px_n else "no price (Price(44), StopPx(99), ...): notional unknown")
        if missing is not None:
            return missing if allow else None  # cannot be judged: no allow, and a deny applies
        if self.max_qty is not None:
            if allow and f.qty_max > self.max_qty:
                return f"{field_text(*f.qty_top)} above {self.max_qty:g}"
            if not allow and f.qty_min > self.max_qty:
                return f"every quantity above {self.max_qty:g}"
        if self.max_notional is not None:
            if allow and f.qty_max * f.px_max > self.max_notional:
                return (f"notional up to {f.qty_max * f.px_max:g} ({field_text(*f.qty_top)} x "
                        f"{field_text(*f.px_top)}) above {self.max_notional:g}")
            if not allow and f.qty_min * f.px_min > self.max_notional:
                return f"every notional above {self.max_notional:g}"
        return None

    def unmet_conditions(self, ctx: Context) -> list[str]:
        unmet = []
        if "mfa" in self.controls and not ctx.mfa:
            unmet.append("mfa")
        if "ip_allowlist" in self.controls and (ctx.peer is None or not any(ctx.peer in n for n in self.ip_allowlist)):
            unmet.append("ip_allowlist")
        if "jit" in self.controls and not ctx.jit:
            unmet.append("jit")
        return unmet


class Decision(NamedTuple):
    """A policy decision (a NamedTuple: immutable, cheap per message)."""

    allowed: bool  # what happens to the message
    outcome: str  # allow | deny | shadow-deny (global shadow let a deny through)
    rule_ids: tuple[str, ...]  # the enforced rules that decided (or "default-deny")
    controls: frozenset[str]
    reason: str
    shadow: tuple[tuple[str, str], ...] = ()  # (rule id, its decision) of matching shadow rules
    #: the message's fields as the rules read them (``scan``), when a rule needed them: pre-trade risk
    #: takes them (``RiskBook.check(..., facts=)``) so a message is scanned once
    facts: Facts | None = None


@dataclass
class Policy:
    rules: list[Rule]
    global_shadow: bool = False
    sha256: str = ""
    source: str = ""
    #: kinds the policy's outbound actions declare (``actions.py``: validated at load, a downgrade ignored)
    kinds: Mapping[bytes, str] = field(default_factory=dict)
    #: how instruments are named and compared (``[instruments]``)
    instruments: Instruments = DEFAULT_INSTRUMENTS
    _index: dict[tuple[str, bytes], dict[str, list[Rule]]] = field(default_factory=dict)
    _any_role: dict[tuple[str, bytes], list[Rule]] = field(default_factory=dict)
    _cache: dict[tuple[str, bytes, frozenset[str]], tuple[Rule, ...]] = field(default_factory=dict)
    _kinds: dict[bytes, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._kinds = merged(self.kinds)
        for rule in self.rules:
            for mt in rule.msg_types:
                key = (rule.direction, mt)
                if rule.roles:
                    by_role = self._index.setdefault(key, {})
                    for role in rule.roles:
                        by_role.setdefault(role, []).append(rule)
                else:
                    self._any_role.setdefault(key, []).append(rule)

    def candidates(self, ctx: Context, msg_type: bytes) -> tuple[Rule, ...]:
        """Rules that can apply to this direction, MsgType and role set (memoised)."""
        ck = (ctx.direction, msg_type, ctx.roles)
        hit = self._cache.get(ck)
        if hit is not None:
            return hit
        found = self._candidates(ctx, msg_type)
        if len(self._cache) < 65536:
            self._cache[ck] = found
        return found

    def _candidates(self, ctx: Context, msg_type: bytes) -> tuple[Rule, ...]:
        key = (ctx.direction, msg_type)
        out = list(self._any_role.get(key, ()))
        by_role = self._index.get(key)
        if by_role:
            seen: set[str] = set()
            for role in ctx.roles:
                for r in by_role.get(role, ()):
                    if r.id not in seen:
                        seen.add(r.id)
                        out.append(r)
        return tuple(out)

    def kind_of(self, msg_type: bytes) -> str:
        """order | cancel | read | other: the FIX table with this policy's declarations (``actions.py``)."""
        return self._kinds.get(msg_type, OTHER)

    def facts(self, msg: Message) -> Facts:
        """The fields this policy's predicates read, under its instruments (for explanations)."""
        return scan(msg, self.instruments)

    def decide(self, ctx: Context, msg: Message) -> Decision:
        allows: list[Rule] = []
        denies: list[Rule] = []
        shadow: list[tuple[str, str]] = []
        unmet: list[str] = []
        facts: Facts | None = None
        for rule in self.candidates(ctx, msg.msg_type):
            if rule.context_mismatch(ctx) is not None:
                continue
            if rule.routing:
                why = rule.routing_mismatch(msg)
                if why is not None:
                    if rule.decision == "allow" and not rule.shadow:
                        unmet.append(f"{rule.id}: {why}")
                    continue
            if rule.reads_fields:
                if facts is None:
                    facts = scan(msg, self.instruments)
                why = rule.field_mismatch(facts)
                if why is not None:
                    if rule.decision == "allow" and not rule.shadow:
                        unmet.append(f"{rule.id}: {why}")
                    continue
            if rule.conditions and rule.decision == "allow":
                missing = rule.unmet_conditions(ctx)
                if missing:
                    unmet.append(f"{rule.id} needs {', '.join(missing)}")
                    continue
            if rule.shadow:
                shadow.append((rule.id, rule.decision))
            elif rule.decision == "deny":
                denies.append(rule)
            else:
                allows.append(rule)
        if denies:
            ids = tuple(r.id for r in denies)
            reason = denies[0].reason or f"denied by {ids[0]}"
            return self._finish(False, ids, frozenset(), reason, shadow)
        if allows:
            controls = frozenset().union(*(r.controls for r in allows))
            return Decision(True, "allow", tuple(r.id for r in allows), controls, "allowed", tuple(shadow), facts)
        reason = "no rule allows this (default deny)"
        if unmet:
            reason += "; " + "; ".join(unmet)
        return self._finish(False, ("default-deny",), frozenset(), reason, shadow)

    def _finish(self, allowed: bool, ids: tuple[str, ...], controls: frozenset[str], reason: str,
                shadow: list[tuple[str, str]]) -> Decision:
        if self.global_shadow:
            return Decision(True, "shadow-deny", ids, controls, reason + " (global shadow: not enforced)",
                            tuple(shadow))
        return Decision(allowed, "deny", ids, controls, reason, tuple(shadow))

    def allows_anything(self, ctx: Context, msg_types: Iterable[bytes]) -> bool:
        """Does any enforced allow rule still apply to this context (ignoring fields)?"""
        for mt in msg_types:
            for rule in self.candidates(ctx, mt):
                if rule.shadow or rule.decision != "allow":
                    continue
                if rule.zones is not None and ctx.zone not in rule.zones:
                    continue
                if rule.posture is not None and ctx.posture not in rule.posture:
                    continue
                return True
        return False

