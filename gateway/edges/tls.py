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
        raise TLSConfigError(
            f"{what}: {cert} / {key} do not form a usable certificate and key ({exc.reason})"
        ) from None


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


class TLSRefused(Exception):
    """The handshake failed; ``reason`` is OpenSSL's, e.g. CERTIFICATE_VERIFY_FAILED."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ServerTLS:
    """Server side of one TLS connection over memory BIOs (sans-IO).

    ``receive(data)`` takes ciphertext from the socket and returns plaintext
    for the application; ``pending_output()`` returns ciphertext to write.
    Owning this layer (instead of the event loop's) makes every handshake
    failure visible with OpenSSL's reason so it can be audited.
    """

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self._in, self._out, server_side=True)
        self.handshake_done = False
        self.peer_closed = False

    def receive(self, data: bytes) -> bytes:
        """Feed ciphertext; returns decrypted application bytes (maybe empty).

        Raises ``TLSRefused`` when the handshake fails.
        """
        self._in.write(data)
        if not self.handshake_done:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            except ssl.SSLError as exc:
                raise TLSRefused(str(exc.reason or exc.__class__.__name__)) from None
            self.handshake_done = True
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.peer_closed = True
                break
            except ssl.SSLError as exc:
                raise TLSRefused(str(exc.reason or exc.__class__.__name__)) from None
            if not chunk:
                self.peer_closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, data: bytes) -> bytes:
        """Encrypt application bytes; returns ciphertext to write."""
        self.obj.write(data)
        return self._out.read()

    def pending_output(self) -> bytes:
        return self._out.read()

    def close_notify(self) -> bytes:
        try:
            self.obj.unwrap()
        except (ssl.SSLError, ValueError):
            pass
        return self._out.read()
