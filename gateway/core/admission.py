"""Connection admission (pure): caps on connections in total and per source, and a handshake rate.

A TLS handshake costs the gateway far more than it costs the client, and a
client that connects and never logs on holds a slot until the logon timeout.
``Admission`` decides, before any TLS byte is read, whether a new connection
may proceed; refusals are counted per reason and source so the gateway can
audit them in aggregate (one record per second, not one per connection: a
flood must not become a flood of audit records).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Admission:
    max_total: int = 1000
    max_per_source: int = 50
    rate: float = 200.0  # new connections per second, token bucket
    burst: float = 400.0
    open_total: int = 0
    per_source: Counter[str] = field(default_factory=Counter)
    refused: Counter[tuple[str, str]] = field(default_factory=Counter)  # (reason, source) since the last drain
    _tokens: float = -1.0
    _last: float = 0.0

    def admit(self, source: str, now: float) -> str | None:
        """None when the connection may proceed (it is then counted until ``release``), else the reason."""
        if self._tokens < 0:
            self._tokens, self._last = self.burst, now
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        reason = None
        if self.open_total >= self.max_total:
            reason = f"connection limit: {self.max_total} open"
        elif self.per_source[source] >= self.max_per_source:
            reason = f"per-source limit: {self.max_per_source} open from {source}"
        elif self._tokens < 1:
            reason = f"handshake rate limit: {self.rate:g}/s"
        if reason is not None:
            self.refused[(reason, source)] += 1
            return reason
        self._tokens -= 1
        self.open_total += 1
        self.per_source[source] += 1
        return None

    def release(self, source: str) -> None:
        self.open_total -= 1
        self.per_source[source] -= 1
        if self.per_source[source] <= 0:
            del self.per_source[source]

    def drain(self) -> list[tuple[str, str, int]]:
        """Refusals since the last call, for one aggregate audit record."""
        out = [(reason, source, n) for (reason, source), n in self.refused.items()]
        self.refused.clear()
        return out
