"""Revocation data (edge): CRL and identity denylist, reloaded on change.

The CRL (PEM or DER) must be signed by the listener CA; a CRL that does not
verify is not used.  At start-up an unreadable CRL or denylist is a config
error (fail closed); later, a file that cannot be read keeps the last good
data in force and raises an alert in the audit stream, so a half-written
file never opens the door.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509


class RevocationError(Exception):
    pass


@dataclass(frozen=True)
class Revoked:
    serials: frozenset[int] = frozenset()
    denylist: frozenset[str] = frozenset()
    crl_next_update: dt.datetime | None = None


def load_crl(path: Path, cas: list[x509.Certificate]) -> tuple[frozenset[int], dt.datetime | None]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RevocationError(f"{path}: cannot read CRL: {exc.strerror}") from None
    try:
        crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise RevocationError(f"{path}: not a PEM or DER CRL ({exc})") from None
    if not any(
        crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
        for ca in cas
    ):
        raise RevocationError(f"{path}: CRL is not signed by the listener CA")
    return frozenset(r.serial_number for r in crl), crl.next_update_utc


def load_denylist(path: Path) -> frozenset[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise RevocationError(f"{path}: cannot read denylist: {exc.strerror}") from None
    return frozenset(s for line in lines if (s := line.split("#", 1)[0].strip()))


def mtime(path: Path | None) -> float | None:
    if path is None:
        return None
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return None
