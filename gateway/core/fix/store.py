"""Session store interface and the in-memory implementation.

The session core calls a store synchronously for its sequence numbers and
for the application messages it may have to resend.  The embedded default
that survives a crash (``gateway.store.FileStore``) lives with the other
edges; ``MemoryStore`` serves tests and the simulator.

Every store holds sequence numbers in 1..MAX_SEQ_NUM and next numbers in
1..MAX_SEQ_NUM + 1 (one past the bound: every number is used, only a reset
goes on) and refuses anything else with ``ValueError``: that is caller
misuse, and refusing it keeps a store from corrupting itself.  The session
checks peer input against the bound before it reaches a store.
"""

from __future__ import annotations

import bisect
from typing import Protocol

from gateway.core.fix.tags import MAX_SEQ_NUM


def checked_seq(seq: int) -> int:
    """``seq`` when it is a sequence number a store may hold (1..MAX_SEQ_NUM), else ``ValueError``."""
    if not 1 <= seq <= MAX_SEQ_NUM:
        raise ValueError(f"sequence number out of range 1..{MAX_SEQ_NUM}: {_short(seq)}")
    return seq


def checked_next_seq(seq: int) -> int:
    """``seq`` when it is a next sequence number a store may hold (1..MAX_SEQ_NUM + 1), else ``ValueError``."""
    if not 1 <= seq <= MAX_SEQ_NUM + 1:
        raise ValueError(f"next sequence number out of range 1..{MAX_SEQ_NUM + 1}: {_short(seq)}")
    return seq


def _short(n: int) -> str:
    return str(n) if -(10**30) < n < 10**30 else f"an integer of about {n.bit_length() * 0.30103:.0f} digits"


class SeqIndex:
    """The sequence numbers a store holds, sorted: a range of them costs a bisection, not a scan.

    Numbers are almost always saved in increasing order (an append); a
    number below the last one is inserted in place.
    """

    __slots__ = ("_seqs",)

    def __init__(self, seqs: list[int] | None = None) -> None:
        self._seqs = sorted(seqs) if seqs else []

    def add(self, seq: int) -> None:
        """Record ``seq`` (the caller knows it is not recorded yet)."""
        if not self._seqs or seq > self._seqs[-1]:
            self._seqs.append(seq)
        else:
            bisect.insort(self._seqs, seq)

    def range(self, begin: int, end: int, limit: int | None = None) -> list[int]:
        """The first ``limit`` (None: all) numbers in ``begin..end``."""
        lo = bisect.bisect_left(self._seqs, begin)
        hi = bisect.bisect_right(self._seqs, end, lo)
        if limit is not None:
            hi = min(hi, lo + max(0, limit))
        return self._seqs[lo:hi]

    def clear(self) -> None:
        self._seqs.clear()


class SessionStore(Protocol):
    """What a session needs to persist; every call must be durable to the OS."""

    def next_sender_seq(self) -> int: ...
    def next_target_seq(self) -> int: ...
    def set_next_sender_seq(self, seq: int) -> None: ...
    def set_next_target_seq(self, seq: int) -> None: ...
    def save_sent(self, seq: int, raw: bytes) -> None: ...
    def get_sent(self, begin: int, end: int, limit: int | None = None) -> list[tuple[int, bytes]]:
        """The first ``limit`` (None: all) stored messages numbered ``begin..end``, in order.

        A resend reads its range this way a chunk at a time, so serving one
        never holds more than a chunk of the store in memory.
        """
        ...
    def reset(self) -> None: ...


class MemoryStore:
    """Store held in memory; lost with the process."""

    def __init__(self) -> None:
        self._sender = 1
        self._target = 1
        self._sent: dict[int, bytes] = {}
        self._seqs = SeqIndex()

    def next_sender_seq(self) -> int:
        return self._sender

    def next_target_seq(self) -> int:
        return self._target

    def set_next_sender_seq(self, seq: int) -> None:
        self._sender = checked_next_seq(seq)

    def set_next_target_seq(self, seq: int) -> None:
        self._target = checked_next_seq(seq)

    def save_sent(self, seq: int, raw: bytes) -> None:
        if checked_seq(seq) not in self._sent:
            self._seqs.add(seq)
        self._sent[seq] = raw

    def get_sent(self, begin: int, end: int, limit: int | None = None) -> list[tuple[int, bytes]]:
        return [(s, self._sent[s]) for s in self._seqs.range(begin, end, limit)]

    def reset(self) -> None:
        self._sender = 1
        self._target = 1
        self._sent.clear()
        self._seqs.clear()
