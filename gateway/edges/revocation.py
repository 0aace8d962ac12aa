"""Revocation data (edge): CRL and identity denylist, reloaded on change.

The CRL (PEM or DER) must be signed by the listener CA; a CRL that does not
verify is not used.  At start-up an unreadable CRL or denylist is a config
error (fail closed); later, a file that cannot be read keeps the last good
data in force and raises an alert in the audit stream, so a half-written
file never opens the door.

A CRL may only move forward.  An older CRL, validly signed, is the classic
way to un-revoke a certificate: so a CRL whose CRLNumber is lower than the
one in force, that has no CRLNumber when the one in force had one, that
has the same CRLNumber but other contents, or whose thisUpdate is older, is
refused (``check_forward``).  What was in force is remembered per issuing
key in ``state_dir/crl-state.json`` (``CRLMarks``), so a restart does not
forget it either: with a rolled-back CRL on disk the gateway does not start.
A CRL past its nextUpdate is stale; the watch alerts, and with
``[revocation] stale_crl = "refuse"`` refuses every client certificate until
a fresh one loads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization


class RevocationError(Exception):
    pass


@dataclass(frozen=True)
class CRLInfo:
    """What the gateway takes from a CRL that verified."""

    serials: frozenset[int]
    this_update: dt.datetime
    next_update: dt.datetime | None
    number: int | None  # the CRLNumber extension (RFC 5280 §5.2.3), when present
    issuer_key: str  # SHA-256 of the verifying CA's public key: marks are kept per issuing key


@dataclass(frozen=True)
class Revoked:
    serials: frozenset[int] = frozenset()
    denylist: frozenset[str] = frozenset()
    crl_next_update: dt.datetime | None = None


def _key_id(ca: x509.Certificate) -> str:
    der = ca.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def load_crl(path: Path, cas: list[x509.Certificate]) -> CRLInfo:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RevocationError(f"{path}: cannot read CRL: {exc.strerror}") from None
    try:
        crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise RevocationError(f"{path}: not a PEM or DER CRL ({exc})") from None
    issuer = next((ca for ca in cas if crl.issuer == ca.subject and _verifies(crl, ca)), None)
    if issuer is None:
        raise RevocationError(f"{path}: CRL is not signed by the listener CA")
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    except ValueError as exc:  # a malformed extension
        raise RevocationError(f"{path}: CRL extensions cannot be read ({exc})") from None
    return CRLInfo(frozenset(r.serial_number for r in crl), crl.last_update_utc, crl.next_update_utc, number,
                   _key_id(issuer))


def _verifies(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a CA key type that cannot sign CRLs
        return False


@dataclass(frozen=True)
class CRLMark:
    """The newest CRL accepted from one issuing key."""

    number: int | None
    this_update: float  # epoch seconds
    serials_sha256: str

    @staticmethod
    def of(info: CRLInfo) -> CRLMark:
        digest = hashlib.sha256(",".join(str(s) for s in sorted(info.serials)).encode()).hexdigest()
        return CRLMark(info.number, info.this_update.timestamp(), digest)


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_forward(path: Path, info: CRLInfo, mark: CRLMark | None) -> None:
    """Raise RevocationError when ``info`` is not at least as new as ``mark`` (a rollback)."""
    if mark is None:
        return
    new = CRLMark.of(info)
    hint = "publish a newer CRL from the CA"
    if mark.number is not None and new.number is None:
        raise RevocationError(f"{path}: CRL has no CRLNumber, the CRL in force has CRLNumber {mark.number}: "
                              f"refused as a possible rollback ({hint})")
    if mark.number is not None and new.number is not None:
        if new.number < mark.number:
            raise RevocationError(f"{path}: CRLNumber {new.number} is lower than {mark.number}, the CRL in force: "
                                  f"refused as a rollback ({hint})")
        if new.number == mark.number and new.serials_sha256 != mark.serials_sha256:
            raise RevocationError(f"{path}: CRLNumber {new.number} is the one in force but lists other "
                                  f"certificates: refused ({hint}, with a higher CRLNumber)")
    if new.this_update < mark.this_update:
        raise RevocationError(f"{path}: CRL thisUpdate {_iso(new.this_update)} is older than "
                              f"{_iso(mark.this_update)}, the CRL in force: refused as a rollback ({hint})")


class CRLMarks:
    """``state_dir/crl-state.json``: the newest CRL accepted per issuing key, so rollbacks stay
    refused across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.marks: dict[str, CRLMark] = {}
        try:
            raw = json.loads(path.read_text()) if path.exists() else {}
            for key, m in raw.items():
                number = None if m["number"] is None else int(m["number"])
                self.marks[str(key)] = CRLMark(number, float(m["this_update"]), str(m["serials_sha256"]))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RevocationError(f"{path}: cannot read the CRL state ({exc!r}); it records the newest CRL "
                                  "accepted, to refuse rollbacks — restore it, or delete it to trust the CRL "
                                  "on disk as the newest") from None

    def get(self, info: CRLInfo) -> CRLMark | None:
        return self.marks.get(info.issuer_key)

    def advance(self, info: CRLInfo) -> None:
        """Remember ``info`` as the newest (after ``check_forward`` passed); raises OSError."""
        self.marks[info.issuer_key] = CRLMark.of(info)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")  # workers share state_dir
        tmp.write_text(json.dumps({k: vars(m) for k, m in self.marks.items()}, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def load_denylist(path: Path) -> frozenset[str]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RevocationError(f"{path}: cannot read denylist: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RevocationError(f"{path}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 (the denylist is "
                              "UTF-8 text, one identity URI per line)") from None
    return frozenset(s for line in text.splitlines() if (s := line.split("#", 1)[0].strip()))


#: what says a watched file changed: modification time, size, inode and change time
Stamp = tuple[int, int, int, int]


def stamp(path: Path | None) -> Stamp | None:
    """What changes when ``path`` is written or replaced (None: absent or unreadable).

    Not the modification time alone: file times move in coarse kernel ticks, so a writer that
    truncates and then writes (``Path.write_text``, an editor, ``>`` in a shell) can leave the same
    time on the truncated and the written file — and a watch that read the empty file in
    between would never read the written one.  The size tells those two apart; the inode tells
    an atomic replacement (rename over) from the file it replaced."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns
