"""The gateway: client legs (mTLS acceptor) paired with exchange legs (initiator).

Data flow, one direction per leg (DESIGN §2):

    client bytes -> ClientProtocol -> Session (client leg)
        -> guard: identity binding -> signature -> policy + risk
        -> audit append (decision)          [refused: answered on client leg]
        -> UpstreamLeg Session -> exchange bytes
    exchange bytes -> UpstreamProtocol -> Session (exchange leg)
        -> audit -> client-leg Session -> client bytes

Session-level messages never cross; application messages are re-sequenced.
A refused message is consumed and answered on the client leg and never
reaches the exchange, so the exchange leg sees no sequence gap.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from . import tls
from .audit import AuditError, AuditLog
from .config import Config, SessionConfigToml
from .fix import tags as T
from .fix.codec import Field, FrameGarbled, Framer, FrameReceived, Message
from .fix.dictionary import ValidationSettings, standard_validator
from .fix.session import (
    AppMessageReceived,
    Disconnected,
    Event,
    FrameDropped,
    LoggedOn,
    LoggedOut,
    LogonRefused,
    MessageRejected,
    Role,
    Session,
    SessionConfig,
)
from .guard import Guard, Identity
from .legs import SessionProtocol
from .store import FileStore, session_dir_name

log = structlog.get_logger("fixgw.proxy")

SEQ_MAP_SIZE = 100_000
ORDER_TYPES = frozenset({T.MT_NEW_ORDER_SINGLE, T.MT_ORDER_CANCEL_REPLACE_REQUEST})


def split_for_carry(msg: Message, header_tags: frozenset[int]) -> tuple[list[Field], list[Field]]:
    """Header fields to carry to the other leg, and the body (signature stripped).

    Session header fields (sequence numbers, CompIDs, times, PossDup) belong
    to one leg and are written fresh by the other; routing and PossResend(97)
    are carried.  SignatureLength(93)/Signature(89) belong to one leg too.
    """
    header: list[Field] = []
    body: list[Field] = []
    in_header = True
    for tag, value in msg.fields[1:]:
        if in_header and tag in header_tags:
            if tag not in T.SESSION_HEADER_TAGS:
                header.append((tag, value))
            continue
        in_header = False
        if tag == T.SignatureLength or tag == T.Signature:
            continue
        body.append((tag, value))
    return header, body


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

    @property
    def name(self) -> str:
        return "/".join(k.decode() for k in self.key)

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


class Gateway:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        assert cfg.listen is not None and cfg.audit is not None
        self.state_dir = cfg.resolve(cfg.gateway.state_dir)
        self.audit = AuditLog(cfg.resolve(cfg.audit.dir))
        self.guard = Guard(cfg)
        self.routes: dict[tuple[bytes, bytes, bytes], Route] = {}
        self.server_ctx = tls.server_context(
            cfg.resolve(cfg.listen.cert), cfg.resolve(cfg.listen.key), cfg.resolve(cfg.listen.ca)
        )
        self.server: asyncio.AbstractServer | None = None
        self.connections: set[ClientProtocol] = set()
        self.stopping = False
        for s in cfg.sessions:
            self._add_route(s)

    def _add_route(self, s: SessionConfigToml) -> None:
        begin = s.begin_string.encode()
        fixt = begin == b"FIXT.1.1"
        appl = (s.default_appl_ver_id or ("9" if fixt else "")).encode() or None
        client_validator = None
        if s.validate:
            client_validator = standard_validator(
                begin,
                ValidationSettings(
                    check_fields_have_values=s.validate_fields_have_values,
                    allow_unknown_message_fields=s.allow_unknown_message_fields,
                ),
                self.cfg.resolve(s.dictionary) if s.dictionary else None,
                self.cfg.resolve(s.app_dictionary) if s.app_dictionary else None,
            )
        client_config = SessionConfig(
            begin_string=begin,
            sender_comp_id=s.gateway_comp_id.encode(),
            target_comp_id=s.client_comp_id.encode(),
            role=Role.ACCEPTOR,
            reset_on_logon=s.reset_on_logon,
            max_latency=s.max_latency,
            default_appl_ver_id=appl,
            validator=client_validator,
            max_frame=self.cfg.gateway.max_frame,
            logon_timeout=self.cfg.gateway.logon_timeout,
        )
        up = s.upstream
        up_validator = None
        if up.validate:
            up_validator = standard_validator(
                begin,
                ValidationSettings(allow_unknown_message_fields=up.allow_unknown_message_fields),
                self.cfg.resolve(s.dictionary) if s.dictionary else None,
                self.cfg.resolve(s.app_dictionary) if s.app_dictionary else None,
            )
        up_config = SessionConfig(
            begin_string=begin,
            sender_comp_id=up.sender_comp_id.encode(),
            target_comp_id=up.target_comp_id.encode(),
            role=Role.INITIATOR,
            heartbeat_interval=up.heartbeat_interval,
            reset_on_logon=up.reset_on_logon,
            default_appl_ver_id=appl,
            validator=up_validator,
            max_frame=self.cfg.gateway.max_frame,
        )
        key = (begin, s.client_comp_id.encode(), s.gateway_comp_id.encode())
        client_store = FileStore(self.state_dir / "client" / session_dir_name(*key))
        up_store = FileStore(
            self.state_dir / "upstream" / session_dir_name(begin, up_config.sender_comp_id, up_config.target_comp_id)
        )
        upstream = UpstreamLeg(self, up_config, up_store, s)
        route = Route(s, key, client_config, client_store, upstream)
        route.offline = Session(client_config, client_store)
        upstream.route = route
        self.routes[key] = route

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        assert self.cfg.listen is not None
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_exception)
        listen = f"{self.cfg.listen.host}:{self.cfg.listen.port}"
        self.audit.record("gateway_started", sessions=len(self.routes), listen=listen)
        for route in self.routes.values():
            route.upstream.start()
        self.server = await loop.create_server(
            lambda: TLSConnection(self),
            self.cfg.listen.host,
            self.cfg.listen.port,
            reuse_address=True,
        )
        log.info("listening", host=self.cfg.listen.host, port=self.cfg.listen.port, routes=len(self.routes))

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, (ssl.SSLError, ConnectionResetError, BrokenPipeError, TimeoutError)) or (
            exc is not None and "handshake" in str(context.get("message", "")).lower()
        ):
            transport = context.get("transport")
            peer = None
            if transport is not None:
                try:
                    peer = transport.get_extra_info("peername")
                except Exception:  # noqa: BLE001 - best effort only
                    peer = None
            reason = getattr(exc, "reason", None) or type(exc).__name__ if exc else "unknown"
            self._audit_safe("tls_refused", peer=_peer(peer), reason=str(reason))
            log.info("tls_refused", peer=_peer(peer), reason=str(reason))
            return
        loop.default_exception_handler(context)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: Logout every session, wait briefly, close."""
        if self.stopping:
            return
        self.stopping = True
        grace = self.cfg.gateway.shutdown_grace if grace is None else grace
        if self.server is not None:
            self.server.close()
        now = time.time()
        for conn in list(self.connections):
            if conn.session is not None and conn.session.is_logged_on:
                conn.session.logout(now, "gateway shutting down")
                conn.pump()
            else:
                conn.close_transport()
        for route in self.routes.values():
            route.upstream.stop(now)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (
            self.connections or any(r.upstream.connected for r in self.routes.values())
        ):
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        for route in self.routes.values():
            route.upstream.abort()
        self._audit_safe("gateway_stopped")
        for route in self.routes.values():
            route.client_store.close()
            route.upstream.store.close()
        self.audit.close()

    def _audit_safe(self, kind: str, **fields: Any) -> bool:
        try:
            self.audit.record(kind, **fields)
            return True
        except AuditError as exc:
            log.error("audit_failed", kind=kind, error=str(exc))
            return False

    # -- crossing legs -----------------------------------------------------------
    def client_to_exchange(self, route: Route, conn: ClientProtocol, msg: Message, now: float) -> None:
        assert conn.session is not None and conn.identity is not None
        verdict = self.guard.check_app(conn.identity, msg)
        up = route.upstream
        decision = "allow" if verdict.allowed else "deny"
        try:
            self.audit.record(
                "decision",
                decision=decision,
                rule=verdict.rule,
                reason=verdict.reason,
                identity=conn.identity.id,
                session=route.name,
                msg_type=msg.msg_type.decode("latin-1"),
                client_seq=msg.seq_num,
                cl_ord_id=_s(msg.get(T.ClOrdID)),
                symbol=_s(msg.get(T.Symbol)),
                side=_s(msg.get(T.Side)),
                qty=_s(msg.get(T.OrderQty)),
                price=_s(msg.get(T.Price)),
            )
        except AuditError as exc:
            self._refuse(conn, msg, T.BRR_APPLICATION_NOT_AVAILABLE, f"refused: audit stream unavailable ({exc})", now)
            return
        if not verdict.allowed:
            self._refuse(conn, msg, T.BRR_NOT_AUTHORIZED, f"refused by {verdict.rule}: {verdict.reason}", now)
            return
        if not up.logged_on:
            if route.cfg.on_exchange_down == "logout":
                conn.session.logout(now, f"exchange session {up.name} is not available")
            else:
                self._refuse(conn, msg, T.BRR_APPLICATION_NOT_AVAILABLE,
                             f"exchange session {up.name} is not logged on", now)
            self._audit_safe("exchange_down_refusal", session=route.name, client_seq=msg.seq_num)
            return
        header, body = split_for_carry(msg, conn.header_tags)
        assert up.protocol is not None and up.protocol.session is not None
        sent = up.protocol.session.send_app(msg.msg_type, body, now, header)
        if sent is None:
            self._refuse(conn, msg, T.BRR_APPLICATION_NOT_AVAILABLE,
                         f"exchange session {up.name} is not logged on", now)
            return
        up_seq = sent.seq_num
        if up_seq is not None and msg.seq_num is not None:
            route.seq_map[up_seq] = msg.seq_num
            if len(route.seq_map) > SEQ_MAP_SIZE:
                route.seq_map.popitem(last=False)
        up.protocol.pump()

    def exchange_to_client(self, route: Route, msg: Message, header_tags: frozenset[int], now: float) -> None:
        header, body = split_for_carry(msg, header_tags)
        if msg.msg_type == T.MT_BUSINESS_MESSAGE_REJECT:
            body = [
                (t, b"%d" % route.seq_map[int(v)] if v.isdigit() and int(v) in route.seq_map else v)
                if t == T.RefSeqNum else (t, v)
                for t, v in body
            ]
        conn = route.client
        if conn is not None and conn.session is not None and conn.session.is_logged_on:
            conn.session.send_app(msg.msg_type, body, now, header)
            conn.pump()
            return
        assert route.offline is not None
        stored = route.offline.store_app(msg.msg_type, body, now, header)
        self._audit_safe("stored_for_offline_client", session=route.name, client_seq=stored.seq_num,
                         msg_type=msg.msg_type.decode("latin-1"))

    def _refuse(self, conn: ClientProtocol, msg: Message, reason: int, text: str, now: float) -> None:
        """BusinessMessageReject(j) on the client leg; the message goes no further."""
        assert conn.session is not None
        body: list[Field] = []
        seq = msg.get(T.MsgSeqNum)
        if seq:
            body.append((T.RefSeqNum, seq))
        body.append((T.Text, text.encode("latin-1", "replace")))
        body.append((T.RefMsgType, msg.msg_type))
        ref_id = msg.get(T.ClOrdID) or msg.get(T.QuoteReqID)
        if ref_id:
            body.append((T.BusinessRejectRefID, ref_id))
        body.append((T.BusinessRejectReason, b"%d" % reason))
        conn.session.send_app(T.MT_BUSINESS_MESSAGE_REJECT, body, now)
        conn.pump()


