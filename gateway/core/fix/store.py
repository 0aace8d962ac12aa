"""Session store interface and the in-memory implementation.

The session core calls a store synchronously for its sequence numbers and
for the application messages it may have to resend.  The embedded default
that survives a crash (``gateway.store.FileStore``) lives with the other
edges; ``MemoryStore`` serves tests and the simulator.
"""

from __future__ import annotations

from typing import Protocol


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
        self._sender = seq

    def set_next_target_seq(self, seq: int) -> None:
        self._target = seq

    def save_sent(self, seq: int, raw: bytes) -> None:
        self._sent[seq] = raw

    def get_sent(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        return sorted((s, r) for s, r in self._sent.items() if begin <= s <= end)

    def reset(self) -> None:
        self._sender = 1
        self._target = 1
        self._sent.clear()
