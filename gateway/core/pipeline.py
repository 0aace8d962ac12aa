"""The trust pipeline: every application message, on every path, through the same ordered checks.

This module is the one place that says, in order, what a message must pass
before it may cross from one FIX leg to the other (DESIGN §1, "fail
closed, in this order").  It is pure: no I/O, no clock reads (``now`` is an
argument), no mutation of connection objects.  The application shell
(``gateway/app/routing.py``) feeds it one parsed message and the sender's
context, writes the decision record it describes to the audit stream, and
only then forwards the message or sends the answer the verdict names.

Before any of it, the shell checks the sender's refusal budget
(``gateway/core/budget.py``): an identity whose refused messages used it up
is not heard at all — its messages are neither decided nor answered nor
recorded one by one, and its session is logged out — so refused traffic
cannot cost the gateway more than the budget allows.  Each refusal below
spends from it.

Client -> exchange (``outbound``), in this order; the first check that
cannot say yes decides:

1. **signature** — identities that sign: Signature(89) over the message
   verifies with one of the identity's current keys, and the same signed
   bytes were not used before within the SendingTime(52) window (a frame
   replayed after a sequence reset).  Answer: Reject(3),
   SessionRejectReason(373)=8, RefTagID(371)=89; ``max_bad_signatures`` in a
   row add the ``logout`` obligation.
2. **SenderSubID(50)** — one of the identity's ``sub_ids`` (when it has any).
   Answer: Reject(3) 373=9 (CompID problem), RefTagID(371)=50.
3. **routing and attribution** — OnBehalfOf*/DeliverTo*/TargetSubID/
   *LocationID, XmlData and ApplVerID only with values the identity
   registry grants (default: none).  Answered as a policy refusal.
4. **duplicate resend** — an order with PossResend(97)=Y whose ClOrdID(11)
   this route already forwarded is consumed without an answer, as FIX
   session test case 19a says of a PossResend the application has seen.
5. **kill switch** — every order-creating MsgType (by the policy's actions,
   ``gateway/core/policy/actions.py``); cancels always pass.
6. **read-only** — once a decision granted ``read_only``, only READ-kind
   MsgTypes (queries) pass.
7. **policy** — the rules (``gateway/core/policy/engine.py``), or the
   explicit ``allow_all`` of conformance set-ups; default deny.
8. **pre-trade risk** — after an enforced allow: the throttle for every
   message (cancels in a bucket of their own, never the orders'), the order
   checks for every order-creating MsgType (``gateway/core/policy/risk.py``).

Then, outside this module and in this order: the decision record is written
(a failure refuses), the message is forwarded, and an outcome record says
what happened.

Exchange -> client (``inbound``): the policy's inbound rules, for a client
that is online and for one that is offline alike (its messages are decided
and recorded first, stored second).

Operator calls on the admin API (``operator``): the caller's identity must
be live (not revoked, denylisted or expired) and hold the role the endpoint
needs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from gateway.core.fix import signature
from gateway.core.fix import tags as T
from gateway.core.fix.codec import Message
from gateway.core.identity import ROUTING_FIELDS, XML_DATA, Identity
from gateway.core.policy.actions import CANCEL, ORDER, READ, kind_of
from gateway.core.policy.engine import Context, Decision, Policy
from gateway.core.policy.instruments import DEFAULT_INSTRUMENTS
from gateway.core.policy.risk import Limits, RiskBook

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# -- what a refusal implies on the client leg -----------------------------------------
#: no answer: the message is consumed (a PossResend duplicate, FIX 19a)
IGNORE = "ignore"
#: Reject(3) with SessionRejectReason(373) and RefTagID(371)
SESSION_REJECT = "session_reject"
#: by MsgType: ExecutionReport(8) for orders, OrderCancelReject(9) for cancels, else BusinessMessageReject(j)
REFUSE = "refuse"

_ROUTING_TAGS = frozenset(ROUTING_FIELDS.values())
_ROUTING_NAMES = {tag: name for name, tag in ROUTING_FIELDS.items()}


class Verdict(NamedTuple):
    """What the pipeline decided about one message, and everything the shell needs to act on it.

    A NamedTuple rather than a frozen dataclass: as immutable, and built per
    message without a setattr per field (the per-message value objects were
    a visible share of the hot path)."""

    allowed: bool  # does the message go on?
    outcome: str  # allow | deny | shadow-deny (global shadow let a deny through) | ignore
    stage: str  # the check that decided: signature, sub_id, routing, resend, kill_switch, read_only, policy, risk
    rule_ids: tuple[str, ...]
    reason: str
    answer: str | None = None  # IGNORE | SESSION_REJECT | REFUSE when refused
    reject_reason: int = 0  # SessionRejectReason(373) for SESSION_REJECT
    ref_tag: int = 0  # RefTagID(371) for SESSION_REJECT
    controls: frozenset[str] = frozenset()
    shadow: tuple[tuple[str, str], ...] = ()
    logout: bool = False  # obligation: log the session out after answering
    key_id: str | None = None  # the signing key that verified

    @property
    def read_only(self) -> bool:
        """Obligation: the session is read-only from now on."""
        return self.allowed and "read_only" in self.controls

    @property
    def full_capture(self) -> bool:
        """Obligation: every frame of the session verbatim into the audit stream."""
        return self.allowed and "full_capture" in self.controls


@dataclass(slots=True)
class Party:
    """The sender of one client session as the checks see it (built once at Logon)."""

    identity: Identity
    roles: frozenset[str]
    zone: str | None
    peer_ip: Address | None
    user: str | None  # the person who passed MFA, if any
    appl_ver_ids: frozenset[bytes]  # ApplVerID(1128) values of the route's dictionaries
    replay_window: float = 120.0  # the route's SendingTime(52) window: how long a signed frame stays used


class Moment(NamedTuple):
    """The context that changes while a session lives, read by the shell just before deciding."""

    now: float
    posture: str
    jit: bool
    read_only: bool  # a previous decision granted read_only
    bad_signatures: int  # consecutive bad signatures before this message
    kill: Callable[[str, Message], str | None]  # (identity, message) -> why the kill switch blocks it, or None
    #: (identity, message, window, now) -> why this signed frame was used before, or None (and now it is)
    first_use: Callable[[Identity, Message, float, float], str | None] | None = None


@dataclass
class Rules:
    """Everything a decision depends on that changes only when the policy (re)loads."""

    policy: Policy | None
    allow_all: bool
    limits: Callable[[str], Limits]  # identity -> its merged risk limits
    account_limits: Mapping[bytes, Limits]
    references: Mapping[bytes, float]

    def kind(self, msg_type: bytes) -> str:
        p = self.policy  # a policy's actions may name the kind of a venue's own MsgTypes
        return p.kind_of(msg_type) if p is not None else kind_of(msg_type)


def _refuse(stage: str, rule: str, reason: str, answer: str = REFUSE, reject_reason: int = 0, ref_tag: int = 0,
            logout: bool = False) -> Verdict:
    return Verdict(False, "deny", stage, (rule,), reason, answer, reject_reason, ref_tag, logout=logout)


def routing_fields(msg: Message) -> dict[str, str]:
    """The routing and attribution fields a message carries, by FIX name (for the decision record)."""
    idx = msg._idx()
    if _ROUTING_TAGS.isdisjoint(idx):
        return {}
    return {_ROUTING_NAMES[t]: v.decode("latin-1") for t, v in msg.fields if t in _ROUTING_TAGS and t != XML_DATA}


def _check_routing(party: Party, msg: Message) -> Verdict | None:
    idx = msg._idx()
    if _ROUTING_TAGS.isdisjoint(idx):
        return None
    granted = party.identity.routing
    for tag, value in msg.fields:  # every occurrence: a repeated header field is checked too
        if tag not in _ROUTING_TAGS:
            continue
        name = _ROUTING_NAMES[tag]
        if tag == T.ApplVerID:
            if value not in party.appl_ver_ids:
                return _refuse("routing", "routing.ApplVerID",
                               f"ApplVerID(1128)={value.decode('latin-1')} is not a version of this session")
            continue
        allowed = granted.get(tag)
        if allowed is None or ("*" not in allowed and value.decode("latin-1") not in allowed):
            shown = "(xml)" if tag == XML_DATA else value.decode("latin-1") or "(empty)"
            return _refuse("routing", f"routing.{name}",
                           f"{party.identity.id} may not use {name}({tag})={shown}")
    return None


def _cl_ord_ids(msg: Message) -> list[bytes]:
    return [v for t, v in msg.fields if t == T.ClOrdID]


def outbound(party: Party, msg: Message, at: Moment, rules: Rules, book: RiskBook | None,
             forwarded: Mapping[bytes, object]) -> Verdict:
    """Decide one application message from a client (checks 1-8 above, in that order).

    ``book`` is the identity's risk state (None: no risk limits apply);
    ``forwarded`` the ClOrdIDs this route already carried to the exchange.
    """
    ident = party.identity
    key_id = None
    # 1. signature, before anything else looks at the message (DESIGN §4)
    if ident.signing != "none":
        try:
            key_id = signature.verify(msg.raw, ident.keys, at.now)
        except signature.SignatureError as exc:
            return _refuse("signature", "signature", str(exc), SESSION_REJECT,
                           reject_reason=T.SRR_SIGNATURE_PROBLEM, ref_tag=T.Signature,
                           logout=at.bad_signatures + 1 >= ident.max_bad_signatures)
        # a valid signature is good once: the same signed bytes again (replayed after a sequence reset)
        replayed = at.first_use(ident, msg, party.replay_window, at.now) if at.first_use is not None else None
        if replayed is not None:
            return _refuse("signature", "signature.replay", f"Signature(89): {replayed}", SESSION_REJECT,
                           reject_reason=T.SRR_SIGNATURE_PROBLEM, ref_tag=T.Signature,
                           logout=at.bad_signatures + 1 >= ident.max_bad_signatures)
    # 2. SenderSubID(50)
    if ident.sub_ids:
        sub = (msg.get(T.SenderSubID) or b"").decode("latin-1")
        if sub not in ident.sub_ids:
            return _refuse("sub_id", "identity.sub_id", f"{ident.id} may not use SenderSubID(50)={sub or '(none)'}",
                           SESSION_REJECT, reject_reason=T.SRR_COMPID_PROBLEM, ref_tag=T.SenderSubID)
    # 3. routing and attribution fields
    refused = _check_routing(party, msg)
    if refused is not None:
        return refused
    kind = rules.kind(msg.msg_type)
    # 4. a resend of an order this route already carried is not a second order (FIX 19a)
    if kind == ORDER and msg.get(T.PossResend) == b"Y":
        seen = [c for c in _cl_ord_ids(msg) if c in forwarded]
        if seen:
            return Verdict(False, "ignore", "resend", ("resend.duplicate",),
                           f"PossResend(97)=Y and ClOrdID(11)={seen[0].decode('latin-1')} was already forwarded",
                           IGNORE)
    # 5. kill switch: order-creating messages; cancels always pass
    if kind == ORDER:
        block = at.kill(ident.id, msg)
        if block:
            return _refuse("kill_switch", "kill-switch", block)
    # 6. read-only sessions send queries only
    if at.read_only and kind != READ:
        return _refuse("read_only", "read-only", "the session is read-only")
    # 7. policy
    d = _policy(party, msg, at, rules, "outbound")
    if not d.allowed:
        return Verdict(False, d.outcome, "policy", d.rule_ids, d.reason, REFUSE, shadow=d.shadow)
    # 8. pre-trade risk, after an enforced allow
    if book is not None and d.outcome == "allow":
        accounts = [rules.account_limits[v] for t, v in msg.fields
                    if t == T.Account and v in rules.account_limits] if rules.account_limits else None
        policy = rules.policy
        hit = book.check(msg, at.now, accounts or None, rules.references, kind,
                         policy.instruments if policy is not None else DEFAULT_INSTRUMENTS, d.facts)
        if hit is not None:
            name, why = hit
            if name == "risk.possresend_duplicate":
                return Verdict(False, "ignore", "risk", (name,), why, IGNORE)
            return Verdict(False, "deny", "risk", (name,), why, REFUSE)
    return Verdict(True, d.outcome, "policy", d.rule_ids, d.reason, None, controls=d.controls, shadow=d.shadow,
                   key_id=key_id)


def inbound(party: Party, msg: Message, at: Moment, rules: Rules) -> Verdict:
    """Decide one application message from the exchange for this client (online or offline alike)."""
    d = _policy(party, msg, at, rules, "inbound")
    return Verdict(d.allowed, d.outcome, "policy", d.rule_ids, d.reason, None if d.allowed else IGNORE,
                   shadow=d.shadow)


def _policy(party: Party, msg: Message, at: Moment, rules: Rules, direction: str) -> Decision:
    policy = rules.policy
    if policy is None:
        if rules.allow_all:
            return Decision(True, "allow", ("allow_all",), frozenset(), "policy.allow_all is set")
        return Decision(False, "deny", ("default-deny",), frozenset(), "no policy is loaded (default deny)")
    ctx = Context(party.identity.id, party.roles, party.zone, at.posture, party.user is not None, party.peer_ip,
                  at.jit, at.now, direction)
    return policy.decide(ctx, msg)


def operator(identity: Identity | None, why_not: str, revoked: str | None, needs_role: str | None) -> Verdict:
    """An admin API call: a registered, live identity holding the endpoint's role (None: any identity)."""
    if identity is None:
        return _refuse("identity", "admin.identity", why_not)
    if revoked is not None:
        return _refuse("revocation", "admin.revoked", revoked)
    if needs_role is not None and needs_role not in identity.roles:
        return _refuse("role", "admin.role", f"{identity.id} lacks role {needs_role}")
    return Verdict(True, "allow", "role", (f"admin.{needs_role or 'any'}",), "ok")


__all__ = ["CANCEL", "ORDER", "READ", "Moment", "Party", "Rules", "Verdict", "inbound", "operator",
           "outbound", "routing_fields"]
