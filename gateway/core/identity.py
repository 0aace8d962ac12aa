"""Identities and network zones (pure): what the registry says an identity may do.

The registry itself is loaded from the config by ``gateway.edges.registry``
(it reads key files); the checks here only look the entries up.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gateway.core.fix.signature import VerifyKey

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Identity:
    id: str
    comp_ids: frozenset[str]
    sub_ids: frozenset[str]
    zones: frozenset[str]
    roles: tuple[str, ...]
    signing: str  # none | ed25519 | hmac-sha256
    keys: tuple[VerifyKey, ...]
    max_bad_signatures: int
    mfa: bool
    pins: frozenset[str]
    sign_outbound: bool = False


def parse_zone_entry(entry: str) -> Network | str:
    """A zone entry: ``listener:NAME`` (-> the listener name) or a CIDR (raises ValueError)."""
    if entry.startswith("listener:"):
        return entry[len("listener:"):]
    return ipaddress.ip_network(entry, strict=False)


ZoneTable = list[tuple[str, Network | str]]  # (zone, CIDR) or (zone, listener name)


def zone_entries(zones: dict[str, list[str]]) -> ZoneTable:
    """Zone definitions in order; an entry is a CIDR or ``listener:NAME``."""
    out: ZoneTable = []
    for name, entries in zones.items():
        out.extend((name, parse_zone_entry(e)) for e in entries)
    return out


def zone_of(address: str | None, table: ZoneTable, listener: str | None = None) -> str | None:
    """The first zone, in definition order, whose CIDR holds ``address`` or that names ``listener``."""
    ip = None
    if address:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
    for name, entry in table:
        if isinstance(entry, str):
            if listener is not None and entry == listener:
                return name
        elif ip is not None and ip in entry:
            return name
    return None
