"""Messages that arrive above a sequence gap, held until the gap fills — within a byte budget and a time bound.

When MsgSeqNum(34) is above the expected number the session asks for the gap
with a ResendRequest(2) and keeps what arrived above it, to process in order
once the gap fills (FIX test cases 10, 11).  A peer can keep such a gap open
on purpose and send above it for as long as it likes, so what is held is
bounded three ways (issue 15, item 7):

* **bytes**: the frames are held as the bytes received (no parsed fields,
  which cost many times the frame), and at most ``max_bytes`` of them per
  session.  A message beyond the budget is not held; that loses nothing:
  our ResendRequest asked for everything from the gap on (EndSeqNo(16)=0),
  so the peer sends it again, in order, and it is processed then;
* **invalid frames are never held**: an invalid message above the gap is
  kept only as the Reject(3) it is owed (``Rejection``: reason, tag, our own
  detail text, and the few fields the Reject(3) echoes), answered when its
  turn comes, exactly as if it had been held;
* **time**: while a gap is open, a message must fill some of it at least
  every ``timeout`` seconds (``deadline``); the session logs out when none
  does.  A large resend that keeps making progress is never cut off.

Pure: no clock; ``now`` is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.fix import tags as T
from gateway.core.fix.codec import Message, ParseError, encode, parse

#: what one held entry costs besides its bytes (the dict slot and the object around them)
ENTRY_OVERHEAD = 128


@dataclass(frozen=True, slots=True)
class Rejection:
    """An invalid message above the gap, reduced to the Reject(3) it gets when its turn comes."""

    message: Message  # MsgType(35), MsgSeqNum(34) and the reverse-route fields a Reject(3) echoes
    reason: int  # SessionRejectReason(373)
    tag: int | None  # RefTagID(371)
    detail: str  # for the event and the audit record

    @classmethod
    def of(cls, msg: Message, reason: int, tag: int | None, detail: str) -> Rejection:
        kept = [f for f in msg.fields if f[0] in (T.MsgType, T.MsgSeqNum) or f[0] in T.REVERSE_ROUTE]
        return cls(Message(msg.begin_string, msg.msg_type, tuple(kept)), reason, tag, detail)

    def cost(self) -> int:
        return ENTRY_OVERHEAD + len(self.detail) + sum(len(v) + 16 for _, v in self.message.fields)


#: a held entry: the frame of a valid message, its rejection, or None (already handled: a Logon, a ResendRequest)
Held = bytes | Rejection | None


class GapQueue:
    """What arrived above the expected MsgSeqNum(34), the gap our ResendRequest(2) asked for, and its deadline."""

    __slots__ = ("max_bytes", "max_count", "timeout", "_held", "bytes", "asked", "deadline", "_expected")

    def __init__(self, max_bytes: int, max_count: int, timeout: float) -> None:
        self.max_bytes = max_bytes
        self.max_count = max_count
        self.timeout = timeout
        self._held: dict[int, tuple[Held, int]] = {}  # seq -> (entry, its cost)
        self.bytes = 0  # what the held entries cost, ENTRY_OVERHEAD each included
        self.asked: tuple[int, int] | None = None  # the gap our last ResendRequest(2) asked for
        self.deadline: float | None = None  # when the open gap must have moved
        self._expected = 0  # the expected number when the deadline was last set

    def __len__(self) -> int:
        return len(self._held)

    @property
    def open(self) -> bool:
        """A gap is open: we asked for one, or messages wait above a missing number."""
        return self.asked is not None or bool(self._held)

    def hold(self, seq: int, msg: Message) -> bool:
        """Keep a valid message above the gap (False: over the budget, not kept; the resend brings it again)."""
        return self._put(seq, msg.raw or encode(msg.begin_string, msg.fields))

    def hold_rejection(self, seq: int, rejection: Rejection) -> bool:
        """Keep what an invalid message above the gap is owed (never the frame)."""
        return self._put(seq, rejection)

    def handled(self, seq: int) -> None:
        """``seq`` was handled on arrival (a Logon, a ResendRequest served at once): count it when reached."""
        self._put(seq, None, force=True)

    def _put(self, seq: int, entry: Held, force: bool = False) -> bool:
        cost = ENTRY_OVERHEAD + (len(entry) if isinstance(entry, bytes) else
                                 entry.cost() if isinstance(entry, Rejection) else 0)
        old = self._held.get(seq)
        spent = self.bytes - (old[1] if old is not None else 0)
        if not force and (spent + cost > self.max_bytes or (old is None and len(self._held) >= self.max_count)):
            return False
        self._held[seq] = (entry, cost)
        self.bytes = spent + cost
        return True

    def take(self, expected: int) -> tuple[bool, Message | Rejection | None]:
        """The entry held for ``expected`` (first: whether there is one), after dropping all below it.

        A held frame comes back parsed; one that no longer parses (it always
        does: it was framed once) counts as not held, and the resend brings it.
        """
        for s in [s for s in self._held if s < expected]:
            self._drop(s)
        if expected not in self._held:
            return False, None
        entry = self._drop(expected)
        if isinstance(entry, bytes):
            try:
                return True, parse(entry)
            except ParseError:
                return False, None
        return True, entry

    def _drop(self, seq: int) -> Held:
        entry, cost = self._held.pop(seq)
        self.bytes -= cost
        return entry

    def asked_covers(self, seq: int) -> bool:
        """Our open ResendRequest(2) already asked for what lies below ``seq`` (2b, 10: ask once)."""
        return self.asked is not None and seq >= self.asked[0]

    def ask(self, begin: int, end: int, now: float) -> None:
        """We sent a ResendRequest(2) for ``begin..end``; the gap now has to move within ``timeout``."""
        self.asked = (begin, end)
        if self.deadline is None:
            self.deadline, self._expected = now + self.timeout, begin

    def reached(self, seq: int) -> None:
        """A message numbered ``seq`` was accepted in order: past the end of the asked gap, it is filled."""
        if self.asked is not None and seq >= self.asked[1]:
            self.asked = None

    def after_input(self, expected: int, now: float) -> None:
        """After each message: the deadline moves when the expected number did, and ends with the gap."""
        if self.asked is not None and expected > self.asked[1]:
            self.asked = None  # filled, whatever filled it (a SequenceReset-GapFill(4) counts too)
        if not self.open:
            self.deadline = None
        elif self.deadline is None or expected != self._expected:
            self.deadline = now + self.timeout
        self._expected = expected

    def clear(self) -> None:
        """Sequence numbers start again, or the session ends: nothing held, no gap."""
        self._held.clear()
        self.bytes = 0
        self.asked = None
        self.deadline = None

    def expired_text(self, expected: int) -> str:
        """The Logout text when ``deadline`` passed."""
        return (f"MsgSeqNum(34) gap not filled: expecting {expected}, and no message filled any of the gap "
                f"for {self.timeout:g} s after the ResendRequest(2)")

