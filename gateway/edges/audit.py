"""Audit stream (edge): append-only segments, SHA-256 hash chain, Ed25519 checkpoints.

Format (so a third party can write a verifier):

* a folder of segment files ``audit-000001.jsonl``, ``audit-000002.jsonl`` …,
  numbered without gaps; each line is one record, a JSON object, UTF-8;
* every record starts with ``seq`` (1, 2, 3 … across all segments), ``ts``
  (UTC, ISO 8601 with microseconds, e.g. ``2026-11-21T12:00:00.123456Z``) and
  ``kind``, then the fields of that kind, and ends with ``prev``: the hex
  SHA-256 of the previous record's line (its bytes without the newline);
  the first record's ``prev`` is 64 zeros;
* a segment after the first starts with a ``segment_start`` record
  (``segment``, ``previous_segment``); rotation happens by size or age and
  the chain simply continues;
* ``checkpoint`` records (every ``checkpoint_every`` records or
  ``checkpoint_ms`` milliseconds, at rotation and at shutdown) carry
  ``head_seq`` and ``head`` (the seq and hash of the record before it),
  ``key_id`` (first 16 hex of the SHA-256 of the raw public key) and ``sig``:
  base64 Ed25519 over the ASCII bytes ``"<head_seq>:<head>"``.  The public
  key is exported as ``audit.pub`` (PEM) in the folder for convenience;
  auditors take it out of band and must pass it to ``fixgw audit verify
  --pubkey`` (it is never read from beside the data);
* a clean shutdown (``close``) ends the stream with an ``audit_closed``
  record and the checkpoint that signs it, so a verifier can tell a stream
  that ended here from one whose end was cut off (see ``audit_chain``);
* after a crash the next start cuts a torn last line and writes a
  ``recovery`` record (``truncated_bytes``) before anything else;
* encryption at rest (optional): every record except ``checkpoint``,
  ``segment_start``, ``recovery``, ``audit_closed`` and ``gateway_started``
  (what verification reads: signatures, segment order, the clean end, the
  worker count) is stored as ``kind: "sealed"`` with
  ``nonce`` and ``data`` (base64): AES-256-GCM of the JSON object
  ``{"kind": ..., <fields>}`` with the record's seq (ASCII) as associated
  data.  ``seq``, ``ts`` and ``prev`` stay in clear and the chain is over the
  stored bytes, so integrity verifies without the key; reading needs it.

Without a writer every ``record()`` reaches the OS before it returns and a
failed write raises ``AuditError`` (tools, tests).  The gateway starts one of
two writers; with either, ``record()`` chains and queues, and the gateway
forwards a message only once the writer reports its record done:

* ``Writer`` (``[audit] writer = "thread"``): a thread writes in batches (and
  fsyncs in ``fsync`` mode) — the event loop never waits on the disk;
* ``LoopWriter`` (``writer = "inline"``, ``write`` durability): the event
  loop writes everything queued once per loop iteration, with one ``write``,
  then reports — no thread to wake, no hop back to the loop.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# the reader's side of the format lives in audit_chain; its names are this module's too
from gateway.edges.audit_chain import (
    CLEAR_KINDS,
    GENESIS,
    MAIN_CHAIN,
    FolderResult,
    Problem,
    VerifyResult,
    chains,
    format_anchor,
    iter_records,
    key_id,
    parse_anchor,
    read_public_key,
    segment_name,
    segments,
    verify,
    verify_folder,
    verify_lines,
)


class AuditError(Exception):
    pass


_second_cache: tuple[int, str] = (-1, "")


def _utc_us(now: float) -> str:
    """ISO 8601 UTC with microseconds; the date-and-second prefix is formatted once per second."""
    global _second_cache
    sec = int(now)
    if _second_cache[0] != sec:
        t = time.gmtime(sec)
        _second_cache = (sec, f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:"
                              f"{t.tm_sec:02d}.")
    return f"{_second_cache[1]}{int((now - sec) * 1_000_000):06d}Z"


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditError(f"{path} is not an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return key


class Writer:
    """Takes the disk off the event loop: a thread writes queued records in batches.

    ``AuditLog.record`` encodes a record and chains it on the caller's thread
    (cheap, and the chain stays in one place), then queues the bytes here and
    returns at once.  This thread writes everything queued with one
    ``write`` (and, in ``fsync`` mode, one ``fsync``: group commit) and
    reports the highest seq now in the OS (or on disk) through ``on_progress``.
    The gateway forwards a message only after that report covers its record.

    A failed write (disk full, I/O error) cuts any partial bytes back off the
    segment, keeps the batch, reports through ``on_failed`` and retries every
    ``retry_s``; nothing queued is dropped and the chain stays in order.
    While it fails, ``AuditLog.record`` refuses new records (fail closed).
    """

    def __init__(self, log: AuditLog, fsync: bool, on_progress: Callable[[int], None],
                 on_failed: Callable[[str], None], retry_s: float = 0.05,
                 max_queued_bytes: int = 64 * 1024 * 1024,
                 defer: Callable[[Callable[[], None]], object] | None = None) -> None:
        self.log = log
        self.fsync = fsync
        self.on_progress = on_progress
        self.on_failed = on_failed
        self.retry_s = retry_s
        self.max_queued_bytes = max_queued_bytes
        self.done_seq = log.seq  # highest seq written (write mode) or fsynced (fsync mode)
        self.failed: str | None = None
        self.batches = 0
        self._lock = threading.Lock()
        self._queue: list[bytes | Path] = []  # record lines, or a Path: rotate to that segment first
        self._queued_seq = log.seq
        self._queued_bytes = 0
        # a binary semaphore (a plain lock, released by the producer): waking the thread
        # costs one C-level call and no Python-level Condition machinery under the GIL
        self._signal = threading.Lock()
        self._signal.acquire()
        # With ``defer`` (the event loop's call_soon) the thread is woken once per loop
        # iteration, when the loop is about to go idle, not at every record: a woken
        # Python thread contends for the GIL at each system call the loop makes.
        self._defer = defer
        self._kick_pending = False
        self._unwoken = False  # records queued with wake=False wait for the next batch or flush()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    @property
    def lag(self) -> int:
        """Records queued but not yet reported done."""
        return self._queued_seq - self.done_seq

    def put(self, item: bytes | Path, seq: int, force: bool = False, wake: bool = True) -> None:
        if self._queued_bytes > self.max_queued_bytes and not force:
            raise AuditError(f"audit writer is {self._queued_bytes} bytes behind; refusing more")
        with self._lock:
            self._queue.append(item)
            self._queued_seq = seq
            if isinstance(item, bytes):
                self._queued_bytes += len(item)
        if not wake:  # nobody waits for it: it goes with the next batch, or at the next flush()
            self._unwoken = True
            return
        self._unwoken = False
        if self._defer is None:
            self._kick()
        elif not self._kick_pending:
            self._kick_pending = True
            self._defer(self._deferred_kick)

    def flush(self) -> None:
        """Wake the thread for records queued without a wake-up (called from the watch loop)."""
        if self._unwoken:
            self._unwoken = False
            self._kick()

    def _deferred_kick(self) -> None:
        self._kick_pending = False
        self._kick()

    def _kick(self) -> None:
        try:
            self._signal.release()
        except RuntimeError:
            pass  # already signalled and not yet taken

    def _run(self) -> None:
        try:  # never preempt the event loop on wake-up: it would only block on the GIL the loop holds
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_BATCH, os.sched_param(0))
        except (AttributeError, OSError):
            pass  # not Linux: plain priority
        batch: list[bytes | Path] = []  # taken from the queue, not yet written
        unsynced = False  # fsync mode: written to the OS, not yet on disk
        target = self.done_seq
        while True:
            if not self._stop:  # when stopping, drain without waiting for a wake-up
                self._signal.acquire(timeout=self.retry_s if batch or unsynced else -1)
            with self._lock:
                batch += self._queue
                self._queue = []
                target = self._queued_seq
            if not batch and not unsynced:
                if self._stop:
                    return
                continue
            error = self._write(batch)
            if error is None and self.fsync:
                unsynced = True
                try:
                    os.fsync(self.log.fd)
                    unsynced = False
                except OSError as exc:
                    error = f"audit fsync failed: {exc.strerror}"
            if error is not None:
                if self.failed is None:
                    self.failed = error
                    self.on_failed(error)
                if self._stop:
                    return  # shutting down on a failing disk: what is queued cannot be saved
                continue  # retried after ``retry_s``
            with self._lock:
                self._queued_bytes = sum(len(x) for x in self._queue if isinstance(x, bytes))
            self.failed = None
            self.batches += 1
            self.done_seq = target
            self.on_progress(target)

    def _write(self, batch: list[bytes | Path]) -> str | None:
        return _write_batch(self.log, batch)

    def close(self, timeout: float = 5.0) -> None:
        """Drain what is queued (unless the disk keeps failing), then stop."""
        self._stop = True
        self._kick()
        self._thread.join(timeout)


def _write_batch(log: AuditLog, batch: list[bytes | Path]) -> str | None:
    """Write ``batch`` in order, removing what is done; on failure the partial
    chunk is cut back off the segment and the reason returned (the rest stays)."""
    if batch and log.fault_file is not None and log.fault_file.exists():  # drills: injected full disk
        return "audit write failed: No space left on device (injected)"
    while batch:
        n = 0
        while n < len(batch) and isinstance(batch[n], bytes):
            n += 1
        if n:
            error = log._append(b"".join(batch[:n]))  # type: ignore[arg-type]
            if error is not None:
                return error
            del batch[:n]
        else:
            log._switch_segment(batch.pop(0))  # type: ignore[arg-type]
    return None


class LoopWriter:
    """``write`` durability on the event loop: the records of one loop iteration in one ``write``.

    ``put`` queues a record and asks the loop (``defer``: its ``call_soon``) to
    write once this iteration's work is done; then everything queued meanwhile
    goes to the OS with one ``write`` and ``on_progress`` reports the highest
    seq in it — on the loop, at once, so the messages waiting for those
    records are forwarded in the same turn.  The records of a read of fifty
    orders cost one system call, and there is no thread to wake and no hop
    back to the loop (``Writer`` costs both, per batch).  The price: a stall
    in the kernel's writeback stalls the loop (the session stores write on
    the loop already).

    Failures are handled as ``Writer`` handles them: the partial chunk is cut
    off, the batch kept, ``on_failed`` told, and the write retried every
    ``retry_s`` (``later``: the loop's ``call_later``); meanwhile
    ``AuditLog.record`` refuses new records.
    """

    fsync = False

    def __init__(self, log: AuditLog, on_progress: Callable[[int], None], on_failed: Callable[[str], None],
                 defer: Callable[[Callable[[], None]], object],
                 later: Callable[[float, Callable[[], None]], object], retry_s: float = 0.05,
                 max_queued_bytes: int = 64 * 1024 * 1024) -> None:
        self.log = log
        self.on_progress = on_progress
        self.on_failed = on_failed
        self.retry_s = retry_s
        self.max_queued_bytes = max_queued_bytes
        self.done_seq = log.seq  # highest seq in the OS
        self.failed: str | None = None
        self.batches = 0
        self._defer, self._later = defer, later
        self._queue: list[bytes | Path] = []  # record lines, or a Path: rotate to that segment first
        self._queued_seq = log.seq
        self._queued_bytes = 0
        self._scheduled = False  # a write is asked for (this iteration, or a retry)
        self._unwoken = False  # records queued with wake=False wait for the next write or flush()

    @property
    def lag(self) -> int:
        """Records queued but not yet reported done."""
        return self._queued_seq - self.done_seq

    def put(self, item: bytes | Path, seq: int, force: bool = False, wake: bool = True) -> None:
        if self._queued_bytes > self.max_queued_bytes and not force:
            raise AuditError(f"audit writer is {self._queued_bytes} bytes behind; refusing more")
        self._queue.append(item)
        self._queued_seq = seq
        if isinstance(item, bytes):
            self._queued_bytes += len(item)
        if not wake:  # nobody waits for it: it goes with the next write, or at the next flush()
            self._unwoken = True
            return
        self._unwoken = False
        if not self._scheduled:
            self._scheduled = True
            self._defer(self._scheduled_write)

    def flush(self) -> None:
        """Write records queued without a wake-up (called from the watch loop)."""
        if self._unwoken and not self._scheduled:
            self._unwoken = False
            self.write_now()

    def _scheduled_write(self) -> None:
        self._scheduled = False
        self.write_now()

    def write_now(self) -> None:
        """Everything queued, with one ``write``; then report it (or the failure)."""
        if not self._queue:
            return
        target = self._queued_seq
        error = _write_batch(self.log, self._queue)  # what is written leaves the queue
        if error is not None:
            self._queued_bytes = sum(len(x) for x in self._queue if isinstance(x, bytes))
            if self.failed is None:
                self.failed = error
                self.on_failed(error)
            if not self._scheduled:  # retried, not dropped
                self._scheduled = True
                self._later(self.retry_s, self._scheduled_write)
            return
        self._queued_bytes = 0
        self._unwoken = False
        self.failed = None
        self.batches += 1
        self.done_seq = target
        self.on_progress(target)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (unless the disk fails)."""
        self.write_now()


class AuditLog:
    def __init__(
        self,
        folder: Path,
        key: Ed25519PrivateKey | None = None,
        checkpoint_every: int = 1000,
        checkpoint_ms: float = 1000.0,
        max_segment_bytes: int = 64 * 1024 * 1024,
        max_segment_seconds: float = 86400.0,
    ) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.checkpoint_every = checkpoint_every
        self.checkpoint_ms = checkpoint_ms
        self.max_segment_bytes = max_segment_bytes
        self.max_segment_seconds = max_segment_seconds
        self._encoder = msgspec.json.Encoder()
        self.fault_file: Path | None = None
        self.aead: AESGCM | None = None  # set by the owner when records are encrypted at rest
        self._prev = GENESIS
        self._seq = 0
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        # the first tick of every run signs what is there (``tick``)
        self._signed_this_run = False
        if key is not None:
            pub = key.public_key()
            self.key_id = key_id(pub)
            pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            (folder / "audit.pub").write_bytes(pem)
        existing = segments(folder)
        self.segment = existing[-1][0] if existing else 1
        self.path = folder / segment_name(self.segment)
        truncated = self._recover(existing[-1][1]) if existing else 0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = self._disk_size = os.fstat(self._fd).st_size
        self.writer: Writer | LoopWriter | None = None
        self._closed = False
        self._opened = time.time()
        if truncated:
            self.record("recovery", truncated_bytes=truncated, segment=self.path.name)

    def _recover(self, path: Path) -> int:
        """Find the chain head; cut a torn last record. Returns the bytes cut."""
        data = path.read_bytes()
        cut = 0
        end = data.rfind(b"\n") + 1
        if end != len(data):
            cut = len(data) - end
            data = data[:end]
        lines = data.splitlines()
        while lines:  # a complete line that is not valid JSON is torn too
            try:
                last = msgspec.json.decode(lines[-1])
                break
            except msgspec.DecodeError:
                cut += len(lines[-1]) + 1
                lines.pop()
        else:
            last = None
        if cut:
            with open(path, "r+b") as f:
                f.truncate(sum(len(x) + 1 for x in lines))
        if last is not None:
            self._seq = int(last.get("seq", 0))
            self._prev = hashlib.sha256(lines[-1]).hexdigest()
        elif self.segment > 1:  # empty newest segment: continue from the previous one
            prev_path = self.folder / segment_name(self.segment - 1)
            if prev_path.exists():
                prev_lines = prev_path.read_bytes().splitlines()
                if prev_lines:
                    self._seq = int(msgspec.json.decode(prev_lines[-1]).get("seq", 0))
                    self._prev = hashlib.sha256(prev_lines[-1]).hexdigest()
        return cut

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def fd(self) -> int:
        return self._fd

    # -- writing -----------------------------------------------------------------
    def _write(self, kind: str, fields: dict[str, Any], force: bool = False, wake: bool = True) -> int:
        writer = self.writer
        if self._closed:
            raise AuditError("audit log is closed")
        if writer is not None and writer.failed is not None and not force:
            raise AuditError(writer.failed)
        seq = self._seq + 1
        if self.aead is not None and kind not in CLEAR_KINDS:
            nonce = os.urandom(12)
            sealed = self.aead.encrypt(nonce, self._encoder.encode({"kind": kind, **fields}), str(seq).encode())
            fields = {"nonce": base64.b64encode(nonce).decode(), "data": base64.b64encode(sealed).decode()}
            kind = "sealed"
        rec = {"seq": seq, "ts": _utc_us(time.time()), "kind": kind, **fields, "prev": self._prev}
        line = self._encoder.encode(rec)
        if writer is not None:
            writer.put(line + b"\n", seq, force, wake)
        else:
            if self.fault_file is not None and self.fault_file.exists():  # drills: an injected full disk
                raise AuditError("audit write failed: No space left on device (injected)")
            error = self._append(line + b"\n")
            if error is not None:
                raise AuditError(error)
        self._seq = seq
        self._prev = hashlib.sha256(line).hexdigest()
        self._size += len(line) + 1
        # every record but a checkpoint waits for the next one (segment_start too: a stream must
        # not end unsigned just because it rotated last)
        self._since_checkpoint = 0 if kind == "checkpoint" else self._since_checkpoint + 1
        return seq

    def _append(self, data: bytes) -> str | None:
        """Put ``data`` at the end of the segment, all or nothing; returns why it failed."""
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._disk_size)  # no torn record for the retry to follow
            except OSError:
                pass
            return f"audit write failed: {exc.strerror}"
        self._disk_size += len(data)
        return None

    def _switch_segment(self, path: Path) -> None:
        """Close the finished segment durably and open ``path`` (on the writer's thread when there is one)."""
        try:
            os.fsync(self._fd)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._disk_size = 0

    def start_writer(self, fsync: bool, on_progress: Callable[[int], None],
                     on_failed: Callable[[str], None],
                     defer: Callable[[Callable[[], None]], object] | None = None) -> Writer:
        """From now on ``record`` queues and a thread writes (see ``Writer``)."""
        writer = self.writer = Writer(self, fsync, on_progress, on_failed, defer=defer)
        return writer

    def start_loop_writer(self, on_progress: Callable[[int], None], on_failed: Callable[[str], None],
                          defer: Callable[[Callable[[], None]], object],
                          later: Callable[[float, Callable[[], None]], object]) -> LoopWriter:
        """From now on ``record`` queues and the event loop writes once per iteration (see ``LoopWriter``)."""
        writer = self.writer = LoopWriter(self, on_progress, on_failed, defer, later)
        return writer

    def record(self, kind: str, **fields: Any) -> int:
        """Append one record; returns its seq. Raises ``AuditError`` (the caller refuses)."""
        return self.record_fields(kind, fields)

    def record_fields(self, kind: str, fields: dict[str, Any], wake: bool = True) -> int:
        """``record`` with the fields as a dict; ``wake=False``: a record nobody waits for (an outcome)
        rides with the writer's next batch instead of waking it, within one ``tick`` at the latest."""
        seq = self._write(kind, fields, wake=wake)
        try:  # the record itself is in; housekeeping that fails now is retried on the next one
            if self.key is not None and self._since_checkpoint >= self.checkpoint_every:
                self.checkpoint()
            if self._size >= self.max_segment_bytes or time.time() - self._opened >= self.max_segment_seconds:
                self.rotate()
        except AuditError:
            pass
        return seq

    def checkpoint(self) -> None:
        if self.key is None or self._since_checkpoint == 0:
            return
        head_seq, head = self._seq, self._prev
        sig = base64.b64encode(self.key.sign(f"{head_seq}:{head}".encode())).decode()
        self._write("checkpoint", {"head_seq": head_seq, "head": head, "key_id": self.key_id, "sig": sig})
        self._signed_this_run = True
        self._last_checkpoint = time.monotonic()

    def tick(self) -> None:
        """Time-based checkpoint and the flush of unwoken records (called from the gateway's watch loop).

        The first tick of a run signs at once, not after ``checkpoint_ms``: a gateway that dies in its
        first second still leaves a stream that shows who wrote it (a verifier needs one signature)."""
        if self.writer is not None:
            self.writer.flush()
        if not self._signed_this_run or time.monotonic() - self._last_checkpoint >= self.checkpoint_ms / 1000:
            try:
                self.checkpoint()
            except AuditError:
                pass  # the next record() will fail loudly and refuse

    def rotate(self) -> None:
        self.checkpoint()
        old, new = self.path.name, self.folder / segment_name(self.segment + 1)
        if self.writer is not None:  # the switch and its first record are queued together
            self.writer.put(new, self._seq, force=True)
        else:
            self._switch_segment(new)
        self.segment += 1
        self.path = new
        self._size = 0
        self._opened = time.time()
        self._write("segment_start", {"segment": new.name, "previous_segment": old}, force=True)

    def close(self) -> None:
        """Clean shutdown: ``audit_closed`` and the checkpoint that signs it end the stream.

        A verifier requires that ending: without it, cutting the records after
        any checkpoint (or the newest segment) would leave a stream that looks
        complete.  When the stream cannot write, the end stays open and
        ``fixgw audit verify`` says so."""
        if self._closed:
            return
        try:
            if self.key is not None:
                self._write("audit_closed", {"segment": self.path.name})
            self.checkpoint()
        except AuditError:
            pass
        if self.writer is not None:
            self.writer.close()
        self._closed = True
        try:
            os.close(self._fd)
        except OSError:
            pass


