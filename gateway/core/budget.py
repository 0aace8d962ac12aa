"""The refusal budget: what an identity's refused messages may cost the gateway (pure; time passed in).

A refused message costs about what an allowed one does — a decision record
in the audit stream and an answer in the client leg's resend log — so an
identity the policy allows nothing can fill the disk, and a full audit disk
refuses *every* session (fail closed).  Each identity therefore gets a token
bucket of refusals: ``burst`` deep, refilled at ``rate`` per second.  The
refusal that takes the last token logs the session out; while the bucket is
empty the gateway does not decide that identity's messages at all (no
decision record, no answer), it counts them (``Spend.dropped``) and writes one
summary.  Reconnecting does not help: the bucket belongs to the identity, not
the session, and only time refills it.

The gateway keeps two: one for the pipeline's refusals (policy, risk,
signature ...) and a larger one for what the FIX session layer refuses
itself (Reject(3) for a malformed message, a garbled frame dropped), which a
counterparty's engine may produce in good faith.

The allowed path pays one dict lookup (``buckets.get``: no bucket until the
first refusal).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Spend:
    """One identity's refusals."""

    tokens: float
    last: float
    refused: int = 0  # refused messages in all (for the records)
    dropped: int = 0  # messages not decided while the budget was exhausted, not yet reported
    first_dropped: int | None = None  # MsgSeqNum(34) of the first of them
    last_dropped: int | None = None


class RefusalBudget:
    """Per-identity token buckets of refused messages."""

    __slots__ = ("burst", "rate", "buckets", "name")

    def __init__(self, rate: float, burst: float, name: str = "refusal budget") -> None:
        if not (rate > 0 and burst >= 1):
            raise ValueError(f"a refusal budget needs rate > 0 and burst >= 1, not rate={rate!r} burst={burst!r}")
        self.rate, self.burst, self.name = rate, burst, name
        self.buckets: dict[str, Spend] = {}

    def credit(self, identity: str, now: float) -> int:
        """How many more refusals ``identity`` may have now (its whole refilled bucket, rounded down)."""
        b = self.buckets.get(identity)
        if b is None:
            return int(self.burst)
        return int(min(self.burst, b.tokens + (now - b.last) * self.rate))

    def exhausted(self, b: Spend, now: float) -> bool:
        """Before deciding: is this identity's budget used up (not even one more refusal left)?"""
        return b.tokens + (now - b.last) * self.rate < 1

    def spend(self, identity: str, now: float) -> bool:
        """A message of ``identity`` was refused; True when that used up its budget (log it out)."""
        b = self.buckets.get(identity)
        if b is None:
            b = self.buckets[identity] = Spend(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.last) * self.rate) - 1
        b.last = now
        b.refused += 1
        return b.tokens < 1

    def drop(self, b: Spend, seq: int | None) -> bool:
        """A message not decided (budget exhausted); True for the first since the last ``report``."""
        first = b.dropped == 0
        b.dropped += 1
        if first:
            b.first_dropped = seq
        b.last_dropped = seq
        return first

    def report(self, b: Spend) -> tuple[int, int | None, int | None]:
        """(count, first MsgSeqNum, last MsgSeqNum) of the messages dropped since the last report."""
        out = (b.dropped, b.first_dropped, b.last_dropped)
        b.dropped, b.first_dropped, b.last_dropped = 0, None, None
        return out
