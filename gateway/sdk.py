"""Client SDK: an asyncio FIX client an algo engine or OMS can use in a few lines.

    from gateway.client import FixClient, load_signer

    client = await FixClient.connect(
        "127.0.0.1", 9880, cert="certs/dev/algo1.crt", key="certs/dev/algo1.key", ca="certs/dev/ca.crt",
        sender_comp_id="ALGO1", target_comp_id="FIXGW",
        signer=load_signer("ed25519", "keys/algo1.key"),   # signs every message (DESIGN §4)
    )
    await client.send("D", [(11, "O1"), (54, "1"), (55, "INTC"), (38, "100"), (40, "2"), (44, "10.5")])
    async for msg in client:              # application messages, in sequence
        print(msg.msg_type, msg.get(150))

It reuses the gateway's own session core in the initiator role, so
heartbeats, test requests, gap detection, resends and sequence numbers
behave exactly as on the gateway's legs.  People add ``username``,
``password`` and ``totp_secret`` (Username(553), Password(554) = password
followed by the current TOTP code).  Pass a ``store`` (e.g.
``gateway.store.FileStore``) to keep sequence numbers across restarts.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.core.fix import signature
from gateway.core.fix import tags as T
from gateway.core.fix.codec import Field, Message
from gateway.core.fix.dictionary import standard_validator
from gateway.core.fix.events import AppMessageReceived, Disconnected, Event, LoggedOn, LoggedOut, LogonRefused
from gateway.core.fix.session import Role, Session, SessionConfig
from gateway.core.fix.signature import Signer, VerifyKey
from gateway.core.fix.store import MemoryStore, SessionStore
from gateway.core.fix.utctime import format_utc_timestamp
from gateway.core.fix.versions import session_appl_ver_id, timestamp_precision
from gateway.edges import tls
from gateway.shells.legs import SessionProtocol

__all__ = ["FixClient", "LogonFailed", "load_signer", "now_utc"]


class LogonFailed(ConnectionError):
    """The gateway closed the connection or logged us out instead of answering our Logon."""


def load_signer(scheme: str, path: str | Path) -> Signer:
    """A ``Signer`` from ``fixgw keys new`` output: an Ed25519 private key (PEM) or an HMAC secret (hex)."""
    data = Path(path).read_bytes()
    if scheme == "ed25519":
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return Signer("ed25519", key)
    if scheme == "hmac-sha256":
        return Signer("hmac-sha256", bytes.fromhex(data.decode().strip()))
    raise ValueError(f"scheme {scheme!r}; valid: ed25519, hmac-sha256")


def now_utc() -> str:
    """Current UTCTimestamp text, e.g. for TransactTime(60)."""
    return format_utc_timestamp(time.time()).decode()


def _b(v: str | bytes | int | float) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


class _ClientProtocol(SessionProtocol):
    def __init__(self, client: FixClient) -> None:
        super().__init__()
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.session = self.client.session
        self.session.connection_made(time.time())
        self.pump()

    def data_received(self, data: bytes) -> None:
        assert self.session is not None
        self.session.receive_data(data, time.time())
        self.pump()

    def on_event(self, event: Event, now: float) -> None:
        self.client._on_event(event)

    def on_closed(self, exc: Exception | None) -> None:
        self.client._on_closed()


class FixClient:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._logged_on: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._protocol: _ClientProtocol | None = None
        self.logout_text = ""
        self.gateway_keys: tuple[VerifyKey, ...] = ()  # when set, every application message must verify
        self.unverified = 0
        self.last_unverified = ""

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        cert: str | Path,
        key: str | Path,
        ca: str | Path,
        sender_comp_id: str,
        target_comp_id: str,
        begin_string: str = "FIX.4.4",
        default_appl_ver_id: str | None = None,
        signer: Signer | None = None,
        username: str | None = None,
        password: str | None = None,
        totp_secret: str | None = None,
        heartbeat_interval: int = 30,
        reset_on_logon: bool = False,
        store: SessionStore | None = None,
        server_hostname: str | None = None,
        validate: bool = True,
        timeout: float = 10.0,
        gateway_key: str | Path | None = None,
    ) -> FixClient:
        """Connect over mutual TLS and log on; returns once the gateway answered our Logon."""
        logon: list[Field] = []
        if username is not None:
            code = ""
            if totp_secret is not None:
                import pyotp

                code = pyotp.TOTP(totp_secret).now()
            logon += [(T.Username, username.encode()), (T.Password, ((password or "") + code).encode())]
        begin = begin_string.encode()
        appl = session_appl_ver_id(begin, default_appl_ver_id)  # FIXT.1.1: "7"/"FIX.5.0" ... default 9
        config = SessionConfig(
            begin_string=begin,
            sender_comp_id=sender_comp_id.encode(),
            target_comp_id=target_comp_id.encode(),
            role=Role.INITIATOR,
            heartbeat_interval=heartbeat_interval,
            reset_on_logon=reset_on_logon,
            default_appl_ver_id=appl,
            timestamp_precision=timestamp_precision(begin),
            validator=standard_validator(begin, default_appl_ver_id=appl) if validate else None,
            signer=signer,
            logon_fields=tuple(logon),
        )
        client = cls(Session(config, store or MemoryStore()))
        if gateway_key is not None:
            pub = serialization.load_pem_public_key(Path(gateway_key).read_bytes())
            if not isinstance(pub, Ed25519PublicKey):
                raise ValueError(f"{gateway_key} is not an Ed25519 public key")
            client.gateway_keys = (VerifyKey("ed25519", pub, key_id="gateway"),)
        ctx = tls.client_context(Path(ca), Path(cert), Path(key))
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _ClientProtocol(client), host, port, ssl=ctx,
                                       server_hostname=server_hostname or host),
                timeout,
            )
        except (ssl.SSLError, OSError) as exc:
            raise LogonFailed(f"cannot connect to {host}:{port}: {exc}") from None
        client._protocol = proto
        try:
            await asyncio.wait_for(asyncio.shield(client._logged_on), timeout)
        except TimeoutError:
            proto.abort()
            raise LogonFailed(f"no Logon answer within {timeout} s") from None
        return client

    # -- events from the session -------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if isinstance(event, AppMessageReceived):
            if self.gateway_keys:
                try:
                    signature.verify(event.message.raw, self.gateway_keys, time.time())
                except signature.SignatureError as exc:
                    # not from the gateway we trust: never handed to the application
                    self.unverified += 1
                    self.last_unverified = str(exc)
                    return
            self.inbox.put_nowait(event.message)
        elif isinstance(event, LoggedOn):
            if not self._logged_on.done():
                self._logged_on.set_result("ok")
        elif isinstance(event, (LoggedOut, LogonRefused, Disconnected)):
            self.logout_text = getattr(event, "reason", "")
            self._finish()

    def _on_closed(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if not self._logged_on.done():
            self._logged_on.set_exception(LogonFailed(self.logout_text or "connection closed before Logon"))
        self.inbox.put_nowait(None)

    # -- API ----------------------------------------------------------------------
    @property
    def logged_on(self) -> bool:
        return self.session.is_logged_on

    async def send(self, msg_type: str | bytes, fields: Sequence[tuple[int, str | bytes | int | float]],
                   header: Sequence[tuple[int, str | bytes]] = ()) -> Message:
        """Send an application message (signed when the client has a signer)."""
        body = [(t, _b(v)) for t, v in fields]
        sent = self.session.send_app(_b(msg_type), body, time.time(), [(t, _b(v)) for t, v in header])
        if sent is None:
            raise ConnectionError(f"not logged on{': ' + self.logout_text if self.logout_text else ''}")
        assert self._protocol is not None
        self._protocol.pump()
        return sent

    async def receive(self, timeout: float | None = None) -> Message | None:
        """The next application message, or ``None`` once the session has ended."""
        msg = await asyncio.wait_for(self.inbox.get(), timeout)
        if msg is None:
            self.inbox.put_nowait(None)  # keep ended for later calls
        return msg

    def __aiter__(self) -> FixClient:
        return self

    async def __anext__(self) -> Message:
        msg = await self.receive()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def logout(self, text: str = "", timeout: float = 5.0) -> None:
        """Log out and wait for the gateway's answer (or the timeout), then close."""
        if self._protocol is None:
            return
        self.session.logout(time.time(), text)
        self._protocol.pump()
        deadline = time.monotonic() + timeout
        while not self.session.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._protocol.close_transport()

    async def __aenter__(self) -> FixClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session.is_logged_on:
            await self.logout()
