"""The watch on feeds: what may be used changes on disk while sessions live.

Revocation data (CRL, denylist, the administrator's revocations), the server
certificate, the policy file and the context feeds (posture, JIT grants, kill
switch) are files that operators and other tools rewrite at any time.  The
watch notices each change (a stat() per file per tick), reloads it — a file
that fails to load keeps the last good data in force (fail closed) and says
so in the audit stream — and then re-decides the live sessions, logging out
those that are no longer allowed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from cryptography import x509

from gateway.app.audit_gate import AuditGate
from gateway.app.routing import Router, compile_rules
from gateway.core.guard import Guard
from gateway.core.identity import zone_entries
from gateway.core.policy.anomaly import AnomalyDetector
from gateway.core.policy.engine import Policy
from gateway.edges import tls
from gateway.edges.config import Config, ConfigError
from gateway.edges.feeds import FeedError, JitGrants, KillSwitch, PostureFeed, Watched, read_json
from gateway.edges.metrics import Metrics
from gateway.edges.policy_file import PolicySpec
from gateway.edges.policy_file import load as load_policy
from gateway.edges.registry import load_key
from gateway.edges.revocation import RevocationError, Revoked, load_crl, load_denylist, mtime

if TYPE_CHECKING:
    from gateway.shells.client_leg import ClientProtocol

log = structlog.get_logger("fixgw.proxy")


class Watch:
    """Keeps what the gateway enforces in step with the files that say what is allowed.

    It exists so that the question "the feeds changed: who must be cut off?"
    has one home, apart from the wiring that builds the gateway and from the
    routing that applies the current rules to each message.  It owns the
    revocation state, the server TLS context, the policy and the
    administrator's revocation list; it reloads the context feeds it is given
    (the router reads the same objects) and recompiles the router's rules when
    the policy changes.  Loading at construction is strict: a bad file there is
    a ``ConfigError``, not an alert."""

    def __init__(self, cfg: Config, state_dir: Path, shared: bool, guard: Guard, gate: AuditGate,
                 metrics: Metrics, router: Router, connections: set[ClientProtocol], *,
                 posture: PostureFeed, jit: JitGrants, kill: KillSwitch, anomaly: AnomalyDetector) -> None:
        """``shared``: one of several workers, which share the administrator's revocation file.
        ``connections``: the gateway's live client connections (the same set, not a copy)."""
        assert cfg.listen is not None
        self.cfg = cfg
        self.state_dir = state_dir
        self.shared = shared
        self.guard = guard
        self.gate = gate
        self.metrics = metrics
        self.router = router
        self.connections = connections
        self.posture = posture
        self.jit = jit
        self.kill = kill
        self.anomaly = anomaly
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
            self.reload_revocation(force=True, strict=True)
        except RevocationError as exc:
            raise ConfigError(cfg.path, "revocation", str(exc)) from None
        # policy and the context that changes while sessions live
        self.policy: Policy | None = None
        self.policy_spec: PolicySpec | None = None
        self.policy_file = Watched(cfg.resolve(cfg.policy.file) if cfg.policy.file else None)
        self.policy_signer = None
        if cfg.policy.signer_key:
            key = load_key("ed25519", cfg.resolve(cfg.policy.signer_key), cfg.path, "policy.signer_key")
            assert not isinstance(key, bytes)
            self.policy_signer = key
        if self.policy_file.path is not None:
            self.policy, self.policy_spec = load_policy(self.policy_file.path, self.policy_signer)
            self.policy_file.changed()
            self._apply_zones()
            self.posture.ttl = self.policy_spec.posture.ttl
            self.anomaly.settings = self.policy_spec.anomaly.compile()
        for feed in (self.posture, self.jit, self.kill):
            feed.file.changed()
            try:
                feed.reload()
            except FeedError as exc:
                raise ConfigError(cfg.path, "feeds", str(exc)) from None
        self._compile_risk()
        try:  # identities an administrator revoked through the admin API (identity -> reason)
            self.admin_revoked: dict[str, str] = self.read_admin_revoked()
        except FeedError as exc:
            raise ConfigError(cfg.path, "gateway.state_dir", str(exc)) from None
        self._next_slow = self._next_ttl = 0.0

    # -- revocation and rotation without restart ------------------------------------
    @property
    def admin_revoked_path(self) -> Path:
        return self.state_dir / "admin-revoked.json"

    def read_admin_revoked(self) -> dict[str, str]:
        """``state_dir/admin-revoked.json``: identity -> reason (raises FeedError)."""
        return {str(k): str(v) for k, v in read_json(self.admin_revoked_path).items()}

    def _watched(self) -> dict[str, Path | None]:
        assert self.cfg.listen is not None
        return {"crl": self.crl_path, "denylist": self.denylist_path,
                "server_cert": self.cfg.resolve(self.cfg.listen.cert),
                "server_key": self.cfg.resolve(self.cfg.listen.key),
                # with several workers, a revocation through one worker's admin API reaches all
                "admin_revoked": self.admin_revoked_path if self.shared else None}

    def reload_revocation(self, force: bool = False, strict: bool = False) -> None:
        """Reload revocation data, the administrator's revocations and the server certificate
        when they changed on disk (or ``force``); a failure keeps the last good data (fail closed)."""
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
                    self.gate.event("revocation_reloaded", revoked_serials=len(serials), denylisted=len(deny))
        except RevocationError as exc:
            if strict:
                raise
            self.gate.event("alert", what="revocation data not reloaded; last good data stays in force",
                            reason=str(exc))
        if "admin_revoked" in changed and not force:
            try:
                self.admin_revoked = self.read_admin_revoked()
            except FeedError as exc:
                self.gate.event("alert", what="admin revocations not reloaded; last good list stays",
                                reason=str(exc))
        if changed & {"server_cert", "server_key"} and not force:
            assert self.cfg.listen is not None
            try:
                self.server_ctx = tls.server_context(self.cfg.resolve(self.cfg.listen.cert),
                                                     self.cfg.resolve(self.cfg.listen.key),
                                                     self.cfg.resolve(self.cfg.listen.ca))
                self.gate.event("server_cert_reloaded")
                log.info("server_cert_reloaded")
            except tls.TLSConfigError as exc:  # e.g. key written before the cert: retry next tick
                self._mtimes.pop("server_cert", None)
                self.gate.event("alert", what="server certificate not reloaded; old one stays in use",
                                reason=str(exc))

    # -- the policy ----------------------------------------------------------------------
    def _apply_zones(self) -> None:
        zones = dict(self.cfg.zones)
        if self.policy_spec is not None:
            zones.update(self.policy_spec.zones)
        self.guard.zones = zone_entries(zones)

    def reload_policy(self, force: bool = False) -> None:
        """Reload the policy file when it changed (or ``force``); a refused file keeps the old policy."""
        if self.policy_file.path is None or not (self.policy_file.changed() or force):
            return
        try:
            self.policy, self.policy_spec = load_policy(self.policy_file.path, self.policy_signer)
        except ConfigError as exc:  # the old policy keeps running; say exactly what is wrong
            self.gate.event("alert", what="policy not reloaded; the previous policy stays in force",
                            reason=str(exc))
            log.error("policy_reload_failed", error=str(exc))
            return
        self._apply_zones()
        self.posture.ttl = self.policy_spec.posture.ttl
        self.anomaly.settings = self.policy_spec.anomaly.compile()  # same baselines, new settings
        self._compile_risk()
        for ident_id, book in self.router.risk_books.items():  # new limits, same state
            book.limits = self.router.rules.limits(ident_id)
        self.gate.event("policy_loaded", sha256=self.policy.sha256, rules=len(self.policy.rules),
                        shadow=self.policy.global_shadow, file=str(self.policy_file.path))
        self.metrics.policy_rules.set(len(self.policy.rules))
        log.info("policy_loaded", sha256=self.policy.sha256, rules=len(self.policy.rules))

    def _compile_risk(self) -> None:
        self.router.rules = compile_rules(self.policy, self.policy_spec, self.cfg.policy.allow_all,
                                          self.router.last_px)

    # -- the context feeds -----------------------------------------------------------------
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
                    self.gate.event("kill_switch", everything=self.kill.everything,
                                    identities=sorted(self.kill.identities), accounts=sorted(self.kill.accounts))
            except FeedError as exc:
                self.gate.event("alert", what=f"{name} feed not reloaded; last good state stays", reason=str(exc))
        return any_changed

    # -- cutting off what is no longer allowed -----------------------------------------------
    def cut_reason(self, serial: int | None, not_after: float | None, identity: str | None, now: float) -> str | None:
        """Why a certificate or identity may no longer be used (expired, revoked, denylisted), or None."""
        if not_after is not None and now > not_after:
            return "client certificate expired"
        if serial is not None and serial in self.revoked.serials:
            return f"client certificate serial {serial:x} is revoked (CRL)"
        if identity is not None and identity in self.revoked.denylist:
            return f"identity {identity} is on the denylist"
        if identity is not None and identity in self.admin_revoked:
            return f"identity {identity} was revoked by an administrator: {self.admin_revoked[identity]}"
        return None

    def enforce(self, now: float) -> None:
        """Log out every live session whose certificate or identity is no longer good."""
        for conn in list(self.connections):
            if conn.identity is None:
                continue
            reason = self.cut_reason(conn.cert_serial, conn.cert_not_after, conn.identity.id, now)
            if reason is None:
                continue
            self.gate.event("session_revoked", identity=conn.identity.id,
                            session=conn.route.name if conn.route else None, reason=reason)
            log.info("session_revoked", identity=conn.identity.id, reason=reason)
            conn.revoke(reason, now)

    def enforce_context(self, now: float) -> None:
        """Re-decide live sessions when posture changed (or went stale): log out where policy says."""
        logout_on = set(self.policy_spec.posture.logout_on) if self.policy_spec else set()
        for conn in list(self.connections):
            if conn.identity is None or conn.session is None or not conn.session.is_logged_on:
                continue
            level = self.posture.level(conn.identity.id, now)
            if level == conn.posture:
                continue
            self.gate.event("posture_change", identity=conn.identity.id, old=conn.posture, new=level,
                            session=conn.route.name if conn.route else None)
            conn.posture = level
            if level in logout_on:
                reason = f"device posture is {level}"
                if self.policy_spec is not None and self.policy_spec.posture.cancel_open_orders and conn.route:
                    self.router.cancel_open_orders(conn.route, reason, now)
                self.gate.event("session_revoked", identity=conn.identity.id, reason=reason,
                                session=conn.route.name if conn.route else None)
                conn.revoke(reason, now)

    # -- the loop ----------------------------------------------------------------------------
    async def run(self, stopping: Callable[[], bool], housekeeping: Callable[[float], None]) -> None:
        """Two cadences: context feeds and policy every ``posture.check_interval``
        (a stat() per file; live sessions re-decided only when something changed,
        and once a second for posture TTL), revocation data and expiry every
        ``revocation.check_interval``.  ``housekeeping(monotonic)`` is the
        gateway's own per-tick work, run first on every tick."""
        fast = self.cfg.posture.check_interval
        while not stopping():
            await asyncio.sleep(fast)
            mono = time.monotonic()
            housekeeping(mono)
            self.tick(mono)

    def tick(self, mono: float) -> None:
        """One pass of the watch at monotonic time ``mono``."""
        changed = self.reload_feeds()
        policy_before = self.policy
        self.reload_policy()
        now = time.time()
        if changed or self.policy is not policy_before or mono >= self._next_ttl:
            self.enforce_context(now)
            self._next_ttl = mono + 1.0
        if mono >= self._next_slow:
            self.reload_revocation()
            self.enforce(now)
            self._next_slow = mono + self.cfg.revocation.check_interval
