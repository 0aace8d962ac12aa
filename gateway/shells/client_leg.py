"""Client leg (edge): our own TLS layer, then the FIX acceptor session.

``TLSConnection`` owns the accepted socket and the server-side TLS state
(mutual TLS, every refusal audited); the connection caps are checked at
accept, the handshake rates when the ClientHello arrives
(``gateway/core/admission.py``).  Once the client certificate is verified,
``ClientProtocol`` refuses what can never be allowed (identity, zone, pin, a
zone from which the policy allows these roles nothing), then at Logon checks
the binding (CompID, signed Logon never seen before, device posture, the
person behind an MFA identity) and drives the client-leg ``Session``.
Application messages go to ``Gateway.client_to_exchange`` — a signed frame
this identity already used is refused first.  Full capture records parsed
frames with their secrets redacted, never raw reads.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import time
from typing import TYPE_CHECKING, Any

import structlog
from cryptography import x509

from gateway.core.fix import tags as T
from gateway.core.fix.codec import CapturingFramer as _CapturingFramer
from gateway.core.fix.codec import FrameEvent, FrameGarbled, Framer, FrameReceived, Message, ParseError, parse
from gateway.core.fix.redact import redact
from gateway.core.fix.session import (
    AppMessageReceived,
    Disconnected,
    Event,
    FrameDropped,
    LoggedOn,
    LoggedOut,
    LogonRefused,
    MessageRejected,
    Session,
)
from gateway.core.identity import Identity
from gateway.core.pipeline import Party
from gateway.core.records import text
from gateway.edges import tls
from gateway.shells.handoff import Relay
from gateway.shells.legs import SessionProtocol, peer_text, set_nodelay

if TYPE_CHECKING:
    from gateway.shells.ports import Hub
    from gateway.shells.route import Route

log = structlog.get_logger("fixgw.client_leg")


class ClientTransport(asyncio.Protocol):
    """What ``ClientProtocol`` writes to: a socket it does not own directly.

    Two kinds: ``TLSConnection`` (we accepted the TCP connection and run TLS
    on it) and ``RelayedConnection`` (another worker did, and relays the
    plaintext to us; see ``gateway/shells/handoff.py``).
    """

    def __init__(self, gw: Hub) -> None:
        self.gw = gw
        self.raw: asyncio.Transport | None = None
        self.app: ClientProtocol | Relay | None = None  # what sits on top
        self._closing = False

    # our socket's buffer filled / drained: the application tells the other leg
    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    def writelines(self, frames: list[bytes]) -> None:
        self.write(b"".join(frames))

    def write(self, data: bytes) -> None:
        if self.raw is not None and not self._closing:
            self.raw.write(data)

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


class TLSConnection(ClientTransport):
    """Accepted TCP socket with our own TLS layer; the FIX client leg sits on top.

    There is no plaintext path: application bytes reach ``ClientProtocol``
    only after the mutual-TLS handshake verified the client certificate.
    Every refused handshake is audited with OpenSSL's reason.  With several
    workers, a connection whose identity another worker owns gets a
    ``Relay`` on top instead, which carries the plaintext to the owner.
    """

    def __init__(self, gw: Hub) -> None:
        super().__init__(gw)
        self.tls = tls.ServerTLS(gw.server_ctx)
        self.peer: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._admitted: str | None = None  # the source counted by the gateway's admission
        self._hello = False  # the first bytes (the ClientHello) were charged to the handshake buckets
        self._rate_refused = False  # refused by admission: audited in aggregate, not one record each

    # -- transport interface for the application protocol ----------------------
    def write(self, data: bytes) -> None:
        if self.raw is not None and not self._closing:
            self.raw.write(self.tls.send(data))

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self.raw is not None and not self.raw.is_closing():
            out = self.tls.close_notify()
            if out:
                self.raw.write(out)
            self.raw.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self.tls.obj
        if self.raw is None:
            return default
        return self.raw.get_extra_info(name, default)

    def _application(self) -> ClientProtocol | Relay:
        """Our own session, or a relay to the worker that owns the certificate's identity."""
        w = self.gw.worker
        if w is not None:
            ident, _ = self.gw.guard.identify(tls.peer_uri_sans(self.tls.obj))
            owner = self.gw.partition.owner_of_identity(ident.id) if ident is not None else -1
            if ident is not None and owner not in (-1, w.index):
                return Relay(self.gw, owner, ident.id)
        return ClientProtocol(self.gw)

    # -- asyncio.Protocol for the raw socket -------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw: asyncio.Transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses
        self.raw = raw
        self.peer = peer_text(transport.get_extra_info("peername"))
        set_nodelay(transport)
        if self.gw.stopping:
            transport.close()
            return
        source = self.peer.rsplit(":", 1)[0] if self.peer else "?"
        refusal = self.gw.admission.admit(source, time.monotonic())
        if refusal is not None:  # before any TLS work; audited in aggregate by the gateway's tick
            self._closing = self._rate_refused = True
            raw.abort()
            return
        self._admitted = source
        raw.set_write_buffer_limits(high=self.gw.cfg.gateway.max_buffered_bytes)
        self._deadline = asyncio.get_running_loop().call_later(10.0, self._handshake_timeout)

    def _handshake_timeout(self) -> None:
        if not self.tls.handshake_done:
            self._refuse("no TLS handshake within 10 s")

    def _refuse(self, reason: str) -> None:
        self.gw.audit_event("tls_refused", peer=self.peer, reason=reason)
        log.info("tls_refused", peer=self.peer, reason=reason)
        if self.raw is not None:
            out = self.tls.pending_output()  # the alert tells the client why
            if out:
                self.raw.write(out)
            self.raw.close()
        self._closing = True

    def data_received(self, data: bytes) -> None:
        if not self._hello:
            # the ClientHello: the handshake is what costs, so this is where the rate is charged
            # (per source first, then the shared bucket); refusals are audited in aggregate
            self._hello = True
            if self._admitted is not None and self.gw.admission.hello(self._admitted, time.monotonic()):
                self._closing = self._rate_refused = True
                if self.raw is not None:
                    self.raw.abort()
                return
        was_done = self.tls.handshake_done
        try:
            plain = self.tls.receive(data)
        except tls.TLSRefused as exc:
            if was_done:
                self.gw.audit_event("tls_error", peer=self.peer, reason=exc.reason)
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
            self.app = self._application()
            self.app.connection_made(self)  # type: ignore[arg-type]
        if plain and self.app is not None:
            self.app.data_received(plain)
        if self.tls.peer_closed:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._admitted is not None:
            self.gw.admission.release(self._admitted)
            self._admitted = None
        if self._deadline is not None:
            self._deadline.cancel()
        if self.app is not None:
            self.app.connection_lost(exc)
        elif not self.tls.handshake_done and not self._rate_refused:
            self.gw.audit_event("tls_refused", peer=self.peer, reason="closed before the handshake completed")


