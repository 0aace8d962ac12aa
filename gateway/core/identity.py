"""Identities and network zones (pure): what the registry says an identity may do.

The registry itself is loaded from the config by ``gateway.edges.registry``
(it reads key files); the checks here only look the entries up.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.core.fix.signature import VerifyKey

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Header fields that route or attribute a message, by their FIX names: the
#: identity registry grants values of each (``routing = { OnBehalfOfCompID =
#: ["CLIENT-A"] }``, ``"*"`` for any); without a grant a message carrying one
#: is refused.  ApplVerID(1128) is checked against the session's versions.
ROUTING_FIELDS: dict[str, int] = {
    "TargetSubID": 57,
    "OnBehalfOfCompID": 115,
    "OnBehalfOfSubID": 116,
    "DeliverToCompID": 128,
    "DeliverToSubID": 129,
    "SenderLocationID": 142,
    "TargetLocationID": 143,
    "OnBehalfOfLocationID": 144,
    "DeliverToLocationID": 145,
    "XmlData": 213,
    "ApplVerID": 1128,
}
XML_DATA = 213


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
    #: routing/attribution field tag -> values it may carry ("*": any); see ROUTING_FIELDS
    routing: Mapping[int, frozenset[str]] = field(default_factory=dict)
    #: mfa identities: the people (Username(553)) who may log on through it; nobody else may,
    #: whatever password and code they bring (one person's factors never open another's identity)
    users: frozenset[str] = frozenset()


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
