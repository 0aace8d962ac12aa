"""Behavioural anomaly detection per identity: pure, time passed in.

After a warm-up of ``learn_orders`` new orders an identity has a baseline:

* ``rate_spike`` — messages in the current second above ``rate_factor`` ×
  its moving average (EWMA of per-second counts, at least ``min_rate``);
* ``new_symbol`` — an order for a Symbol(55) it never traded before;
* ``off_hours`` — an order in a UTC hour in which it was never active.

Each finding is reported once per (kind, detail) per hour; the gateway
writes it to the audit stream as an ``anomaly`` record and, for the kinds in
``kill_on``, turns on the identity's kill switch.

A baseline is what the identity did, so a restart must not forget it (a
fresh baseline is a new warm-up in which nothing is judged): at start-up the
gateway replays the outbound decision records of the audit stream through
``learn`` and the ``anomaly`` records through ``reported``
(``gateway/app/risk_state.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.core.fix import tags as T
from gateway.core.fix.codec import Message
from gateway.core.policy.risk import NEW_ORDER_TYPES


@dataclass(frozen=True, slots=True)
class AnomalySettings:
    enabled: bool = False
    learn_orders: int = 200
    rate_factor: float = 5.0
    min_rate: float = 5.0
    new_symbols: bool = True
    off_hours: bool = True
    kill_on: frozenset[str] = frozenset()


@dataclass
class _Baseline:
    orders: int = 0
    symbols: set[bytes] = field(default_factory=set)
    hours: set[int] = field(default_factory=set)
    second: int = -1
    count: int = 0
    ewma: float = 0.0
    reported: dict[tuple[str, str], float] = field(default_factory=dict)


@dataclass
class AnomalyDetector:
    settings: AnomalySettings
    baselines: dict[str, _Baseline] = field(default_factory=dict)

    def observe(self, identity: str, msg: Message, now: float) -> list[tuple[str, str]]:
        """Learn from (or judge) one outbound application message; returns (kind, detail) findings."""
        if not self.settings.enabled:
            return []
        return self._see(identity, msg.msg_type, msg.get(T.Symbol) if msg.msg_type in NEW_ORDER_TYPES else None,
                         now, True)

    def learn(self, identity: str, msg_type: bytes, symbol: bytes | None, now: float) -> None:
        """A message sent before a restart (from its audit record): the baseline learns, nothing is judged."""
        if self.settings.enabled:
            self._see(identity, msg_type, symbol if msg_type in NEW_ORDER_TYPES else None, now, False)

    def reported_at(self, identity: str, kind: str, detail: str, when: float) -> None:
        """A finding reported before a restart: not reported again within the hour."""
        b = self.baselines.setdefault(identity, _Baseline())
        key = (kind, detail if kind != "rate_spike" else "")
        b.reported[key] = max(when, b.reported.get(key, -1e18))

    def _see(self, identity: str, msg_type: bytes, symbol: bytes | None, now: float,
             judge: bool) -> list[tuple[str, str]]:
        s = self.settings
        b = self.baselines.setdefault(identity, _Baseline())
        found: list[tuple[str, str]] = []
        sec = int(now)
        if sec != b.second:
            if b.second >= 0:
                gap = max(0, min(sec - b.second, 60))  # a record replayed a little out of order: no growth
                b.ewma = b.ewma * (0.9 ** gap) + 0.1 * b.count  # idle seconds count as zero
            b.second, b.count = sec, 0
        b.count += 1
        warm = judge and b.orders >= s.learn_orders
        threshold = s.rate_factor * max(b.ewma, s.min_rate)
        if warm and b.count > threshold:
            found.append(("rate_spike", f"{b.count} messages this second, baseline {b.ewma:.1f}/s"))
        if msg_type in NEW_ORDER_TYPES:
            sym = symbol or b""
            hour = (sec // 3600) % 24
            if warm and s.new_symbols and sym not in b.symbols:
                found.append(("new_symbol", f"first order ever in {sym.decode('latin-1')}"))
            if warm and s.off_hours and hour not in b.hours:
                found.append(("off_hours", f"first activity in hour {hour:02d}:00 UTC"))
            b.orders += 1
            b.symbols.add(sym)
            b.hours.add(hour)
        out = []
        for kind, detail in found:
            key = (kind, detail if kind != "rate_spike" else "")
            if now - b.reported.get(key, -1e18) >= 3600:
                b.reported[key] = now
                out.append((kind, detail))
        return out