def _s(v: bytes | None) -> str | None:
    return v.decode("latin-1") if v is not None else None


def _peer(peer: Any) -> str | None:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return None


class TLSConnection(asyncio.Protocol):
    """Accepted TCP socket with our own TLS layer; the FIX client leg sits on top.

    There is no plaintext path: application bytes reach ``ClientProtocol``
    only after the mutual-TLS handshake verified the client certificate.
    Every refused handshake is audited with OpenSSL's reason.
    """

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.tls = tls.ServerTLS(gw.server_ctx)
        self.raw: asyncio.Transport | None = None
        self.app: ClientProtocol | None = None
        self.peer: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._closing = False

    # -- transport interface for the application protocol ----------------------
    def write(self, data: bytes) -> None:
        if self.raw is not None and not self._closing:
            self.raw.write(self.tls.send(data))

    def writelines(self, frames: list[bytes]) -> None:
        self.write(b"".join(frames))

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self.raw is not None and not self.raw.is_closing():
            out = self.tls.close_notify()
            if out:
                self.raw.write(out)
            self.raw.close()

    def abort(self) -> None:
        self._closing = True
        if self.raw is not None:
            self.raw.abort()

    def is_closing(self) -> bool:
        return self._closing or self.raw is None or self.raw.is_closing()

    def pause_reading(self) -> None:
        if self.raw is not None and not self.raw.is_closing():
            self.raw.pause_reading()

    def resume_reading(self) -> None:
        if self.raw is not None and not self.raw.is_closing():
            self.raw.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self.tls.obj
        if self.raw is None:
            return default
        return self.raw.get_extra_info(name, default)

    # -- asyncio.Protocol for the raw socket -------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]
        self.peer = _peer(transport.get_extra_info("peername"))
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                import socket as _socket

                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if self.gw.stopping:
            transport.close()
            return
        self._deadline = asyncio.get_running_loop().call_later(10.0, self._handshake_timeout)

    def _handshake_timeout(self) -> None:
        if not self.tls.handshake_done:
            self._refuse("no TLS handshake within 10 s")

    def _refuse(self, reason: str) -> None:
        self.gw._audit_safe("tls_refused", peer=self.peer, reason=reason)
        log.info("tls_refused", peer=self.peer, reason=reason)
        if self.raw is not None:
            out = self.tls.pending_output()  # the alert tells the client why
            if out:
                self.raw.write(out)
            self.raw.close()
        self._closing = True

    def data_received(self, data: bytes) -> None:
        was_done = self.tls.handshake_done
        try:
            plain = self.tls.receive(data)
        except tls.TLSRefused as exc:
            if was_done:
                self.gw._audit_safe("tls_error", peer=self.peer, reason=exc.reason)
                self.abort()
            else:
                self._refuse(exc.reason)
            return
        out = self.tls.pending_output()
        if out and self.raw is not None:
            self.raw.write(out)
        if self.tls.handshake_done and not was_done:
            if self._deadline is not None:
                self._deadline.cancel()
            self.app = ClientProtocol(self.gw)
            self.app.connection_made(self)  # type: ignore[arg-type]
        if plain and self.app is not None:
            self.app.data_received(plain)
        if self.tls.peer_closed:
            self.close()

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._deadline is not None:
            self._deadline.cancel()
        if self.app is not None:
            self.app.connection_lost(exc)
        elif not self.tls.handshake_done:
            self.gw._audit_safe("tls_refused", peer=self.peer, reason="closed before the handshake completed")


