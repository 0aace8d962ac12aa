"""Reading and verifying the audit stream: the reader's side of the format, with no writer in it.

``gateway.edges.audit`` writes the stream; this module says what a stream
must look like to be believed, so a third party can follow it line by line.
A chain (one folder of segments; one per worker with ``[gateway] workers`` >
1) verifies when:

1. it holds at least one record, in segments numbered 1, 2, 3 … without gaps;
2. every line is JSON, ``seq`` runs 1, 2, 3 … and ``prev`` is the SHA-256 of
   the line before (64 zeros for the first);
3. every ``checkpoint`` covers the record before it, names the auditor's key
   (``key_id``) and its Ed25519 signature verifies with the key the auditor
   holds — passed in, never read from beside the data (whoever can rewrite
   the folder can rewrite an ``audit.pub`` in it too);
4. at least one checkpoint is signed: a chain without one proves nothing
   about who wrote it (anyone can compute SHA-256);
5. it ends *closed*: an ``audit_closed`` record and the checkpoint that signs
   it, which is what a clean shutdown writes.  A stream that ends otherwise
   has an *open tail* — the gateway is running or crashed, or records after
   a checkpoint (or the newest segment) were cut off: it is reported and
   fails unless the auditor allows it (a live gateway's stream);
6. the set of chains is whole: no ``worker-K`` folder is missing below the
   highest one, nor below the worker count a ``gateway_started`` record of
   any chain names (those records are kept in clear for this);
7. against an *anchor* kept elsewhere (``chain=seq:hash`` lines that an
   earlier verification printed): every anchored chain is present, reaches
   the anchored seq, and its record there has the anchored hash.

What no verifier can see without an anchor: a stream cut back to an earlier
clean shutdown (every such prefix is itself a valid, closed stream).  That is
why ``fixgw audit verify`` prints the anchor and takes it back.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64
#: record kinds never encrypted: what verification needs without the key
CLEAR_KINDS = frozenset({"checkpoint", "segment_start", "recovery", "audit_closed", "gateway_started"})
SEGMENT_RE = re.compile(r"^audit-(\d{6})\.jsonl$")
#: the chain of an audit folder that holds its segments itself (one gateway process)
MAIN_CHAIN = "main"
_ANCHOR_RE = re.compile(r"^([A-Za-z0-9_.-]+)=(\d+):([0-9a-f]{64})$")

Head = tuple[int, str]  # a record's seq and the SHA-256 of its line


def segment_name(n: int) -> str:
    return f"audit-{n:06d}.jsonl"


def segments(folder: Path) -> list[tuple[int, Path]]:
    out = []
    for p in folder.iterdir():
        m = SEGMENT_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def key_id(pub: Ed25519PublicKey) -> str:
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def read_public_key(path: Path) -> Ed25519PublicKey:
    """The auditor's copy of the gateway's audit key (PEM). Raises ``ValueError`` saying what is wrong."""
    try:
        loaded = serialization.load_pem_public_key(path.read_bytes())
    except ValueError:
        raise ValueError(f"{path}: not a PEM public key") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return loaded


def chains(folder: Path) -> list[tuple[str, Path]]:
    """The hash chains in an audit folder, by name: ``main`` (segments in the folder itself) and one
    ``worker-K`` subfolder per worker.  Both kinds can be present (the worker count changed)."""
    workers = sorted((int(p.name[7:]), p) for p in folder.glob("worker-*") if p.name[7:].isdigit() and p.is_dir())
    out = [(f"worker-{k}", p) for k, p in workers]
    if segments(folder) or not out:
        out.insert(0, (MAIN_CHAIN, folder))
    return out


def iter_records(folder: Path) -> Iterator[tuple[str, int, bytes, dict[str, Any] | None]]:
    """(segment name, line number, line bytes, decoded record or None) in order."""
    for _, path in segments(folder):
        data = path.read_bytes()
        lines = data.split(b"\n")
        torn = lines.pop() if lines else b""
        for i, line in enumerate(lines, 1):
            yield path.name, i, line, _object(line)
        if torn:
            yield path.name, len(lines) + 1, torn, None


def _object(line: bytes) -> dict[str, Any] | None:
    """The record on ``line``, or None when it is not a JSON object (torn, garbled, or an array ...)."""
    try:
        rec = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return None
    return rec if isinstance(rec, dict) else None


@dataclass
class Problem:
    segment: str
    line: int
    seq: int | None
    what: str

    def __str__(self) -> str:
        if self.line == 0:
            return f"{self.segment}: {self.what}"
        where = f"{self.segment} record {self.line}" + (f" (seq {self.seq})" if self.seq is not None else "")
        return f"{where}: {self.what}"


@dataclass
class VerifyResult:
    ok: bool
    records: int
    last_checkpoint: int | None  # seq of the last checkpoint record
    problem: Problem | None
    head: Head | None = None  # the last record: what an anchor keeps
    closed: bool = False  # ends in audit_closed + the checkpoint that signs it (a clean shutdown)
    open_tail: str | None = None  # why the end is open, when it is and that was allowed
    workers: int = 0  # the most workers a gateway_started record of this chain names
    anchored: bool = True  # checkpoints checked against an auditor's key (False: hash links only)

    def summary(self) -> str:
        if not self.ok:
            return f"FAILED: {self.problem}"
        if not self.anchored:
            return (f"{self.records} records, hash chain intact (links only: checkpoint signatures and the "
                    "clean end NOT checked; pass --pubkey KEY, taken out of band, for that)")
        text = f"{self.records} records, chain intact, last checkpoint at seq {self.last_checkpoint}"
        return text + (", closed cleanly" if self.closed else f"; {self.open_tail} (allowed)")


def _json(line: bytes) -> bool:
    try:
        msgspec.json.decode(line)
        return True
    except msgspec.DecodeError:
        return False


def _failed(count: int, last_cp: int | None, where: tuple[str, int], seq: int | None, what: str) -> VerifyResult:
    return VerifyResult(False, count, last_cp, Problem(where[0], where[1], seq, what))


def verify(folder: Path, pubkey: Ed25519PublicKey | None, allow_open_tail: bool = False, expect: Head | None = None,
           progress: bool = False) -> VerifyResult:
    """One chain's folder: segment numbering, then ``verify_lines`` over its records (checks 1-5 and 7)."""
    segs = segments(folder)
    for idx, (num, path) in enumerate(segs):
        if idx == 0 and num != 1:
            return _failed(0, None, (path.name, 0), None, f"segments before {path.name} are missing")
        if idx > 0 and num != segs[idx - 1][0] + 1:
            return _failed(0, None, (path.name, 0), None,
                           f"gap between segments: {segment_name(segs[idx - 1][0] + 1)} is missing")
    return verify_lines(iter_records(folder), pubkey, allow_open_tail, expect, progress, str(folder))


