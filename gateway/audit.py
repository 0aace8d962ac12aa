"""Audit stream writer (edge): append-only JSON lines, SHA-256 hash chain.

Each record carries ``prev``, the SHA-256 of the previous record's line, so
an edit anywhere breaks every later link.  The full format (signed
checkpoints, rotation, encryption, fail-closed durability modes and the
compliance CLI) grows here with the audit-stream issue; what exists now is
the seam the proxy calls for every decision, and it already fails closed:
``record()`` raises ``AuditError`` when the write does not reach the OS,
and the caller refuses the message.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import msgspec

GENESIS = "0" * 64


class AuditError(Exception):
    pass


class AuditLog:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "audit-000001.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._prev = GENESIS
        self._seq = 0
        self._encoder = msgspec.json.Encoder()
        self._recover()

    def _recover(self) -> None:
        data = self.path.read_bytes()
        if not data:
            return
        end = data.rfind(b"\n")
        if end != len(data) - 1:  # torn last record after a crash: cut it
            os.ftruncate(self._fd, end + 1)
            data = data[: end + 1]
        lines = data.splitlines()
        if lines:
            last = lines[-1]
            self._prev = hashlib.sha256(last).hexdigest()
            self._seq = msgspec.json.decode(last).get("seq", len(lines))

    def record(self, kind: str, **fields: Any) -> int:
        """Append one record; returns its sequence number. Raises ``AuditError``."""
        self._seq += 1
        rec = {"seq": self._seq, "ts": _utc_us(time.time()), "kind": kind, **fields, "prev": self._prev}
        line = self._encoder.encode(rec) + b"\n"
        try:
            n = os.write(self._fd, line)
        except OSError as exc:
            self._seq -= 1
            raise AuditError(f"audit write failed: {exc.strerror}") from None
        if n != len(line):
            self._seq -= 1
            raise AuditError("audit write was short")
        self._prev = hashlib.sha256(line[:-1]).hexdigest()
        return self._seq

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass


def _utc_us(now: float) -> str:
    t = time.gmtime(int(now))
    micros = int((now % 1) * 1_000_000)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}."
        f"{micros:06d}Z"
    )


def verify(folder: Path) -> tuple[bool, str]:
    """Check the hash chain of every record in ``folder``."""
    prev = GENESIS
    count = 0
    for path in sorted(folder.glob("audit-*.jsonl")):
        for lineno, line in enumerate(path.read_bytes().splitlines(), 1):
            try:
                rec = msgspec.json.decode(line)
            except msgspec.DecodeError:
                return False, f"{path.name}:{lineno}: record is not valid JSON"
            if rec.get("prev") != prev:
                return False, f"{path.name}:{lineno}: record seq {rec.get('seq')} does not chain to the previous record"
            prev = hashlib.sha256(line).hexdigest()
            count += 1
    return True, f"{count} records, chain intact"