class ClientProtocol(SessionProtocol):
    """Client leg: mTLS identity, Logon routing, then the session."""

    def __init__(self, gw: Gateway) -> None:
        super().__init__()
        self.gw = gw
        self.identity: Identity | None = None
        self.route: Route | None = None
        self.framer = Framer(gw.cfg.gateway.max_frame)
        self.header_tags: frozenset[int] = T.STANDARD_HEADER_TAGS
        self._logon_timer: asyncio.TimerHandle | None = None
        self._pending_logon: Message | None = None  # mirror mode: waiting for the venue

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.gw.connections.add(self)
        ssl_obj = transport.get_extra_info("ssl_object")
        peer = _peer(self.peer)
        if self.gw.stopping:
            self.close_transport()
            return
        sans = tls.peer_uri_sans(ssl_obj)
        ident, why = self.gw.guard.identify(sans)
        if ident is None:
            self.gw._audit_safe("connection_refused", peer=peer, reason=why, uri_sans=sans)
            log.info("connection_refused", peer=peer, reason=why)
            self.close_transport()
            return
        self.identity = ident
        self.gw._audit_safe("connection_accepted", peer=peer, identity=ident.id,
                            tls=ssl_obj.version() if ssl_obj else None)
        loop = asyncio.get_running_loop()
        self._logon_timer = loop.call_later(self.gw.cfg.gateway.logon_timeout, self._logon_timeout)

    def _logon_timeout(self) -> None:
        if self.session is None:
            self.gw._audit_safe("logon_refused", peer=_peer(self.peer),
                                identity=self.identity.id if self.identity else None,
                                reason="no Logon within the logon timeout")
            self.close_transport()

    def data_received(self, data: bytes) -> None:
        if self.session is not None:
            self.session.receive_data(data, time.time())
            self.pump()
            return
        if self.identity is None:
            return
        self.framer.feed(data)
        if self._pending_logon is not None:
            return  # held in the framer until the exchange leg is up
        ev = self.framer.next_event()
        if ev is None:
            return
        if isinstance(ev, FrameGarbled):
            self._refuse_logon(f"garbled first message: {ev.reason}", None)
            return
        assert isinstance(ev, FrameReceived)
        self._first_message(ev.message)

    def _refuse_logon(self, reason: str, route: Route | None) -> None:
        self.gw._audit_safe("logon_refused", peer=_peer(self.peer),
                            identity=self.identity.id if self.identity else None,
                            session=route.name if route else None, reason=reason)
        log.info("logon_refused", peer=_peer(self.peer), reason=reason)
        self.close_transport()

    def _first_message(self, msg: Message) -> None:
        assert self.identity is not None
        sender = msg.get(T.SenderCompID) or b""
        target = msg.get(T.TargetCompID) or b""
        key = (msg.begin_string, sender, target)
        route = self.gw.routes.get(key)
        if route is None:
            self._refuse_logon(
                f"no session for BeginString(8)={_s(msg.begin_string)} SenderCompID(49)={_s(sender)} "
                f"TargetCompID(56)={_s(target)}", None)
            return
        if msg.msg_type != T.MT_LOGON:
            self._refuse_logon(f"first message is MsgType(35)={_s(msg.msg_type)}, not Logon(A)", route)
            return
        verdict = self.gw.guard.check_logon(self.identity, sender.decode("latin-1"))
        if not verdict.allowed:
            self._refuse_logon(verdict.reason, route)
            return
        if route.client is not None:
            self._refuse_logon(f"session {route.name} is already logged on (duplicate identity)", route)
            return
        if self._logon_timer is not None:
            self._logon_timer.cancel()
        route.client = self
        self.route = route
        if route.upstream.mirror and not route.upstream.logged_on:
            self._pending_logon = msg
            asyncio.get_running_loop().create_task(self._logon_after_upstream(route, msg))
            return
        self._start_session(route, msg)

    async def _logon_after_upstream(self, route: Route, msg: Message) -> None:
        ok = await route.upstream.open()
        self._pending_logon = None
        if self._closed or route.client is not self:
            if route.client is self:
                route.client = None
            route.upstream.close_mirror(time.time(), "client left before logon completed")
            return
        if not ok:
            route.client = None
            self._refuse_logon(f"exchange session {route.upstream.name} could not be logged on", route)
            return
        self._start_session(route, msg)

    def _start_session(self, route: Route, msg: Message) -> None:
        self.on_pause = route.client_write_paused
        cfg = route.client_config
        if cfg.validator is not None:
            self.header_tags = frozenset(cfg.validator.transport.header.tags)
        self.session = Session(cfg, route.client_store, self.framer)
        now = time.time()
        self.session.connection_made(now)
        self.session.receive_message(msg, now)
        self.session.receive_data(b"", now)
        self.pump()

    def on_event(self, event: Event, now: float) -> None:
        route = self.route
        if route is None:
            return
        if isinstance(event, AppMessageReceived):
            self.gw.client_to_exchange(route, self, event.message, now)
        elif isinstance(event, LoggedOn):
            self.gw._audit_safe("logon", session=route.name, identity=self.identity.id if self.identity else None,
                                peer=_peer(self.peer), heartbeat=event.heartbeat_interval,
                                reset=event.reset_seq_nums)
            log.info("logon", session=route.name, peer=_peer(self.peer))
        elif isinstance(event, LogonRefused):
            self.gw._audit_safe("logon_refused", session=route.name, peer=_peer(self.peer),
                                identity=self.identity.id if self.identity else None, reason=event.reason)
            log.info("logon_refused", session=route.name, reason=event.reason)
        elif isinstance(event, MessageRejected):
            self.gw._audit_safe("session_reject", session=route.name, ref_seq=event.ref_seq_num,
                                msg_type=_s(event.msg_type), reason=event.reason, tag=event.tag,
                                detail=event.detail)
        elif isinstance(event, FrameDropped):
            self.gw._audit_safe("frame_dropped", session=route.name, reason=event.reason, bytes=len(event.data))
        elif isinstance(event, LoggedOut):
            self.gw._audit_safe("logout", session=route.name, reason=event.reason, by_peer=event.by_peer)
        elif isinstance(event, Disconnected):
            self._release()

    def _release(self) -> None:
        route = self.route
        if route is not None and route.client is self:
            route.client = None
            if route.upstream.mirror and self._pending_logon is None:
                route.upstream.close_mirror(time.time(), "client session ended")

    def on_closed(self, exc: Exception | None) -> None:
        if self._logon_timer is not None:
            self._logon_timer.cancel()
        self._release()
        self.gw.connections.discard(self)


