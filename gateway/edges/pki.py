"""Development PKI: a CA, the gateway's server certificate, client identities.

``fixgw certs init --dir DIR`` and ``fixgw certs issue ...`` (DESIGN §5).
Client certificates carry exactly one URI SAN,
``spiffe://<trust-domain>/client/<name>``; the trust domain is recorded in
the CA certificate's own URI SAN so ``issue`` needs no other input.
What an identity may do is decided by the gateway config, never by the
certificate: ``issue`` prints the matching registry snippet.

Private keys are written with mode 0600 and never printed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_TRUST_DOMAIN = "fixgw.dev"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class PKIError(Exception):
    """A user mistake with certificates; the message says what to do."""


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise PKIError(f"--key-type {key_type!r} is not valid; use 'ec' (ECDSA P-256) or 'rsa' (RSA 2048)")


def _write_key(path: Path, key: PrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class CA:
    cert: x509.Certificate
    key: PrivateKey
    trust_domain: str


def load_ca(folder: Path) -> CA:
    crt, key = folder / "ca.crt", folder / "ca.key"
    if not crt.exists() or not key.exists():
        raise PKIError(
            f"no CA in {folder} (missing {crt.name if not crt.exists() else key.name}); "
            f"create one with: fixgw certs init --dir {folder}"
        )
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
    if not isinstance(loaded, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise PKIError(f"{key}: CA key must be EC or RSA")
    trust_domain = DEFAULT_TRUST_DOMAIN
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if uris and uris[0].startswith("spiffe://"):
            trust_domain = uris[0][len("spiffe://") :].rstrip("/")
    except x509.ExtensionNotFound:
        pass
    return CA(cert, loaded, trust_domain)


def init(folder: Path, trust_domain: str = DEFAULT_TRUST_DOMAIN, days: int = 825) -> list[Path]:
    """Create the dev CA and gateway certificate if missing. Idempotent."""
    folder.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    if not (folder / "ca.crt").exists() or not (folder / "ca.key").exists():
        key = _new_key("ec")
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fixgw dev CA ({trust_domain})")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(folder / "ca.key", key)
        _write_cert(folder / "ca.crt", cert)
        created += [folder / "ca.crt", folder / "ca.key"]
    ca = load_ca(folder)
    if not (folder / "gateway.crt").exists() or not (folder / "gateway.key").exists():
        key = _new_key("ec")
        cert = _sign(
            ca,
            key,
            "fixgw gateway",
            [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.UniformResourceIdentifier(f"spiffe://{ca.trust_domain}/gateway/fixgw"),
            ],
            server=True,
            days=days,
        )
        _write_key(folder / "gateway.key", key)
        _write_cert(folder / "gateway.crt", cert)
        created += [folder / "gateway.crt", folder / "gateway.key"]
    return created


def _sign(
    ca: CA,
    key: PrivateKey,
    common_name: str,
    sans: list[x509.GeneralName],
    server: bool,
    days: int,
    not_before: dt.datetime | None = None,
    valid_for: dt.timedelta | None = None,
) -> x509.Certificate:
    now = _now()
    start = not_before or (now - dt.timedelta(minutes=5))
    end = start + (valid_for if valid_for is not None else dt.timedelta(days=days))
    usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )


def issue(
    folder: Path,
    name: str,
    key_type: str = "ec",
    days: int = 397,
    kind: str = "client",
    server: bool = False,
    extra_sans: list[x509.GeneralName] | None = None,
    uri: str | None = None,
    not_before: dt.datetime | None = None,
    valid_for: dt.timedelta | None = None,
) -> tuple[Path, Path, str]:
    """Issue ``DIR/NAME.crt`` and ``DIR/NAME.key``; returns the paths and the identity URI."""
    if not _NAME_RE.match(name):
        raise PKIError(
            f"--name {name!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if name in ("ca", "gateway"):
        raise PKIError(f"--name {name!r} is reserved for the CA and the gateway certificate")
    ca = load_ca(folder)
    key = _new_key(key_type)
    identity = uri or f"spiffe://{ca.trust_domain}/{kind}/{name}"
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity)]
    if extra_sans:
        sans += extra_sans
    cert = _sign(ca, key, name, sans, server=server, days=days, not_before=not_before, valid_for=valid_for)
    _write_key(folder / f"{name}.key", key)
    _write_cert(folder / f"{name}.crt", cert)
    return folder / f"{name}.crt", folder / f"{name}.key", identity


def revoke(folder: Path, names: list[str]) -> Path:
    """Add the certificates ``DIR/NAME.crt`` to the CA's CRL (``DIR/ca.crl``, PEM)."""
    ca = load_ca(folder)
    crl_path = folder / "ca.crl"
    revoked: dict[int, dt.datetime] = {}
    number = 1  # CRLNumber: each CRL above the last, so a gateway can refuse a rollback
    if crl_path.exists():
        old = x509.load_pem_x509_crl(crl_path.read_bytes())
        for entry in old:
            revoked[entry.serial_number] = entry.revocation_date_utc
        try:
            number = old.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
        except x509.ExtensionNotFound:
            pass
    now = _now()
    for name in names:
        path = folder / f"{name}.crt"
        if not path.exists():
            raise PKIError(f"no certificate {path} to revoke")
        revoked.setdefault(x509.load_pem_x509_certificate(path.read_bytes()).serial_number, now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(minutes=1))
        .next_update(now + dt.timedelta(days=7))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial, when in revoked.items():
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(ca.key, hashes.SHA256())
    tmp = crl_path.with_suffix(".tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, crl_path)
    return crl_path


def registry_snippet(identity: str, comp_ids: list[str], roles: list[str]) -> str:
    """The config lines that grant ``identity`` its CompIDs and roles."""
    ids = ", ".join(f'"{c}"' for c in comp_ids)
    rs = ", ".join(f'"{r}"' for r in roles)
    return f'[[identities]]\nid = "{identity}"\ncomp_ids = [{ids}]\nroles = [{rs}]\n'
