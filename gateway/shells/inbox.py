"""The owner's side of a hand-off between workers (see ``gateway/shells/handoff.py``).

Each worker reads its inbox (an anonymous SOCK_SEQPACKET socket the
supervisor created): a handed-off client stream arrives with SCM_RIGHTS and
its metadata, and becomes a ``RelayedConnection`` whose ``ClientProtocol``
checks everything again; posture assertions pushed to another worker's
admin API arrive here too.
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
from gateway.shells.handoff import MAX_META

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

    def on_readable() -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(inbox, MAX_META, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("inbox_failed", error=str(exc))
                loop.remove_reader(inbox.fileno())
                return
            socks = [socket.socket(fileno=fd) for fd in fds]
            if not socks:  # a control message from another worker's admin API
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

    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.create_unix_connection(lambda: RelayedConnection(gw, _RelayedTLS(der, version), peer, origin),
                                          sock=sock)
    except OSError as exc:
        log.warning("handoff_accept_failed", error=str(exc))
        sock.close()
