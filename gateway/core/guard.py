"""The checks every connection, Logon and application message passes.

One seam per check, called in this order (DESIGN §1): identity (certificate
-> registry entry, zone, pin) -> reach (can the identity's roles do anything
at all from this zone?) -> Logon binding (CompID, SubID, signed Logon, not a
replay) -> the person behind an MFA identity (bound to it) -> per-message
signature, never used twice.  The later seams live elsewhere: the password
and TOTP check in ``gateway.edges.mfa``, revocation in ``Gateway.cut_reason``,
policy and risk in ``gateway/core/pipeline.py``, the audit append in the
application.  Every check returns a ``Verdict``; whatever cannot say yes
says no.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.core.fix import signature
from gateway.core.fix import tags as T
from gateway.core.fix.codec import Message
from gateway.core.fix.signature import ReplayWindow
from gateway.core.fix.utctime import parse_utc_timestamp
from gateway.core.identity import Identity, ZoneTable, zone_of
from gateway.core.policy.engine import POSTURE_LEVELS, Context, Policy


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    rule: str
    reason: str


def reach(policy: Policy, ident: Identity, zone: str | None, now: float) -> Verdict:
    """Can any enforced allow rule of ``policy`` ever apply to this identity's roles from ``zone``?

    "Ever": at any device posture, any time of day, with any condition (MFA,
    JIT, IP allowlist) met and any message fields — those can change while a
    session lives; the zone of a connection cannot.  Outbound rules decide;
    an identity whose roles may send nothing from anywhere (a drop copy, say)
    is judged by its inbound rules instead.  A policy in global shadow mode
    refuses nothing, so it refuses no zone either."""
    if policy.global_shadow:
        return Verdict(True, "identity.reach", "policy in global shadow mode")
    roles = frozenset(ident.roles)

    def ctx(direction: str, posture: str) -> Context:
        return Context(ident.id, roles, zone, posture, True, None, True, now, direction)

    def allowed_types(direction: str) -> set[bytes]:
        return {mt for r in policy.rules if r.direction == direction and r.decision == "allow" and not r.shadow
                for mt in r.msg_types}

    sends = allowed_types("outbound")  # may these roles send anything from anywhere?
    direction = "outbound" if any(not r.shadow and r.decision == "allow" for mt in sends
                                  for r in policy.candidates(ctx("outbound", "unknown"), mt)) else "inbound"
    types = sends if direction == "outbound" else allowed_types("inbound")
    if any(policy.allows_anything(ctx(direction, posture), types) for posture in POSTURE_LEVELS):
        return Verdict(True, "identity.reach", f"{direction} rules apply from this zone")
    where = f"zone {zone}" if zone else "an address in no zone"
    return Verdict(False, "identity.reach",
                   f"no {direction} rule of the policy allows roles {sorted(roles) or '(none)'} anything from "
                   f"{where}")


class Guard:
    def __init__(self, trust_domain: str, identities: dict[str, Identity], zones: ZoneTable) -> None:
        self.trust_domain = trust_domain
        self.identities = identities
        self.zones = zones
        self.denylist: frozenset[str] = frozenset()
        self.seen: dict[str, ReplayWindow] = {}  # identity -> digests of the signed frames it used
        self._reach: dict[tuple[str, str | None], Verdict] = {}  # for ``_reach_policy``
        self._reach_policy: Policy | None = None

    def zone(self, address: str | None, listener: str | None = None) -> str | None:
        return zone_of(address, self.zones, listener)

    def identify(self, uri_sans: list[str]) -> tuple[Identity | None, str]:
        """Identity of a verified client certificate, or why there is none."""
        if len(uri_sans) != 1:
            return None, f"certificate has {len(uri_sans)} URI SANs; exactly one spiffe:// URI is required"
        uri = uri_sans[0]
        prefix = f"spiffe://{self.trust_domain}/"
        if not uri.startswith(prefix):
            return None, f"identity {uri} is not in trust domain {self.trust_domain}"
        if uri in self.denylist:
            return None, f"identity {uri} is on the denylist"
        ident = self.identities.get(uri)
        if ident is None:
            return None, f"identity {uri} is not in the identity registry"
        return ident, "ok"

    def check_connection(self, ident: Identity, zone: str | None, leaf_der: bytes) -> Verdict:
        if ident.zones and zone not in ident.zones:
            where = zone or "an unknown zone"
            return Verdict(False, "identity.zone",
                           f"{ident.id} may connect from zones {sorted(ident.zones)}, not from {where}")
        if ident.pins:
            fp = hashlib.sha256(leaf_der).hexdigest()
            if fp not in ident.pins:
                return Verdict(False, "identity.pin", f"leaf certificate SHA-256 {fp} matches no pin of {ident.id}")
        return Verdict(True, "identity", "ok")

    def check_logon(self, ident: Identity, msg: Message, now: float, window: float) -> Verdict:
        """CompID and SubID owned, Logon signed by a current key and never seen before (``window``:
        the route's SendingTime window, max_latency)."""
        sender = (msg.get(T.SenderCompID) or b"").decode("latin-1")
        if sender not in ident.comp_ids:
            return Verdict(False, "identity.comp_id", f"{ident.id} may not log on as SenderCompID(49)={sender}")
        if ident.sub_ids:
            sub = (msg.get(T.SenderSubID) or b"").decode("latin-1")
            if sub not in ident.sub_ids:
                return Verdict(False, "identity.sub_id", f"{ident.id} may not use SenderSubID(50)={sub or '(none)'}")
        if ident.signing != "none":
            try:
                signature.verify(msg.raw, ident.keys, now)
            except signature.SignatureError as exc:
                return Verdict(False, "signature.logon", f"Logon(A) signature: {exc}")
            replayed = self.first_use(ident, msg, window, now)
            if replayed is not None:
                return Verdict(False, "signature.replay", f"Logon(A): {replayed}")
        return Verdict(True, "identity.comp_id", "CompID bound to identity")

    def check_user(self, ident: Identity, user: str) -> Verdict:
        """An MFA identity opens only for the people bound to it (checked before any password, so
        nobody else's attempts count against them)."""
        if user not in ident.users:
            return Verdict(False, "identity.user", f"Username(553) names nobody bound to {ident.id}")
        return Verdict(True, "identity.user", "user bound to identity")

    def check_reach(self, ident: Identity, zone: str | None, policy: Policy | None, now: float) -> Verdict:
        """``reach`` under the running policy (none loaded: per-message decisions only), memoised per policy."""
        if policy is None:
            return Verdict(True, "identity.reach", "no policy loaded")
        if policy is not self._reach_policy:
            self._reach, self._reach_policy = {}, policy
        key = (ident.id, zone)
        v = self._reach.get(key)
        if v is None:
            v = reach(policy, ident, zone, now)
            if len(self._reach) < 65536:
                self._reach[key] = v
        return v

    def first_use(self, ident: Identity, msg: Message, window: float, now: float) -> str | None:
        """None (and remembered) unless this identity used the same signed bytes within the SendingTime
        ``window`` before; a frame without a signature is left to the signature check."""
        try:
            digest = signature.span_digest(msg.raw)
        except signature.SignatureError:
            return None
        seen = self.seen.get(ident.id)
        if seen is None:
            seen = self.seen[ident.id] = ReplayWindow()
        return seen.first_use(digest, parse_utc_timestamp(msg.get(T.SendingTime) or b""), window, now)

