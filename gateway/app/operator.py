"""Operator actions: what an administrator (or the anomaly detector) does to a running gateway.

The admin API, SIGHUP and the other workers' control messages call these;
each one changes what is allowed, persists it where a restart (or another
worker) will find it, and has the watch cut off what is no longer allowed.
"""

from __future__ import annotations

import time

from gateway.app.audit_gate import AuditGate
from gateway.app.watch import Watch
from gateway.edges.feeds import FeedError, KillSwitch, PostureFeed, read_json, write_json
from gateway.shells.handoff import Worker, call


class Operator:
    """Changes made to a live gateway on purpose: kill switch, revocations, posture pushes, reloads.

    It exists so that every action that *writes* state — the persisted kill
    switch and administrator revocations, posture assertions pushed through
    the admin API, forced reloads — sits apart from the watch that *reads*
    that state back and decides who is cut off.  The audit records of the
    admin API's actions are written by the admin API; this class writes only
    what the action itself must say (the automatic kill switch, shared posture)."""

    def __init__(self, watch: Watch, gate: AuditGate, kill: KillSwitch, posture: PostureFeed,
                 worker: Worker | None) -> None:
        self.watch = watch
        self.gate = gate
        self.kill = kill
        self.posture = posture
        self.worker = worker

    def trip_kill_switch(self, identity: str, reason: str) -> None:
        """Automatic kill switch for one identity: in force now, persisted for operators and restarts."""
        self.kill.identities = self.kill.identities | {identity}
        self.gate.event("kill_switch", identities=sorted(self.kill.identities), reason=reason, automatic=True)
        path = self.kill.file.path
        if path is not None:
            try:
                data = read_json(path)
                data["identities"] = sorted(set(data.get("identities", [])) | {identity})
                write_json(path, data)
                self.kill.file.changed()  # our own write: no reload needed
            except (FeedError, OSError) as exc:
                self.gate.event("alert", what="kill switch not persisted (in force in memory)", reason=str(exc))

    # -- administrator revocations ------------------------------------------------------
    def admin_revoke(self, identity: str, reason: str, by: str, now: float) -> None:
        """Refuse the identity from now on (persisted across restarts) and cut its live sessions."""
        self._merge_admin_revoked()
        self.watch.admin_revoked[identity] = f"{reason} (by {by})"
        write_json(self.watch.admin_revoked_path, self.watch.admin_revoked)
        self.watch.enforce(now)

    def admin_reinstate(self, identity: str) -> bool:
        """Lift an administrator's revocation; False if the identity was not revoked."""
        self._merge_admin_revoked()
        if self.watch.admin_revoked.pop(identity, None) is None:
            return False
        write_json(self.watch.admin_revoked_path, self.watch.admin_revoked)
        return True

    def _merge_admin_revoked(self) -> None:
        """Several workers write the same file: start from what is on disk now."""
        if self.worker is not None:
            try:
                self.watch.admin_revoked = self.watch.read_admin_revoked()
            except FeedError:
                pass  # keep ours; the write below replaces the unreadable file

    # -- posture pushed through the admin API ---------------------------------------------
    async def share_posture(self, assertions: list[tuple[str, str]], now: float) -> list[int]:
        """Posture pushed to this worker's admin API goes to every worker (each owns other sessions);
        returns the workers that did not confirm they applied it (``handoff.call``: any size, acknowledged)."""
        if self.worker is None:
            return []
        return await call(self.worker, "posture", {"posture": assertions, "at": now})

    def apply_posture(self, assertions: list[tuple[str, str]], at: float, origin: int | None = None) -> None:
        """Assertions from the admin API (ours or another worker's): in force now, live sessions re-decided."""
        for ident, level in assertions:
            self.posture.push(ident, level, at)
        if origin is not None:
            self.gate.event("posture_shared", origin_worker=origin, assertions=[f"{i}={lv}" for i, lv in assertions])
        self.watch.enforce_context(time.time())

    # -- reloads on demand ----------------------------------------------------------------
    def reload_policy_now(self) -> str | None:
        """Reload the policy file at once; returns the error when the file is refused."""
        before = self.watch.policy
        self.watch.reload_policy(force=True)
        if self.watch.policy is before:
            return "the policy file was not loaded (see the alert record); the previous policy stays in force"
        self.watch.enforce_context(time.time())
        return None

    def reload_now(self) -> None:
        """SIGHUP: reload revocation data, the server certificate, the policy and the feeds at once."""
        self.watch.reload_revocation(force=True)
        self.watch.reload_policy(force=True)
        self.watch.reload_feeds(force=True)
        self.gate.event("reload", trigger="SIGHUP")
        self.watch.enforce(time.time())
        self.watch.enforce_context(time.time())