def verify_lines(records: Iterable[tuple[str, int, bytes, dict[str, Any] | None]], pubkey: Ed25519PublicKey | None,
                 allow_open_tail: bool = False, expect: Head | None = None, progress: bool = False,
                 name: str = "the stream") -> VerifyResult:
    """The chain checks over any ordered sequence of stored lines (segments, or a NATS stream).

    ``pubkey`` None: the hash links only (``fixgw audit verify DIR`` without ``--pubkey``, DESIGN §5) —
    nothing about who wrote the stream or where it ends is claimed, and no key beside the data is read."""
    kid = key_id(pubkey) if pubkey is not None else None
    prev = GENESIS
    expected_seq = 1
    count = 0
    last_cp: int | None = None
    last_kind: object = None
    closed = False
    workers = 0
    where = (name, 0)
    for seg, line_no, line, rec in records:
        where = (seg, line_no)
        if rec is None:
            what = "not a JSON object" if _json(line) else \
                "truncated: the last record is incomplete" if not line.endswith(b"}") else "not valid JSON"
            return _failed(count, last_cp, where, None, what)
        seq = rec.get("seq")
        if seq != expected_seq:
            return _failed(count, last_cp, where, seq if isinstance(seq, int) else None,
                           f"sequence gap or reorder: expected seq {expected_seq}, found {seq}")
        if rec.get("prev") != prev:
            return _failed(count, last_cp, where, seq,
                           "hash mismatch: prev does not match the SHA-256 of the previous record")
        kind = rec.get("kind")
        if kind == "checkpoint":
            if rec.get("head") != prev or rec.get("head_seq") != expected_seq - 1:
                return _failed(count, last_cp, where, seq, "checkpoint does not cover the record before it")
            if pubkey is None:
                pass  # unanchored: the link is checked above, the signature cannot be
            elif rec.get("key_id") != kid:
                return _failed(count, last_cp, where, seq, f"checkpoint signed by key {rec.get('key_id')}, not by "
                                                           f"the key given ({kid}): bad checkpoint signature")
            else:
                try:
                    pubkey.verify(base64.b64decode(str(rec.get("sig", ""))),
                                  f"{rec.get('head_seq')}:{rec.get('head')}".encode())
                except (InvalidSignature, ValueError):
                    return _failed(count, last_cp, where, seq, "bad checkpoint signature")
            last_cp = seq
            closed = last_kind == "audit_closed"
        else:
            closed = False
            n = rec.get("workers")
            if kind == "gateway_started" and isinstance(n, int) and not isinstance(n, bool):
                workers = max(workers, n)
        prev = hashlib.sha256(line).hexdigest()
        if expect is not None and seq == expect[0] and prev != expect[1]:
            return _failed(count, last_cp, where, seq,
                           f"does not match the anchor (seq {expect[0]} had hash {expect[1][:16]}…, now "
                           f"{prev[:16]}…): the stream was rewritten")
        last_kind = kind
        expected_seq += 1
        count += 1
        if progress and count % 100_000 == 0:
            print(f"  {count} records verified ({seg})", flush=True)
    if pubkey is None:
        if count == 0:
            return _failed(0, None, where, None, "no records: the audit stream is empty (its segments were deleted?)")
        return VerifyResult(True, count, last_cp, None, (count, prev), closed, None, workers, anchored=False)
    return _ending(count, last_cp, where, prev, closed, workers, allow_open_tail, expect)


