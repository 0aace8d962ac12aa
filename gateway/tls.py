"""TLS contexts for both legs (edge).

Client legs follow the FIX Trading Community's FIX-over-TLS guidance:
TLS 1.2 minimum (1.3 preferred by negotiation), no compression, no
renegotiation, AEAD cipher suites only, and a client certificate verified
against the configured CA bundle.  There is no plaintext client listener.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

#: TLS 1.2 suites: ECDHE key exchange with an AEAD cipher only. TLS 1.3
#: suites are all AEAD and are left at OpenSSL's defaults.
AEAD_CIPHERS_TLS12 = (
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
)


class TLSConfigError(Exception):
    pass


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_ciphers(AEAD_CIPHERS_TLS12)


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path, what: str) -> None:
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise TLSConfigError(f"{what}: cannot read {exc.filename}") from None
    except ssl.SSLError as exc:
        raise TLSConfigError(f"{what}: {cert} / {key} do not form a usable certificate and key ({exc.reason})") from None


def _load_ca(ctx: ssl.SSLContext, ca: Path, what: str) -> None:
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except FileNotFoundError:
        raise TLSConfigError(f"{what}: cannot read CA bundle {ca}") from None
    except ssl.SSLError as exc:
        raise TLSConfigError(f"{what}: {ca} is not a PEM CA bundle ({exc.reason})") from None


def server_context(cert: Path, key: Path, ca: Path, require_client_cert: bool = True) -> ssl.SSLContext:
    """Context for the client-facing listener: mutual TLS, client cert required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    _load_chain(ctx, cert, key, "listener certificate")
    _load_ca(ctx, ca, "listener client CA")
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(
    ca: Path | None,
    cert: Path | None = None,
    key: Path | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """Context for an exchange leg (or a test client): verifies the server."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    if ca is not None:
        _load_ca(ctx, ca, "upstream CA")
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert is not None and key is not None:
        _load_chain(ctx, cert, key, "client certificate")
    return ctx


def peer_uri_sans(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> list[str]:
    """URI SANs of the verified peer certificate (empty when there is none)."""
    if ssl_object is None:
        return []
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return []
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))
