"""Routing both ways: the trust pipeline's verdict, the audit record, then the crossing.

Client -> exchange, for every application message of a logged-on client:

    verdict = pipeline.outbound(...)       # gateway/core/pipeline.py: the ordered checks
    decision record -> audit               # fails: refused (BusinessMessageReject 380=4)
    refused: answered on the client leg    # the answer the verdict names
    allowed: once the record is durable -> exchange leg -> outcome record

Exchange -> client, for every application message of the venue:

    verdict = pipeline.inbound(...)        # the same for an online and an offline client
    decision record -> audit               # fails: held until the stream recovers
    allowed: delivered, or stored for the offline client's next Logon

An allowed order never vanishes: when it cannot be forwarded (the exchange
leg is down, its store cannot write) the outcome record says why and the
client is told — on its live session, or in its stored messages for the next
Logon when it has gone meanwhile.

Refused traffic is bounded (``gateway/core/budget.py``): each identity has a
budget of refusals; the refusal that uses it up logs the session out
(``refusal_budget_exhausted``), and while it stays used up the identity's
messages are not decided at all — no decision record, no answer in the
resend log — only counted into one ``refused_unprocessed`` record.  Values
taken from a refused message are recorded at most ``MAX_RECORDED``
characters long (``...[N chars]`` marks the cut) and its answer echoes at
most ``MAX_RECORDED`` bytes of any field, so what one refused message costs
on disk does not grow with what the sender puts in it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from gateway.app.audit_gate import AuditGate
from gateway.core import pipeline
from gateway.core.answers import Answer, business_reject, refusal, venue_invalid, venue_reject
from gateway.core.budget import RefusalBudget, Spend
from gateway.core.fix import tags as T
from gateway.core.fix.carry import split_for_carry
from gateway.core.fix.codec import Field, Message, parse, parse_uint
from gateway.core.fix.compose import layout
from gateway.core.fix.session import Session
from gateway.core.fix.session_config import State
from gateway.core.fix.store import SessionStore
from gateway.core.fix.utctime import format_utc_timestamp
from gateway.core.fix.versions import session_appl_ver_id
from gateway.core.identity import Identity
from gateway.core.numbers import positive
from gateway.core.pipeline import Moment, Party, Rules, Verdict
from gateway.core.policy.anomaly import AnomalyDetector
from gateway.core.policy.engine import Policy
from gateway.core.policy.risk import TERMINAL_STATUS, Limits, References, RiskBook
from gateway.core.records import MAX_RECORDED, capped, capped_text, inbound_decision, outbound_decision, text
from gateway.edges.audit import AuditError
from gateway.edges.config import Config
from gateway.edges.feeds import JitGrants, KillSwitch, PostureFeed
from gateway.edges.metrics import Metrics
from gateway.edges.policy_file import PolicySpec
from gateway.edges.store import FileStore
from gateway.shells.route import Route

if TYPE_CHECKING:
    from gateway.shells.client_leg import ClientProtocol

log = structlog.get_logger("fixgw.routing")

SEQ_MAP_SIZE = 100_000  # exchange-leg MsgSeqNum -> client MsgSeqNum, for RefSeqNum(45) translation
FORWARDED_SIZE = 100_000  # ClOrdIDs per route remembered for PossResend duplicates
NOT_DELIVERED = "message not delivered: the client's session store cannot write; the session ended"
NOT_STORED = "message not delivered: it could not be stored for the offline client"


def when_kept(store: SessionStore, ok: Callable[[], None], failed: Callable[[OSError], None]) -> None:
    """``ok()`` once what was just sent through ``store`` is in the OS (at once, unless the forwards and
    deliveries of one audit write are being batched: ``gateway/edges/store.py``), else ``failed``."""
    if isinstance(store, FileStore):
        store.after_flush(ok, failed)
    else:
        ok()


def _nothing() -> None:
    pass


def echo_safe(msg: Message) -> Message:
    """The refused message as its answer may echo it: no value longer than ``MAX_RECORDED`` bytes
    (a ClOrdID(11) that long is no venue's; the answer's Text(58) still says why it was refused)."""
    for _, v in msg.fields:
        if len(v) > MAX_RECORDED:
            return Message(msg.begin_string, msg.msg_type,
                           [(t, v[:MAX_RECORDED]) for t, v in msg.fields], b"")
    return msg


def compile_rules(policy: Policy | None, spec: PolicySpec | None, allow_all: bool,
                  last_px: Mapping[bytes, float]) -> Rules:
    """The pipeline's per-load inputs, so the per-message path only looks things up: merged risk
    limits per identity, limits per account, reference prices (configured ones win; otherwise the
    last LastPx(31) seen, a live view of ``last_px`` rather than a copy per order)."""
    if spec is None:
        return Rules(policy, allow_all, lambda _: Limits(duplicate_clordid=False), {}, References({}, last_px))
    risk = spec.risk
    configured = {s.encode(): p for s, p in risk.reference_prices.items()}
    accounts = {a.encode(): ls.compile() for a, ls in risk.accounts.items()}

    def limits(identity: str) -> Limits:
        own = risk.identities.get(identity)
        return risk.default.compile().merged(own.compile() if own else None)

    return Rules(policy, allow_all, limits, accounts, References(configured, last_px))


class Router:
    def __init__(self, cfg: Config, gate: AuditGate, metrics: Metrics, kill: KillSwitch, posture: PostureFeed,
                 jit: JitGrants, anomaly: AnomalyDetector, trip_kill_switch: Callable[[str, str], None],
                 identities: Mapping[str, Identity],
                 first_use: Callable[[Identity, Message, float, float], str | None] | None = None) -> None:
        self.cfg = cfg
        self.first_use = first_use  # the signed-frame replay memory (``Guard.first_use``), None: none kept
        self.gate = gate
        self.metrics = metrics
        self.kill = kill
        self.posture = posture
        self.jit = jit
        self.anomaly = anomaly
        self.trip_kill_switch = trip_kill_switch
        self.identities = identities
        self.rules = Rules(None, cfg.policy.allow_all, lambda _: Limits(duplicate_clordid=False), {}, {})
        self.risk_books: dict[str, RiskBook] = {}
        self.last_px: dict[bytes, float] = {}  # LastPx(31) per Symbol(55) seen from the exchanges
        #: per route, ClOrdIDs of the orders carried -> the client's MsgSeqNum (None: rebuilt from the audit stream)
        self.forwarded: dict[tuple[bytes, bytes, bytes], OrderedDict[bytes, int | None]] = {}
        self._exec_ids = 0
        g = cfg.gateway
        self.refusals = RefusalBudget(g.refusal_rate, g.refusal_burst)
        self.malformed = RefusalBudget(g.malformed_rate, g.malformed_burst, "malformed-message budget")
        assert cfg.audit is not None
        self.cancels_in_outage = cfg.audit.cancels_when_unavailable == "allow"
        for s in cfg.sessions:  # the answers' dictionaries, read now rather than on a session's first refusal
            begin = s.begin_string.encode()
            layout(begin, session_appl_ver_id(begin, s.default_appl_ver_id))

    # -- context ---------------------------------------------------------------------
    def party(self, route: Route, conn: ClientProtocol) -> Party:
        p = conn.party
        if p is None:
            assert conn.identity is not None
            appl = route.client_config.default_appl_ver_id
            p = conn.party = Party(conn.identity, conn.roles, conn.zone, conn.peer_ip, conn.user,
                                   frozenset({appl}) if appl else frozenset(), route.client_config.max_latency)
            route.party = p  # who decides for the route's messages while the client is away
        return p

    def moment(self, identity: str, now: float, read_only: bool = False, bad_signatures: int = 0) -> Moment:
        return Moment(now, self.posture.level(identity, now), self.jit.active(identity, now), read_only,
                      bad_signatures, self._kill_blocks, self.first_use)

    def _kill_blocks(self, identity: str, msg: Message) -> str | None:
        """The kill switch for this identity, or for any Account(1) the message names (every occurrence)."""
        kill = self.kill
        why = kill.blocks(identity, None)
        if why or not kill.accounts:
            return why
        for tag, value in msg.fields:
            if tag == T.Account:
                why = kill.blocks(identity, value.decode("latin-1"))
                if why:
                    return why
        return None

    def _is_cancel(self, msg: Message) -> bool:
        """Cancels (by the policy's kinds) may pass an audit outage when configured: risk reduction."""
        return self.cancels_in_outage and self.rules.kind(msg.msg_type) == pipeline.CANCEL

    def book(self, identity: str) -> RiskBook | None:
        if self.rules.policy is None:
            return None
        book = self.risk_books.get(identity)
        if book is None:
            book = self.risk_books[identity] = RiskBook(self.rules.limits(identity))
        return book

    def exec_id(self, prefix: bytes) -> bytes:
        self._exec_ids += 1
        return b"%s-%d" % (prefix, self._exec_ids)

    # -- client -> exchange ----------------------------------------------------------
    def client_to_exchange(self, route: Route, conn: ClientProtocol, msg: Message, now: float) -> None:
        assert conn.session is not None and conn.identity is not None
        ident = conn.identity
        spent = self.refusals.buckets.get(ident.id)  # before the decision: an identity over its budget is not heard
        if spent is not None and self.refusals.exhausted(spent, now):
            self._over_budget(self.refusals, route, conn, msg.seq_num, spent, now)
            return
        party = self.party(route, conn)
        # behaviour against the identity's baseline: alerts, and it may trip the kill switch first
        for kind, detail in self.anomaly.observe(ident.id, msg, now):
            self.metrics.anomalies.labels(kind).inc()
            self.gate.event("anomaly", identity=ident.id, session=route.name, finding=kind, detail=detail)
            log.warning("anomaly", identity=ident.id, finding=kind, detail=detail)
            if kind in self.anomaly.settings.kill_on:
                self.trip_kill_switch(ident.id, f"anomaly {kind}: {detail}")
        t0 = time.perf_counter_ns()
        at = self.moment(ident.id, now, conn.read_only, conn.bad_signatures)
        v = pipeline.outbound(party, msg, at, self.rules, self.book(ident.id), self._forwarded(route))
        decide_us = (time.perf_counter_ns() - t0) // 1000
        conn.app_in += 1
        conn.last_decision = (v.outcome, ",".join(v.rule_ids), text(msg.msg_type) or "", now)
        if v.stage == "signature":
            conn.bad_signatures += 1
        elif v.allowed:
            conn.bad_signatures = 0
        try:
            # a bad signature is recorded as such: the message was never decided on its content
            fields = outbound_decision(party, msg, v, at, route.name, conn.peer[0] if conn.peer else None,
                                       decide_us)
            if v.stage == "signature":
                fields["consecutive"] = conn.bad_signatures
                seq = self.gate.record_fields("signature_refused", fields)
            else:
                seq = self.gate.record_fields("decision", fields)
        except AuditError as exc:
            self._audit_down(route, conn, msg, v, now, exc)
            return
        self.metrics.decision("outbound", v.outcome, v.rule_ids)
        self.metrics.decision_seconds.observe(decide_us / 1e6)
        if not v.allowed:
            self._refused(route, conn, msg, v, now)
            if self.refusals.spend(ident.id, now):
                self._budget_used_up(self.refusals, route, conn, msg.seq_num, now)
            return
        if v.read_only:
            conn.read_only = True
        if v.full_capture and not conn.full_capture:
            conn.full_capture = True
            self.gate.event("full_capture_on", identity=ident.id, session=route.name)

        def forward() -> None:
            self.forward(route, conn, msg, seq)

        def on_fail() -> None:
            if self._is_cancel(msg):
                forward()  # risk reduction: the cancel goes on; its record is written on recovery
                return
            self.outcome(route, conn, msg, seq, None,
                         "refused: the audit stream cannot record it (write failed before it was done); "
                         "nothing crosses unrecorded",
                         T.BRR_APPLICATION_NOT_AVAILABLE)

        self.gate.after_durable(seq, forward, on_fail)

    def _audit_down(self, route: Route, conn: ClientProtocol, msg: Message, v: Verdict, now: float,
                    exc: AuditError) -> None:
        """The decision could not be recorded: refuse (or, configured, let a cancel through)."""
        if v.allowed and self._is_cancel(msg):
            assert conn.identity is not None
            self.gate.record_late("decision", {
                "direction": "outbound", "decision": v.outcome, "rules": list(v.rule_ids),
                "identity": conn.identity.id, "session": route.name, "msg_type": text(msg.msg_type),
                "client_seq": msg.seq_num, "cl_ord_id": text(msg.get(T.ClOrdID)),
                "orig_cl_ord_id": text(msg.get(T.OrigClOrdID))})
            self.forward(route, conn, msg, None)
            return
        self.gate.refused_in_outage()
        self._business_reject(route, conn, msg, T.BRR_APPLICATION_NOT_AVAILABLE,
                              f"refused: the audit stream cannot record it ({exc}); nothing crosses unrecorded", now)

    # -- the refusal budgets --------------------------------------------------------------
    # What the session layer refuses itself — a message it answers with Reject(3), a garbled frame it
    # drops — costs a budget too (``malformed``, larger: an engine may produce a run of them in good
    # faith): otherwise malformed traffic from an identity the policy allows nothing would be an
    # unmetered way to write the audit stream and the resend log full.  The client shell sets the
    # session's ``refusal_credit`` before each read (``refusal_credit``) and hands each such refusal
    # to ``session_refused``.
    def refusal_credit(self, conn: ClientProtocol, now: float) -> int | None:
        """The session-level refusals the identity's budget still allows (``Session.refusal_credit``), so a
        read full of malformed frames is answered only as far as the budget goes."""
        return self.malformed.credit(conn.identity.id, now) if conn.identity is not None else None

    def session_refused(self, route: Route, conn: ClientProtocol, seq: int | None, kind: str,
                        fields: dict[str, Any], now: float) -> None:
        """A refusal the session layer made (``kind`` ``session_reject`` or ``frame_dropped``): recorded and
        charged to the identity's malformed-message budget; the one that uses it up logs the session out.
        Once it is used up, refusals are counted, not recorded one by one (one ``refused_unprocessed``
        record per burst), and a session still up is cut."""
        ident = conn.identity
        if ident is None or conn.session is None:
            self.gate.event(kind, session=route.name, **fields)
            return
        spent = self.malformed.buckets.get(ident.id)
        if spent is not None and self.malformed.exhausted(spent, now):
            self._over_budget(self.malformed, route, conn, seq, spent, now)
            return
        self.gate.event(kind, session=route.name, **fields)
        self.metrics.refusals.labels("session").inc()
        if self.malformed.spend(ident.id, now):
            self._budget_used_up(self.malformed, route, conn, seq, now)

    def _budget_used_up(self, budget: RefusalBudget, route: Route, conn: ClientProtocol, seq: int | None,
                        now: float) -> None:
        """This refusal used up the identity's budget: Logout(5) saying so, connection closed."""
        assert conn.identity is not None
        b = budget.buckets[conn.identity.id]
        why = (f"{b.refused} refused messages: the {budget.name} ({budget.rate:g}/s, burst "
               f"{budget.burst:g}) is used up; messages after MsgSeqNum(34)={seq} are not "
               "processed until it refills")
        self._cut(budget, route, conn, why, now, b, seq, again=False)

    def _over_budget(self, budget: RefusalBudget, route: Route, conn: ClientProtocol, seq: int | None, b: Spend,
                     now: float) -> None:
        """A message of an identity whose budget is used up: not decided, not answered, counted; a session
        that is still up (it logged on again meanwhile) is cut."""
        assert conn.session is not None
        self.metrics.refusals.labels("refusal-budget").inc()
        if budget.drop(b, seq):  # one summary record per burst, when the loop turns
            try:
                asyncio.get_running_loop().call_soon(self._report_dropped, budget, route.name, conn, b)
            except RuntimeError:  # no loop (a tool driving the router directly): report at once
                self._report_dropped(budget, route.name, conn, b)
        if conn.session.state is State.ACTIVE:
            why = (f"the {budget.name} ({budget.rate:g}/s, burst {budget.burst:g}) is still used "
                   f"up after {b.refused} refused messages; MsgSeqNum(34)={seq} and later are not "
                   "processed until it refills")
            self._cut(budget, route, conn, why, now, b, seq, again=True)

    def _cut(self, budget: RefusalBudget, route: Route, conn: ClientProtocol, why: str, now: float, b: Spend,
             seq: int | None, again: bool) -> None:
        assert conn.identity is not None
        self.gate.event("refusal_budget_exhausted", identity=conn.identity.id, session=route.name,
                        budget=budget.name, client_seq=seq, refused=b.refused, rate=budget.rate, burst=budget.burst,
                        logged_on_again=again, reason=why)
        log.warning("refusal_budget_exhausted", identity=conn.identity.id, session=route.name, budget=budget.name,
                    refused=b.refused)
        conn.revoke(why, now)

    def _report_dropped(self, budget: RefusalBudget, session: str, conn: ClientProtocol, b: Spend) -> None:
        count, first, last = budget.report(b)
        if count:
            self.gate.event("refused_unprocessed", identity=conn.identity.id if conn.identity else None,
                            session=session, count=count, first_client_seq=first, last_client_seq=last,
                            reason=f"the identity's {budget.name} is used up: not decided, not answered")

    def _refused(self, route: Route, conn: ClientProtocol, msg: Message, v: Verdict, now: float) -> None:
        """Answer a refused message on the client leg; it never reaches the exchange."""
        assert conn.session is not None
        self.metrics.refusals.labels(v.rule_ids[0] if v.rule_ids else "?").inc()
        if v.answer == pipeline.IGNORE:
            return
        if v.answer == pipeline.SESSION_REJECT:
            conn.session.reject(msg, v.reject_reason, v.ref_tag, v.reason, now)
            if v.logout:
                conn.session.logout(now, f"{conn.bad_signatures} consecutive messages with a bad signature")
            conn.pump()
            return
        self._refuse(route, conn, msg, f"refused by {','.join(v.rule_ids)}: {v.reason}", T.BRR_NOT_AUTHORIZED, now)

    def _refuse(self, route: Route, conn: ClientProtocol | None, msg: Message, why: str, reason: int,
                now: float) -> None:
        """The refusal the client's state machine expects, in its session's version: ExecutionReport for
        orders, OrderCancelReject for cancels, BusinessMessageReject otherwise (Reject(3) before FIX.4.2).
        Text(58) says why."""
        c = route.client_config
        answer = refusal(echo_safe(msg), why[:250], reason, self.exec_id(b"GW-REJ"), now, c.begin_string,
                         c.default_appl_ver_id)
        self._send_answer(route, conn, answer, now)

    def _business_reject(self, route: Route, conn: ClientProtocol | None, msg: Message, reason: int, why: str,
                         now: float) -> None:
        """BusinessMessageReject(j) whatever the message (the gateway could not carry it); Reject(3)
        before FIX.4.2."""
        c = route.client_config
        self._send_answer(route, conn, business_reject(echo_safe(msg), reason, why, c.begin_string,
                                                       c.default_appl_ver_id), now)

    def _send_answer(self, route: Route, conn: ClientProtocol | None, answer: Answer, now: float) -> None:
        """On the live session; otherwise stored for the client's next Logon (it is never lost)."""
        msg_type, body = answer
        if conn is not None and conn.session is not None and conn.session.is_logged_on:
            conn.session.send_app(msg_type, body, now)
            conn.pump()
            return
        live = route.client
        if live is not None and live.session is not None and live.session.is_logged_on:
            live.session.send_app(msg_type, body, now)
            live.pump()
            return
        assert route.offline is not None
        try:
            route.offline.store_app(msg_type, body, now)
        except (OSError, ValueError) as exc:
            self.gate.event("alert", what="answer for an offline client could not be stored", session=route.name,
                            error=str(exc))

    def _forwarded(self, route: Route) -> Mapping[bytes, object]:
        f = self.forwarded.get(route.key)
        if f is None:
            f = self.forwarded[route.key] = OrderedDict()
        return f

    def forward(self, route: Route, conn: ClientProtocol, msg: Message, decision_seq: int | None) -> None:
        """Carry an allowed (and recorded) message to the exchange leg, then record what happened.

        The client may have logged out since it sent the message: the order was
        valid when received, so it still goes on, and its reports wait in the
        client's store for the next Logon."""
        now = time.time()
        up = route.upstream
        if not up.logged_on or up.protocol is None or up.protocol.session is None:
            if route.cfg.on_exchange_down == "logout" and conn.session is not None and conn.session.is_logged_on:
                conn.session.logout(now, f"exchange session {up.name} is not available")
                conn.pump()
            self.outcome(route, conn, msg, decision_seq, None, f"exchange session {up.name} is not logged on",
                         T.BRR_APPLICATION_NOT_AVAILABLE)
            return
        header, body = split_for_carry(msg, conn.header_tags)
        try:
            sent = up.protocol.session.send_app(msg.msg_type, body, now, header)
        except (OSError, ValueError) as exc:  # the exchange leg's store cannot write: nothing was sent
            up.protocol.pump()  # the session ended (its store cannot keep what it sends): close the leg
            self.outcome(route, conn, msg, decision_seq, None, f"exchange leg store cannot write: {exc}",
                         T.BRR_APPLICATION_NOT_AVAILABLE)
            return
        if sent is None:
            self.outcome(route, conn, msg, decision_seq, None, f"exchange session {up.name} is not logged on",
                         T.BRR_APPLICATION_NOT_AVAILABLE)
            return
        up_seq = sent.seq_num

        def kept() -> None:  # in the exchange leg's store, so sent (or resent after a reconnect)
            self._accepted(route, conn, msg)
            if up_seq is not None and msg.seq_num is not None:
                route.seq_map[up_seq] = msg.seq_num
                if len(route.seq_map) > SEQ_MAP_SIZE:
                    route.seq_map.popitem(last=False)
            self.outcome(route, conn, msg, decision_seq, up_seq, None, 0)

        def lost(exc: OSError) -> None:  # the batch's store write failed: its frames never left
            self.outcome(route, conn, msg, decision_seq, None, f"exchange leg store cannot write: {exc}",
                         T.BRR_APPLICATION_NOT_AVAILABLE)

        store = up.protocol.session.store
        up.protocol.pump()
        when_kept(store, kept, lost)

    def _accepted(self, route: Route, conn: ClientProtocol, msg: Message) -> None:
        """The message is at the exchange: remember its ClOrdIDs and open orders."""
        assert conn.identity is not None
        kind = self.rules.kind(msg.msg_type)
        book = self.risk_books.get(conn.identity.id)
        if book is not None:
            book.accepted(msg, kind)
        if kind != pipeline.ORDER:
            return
        fwd = self.forwarded.setdefault(route.key, OrderedDict())
        for tag, value in msg.fields:
            if tag == T.ClOrdID:
                fwd[value] = msg.seq_num
        while len(fwd) > FORWARDED_SIZE:
            fwd.popitem(last=False)
        cl = msg.get(T.ClOrdID)
        if cl and msg.msg_type in (T.MT_NEW_ORDER_SINGLE, T.MT_ORDER_CANCEL_REPLACE_REQUEST):
            route.open_orders[cl] = (msg.get(T.Side) or b"1", msg.get(T.Symbol) or b"", msg.get(T.OrderQty) or b"0")
            if msg.msg_type == T.MT_ORDER_CANCEL_REPLACE_REQUEST and msg.get(T.OrigClOrdID):
                route.open_orders.pop(msg.get(T.OrigClOrdID) or b"", None)

    def outcome(self, route: Route, conn: ClientProtocol, msg: Message, decision_seq: int | None,
                upstream_seq: int | None, why_not: str | None, reason: int) -> None:
        """The outcome record of an allowed message; when it did not go on, the client is told."""
        fields: dict[str, Any] = {"session": route.name, "decision_seq": decision_seq, "client_seq": msg.seq_num,
                                  "msg_type": text(msg.msg_type), "cl_ord_id": text(msg.get(T.ClOrdID))}
        if why_not is None:
            fields["result"] = "forwarded"
            fields["upstream_seq"] = upstream_seq
            self.gate.outcome(fields)
            return
        fields["result"] = "not_forwarded"
        fields["reason"] = why_not
        self.gate.outcome(fields)
        # BusinessMessageReject(j) 380=4 ApplicationNotAvailable: the gateway, not the policy, could not
        # carry it (the README's contract for an exchange leg that is down)
        self._business_reject(route, conn, msg, reason, why_not, time.time())

    # -- exchange -> client ------------------------------------------------------------
    def exchange_to_client(self, route: Route, msg: Message, header_tags: frozenset[int], now: float) -> None:
        """Carry an application message from the exchange to the client (decided and recorded first)."""
        header, body = split_for_carry(msg, header_tags)
        if msg.msg_type == T.MT_BUSINESS_MESSAGE_REJECT:
            seq_map = route.seq_map
            body = [(t, b"%d" % seq_map[n]) if t == T.RefSeqNum and (n := parse_uint(v) or 0) in seq_map else (t, v)
                    for t, v in body]
        self._observe(route, msg)
        conn = route.client
        party = self.party(route, conn) if conn is not None and conn.identity is not None else route.party
        if party is None:  # nobody has logged on to this route since start: decide as its identity would
            party = route.party = self._route_party(route)
        if party is None:
            self._deliver_unowned(route, msg, header, body, now)
            return
        v = pipeline.inbound(party, msg, self.moment(party.identity.id, now), self.rules)
        online = conn is not None and conn.session is not None and conn.session.is_logged_on
        try:
            fields = inbound_decision(party, msg, v, route.name, online)
            seq = self.gate.record_fields("decision", fields)
        except AuditError as exc:
            # never delivered or stored unrecorded, never dropped: held until the stream writes again
            log.error("inbound_held", session=route.name, error=str(exc))
            self.gate.hold(lambda: self.exchange_to_client(route, msg, header_tags, time.time()))
            return
        self.metrics.decision("inbound", v.outcome, v.rule_ids)
        if not v.allowed:
            return
        self.gate.after_durable(seq, lambda: self._deliver(route, msg, header, body))

    def _route_party(self, route: Route) -> Party | None:
        """Nobody logged on to the route since start: the identity the registry binds to its CompID
        (zone and MFA unknown, so rules that need them do not allow)."""
        comp = route.cfg.client_comp_id
        for ident in self.identities.values():
            if comp in ident.comp_ids:
                appl = route.client_config.default_appl_ver_id
                return Party(ident, frozenset(ident.roles), None, None, None,
                             frozenset({appl}) if appl else frozenset())
        return None

    def _observe(self, route: Route, msg: Message) -> None:
        """What the exchange said about orders: open orders, risk books, reference prices."""
        if msg.msg_type != T.MT_EXECUTION_REPORT:
            return
        if msg.get(T.OrdStatus) in TERMINAL_STATUS:
            for tag in (T.ClOrdID, T.OrigClOrdID):
                route.open_orders.pop(msg.get(tag) or b"", None)
        last_px, sym = msg.get(T.LastPx), msg.get(T.Symbol)
        if last_px and sym:
            px = positive(last_px)
            if px is not None:
                self.last_px[sym] = px
        book = self._route_book(route)
        if book is not None:
            book.on_execution(msg)

    def _route_book(self, route: Route) -> RiskBook | None:
        """The risk book of whoever owns the route (its client, or who decides while it is away)."""
        ident = self._route_owner(route)
        return self.risk_books.get(ident) if ident else None

    @staticmethod
    def _route_owner(route: Route) -> str | None:
        conn = route.client
        return conn.identity.id if conn is not None and conn.identity is not None else (
            route.party.identity.id if route.party is not None else None)

    def _deliver(self, route: Route, msg: Message, header: list[Field], body: list[Field]) -> None:
        now = time.time()
        conn = route.client
        if conn is not None and conn.session is not None and conn.session.is_logged_on:
            try:
                conn.session.send_app(msg.msg_type, body, now, header)
            except (OSError, ValueError) as exc:
                # the client leg's store cannot keep it for a resend, so it is not sent and the session
                # has ended (``Session.store_failed``): close the leg, and say what was not delivered
                conn.pump()
                self._undelivered(route, msg, NOT_DELIVERED, exc)
                return
            conn.app_out += 1
            when_kept(conn.session.store, _nothing, lambda exc: self._undelivered(route, msg, NOT_DELIVERED, exc))
            conn.pump()
            return
        self._store(route, msg, header, body, now)

    def _undelivered(self, route: Route, msg: Message, what: str, exc: Exception) -> None:
        """An allowed exchange message reached neither the client nor its store: compliance sees which."""
        log.error("undelivered", session=route.name, upstream_seq=msg.seq_num, error=str(exc))
        self.gate.event("alert", what=what, session=route.name, upstream_seq=msg.seq_num,
                        msg_type=text(msg.msg_type), cl_ord_id=text(msg.get(T.ClOrdID)),
                        ord_status=text(msg.get(T.OrdStatus)), error=str(exc))

    def _store(self, route: Route, msg: Message, header: list[Field], body: list[Field], now: float) -> None:
        """The client is away: keep it for the next Logon (gap recovery delivers it)."""
        assert route.offline is not None
        try:
            stored = route.offline.store_app(msg.msg_type, body, now, header)
        except (OSError, ValueError) as exc:
            self._undelivered(route, msg, NOT_STORED, exc)
            return

        def kept() -> None:
            self.gate.event("stored_for_offline_client", session=route.name, client_seq=stored.seq_num,
                            msg_type=msg.msg_type.decode("latin-1"), cl_ord_id=text(msg.get(T.ClOrdID)),
                            orig_cl_ord_id=text(msg.get(T.OrigClOrdID)), ord_status=text(msg.get(T.OrdStatus)))

        when_kept(route.offline.store, kept, lambda exc: self._undelivered(route, msg, NOT_STORED, exc))

    def _deliver_unowned(self, route: Route, msg: Message, header: list[Field], body: list[Field],
                         now: float) -> None:
        """A route no identity may log on to: nobody could ever receive it, so it is refused, recorded."""
        try:
            self.gate.record("decision", direction="inbound", decision="deny", rules=["no-identity"],
                             session=route.name, msg_type=text(msg.msg_type), upstream_seq=msg.seq_num,
                             reason="no identity may log on to this session")
        except AuditError:
            self.gate.hold(lambda: self._deliver_unowned(route, msg, header, body, time.time()))

    # -- when the venue refuses ------------------------------------------------------------
    def venue_rejected(self, route: Route, reject: Message, now: float) -> None:
        """The venue's session-level Reject(3) of a message we carried: the client is told (never silence).

        RefSeqNum(45) names our exchange-leg message: ``route.seq_map`` gives the
        client's MsgSeqNum and the exchange leg's store the message itself — both
        must agree it was the client's application message (the store keeps only
        those; a number the venue reset meanwhile finds nothing there).  A Reject(3)
        of anything else (our Heartbeat, a cancel on logout) is only recorded.  The
        answer is the session's ``venue_reject_answer`` (``answers.venue_reject``),
        sent once its record is durable."""
        ref = parse_uint(reject.get(T.RefSeqNum) or b"")
        said = (reject.get(T.Text) or b"").decode("latin-1")
        ref_type = reject.get(T.RefMsgType)
        fields: dict[str, Any] = {
            "session": route.name, "upstream_ref_seq": ref, "ref_msg_type": capped(ref_type),
            "session_reject_reason": capped(reject.get(T.SessionRejectReason)), "text": capped_text(said, MAX_RECORDED)}
        client_seq = route.seq_map.get(ref) if ref is not None else None
        carried = self._carried(route, ref, client_seq) if ref is not None and client_seq is not None else None
        answer = None
        if carried is not None and ref_type in (None, carried.msg_type):
            c = route.client_config
            answer = venue_reject(echo_safe(carried), said[:250], route.cfg.upstream.venue_reject_answer,
                                  self.exec_id(b"GW-VEN"), now, c.begin_string, c.default_appl_ver_id)
            fields.update(client_seq=client_seq, msg_type=text(carried.msg_type),
                          cl_ord_id=capped(carried.get(T.ClOrdID)), answer=text(answer.msg_type))
            cl = carried.get(T.ClOrdID)
            if carried.msg_type == T.MT_NEW_ORDER_SINGLE and cl:  # it never reached the venue's book
                route.open_orders.pop(cl, None)
                owner = self._route_owner(route)
                fields["identity"] = owner  # whose book it closes: the start-up rebuild closes it too
                book = self.risk_books.get(owner) if owner else None
                if book is not None:
                    book.close((cl,))
        self._tell(route, "venue_reject", fields, answer, lambda: self.venue_rejected(route, reject, time.time()))

    def venue_invalid(self, route: Route, msg: Message, reason: int, detail: str, now: float) -> None:
        """The exchange leg rejected the venue's application message ``msg`` as invalid (it sent the venue
        a Reject(3)): not delivered, recorded, and the client told in its session's ``venue_reject_answer``
        (``gateway.core.answers.venue_invalid``) — an order must not just go quiet."""
        cl, orig = msg.get(T.ClOrdID), msg.get(T.OrigClOrdID)
        fwd: Mapping[bytes, int | None] = self.forwarded.get(route.key) or {}
        client_seq = next((fwd[x] for x in (cl, orig) if x is not None and fwd.get(x) is not None), None)
        order = route.open_orders.get(cl or b"") or route.open_orders.get(orig or b"")
        c = route.client_config
        why = detail if len(detail) <= 200 else capped_text(detail, 200)
        answer = venue_invalid(echo_safe(msg), why, route.cfg.upstream.venue_reject_answer, order, client_seq,
                               self.exec_id(b"GW-VEN"), now, c.begin_string, c.default_appl_ver_id)
        fields: dict[str, Any] = {
            "session": route.name, "upstream_seq": msg.seq_num, "msg_type": capped(msg.msg_type),
            "cl_ord_id": capped(cl), "session_reject_reason": reason, "reason": why, "client_seq": client_seq,
            "answer": text(answer.msg_type)}
        self._tell(route, "venue_invalid", fields, answer, lambda: self.venue_invalid(route, msg, reason, detail,
                                                                                      time.time()))

    def _tell(self, route: Route, kind: str, fields: dict[str, Any], answer: Answer | None,
              again: Callable[[], None]) -> None:
        """Record, then (once the record is durable) answer the client; an audit outage holds both."""
        try:
            seq = self.gate.record_fields(kind, fields)
        except AuditError as exc:
            log.error("venue_answer_held", session=route.name, error=str(exc))
            self.gate.hold(again)
            return
        log.info(kind, session=route.name, answer=fields.get("answer"))
        if answer is not None:
            self.gate.after_durable(seq, lambda: self._send_answer(route, None, answer, time.time()))

    def _carried(self, route: Route, up_seq: int, client_seq: int) -> Message | None:
        """The client's application message as we carried it, from the exchange leg's store, numbered as
        the client numbered it; None when the store holds no application message under ``up_seq``."""
        try:
            stored = route.upstream.store.get_sent(up_seq, up_seq)
            sent = parse(stored[0][1]) if stored else None
        except (OSError, ValueError):
            return None
        if sent is None or sent.is_admin():
            return None
        _, body = split_for_carry(sent, route.upstream.header_tags)
        return Message(route.client_config.begin_string, sent.msg_type, [(T.MsgSeqNum, b"%d" % client_seq), *body])

    # -- operator-driven ---------------------------------------------------------------
    def cancel_open_orders(self, route: Route, reason: str, now: float) -> None:
        """Send OrderCancelRequest(F) upstream for every open order of the route (before a forced logout)."""
        up = route.upstream
        if not route.open_orders or not up.logged_on or up.protocol is None or up.protocol.session is None:
            return
        session: Session = up.protocol.session
        for orig, (side, symbol, qty) in list(route.open_orders.items()):
            cl = self.exec_id(b"GW-CXL")
            body: list[Field] = [(T.ClOrdID, cl), (T.OrderQty, qty), (T.OrigClOrdID, orig), (T.Side, side),
                                 (T.Symbol, symbol), (T.TransactTime, format_utc_timestamp(now))]
            try:
                sent = session.send_app(T.MT_ORDER_CANCEL_REQUEST, body, now)
            except (OSError, ValueError) as exc:
                self.gate.event("alert", what="cancel on logout not sent", session=route.name, error=str(exc))
                break
            self.gate.event("cancel_on_logout", session=route.name, orig_cl_ord_id=text(orig), cl_ord_id=text(cl),
                            reason=reason, upstream_seq=sent.seq_num if sent else None)
        up.protocol.pump()
