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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from cryptography import x509

from gateway.app.audit_gate import AuditGate
from gateway.app.routing import Router
from gateway.core.admission import Admission
from gateway.core.fix.codec import Message
from gateway.core.fix.dictionary import ValidationSettings, Validator, standard_validator
from gateway.core.fix.session import Role, Session, SessionConfig
from gateway.core.fix.signature import Signer
from gateway.core.guard import Guard
from gateway.core.identity import zone_entries
from gateway.core.partition import partition
from gateway.core.pipeline import Rules
from gateway.core.policy.anomaly import AnomalyDetector, AnomalySettings
from gateway.core.policy.engine import Policy
from gateway.core.policy.risk import Limits, References
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
from gateway.shells.handoff import Relay, Worker, broadcast
from gateway.shells.inbox import listen_inbox
from gateway.shells.legs import peer_text
from gateway.shells.route import Route

if TYPE_CHECKING:
    from gateway.shells.admin import AdminAPI
    from gateway.shells.client_leg import ClientProtocol

log = structlog.get_logger("fixgw.proxy")

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
        self.inbox: socket.socket | None = None
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
        self.metrics = Metrics()
        self.gate = AuditGate(self.audit, self.metrics)
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
        self.anomaly = AnomalyDetector(self.policy_spec.anomaly.compile() if self.policy_spec else AnomalySettings())
        self.jit = JitGrants(Watched(self.state_dir / "jit.json"))
        self.kill = KillSwitch(Watched(self.state_dir / "killswitch.json"))
        for feed in (self.posture, self.jit, self.kill):
            feed.file.changed()
            try:
                feed.reload()
            except FeedError as exc:
                raise ConfigError(cfg.path, "feeds", str(exc)) from None
        self.router = Router(cfg, self.gate, self.metrics, self.kill, self.posture, self.jit, self.anomaly,
                             self.trip_kill_switch, self.guard.identities)
        self._compile_risk()
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
            self.gate.replicator = Replicator(self.audit.folder, nc.url, nc.stream, nc.subject, nc.instance + suffix,
                                         nc.replicas, self.state_dir / f"nats-cursor{suffix}.json",
                                         lambda text: self.audit_event("alert", what=text))
            self.gate.replicator.start()
        def on_thread(fn: Callable[..., None]) -> Callable[..., None]:
            def hop(*args: Any) -> None:  # called on the writer thread
                try:
                    loop.call_soon_threadsafe(fn, *args)
                except RuntimeError:
                    pass  # the loop is gone: shutting down
            return hop

        ac = self.cfg.audit
        if ac is not None and ac.writer == "thread":
            self.audit.start_writer(ac.durability == "fsync", on_thread(self.gate.on_durable),
                                    on_thread(self.gate.on_failed), defer=loop.call_soon)
        if self.cfg.admin is not None:
            from gateway.shells.admin import AdminAPI

            self.admin = AdminAPI(self)
            # each worker serves its own sessions and metrics: worker k on admin.port + k
            await self.admin.start(self.cfg.admin.host, self.cfg.admin.port + (self.worker.index if self.worker else 0))
        from gateway.shells.client_leg import TLSConnection

        if self.worker is not None:
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
            self.audit_event("tls_refused", peer=peer_text(peer), reason=str(reason))
            log.info("tls_refused", peer=peer_text(peer), reason=str(reason))
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
                    self.audit_event("revocation_reloaded", revoked_serials=len(serials), denylisted=len(deny))
        except RevocationError as exc:
            if strict:
                raise
            self.audit_event("alert", what="revocation data not reloaded; last good data stays in force",
                             reason=str(exc))
        if "admin_revoked" in changed and not force:
            try:
                self.admin_revoked = self._read_admin_revoked()
            except FeedError as exc:
                self.audit_event("alert", what="admin revocations not reloaded; last good list stays",
                                 reason=str(exc))
        if changed & {"server_cert", "server_key"} and not force:
            assert self.cfg.listen is not None
            try:
                self.server_ctx = tls.server_context(self.cfg.resolve(self.cfg.listen.cert),
                                                     self.cfg.resolve(self.cfg.listen.key),
                                                     self.cfg.resolve(self.cfg.listen.ca))
                self.audit_event("server_cert_reloaded")
                log.info("server_cert_reloaded")
            except tls.TLSConfigError as exc:  # e.g. key written before the cert: retry next tick
                self._mtimes.pop("server_cert", None)
                self.audit_event("alert", what="server certificate not reloaded; old one stays in use",
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
            self.audit_event("alert", what="policy not reloaded; the previous policy stays in force",
                             reason=str(exc))
            log.error("policy_reload_failed", error=str(exc))
            return
        self._apply_zones()
        self.posture.ttl = self.policy_spec.posture.ttl
        self.anomaly.settings = self.policy_spec.anomaly.compile()  # same baselines, new settings
        for ident_id, book in self.router.risk_books.items():  # new limits, same state
            book.limits = self._limits(ident_id)
        self._compile_risk()
        self.audit_event("policy_loaded", sha256=self.policy.sha256, rules=len(self.policy.rules),
                         shadow=self.policy.global_shadow, file=str(self.policy_file.path))
        self.metrics.policy_rules.set(len(self.policy.rules))
        log.info("policy_loaded", sha256=self.policy.sha256, rules=len(self.policy.rules))

    def reload_feeds(self, force: bool = False) -> bool:
        """Reload posture, JIT grants and kill switch when they changed; True if any did."""
        any_changed = False
        for name, feed in (("posture", self.posture), ("jit", self.jit), ("kill_switch", self.kill)):
            if feed.file.path is None or not (feed.file.changed() or force):
                continue
            try:
                feed.reload()
                any_changed = True
                if name == "kill_switch":
                    self.audit_event("kill_switch", everything=self.kill.everything,
                                     identities=sorted(self.kill.identities), accounts=sorted(self.kill.accounts))
            except FeedError as exc:
                self.audit_event("alert", what=f"{name} feed not reloaded; last good state stays", reason=str(exc))
        return any_changed

    def share_posture(self, assertions: list[tuple[str, str]], now: float) -> list[int]:
        """Posture pushed to this worker's admin API goes to every worker (each owns other sessions);
        returns the workers that could not be told."""
        if self.worker is None:
            return []
        return broadcast(self.worker, {"posture": assertions, "at": now, "from": self.worker.index})

    def apply_posture(self, assertions: list[tuple[str, str]], at: float, origin: int | None = None) -> None:
        """Assertions from the admin API (ours or another worker's): in force now, live sessions re-decided."""
        for ident, level in assertions:
            self.posture.push(ident, level, at)
        if origin is not None:
            self.audit_event("posture_shared", origin_worker=origin, assertions=[f"{i}={lv}" for i, lv in assertions])
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
            self.audit_event("posture_change", identity=conn.identity.id, old=conn.posture, new=level,
                             session=conn.route.name if conn.route else None)
            conn.posture = level
            if level in logout_on:
                reason = f"device posture is {level}"
                if self.policy_spec is not None and self.policy_spec.posture.cancel_open_orders and conn.route:
                    self.router.cancel_open_orders(conn.route, reason, now)
                self.audit_event("session_revoked", identity=conn.identity.id, reason=reason,
                                 session=conn.route.name if conn.route else None)
                conn.revoke(reason, now)

    def trip_kill_switch(self, identity: str, reason: str) -> None:
        """Automatic kill switch for one identity: in force now, persisted for operators and restarts."""
        self.kill.identities = self.kill.identities | {identity}
        self.audit_event("kill_switch", identities=sorted(self.kill.identities), reason=reason, automatic=True)
        path = self.kill.file.path
        if path is not None:
            try:
                data = read_json(path)
                data["identities"] = sorted(set(data.get("identities", [])) | {identity})
                write_json(path, data)
                self.kill.file.changed()  # our own write: no reload needed
            except (FeedError, OSError) as exc:
                self.audit_event("alert", what="kill switch not persisted (in force in memory)", reason=str(exc))

    def _compile_risk(self) -> None:
        """Per-load inputs of the pipeline, so the per-message path only looks things up."""
        spec = self.policy_spec
        configured = {s.encode(): p for s, p in spec.risk.reference_prices.items()} if spec else {}
        accounts = {a.encode(): ls.compile() for a, ls in spec.risk.accounts.items()} if spec else {}
        # configured prices win; otherwise the last LastPx(31) seen (a live view, no copy per order)
        self.router.rules = Rules(self.policy, self.cfg.policy.allow_all, self._limits, accounts,
                                  References(configured, self.router.last_px))

    def _limits(self, identity: str) -> Limits:
        spec = self.policy_spec
        if spec is None:
            return Limits(duplicate_clordid=False)
        base = spec.risk.default.compile()
        own = spec.risk.identities.get(identity)
        return base.merged(own.compile() if own else None)

    def reload_now(self) -> None:
        """SIGHUP: reload revocation data and the server certificate at once."""
        self._reload(force=True)
        self._reload_policy(force=True)
        self.reload_feeds(force=True)
        self.audit_event("reload", trigger="SIGHUP")
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
        self.audit_event("connections_refused", total=sum(n for _, _, n in refused),
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
            self.audit_event("session_revoked", identity=conn.identity.id,
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
            self.gate.probe()
            self.audit.tick()
            if self.admission.refused and mono >= next_limits:
                self._audit_refusals()
                next_limits = mono + 1.0
            if self.audit.writer is not None:
                self.metrics.audit_lag.set(self.audit.writer.lag)
            changed = self.reload_feeds()
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
        self.audit_event("gateway_stopped")
        if self.gate.replicator is not None:
            await self.gate.replicator.stop()
        for route in self.routes.values():
            route.client_store.close()
            route.upstream.store.close()
        self.audit.close()

    # -- the Hub the shells see: audit events and the two directions of the pipeline --------
    def audit_event(self, kind: str, **fields: Any) -> bool:
        return self.gate.event(kind, **fields)

    def client_to_exchange(self, route: Route, conn: ClientProtocol, msg: Message, now: float) -> None:
        self.router.client_to_exchange(route, conn, msg, now)

    def exchange_to_client(self, route: Route, msg: Message, header_tags: frozenset[int], now: float) -> None:
        self.router.exchange_to_client(route, msg, header_tags, now)

    def session_reset(self, route: Route) -> None:
        self.router.forwarded.pop(route.key, None)


def audit_folder(cfg: Config, worker: int | None) -> Path:
    """``[audit] dir``, or its ``worker-K`` subfolder: each worker keeps its own hash chain."""
    assert cfg.audit is not None
    base = cfg.resolve(cfg.audit.dir)
    return base if worker is None else base / f"worker-{worker}"


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
