"""Crash-safe file store for session sequence numbers and resendable messages.

One folder per session under the state directory:

* ``seqnums`` — two fixed 32-byte slots written alternately, each
  ``<generation u64><next sender u64><next target u64><crc32 u32><pad>``.
  A torn write can only damage the slot being written; on load the valid
  slot with the highest generation wins.
* ``messages.log`` — append-only records ``<seq u64><len u32><crc32 u32><raw>``
  of the application messages we sent (the ones a ResendRequest may ask for).
  On load the log is scanned; a torn last record is truncated.  In memory
  only an index (offset and length per number, and the numbers sorted) is
  kept: a resend reads its range a chunk at a time with ``pread``.

Every call reaches the OS with ``os.pwrite`` / ``os.write`` before it
returns (survives a process crash, the ``write`` durability mode); nothing
rewrites the whole store per message.  Numbers outside the bounds of
``gateway.core.fix.store`` are refused with ``ValueError`` before anything
changes, in memory or on disk.  Two writes are left out because they would
add nothing a crash could need: the ``lseek`` before an append (the store
knows where its log ends), and the sequence-number slot after a message is
appended whose number proves the new next sender number (on load the next
sender number is at least the highest logged number + 1).

``deferred_target=True`` (the gateway's legs): the next target number (what
we received) is kept in memory until ``commit()``, which the shell calls once
per read, before any frame or event of that read goes on — one ``pwrite`` per
read instead of one per message received, and still nothing leaves that a
crash could take back (``gateway/shells/legs.py``).

``batched=True`` (the gateway's legs): while a batch is open
(``open_batch``/``close_batch``, which the shells' ``held_writes`` wraps
around the forwards and deliveries one audit write released), the records
of sent messages are held and written with one ``write`` per store when the
batch closes — before any frame of the batch leaves, since the held frames
are written after it.  Whoever must know that a message is in the OS (the
``forwarded`` outcome record) asks ``after_flush``.  When the batched write
fails, the store is rolled back to what is on disk (numbers, index) and the
callbacks hear the error: nothing of the batch was sent, and nothing says
it was; ``lost_batches`` counts those, so a leg holding frames knows they
must not leave.  Any other write (a sequence-number slot, a resend that
reads the log, a reset) writes the held records first, so the disk keeps
its order.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

from gateway.core.fix.store import SeqIndex, checked_next_seq, checked_seq

_SLOT = struct.Struct("<QQQI4x")
_REC = struct.Struct("<QII")

#: (on success, on failure): told once the held records of a batch are in the OS, or why they are not
AfterFlush = tuple[Callable[[], None], Callable[[OSError], None]]


class _Batch(threading.local):
    """The open batch of this thread's event loop (a test may run several loops, one per thread)."""

    def __init__(self) -> None:
        self.depth = 0
        self.stores: list[FileStore] = []  # holding records, in the order they first held one


_batch = _Batch()


def open_batch() -> None:
    """From now until the matching ``close_batch``, batched stores hold the records of sent messages."""
    _batch.depth += 1


def close_batch() -> list[tuple[FileStore, OSError]]:
    """Close one level; the outermost writes every store's held records (one ``write`` each) and tells
    their ``after_flush`` callbacks.  Returns the stores whose write failed (rolled back), with why."""
    _batch.depth -= 1
    if _batch.depth:
        return []
    stores, _batch.stores = _batch.stores, []
    failed = []
    for store in stores:
        error = store.flush_held()
        if error is not None:
            failed.append((store, error))
    return failed


def session_dir_name(begin_string: bytes, sender: bytes, target: bytes) -> str:
    """Folder name for a session: readable, and safe for any CompID."""
    def clean(b: bytes) -> str:
        return "".join(c if c.isalnum() or c in "._" else f"%{ord(c):02X}" for c in b.decode("latin-1"))

    return f"{clean(begin_string)}-{clean(sender)}-{clean(target)}"


