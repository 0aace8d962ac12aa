"""Hand-off between worker processes (edge).

With ``[gateway] workers = N`` every worker listens on the same port
(SO_REUSEPORT), so the kernel — not the gateway — decides which worker
accepts a TCP connection, and it cannot know whose certificate will arrive.
The worker that accepts does the TLS handshake (so every refusal is still
audited where it happened), reads the identity from the verified client
certificate and, when another worker owns that identity
(``gateway/core/partition.py``), hands the session over:

* it makes a fresh AF_UNIX stream pair, keeps one end and passes the other
  to the owner's *inbox* (an anonymous SOCK_SEQPACKET pair the supervisor
  created before starting the workers — no path on disk, nothing else can
  write to it) with SCM_RIGHTS, together with what the owner needs to decide
  for itself: the peer address and the verified leaf certificate;
* from then on it is a TLS relay: client ciphertext in, plaintext to the
  owner; the owner's bytes out, encrypted.  TLS keys never leave the
  process that negotiated them.

The owner treats the stream like a fresh TLS connection: identity, CRL,
denylist, zone, pins and Logon are all checked there, and it writes the
session's records in its own audit chain.  A hand-off that cannot be made
(the owner's inbox is full or gone) refuses the connection: fail closed.

Control messages (a posture batch pushed to one worker's admin API) travel
the same way, so no size limit hides in a datagram: ``call`` passes every
other worker a fresh stream, writes the whole payload on it and waits until
that worker answers ``applied`` — it applied the batch and re-decided its
sessions.  A worker that does not answer within ``CONTROL_TIMEOUT`` (inbox
full or gone, stopped, crashed) is named to the caller, which must not
report success (the admin API answers 503 and the agent retries).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from gateway.core.errors import UsageError

if TYPE_CHECKING:
    from gateway.shells.client_leg import TLSConnection
    from gateway.shells.ports import Hub

log = structlog.get_logger("fixgw.handoff")
MAX_META = 16384  # bytes of hand-off metadata (a leaf certificate is ~1 kB)
#: seconds a worker has to read, apply and acknowledge a control message before the caller gives up on it
CONTROL_TIMEOUT = 5.0
#: the largest control payload a worker reads (the admin API's request body limit is far below)
MAX_CONTROL = 64 * 1024 * 1024
#: what a worker answers on a control stream once the payload is applied
CONTROL_DONE = b"applied"


@dataclass
class Worker:
    """This process's place among the workers, and the inboxes to reach the others."""

    index: int
    count: int
    inbox: int  # fd: our end to receive hand-offs on
    outboxes: list[int] = field(default_factory=list)  # fd per worker: where to send it hand-offs

    @staticmethod
    def parse(index: int, count: int, inbox: int, outboxes: str) -> Worker:
        fds = [int(x) for x in outboxes.split(",") if x]
        if len(fds) != count or not 0 <= index < count:
            raise UsageError(f"_worker: worker {index} of {count} needs {count} outboxes, got {len(fds)} "
                             "(workers are started by `fixgw run`, not by hand)")
        try:
            for fd in (inbox, *fds):
                os.set_blocking(fd, False)  # a full inbox refuses the hand-off instead of stalling the loop
        except OSError as exc:
            raise UsageError(f"_worker: inherited descriptor not open ({exc.strerror}); workers are started "
                             "by `fixgw run`, not by hand") from None
        return Worker(index, count, inbox, fds)


class HandoffRefused(Exception):
    pass


