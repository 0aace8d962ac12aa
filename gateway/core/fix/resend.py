"""Serving ResendRequest(2) a chunk at a time, with a bound per session and a rate limit.

Why: ResendRequest(2) 1..0 asks for every message the session ever sent, in
about 80 bytes.  Served in one go, 15 KB of them (from a session the policy
allowed nothing) froze every session of the gateway for 7-12 s and grew its
memory by some 300 MiB (issue 15, item 4).  Here:

* a request becomes a ``_Job`` — its range and a cursor, a few integers —
  and is served ``chunk`` stored messages at a time (QuickFIX/J's
  ResendRequestChunkSize does the same for the ResendRequests it sends).  The
  store is read range by range (``SessionStore.get_sent`` with a limit),
  never the whole range at once; a chunk also ends after ``CHUNK_BYTES`` of
  stored frames;
* the session serves the first chunk at once (a small resend looks exactly
  as before) and the shell asks for each next one only when the
  connection's write buffer has drained and other sessions had their turn,
  so a peer that does not read stalls only its own resend;
* requests wait in order, at most ``burst`` of them, and the peer may send
  ``burst`` at once and then ``rate`` per second (a token bucket).  Beyond
  either bound the session ends with a Logout saying which
  (``admit``): a legitimate peer asks again only after a gap, which a
  served resend closes.

Pure: the clock is an argument, the store is the caller's.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from gateway.core.fix import tags as T
from gateway.core.fix.carry import split_for_carry
from gateway.core.fix.codec import Field, Message, parse_fields
from gateway.core.fix.events import ResendServed
from gateway.core.fix.store import SessionStore

#: a chunk also ends once it holds this many bytes of stored frames (large messages)
CHUNK_BYTES = 256 * 1024

#: one step of a resend: ``(seq, raw)`` sends a stored message again; ``(seq, new_seq)`` is a
#: SequenceReset-GapFill(4) over ``seq..new_seq - 1`` (admin messages are never resent)
Step = tuple[int, int | bytes]


@dataclass(slots=True)
class _Job:
    begin: int
    end: int
    cursor: int  # the next number to serve
    resent: int = 0
    filled: int = 0


class ResendQueue:
    """The ResendRequests of one session not yet fully served, oldest first."""

    __slots__ = ("chunk", "rate", "burst", "_jobs", "_tokens", "_stamp")

    def __init__(self, chunk: int, rate: float, burst: int) -> None:
        self.chunk = chunk
        self.rate = rate
        self.burst = burst
        self._jobs: deque[_Job] = deque()
        self._tokens = float(burst)
        self._stamp: float | None = None

    @property
    def pending(self) -> bool:
        """Some request is not fully served yet."""
        return bool(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    def admit(self, now: float) -> str | None:
        """Count one ResendRequest(2) received at ``now``: None, or why the session must end."""
        if len(self._jobs) >= self.burst:
            return (f"{len(self._jobs)} ResendRequest(2) not yet served (the peer is not reading them); "
                    f"at most {self.burst} may wait")
        if self._stamp is not None:
            self._tokens = min(float(self.burst), self._tokens + max(0.0, now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1.0:
            return f"ResendRequest(2) rate exceeded: at most {self.burst} at once, then {self.rate:g} per second"
        self._tokens -= 1.0
        return None

    def request(self, begin: int, end: int, next_sender: int) -> bool:
        """Queue BeginSeqNo(7) ``begin`` .. EndSeqNo(16) ``end`` (0 or 999999: all we sent) given our next
        MsgSeqNum(34); True when it is first in line, so its first chunk goes at once."""
        if end == 0 or end == 999999 or end >= next_sender:
            end = next_sender - 1
        begin = max(begin, 1)
        if begin > end:
            return False
        self._jobs.append(_Job(begin, end, begin))
        return len(self._jobs) == 1

    def clear(self) -> None:
        """Sequence numbers start again or the session ends: nothing more to serve."""
        self._jobs.clear()

    def next_chunk(self, store: SessionStore) -> tuple[list[Step], ResendServed | None]:
        """The next steps of the oldest request, and its ``ResendServed`` when they finish it."""
        if not self._jobs:
            return [], None
        job = self._jobs[0]
        steps: list[Step] = []
        current, size = job.cursor, 0
        sent = store.get_sent(current, job.end, self.chunk)
        for seq, raw in sent:
            if seq < current:  # a store never returns one, but a bad one must not loop
                continue
            if seq > current:
                steps.append((current, seq))
                job.filled += seq - current
            steps.append((seq, raw))
            job.resent += 1
            current = seq + 1
            size += len(raw)
            if size >= CHUNK_BYTES:
                break
        job.cursor = current
        if len(sent) == self.chunk or size >= CHUNK_BYTES:
            if current <= job.end:
                return steps, None  # more to read: the shell asks again
        if current <= job.end:
            steps.append((current, job.end + 1))
            job.filled += job.end + 1 - current
        self._jobs.popleft()
        return steps, ResendServed(job.begin, job.end, job.resent, job.filled)


def outgoing(step: Step, begin_string: bytes, header_tags: frozenset[int],
             sending_time: bytes) -> tuple[bytes, list[Field], list[Field], int]:
    """What to send for ``step``: MsgType(35), body, extra header fields and its MsgSeqNum(34).

    A stored message goes again with PossDupFlag(43)=Y, OrigSendingTime(122)
    its first SendingTime(52), header and body as carried; a gap fill is a
    SequenceReset-GapFill(4) sent at ``sending_time``.
    """
    seq, item = step
    if isinstance(item, int):
        return (T.MT_SEQUENCE_RESET, [(T.NewSeqNo, b"%d" % item), (T.GapFillFlag, b"Y")],
                [(T.PossDupFlag, b"Y"), (T.OrigSendingTime, sending_time)], seq)
    fields = parse_fields(item[item.index(b"\x0135=") + 1 : item.rindex(b"\x0110=") + 1])
    msg = Message(begin_string, fields[0][1], fields, item)
    header, body = split_for_carry(msg, header_tags)
    header += [(T.PossDupFlag, b"Y"), (T.OrigSendingTime, msg.get(T.SendingTime) or b"")]
    return msg.msg_type, body, header, msg.seq_num or seq
