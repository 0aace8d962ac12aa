"""Connection flood for the bench: clients that connect and never log on, and garbage.

At ``--rate`` new connections per second (paced in 10 ms slices), half open
TCP and send random bytes instead of a TLS ClientHello, half complete a
mutual-TLS handshake with a valid certificate and then sit idle until the
gateway's logon timeout or ``--hold`` seconds.  Runs until SIGTERM; prints
how many connections it attempted and how many the gateway refused.

    python -m bench.flood --port 9880 --cert c.crt --key c.key --ca ca.crt --rate 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
import time
from pathlib import Path

from gateway.edges import tls


async def run(a: argparse.Namespace) -> dict[str, int]:
    ctx = tls.client_context(Path(a.ca), Path(a.cert), Path(a.key))
    stats = {"attempts": 0, "garbage": 0, "handshakes": 0, "refused": 0}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tasks: set[asyncio.Task[None]] = set()

    async def garbage() -> None:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", a.port, local_addr=(a.source, 0))
            w.write(os.urandom(512))
            await w.drain()
            w.close()
            stats["garbage"] += 1
        except OSError:
            stats["refused"] += 1

    async def idle_tls() -> None:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", a.port, ssl=ctx,
                                                                  server_hostname="127.0.0.1",
                                                                  local_addr=(a.source, 0)), 5)
            stats["handshakes"] += 1
            try:
                await asyncio.wait_for(r.read(1), a.hold)  # the gateway closes it at its logon timeout
            except TimeoutError:
                pass
            w.close()
        except (OSError, ssl.SSLError, TimeoutError):
            stats["refused"] += 1

    per_slice = max(1, round(a.rate / 100))
    t = time.monotonic()
    while not stop.is_set():
        for _ in range(per_slice):
            stats["attempts"] += 1
            task = loop.create_task(garbage() if stats["attempts"] % 2 else idle_tls())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        t += 0.01
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, t - time.monotonic()))
        except TimeoutError:
            pass
    for task in list(tasks):
        task.cancel()
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--rate", type=float, default=200.0, help="new connections per second")
    # another host than the trading client (127.0.0.1): the per-source limit is the flooder's alone
    p.add_argument("--source", default="127.0.0.2", help="source address of the flood")
    p.add_argument("--hold", type=float, default=2.0, help="seconds an idle TLS connection waits at most")
    a = p.parse_args(argv)
    from gateway.cli.main import raise_fd_limit

    raise_fd_limit()
    stats = asyncio.run(run(a))
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
