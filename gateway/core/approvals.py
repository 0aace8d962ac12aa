"""The two-person rule for operator actions that lower a defence (pure: time is an argument).

One administrator *asks* — a just-in-time grant, turning a kill switch off,
revoking an identity, reinstating one — and nothing changes until a
*second* administrator approves.  Why these: each one either lifts a
protection (kill switch off, reinstate, JIT) or can take other people out of
the game (revoking the other administrators is how one stolen admin
certificate would lock out everyone who could stop it).  Turning a kill
switch *on* stays one person's call: it only ever stops trading.

Rules, checked when the second administrator approves:

* the approver is not the one who asked, and not the identity the request is
  about (nobody approves their own grant or reinstatement);
* the request is still pending (approved requests are not approved twice)
  and younger than ``REQUEST_TTL``: an old request lapses unapproved;
* the administrator who asked is still live: a request from an identity (or
  a certificate) that has since been revoked, denylisted or stripped of the
  role dies with it (the shell passes that fact in).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: an unapproved request lapses after this long (seconds)
REQUEST_TTL = 3600.0
#: actions that wait for a second administrator
JIT = "jit"
KILL_SWITCH_OFF = "kill_switch_off"
REVOKE = "revoke"
REINSTATE = "reinstate"
ACTIONS = (JIT, KILL_SWITCH_OFF, REVOKE, REINSTATE)


@dataclass
class Request:
    """One administrator's request, waiting for (or carried out after) a second one's approval."""

    id: str
    action: str
    identity: str | None  # whom it is about (None: the kill switch's global/account scope)
    reason: str
    requested_by: str
    requested_at: float
    details: dict[str, Any] = field(default_factory=dict)  # what to do exactly (kill switch scope, minutes)
    approved_by: str | None = None
    approved_at: float | None = None
    expires_at: float | None = None  # JIT: when the grant ends
    failed: str | None = None  # approved, but carrying it out failed
    # the certificate the request came with (serial, expiry): checked again at approval, so that a
    # request dies when its requester's certificate is revoked or expires meanwhile
    requester_cert: tuple[int | None, float | None] = (None, None)

    def state(self, now: float) -> str:
        """pending | lapsed | done | failed | active | expired (the last two: JIT grants)."""
        if self.approved_at is None:
            return "lapsed" if now - self.requested_at > REQUEST_TTL else "pending"
        if self.failed is not None:
            return "failed"
        if self.action == JIT:
            return "active" if self.expires_at is not None and now < self.expires_at else "expired"
        return "done"


def refusal(req: Request, approver: str, now: float, requester_cut: str | None) -> str | None:
    """Why ``approver`` may not approve ``req`` now (None: they may).  ``requester_cut`` is why the
    administrator who asked may no longer act (revoked, denylisted), or None."""
    if approver == req.requested_by:
        return "the administrator who asked cannot approve: a second administrator must"
    if req.identity is not None and approver == req.identity:
        return f"{approver} cannot approve a request about itself: another administrator must"
    state = req.state(now)
    if state != "pending":
        return f"the request is {state}"
    if requester_cut is not None:
        return f"the administrator who asked ({req.requested_by}) may no longer act: {requester_cut}"
    return None


def approve(req: Request, approver: str, now: float) -> None:
    """Mark ``req`` approved (after ``refusal`` said None); a JIT grant runs from now."""
    req.approved_by, req.approved_at = approver, now
    if req.action == JIT:
        req.expires_at = now + float(req.details["minutes"]) * 60