def load_encryption_key(path: Path) -> AESGCM:
    """AES-256 key: 64 hex characters in a file nobody else can read."""
    import stat

    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuditError(f"{path} is readable by other users; chmod 600 {path}")
    raw = bytes.fromhex(path.read_text().strip())
    if len(raw) != 32:
        raise AuditError(f"{path}: an AES-256 key is 32 bytes (64 hex characters), not {len(raw)}")
    return AESGCM(raw)


def open_record(rec: dict[str, Any], aead: AESGCM | None) -> dict[str, Any]:
    """The readable record: decrypted when sealed (needs the key)."""
    if rec.get("kind") != "sealed":
        return rec
    if aead is None:
        raise AuditError("this audit stream is encrypted at rest: pass --key FILE to read it")
    try:
        plain = aead.decrypt(base64.b64decode(str(rec["nonce"])), base64.b64decode(str(rec["data"])),
                             str(rec["seq"]).encode())
    except Exception as exc:  # noqa: BLE001 - InvalidTag and friends: wrong key or altered record
        raise AuditError(f"record seq {rec.get('seq')} does not decrypt with this key ({type(exc).__name__})") from None
    inner = msgspec.json.decode(plain)
    return {"seq": rec["seq"], "ts": rec["ts"], **inner, "prev": rec["prev"]}


__all__ = ["CLEAR_KINDS", "GENESIS", "MAIN_CHAIN", "AuditError", "AuditLog", "FolderResult", "LoopWriter", "Problem",
           "VerifyResult", "Writer", "chains", "format_anchor", "iter_records", "key_id", "load_encryption_key",
           "load_or_create_key", "open_record", "parse_anchor", "read_public_key", "segment_name", "segments", "verify",
           "verify_folder", "verify_lines"]
