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

This module is the wiring and the lifecycle; the parts it wires live beside
it: ``routing`` (both directions of the pipeline), ``audit_gate`` (nothing
crosses unrecorded), ``watch`` (files that change while sessions live, and
cutting off what they no longer allow) and ``operator`` (actions taken on a
live gateway).
"""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway.app.audit_gate import AuditGate
from gateway.app.operator import Operator
from gateway.app.risk_state import rebuild as rebuild_risk
from gateway.app.routing import Router
from gateway.app.watch import Watch
from gateway.core.admission import Admission
from gateway.core.fix.codec import Message
from gateway.core.fix.dictionary import ValidationSettings, Validator, standard_validator
from gateway.core.fix.session import Role, Session, SessionConfig
from gateway.core.fix.signature import Signer
from gateway.core.fix.versions import session_appl_ver_id, timestamp_precision
from gateway.core.guard import Guard
from gateway.core.partition import partition
from gateway.core.policy.anomaly import AnomalyDetector, AnomalySettings
from gateway.core.policy.engine import Policy
from gateway.edges.audit import MAIN_CHAIN, AuditError, AuditLog, load_encryption_key, load_or_create_key
from gateway.edges.config import Config, ConfigError, SessionConfigToml
from gateway.edges.feeds import JitGrants, KillSwitch, PostureFeed, Watched
from gateway.edges.metrics import Metrics
from gateway.edges.mfa import MFA
from gateway.edges.registry import check_private_file, load_registry, zone_table
from gateway.edges.replicate import Replicator
from gateway.edges.store import FileStore, session_dir_name
from gateway.sdk import load_signer
from gateway.shells.handoff import Relay, Worker
from gateway.shells.inbox import listen_inbox
from gateway.shells.legs import peer_text
from gateway.shells.route import Route

if TYPE_CHECKING:
    from gateway.shells.admin import AdminAPI
    from gateway.shells.client_leg import ClientProtocol

log = structlog.get_logger("fixgw.proxy")

class Gateway:
    """One gateway process: with ``worker`` set, one of several that share the
    listener and each own a fixed share of the identities (``gateway/core/partition.py``).

    It exists to build everything in one place (audit log, guard, feeds,
    router, watch, operator, routes), to start and stop it in order, and to be
    the one face the shells see (``Hub`` in ``gateway/shells/ports.py``): its
    Hub methods hand each call to the part that owns it."""

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
        self.connections: set[ClientProtocol] = set()
        # the context feeds: the router reads them per message, the watch reloads them, operators change them
        self.posture = PostureFeed(Watched(cfg.resolve(cfg.posture.file) if cfg.posture.file else None))
        self.anomaly = AnomalyDetector(AnomalySettings())
        self.jit = JitGrants(Watched(self.state_dir / "jit.json"))
        self.kill = KillSwitch(Watched(self.state_dir / "killswitch.json"))
        # the router trips the kill switch through the operator, which needs the watch, which needs the router
        self.router = Router(cfg, self.gate, self.metrics, self.kill, self.posture, self.jit, self.anomaly,
                             lambda identity, reason: self.operator.trip_kill_switch(identity, reason),
                             self.guard.identities, self.guard.first_use)
        self.watch = Watch(cfg, self.state_dir, worker is not None, self.guard, self.gate, self.metrics, self.router,
                           self.connections, posture=self.posture, jit=self.jit, kill=self.kill, anomaly=self.anomaly)
        self.policy_file = self.watch.policy_file
        self.operator = Operator(self.watch, self.gate, self.kill, self.posture, worker)
        self._watch_task: asyncio.Task[None] | None = None
        self._next_refusals = 0.0
        self.admin: AdminAPI | None = None
        g = cfg.gateway
        n = worker.count if worker else 1  # the limits are the gateway's: each worker enforces its share
        self.admission = Admission(-(-g.max_connections // n), -(-g.max_connections_per_source // n),
                                   g.handshake_rate / n, g.handshake_burst / n, g.handshake_rate_per_source / n,
                                   g.handshake_burst_per_source / n, g.handshake_reserve)
        self.server: asyncio.AbstractServer | None = None
        self.servers: list[asyncio.AbstractServer] = []  # more listeners (a worker's own port)
        self.stopping = False
        for s in cfg.sessions:
            if self.owns(s):
                self._add_route(s)

    def owns(self, s: SessionConfigToml) -> bool:
        """Is this session ours (always, unless one of several workers)?"""
        return self.worker is None or self.partition.owner_of_session(s.client_comp_id) == self.worker.index

    def _validator(self, s: SessionConfigToml, settings: ValidationSettings, appl: bytes | None) -> Validator:
        """The route's dictionaries (shipped, or the user's own) with ``settings``; FIXT.1.1: the
        application dictionary of DefaultApplVerID ``appl``, the shipped ones for other ApplVerIDs."""
        return standard_validator(
            s.begin_string.encode(),
            settings,
            self.cfg.resolve(s.dictionary) if s.dictionary else None,
            self.cfg.resolve(s.app_dictionary) if s.app_dictionary else None,
            appl,
        )

    def _add_route(self, s: SessionConfigToml) -> None:
        begin = s.begin_string.encode()
        appl = session_appl_ver_id(begin, s.default_appl_ver_id)
        client_validator = self._validator(s, ValidationSettings(
            check_fields_have_values=s.validate_fields_have_values,
            check_fields_out_of_order=s.validate_fields_out_of_order,
            check_user_defined_fields=s.validate_user_defined_fields,
            allow_unknown_message_fields=s.allow_unknown_message_fields,
        ), appl) if s.validate else None
        client_config = SessionConfig(
            begin_string=begin,
            sender_comp_id=s.gateway_comp_id.encode(),
            target_comp_id=s.client_comp_id.encode(),
            role=Role.ACCEPTOR,
            reset_on_logon=s.reset_on_logon,
            max_latency=s.max_latency,
            default_appl_ver_id=appl,
            timestamp_precision=timestamp_precision(begin),
            validator=client_validator,
            max_frame=self.cfg.gateway.max_frame,
            logon_timeout=self.cfg.gateway.logon_timeout,
            resend_chunk_size=s.resend_chunk_size,
            resend_request_burst=s.resend_request_burst,
            resend_request_rate=s.resend_request_rate,
            max_queue_bytes=s.max_queue_bytes,
            gap_timeout=s.gap_timeout,
        )
        up = s.upstream
        up_validator = self._validator(
            s, ValidationSettings(allow_unknown_message_fields=up.allow_unknown_message_fields), appl
        ) if up.validate else None
        up_config = SessionConfig(
            begin_string=begin,
            sender_comp_id=up.sender_comp_id.encode(),
            target_comp_id=up.target_comp_id.encode(),
            role=Role.INITIATOR,
            heartbeat_interval=up.heartbeat_interval,
            reset_on_logon=up.reset_on_logon,
            default_appl_ver_id=appl,
            timestamp_precision=timestamp_precision(begin),
            validator=up_validator,
            max_frame=self.cfg.gateway.max_frame,
        )
        key = (begin, s.client_comp_id.encode(), s.gateway_comp_id.encode())
        # deferred_target: the legs commit the numbers received once per read (gateway/shells/legs.py)
        # batched: what one audit write releases is kept with one write per store (gateway/edges/store.py)
        client_store = FileStore(self.state_dir / "client" / session_dir_name(*key), deferred_target=True,
                                 batched=True)
        up_store = FileStore(
            self.state_dir / "upstream" / session_dir_name(begin, up_config.sender_comp_id, up_config.target_comp_id),
            deferred_target=True, batched=True,
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
        policy = self.watch.policy
        if policy is not None:
            self.audit.record("policy_loaded", sha256=policy.sha256, rules=len(policy.rules),
                              shadow=policy.global_shadow, file=str(self.policy_file.path))
            self.metrics.policy_rules.set(len(policy.rules))
        assert self.cfg.audit is not None  # risk books, open orders, anomaly baselines: as before the restart
        self.audit.record("risk_rebuilt", **rebuild_risk(
            self.router, self.cfg.resolve(self.cfg.audit.dir), self.audit.aead,
            lambda i: self.worker is None or self.partition.owner_of_identity(i) == self.worker.index, self.routes))
        for route in self.routes.values():
            route.upstream.start()
        self._watch_task = loop.create_task(self.watch.run(lambda: self.stopping, self._housekeeping))
        if self.cfg.audit is not None and self.cfg.audit.nats is not None:
            nc = self.cfg.audit.nats
            suffix = f"-w{self.worker.index}" if self.worker else ""  # one chain per worker, one message id space each
            self.gate.replicator = Replicator(self.audit.folder, nc.url, nc.stream, nc.subject, nc.instance + suffix,
                                         nc.replicas, self.state_dir / f"nats-cursor{suffix}.json",
                                         lambda text: self.audit_event("alert", what=text),
                                         chain=f"worker-{self.worker.index}" if self.worker else MAIN_CHAIN)
            self.gate.replicator.start()
        def on_thread(fn: Callable[..., None]) -> Callable[..., None]:
            def hop(*args: Any) -> None:  # called on the writer thread
                try:
                    loop.call_soon_threadsafe(fn, *args)
                except RuntimeError:
                    pass  # the loop is gone: shutting down
            return hop

        ac = self.cfg.audit
        if ac is not None and (ac.writer == "thread" or (ac.writer == "auto" and ac.durability == "fsync")):
            self.audit.start_writer(ac.durability == "fsync", on_thread(self.gate.on_durable),
                                    on_thread(self.gate.on_failed), defer=loop.call_soon)
        elif ac is not None:  # "inline", or "auto" with write durability: the loop writes once per iteration
            self.audit.start_loop_writer(self.gate.on_written, self.gate.on_failed, loop.call_soon, loop.call_later)
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
        # Everything built so far (FIX dictionaries, config, policy, certificates: ~170k objects with
        # every version's dictionary) lives as long as the process.  Frozen, the collector stops
        # re-scanning it: measured, each full collection paused the loop 60-90 ms, several times a
        # minute under load; afterwards it scans only what traffic created.
        gc.collect()
        gc.freeze()
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

    def _housekeeping(self, mono: float) -> None:
        """The gateway's own work on every tick of the watch: audit gate, checkpoints, refusals, lag."""
        self.gate.probe()
        self.audit.tick()
        if self.admission.refused and mono >= self._next_refusals:
            self._audit_refusals()
            self._next_refusals = mono + 1.0
        if self.audit.writer is not None:
            self.metrics.audit_lag.set(self.audit.writer.lag)

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
        # aborted transports report connection_lost on the next loop iterations: let them, so the
        # sessions' logout records are written before the audit log closes
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and (
            self.connections or any(r.upstream.connected for r in self.routes.values())
        ):
            await asyncio.sleep(0.001)
        self.audit_event("gateway_stopped")
        if self.gate.replicator is not None:
            await self.gate.replicator.stop()
        for route in self.routes.values():
            route.client_store.close()
            route.upstream.store.close()
        self.audit.close()

    # -- the Hub the shells see (gateway/shells/ports.py): one face over the parts --------
    @property
    def server_ctx(self) -> ssl.SSLContext:
        """The server certificate now in use (the watch replaces it when the files rotate)."""
        return self.watch.server_ctx

    @property
    def policy(self) -> Policy | None:
        return self.watch.policy

    def audit_event(self, kind: str, **fields: Any) -> bool:
        return self.gate.event(kind, **fields)

    def cut_reason(self, serial: int | None, not_after: float | None, identity: str | None, now: float) -> str | None:
        return self.watch.cut_reason(serial, not_after, identity, now)

    def posture_refusal(self, identity: str, now: float) -> str | None:
        spec = self.watch.policy_spec  # the same rule as the watch's logout of live sessions
        level = self.posture.level(identity, now)
        return f"device posture is {level}" if spec is not None and level in spec.posture.logout_on else None

    def reload_feeds(self, force: bool = False) -> bool:
        return self.watch.reload_feeds(force)

    def enforce_context(self, now: float) -> None:
        self.watch.enforce_context(now)

    async def share_posture(self, assertions: list[tuple[str, str]], now: float) -> list[int]:
        return await self.operator.share_posture(assertions, now)

    def apply_posture(self, assertions: list[tuple[str, str]], at: float, origin: int | None = None) -> None:
        self.operator.apply_posture(assertions, at, origin)

    def admin_revoke(self, identity: str, reason: str, by: str, now: float) -> None:
        self.operator.admin_revoke(identity, reason, by, now)

    def admin_reinstate(self, identity: str) -> bool:
        return self.operator.admin_reinstate(identity)

    def reload_policy_now(self) -> str | None:
        return self.operator.reload_policy_now()

    def client_to_exchange(self, route: Route, conn: ClientProtocol, msg: Message, now: float) -> None:
        self.router.client_to_exchange(route, conn, msg, now)

    def refusal_credit(self, conn: ClientProtocol, now: float) -> int | None:
        return self.router.refusal_credit(conn, now)

    def session_refused(self, route: Route, conn: ClientProtocol, seq: int | None, kind: str,
                        fields: dict[str, Any], now: float) -> None:
        self.router.session_refused(route, conn, seq, kind, fields, now)

    def exchange_to_client(self, route: Route, msg: Message, header_tags: frozenset[int], now: float) -> None:
        self.router.exchange_to_client(route, msg, header_tags, now)

    def venue_rejected(self, route: Route, reject: Message, now: float) -> None:
        self.router.venue_rejected(route, reject, now)

    def venue_invalid(self, route: Route, msg: Message, reason: int, detail: str, now: float) -> None:
        self.router.venue_invalid(route, msg, reason, detail, now)

    def session_reset(self, route: Route) -> None:
        self.router.forwarded.pop(route.key, None)


def audit_folder(cfg: Config, worker: int | None) -> Path:
    """``[audit] dir``, or its ``worker-K`` subfolder: each worker keeps its own hash chain."""
    assert cfg.audit is not None
    base = cfg.resolve(cfg.audit.dir)
    return base if worker is None else base / f"worker-{worker}"
