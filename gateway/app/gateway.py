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
import socket
import ssl
import time
from collections import ChainMap, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from cryptography import x509

from gateway.core.admission import Admission
from gateway.core.answers import ORDER_TYPES, business_reject, cancel_refusal, order_refusal
from gateway.core.fix import tags as T
from gateway.core.fix.carry import split_for_carry
from gateway.core.fix.codec import Field, Message
from gateway.core.fix.dictionary import ValidationSettings, Validator, standard_validator
from gateway.core.fix.session import Role, Session, SessionConfig
from gateway.core.fix.signature import Signer
from gateway.core.fix.utctime import format_utc_timestamp
from gateway.core.guard import Guard
from gateway.core.identity import zone_entries
from gateway.core.partition import partition
from gateway.core.policy.anomaly import AnomalyDetector, AnomalySettings
from gateway.core.policy.engine import Context, Decision, Policy
from gateway.core.policy.risk import TERMINAL_STATUS, Limits, RiskBook
from gateway.edges import tls
from gateway.edges.audit import AuditError, AuditLog, load_encryption_key, load_or_create_key
from gateway.edges.config import Config, ConfigError, SessionConfigToml
from gateway.edges.feeds import FeedError, JitGrants, KillSwitch, PostureFeed, Watched, read_json, write_json
from gateway.edges.metrics import Metrics
from gateway.edges.mfa import MFA
from gateway.edges.policy_file import PolicySpec
from gateway.edges.policy_file import load as load_policy
from gateway.edges.registry import check_private_file, load_registry, zone_table
from gateway.edges.replicate import Replicator
from gateway.edges.revocation import RevocationError, Revoked, load_crl, load_denylist, mtime
from gateway.edges.store import FileStore, session_dir_name
from gateway.sdk import load_signer
from gateway.shells.handoff import Relay, Worker

if TYPE_CHECKING:
    from gateway.shells.admin import AdminAPI
    from gateway.shells.client_leg import ClientProtocol
    from gateway.shells.exchange_leg import UpstreamLeg

log = structlog.get_logger("fixgw.proxy")

