"""A handed-off stream that is refused at once must not leave a socket object that closes a reused fd.

Found as a flaky admin-API test: with two workers, a revoked identity's connection
handed to its owner was refused in ``connection_made``; uvloop's
``create_unix_connection(sock=...)`` tied the socket object to the transport only after
that, so the object kept the descriptor number libuv had already closed, and the
garbage collector's finalizer later closed whatever reused it — the next admin
connection, sometimes, answered by nothing.  ``handoff.adopt`` hands the socket over
before ``connection_made`` runs.  Both loops the gateway may run on are checked.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from collections.abc import Callable

import pytest
import uvloop

from gateway.shells.handoff import adopt


class _RefuseAtOnce(asyncio.Protocol):
    """What a refused hand-off does: close in ``connection_made``."""

    def __init__(self, lost: asyncio.Future[None]) -> None:
        self.lost = lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def _refused_then_reused() -> tuple[int, bool, bool]:
    """Adopt a socket whose protocol refuses it, let the loop close it, then open a new socket
    (the kernel hands out the lowest free number: the one just closed) and collect garbage.
    Returns the adopted socket object's fileno afterwards, whether the number was reused, and
    whether the new socket survived."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    number = ours.fileno()
    lost: asyncio.Future[None] = loop.create_future()
    await adopt(ours, lambda: _RefuseAtOnce(lost))
    await asyncio.wait_for(lost, 5)
    theirs.close()
    fresh_a, fresh_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    reused = number in (fresh_a.fileno(), fresh_b.fileno())
    left = ours.fileno()
    del ours
    gc.collect()
    try:
        fresh_a.sendall(b"x")
        alive = fresh_b.recv(1) == b"x"
    except OSError:
        alive = False
    finally:
        for s in (fresh_a, fresh_b):
            try:
                s.close()
            except OSError:
                pass
    return left, reused, alive


async def _twice() -> tuple[int, bool, bool, int]:
    """The scenario twice; the second run must not leave more descriptors open than the first
    (the first may open the loop's lazily created ones)."""
    await _refused_then_reused()
    before = len(os.listdir("/proc/self/fd"))
    left, reused, alive = await _refused_then_reused()
    return left, reused, alive, len(os.listdir("/proc/self/fd")) - before


@pytest.mark.parametrize("run", [uvloop.run, asyncio.run], ids=["uvloop", "asyncio"])
def test_a_stream_refused_in_connection_made_leaves_no_socket_owning_its_old_fd(
        run: Callable[..., tuple[int, bool, bool, int]]) -> None:
    left, reused, alive, more = run(_twice())
    assert left == -1, "the socket object still claims the descriptor the loop closed"
    assert reused, "the kernel did not reuse the number: the test proves nothing"
    assert alive, "collecting the old socket object closed the connection that reused its descriptor"
    assert more <= 0, f"{more} descriptor(s) leaked"