class FileStore:
    """``SessionStore`` kept in files under ``folder``."""

    def __init__(self, folder: Path, deferred_target: bool = False, batched: bool = False) -> None:
        self.folder = folder
        self.deferred_target = deferred_target
        self.batched = batched
        self.log_writes = 0  # write() calls that appended to the log (what batching saves is visible)
        self.lost_batches = 0  # batched writes that failed and were rolled back (a leg drops their frames)
        self._held: list[bytes] = []  # records of a batch not yet written
        self._held_seqs: list[tuple[int, tuple[int, int] | None]] = []  # (seq, its index entry before)
        self._undo: tuple[int, int, int, int] = (0, 0, 0, 0)  # log end, logged max, sender, slot sender
        self._after: list[AfterFlush] = []
        self.target_pending = False  # deferred: the next target number is not in the OS yet (``commit``)
        folder.mkdir(parents=True, exist_ok=True)
        self._seq_fd = os.open(folder / "seqnums", os.O_RDWR | os.O_CREAT, 0o600)
        self._log_path = folder / "messages.log"
        self._log_fd = os.open(self._log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._generation = 0
        self._sender = 1
        self._target = 1
        self._index: dict[int, tuple[int, int]] = {}  # seq -> (offset of raw, length)
        self._seqs = SeqIndex()  # the keys of _index, sorted: a resend reads a range without a scan
        self._log_end = 0  # where the next record goes (the log is only ever appended to or truncated)
        self._logged_max = 0  # the highest number in the log: it proves the next sender number is above it
        self._slot_sender = 0  # the next sender number the newest slot on disk holds
        self.recovered_bytes = 0
        self._load()

    # -- loading ---------------------------------------------------------------
    def _load(self) -> None:
        data = os.pread(self._seq_fd, 2 * _SLOT.size, 0)
        best: tuple[int, int, int] | None = None
        for i in range(2):
            chunk = data[i * _SLOT.size : (i + 1) * _SLOT.size]
            if len(chunk) < _SLOT.size:
                continue
            gen, sender, target, crc = _SLOT.unpack(chunk)
            if zlib.crc32(chunk[:24]) != crc or gen == 0:
                continue
            if best is None or gen > best[0]:
                best = (gen, sender, target)
        if best is not None:
            self._generation, self._sender, self._target = best
            self._slot_sender = self._sender
        size = os.fstat(self._log_fd).st_size
        offset = 0
        with open(self._log_path, "rb") as f:
            while offset + _REC.size <= size:
                f.seek(offset)
                head = f.read(_REC.size)
                seq, length, crc = _REC.unpack(head)
                raw = f.read(length)
                if len(raw) < length or zlib.crc32(raw) != crc:
                    break
                self._index[seq] = (offset + _REC.size, length)
                offset += _REC.size + length
        if offset < size:
            self.recovered_bytes = size - offset
            os.ftruncate(self._log_fd, offset)
        self._log_end = offset
        self._seqs = SeqIndex(list(self._index))
        # a sent message proves the sender number moved past it
        if self._index:
            self._logged_max = max(self._index)
            self._sender = max(self._sender, self._logged_max + 1)

    def _write_seqnums(self) -> None:
        if self._held:
            self._flush_or_raise()  # the log before the slot, as without a batch
        self._generation += 1
        head = struct.pack("<QQQ", self._generation, self._sender, self._target)
        slot = head + struct.pack("<I", zlib.crc32(head)) + b"\0" * 4
        os.pwrite(self._seq_fd, slot, (self._generation % 2) * _SLOT.size)
        self._slot_sender = self._sender
        self.target_pending = False

    def commit(self) -> None:
        """Deferred mode: put the next target number in the OS (raises ``OSError`` when it cannot)."""
        if self.target_pending:
            self._write_seqnums()

    # -- SessionStore ----------------------------------------------------------
    def next_sender_seq(self) -> int:
        return self._sender

    def next_target_seq(self) -> int:
        return self._target

    def set_next_sender_seq(self, seq: int) -> None:
        self._sender = checked_next_seq(seq)
        if seq == self._logged_max + 1 and self._slot_sender <= seq:
            return  # the message just logged as number seq - 1 says so on load: the slot may lag
        self._write_seqnums()

    def set_next_target_seq(self, seq: int) -> None:
        self._target = checked_next_seq(seq)
        if self.deferred_target:
            self.target_pending = True
            return
        self._write_seqnums()

    def save_sent(self, seq: int, raw: bytes) -> None:
        checked_seq(seq)
        offset = self._log_end
        record = _REC.pack(seq, len(raw), zlib.crc32(raw)) + raw
        if self.batched and _batch.depth:
            if not self._held:
                self._undo = (self._log_end, self._logged_max, self._sender, self._slot_sender)
                _batch.stores.append(self)
            self._held.append(record)
            self._held_seqs.append((seq, self._index.get(seq)))
        else:
            if self._held:  # a batch that is closing: its records go first
                self._flush_or_raise()
                offset = self._log_end
            self._append(record)
        self._log_end = offset + len(record)
        if seq not in self._index:
            self._seqs.add(seq)
        self._index[seq] = (offset + _REC.size, len(raw))
        if seq > self._logged_max:
            self._logged_max = seq

    def _append(self, data: bytes) -> None:
        """``data`` at the end of the log, all or nothing (raises ``OSError``)."""
        offset = self._log_end
        written = os.write(self._log_fd, data)  # O_APPEND: at the end, which is ``offset``
        self.log_writes += 1
        if written != len(data):  # a full disk: cut the partial record off, fail as a write that failed
            os.ftruncate(self._log_fd, offset)
            raise OSError(errno.ENOSPC, f"short write to {self._log_path}: {written} of {len(data)} bytes")

    def after_flush(self, ok: Callable[[], None], failed: Callable[[OSError], None]) -> None:
        """``ok()`` once every record saved so far is in the OS — now, unless a batch holds some —
        or ``failed(error)`` when the batch's write fails (nothing of it was sent)."""
        if self._held:
            self._after.append((ok, failed))
        else:
            ok()

    def flush_held(self) -> OSError | None:
        """Write the held records with one ``write``; on failure roll back to what is on disk.  Tells the
        ``after_flush`` callbacks either way; returns the error, if any."""
        if not self._held:
            return None
        held, self._held = self._held, []
        seqs, self._held_seqs = self._held_seqs, []
        after, self._after = self._after, []
        log_end = self._undo[0]
        error: OSError | None = None
        self._log_end = log_end  # ``_append`` writes at, and cuts back to, the end on disk
        try:
            self._append(b"".join(held))
        except OSError as exc:
            error = exc
        if error is None:
            self._log_end = log_end + sum(len(r) for r in held)
            for ok, _ in after:
                ok()
            return None
        self.lost_batches += 1
        _, self._logged_max, self._sender, self._slot_sender = self._undo
        for seq, before in reversed(seqs):
            if before is None:
                self._index.pop(seq, None)
            else:
                self._index[seq] = before
        self._seqs = SeqIndex(list(self._index))
        for _, failed in after:
            failed(error)
        return error

    def _flush_or_raise(self) -> None:
        """Held records written before another write (the batch's own flush then finds nothing held)."""
        error = self.flush_held()
        if error is not None:
            raise error

    def get_sent(self, begin: int, end: int, limit: int | None = None) -> list[tuple[int, bytes]]:
        if self._held:
            self._flush_or_raise()  # a resend reads the log: what it holds goes there first
        out = []
        for seq in self._seqs.range(begin, end, limit):
            off, length = self._index[seq]
            out.append((seq, os.pread(self._log_fd, length, off)))
        return out

    def reset(self) -> None:
        if self._held:
            self._flush_or_raise()
        os.ftruncate(self._log_fd, 0)
        self._log_end = 0
        self._logged_max = 0
        self._index.clear()
        self._seqs.clear()
        self._sender = 1
        self._target = 1
        self._write_seqnums()

    def close(self) -> None:
        try:
            if self._held:
                self._flush_or_raise()
            self.commit()
        except OSError:
            pass  # as a write that failed before the close
        for fd in (self._seq_fd, self._log_fd):
            try:
                os.close(fd)
            except OSError:
                pass
