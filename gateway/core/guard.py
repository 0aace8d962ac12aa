"""The checks every connection, Logon and application message passes.

One seam per check, called in this order (DESIGN §1): identity (certificate
-> registry entry, zone, pin) -> Logon binding (CompID, SubID, signed Logon)
-> per-message signature.  The later seams live elsewhere: MFA in
``gateway.mfa``, revocation in ``Gateway.cut_reason``, policy and risk in
``Gateway.decide`` / ``Gateway.risk_check`` (``gateway.policy``), the audit
append in ``Gateway.audit_record``.  Every check returns a ``Verdict``;
whatever cannot say yes says no.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.core.fix import signature
from gateway.core.fix import tags as T
from gateway.core.fix.codec import Message
from gateway.core.identity import Identity, ZoneTable, zone_of


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    rule: str
    reason: str



class Guard:
    def __init__(self, trust_domain: str, identities: dict[str, Identity], zones: ZoneTable) -> None:
        self.trust_domain = trust_domain
        self.identities = identities
        self.zones = zones
        self.denylist: frozenset[str] = frozenset()

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

    def check_logon(self, ident: Identity, msg: Message, now: float) -> Verdict:
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
        return Verdict(True, "identity.comp_id", "CompID bound to identity")

    def check_signature(self, ident: Identity, msg: Message, now: float) -> Verdict:
        """Per-message signature (before anything else looks at the message)."""
        if ident.signing == "none":
            return Verdict(True, "signature", "identity does not sign")
        try:
            key_id = signature.verify(msg.raw, ident.keys, now)
        except signature.SignatureError as exc:
            return Verdict(False, "signature", str(exc))
        return Verdict(True, "signature", f"{ident.signing} key {key_id}")

    def check_sub_id(self, ident: Identity, msg: Message) -> Verdict:
        if ident.sub_ids:
            sub = (msg.get(T.SenderSubID) or b"").decode("latin-1")
            if sub not in ident.sub_ids:
                return Verdict(False, "identity.sub_id", f"{ident.id} may not use SenderSubID(50)={sub or '(none)'}")
        return Verdict(True, "identity.sub_id", "ok")