class RelayedConnection(ClientTransport):
    """A client connection another worker accepted and terminated TLS for (``gateway/shells/handoff.py``).

    ``ssl_object`` answers with the verified leaf certificate and TLS version
    the accepting worker saw, ``peername`` with the client's real address, so
    ``ClientProtocol`` makes every check here as for a connection of its own.
    """

    def __init__(self, gw: Hub, ssl_object: Any, peer: tuple[Any, ...] | None, origin: int) -> None:
        super().__init__(gw)
        self.ssl_object, self.peername, self.origin = ssl_object, peer, origin

    def close(self) -> None:
        self._closing = True
        if self.raw is not None:
            self.raw.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self.ssl_object
        if name == "peername":
            return self.peername
        if name == "socket":
            return None  # a Unix stream: no TCP options to set
        return self.raw.get_extra_info(name, default) if self.raw is not None else default

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]
        assert self.raw is not None
        self.raw.set_write_buffer_limits(high=self.gw.cfg.gateway.max_buffered_bytes)
        self.app = ClientProtocol(self.gw)
        self.app.connection_made(self)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self.app is not None:
            self.app.data_received(data)

    def eof_received(self) -> bool:
        return False  # the accepting worker closed: so do we

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self.app is not None:
            self.app.connection_lost(exc)