def send(worker: Worker, owner: int, meta: dict[str, Any]) -> socket.socket:
    """Pass a new stream to ``owner``; returns our end.  Raises HandoffRefused."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    data = json.dumps(meta).encode()
    try:
        if len(data) > MAX_META:
            ours.close()
            raise HandoffRefused(f"hand-off metadata is {len(data)} bytes (limit {MAX_META})")
        box = socket.socket(fileno=os.dup(worker.outboxes[owner]))
        try:
            socket.send_fds(box, [data], [theirs.fileno()])
        finally:
            box.close()
    except BlockingIOError:
        ours.close()
        raise HandoffRefused(f"worker {owner} is not taking hand-offs (its inbox is full)") from None
    except OSError as exc:
        ours.close()
        raise HandoffRefused(f"worker {owner} is not reachable: {exc.strerror or exc}") from None
    finally:
        theirs.close()
    ours.setblocking(False)
    return ours


def broadcast(worker: Worker, message: dict[str, Any]) -> list[int]:
    """A control datagram (no stream, no acknowledgement) to every other worker; returns the workers it
    could not reach — all of them when it is over ``MAX_META`` bytes, which an inbox read would cut.
    For anything that must be known applied, use ``call``."""
    data = json.dumps(message).encode()
    missed = []
    for k, fd in enumerate(worker.outboxes):
        if k == worker.index:
            continue
        if len(data) > MAX_META:
            missed.append(k)
            continue
        box = socket.socket(fileno=os.dup(fd))
        try:
            box.send(data)
        except OSError:  # full or gone: the caller answers the request with an error (fail closed)
            missed.append(k)
        finally:
            box.close()
    return missed


async def call(worker: Worker, kind: str, payload: dict[str, Any], timeout: float = CONTROL_TIMEOUT) -> list[int]:
    """Give ``payload`` to every other worker and wait until each says it applied it.

    Returns the workers that did not within ``timeout`` (unreachable, inbox full, no answer).  A worker
    that reads its inbox late still applies the payload then; its answer goes nowhere."""
    data = json.dumps(payload).encode()
    if len(data) > MAX_CONTROL:
        raise ValueError(f"control payload of {len(data)} bytes is above the {MAX_CONTROL}-byte limit")
    others = [k for k in range(worker.count) if k != worker.index]
    done = await asyncio.gather(*(_call_one(worker, k, kind, data, timeout) for k in others))
    return [k for k, ok in zip(others, done, strict=True) if not ok]


async def _call_one(worker: Worker, k: int, kind: str, data: bytes, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    try:
        sock = send(worker, k, {"control": kind, "from": worker.index, "bytes": len(data)})
    except HandoffRefused as exc:
        log.warning("control_not_delivered", worker=k, control=kind, reason=str(exc))
        return False
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_sendall(sock, data)
            sock.shutdown(socket.SHUT_WR)  # end of payload
            answer = await read_to_end(sock, len(CONTROL_DONE))
    except (TimeoutError, OSError, ValueError) as exc:
        log.warning("control_not_acknowledged", worker=k, control=kind, error=str(exc) or type(exc).__name__)
        return False
    finally:
        sock.close()
    return answer == CONTROL_DONE


async def adopt(sock: socket.socket, factory: Callable[[], asyncio.Protocol]) -> None:
    """Run ``factory()``'s protocol on ``sock``, a connected stream socket; the loop owns it from here.

    ``connect_accepted_socket``, not ``create_unix_connection(sock=...)``: uvloop's
    ``create_unix_connection`` ties the socket object to its transport only after
    ``connection_made`` has run, so a protocol that closes the connection there (a refused
    hand-off does) leaves a socket object holding a descriptor number libuv already closed — and
    when the garbage collector finalizes it, it closes whatever connection, file or audit segment
    got that number since.  ``connect_accepted_socket`` ties them before ``connection_made``.
    Raises OSError, with the socket closed."""
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().connect_accepted_socket(factory, sock)
    except OSError:
        sock.close()  # a no-op when the loop already took (and closed) the descriptor
        raise


async def read_to_end(sock: socket.socket, limit: int) -> bytes:
    """Everything the peer writes on ``sock`` until it shuts its side; ValueError past ``limit`` bytes."""
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ValueError(f"more than {limit} bytes")
        chunks.append(chunk)


class Relay:
    """In the accepting worker: the application on top of a TLSConnection whose session lives elsewhere."""

    def __init__(self, gw: Hub, owner: int, identity: str) -> None:
        self.gw, self.owner, self.identity = gw, owner, identity
        self.conn: TLSConnection | None = None
        self.pipe: asyncio.Transport | None = None
        self._early: list[bytes] = []  # plaintext that arrived before the pipe was connected
        self._gone = False

    # -- as the application of the TLS connection ----------------------------------
    def connection_made(self, conn: TLSConnection) -> None:
        self.conn = conn
        gw = self.gw
        assert gw.worker is not None
        ssl_obj = conn.tls.obj
        peer = conn.raw.get_extra_info("peername") if conn.raw is not None else None
        meta = {"peer": list(peer[:2]) if isinstance(peer, tuple) else None, "from": gw.worker.index,
                "tls": ssl_obj.version(), "der": base64.b64encode(ssl_obj.getpeercert(True) or b"").decode()}
        try:
            ours = send(gw.worker, self.owner, meta)
        except HandoffRefused as exc:
            self._gone = True  # whatever the client sends from now on goes nowhere
            gw.audit_event("connection_refused", peer=conn.peer, identity=self.identity, reason=str(exc))
            log.warning("handoff_refused", peer=conn.peer, worker=self.owner, reason=str(exc))
            conn.close()
            return
        gw.audit_event("connection_handed_off", peer=conn.peer, identity=self.identity, worker=self.owner)
        gw.relays.add(self)
        asyncio.get_running_loop().create_task(self._attach(ours))

    async def _attach(self, sock: socket.socket) -> None:
        try:
            await adopt(sock, lambda: _OwnerSide(self))
        except OSError as exc:
            log.warning("handoff_attach_failed", error=str(exc))
            self._close_client()

    def data_received(self, plain: bytes) -> None:
        if self.pipe is not None:
            self.pipe.write(plain)
        elif not self._gone:
            self._early.append(plain)

    def pause_writing(self) -> None:  # the client reads slowly: stop reading what the owner sends
        if self.pipe is not None and not self.pipe.is_closing():
            self.pipe.pause_reading()

    def resume_writing(self) -> None:
        if self.pipe is not None and not self.pipe.is_closing():
            self.pipe.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone = True
        self.gw.relays.discard(self)
        if self.pipe is not None:
            self.pipe.close()

    # -- the owner's side ---------------------------------------------------------------
    def attached(self, pipe: asyncio.Transport) -> None:
        if self._gone:
            pipe.close()
            return
        self.pipe = pipe
        if self._early:
            pipe.write(b"".join(self._early))
            self._early.clear()

    def _close_client(self) -> None:
        self.gw.relays.discard(self)
        if self.conn is not None:
            self.conn.close()

    def close(self) -> None:
        """Shutdown: the owner had its grace to send Logout through us; now close both ends."""
        if self.pipe is not None:
            self.pipe.close()
        self._close_client()


class _OwnerSide(asyncio.Protocol):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t: asyncio.Transport = transport  # type: ignore[assignment]
        cfg = self.relay.gw.cfg.gateway
        t.set_write_buffer_limits(high=cfg.max_buffered_bytes)
        self.relay.attached(t)

    def data_received(self, data: bytes) -> None:
        conn = self.relay.conn
        if conn is not None:
            conn.write(data)

    def pause_writing(self) -> None:  # the owner reads slowly: stop reading from the client
        if self.relay.conn is not None:
            self.relay.conn.pause_reading()

    def resume_writing(self) -> None:
        if self.relay.conn is not None:
            self.relay.conn.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay._close_client()
