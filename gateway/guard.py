"""The checks every session and every application message passes (pure).

One seam per check, called in this order for every message (DESIGN §1):
identity binding -> signature -> policy + risk.  The audit append is the
fourth seam and lives with the proxy because it does I/O.  Whatever cannot
say yes says no.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Config
from .fix.codec import Message


@dataclass(frozen=True, slots=True)
class Identity:
    id: str
    comp_ids: frozenset[str]
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    rule: str
    reason: str


ALLOW_ALL = Verdict(True, "allow_all", "policy.allow_all is set")


class Guard:
    def __init__(self, cfg: Config) -> None:
        self.trust_domain = cfg.gateway.trust_domain
        self.identities = {
            i.id: Identity(i.id, frozenset(i.comp_ids), tuple(i.roles)) for i in cfg.identities
        }
        self.allow_all = cfg.policy.allow_all

    def identify(self, uri_sans: list[str]) -> tuple[Identity | None, str]:
        """Identity of a verified client certificate, or why there is none."""
        if len(uri_sans) != 1:
            return None, f"certificate has {len(uri_sans)} URI SANs; exactly one spiffe:// URI is required"
        uri = uri_sans[0]
        prefix = f"spiffe://{self.trust_domain}/"
        if not uri.startswith(prefix):
            return None, f"identity {uri} is not in trust domain {self.trust_domain}"
        ident = self.identities.get(uri)
        if ident is None:
            return None, f"identity {uri} is not in the identity registry"
        return ident, "ok"

    def check_logon(self, ident: Identity, sender_comp_id: str) -> Verdict:
        if sender_comp_id not in ident.comp_ids:
            return Verdict(False, "identity.comp_id",
                           f"{ident.id} may not log on as SenderCompID(49)={sender_comp_id}")
        return Verdict(True, "identity.comp_id", "CompID bound to identity")

    def check_app(self, ident: Identity, msg: Message) -> Verdict:
        # signature seam: no identity signs yet (per-message signatures come with identity work)
        # policy + risk seam: default deny unless the config explicitly allows all
        if self.allow_all:
            return ALLOW_ALL
        return Verdict(False, "default_deny", "no policy allows this message (default deny)")