SEQ_MAP_SIZE = 100_000
#: Cancels: allowed through a kill switch, and optionally through an audit outage.
CANCEL_TYPES = frozenset({T.MT_ORDER_CANCEL_REQUEST, b"q"})
#: What a read-only session may never send.
WRITE_TYPES = ORDER_TYPES | {T.MT_ORDER_CANCEL_REQUEST, b"q", T.MT_QUOTE_REQUEST, b"BE"}


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
    """One gateway process: with ``worker`` set, one of several that share the
    listener and each own a fixed share of the identities (``gateway/core/partition.py``)."""

    def __init__(self, cfg: Config, worker: Worker | None = None) -> None:
        self.cfg = cfg
        assert cfg.listen is not None and cfg.audit is not None
        self.state_dir = cfg.resolve(cfg.gateway.state_dir)
        self.worker = worker
        self.partition = partition(cfg)
        self.relays: set[Relay] = set()  # connections we accepted whose session another worker owns
        self._inbox: socket.socket | None = None
        ac = cfg.audit
        try:
            audit_key = load_or_create_key(cfg.resolve(ac.key) if ac.key else self.state_dir / "audit-signing.key")
        except (AuditError, ValueError, OSError) as exc:
            raise ConfigError(cfg.path, "audit.key", str(exc)) from None
        self.audit = AuditLog(audit_folder(cfg, worker.index if worker else None), audit_key, ac.checkpoint_every,
                              ac.checkpoint_ms, int(ac.max_segment_mb * 1024 * 1024), ac.max_segment_hours * 3600)
        if ac.encryption_key:
            try:
                self.audit.aead = load_encryption_key(cfg.resolve(ac.encryption_key))
            except (AuditError, OSError, ValueError) as exc:
                raise ConfigError(cfg.path, "audit.encryption_key", str(exc)) from None
        if ac.inject_enospc_if_exists:
            self.audit.fault_file = cfg.resolve(ac.inject_enospc_if_exists)
        self.audit_outage: dict[str, Any] | None = None  # since when writes fail, what was refused
        self._late_records: list[tuple[str, dict[str, Any]]] = []  # cancels let through during an outage
        self._held: list[Callable[[], None]] = []  # exchange messages waiting for the stream to recover
        self.guard = Guard(cfg.gateway.trust_domain, load_registry(cfg), zone_table(cfg))
        self.outbound_signer: Signer | None = None
        if cfg.gateway.signing_key:
            key_path = cfg.resolve(cfg.gateway.signing_key)
            check_private_file(key_path, "gateway.signing_key")
            try:
                self.outbound_signer = load_signer("ed25519", key_path)
            except (OSError, ValueError) as exc:
                raise ConfigError(cfg.path, "gateway.signing_key", f"{key_path}: {exc}") from None
        self.mfa: MFA | None = None
        if cfg.users is not None:
            self.mfa = MFA(cfg.resolve(cfg.users.file), cfg.resolve(cfg.users.secrets),
                           self.state_dir / "mfa-used.json", cfg.users.max_failures,
                           cfg.users.failure_window, cfg.users.lockout, shared=worker is not None)
        self.routes: dict[tuple[bytes, bytes, bytes], Route] = {}
        self.server_ctx = tls.server_context(
            cfg.resolve(cfg.listen.cert), cfg.resolve(cfg.listen.key), cfg.resolve(cfg.listen.ca)
        )
        self.ca_certs = x509.load_pem_x509_certificates(cfg.resolve(cfg.listen.ca).read_bytes())
        rc = cfg.revocation
        self.crl_path = cfg.resolve(rc.crl) if rc.crl else None
        self.denylist_path = cfg.resolve(rc.denylist) if rc.denylist else None
        self.revoked = Revoked()
        self._mtimes: dict[str, float | None] = {}
        try:
            self._reload(force=True, strict=True)
        except RevocationError as exc:
            raise ConfigError(cfg.path, "revocation", str(exc)) from None
        self._watch_task: asyncio.Task[None] | None = None
        self.admin: AdminAPI | None = None
        self.replicator: Replicator | None = None
        # (audit seq, forward, refuse-if-the-write-fails or None to keep waiting), FIFO
        self._pending: deque[tuple[int, Callable[[], None], Callable[[], None] | None]] = deque()
        # policy and the context that changes while sessions live
        self.policy: Policy | None = None
        self.policy_spec: PolicySpec | None = None
        self.policy_file = Watched(cfg.resolve(cfg.policy.file) if cfg.policy.file else None)
        self.policy_signer = None
        if cfg.policy.signer_key:
            from gateway.edges.registry import load_key

            key = load_key("ed25519", cfg.resolve(cfg.policy.signer_key), cfg.path, "policy.signer_key")
            assert not isinstance(key, bytes)
            self.policy_signer = key
        if self.policy_file.path is not None:
            self.policy, self.policy_spec = load_policy(self.policy_file.path, self.policy_signer)
            self.policy_file.changed()
            self._apply_zones()
        ttl = self.policy_spec.posture.ttl if self.policy_spec else 300.0
        self.posture = PostureFeed(Watched(cfg.resolve(cfg.posture.file) if cfg.posture.file else None), ttl)
        self.metrics = Metrics()
        self.risk_books: dict[str, RiskBook] = {}
        self.anomaly = AnomalyDetector(self.policy_spec.anomaly.compile() if self.policy_spec else AnomalySettings())
        self.last_px: dict[bytes, float] = {}  # LastPx(31) per Symbol(55) seen from the exchanges
        self._references: Mapping[bytes, float] = {}
        self._account_limits: dict[bytes, Limits] = {}
        self._compile_risk()
        self.jit = JitGrants(Watched(self.state_dir / "jit.json"))
        self.kill = KillSwitch(Watched(self.state_dir / "killswitch.json"))
        for feed in (self.posture, self.jit, self.kill):
            feed.file.changed()
            try:
                feed.reload()
            except FeedError as exc:
                raise ConfigError(cfg.path, "feeds", str(exc)) from None
        try:  # identities an administrator revoked through the admin API (identity -> reason)
            self.admin_revoked: dict[str, str] = self._read_admin_revoked()
        except FeedError as exc:
            raise ConfigError(cfg.path, "gateway.state_dir", str(exc)) from None
        g = cfg.gateway
        n = worker.count if worker else 1  # the limits are the gateway's: each worker enforces its share
        self.admission = Admission(-(-g.max_connections // n), -(-g.max_connections_per_source // n),
                                   g.handshake_rate / n, g.handshake_burst / n)
        self.server: asyncio.AbstractServer | None = None
        self.servers: list[asyncio.AbstractServer] = []  # more listeners (a worker's own port)
        self.connections: set[ClientProtocol] = set()
        self._exec_ids = 0
        self.stopping = False
        for s in cfg.sessions:
            if self.owns(s):
                self._add_route(s)

    def owns(self, s: SessionConfigToml) -> bool:
        """Is this session ours (always, unless one of several workers)?"""
        return self.worker is None or self.partition.owner_of_session(s.client_comp_id) == self.worker.index

    def _validator(self, s: SessionConfigToml, settings: ValidationSettings) -> Validator:
        """The route's dictionaries (shipped, or the user's own) with ``settings``."""
        return standard_validator(
            s.begin_string.encode(),
            settings,
            self.cfg.resolve(s.dictionary) if s.dictionary else None,
            self.cfg.resolve(s.app_dictionary) if s.app_dictionary else None,
        )

    def _add_route(self, s: SessionConfigToml) -> None:
        begin = s.begin_string.encode()
        fixt = begin == b"FIXT.1.1"
        appl = (s.default_appl_ver_id or ("9" if fixt else "")).encode() or None
        client_validator = self._validator(s, ValidationSettings(
            check_fields_have_values=s.validate_fields_have_values,
            check_fields_out_of_order=s.validate_fields_out_of_order,
            check_user_defined_fields=s.validate_user_defined_fields,
            allow_unknown_message_fields=s.allow_unknown_message_fields,
        )) if s.validate else None
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
        up_validator = self._validator(
            s, ValidationSettings(allow_unknown_message_fields=up.allow_unknown_message_fields)
        ) if up.validate else None
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
        from gateway.shells.exchange_leg import UpstreamLeg

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
        self.audit.record("gateway_started", sessions=len(self.routes), listen=listen,
                          **({"worker": self.worker.index, "workers": self.worker.count} if self.worker else {}))
        if self.policy is not None:
            self.audit.record("policy_loaded", sha256=self.policy.sha256, rules=len(self.policy.rules),
                              shadow=self.policy.global_shadow, file=str(self.policy_file.path))
            self.metrics.policy_rules.set(len(self.policy.rules))
        for route in self.routes.values():
            route.upstream.start()
        self._watch_task = loop.create_task(self._watch())
        if self.cfg.audit is not None and self.cfg.audit.nats is not None:
            nc = self.cfg.audit.nats
            suffix = f"-w{self.worker.index}" if self.worker else ""  # one chain per worker, one message id space each
            self.replicator = Replicator(self.audit.folder, nc.url, nc.stream, nc.subject, nc.instance + suffix,
                                         nc.replicas, self.state_dir / f"nats-cursor{suffix}.json",
                                         lambda text: self._audit_safe("alert", what=text))
            self.replicator.start()
        def on_thread(fn: Callable[..., None]) -> Callable[..., None]:
            def hop(*args: Any) -> None:  # called on the writer thread
                try:
                    loop.call_soon_threadsafe(fn, *args)
                except RuntimeError:
                    pass  # the loop is gone: shutting down
            return hop

        ac = self.cfg.audit
        if ac is not None and ac.writer == "thread":
            self.audit.start_writer(ac.durability == "fsync", on_thread(self._on_durable),
                                    on_thread(self._on_audit_failed), defer=loop.call_soon)
        if self.cfg.admin is not None:
            from gateway.shells.admin import AdminAPI

            self.admin = AdminAPI(self)
            # each worker serves its own sessions and metrics: worker k on admin.port + k
            await self.admin.start(self.cfg.admin.host, self.cfg.admin.port + (self.worker.index if self.worker else 0))
        from gateway.shells.client_leg import TLSConnection

        if self.worker is not None:
            from gateway.shells.handoff import listen_inbox

            listen_inbox(self)
        self.server = await loop.create_server(
            lambda: TLSConnection(self),
            self.cfg.listen.host,
            self.cfg.listen.port,
            reuse_address=True,
            reuse_port=self.worker is not None,  # the kernel spreads new connections over the workers
        )
        base = self.cfg.listen.worker_port_base
        if self.worker is not None and base is not None:  # this worker's own port: no hand-off for its clients
            self.servers.append(await loop.create_server(lambda: TLSConnection(self), self.cfg.listen.host,
                                                         base + self.worker.index, reuse_address=True))
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

    # -- revocation and rotation without restart ------------------------------------
    def _watched(self) -> dict[str, Path | None]:
        assert self.cfg.listen is not None
        return {"crl": self.crl_path, "denylist": self.denylist_path,
                "server_cert": self.cfg.resolve(self.cfg.listen.cert),
                "server_key": self.cfg.resolve(self.cfg.listen.key),
                # with several workers, a revocation through one worker's admin API reaches all
                "admin_revoked": self.admin_revoked_path if self.worker is not None else None}

    def _reload(self, force: bool = False, strict: bool = False) -> None:
        """Reload what changed on disk; a failure keeps the last good data (fail closed)."""
        changed = {k for k, p in self._watched().items() if force or mtime(p) != self._mtimes.get(k)}
        if not changed:
            return
        for k, p in self._watched().items():
            self._mtimes[k] = mtime(p)
        try:
            if changed & {"crl", "denylist"}:
                serials, next_update = (load_crl(self.crl_path, self.ca_certs) if self.crl_path
                                        else (frozenset(), None))
                deny = load_denylist(self.denylist_path) if self.denylist_path else frozenset()
                self.revoked = Revoked(serials, deny, next_update)
                self.guard.denylist = deny
                if not force:
                    self._audit_safe("revocation_reloaded", revoked_serials=len(serials), denylisted=len(deny))
        except RevocationError as exc:
            if strict:
                raise
            self._audit_safe("alert", what="revocation data not reloaded; last good data stays in force",
                             reason=str(exc))
        if "admin_revoked" in changed and not force:
            try:
                self.admin_revoked = self._read_admin_revoked()
            except FeedError as exc:
                self._audit_safe("alert", what="admin revocations not reloaded; last good list stays",
                                 reason=str(exc))
        if changed & {"server_cert", "server_key"} and not force:
            assert self.cfg.listen is not None
            try:
                self.server_ctx = tls.server_context(self.cfg.resolve(self.cfg.listen.cert),
                                                     self.cfg.resolve(self.cfg.listen.key),
                                                     self.cfg.resolve(self.cfg.listen.ca))
                self._audit_safe("server_cert_reloaded")
                log.info("server_cert_reloaded")
            except tls.TLSConfigError as exc:  # e.g. key written before the cert: retry next tick
                self._mtimes.pop("server_cert", None)
                self._audit_safe("alert", what="server certificate not reloaded; old one stays in use",
                                 reason=str(exc))

    def _apply_zones(self) -> None:
        zones = dict(self.cfg.zones)
        if self.policy_spec is not None:
            zones.update(self.policy_spec.zones)
        self.guard.zones = zone_entries(zones)

    def _reload_policy(self, force: bool = False) -> None:
        if self.policy_file.path is None or not (self.policy_file.changed() or force):
            return
        try:
            self.policy, self.policy_spec = load_policy(self.policy_file.path, self.policy_signer)
        except ConfigError as exc:  # the old policy keeps running; say exactly what is wrong
            self._audit_safe("alert", what="policy not reloaded; the previous policy stays in force",
                             reason=str(exc))
            log.error("policy_reload_failed", error=str(exc))
            return
        self._apply_zones()
        self.posture.ttl = self.policy_spec.posture.ttl
        self.anomaly.settings = self.policy_spec.anomaly.compile()  # same baselines, new settings
        for ident_id, book in self.risk_books.items():  # new limits, same state
            book.limits = self._limits(ident_id)
        self._compile_risk()
        self._audit_safe("policy_loaded", sha256=self.policy.sha256, rules=len(self.policy.rules),
                         shadow=self.policy.global_shadow, file=str(self.policy_file.path))
        self.metrics.policy_rules.set(len(self.policy.rules))
        log.info("policy_loaded", sha256=self.policy.sha256, rules=len(self.policy.rules))

    def _reload_feeds(self, force: bool = False) -> bool:
        """Reload posture, JIT grants and kill switch when they changed; True if any did."""
        any_changed = False
        for name, feed in (("posture", self.posture), ("jit", self.jit), ("kill_switch", self.kill)):
            if feed.file.path is None or not (feed.file.changed() or force):
                continue
            try:
                feed.reload()
                any_changed = True
                if name == "kill_switch":
                    self._audit_safe("kill_switch", everything=self.kill.everything,
                                     identities=sorted(self.kill.identities), accounts=sorted(self.kill.accounts))
            except FeedError as exc:
                self._audit_safe("alert", what=f"{name} feed not reloaded; last good state stays", reason=str(exc))
        return any_changed

    def share_posture(self, assertions: list[tuple[str, str]], now: float) -> list[int]:
        """Posture pushed to this worker's admin API goes to every worker (each owns other sessions);
        returns the workers that could not be told."""
        if self.worker is None:
            return []
        from gateway.shells.handoff import broadcast

        return broadcast(self.worker, {"posture": assertions, "at": now, "from": self.worker.index})

    def apply_posture(self, assertions: list[tuple[str, str]], at: float, origin: int | None = None) -> None:
        """Assertions from the admin API (ours or another worker's): in force now, live sessions re-decided."""
        for ident, level in assertions:
            self.posture.push(ident, level, at)
        if origin is not None:
            self._audit_safe("posture_shared", origin_worker=origin, assertions=[f"{i}={lv}" for i, lv in assertions])
        self.enforce_context(time.time())

    def enforce_context(self, now: float) -> None:
        """Re-decide live sessions when posture changed (or went stale): log out where policy says."""
        logout_on = set(self.policy_spec.posture.logout_on) if self.policy_spec else set()
        for conn in list(self.connections):
            if conn.identity is None or conn.session is None or not conn.session.is_logged_on:
                continue
            level = self.posture.level(conn.identity.id, now)
            if level == conn.posture:
                continue
            self._audit_safe("posture_change", identity=conn.identity.id, old=conn.posture, new=level,
                             session=conn.route.name if conn.route else None)
            conn.posture = level
            if level in logout_on:
                reason = f"device posture is {level}"
                if self.policy_spec is not None and self.policy_spec.posture.cancel_open_orders and conn.route:
                    self.cancel_open_orders(conn.route, reason, now)
                self._audit_safe("session_revoked", identity=conn.identity.id, reason=reason,
                                 session=conn.route.name if conn.route else None)
                conn.revoke(reason, now)

    def trip_kill_switch(self, identity: str, reason: str) -> None:
        """Automatic kill switch for one identity: in force now, persisted for operators and restarts."""
        self.kill.identities = self.kill.identities | {identity}
        self._audit_safe("kill_switch", identities=sorted(self.kill.identities), reason=reason, automatic=True)
        path = self.kill.file.path
        if path is not None:
            try:
                data = read_json(path)
                data["identities"] = sorted(set(data.get("identities", [])) | {identity})
                write_json(path, data)
                self.kill.file.changed()  # our own write: no reload needed
            except (FeedError, OSError) as exc:
                self._audit_safe("alert", what="kill switch not persisted (in force in memory)", reason=str(exc))

    def cancel_open_orders(self, route: Route, reason: str, now: float) -> None:
        """Send OrderCancelRequest(F) upstream for every open order of the route (before a forced logout)."""
        up = route.upstream
        if not route.open_orders or not up.logged_on or up.protocol is None or up.protocol.session is None:
            return
        for orig, (side, symbol, qty) in list(route.open_orders.items()):
            self._exec_ids += 1
            cl = b"GW-CXL-%d" % self._exec_ids
            body: list[Field] = [(T.ClOrdID, cl), (T.OrderQty, qty), (T.OrigClOrdID, orig), (T.Side, side),
                                 (T.Symbol, symbol), (T.TransactTime, format_utc_timestamp(now))]
            sent = up.protocol.session.send_app(T.MT_ORDER_CANCEL_REQUEST, body, now)
            self._audit_safe("cancel_on_logout", session=route.name, orig_cl_ord_id=_s(orig), cl_ord_id=_s(cl),
                             reason=reason, upstream_seq=sent.seq_num if sent else None)
        up.protocol.pump()

    def decide(self, conn: ClientProtocol, msg: Message, now: float, direction: str) -> Decision:
        """Kill switch, read-only sessions, then the policy (or the explicit allow_all)."""
        ident = conn.identity
        assert ident is not None
        mt = msg.msg_type
        if direction == "outbound":
            if mt in ORDER_TYPES:
                block = self.kill.blocks(ident.id, _s(msg.get(T.Account)))
                if block:
                    return Decision(False, "deny", ("kill-switch",), frozenset(), block)
            if conn.read_only and mt in WRITE_TYPES:
                return Decision(False, "deny", ("read-only",), frozenset(), "the session is read-only")
        if self.policy is None:
            if self.cfg.policy.allow_all:
                return Decision(True, "allow", ("allow_all",), frozenset(), "policy.allow_all is set")
            return Decision(False, "deny", ("default-deny",), frozenset(), "no policy is loaded (default deny)")
        ctx = Context(ident.id, conn.roles, conn.zone, self.posture.level(ident.id, now),
                      conn.user is not None, conn.peer_ip, self.jit.active(ident.id, now), now, direction)
        d = self.policy.decide(ctx, msg)
        if d.allowed and direction == "outbound":
            if "read_only" in d.controls:
                conn.read_only = True
            if "full_capture" in d.controls and not conn.full_capture:
                conn.full_capture = True
                self._audit_safe("full_capture_on", identity=ident.id,
                                 session=conn.route.name if conn.route else None)
        return d

    def _compile_risk(self) -> None:
        """Per-load risk inputs, so the per-order path only looks things up."""
        spec = self.policy_spec
        configured = {s.encode(): p for s, p in spec.risk.reference_prices.items()} if spec else {}
        # configured prices win; otherwise the last LastPx(31) seen (a live view, no copy per order)
        self._references = ChainMap(configured, self.last_px)
        self._account_limits = {a.encode(): ls.compile() for a, ls in spec.risk.accounts.items()} if spec else {}

    def _limits(self, identity: str) -> Limits:
        spec = self.policy_spec
        if spec is None:
            return Limits(duplicate_clordid=False)
        base = spec.risk.default.compile()
        own = spec.risk.identities.get(identity)
        return base.merged(own.compile() if own else None)

    def risk_check(self, ident_id: str, msg: Message, now: float) -> Decision | None:
        """Pre-trade risk after policy allowed; a refusal names the check."""
        if self.policy_spec is None:
            return None
        book = self.risk_books.get(ident_id)
        if book is None:
            book = self.risk_books[ident_id] = RiskBook(self._limits(ident_id))
        account = msg.get(T.Account)
        acct = self._account_limits.get(account) if account else None
        hit = book.check(msg, now, acct, self._references)
        if hit is None:
            return None
        return Decision(False, "deny", (hit[0],), frozenset(), hit[1])

    def reload_now(self) -> None:
        """SIGHUP: reload revocation data and the server certificate at once."""
        self._reload(force=True)
        self._reload_policy(force=True)
        self._reload_feeds(force=True)
        self._audit_safe("reload", trigger="SIGHUP")
        self.enforce(time.time())
        self.enforce_context(time.time())

    def cut_reason(self, serial: int | None, not_after: float | None, identity: str | None, now: float) -> str | None:
        if not_after is not None and now > not_after:
            return "client certificate expired"
        if serial is not None and serial in self.revoked.serials:
            return f"client certificate serial {serial:x} is revoked (CRL)"
        if identity is not None and identity in self.revoked.denylist:
            return f"identity {identity} is on the denylist"
        if identity is not None and identity in self.admin_revoked:
            return f"identity {identity} was revoked by an administrator: {self.admin_revoked[identity]}"
        return None

    def _audit_refusals(self) -> None:
        """Connections refused by the admission limits since the last tick: one record, counts per source."""
        refused = self.admission.drain()
        for reason, _, n in refused:
            self.metrics.connections_refused.labels(reason.split(":", 1)[0]).inc(n)
        self._audit_safe("connections_refused", total=sum(n for _, _, n in refused),
                         by=[{"reason": r, "source": src, "count": n} for r, src, n in refused])
        log.warning("connections_refused", total=sum(n for _, _, n in refused))

    def refresh_metrics(self, now: float) -> None:
        """Gauges that describe the present, set just before a scrape."""
        m = self.metrics
        logged_on = sum(1 for c in self.connections if c.session is not None and c.session.is_logged_on)
        m.sessions.labels("logged_on").set(logged_on)
        m.sessions.labels("connected_not_logged_on").set(len(self.connections) - logged_on)
        for route in self.routes.values():
            m.upstream_up.labels(route.name).set(1 if route.upstream.logged_on else 0)
        m.audit_lag.set(self.audit.writer.lag if self.audit.writer is not None else 0)
        for conn in self.connections:
            if conn.identity is not None:
                m.posture_age.labels(conn.identity.id).set(self.posture.age(conn.identity.id, now))

    # -- operator actions (the admin API calls these; each is audited there) ----------
    @property
    def admin_revoked_path(self) -> Path:
        return self.state_dir / "admin-revoked.json"

    def admin_revoke(self, identity: str, reason: str, by: str, now: float) -> None:
        """Refuse the identity from now on (persisted across restarts) and cut its live sessions."""
        self._merge_admin_revoked()
        self.admin_revoked[identity] = f"{reason} (by {by})"
        write_json(self.admin_revoked_path, self.admin_revoked)
        self.enforce(now)

    def _read_admin_revoked(self) -> dict[str, str]:
        """``state_dir/admin-revoked.json``: identity -> reason (raises FeedError)."""
        return {str(k): str(v) for k, v in read_json(self.admin_revoked_path).items()}

    def _merge_admin_revoked(self) -> None:
        """Several workers write the same file: start from what is on disk now."""
        if self.worker is not None:
            try:
                self.admin_revoked = self._read_admin_revoked()
            except FeedError:
                pass  # keep ours; the write below replaces the unreadable file

    def admin_reinstate(self, identity: str) -> bool:
        self._merge_admin_revoked()
        if self.admin_revoked.pop(identity, None) is None:
            return False
        write_json(self.admin_revoked_path, self.admin_revoked)
        return True

    def reload_policy_now(self) -> str | None:
        """Reload the policy file at once; returns the error when the file is refused."""
        before = self.policy
        self._reload_policy(force=True)
        if self.policy is before:
            return "the policy file was not loaded (see the alert record); the previous policy stays in force"
        self.enforce_context(time.time())
        return None

    def enforce(self, now: float) -> None:
        """Log out every live session whose certificate or identity is no longer good."""
        for conn in list(self.connections):
            if conn.identity is None:
                continue
            reason = self.cut_reason(conn.cert_serial, conn.cert_not_after, conn.identity.id, now)
            if reason is None:
                continue
            self._audit_safe("session_revoked", identity=conn.identity.id,
                             session=conn.route.name if conn.route else None, reason=reason)
            log.info("session_revoked", identity=conn.identity.id, reason=reason)
            conn.revoke(reason, now)

    async def _watch(self) -> None:
        """Two cadences: context feeds and policy every ``posture.check_interval``
        (a stat() per file; live sessions re-decided only when something changed,
        and once a second for posture TTL), revocation data and expiry every
        ``revocation.check_interval``."""
        fast = self.cfg.posture.check_interval
        slow = self.cfg.revocation.check_interval
        next_slow = next_ttl = next_limits = 0.0
        while not self.stopping:
            await asyncio.sleep(fast)
            mono = time.monotonic()
            if self.audit_outage is not None and self.audit.writer is None:
                # inline writer: probe, so recovery does not wait for traffic (the thread retries by itself)
                self._audit_safe("audit_probe", outage_since=_iso(self.audit_outage["since"]))
            self.audit.tick()
            if self.admission.refused and mono >= next_limits:
                self._audit_refusals()
                next_limits = mono + 1.0
            if self.audit.writer is not None:
                self.metrics.audit_lag.set(self.audit.writer.lag)
            changed = self._reload_feeds()
            policy_before = self.policy
            self._reload_policy()
            now = time.time()
            if changed or self.policy is not policy_before or mono >= next_ttl:
                self.enforce_context(now)
                next_ttl = mono + 1.0
            if mono >= next_slow:
                self._reload()
                self.enforce(now)
                next_slow = mono + slow

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: Logout every session, wait briefly, close."""
        if self.stopping:
            return
        self.stopping = True
        if self._watch_task is not None:
            self._watch_task.cancel()
        if self.admin is not None:
            await self.admin.stop()
        grace = self.cfg.gateway.shutdown_grace if grace is None else grace
        if self.server is not None:
            self.server.close()
        for server in self.servers:
            server.close()
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
        for relay in list(self.relays):  # the owners had the grace period to send their Logouts through
            relay.close()
        for route in self.routes.values():
            route.upstream.abort()
        self._audit_safe("gateway_stopped")
        if self.replicator is not None:
            await self.replicator.stop()
        for route in self.routes.values():
            route.client_store.close()
            route.upstream.store.close()
        self.audit.close()

    def _audit_safe(self, kind: str, **fields: Any) -> bool:
        try:
            self.audit_record(kind, **fields)
            return True
        except AuditError as exc:
            log.error("audit_failed", kind=kind, error=str(exc))
            return False

    def audit_record(self, kind: str, **fields: Any) -> int:
        """Append through the outage tracker: a failure starts an outage (alert in logs and metrics);
        the first success after it writes the held records and an ``audit_outage`` alert record."""
        try:
            seq = self.audit.record(kind, **fields)
        except AuditError as exc:
            self._start_outage(str(exc))
            self.metrics.audit_failures.inc()
            raise
        if self.audit.writer is None:  # inline writer: the record is in the OS already
            if self.replicator is not None:
                self.replicator.notify()
            if self.audit_outage is not None:
                self._end_outage()
        return seq

    def _start_outage(self, error: str) -> None:
        if self.audit_outage is None:
            self.audit_outage = {"since": time.time(), "error": error, "refused": 0, "late": 0,
                                 "refused_after_decision": []}
            log.error("audit_outage_started", error=error)

    def _on_audit_failed(self, error: str) -> None:
        """The writer could not write (runs on the loop). Messages whose records were
        still queued are refused now rather than held for an unknown time — their
        records are written when the disk recovers, and the outage alert lists them."""
        self._start_outage(error)
        self.metrics.audit_failures.inc()
        assert self.audit_outage is not None
        keep: deque[tuple[int, Callable[[], None], Callable[[], None] | None]] = deque()
        for seq, action, on_fail in self._pending:
            if on_fail is None:
                keep.append((seq, action, on_fail))
            else:
                self.audit_outage["refused_after_decision"].append(seq)
                on_fail()
        self._pending = keep

    def _end_outage(self) -> None:
        """The writer writes again: record what happened meanwhile, deliver what was held."""
        assert self.audit_outage is not None
        outage, self.audit_outage = self.audit_outage, None
        late, self._late_records = self._late_records, []
        held, self._held = self._held, []
        try:
            for k, f in late:
                self.audit.record(k, **f, written_late=True)
            self.audit.record("alert", what="audit stream was unavailable; service resumed",
                              error=outage["error"], seconds=round(time.time() - outage["since"], 3),
                              refused=outage["refused"] + len(outage["refused_after_decision"]),
                              refused_after_decision=outage["refused_after_decision"],
                              late_records=len(late), held_inbound=len(held))
        except AuditError as exc:  # failing again already: keep everything for the next recovery
            self._late_records, self._held = late + self._late_records, held + self._held
            self._start_outage(str(exc))
            return
        log.warning("audit_outage_ended", refused=outage["refused"], late_records=len(late))
        for deliver in held:  # exchange messages that waited, in arrival order
            deliver()

    # -- crossing legs -----------------------------------------------------------
    def client_to_exchange(self, route: Route, conn: ClientProtocol, msg: Message, now: float) -> None:
        assert conn.session is not None and conn.identity is not None
        ident = conn.identity
        # 1. signature, before anything else looks at the message (DESIGN §4)
        sig = self.guard.check_signature(ident, msg, now)
        if not sig.allowed:
            conn.bad_signatures += 1
            self._audit_safe("signature_refused", session=route.name, identity=ident.id, client_seq=msg.seq_num,
                             msg_type=_s(msg.msg_type), reason=sig.reason, consecutive=conn.bad_signatures)
            conn.session.reject(msg, T.SRR_SIGNATURE_PROBLEM, T.Signature, sig.reason, now)
            if conn.bad_signatures >= ident.max_bad_signatures:
                conn.session.logout(now, f"{conn.bad_signatures} consecutive messages with a bad signature")
            conn.pump()
            return
        conn.bad_signatures = 0
        sub_id = self.guard.check_sub_id(ident, msg)
        if not sub_id.allowed:
            self._audit_safe("subid_refused", session=route.name, identity=ident.id, reason=sub_id.reason)
            conn.session.reject(msg, T.SRR_COMPID_PROBLEM, T.SenderSubID, sub_id.reason, now)
            conn.pump()
            return
        # 2. behaviour against the identity's baseline (alerts; may trip its kill switch)
        for kind, detail in self.anomaly.observe(ident.id, msg, now):
            self.metrics.anomalies.labels(kind).inc()
            self._audit_safe("anomaly", identity=ident.id, session=route.name, finding=kind, detail=detail)
            log.warning("anomaly", identity=ident.id, finding=kind, detail=detail)
            if kind in self.anomaly.settings.kill_on:
                self.trip_kill_switch(ident.id, f"anomaly {kind}: {detail}")
        # 3. kill switch, policy, then pre-trade risk
        t0 = time.perf_counter_ns()
        verdict = self.decide(conn, msg, now, "outbound")
        if verdict.allowed and verdict.outcome == "allow":
            verdict = self.risk_check(ident.id, msg, now) or verdict
        decide_us = (time.perf_counter_ns() - t0) // 1000
        conn.app_in += 1
        conn.last_decision = (verdict.outcome, ",".join(verdict.rule_ids), _s(msg.msg_type) or "", now)
        up = route.upstream
        up_session = up.protocol.session if up.protocol is not None else None
        # the exchange-leg MsgSeqNum this message will carry if it goes on
        up_seq = up_session.store.next_sender_seq() if up_session is not None and up.logged_on else None
        try:
            audit_seq = self.audit_record(
                "decision",
                direction="outbound",
                decision=verdict.outcome,
                rules=list(verdict.rule_ids),
                controls=sorted(verdict.controls),
                shadow_rules=[f"{r}:{d}" for r, d in verdict.shadow],
                reason=verdict.reason,
                posture=conn.posture,
                mfa=conn.user is not None,
                jit=self.jit.active(ident.id, now),
                peer=conn.peer[0] if conn.peer else None,
                account=_s(msg.get(T.Account)),
                identity=conn.identity.id,
                session=route.name,
                msg_type=msg.msg_type.decode("latin-1"),
                client_seq=msg.seq_num,
                upstream_seq=up_seq if verdict.allowed else None,
                decide_us=decide_us,
                roles=list(ident.roles),
                cl_ord_id=_s(msg.get(T.ClOrdID)),
                symbol=_s(msg.get(T.Symbol)),
                side=_s(msg.get(T.Side)),
                qty=_s(msg.get(T.OrderQty)),
                price=_s(msg.get(T.Price)),
                zone=conn.zone,
                signature_scheme=ident.signing,
                signature=_s(msg.get(T.Signature)),  # kept so non-repudiation survives
                **({"poss_dup": True} if msg.get(T.PossDupFlag) == b"Y" else {}),  # a resend of this MsgSeqNum
            )
        except AuditError as exc:
            assert self.cfg.audit is not None
            if (self.cfg.audit.cancels_when_unavailable == "allow" and verdict.allowed
                    and msg.msg_type in CANCEL_TYPES):
                # risk reduction: the cancel goes on, its record is written when the stream recovers
                decision_fields: dict[str, Any] = {"direction": "outbound", "decision": verdict.outcome,
                                   "rules": list(verdict.rule_ids), "identity": ident.id, "session": route.name,
                                   "msg_type": _s(msg.msg_type),
                                   "client_seq": msg.seq_num, "cl_ord_id": _s(msg.get(T.ClOrdID)),
                                   "orig_cl_ord_id": _s(msg.get(T.OrigClOrdID))}
                self._late_records.append(("decision", decision_fields))
                if self.audit_outage is not None:
                    self.audit_outage["late"] += 1
                self._forward(route, conn, msg, now)
                return
            if self.audit_outage is not None:
                self.audit_outage["refused"] += 1
            self._refuse(conn, msg, T.BRR_APPLICATION_NOT_AVAILABLE,
                         f"refused: the audit stream cannot record it ({exc}); nothing crosses unrecorded", now)
            return
        self.metrics.decision("outbound", verdict.outcome, verdict.rule_ids)
        self.metrics.decision_seconds.observe(decide_us / 1e6)
        if not verdict.allowed:
            self.metrics.refusals.labels(verdict.rule_ids[0] if verdict.rule_ids else "?").inc()
            self.refuse_decision(conn, msg, verdict, now)
            return
        forward = lambda: self._forward(route, conn, msg, time.time())  # noqa: E731
        if (msg.msg_type in CANCEL_TYPES and self.cfg.audit is not None
                and self.cfg.audit.cancels_when_unavailable == "allow"):
            on_fail = forward  # risk reduction: the cancel goes on; its record is written on recovery
        else:
            def on_fail() -> None:
                self._refuse(conn, msg, T.BRR_APPLICATION_NOT_AVAILABLE,
                             "refused: the audit stream cannot record it (write failed before it was done); "
                             "nothing crosses unrecorded", time.time())
        self.after_durable(audit_seq, forward, on_fail)

    def after_durable(self, seq: int, action: Callable[[], None],
                      on_fail: Callable[[], None] | None = None) -> None:
        """Run ``action`` once the writer reports audit record ``seq`` done (in the OS
        for ``write``, fsynced for ``fsync``).  FIFO, so per-session order holds.
        If the writer fails first, ``on_fail`` runs instead (None: keep waiting)."""
        writer = self.audit.writer
        if writer is None or writer.done_seq >= seq:
            action()
            return
        self._pending.append((seq, action, on_fail))

    def _on_durable(self, seq: int) -> None:
        if self.replicator is not None:
            self.replicator.notify()
        while self._pending and self._pending[0][0] <= seq:
            _, action, _ = self._pending.popleft()
            action()
        if self.audit_outage is not None and self.audit.writer is not None and self.audit.writer.failed is None:
            self._end_outage()

    def _forward(self, route: Route, conn: ClientProtocol, msg: Message, now: float) -> None:
        """Carry an allowed (and audited) application message to the exchange leg."""
        assert conn.session is not None and conn.identity is not None
        ident = conn.identity
        up = route.upstream
        if conn.session.closed:
            self._audit_safe("forward_dropped", session=route.name, client_seq=msg.seq_num,
                             reason="client session ended before the record was durable")
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
        book = self.risk_books.get(ident.id)
        if book is not None:
            book.accepted(msg)
        if msg.msg_type in ORDER_TYPES:
            cl = msg.get(T.ClOrdID)
            if cl:
                route.open_orders[cl] = (msg.get(T.Side) or b"1", msg.get(T.Symbol) or b"", msg.get(T.OrderQty) or b"0")
                if msg.msg_type == T.MT_ORDER_CANCEL_REPLACE_REQUEST and msg.get(T.OrigClOrdID):
                    route.open_orders.pop(msg.get(T.OrigClOrdID) or b"", None)
        up_seq = sent.seq_num
        if up_seq is not None and msg.seq_num is not None:
            route.seq_map[up_seq] = msg.seq_num
            if len(route.seq_map) > SEQ_MAP_SIZE:
                route.seq_map.popitem(last=False)
        up.protocol.pump()

    def exchange_to_client(self, route: Route, msg: Message, header_tags: frozenset[int], now: float) -> None:
        """Carry an application message from the exchange to the client leg (policy, audit first)."""
        header, body = split_for_carry(msg, header_tags)
        if msg.msg_type == T.MT_BUSINESS_MESSAGE_REJECT:
            body = [
                (t, b"%d" % route.seq_map[int(v)] if v.isdigit() and int(v) in route.seq_map else v)
                if t == T.RefSeqNum else (t, v)
                for t, v in body
            ]
        if msg.msg_type == T.MT_EXECUTION_REPORT:
            if msg.get(T.OrdStatus) in TERMINAL_STATUS:
                for tag in (T.ClOrdID, T.OrigClOrdID):
                    route.open_orders.pop(msg.get(tag) or b"", None)
            last_px, sym = msg.get(T.LastPx), msg.get(T.Symbol)
            if last_px and sym:
                try:
                    self.last_px[sym] = float(last_px)
                except ValueError:
                    pass
        conn = route.client
        if conn is not None and conn.identity is not None and msg.msg_type == T.MT_EXECUTION_REPORT:
            book = self.risk_books.get(conn.identity.id)
            if book is not None:
                book.on_execution(msg)
        if conn is not None and conn.session is not None and conn.session.is_logged_on and conn.identity:
            d = self.decide(conn, msg, now, "inbound")
            try:  # the decision record goes to the audit stream before delivery (fail closed)
                inbound_seq = self.audit_record(
                    "decision", direction="inbound", decision=d.outcome, rules=list(d.rule_ids),
                    identity=conn.identity.id, session=route.name, msg_type=_s(msg.msg_type),
                    upstream_seq=msg.seq_num, cl_ord_id=_s(msg.get(T.ClOrdID)),
                    exec_type=_s(msg.get(T.ExecType)), ord_status=_s(msg.get(T.OrdStatus)),
                    symbol=_s(msg.get(T.Symbol)), last_qty=_s(msg.get(T.LastQty)), last_px=_s(msg.get(T.LastPx)),
                )
            except AuditError as exc:
                # never delivered unrecorded, never dropped: held until the stream writes again
                log.error("inbound_held", session=route.name, error=str(exc))
                self._held.append(lambda: self.exchange_to_client(route, msg, header_tags, time.time()))
                return
            self.metrics.decision("inbound", d.outcome, d.rule_ids)
            if not d.allowed:
                return

            def deliver(conn: ClientProtocol = conn) -> None:
                if conn.session is not None and conn.session.is_logged_on:
                    conn.session.send_app(msg.msg_type, body, time.time(), header)
                    conn.app_out += 1
                    conn.pump()
                else:  # the client left meanwhile: keep it for its next Logon
                    assert route.offline is not None
                    route.offline.store_app(msg.msg_type, body, time.time(), header)

            self.after_durable(inbound_seq, deliver)
            return
        assert route.offline is not None
        stored = route.offline.store_app(msg.msg_type, body, now, header)
        self._audit_safe("stored_for_offline_client", session=route.name, client_seq=stored.seq_num,
                         msg_type=msg.msg_type.decode("latin-1"), cl_ord_id=_s(msg.get(T.ClOrdID)),
                         orig_cl_ord_id=_s(msg.get(T.OrigClOrdID)), ord_status=_s(msg.get(T.OrdStatus)))

    def refuse_decision(self, conn: ClientProtocol, msg: Message, d: Decision, now: float) -> None:
        """Answer a refused message on the client leg (``gateway/core/answers.py``); it never reaches the
        exchange.  Text(58) names the rule."""
        assert conn.session is not None
        text = f"refused by {','.join(d.rule_ids)}: {d.reason}"[:250].encode("latin-1", "replace")
        fix42 = conn.session.config.begin_string == b"FIX.4.2"
        if msg.msg_type in ORDER_TYPES:
            self._exec_ids += 1
            body = order_refusal(msg, text, b"GW-REJ-%d" % self._exec_ids, fix42, now)
            conn.session.send_app(T.MT_EXECUTION_REPORT, body, now)
            conn.pump()
        elif msg.msg_type == T.MT_ORDER_CANCEL_REQUEST:
            conn.session.send_app(T.MT_ORDER_CANCEL_REJECT, cancel_refusal(msg, text, fix42), now)
            conn.pump()
        else:
            self._refuse(conn, msg, T.BRR_OTHER if fix42 else T.BRR_NOT_AUTHORIZED, text.decode("latin-1"), now)

    def _refuse(self, conn: ClientProtocol, msg: Message, reason: int, text: str, now: float) -> None:
        """BusinessMessageReject(j) on the client leg; the message goes no further."""
        assert conn.session is not None
        conn.session.send_app(T.MT_BUSINESS_MESSAGE_REJECT, business_reject(msg, reason, text), now)
        conn.pump()


def audit_folder(cfg: Config, worker: int | None) -> Path:
    """``[audit] dir``, or its ``worker-K`` subfolder: each worker keeps its own hash chain."""
    assert cfg.audit is not None
    base = cfg.resolve(cfg.audit.dir)
    return base if worker is None else base / f"worker-{worker}"


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _s(v: bytes | None) -> str | None:
    return v.decode("latin-1") if v is not None else None


def _peer(peer: Any) -> str | None:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return None
