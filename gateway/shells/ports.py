"""What the asyncio shells need from the application: one small interface.

The shells (client and exchange legs, hand-off, admin API) are built by the
application wiring (``gateway.app``) and call back into it only through
``Hub``; they never import the application.  That keeps imports pointing
inward (``tests/test_architecture.py``) and shows on one screen everything a
connection can ask of the gateway: record an event, look up identities and
routes, hand an application message to the trust pipeline, run an operator
action.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.core.admission import Admission
    from gateway.core.fix.codec import Message
    from gateway.core.fix.signature import Signer
    from gateway.core.guard import Guard
    from gateway.core.partition import Partition
    from gateway.core.policy.engine import Policy
    from gateway.edges.config import Config
    from gateway.edges.feeds import JitGrants, KillSwitch, PostureFeed, Watched
    from gateway.edges.metrics import Metrics
    from gateway.edges.mfa import MFA
    from gateway.shells.client_leg import ClientProtocol
    from gateway.shells.handoff import Relay, Worker
    from gateway.shells.route import Route


class Hub(Protocol):
    """The gateway as its shells see it (implemented by ``gateway.app.gateway.Gateway``)."""

    # -- configuration and identity (read-only for the shells) --------------------
    cfg: Config
    guard: Guard
    worker: Worker | None
    partition: Partition
    outbound_signer: Signer | None
    mfa: MFA | None
    admission: Admission
    metrics: Metrics
    stopping: bool
    routes: dict[tuple[bytes, bytes, bytes], Route]
    connections: set[ClientProtocol]
    relays: set[Relay]
    inbox: Any
    # -- context feeds the admin API shows and changes ------------------------------
    kill: KillSwitch
    jit: JitGrants
    posture: PostureFeed
    policy_file: Watched

    # -- replaced while the gateway runs (certificate rotation, policy reload): read them each time
    @property
    def server_ctx(self) -> ssl.SSLContext: ...

    @property
    def policy(self) -> Policy | None: ...

    def audit_event(self, kind: str, **fields: Any) -> bool:
        """Record an event (not a decision) in the audit stream; False if it could not be written."""

    def cut_reason(self, serial: int | None, not_after: float | None, identity: str | None,
                   now: float) -> str | None:
        """Why a certificate or identity may no longer be used (revoked, denylisted, expired), or None."""

    def posture_refusal(self, identity: str, now: float) -> str | None:
        """The device posture of ``identity`` when it is a level the policy logs sessions out on, or None."""

    # -- the trust pipeline: every application message, both directions ------------
    def client_to_exchange(self, route: Route, conn: ClientProtocol, msg: Message, now: float) -> None: ...

    def refusal_credit(self, conn: ClientProtocol, now: float) -> int | None: ...

    def session_refused(self, route: Route, conn: ClientProtocol, seq: int | None, kind: str,
                        fields: dict[str, Any], now: float) -> None: ...

    def exchange_to_client(self, route: Route, msg: Message, header_tags: frozenset[int], now: float) -> None: ...

    def venue_rejected(self, route: Route, reject: Message, now: float) -> None:
        """The venue refused a message of ours with a session-level Reject(3): the client whose message
        it was is told (the venue's reason, in the session's ``venue_reject_answer``), and it is audited."""

    def venue_invalid(self, route: Route, msg: Message, reason: int, detail: str, now: float) -> None:
        """The exchange leg rejected the venue's application message ``msg`` as invalid (SessionRejectReason
        ``reason``, ``detail`` why): it is not delivered; the client is told, and it is audited."""

    def session_reset(self, route: Route) -> None:
        """The client leg's sequence numbers were reset: a new FIX session begins on the route."""

    # -- operator actions ----------------------------------------------------------------
    def reload_feeds(self, force: bool = False) -> bool: ...

    def enforce_context(self, now: float) -> None: ...

    async def share_posture(self, assertions: list[tuple[str, str]], now: float) -> list[int]:
        """Give posture assertions to every other worker; the workers that did not confirm applying them."""

    def apply_posture(self, assertions: list[tuple[str, str]], at: float, origin: int | None = None) -> None: ...

    def admin_revoke(self, identity: str, reason: str, by: str, now: float) -> None: ...

    def admin_reinstate(self, identity: str) -> bool: ...

    def reload_policy_now(self) -> str | None: ...

    def refresh_metrics(self, now: float) -> None: ...