class UpstreamProtocol(SessionProtocol):
    def __init__(self, leg: UpstreamLeg) -> None:
        super().__init__()
        self.leg = leg

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
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

    def __init__(self, gw: Gateway, config: SessionConfig, store: FileStore, s: SessionConfigToml) -> None:
        self.gw = gw
        self.config = config
        self.store = store
        self.cfg = s.upstream
        self.mirror = s.upstream.mode == "mirror"
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
            self.gw._audit_safe("upstream_logout", leg=self.name, reason=text)
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
            self.gw._audit_safe("upstream_logon", leg=self.name, session=route.name)
            log.info("upstream_logon", leg=self.name)
            self._resolve_logon(True)
        elif isinstance(event, (LoggedOut, Disconnected)):
            if self.logged_on:
                self.gw._audit_safe("upstream_logout", leg=self.name, reason=getattr(event, "reason", ""))
            self.logged_on = False
            self._resolve_logon(False)
        elif isinstance(event, MessageRejected):
            self.gw._audit_safe("upstream_session_reject", leg=self.name, reason=event.reason, detail=event.detail)
        elif isinstance(event, LogonRefused):
            self.gw._audit_safe("upstream_logon_refused", leg=self.name, reason=event.reason)
            self._resolve_logon(False)

    def on_closed(self, proto: UpstreamProtocol) -> None:
        was_on = self.logged_on
        if was_on:
            self.gw._audit_safe("upstream_logout", leg=self.name, reason="connection lost")
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


def state_path(cfg: Config) -> Path:
    return cfg.resolve(cfg.gateway.state_dir)