class ClientProtocol(SessionProtocol):
    """Client leg: mTLS identity, Logon routing, then the session."""

    def __init__(self, gw: Hub) -> None:
        super().__init__()
        self.gw = gw
        self.identity: Identity | None = None
        self.route: Route | None = None
        self.framer = Framer(gw.cfg.gateway.max_frame)
        self.header_tags: frozenset[int] = T.STANDARD_HEADER_TAGS
        self._logon_timer: asyncio.TimerHandle | None = None
        self._pending_logon: Message | None = None  # mirror mode: waiting for the venue
        self.zone: str | None = None
        self.leaf_der = b""
        self.bad_signatures = 0  # consecutive application messages with a bad signature
        self.user: str | None = None  # the person, for identities with mfa = true
        self.posture = "unknown"  # last posture seen by enforcement
        self.roles: frozenset[str] = frozenset()
        self.peer_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        self.read_only = False  # set once a decision carried the read_only control
        self._capture_on = False  # every frame of the session into the audit stream (see ``full_capture``)
        self.cert_serial: int | None = None
        self.cert_not_after: float | None = None
        self.app_in = 0  # application messages from the client / delivered to it (admin API)
        self.app_out = 0
        self.last_decision: tuple[str, str, str, float] | None = None  # outcome, rules, MsgType, when
        self.party: Party | None = None  # the pipeline's view of the sender, built at the first message

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.gw.connections.add(self)
        ssl_obj = transport.get_extra_info("ssl_object")
        peer = peer_text(self.peer)
        if self.gw.stopping:
            self.close_transport()
            return
        sans = tls.peer_uri_sans(ssl_obj)
        ident, why = self.gw.guard.identify(sans)
        if ident is None:
            self.gw.audit_event("connection_refused", peer=peer, reason=why, uri_sans=sans)
            log.info("connection_refused", peer=peer, reason=why)
            self.close_transport()
            return
        listener = self.gw.cfg.listen.name if self.gw.cfg.listen else None
        self.zone = self.gw.guard.zone(self.peer[0] if self.peer else None, listener)
        self.leaf_der = ssl_obj.getpeercert(binary_form=True) or b""
        leaf = x509.load_der_x509_certificate(self.leaf_der)
        self.cert_serial = leaf.serial_number
        self.cert_not_after = leaf.not_valid_after_utc.timestamp()
        cut = self.gw.cut_reason(self.cert_serial, self.cert_not_after, ident.id, time.time())
        if cut is not None:
            self.gw.audit_event("connection_refused", peer=peer, identity=ident.id, reason=cut)
            log.info("connection_refused", peer=peer, reason=cut)
            self.close_transport()
            return
        verdict = self.gw.guard.check_connection(ident, self.zone, self.leaf_der)
        if verdict.allowed:  # a zone from which the policy can never allow this identity's roles anything
            verdict = self.gw.guard.check_reach(ident, self.zone, self.gw.policy, time.time())
        if not verdict.allowed:
            self.gw.audit_event("connection_refused", peer=peer, identity=ident.id, zone=self.zone,
                                rule=verdict.rule, reason=verdict.reason)
            log.info("connection_refused", peer=peer, reason=verdict.reason)
            self.close_transport()
            return
        self.identity = ident
        self.roles = frozenset(ident.roles)  # policy context, built once per connection
        try:
            self.peer_ip = ipaddress.ip_address(self.peer[0]) if self.peer else None
        except ValueError:
            self.peer_ip = None
        self.gw.audit_event("connection_accepted", peer=peer, identity=ident.id, zone=self.zone,
                            tls=ssl_obj.version() if ssl_obj else None)
        loop = asyncio.get_running_loop()
        self._logon_timer = loop.call_later(self.gw.cfg.gateway.logon_timeout, self._logon_timeout)

    def _logon_timeout(self) -> None:
        if self.session is None:
            self.gw.audit_event("logon_refused", peer=peer_text(self.peer),
                                identity=self.identity.id if self.identity else None,
                                reason="no Logon within the logon timeout")
            self.close_transport()

    def data_received(self, data: bytes) -> None:
        if self.session is not None:
            now = time.time()
            self.session.refusal_credit = self.gw.refusal_credit(self, now)
            self.session.receive_data(data, now)
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

    def _check_mfa(self, msg: Message) -> tuple[bool, str, str | None]:
        """(accepted, why, the user as records may name them): the person must be bound to this identity
        (``Guard.check_user``, before any password is looked at), then password + TOTP.  Every attempt is
        audited; a name that is not enrolled is recorded only as a keyed hash (``MFA.shown``)."""
        assert self.identity is not None
        mfa = self.gw.mfa
        user = (msg.get(T.Username) or b"").decode("latin-1")
        if mfa is None:
            return False, "no [users] configured", None
        if not user or T.Password not in msg:
            return False, "Username(553) and Password(554) are required for this identity", None
        shown = mfa.shown(user)
        bound = self.gw.guard.check_user(self.identity, user)
        if bound.allowed:
            ok, why = mfa.check(self.identity.id, user, (msg.get(T.Password) or b"").decode("latin-1"), time.time())
        else:
            ok, why = False, bound.reason
        self.gw.audit_event("mfa", identity=self.identity.id, user=shown, accepted=ok, reason=why,
                            peer=peer_text(self.peer))
        if ok:
            self.user = user
        return ok, why, shown

    def _refuse_logon(self, reason: str, route: Route | None, user: str | None = None) -> None:
        self.gw.audit_event("logon_refused", peer=peer_text(self.peer),
                            identity=self.identity.id if self.identity else None,
                            session=route.name if route else None, reason=reason,
                            **({"user": user} if user is not None else {}))
        log.info("logon_refused", peer=peer_text(self.peer), reason=reason)
        self.close_transport()

    def _posture_refusal(self) -> str | None:
        """Posture rules apply at Logon too: a device already at a level the policy logs sessions out on
        never gets a session (not only one that turns so while logged on)."""
        assert self.identity is not None
        why = self.gw.posture_refusal(self.identity.id, time.time())
        return f"{why}: the policy logs such sessions out, so the Logon is refused" if why else None

    def _first_message(self, msg: Message) -> None:
        assert self.identity is not None
        sender = msg.get(T.SenderCompID) or b""
        target = msg.get(T.TargetCompID) or b""
        key = (msg.begin_string, sender, target)
        route = self.gw.routes.get(key)
        if route is None:
            self._refuse_logon(
                f"no session for BeginString(8)={text(msg.begin_string)} SenderCompID(49)={text(sender)} "
                f"TargetCompID(56)={text(target)}", None)
            return
        if msg.msg_type != T.MT_LOGON:
            self._refuse_logon(f"first message is MsgType(35)={text(msg.msg_type)}, not Logon(A)", route)
            return
        verdict = self.gw.guard.check_logon(self.identity, msg, time.time(), route.client_config.max_latency)
        if not verdict.allowed:
            self._refuse_logon(verdict.reason, route)
            return
        posture = self._posture_refusal()  # before MFA: a refused device does not spend a TOTP code
        if posture is not None:
            self._refuse_logon(posture, route)
            return
        if self.identity.mfa:
            ok, why, shown = self._check_mfa(msg)
            if not ok:
                self._refuse_logon(f"MFA: {why}", route, shown)
                return
        # Username(553)/Password(554) stop here: the session (and FIX.4.2's
        # dictionary, which lacks them) never sees them, nor does any log.
        if T.Username in msg or T.Password in msg:
            msg = Message(msg.begin_string, msg.msg_type,
                          [f for f in msg.fields if f[0] not in (T.Username, T.Password)], b"")
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
        posture = self._posture_refusal() if route.upstream.mirror else None  # it may have changed meanwhile
        if posture is not None:
            self._refuse_logon(posture, route, self.user)
            return
        self.on_pause = route.client_write_paused
        if self.identity is not None:  # baseline: enforcement reacts to posture *changes*
            self.posture = self.gw.posture.level(self.identity.id, time.time())
        cfg = route.client_config
        if self.identity is not None and self.identity.sign_outbound and self.gw.outbound_signer is not None:
            cfg = dataclasses.replace(cfg, signer=self.gw.outbound_signer)
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
            if self.peer is not None:  # this source may use the handshake reserve from now on
                self.gw.admission.good(self.peer[0], time.monotonic())
            # a new FIX session (sequence numbers start again): ClOrdIDs of the last one are not duplicates
            if event.reset_seq_nums or (self.session is not None and self.session.store.next_target_seq() <= 2):
                self.gw.session_reset(route)
            self.gw.audit_event("logon", session=route.name, identity=self.identity.id if self.identity else None,
                                user=self.user, peer=peer_text(self.peer), heartbeat=event.heartbeat_interval,
                                reset=event.reset_seq_nums)
            log.info("logon", session=route.name, peer=peer_text(self.peer))
        elif isinstance(event, LogonRefused):
            self.gw.audit_event("logon_refused", session=route.name, peer=peer_text(self.peer),
                                identity=self.identity.id if self.identity else None, reason=event.reason)
            log.info("logon_refused", session=route.name, reason=event.reason)
        elif isinstance(event, MessageRejected):
            fields = {"ref_seq": event.ref_seq_num, "msg_type": text(event.msg_type), "reason": event.reason,
                      "tag": event.tag, "detail": event.detail}
            if event.decided:  # the pipeline's refusal (a bad signature): it paid the refusal budget already
                self.gw.audit_event("session_reject", session=route.name, **fields)
            else:  # the session layer's own: the malformed-message budget
                self.gw.session_refused(route, self, event.ref_seq_num, "session_reject", fields, now)
        elif isinstance(event, FrameDropped):
            self.gw.session_refused(route, self, None, "frame_dropped",
                                    {"reason": event.reason, "bytes": len(event.data)}, now)
        elif isinstance(event, LoggedOut):
            self.gw.audit_event("logout", session=route.name, reason=event.reason, by_peer=event.by_peer)
        elif isinstance(event, Disconnected):
            self._release()

    @property
    def full_capture(self) -> bool:
        """Every frame of the session into the audit stream, secret values redacted (a decision's
        ``full_capture`` obligation turns it on; from the next frame on)."""
        return self._capture_on

    @full_capture.setter
    def full_capture(self, on: bool) -> None:
        if self.session is not None:
            framer = self.session.framer
            if on and not isinstance(framer, _CapturingFramer):
                self.session.framer = _CapturingFramer(framer, lambda ev: self._capture("in", ev))
            elif not on and isinstance(framer, _CapturingFramer):
                self.session.framer = framer.inner
        self._capture_on = on

    def on_frames_out(self, frames: list[bytes]) -> None:
        if self._capture_on:
            for frame in frames:
                try:
                    ev: FrameEvent = FrameReceived(parse(frame))
                except ParseError as exc:
                    ev = FrameGarbled(frame, str(exc))
                self._capture("out", ev)

    def _capture(self, direction: str, ev: FrameEvent) -> None:
        """One captured frame: parsed, secret values redacted (``gateway/core/fix/redact.py``), base64.
        A garbled frame cannot be parsed, so nothing of it is kept but its size and why it was garbled."""
        where = {"session": self.route.name if self.route else None,
                 "identity": self.identity.id if self.identity else None, "direction": direction}
        if isinstance(ev, FrameGarbled):
            self.gw.audit_event("capture", **where, garbled=ev.reason, bytes=len(ev.data))
            return
        audit = self.gw.cfg.audit
        data, hidden = redact(ev.message, audit.redact_tags if audit is not None else ())
        self.gw.audit_event("capture", **where, data=base64.b64encode(data).decode(), redacted=hidden)

    def revoke(self, reason: str, now: float) -> None:
        """Identity or certificate no longer good: Logout with the reason, then close now."""
        if self.session is not None and self.session.is_logged_on:
            self.session.logout(now, reason)
            self.pump()
        self.close_transport()
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
