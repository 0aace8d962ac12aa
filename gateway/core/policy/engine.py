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
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from gateway.core.fix import tags as T
from gateway.core.fix.codec import Message

POSTURE_LEVELS = ("highly-compliant", "compliant", "non-compliant", "unknown")
CONDITIONS = frozenset({"mfa", "ip_allowlist", "jit"})
OBLIGATIONS = frozenset({"session_logging", "read_only", "full_capture"})
CONTROLS = CONDITIONS | OBLIGATIONS
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Context:
    """Everything about the sender a decision may depend on (time is an argument)."""

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

    def matches(self, ctx: Context, msg: Message) -> str | None:
        """None when the rule applies; otherwise why not (for explanations)."""
        if self.zones is not None and ctx.zone not in self.zones:
            return f"zone {ctx.zone or 'unknown'} not in {sorted(self.zones)}"
        if self.posture is not None and ctx.posture not in self.posture:
            return f"posture {ctx.posture} not in {sorted(self.posture)}"
        if self.window is not None and not self.window.contains(ctx.now):
            return "outside the rule's time window"
        if self.symbols is not None and msg.get(T.Symbol) not in self.symbols:
            return f"Symbol(55) {_s(msg.get(T.Symbol))} not in the rule's list"
        if self.accounts is not None and msg.get(T.Account) not in self.accounts:
            return f"Account(1) {_s(msg.get(T.Account))} not in the rule's list"
        if self.max_qty is not None or self.max_notional is not None:
            qty = _num(msg.get(T.OrderQty))
            if qty is None:
                return "OrderQty(38) missing or not a number"
            if self.max_qty is not None and qty > self.max_qty:
                return f"OrderQty(38) {qty:g} above {self.max_qty:g}"
            if self.max_notional is not None:
                px = _num(msg.get(T.Price))
                if px is None:
                    return "Price(44) missing: notional unknown"
                if qty * px > self.max_notional:
                    return f"notional {qty * px:g} above {self.max_notional:g}"
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


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool  # what happens to the message
    outcome: str  # allow | deny | shadow-deny (global shadow let a deny through)
    rule_ids: tuple[str, ...]  # the enforced rules that decided (or "default-deny")
    controls: frozenset[str]
    reason: str
    shadow: tuple[tuple[str, str], ...] = ()  # (rule id, its decision) of matching shadow rules


@dataclass
class Policy:
    rules: list[Rule]
    global_shadow: bool = False
    sha256: str = ""
    source: str = ""
    _index: dict[tuple[str, bytes], dict[str, list[Rule]]] = field(default_factory=dict)
    _any_role: dict[tuple[str, bytes], list[Rule]] = field(default_factory=dict)
    _cache: dict[tuple[str, bytes, frozenset[str]], tuple[Rule, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
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

    def decide(self, ctx: Context, msg: Message) -> Decision:
        allows: list[Rule] = []
        denies: list[Rule] = []
        shadow: list[tuple[str, str]] = []
        unmet: list[str] = []
        for rule in self.candidates(ctx, msg.msg_type):
            if rule.matches(ctx, msg) is not None:
                continue
            if rule.decision == "allow":
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
            return Decision(True, "allow", tuple(r.id for r in allows), controls, "allowed", tuple(shadow))
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


def _s(v: bytes | None) -> str:
    return v.decode("latin-1") if v is not None else "(none)"


def _num(v: bytes | None) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return None
