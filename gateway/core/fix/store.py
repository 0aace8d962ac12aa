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

from collections.abc import Iterable
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


def resend_plan(sent: Iterable[tuple[int, bytes]], begin: int, end: int) -> list[tuple[int, int | bytes]]:
    """What a ResendRequest(2) for ``begin..end`` gets, given the application messages ``sent`` in that range.

    In order: ``(seq, raw)`` sends a stored message again; ``(seq, new_seq)`` is a
    SequenceReset-GapFill(4) over ``seq..new_seq - 1`` (admin messages are never resent).
    """
    plan: list[tuple[int, int | bytes]] = []
    current = begin
    for seq, raw in sent:
        if seq < current:
            continue
        if seq > current:
            plan.append((current, seq))
        plan.append((seq, raw))
        current = seq + 1
    if current <= end:
        plan.append((current, end + 1))
    return plan


class SessionStore(Protocol):
    """What a session needs to persist; every call must be durable to the OS."""

    def next_sender_seq(self) -> int: ...
    def next_target_seq(self) -> int: ...
    def set_next_sender_seq(self, seq: int) -> None: ...
    def set_next_target_seq(self, seq: int) -> None: ...
    def save_sent(self, seq: int, raw: bytes) -> None: ...
    def get_sent(self, begin: int, end: int) -> list[tuple[int, bytes]]: ...
    def reset(self) -> None: ...


class MemoryStore:
    """Store held in memory; lost with the process."""

    def __init__(self) -> None:
        self._sender = 1
        self._target = 1
        self._sent: dict[int, bytes] = {}

    def next_sender_seq(self) -> int:
        return self._sender

    def next_target_seq(self) -> int:
        return self._target

    def set_next_sender_seq(self, seq: int) -> None:
        self._sender = checked_next_seq(seq)

    def set_next_target_seq(self, seq: int) -> None:
        self._target = checked_next_seq(seq)

    def save_sent(self, seq: int, raw: bytes) -> None:
        self._sent[checked_seq(seq)] = raw

    def get_sent(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        return sorted((s, r) for s, r in self._sent.items() if begin <= s <= end)

    def reset(self) -> None:
        self._sender = 1
        self._target = 1
        self._sent.clear()
