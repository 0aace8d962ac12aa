"""FIX session layer as a sans-IO state machine.

Nothing here touches a socket, a clock or a logger.  The shell feeds bytes
with ``receive_data(data, now)``, drains ``next_event()``, writes
``frames_to_send()`` and re-arms one timer at ``get_timer()``, calling
``handle_timer(now)`` when it fires.  The same class plays the acceptor
(client legs) and the initiator (exchange legs).

Behaviour follows the FIX session-level test cases; comments cite the case
(1a, 2b, 14e ...) a rule comes from.  Peer input never raises out of this
module: a bad frame becomes a dropped frame, a Reject(3) with its
SessionRejectReason(373), or a Logout, and always an event.

Bounds: integers from the peer are read by ``codec.parse_uint`` only, and a
sequence number above ``T.MAX_SEQ_NUM`` never reaches the store: MsgSeqNum(34)
gets a Logout, NewSeqNo(36) / BeginSeqNo(7) / EndSeqNo(16) a Reject(3) with
373=5.  When either side's MsgSeqNum(34) reaches the bound (ours keeps the last
number for it) a Logout says so; only ResetSeqNumFlag(141)=Y goes on.  A
message without a usable MsgSeqNum(34) gets a Logout and the connection
closes (the FIX session rules; nothing tells what it missed).

Floods (issue 15): ResendRequests are served a chunk at a time within a
bound per session and a rate (``resend.py``; the shell calls
``continue_resend`` when its transport drained); what arrives above a
sequence gap is held within a byte budget, invalid frames never, and a gap
that stops filling ends the session (``gap.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Concatenate, ParamSpec

from gateway.core.fix import tags as T
from gateway.core.fix.codec import Field, FrameGarbled, Framer, Message, encode, excerpt, parse_uint
from gateway.core.fix.dictionary import ValidationError
from gateway.core.fix.events import (
    AppMessageReceived,
    Disconnected,
    DuplicateIgnored,
    Event,
    FrameDropped,
    GapDetected,
    LoggedOn,
    LoggedOut,
    LogonRefused,
    LogoutSent,
    MessageRejected,
    RejectReceived,
    ResendServed,
    SequenceReset,
)
from gateway.core.fix.gap import GapQueue, Rejection
from gateway.core.fix.replies import logon_body, reject_fields
from gateway.core.fix.resend import ResendQueue, outgoing
from gateway.core.fix.session_config import Role, SessionConfig, State
from gateway.core.fix.signature import encode_signed
from gateway.core.fix.store import SessionStore
from gateway.core.fix.timers import Timers
from gateway.core.fix.utctime import format_utc_timestamp, parse_utc_timestamp

__all__ = [
    "Role", "State", "SessionConfig", "Session", "LoggedOn", "LogonRefused", "AppMessageReceived",
    "MessageRejected", "RejectReceived", "FrameDropped", "DuplicateIgnored", "GapDetected", "ResendServed",
    "SequenceReset", "LogoutSent", "LoggedOut", "Disconnected", "Event",
]


def _used_up_text(comp_id: bytes) -> str:
    """Why the session ends when one side has used every sequence number (its CompID says which side)."""
    return (f"MsgSeqNum(34) of messages from {comp_id.decode('latin-1')} reached {T.MAX_SEQ_NUM}, the largest "
            "sequence number this session holds; log on with ResetSeqNumFlag(141)=Y to go on")


class _Stop(Exception):
    """Internal: stop processing the current message (session is closing)."""


_P = ParamSpec("_P")


def _stops(method: Callable[Concatenate[Session, _P], None]) -> Callable[Concatenate[Session, _P], None]:
    """A public entry point that a closing session (``_Stop``) simply ends."""
    @functools.wraps(method)
    def run(self: Session, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            method(self, *args, **kwargs)
        except _Stop:
            pass
        except OSError as exc:  # the store (the core's only I/O) cannot write: the session ends
            self.store_failed(exc)
    return run


class Session:
    """One FIX session over one connection."""

    def __init__(self, config: SessionConfig, store: SessionStore, framer: Framer | None = None) -> None:
        self.config = config
        self.store = store
        self.framer = framer or Framer(config.max_frame)
        self.state = State.AWAITING_LOGON if config.role is Role.ACCEPTOR else State.CLOSED
        self.heartbeat_interval = config.heartbeat_interval
        self._events: list[Event] = []
        self._out: list[bytes] = []
        self._t = Timers()
        self._gap = GapQueue(config.max_queue_bytes, config.max_queue, config.gap_timeout)
        self._resends = ResendQueue(config.resend_chunk_size, config.resend_request_rate, config.resend_request_burst)
        self._sent_reset = False
        self._header_tags = (
            frozenset(config.validator.transport.header.tags)
            if config.validator is not None
            else T.STANDARD_HEADER_TAGS
        )
        self.messages_in = 0
        self.messages_out = 0
        #: how many more frames this session may refuse on its own (Reject(3), a garbled frame dropped)
        #: before it stops reading the input it has: the application's refusal budget, set before each
        #: read (None: no limit).  At least one frame of a read is always handled, so an application
        #: that is owed a decision hears of the next one.
        self.refusal_credit: int | None = None

    # -- public API -------------------------------------------------------------
    @property
    def is_logged_on(self) -> bool:
        return self.state in (State.ACTIVE, State.LOGOUT_SENT)

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def resend_pending(self) -> bool:
        """A ResendRequest(2) is not fully served: call ``continue_resend`` once the transport drained."""
        return self._resends.pending and self.state is State.ACTIVE

    @_stops
    def continue_resend(self, now: float) -> None:
        """Serve the next chunk of the oldest ResendRequest(2) (see ``gateway.core.fix.resend``)."""
        if self.state is State.ACTIVE:
            self._serve_chunk(now)
        else:
            self._resends.clear()

    def next_event(self) -> Event | None:
        return self._events.pop(0) if self._events else None

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def frames_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    @_stops
    def connection_made(self, now: float) -> None:
        """Start the session on a fresh connection (initiator sends its Logon)."""
        self._t.last_received = now
        self._t.last_sent = now
        if self.config.role is Role.INITIATOR:
            reset = self.config.reset_on_logon
            if reset:
                self.store.reset()
                self._sent_reset = True
            body = logon_body(b"%d" % self.heartbeat_interval, reset, self.config.default_appl_ver_id,
                              self.config.begin_string)
            body.extend(self.config.logon_fields)
            self.state = State.LOGON_SENT
            self._t.logon_deadline = now + self.config.logon_timeout
            self._send_admin(T.MT_LOGON, body, now)
        else:
            self.state = State.AWAITING_LOGON
            self._t.logon_deadline = now + self.config.logon_timeout

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the peer (any split)."""
        if self.state is State.CLOSED:
            return
        if data:
            self.framer.feed(data)
        while not self.closed:  # a frame may close the session
            ev = self.framer.next_event()
            if ev is None:
                break
            if isinstance(ev, FrameGarbled):
                self._on_garbled(ev, now)
            else:
                self.receive_message(ev.message, now)
            if self.refusal_credit is not None and self.refusal_credit <= 0:
                break  # the rest stays in the framer: the application ends the session, or reads on with credit

    def receive_message(self, msg: Message, now: float) -> None:
        """One well-framed message from the peer."""
        if self.state is State.CLOSED:
            return
        try:
            self._on_message(msg, now, queued=False)
            self._drain_queue(now)
            self._gap.after_input(self.store.next_target_seq(), now)
            if self.state is State.ACTIVE and self.store.next_target_seq() > T.MAX_SEQ_NUM:
                self._end(now, _used_up_text(self.config.target_comp_id))  # its last number was handled
        except _Stop:
            pass
        except OSError as exc:
            self.store_failed(exc)

    def send_app(
        self,
        msg_type: bytes,
        body: Sequence[Field],
        now: float,
        header: Iterable[Field] = (),
    ) -> Message | None:
        """Send an application message; returns it as sent (``None`` when not logged on)."""
        if self.state is not State.ACTIVE:
            return None
        try:
            return self._send(msg_type, body, now, header, store=True)
        except _Stop:  # our last MsgSeqNum(34) went to the Logout that ends the session
            return None
        except OSError as exc:  # nothing was sent; the caller says so to whoever sent it
            self.store_failed(exc)
            raise

    def store_app(
        self,
        msg_type: bytes,
        body: Sequence[Field],
        now: float,
        header: Iterable[Field] = (),
    ) -> Message:
        """Persist an application message for a peer that is not connected.

        It takes the next sequence number and waits in the store; the peer
        gets it through the normal gap recovery (ResendRequest) at its next
        Logon.  Nothing is written to a transport.  ``ValueError`` when every number is used.
        """
        if self.store.next_sender_seq() > T.MAX_SEQ_NUM:
            raise ValueError(_used_up_text(self.config.sender_comp_id))
        msg = self._send(msg_type, body, now, header, store=True, last=True)
        self._out.pop()
        return msg

    @_stops
    def reject(self, msg: Message, reason: int, tag: int | None, detail: str, now: float) -> None:
        """Answer an already accepted message with Reject(3) (e.g. SignatureProblem)."""
        if self.state is State.ACTIVE:
            self._now = now
            self._reject(msg, reason, tag, detail, decided=True)

    @_stops
    def logout(self, now: float, text: str = "") -> None:
        """Start a Logout we initiate; the session closes on the reply or timeout."""
        if self.state is State.ACTIVE:
            self._logout(now, text)
        elif self.state in (State.AWAITING_LOGON, State.LOGON_SENT):
            self._disconnect(text or "closed before logon")

    def store_failed(self, exc: OSError) -> None:
        """The store cannot write: no frame may go out that a resend could not repeat, so the
        session ends at once, without a Logout (which would need a number of its own)."""
        text = f"session store cannot write: {exc.strerror or exc}"
        if self.is_logged_on:
            self._events.append(LoggedOut(text, by_peer=False))
        self._disconnect(text)

    def close(self, reason: str) -> None:
        """The transport is gone (peer closed, error): no more output."""
        if self.state is not State.CLOSED:
            was_on = self.is_logged_on
            self.state = State.CLOSED
            if was_on:
                self._events.append(LoggedOut(reason, by_peer=True))

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must run next (None: no timer)."""
        hb = self.heartbeat_interval if self.is_logged_on else 0
        return self._t.next_deadline(self.state, hb, self._gap.deadline)

    @_stops
    def handle_timer(self, now: float) -> None:
        if self.state is State.CLOSED:
            return
        t = self._t
        if self.state in (State.AWAITING_LOGON, State.LOGON_SENT):
            if t.logon_deadline is not None and now >= t.logon_deadline:
                self._events.append(LogonRefused("no Logon within the logon timeout"))
                self._disconnect("logon timeout")
            return
        if self.state is State.LOGOUT_SENT and t.logout_deadline is not None and now >= t.logout_deadline:
            self._events.append(LoggedOut("no Logout reply within the logout timeout", by_peer=False))
            self._disconnect("logout timeout")
            return
        if self.state is State.ACTIVE and self._gap.deadline is not None and now >= self._gap.deadline:
            self._end(now, self._gap.expired_text(self.store.next_target_seq()))  # item 7: a gap that never fills
        hb = self.heartbeat_interval
        if hb <= 0 or not self.is_logged_on:
            return
        if now - t.last_received >= 2.4 * hb:
            self._events.append(LoggedOut(f"nothing received for {now - t.last_received:.1f} s", False))
            self._disconnect("heartbeat timeout")
            return
        if now - t.last_received >= 1.5 * (t.test_requests + 1) * hb:
            self._send_admin(T.MT_TEST_REQUEST, [(T.TestReqID, b"TEST")], now)
            t.test_requests += 1
        elif now - t.last_sent >= hb:
            self._send_admin(T.MT_HEARTBEAT, [], now)

    # -- sending ----------------------------------------------------------------
    def _send(
        self,
        msg_type: bytes,
        body: Sequence[Field],
        now: float,
        header: Iterable[Field] = (),
        store: bool = False,
        seq: int | None = None,
        last: bool = False,
    ) -> Message:
        cfg = self.config
        own_seq = seq is None
        if seq is None:
            seq = self.store.next_sender_seq()  # the last is kept for the Logout that says so (``last``: offline)
            if seq >= T.MAX_SEQ_NUM and not (seq == T.MAX_SEQ_NUM and (last or msg_type == T.MT_LOGOUT)):
                self._we_used_up(seq, now)
        head: list[Field] = [
            (T.MsgSeqNum, b"%d" % seq),
            (T.SenderCompID, cfg.sender_comp_id),
            (T.SendingTime, format_utc_timestamp(now, cfg.timestamp_precision)),
            (T.TargetCompID, cfg.target_comp_id),
        ]
        head.extend(header)
        head.sort(key=_tag_key)
        fields: list[Field] = [(T.MsgType, msg_type)]
        fields.extend(head)
        fields.extend(body)
        raw = encode_signed(cfg.begin_string, fields, cfg.signer) if cfg.signer else encode(cfg.begin_string, fields)
        if own_seq:
            if store:
                self.store.save_sent(seq, raw)
            self.store.set_next_sender_seq(seq + 1)
        self._out.append(raw)
        self._t.last_sent = now
        self.messages_out += 1
        return Message(cfg.begin_string, msg_type, tuple(fields), raw)

    def _send_admin(self, msg_type: bytes, body: Sequence[Field], now: float, header: Iterable[Field] = ()) -> None:
        self._send(msg_type, body, now, header)

    def _logout(self, now: float, text: str = "") -> None:
        body: list[Field] = [(T.Text, text.encode("latin-1", "replace"))] if text else []
        self._send_admin(T.MT_LOGOUT, body, now)
        self._events.append(LogoutSent(text))
        self._resends.clear()  # the session ends: nothing more to resend
        self.state = State.LOGOUT_SENT
        self._t.logout_deadline = now + self.config.logout_timeout

    def _we_used_up(self, seq: int, now: float) -> None:
        """Our numbers are used up: the last one, if still ours, goes to a Logout that says so."""
        text, logged_on = _used_up_text(self.config.sender_comp_id), self.is_logged_on
        if seq == T.MAX_SEQ_NUM and self.state not in (State.LOGON_SENT, State.CLOSED):
            self._send(T.MT_LOGOUT, [(T.Text, text.encode())], now)
            self._events.append(LogoutSent(text))
        self._events.append(LoggedOut(text, by_peer=False) if logged_on else LogonRefused(text))
        self._disconnect(text)
        raise _Stop

    def _end(self, now: float, text: str) -> None:
        """Logout with ``text`` and close at once: the session cannot go on."""
        self._logout(now, text)
        self._events.append(LoggedOut(text, by_peer=False))
        self._disconnect(text)
        raise _Stop

    def _disconnect(self, reason: str) -> None:
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self._gap.clear()
            self._resends.clear()
            self._events.append(Disconnected(reason))

    def _refuse_logon(self, reason: str) -> None:
        """Invalid Logon: close silently (acceptance scripts 1c, 1d, 1e)."""
        self._events.append(LogonRefused(reason))
        self._disconnect(reason)
        raise _Stop

    def _reject(self, msg: Message, reason: int, tag: int | None, detail: str, decided: bool = False) -> None:
        """Reject(3) with the spec's wording; detail goes to the event only."""
        body, header = reject_fields(msg, reason, tag, self.config.begin_string)
        seq = msg.seq_num
        if (
            msg.msg_type not in (T.MT_LOGON, T.MT_SEQUENCE_RESET)
            and seq is not None
            and seq == self.store.next_target_seq()
        ):
            self._incr_target()
        self._send_admin(T.MT_REJECT, body, self._now, header)
        if not decided and self.refusal_credit is not None:
            self.refusal_credit -= 1
        self._events.append(MessageRejected(seq, msg.msg_type, reason, tag, detail, msg, decided))

    # -- receiving ---------------------------------------------------------------
    _now: float = 0.0

    def _on_garbled(self, ev: FrameGarbled, now: float) -> None:
        if self.refusal_credit is not None:
            self.refusal_credit -= 1
        self._events.append(FrameDropped(ev.data, ev.reason))
        if self.state is State.AWAITING_LOGON:
            # A first message we cannot read is not a Logon: close (1d length invalid).
            self._events.append(LogonRefused(f"garbled first message: {ev.reason}"))
            self._disconnect("garbled first message")

    def _incr_target(self) -> None:
        nxt = self.store.next_target_seq()
        if nxt <= T.MAX_SEQ_NUM:  # past it every number is used and the session is ending
            self.store.set_next_target_seq(nxt + 1)

    def _drain_queue(self, now: float) -> None:
        """Process what was held above a gap, in order, as far as the gap has filled."""
        gap = self._gap
        while len(gap) and self.is_logged_on:
            found, entry = gap.take(self.store.next_target_seq())
            if not found:
                return
            if entry is None:
                self._incr_target()
            elif isinstance(entry, Rejection):
                self._now = now
                self._reject(entry.message, entry.reason, entry.tag, entry.detail)
            else:
                self._on_message(entry, now, queued=True)

    def _on_message(self, msg: Message, now: float, queued: bool) -> None:
        self._now = now
        cfg = self.config
        mt = msg.msg_type
        if not queued:
            self.messages_in += 1
        if self.state is State.AWAITING_LOGON and mt != T.MT_LOGON:
            self._refuse_logon(f"first message is MsgType(35)={excerpt(mt)}, not Logon (1e)")
        seq_b = msg.get(T.MsgSeqNum)  # 10 digits or more: the only ones that may be above the bound
        if seq_b is not None and len(seq_b) >= 10 and (parse_uint(seq_b) or 0) > T.MAX_SEQ_NUM:
            if not self.is_logged_on:
                self._refuse_logon(_above_bound(msg, T.MsgSeqNum))
            self._end(now, _above_bound(msg, T.MsgSeqNum))  # no store holds it: the session cannot go on
        if msg.seq_num is None:  # without a number the session cannot tell what it missed: Logout (FIX rule)
            text = (f"MsgSeqNum(34) '{excerpt(seq_b)}' is not a sequence number" if seq_b
                    else "MsgSeqNum(34) missing")
            if not self.is_logged_on:
                self._refuse_logon(text)
            self._end(now, text)
        if msg.begin_string != cfg.begin_string:
            if not self.is_logged_on:
                self._refuse_logon(
                    f"BeginString(8) expected {cfg.begin_string.decode()} but received "
                    f"{msg.begin_string.decode('latin-1')}"
                )
            if mt == T.MT_LOGOUT:
                self._on_logout(msg, now)
                return
            # 2i: Logout with the spec's text, then wait for the reply
            self._incr_target()
            self._logout(now, "Incorrect BeginString")
            return
        if cfg.validator is not None:
            err = cfg.validator.validate(msg)
            if err is not None:
                self._on_invalid(msg, err, now)
                return
        if mt == T.MT_LOGON:
            self._on_logon(msg, now)
        elif mt == T.MT_HEARTBEAT:
            if self._verify(msg, now):
                self._incr_target()
        elif mt == T.MT_TEST_REQUEST:
            if self._verify(msg, now):
                test_req_id = msg.get(T.TestReqID)
                self._send_admin(
                    T.MT_HEARTBEAT, [(T.TestReqID, test_req_id)] if test_req_id else [], now
                )
                self._incr_target()
        elif mt == T.MT_SEQUENCE_RESET:
            self._on_sequence_reset(msg, now)
        elif mt == T.MT_LOGOUT:
            self._on_logout(msg, now)
        elif mt == T.MT_RESEND_REQUEST:
            self._on_resend_request(msg, now)
        elif mt == T.MT_REJECT:
            if self._verify(msg, now):
                self._incr_target()
                self._events.append(RejectReceived(msg))
        else:
            if self._verify(msg, now):
                self._incr_target()
                self._events.append(AppMessageReceived(msg))

    def _on_invalid(self, msg: Message, err: ValidationError, now: float) -> None:
        if msg.msg_type == T.MT_LOGON or not self.is_logged_on:
            self._refuse_logon(f"invalid Logon: {err.detail} (373={err.reason})")
        seq = msg.seq_num
        if seq is not None and seq > self.store.next_target_seq():
            # too high and invalid: ask for the gap first, reject when it comes in order; never hold the frame
            self._verify(msg, now, rejection=Rejection.of(msg, err.reason, err.tag, err.detail))
            return
        self._reject(msg, err.reason, err.tag, err.detail)

    def _verify(self, msg: Message, now: float, check_high: bool = True, check_low: bool = True,
                rejection: Rejection | None = None) -> bool:
        """Checks every message passes before it counts (QuickFIX's ``verify``); ``rejection``: what an
        invalid message above a gap is owed, held in its place."""
        cfg = self.config
        if not self.is_logged_on and msg.msg_type != T.MT_LOGON:
            self._refuse_logon("message before Logon")
        if cfg.check_latency:
            st = parse_utc_timestamp(msg.get(T.SendingTime) or b"")
            if st is None or abs(now - st) > cfg.max_latency:
                if not self.is_logged_on:
                    self._refuse_logon(
                        f"SendingTime(52) {(msg.get(T.SendingTime) or b'').decode('latin-1')} is "
                        f"outside the {cfg.max_latency:.0f} s window"
                    )
                self._reject(
                    msg,
                    T.SRR_SENDING_TIME_ACCURACY,
                    None,
                    f"SendingTime(52) {(msg.get(T.SendingTime) or b'').decode('latin-1')} is more than "
                    f"{cfg.max_latency:.0f} s from now",
                )
                self._logout(now)
                return False
        if msg.get(T.SenderCompID) != cfg.target_comp_id or msg.get(T.TargetCompID) != cfg.sender_comp_id:
            if not self.is_logged_on:
                self._refuse_logon("CompIDs do not match the session")
            self._reject(
                msg,
                T.SRR_COMPID_PROBLEM,
                None,
                f"SenderCompID(49) expected {cfg.target_comp_id.decode()} received "
                f"{(msg.get(T.SenderCompID) or b'').decode('latin-1')}; TargetCompID(56) expected "
                f"{cfg.sender_comp_id.decode()} received {(msg.get(T.TargetCompID) or b'').decode('latin-1')}",
            )
            self._logout(now)
            return False
        self._t.last_received = now
        self._t.test_requests = 0
        seq = msg.seq_num
        expected = self.store.next_target_seq()
        if seq is None:  # never: a message without a number ends the session in ``_on_message``
            return not (check_high or check_low)
        if check_high and seq > expected:
            self._target_too_high(msg, seq, expected, now, rejection)
            return False
        if check_low and seq < expected:
            self._target_too_low(msg, seq, expected, now)
            return False
        if check_high or check_low:
            self._gap.reached(seq)
        return True

    def _target_too_high(self, msg: Message, seq: int, expected: int, now: float,
                         rejection: Rejection | None) -> None:
        # held within the byte budget; beyond it the resend we ask for brings the message again (item 7)
        if rejection is not None:
            self._gap.hold_rejection(seq, rejection)
        else:
            self._gap.hold(seq, msg)
        if self._gap.asked_covers(seq):
            return  # already asked for this gap (2b, 10)
        self._target_too_high_gap(seq, expected, now)

    def _target_too_low(self, msg: Message, seq: int, expected: int, now: float) -> None:
        if msg.get(T.PossDupFlag) != b"Y":
            self._end(now, f"MsgSeqNum too low, expecting {expected} but received {seq}")
        if msg.msg_type != T.MT_SEQUENCE_RESET:
            orig_b = msg.get(T.OrigSendingTime)
            if orig_b is None:
                self._reject(msg, T.SRR_REQUIRED_TAG_MISSING, T.OrigSendingTime,
                             "PossDupFlag(43)=Y without OrigSendingTime(122) (2g)")
                return
            orig = parse_utc_timestamp(orig_b)
            sending = parse_utc_timestamp(msg.get(T.SendingTime) or b"")
            if orig is not None and sending is not None and orig > sending:
                self._reject(msg, T.SRR_SENDING_TIME_ACCURACY, None,
                             "OrigSendingTime(122) is later than SendingTime(52) (2f)")
                self._logout(now)
                return
        self._events.append(DuplicateIgnored(seq))

    def _on_logon(self, msg: Message, now: float) -> None:
        cfg = self.config
        if self.state is State.ACTIVE and msg.get(T.ResetSeqNumFlag) != b"Y":
            # A second Logon on a live session is a protocol error.
            self._reject(msg, T.SRR_VALUE_INCORRECT, T.MsgType, "Logon(A) on an active session")
            return
        hb_b = msg.get(T.HeartBtInt) or b""
        hb = parse_uint(hb_b)
        if hb is None or hb > T.MAX_HEART_BT_INT:
            self._refuse_logon(f"HeartBtInt(108) '{excerpt(hb_b)}' is not a number of seconds from 0 to "
                               f"{T.MAX_HEART_BT_INT}")
        if cfg.role is Role.ACCEPTOR and cfg.begin_string == b"FIXT.1.1" and not msg.get(T.DefaultApplVerID):
            self._refuse_logon("DefaultApplVerID(1137) missing from Logon")
        reset_requested = msg.get(T.ResetSeqNumFlag) == b"Y"
        was_active = self.state is State.ACTIVE
        # Checks that need no state change come first: a refused Logon must
        # never reset stored sequence numbers.
        if cfg.check_latency:
            st = parse_utc_timestamp(msg.get(T.SendingTime) or b"")
            if st is None or abs(now - st) > cfg.max_latency:
                if not was_active:
                    self._refuse_logon(
                        f"SendingTime(52) {(msg.get(T.SendingTime) or b'').decode('latin-1')} is outside "
                        f"the {cfg.max_latency:.0f} s window (1d)"
                    )
        if msg.get(T.SenderCompID) != cfg.target_comp_id or msg.get(T.TargetCompID) != cfg.sender_comp_id:
            self._refuse_logon("CompIDs do not match the session (1c)")
        if cfg.role is Role.ACCEPTOR:
            if reset_requested or (cfg.reset_on_logon and not was_active):
                self.store.reset()
                self._gap.clear()
                self._resends.clear()
        elif self.state is State.LOGON_SENT:
            if reset_requested and not self._sent_reset:
                self.store.reset()
        seq = msg.seq_num
        expected = self.store.next_target_seq()
        if seq is not None and seq < expected and not reset_requested:
            text = (f"MsgSeqNum too low, expecting {expected} but received {seq}" if expected <= T.MAX_SEQ_NUM
                    else _used_up_text(cfg.target_comp_id))
            self._send_admin(T.MT_LOGOUT, [(T.Text, text.encode())], now)
            self._events.append(LogonRefused(text))
            self._disconnect(text)
            raise _Stop
        self._t.last_received = now
        self._t.test_requests = 0
        self.heartbeat_interval = hb if hb is not None and cfg.role is Role.ACCEPTOR else cfg.heartbeat_interval
        if cfg.role is Role.ACCEPTOR:
            self._send_admin(T.MT_LOGON, logon_body(hb_b, reset_requested, cfg.default_appl_ver_id,
                                                    cfg.begin_string), now)
        self.state = State.ACTIVE
        self._t.logon_deadline = None
        self._sent_reset = False
        self._events.append(LoggedOn(self.heartbeat_interval, reset_requested))
        if seq is not None and seq > expected:
            self._gap.handled(seq)  # the Logon itself is handled
            self._target_too_high_gap(seq, expected, now)
        else:
            self._incr_target()

    def _target_too_high_gap(self, seq: int, expected: int, now: float) -> None:
        self._events.append(GapDetected(expected, seq))
        end = b"0" if self.config.begin_string >= b"FIX.4.2" else b"999999"
        self._send_admin(T.MT_RESEND_REQUEST, [(T.BeginSeqNo, b"%d" % expected), (T.EndSeqNo, end)], now)
        self._gap.ask(expected, seq - 1, now)

    def _on_logout(self, msg: Message, now: float) -> None:
        if not self._verify(msg, now, check_high=False, check_low=False):
            return
        text = (msg.get(T.Text) or b"").decode("latin-1")
        if self.state is not State.LOGOUT_SENT:
            self._send_admin(T.MT_LOGOUT, [], now)
            self._events.append(LoggedOut(f"peer logged out{': ' + text if text else ''}", by_peer=True))
        else:
            self._events.append(LoggedOut("logout confirmed", by_peer=False))
        seq = msg.seq_num
        if seq is not None and seq == self.store.next_target_seq():
            self._incr_target()
        self._disconnect("logout")
        raise _Stop

    def _on_sequence_reset(self, msg: Message, now: float) -> None:
        gap_fill = msg.get(T.GapFillFlag) == b"Y"
        if not self._verify(msg, now, check_high=gap_fill, check_low=gap_fill):
            return
        new_seq = msg.get_int(T.NewSeqNo)
        if new_seq is None:
            self._reject(msg, T.SRR_REQUIRED_TAG_MISSING, T.NewSeqNo, "NewSeqNo(36) missing")
            return
        if new_seq > T.MAX_SEQ_NUM:
            self._reject(msg, T.SRR_VALUE_INCORRECT, T.NewSeqNo, _above_bound(msg, T.NewSeqNo))
            return
        expected = self.store.next_target_seq()
        if new_seq > expected:
            self.store.set_next_target_seq(new_seq)
            self._events.append(SequenceReset(expected, new_seq, gap_fill))
        elif new_seq < expected:
            # 11c: NewSeqNo below the expected number
            self._reject(
                msg, T.SRR_VALUE_INCORRECT, None,
                f"NewSeqNo(36) {new_seq} is below the expected MsgSeqNum(34) {expected}",
            )

    def _on_resend_request(self, msg: Message, now: float) -> None:
        if not self._verify(msg, now, check_high=False, check_low=False):
            return
        begin = msg.get_int(T.BeginSeqNo)
        end = msg.get_int(T.EndSeqNo)
        if begin is None or end is None:
            self._reject(msg, T.SRR_REQUIRED_TAG_MISSING, T.BeginSeqNo if begin is None else T.EndSeqNo,
                         "ResendRequest without BeginSeqNo(7)/EndSeqNo(16)")
            return
        for tag, value in ((T.BeginSeqNo, begin), (T.EndSeqNo, end)):
            if value > T.MAX_SEQ_NUM:
                self._reject(msg, T.SRR_VALUE_INCORRECT, tag, _above_bound(msg, tag))
                return
        refused = self._resends.admit(now)
        if refused is not None:  # item 4: a bound on resend work per session, and a rate
            self._end(now, refused)
        if self._resends.request(begin, end, self.store.next_sender_seq()):
            self._serve_chunk(now)
        seq = msg.seq_num
        expected = self.store.next_target_seq()
        if seq is not None:
            if seq == expected:
                self._incr_target()
            elif seq > expected:
                # 20: served at once; counts as handled once the gap fills
                self._gap.handled(seq)
                if not self._gap.asked_covers(seq):
                    self._target_too_high_gap(seq, expected, now)

    def _serve_chunk(self, now: float) -> None:
        steps, served = self._resends.next_chunk(self.store)
        ts = format_utc_timestamp(now, self.config.timestamp_precision)
        for step in steps:
            msg_type, body, header, seq = outgoing(step, self.config.begin_string, self._header_tags, ts)
            self._send(msg_type, body, now, header, seq=seq)
        if served is not None:
            self._events.append(served)


def _tag_key(f: Field) -> int:
    return f[0]


def _above_bound(msg: Message, tag: int) -> str:
    """Detail for a sequence number field above MAX_SEQ_NUM: the field, an excerpt of its value, the bound."""
    return (f"{T.field_name(tag)} {excerpt(msg.get(tag) or b'')} is above {T.MAX_SEQ_NUM}, "
            "the largest sequence number this session holds")
