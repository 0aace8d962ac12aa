"""A route: one client session, its stores, and the exchange leg it maps to.

Both shells of a route (the client's ``ClientProtocol`` and the exchange's
``UpstreamLeg``) hang off it, so backpressure can pass from one socket to the
other without going through the application.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.core.fix.session import Session, SessionConfig
from gateway.core.pipeline import Party
from gateway.edges.config import SessionConfigToml
from gateway.edges.store import FileStore

if TYPE_CHECKING:
    from gateway.shells.client_leg import ClientProtocol
    from gateway.shells.exchange_leg import UpstreamLeg


@dataclass
class Route:
    """One client session, its stores, and the exchange leg it maps to."""

    cfg: SessionConfigToml
    key: tuple[bytes, bytes, bytes]  # (BeginString, client SenderCompID, its TargetCompID)
    client_config: SessionConfig
    client_store: FileStore
    upstream: UpstreamLeg
    client: ClientProtocol | None = None
    offline: Session | None = None
    seq_map: OrderedDict[int, int] = field(default_factory=OrderedDict)
    #: orders sent on this route and not yet finished: ClOrdID -> (Side, Symbol, OrderQty)
    open_orders: dict[bytes, tuple[bytes, bytes, bytes]] = field(default_factory=dict)
    #: who decides for the route's messages from the exchange while the client is away
    party: Party | None = None
    #: "FIX.4.4/CLIENT/GATEWAY": how logs and audit records name the route (read per message, so kept)
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = "/".join(k.decode() for k in self.key)

    def client_write_paused(self, paused: bool) -> None:
        """The client reads slowly: stop reading from the exchange leg until it drains."""
        p = self.upstream.protocol
        _set_reading(p.transport if p else None, not paused)

    def upstream_write_paused(self, paused: bool) -> None:
        """The exchange reads slowly: stop reading from the client until it drains."""
        c = self.client
        _set_reading(c.transport if c else None, not paused)


def _set_reading(transport: asyncio.BaseTransport | None, reading: bool) -> None:
    if transport is None or transport.is_closing():
        return
    try:
        if reading:
            transport.resume_reading()  # type: ignore[attr-defined]
        else:
            transport.pause_reading()  # type: ignore[attr-defined]
    except (RuntimeError, AttributeError):  # already in that state / closed
        pass
