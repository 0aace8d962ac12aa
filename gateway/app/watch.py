"""The watch on feeds: what may be used changes on disk while sessions live.

Revocation data (CRL, denylist, the administrator's revocations), the server
certificate, the policy file and the context feeds (posture, JIT grants,
break-glass JIT grants, kill switch) are files that operators and other tools
rewrite at any time.  The watch notices each change (a stat() per file per
tick), reloads it and then re-decides the live sessions, logging out those
that are no longer allowed.

Every reload is isolated and fails closed: input that cannot be used — a
file that is not UTF-8 or not JSON, a JSON array where an object belongs, a
non-numeric ``asserted_at``, a CRL or signed policy older than the one in
force — is refused with one log line naming the file and what is wrong, an
``alert`` audit record and ``fixgw_feed_errors_total{feed}``; the last good
state stays in force and the watch goes on (a step that raises anyway is
caught, alerted, and the next step and tick still run).  A feed that goes
stale — the posture file not rewritten within ``[posture] max_age``, the CRL
past its nextUpdate — raises an alert once (and ``fixgw_feed_stale{feed}``)
until it is fresh again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import structlog
from cryptography import x509

from gateway.app.audit_gate import AuditGate
from gateway.app.routing import Router, compile_rules
from gateway.core.guard import Guard
from gateway.core.identity import zone_entries
from gateway.core.policy.anomaly import AnomalyDetector
from gateway.core.policy.engine import Policy
from gateway.edges import tls
from gateway.edges.audit import AuditError
from gateway.edges.config import Config, ConfigError
from gateway.edges.feeds import BreakGlass, FeedError, JitGrants, KillSwitch, PostureFeed, Watched, read_json
from gateway.edges.metrics import Metrics
from gateway.edges.policy_file import PolicySpec, PolicyVersions
from gateway.edges.policy_file import load as load_policy
from gateway.edges.registry import load_key
from gateway.edges.revocation import (
    CRLInfo,
    CRLMarks,
    RevocationError,
    Revoked,
    Stamp,
    check_forward,
    load_crl,
    load_denylist,
    stamp,
)

if TYPE_CHECKING:
    from gateway.shells.client_leg import ClientProtocol

log = structlog.get_logger("fixgw.proxy")
T = TypeVar("T")
#: problems of one reload written out one by one; the rest are counted
MAX_REPORTED = 20


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Watch:
    """Keeps what the gateway enforces in step with the files that say what is allowed.

    It exists so that the question "the feeds changed: who must be cut off?"
    has one home, apart from the wiring that builds the gateway and from the
    routing that applies the current rules to each message.  It owns the
    revocation state, the server TLS context, the policy and the
    administrator's revocation list; it reloads the context feeds it is given
    (the router reads the same objects) and recompiles the router's rules when
    the policy changes.  Loading at construction is strict: a bad file there is
    a ``ConfigError``, not an alert (a bad *entry* of a context feed is refused
    and reported at the first tick, like later ones)."""

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
        self._started = time.time()
        self._stale: set[str] = set()  # feeds stale now (alerted once per episode)
        self._deferred: list[tuple[str, str, list[str]]] = []  # entries refused while constructing
        self._last_crash = ""
        if cfg.posture.max_age is not None and not cfg.posture.max_age >= 0:
            raise ConfigError(cfg.path, "posture.max_age", f"{cfg.posture.max_age} is not a number of seconds",
                              "seconds above 0, or 0 for never")
        self.server_ctx = tls.server_context(
            cfg.resolve(cfg.listen.cert), cfg.resolve(cfg.listen.key), cfg.resolve(cfg.listen.ca)
        )
        self.ca_certs = x509.load_pem_x509_certificates(cfg.resolve(cfg.listen.ca).read_bytes())
        rc = cfg.revocation
        self.crl_path = cfg.resolve(rc.crl) if rc.crl else None
        self.denylist_path = cfg.resolve(rc.denylist) if rc.denylist else None
        self.revoked = Revoked()
        self._crl: CRLInfo | None = None
        self._crl_stale_after: float | None = None  # the CRL's nextUpdate, epoch seconds
        self._deny: frozenset[str] = frozenset()
        self._stamps: dict[str, Stamp | None] = {}
        try:
            self.crl_marks = CRLMarks(state_dir / "crl-state.json")
            self.reload_revocation(force=True, strict=True)
        except RevocationError as exc:
            raise ConfigError(cfg.path, "revocation", str(exc)) from None
        # policy and the context that changes while sessions live
        self.policy: Policy | None = None
        self.policy_spec: PolicySpec | None = None
        self.policy_file = Watched(cfg.resolve(cfg.policy.file) if cfg.policy.file else None)
        self.policy_signer = None
        self.policy_versions: PolicyVersions | None = None
        if cfg.policy.signer_key:
            key = load_key("ed25519", cfg.resolve(cfg.policy.signer_key), cfg.path, "policy.signer_key")
            assert not isinstance(key, bytes)
            self.policy_signer = key
            self.policy_versions = PolicyVersions(state_dir / "policy-version.json")
        if self.policy_file.path is not None:
            self.policy, self.policy_spec = self._load_policy(self.policy_file.path)
            self.policy_file.changed()
            self._apply_zones()
            self.posture.ttl = self.policy_spec.posture.ttl
            self.anomaly.settings = self.policy_spec.anomaly.compile()
        now = time.time()
        for name, feed in (("posture", self.posture), ("jit", self.jit), ("kill_switch", self.kill)):
            feed.file.changed()
            try:
                problems = feed.reload(now)
            except FeedError as exc:
                raise ConfigError(cfg.path, "feeds", str(exc)) from None
            if problems:
                self._deferred.append((name, f"{name} entries refused at start", problems))
        # break-glass JIT grants count only once audited: the first tick reads them (jit.break_glass_file)
        self._compile_risk()
        try:  # identities an administrator revoked through the admin API (identity -> reason)
            self.admin_revoked: dict[str, str] = self.read_admin_revoked()
        except FeedError as exc:
            raise ConfigError(cfg.path, "gateway.state_dir", str(exc)) from None
        self._next_slow = self._next_ttl = 0.0

    # -- saying that a feed was refused ----------------------------------------------------
    def _refused(self, feed: str, what: str, problems: list[str]) -> None:
        """One alert record per reload, one log line per problem (the first ``MAX_REPORTED``), and the
        metric counting every problem: the last good state stays in force, so this is all that tells."""
        if not problems:
            return
        self.metrics.feed_errors.labels(feed).inc(len(problems))
        for p in problems[:MAX_REPORTED]:
            log.error("feed_refused", feed=feed, error=p)
        extra = {"problems": problems[:MAX_REPORTED], "count": len(problems)} if len(problems) > 1 else {}
        self.gate.event("alert", what=what, feed=feed, reason=problems[0], **extra)

    def _guarded(self, step: str, fn: Callable[[], T]) -> T | None:
        """Run one step of the watch; whatever it raises is alerted and the watch goes on."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the backstop: a feed must never stop the watch
            log.exception("watch_step_failed", step=step)
            self._refused("watch", f"watch step {step!r} failed; the last good state stays in force",
                          [f"{type(exc).__name__}: {exc}"])
            return None

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
        when they changed on disk (or ``force``); each file on its own, and a failure keeps that
        file's last good data (fail closed).  ``strict``: raise RevocationError instead."""
        changed = {k for k, p in self._watched().items() if force or stamp(p) != self._stamps.get(k)}
        if not changed:
            return
        for k, p in self._watched().items():
            self._stamps[k] = stamp(p)
        applied = False
        if "crl" in changed and self.crl_path is not None:
            applied |= self._reload_crl(self.crl_path, strict)
        if "denylist" in changed and self.denylist_path is not None:
            try:
                self._deny = load_denylist(self.denylist_path)
                applied = True
            except RevocationError as exc:
                if strict:
                    raise
                self._refused("denylist", "denylist not reloaded; the last good list stays in force", [str(exc)])
        if applied:
            crl = self._crl
            self.revoked = Revoked(crl.serials if crl else frozenset(), self._deny, crl.next_update if crl else None)
            self.guard.denylist = self._deny
            if not force:
                self.gate.event("revocation_reloaded", revoked_serials=len(self.revoked.serials),
                                denylisted=len(self._deny), crl_number=crl.number if crl else None)
        if "admin_revoked" in changed and not force:
            try:
                self.admin_revoked = self.read_admin_revoked()
            except FeedError as exc:
                self._refused("admin_revoked", "admin revocations not reloaded; last good list stays", [str(exc)])
        if changed & {"server_cert", "server_key"} and not force:
            assert self.cfg.listen is not None
            try:
                self.server_ctx = tls.server_context(self.cfg.resolve(self.cfg.listen.cert),
                                                     self.cfg.resolve(self.cfg.listen.key),
                                                     self.cfg.resolve(self.cfg.listen.ca))
                self.gate.event("server_cert_reloaded")
                log.info("server_cert_reloaded")
            except tls.TLSConfigError as exc:  # e.g. key written before the cert: retry next tick
                self._stamps.pop("server_cert", None)
                self._refused("server_cert", "server certificate not reloaded; old one stays in use", [str(exc)])

    def _reload_crl(self, path: Path, strict: bool) -> bool:
        """Load the CRL if it verifies and is not older than the one in force (nor than the newest
        one this state_dir ever accepted); True when it was taken."""
        try:
            info = load_crl(path, self.ca_certs)
            check_forward(path, info, self.crl_marks.get(info))
        except RevocationError as exc:
            if strict:
                raise
            self._refused("crl", "revocation data not reloaded; last good data stays in force", [str(exc)])
            return False
        self._crl = info
        self._crl_stale_after = info.next_update.timestamp() if info.next_update else None
        try:
            self.crl_marks.advance(info)
        except OSError as exc:  # the newer CRL is in force all the same: it can only revoke more
            if strict:
                raise RevocationError(f"{self.crl_marks.path}: cannot record the CRL in force: "
                                      f"{exc.strerror}") from None
            self._refused("crl", "CRL in force but not recorded; after a restart an older CRL would not be "
                          "refused", [f"{self.crl_marks.path}: cannot write: {exc.strerror}"])
        return True

    # -- the policy ----------------------------------------------------------------------
    def _apply_zones(self) -> None:
        zones = dict(self.cfg.zones)
        if self.policy_spec is not None:
            zones.update(self.policy_spec.zones)
        self.guard.zones = zone_entries(zones)

    def _load_policy(self, path: Path) -> tuple[Policy, PolicySpec]:
        """Load, verify the signature and, for a signed policy, refuse a rollback and record the
        version before the policy counts (raises ConfigError)."""
        policy, spec = load_policy(path, self.policy_signer)
        if self.policy_versions is not None:
            self.policy_versions.check(path, spec.version, policy.sha256)
            try:
                self.policy_versions.advance(spec.version, policy.sha256)
            except OSError as exc:
                raise ConfigError(self.policy_versions.path, "version", f"cannot record the policy version "
                                  f"({exc.strerror}); the policy is refused so that a rollback stays refusable") \
                    from None
            if spec.version is None:
                log.warning("signed_policy_without_version", file=str(path),
                            hint="add version = N: without it an older signed policy cannot be refused")
        return policy, spec

    def reload_policy(self, force: bool = False) -> None:
        """Reload the policy file when it changed (or ``force``); a refused file keeps the old policy."""
        if self.policy_file.path is None or not (self.policy_file.changed() or force):
            return
        try:
            self.policy, self.policy_spec = self._load_policy(self.policy_file.path)
        except ConfigError as exc:  # the old policy keeps running; say exactly what is wrong
            self._refused("policy", "policy not reloaded; the previous policy stays in force", [str(exc)])
            return
        self._apply_zones()
        self.posture.ttl = self.policy_spec.posture.ttl
        self.anomaly.settings = self.policy_spec.anomaly.compile()  # same baselines, new settings
        self._compile_risk()
        for ident_id, book in self.router.risk_books.items():  # new limits, same state
            book.limits = self.router.rules.limits(ident_id)
        self.gate.event("policy_loaded", sha256=self.policy.sha256, rules=len(self.policy.rules),
                        shadow=self.policy.global_shadow, file=str(self.policy_file.path),
                        version=self.policy_spec.version)
        self.metrics.policy_rules.set(len(self.policy.rules))
        log.info("policy_loaded", sha256=self.policy.sha256, rules=len(self.policy.rules),
                 version=self.policy_spec.version)

    def _compile_risk(self) -> None:
        self.router.rules = compile_rules(self.policy, self.policy_spec, self.cfg.policy.allow_all,
                                          self.router.last_px)

    # -- the context feeds -----------------------------------------------------------------
    def reload_feeds(self, force: bool = False) -> bool:
        """Reload posture, JIT grants (approved and break-glass) and kill switch when they changed;
        True if any did.  Each file on its own: one that is refused keeps its last good state."""
        any_changed = False
        now = time.time()
        for name, feed in (("posture", self.posture), ("jit", self.jit), ("kill_switch", self.kill)):
            if feed.file.path is None or not (feed.file.changed() or force):
                continue
            try:
                problems = feed.reload(now)
            except FeedError as exc:
                self._refused(name, f"{name} feed not reloaded; last good state stays", [str(exc)])
                continue
            any_changed = True
            self._refused(name, f"{name} entries refused or corrected (a refused one keeps its last good "
                          "state; for JIT: no grant); the rest applied", problems)
            if name == "kill_switch":
                self.gate.event("kill_switch", everything=self.kill.everything,
                                identities=sorted(self.kill.identities), accounts=sorted(self.kill.accounts))
            elif name == "jit":  # a permission granted or taken away: compliance sees when it took effect
                self.gate.event("jit_grants", grants={i: _iso(t) for i, t in sorted(self.jit.grants.items())})
            else:
                self.gate.event("posture_reloaded", assertions=len(self.posture.assertions))
        return self._reload_break_glass(force, now) or any_changed

    def _reload_break_glass(self, force: bool, now: float) -> bool:
        """Break-glass JIT grants (``fixgw jit break-glass``: no second approver) count only once a
        ``jit_break_glass`` record naming who and why is in the audit stream."""
        watched = self.jit.break_glass_file
        if watched.path is None or not (watched.changed() or force):
            return False
        try:
            entries, problems = self.jit.read_break_glass(self.guard.identities)
        except FeedError as exc:
            self._refused("jit_break_glass", "break-glass JIT grants not reloaded; the last good ones stay",
                          [str(exc)])
            return False
        self._refused("jit_break_glass", "break-glass JIT grants refused (no grant for them)", problems)
        admitted: dict[str, BreakGlass] = {}
        for ident, g in entries.items():
            if g.until <= now:
                continue
            if self.jit.break_glass.get(ident) != g:
                try:
                    self.gate.record("jit_break_glass", identity=ident, until=_iso(g.until), by=g.by,
                                     reason=g.reason, written_at=_iso(g.at), file=str(watched.path))
                except AuditError as exc:  # not recorded, not in force; retried next tick
                    log.error("jit_break_glass_not_recorded", identity=ident, error=str(exc))
                    watched.seen = None
                    continue
                log.warning("jit_break_glass", identity=ident, by=g.by, until=_iso(g.until))
            admitted[ident] = g
        self.jit.break_glass = admitted
        return True

    # -- staleness -----------------------------------------------------------------------------
    def _mark_stale(self, feed: str, stale: bool, what: str) -> None:
        """Alert once when ``feed`` turns stale, record when it is fresh again."""
        if stale == (feed in self._stale):
            return
        self.metrics.feed_stale.labels(feed).set(1 if stale else 0)
        if stale:
            self._stale.add(feed)
            log.warning("feed_stale", feed=feed, what=what)
            self.gate.event("alert", what=what, feed=feed, reason="stale")
        else:
            self._stale.discard(feed)
            log.info("feed_fresh", feed=feed)
            self.gate.event("feed_fresh", feed=feed)

    def check_stale(self, now: float) -> None:
        """The posture file not rewritten within ``[posture] max_age``; the CRL past its nextUpdate."""
        nu = self._crl_stale_after
        self._mark_stale("crl", nu is not None and now > nu,
                         f"the CRL {self.crl_path} is past its nextUpdate {_iso(nu or 0)}"
                         + ("; every client certificate is refused until a fresh CRL loads"
                            if self.cfg.revocation.stale_crl == "refuse" else "; it stays in use"))
        path = self.posture.file.path
        max_age = self.cfg.posture.max_age if self.cfg.posture.max_age is not None else self.posture.ttl
        if path is not None and max_age > 0:
            seen = self.posture.file.seen  # its modification time, in ns
            age = now - (seen[0] / 1e9 if seen is not None else self._started)
            self._mark_stale("posture", age > max_age,
                             f"the posture file {path} was not rewritten for {age:.0f} s (max_age {max_age:g} s); "
                             "its assertions count as unknown once older than the policy's posture ttl")

    # -- cutting off what is no longer allowed -----------------------------------------------
    def cut_reason(self, serial: int | None, not_after: float | None, identity: str | None, now: float) -> str | None:
        """Why a certificate or identity may no longer be used (expired, revoked, denylisted), or None."""
        if not_after is not None and now > not_after:
            return "client certificate expired"
        if serial is not None and serial in self.revoked.serials:
            return f"client certificate serial {serial:x} is revoked (CRL)"
        nu = self._crl_stale_after
        if nu is not None and now > nu and self.cfg.revocation.stale_crl == "refuse":
            return (f"the CRL is past its nextUpdate ({_iso(nu)}): revocation status unknown "
                    '([revocation] stale_crl = "refuse")')
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
            try:
                housekeeping(mono)
                self.tick(mono)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one bad tick
                text = f"{type(exc).__name__}: {exc}"
                log.exception("watch_tick_failed")
                if text != self._last_crash:  # once per distinct failure, not every 10 ms
                    self._last_crash = text
                    self._refused("watch", "a watch tick failed; the watch goes on", [text])

    def tick(self, mono: float) -> None:
        """One pass of the watch at monotonic time ``mono``; each step isolated (``_guarded``)."""
        if self._deferred:
            for feed, what, problems in self._deferred:
                self._refused(feed, what, problems)
            self._deferred = []
        changed = self._guarded("feeds", self.reload_feeds)
        policy_before = self.policy
        self._guarded("policy", self.reload_policy)
        now = time.time()
        if changed or self.policy is not policy_before or mono >= self._next_ttl:
            self._guarded("posture", lambda: self.enforce_context(now))
            self._guarded("stale", lambda: self.check_stale(now))
            self._next_ttl = mono + 1.0
        if mono >= self._next_slow:
            self._guarded("revocation", self.reload_revocation)
            self._guarded("enforce", lambda: self.enforce(now))
            self._next_slow = mono + self.cfg.revocation.check_interval