def _ending(count: int, last_cp: int | None, where: tuple[str, int], prev: str, closed: bool, workers: int,
            allow_open_tail: bool, expect: Head | None) -> VerifyResult:
    """Checks 1, 4, 5 and 7 at the end of the walk: something is there, signed, closed, as long as anchored."""
    if count == 0:
        return _failed(0, None, where, None, "no records: the audit stream is empty (its segments were deleted?)")
    if expect is not None and count < expect[0]:
        return _failed(count, last_cp, where, count,
                       f"the stream ends at seq {count}, before the anchored head at seq {expect[0]}: "
                       "records were removed from its end")
    if last_cp is None:
        return _failed(count, None, where, count,
                       "no signed checkpoint: nothing in this stream is signed with the key given, so nothing "
                       "shows the gateway wrote it")
    open_tail = None
    if not closed:
        tail = count - last_cp
        open_tail = (f"open tail: {tail} records after the last signed checkpoint (seq {last_cp}) are not signed"
                     if tail else f"open tail: the stream ends at checkpoint seq {last_cp} without the "
                                  "audit_closed record a clean shutdown writes")
        if not allow_open_tail:
            return _failed(count, last_cp, where, count,
                           f"{open_tail} — the gateway is running or did not shut down cleanly, or records "
                           "were cut off the end (--allow-open-tail accepts a live stream)")
    return VerifyResult(True, count, last_cp, None, (count, prev), closed, open_tail, workers)


@dataclass
class FolderResult:
    """Every chain of an audit folder, and what is wrong with the set of them."""

    chains: list[tuple[str, VerifyResult]]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.ok for _, r in self.chains)

    def anchor(self) -> dict[str, Head]:
        return {name: r.head for name, r in self.chains if r.head is not None}


def verify_folder(folder: Path, pubkey: Ed25519PublicKey | None, allow_open_tail: bool = False,
                  anchor: Mapping[str, Head] | None = None, progress: bool = False) -> FolderResult:
    """Every chain in ``folder`` (``chains``), then check 6 (the set of chains) and the anchor's chain names."""
    anchor = anchor or {}
    found = chains(folder)
    result = FolderResult([(name, verify(path, pubkey, allow_open_tail, anchor.get(name), progress))
                           for name, path in found])
    names = {name for name, _ in found}
    indices = [int(name[7:]) for name in names if name.startswith("worker-")]
    claimed = max((r.workers for _, r in result.chains), default=0)
    for k in range(max(claimed, max(indices, default=-1) + 1)):
        if f"worker-{k}" not in names:
            why = f"a gateway_started record names {claimed} workers" if k < claimed else \
                f"worker-{max(indices)} exists"
            result.problems.append(f"chain worker-{k} is missing ({why}): a worker's chain was deleted")
    for name in sorted(set(anchor) - names):
        result.problems.append(f"chain {name} is in the anchor but missing from {folder}: it was deleted")
    return result


def format_anchor(heads: Mapping[str, Head]) -> list[str]:
    """``chain=seq:hash`` lines: what to keep elsewhere and pass back with ``--expect-head``/``--anchor``."""
    return [f"{name}={seq}:{digest}" for name, (seq, digest) in sorted(heads.items())]


def parse_anchor(text: str, source: str) -> dict[str, Head]:
    """The lines of an anchor (``chain=seq:hash``; an ``anchor `` prefix, blank lines and ``#`` comments
    are skipped).  Raises ``ValueError`` naming ``source``, the line and the form that is valid."""
    out: dict[str, Head] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip().removeprefix("anchor ").strip()
        if not line or line.startswith("#"):
            continue
        m = _ANCHOR_RE.match(line)
        if m is None:
            raise ValueError(f"{source} line {n}: {line[:80]!r} is not CHAIN=SEQ:SHA256 "
                             f"(e.g. {MAIN_CHAIN}=1234:<64 hex> or worker-0=1234:<64 hex>)")
        out[m.group(1)] = (int(m.group(2)), m.group(3))
    return out
