"""Exchange leg (edge): the gateway's FIX initiator session towards a venue.

``UpstreamLeg`` connects (TLS by default), logs on, reconnects with
exponential backoff (``persistent`` mode) or follows the client's session
(``mirror`` mode).  Application messages from the venue go to
``Gateway.exchange_to_client``; when the venue refuses one of ours with a
Reject(3), or sends an application message this leg rejects as invalid,
the hub hears of it (``venue_rejected`` / ``venue_invalid``) so the client
whose order it concerns is told rather than left waiting.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from typing import TYPE_CHECKING

import structlog

from gateway.core.fix import tags as T
from gateway.core.fix.session import (
    AppMessageReceived,
    Disconnected,
    Event,
    LoggedOn,
    LoggedOut,
    LogonRefused,
    MessageRejected,
    RejectReceived,
    Session,
    SessionConfig,
)
from gateway.edges import tls
from gateway.edges.config import SessionConfigToml
from gateway.edges.store import FileStore
from gateway.shells.legs import SessionProtocol

if TYPE_CHECKING:
    from gateway.shells.ports import Hub
    from gateway.shells.route import Route

log = structlog.get_logger("fixgw.exchange_leg")


class UpstreamProtocol(SessionProtocol):
    def __init__(self, leg: UpstreamLeg) -> None:
        super().__init__()
        self.leg = leg

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        pins = self.leg.pins
        if pins:
            ssl_obj = transport.get_extra_info("ssl_object")
            der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
            fp = hashlib.sha256(der).hexdigest() if der else "(no certificate)"
            if fp not in pins:
                self.leg.gw.audit_event("upstream_pin_mismatch", leg=self.leg.name, sha256=fp)
                log.info("upstream_pin_mismatch", leg=self.leg.name, sha256=fp)
                transport.abort()  # type: ignore[attr-defined]
                return
        self.session = Session(self.leg.config, self.leg.store)
        self.session.connection_made(time.time())
        self.pump()

    def data_received(self, data: bytes) -> None:
        if self.session is None:
            return
        self.session.receive_data(data, time.time())
        self.pump()

    def on_event(self, event: Event, now: float) -> None:
        self.leg.on_event(event, now)

    def on_closed(self, exc: Exception | None) -> None:
        self.leg.on_closed(self)


class UpstreamLeg:
    """The exchange leg of a route: connects, logs on, reconnects with backoff.

    ``persistent`` legs connect at start-up and stay up; ``mirror`` legs are
    opened by ``open()`` when the client logs on and closed with it.
    """

    def __init__(self, gw: Hub, config: SessionConfig, store: FileStore, s: SessionConfigToml) -> None:
        self.gw = gw
        self.config = config
        self.store = store
        self.cfg = s.upstream
        self.mirror = s.upstream.mode == "mirror"
        self.pins = frozenset(p.lower().replace(":", "") for p in s.upstream.pin_sha256)
        self.route: Route | None = None
        self.protocol: UpstreamProtocol | None = None
        self.logged_on = False
        self.connected = False
        self.logged_on_once = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed_event: asyncio.Event | None = None
        self._logon_waiter: asyncio.Future[bool] | None = None
        self.header_tags: frozenset[int] = (
            frozenset(config.validator.transport.header.tags) if config.validator else T.STANDARD_HEADER_TAGS
        )
        self.ssl: ssl.SSLContext | None = None
        if self.cfg.tls:
            self.ssl = tls.client_context(
                gw.cfg.resolve(self.cfg.ca) if self.cfg.ca else None,
                gw.cfg.resolve(self.cfg.cert) if self.cfg.cert else None,
                gw.cfg.resolve(self.cfg.key) if self.cfg.key else None,
            )

    @property
    def name(self) -> str:
        c = self.config
        return f"{c.sender_comp_id.decode()}->{c.target_comp_id.decode()}@{self.cfg.host}:{self.cfg.port}"

    def start(self) -> None:
        if not self.mirror:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _connect(self) -> bool:
        loop = asyncio.get_running_loop()
        self._closed_event = asyncio.Event()
        self._logon_waiter = loop.create_future()
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    self._new_protocol,
                    self.cfg.host,
                    self.cfg.port,
                    ssl=self.ssl,
                    server_hostname=(self.cfg.server_name or self.cfg.host) if self.ssl else None,
                ),
                timeout=self.gw.cfg.gateway.logon_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.info("upstream_connect_failed", leg=self.name, error=str(exc) or type(exc).__name__)
            self._closed_event.set()
            return False
        self.connected = True
        return True

    async def _run(self) -> None:
        delay = self.cfg.reconnect_min
        while not self._stopping:
            if not await self._connect():
                await asyncio.sleep(delay)
                delay = min(self.cfg.reconnect_max, delay * 2)
                continue
            assert self._closed_event is not None
            await self._closed_event.wait()
            if self.logged_on_once:
                delay = self.cfg.reconnect_min
            if not self._stopping:
                await asyncio.sleep(delay)
                delay = min(self.cfg.reconnect_max, delay * 2)

    async def open(self) -> bool:
        """Mirror mode: connect and log on now; True once the venue answered our Logon."""
        timeout = self.gw.cfg.gateway.logon_timeout
        if self.protocol is not None and not self.logged_on and self._closed_event is not None:
            try:  # the previous mirror session is still closing
                await asyncio.wait_for(self._closed_event.wait(), timeout)
            except TimeoutError:
                self.abort_connection()
        if self.logged_on:
            return True
        if not await self._connect():
            return False
        assert self._logon_waiter is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self._logon_waiter), timeout)
        except TimeoutError:
            self.abort_connection()
            return False

    def close_mirror(self, now: float, text: str) -> None:
        """Mirror mode: the client left, so our venue session ends too."""
        p = self.protocol
        if p is None:
            return
        # From here on the leg carries nothing new; open() waits for the close.
        if self.logged_on:
            self.gw.audit_event("upstream_logout", leg=self.name, reason=text)
        self.logged_on = False
        if p.session is not None and p.session.is_logged_on:
            p.session.logout(now, text)
            p.pump()
        else:
            p.close_transport()

    def _new_protocol(self) -> UpstreamProtocol:
        p = UpstreamProtocol(self)
        if self.route is not None:
            p.on_pause = self.route.upstream_write_paused
        self.protocol = p
        return p

    def _resolve_logon(self, ok: bool) -> None:
        w = self._logon_waiter
        if w is not None and not w.done():
            w.set_result(ok)

    def on_event(self, event: Event, now: float) -> None:
        route = self.route
        assert route is not None
        if isinstance(event, AppMessageReceived):
            self.gw.exchange_to_client(route, event.message, self.header_tags, now)
        elif isinstance(event, LoggedOn):
            self.logged_on = True
            self.logged_on_once = True
            self.gw.audit_event("upstream_logon", leg=self.name, session=route.name)
            log.info("upstream_logon", leg=self.name)
            self._resolve_logon(True)
        elif isinstance(event, (LoggedOut, Disconnected)):
            if self.logged_on:
                self.gw.audit_event("upstream_logout", leg=self.name, reason=getattr(event, "reason", ""))
            self.logged_on = False
            self._resolve_logon(False)
        elif isinstance(event, MessageRejected):
            self.gw.audit_event("upstream_session_reject", leg=self.name, reason=event.reason, detail=event.detail)
            if event.message is not None and not event.message.is_admin():
                self.gw.venue_invalid(route, event.message, event.reason, event.detail, now)
        elif isinstance(event, RejectReceived):
            self.gw.venue_rejected(route, event.message, now)
        elif isinstance(event, LogonRefused):
            self.gw.audit_event("upstream_logon_refused", leg=self.name, reason=event.reason)
            self._resolve_logon(False)

    def on_closed(self, proto: UpstreamProtocol) -> None:
        was_on = self.logged_on
        if was_on:
            self.gw.audit_event("upstream_logout", leg=self.name, reason="connection lost")
        self.logged_on = False
        self._resolve_logon(False)
        if self.protocol is proto:
            self.protocol = None
            self.connected = False
        if self._closed_event is not None:
            self._closed_event.set()
        route = self.route
        if self.mirror and was_on and route is not None and route.client is not None:
            conn = route.client
            if conn.session is not None and conn.session.is_logged_on:
                conn.session.logout(time.time(), f"exchange session {self.name} ended")
                conn.pump()

    def stop(self, now: float) -> None:
        self._stopping = True
        p = self.protocol
        if p is not None and p.session is not None and p.session.is_logged_on:
            p.session.logout(now, "gateway shutting down")
            p.pump()
        elif p is not None:
            p.close_transport()
        if self._task is not None and not self.connected:
            self._task.cancel()

    def abort_connection(self) -> None:
        if self.protocol is not None:
            self.protocol.abort()

    def abort(self) -> None:
        self.abort_connection()
        if self._task is not None:
            self._task.cancel()
