"""Connection admission (pure): caps on open connections, and handshake rates charged per ClientHello.

A TLS handshake costs the gateway far more than it costs the client, and a
client that connects and never logs on holds a slot until the logon timeout.
Two decisions, each before the work it guards:

* ``admit`` — at TCP accept, before any TLS byte is read: the caps on
  connections open in total and from one source.  Accepting costs nothing
  worth rationing, so no token is spent here: a source that connects and
  closes without saying anything costs the others nothing.
* ``hello`` — when the first bytes (the ClientHello) arrive, i.e. just
  before the gateway starts the expensive part: first the source's own
  token bucket (``source_rate``/``source_burst``), so one noisy address
  drains only its own bucket; then the shared bucket (``rate``/``burst``),
  whose last ``reserve`` share only sources with a good record may take — a
  source from which a Logon completed within ``GOOD_FOR`` seconds.  A flood
  from many addresses can then exhaust the shared bucket for newcomers,
  never for the clients that were already trading.

Sources are IPv4 addresses and IPv6 /64 prefixes (one host holds a whole
/64, so a per-address bucket would be no limit there).  Memory is bounded:
at most ``MAX_SOURCES`` buckets and ``MAX_GOOD`` good records, least recently
used dropped first (a dropped bucket starts full again; the shared bucket
still holds).  Refusals are counted per reason and source so the gateway can
audit them in aggregate (one record per second, not one per connection: a
flood must not become a flood of audit records).
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

#: how long a completed Logon keeps its source in good standing (seconds)
GOOD_FOR = 24 * 3600.0
MAX_SOURCES = 65_536
MAX_GOOD = 100_000


def source_key(source: str) -> str:
    """The unit a per-source bucket counts: the IPv4 address, or the /64 of an IPv6 address."""
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        return source
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    last: float

    def refill(self, now: float, rate: float, burst: float) -> None:
        self.tokens = min(burst, self.tokens + max(0.0, now - self.last) * rate)
        self.last = now


@dataclass
class Admission:
    max_total: int = 1000
    max_per_source: int = 50
    rate: float = 200.0  # ClientHellos per second, shared bucket
    burst: float = 400.0
    source_rate: float = 20.0  # ClientHellos per second from one source
    source_burst: float = 40.0
    reserve: float = 0.25  # share of the shared bucket only sources with a good record may take
    open_total: int = 0
    per_source: Counter[str] = field(default_factory=Counter)
    refused: Counter[tuple[str, str]] = field(default_factory=Counter)  # (reason, source) since the last drain
    _shared: _Bucket | None = None
    _sources: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)
    _good: OrderedDict[str, float] = field(default_factory=OrderedDict)  # source key -> last completed Logon

    def admit(self, source: str, now: float) -> str | None:
        """At TCP accept: None when the connection may proceed (counted until ``release``), else the reason."""
        reason = None
        if self.open_total >= self.max_total:
            reason = f"connection limit: {self.max_total} open"
        elif self.per_source[source] >= self.max_per_source:
            reason = f"per-source limit: {self.max_per_source} open from {source}"
        if reason is not None:
            self.refused[(reason, source)] += 1
            return reason
        self.open_total += 1
        self.per_source[source] += 1
        return None

    def hello(self, source: str, now: float) -> str | None:
        """The ClientHello arrived: None when the handshake may proceed (a token taken from the source's
        bucket and from the shared one), else the reason (nothing taken)."""
        key = source_key(source)
        own = self._sources.get(key)
        if own is None:
            own = self._sources[key] = _Bucket(self.source_burst, now)
            while len(self._sources) > MAX_SOURCES:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(key)
        own.refill(now, self.source_rate, self.source_burst)
        shared = self._shared
        if shared is None:
            shared = self._shared = _Bucket(self.burst, now)
        shared.refill(now, self.rate, self.burst)
        floor = 0.0 if self.has_good_record(source, now) else self.reserve * self.burst
        reason = None
        if own.tokens < 1:
            reason = f"handshake rate limit per source: {self.source_rate:g}/s"
        elif shared.tokens - 1 < floor:
            reason = (f"handshake rate limit: {self.rate:g}/s" if floor == 0 else
                      f"handshake rate limit: {self.rate:g}/s (the rest is kept for sources with a good record)")
        if reason is not None:
            self.refused[(reason, source)] += 1
            return reason
        own.tokens -= 1
        shared.tokens -= 1
        return None

    def good(self, source: str, now: float) -> None:
        """A Logon completed from ``source``: it may use the reserve from now on."""
        key = source_key(source)
        self._good[key] = now
        self._good.move_to_end(key)
        while len(self._good) > MAX_GOOD:
            self._good.popitem(last=False)

    def has_good_record(self, source: str, now: float) -> bool:
        since = self._good.get(source_key(source))
        return since is not None and now - since <= GOOD_FOR

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
