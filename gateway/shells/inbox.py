"""The owner's side of a hand-off between workers (see ``gateway/shells/handoff.py``).

Each worker reads its inbox (an anonymous SOCK_SEQPACKET socket the
supervisor created): a handed-off client stream arrives with SCM_RIGHTS and
its metadata, and becomes a ``RelayedConnection`` whose ``ClientProtocol``
checks everything again.  Posture assertions pushed to another worker's
admin API arrive the same way, as a control stream (``handoff.call``): read
whole, applied, then answered ``applied`` — the pushing worker reports
success only after every worker did so.  A datagram the inbox read had to
cut (``MSG_TRUNC``) is never half-applied: it is dropped with an ``alert``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from typing import TYPE_CHECKING, Any

import structlog

from gateway.shells.client_leg import RelayedConnection
from gateway.shells.handoff import CONTROL_DONE, CONTROL_TIMEOUT, MAX_CONTROL, MAX_META, adopt, read_to_end

if TYPE_CHECKING:
    from gateway.shells.ports import Hub

log = structlog.get_logger("fixgw.inbox")


class _RelayedTLS:
    """What the owner knows of the TLS connection another worker terminated (for ClientProtocol)."""

    def __init__(self, der: bytes, version: str | None) -> None:
        self._der, self._version = der, version

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        return self._der if binary_form else None

    def version(self) -> str | None:
        return self._version


def listen_inbox(gw: Hub) -> None:
    """Owner side: accept hand-offs from the other workers on this worker's inbox."""
    assert gw.worker is not None
    loop = asyncio.get_running_loop()
    inbox = socket.socket(fileno=os.dup(gw.worker.inbox))
    inbox.setblocking(False)
    tasks: set[asyncio.Task[None]] = set()  # control streams being served (a strong reference each)

    def on_readable() -> None:
        while True:
            try:
                data, fds, flags, _ = socket.recv_fds(inbox, MAX_META, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("inbox_failed", error=str(exc))
                loop.remove_reader(inbox.fileno())
                return
            socks = [socket.socket(fileno=fd) for fd in fds]
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):  # cut by the read: never act on part of it
                for s in socks:
                    s.close()
                log.error("inbox_message_cut", limit=MAX_META)
                gw.audit_event("alert", what="a message from another worker was longer than the inbox read "
                               f"({MAX_META} bytes) and was dropped, not applied")
                continue
            if not socks:  # a control datagram (``handoff.broadcast``)
                try:
                    control = json.loads(data)
                    assertions = [(str(i), str(lv)) for i, lv in control["posture"]]
                    at = float(control["at"])
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("inbox_bad_message", error=str(exc))
                    continue
                gw.apply_posture(assertions, at, origin=int(control.get("from", -1)))
                continue
            try:
                meta = json.loads(data)
                if len(socks) == 1 and isinstance(meta, dict) and "control" in meta:
                    tasks.add(t := loop.create_task(_control(gw, socks[0], meta)))
                    t.add_done_callback(tasks.discard)
                    continue
                der = base64.b64decode(meta["der"])
                peer = tuple(meta["peer"]) if meta.get("peer") else None
            except (ValueError, KeyError, TypeError) as exc:  # our own workers wrote it: a bug, not an attack
                log.error("inbox_bad_message", error=str(exc))
                for s in socks:
                    s.close()
                continue
            if len(socks) != 1:
                for s in socks:
                    s.close()
                continue
            loop.create_task(_accept(gw, socks[0], der, peer, meta.get("tls"), int(meta.get("from", -1))))

    loop.add_reader(inbox.fileno(), on_readable)
    gw.inbox = inbox


async def _accept(gw: Hub, sock: socket.socket, der: bytes, peer: tuple[Any, ...] | None,
                  version: str | None, origin: int) -> None:
    try:
        await adopt(sock, lambda: RelayedConnection(gw, _RelayedTLS(der, version), peer, origin))
    except OSError as exc:
        log.warning("handoff_accept_failed", error=str(exc))


async def _control(gw: Hub, sock: socket.socket, meta: dict[str, Any]) -> None:
    """A control stream from another worker (``handoff.call``): read it whole, apply it, say so.

    Anything that goes wrong leaves the stream unanswered, so the sending worker reports the push as
    not applied here (fail closed) — and an ``alert`` says why in this worker's chain."""
    origin = int(meta.get("from", -1))
    sock.setblocking(False)
    try:
        try:
            async with asyncio.timeout(CONTROL_TIMEOUT):
                data = await read_to_end(sock, MAX_CONTROL)
            if meta["control"] != "posture":
                raise ValueError(f"unknown control message {meta['control']!r}")
            body = json.loads(data)
            assertions = [(str(i), str(lv)) for i, lv in body["posture"]]
            at = float(body["at"])
        except (TimeoutError, OSError, ValueError, KeyError, TypeError) as exc:
            why = str(exc) or type(exc).__name__
            log.error("control_failed", origin=origin, error=why)
            gw.audit_event("alert", what="a control message from another worker was not applied",
                           origin_worker=origin, error=why)
            return
        gw.apply_posture(assertions, at, origin=origin)
        try:
            await asyncio.get_running_loop().sock_sendall(sock, CONTROL_DONE)
        except OSError:
            pass  # the sender gave up waiting (and said so); the assertions are in force here all the same
    finally:
        sock.close()
