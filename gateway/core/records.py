"""What the audit stream says about a decision: the fields of the decision records.

Pure and part of the compiled core, for two reasons.  A decision record is
the verdict written down, so it is built next to the verdict, from the same
values, by code the compiled/interpreted differential test can run on both
sides (``tests/test_compiled_core.py`` compares the audit lines byte for
byte, hash chain included).  And it is built for every message, so it is hot.

The shell adds what only it knows (the session's name, the peer's address,
how long the decision took, whether the client is online) as arguments; the
audit log adds ``seq``, ``ts``, ``kind`` and ``prev``.

Values taken from a refused message are capped at ``MAX_RECORDED``
characters (``...[N chars]`` marks the cut), so what one refused message
costs on disk does not grow with what its sender puts in it; an allowed
one's are kept exactly, with every ClOrdID(11) and OrigClOrdID(41), because
the start-up rebuild of the risk books reads them back
(``gateway/app/risk_state.py``).
"""

from __future__ import annotations

from typing import Any

from gateway.core import pipeline
from gateway.core.fix import tags as T
from gateway.core.fix.codec import Message
from gateway.core.pipeline import Moment, Party, Verdict
from gateway.core.policy.risk import MULTI_CLORDID_TYPES

#: characters of one FIX value in the record of a refused message (and bytes of one echoed in its answer)
MAX_RECORDED = 256
#: characters of a decision's reason (it may quote the values it refuses) and of a Signature(89) kept
MAX_REASON = 1024


def text(v: bytes | None) -> str | None:
    """A FIX value for logs and audit records (latin-1, byte for byte)."""
    return v.decode("latin-1") if v is not None else None


def capped_text(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, the cut marked with the original length."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}...[{len(value)} chars]"


def capped(v: bytes | None) -> str | None:
    """A FIX value of a refused message for its record: at most ``MAX_RECORDED`` characters."""
    if v is None:
        return None
    if len(v) <= MAX_RECORDED:
        return v.decode("latin-1")
    return capped_text(v.decode("latin-1"), MAX_RECORDED)


def outbound_decision(party: Party, msg: Message, v: Verdict, at: Moment, session: str, peer: str | None,
                      decide_us: int) -> dict[str, Any]:
    """The record of a client message's verdict (kind ``decision``, or ``signature_refused``)."""
    g = msg.get
    ident = party.identity
    allowed = v.allowed
    value = text if allowed else capped
    reason = v.reason if len(v.reason) <= MAX_REASON else capped_text(v.reason, MAX_REASON)
    sig = g(T.Signature)
    fields: dict[str, Any] = {
        "direction": "outbound", "decision": v.outcome, "stage": v.stage, "rules": list(v.rule_ids),
        "controls": sorted(v.controls), "shadow_rules": [f"{r}:{d}" for r, d in v.shadow], "reason": reason,
        "posture": at.posture, "mfa": party.user is not None, "user": party.user, "jit": at.jit,
        "peer": peer, "account": value(g(T.Account)), "identity": ident.id,
        "session": session, "msg_type": value(msg.msg_type), "client_seq": msg.seq_num,
        "decide_us": decide_us, "roles": list(ident.roles), "cl_ord_id": value(g(T.ClOrdID)),
        "symbol": value(g(T.Symbol)), "side": value(g(T.Side)), "qty": value(g(T.OrderQty)),
        "price": value(g(T.Price)), "zone": party.zone, "signature_scheme": ident.signing,
        # kept so non-repudiation survives (a real one is under 100 characters)
        "signature": None if sig is None else sig.decode("latin-1") if len(sig) <= MAX_REASON
        else capped_text(sig.decode("latin-1"), MAX_REASON),
    }
    if v.key_id is not None:
        fields["signature_key"] = v.key_id
    if allowed:
        orig = g(T.OrigClOrdID)
        if orig is not None:
            fields["orig_cl_ord_id"] = orig.decode("latin-1")
        if msg.msg_type in MULTI_CLORDID_TYPES:
            fields["cl_ord_ids"] = [x.decode("latin-1") for t, x in msg.fields if t == T.ClOrdID]
            fields["orig_cl_ord_ids"] = [x.decode("latin-1") for t, x in msg.fields if t == T.OrigClOrdID]
    routing = pipeline.routing_fields(msg)
    if routing:
        fields["routing"] = routing if allowed else {k: capped_text(x, MAX_RECORDED) for k, x in routing.items()}
    if g(T.PossDupFlag) == b"Y":
        fields["poss_dup"] = True  # a resend of this MsgSeqNum
    if g(T.PossResend) == b"Y":
        fields["poss_resend"] = True
    return fields


def inbound_decision(party: Party, msg: Message, v: Verdict, session: str, online: bool) -> dict[str, Any]:
    """The record of an exchange message's verdict, for an online or an offline client."""
    g = msg.get
    fields: dict[str, Any] = {
        "direction": "inbound", "decision": v.outcome, "rules": list(v.rule_ids),
        "identity": party.identity.id, "session": session, "msg_type": text(msg.msg_type),
        "upstream_seq": msg.seq_num, "cl_ord_id": text(g(T.ClOrdID)), "exec_type": text(g(T.ExecType)),
        "ord_status": text(g(T.OrdStatus)), "symbol": text(g(T.Symbol)), "last_qty": text(g(T.LastQty)),
        "last_px": text(g(T.LastPx))}
    orig = g(T.OrigClOrdID)
    if orig is not None:  # a cancel's or replace's report closes the order it names (risk rebuild)
        fields["orig_cl_ord_id"] = orig.decode("latin-1")
    if not online:
        fields["client_online"] = False
    return fields
