"""Audit replication to NATS JetStream (edge, optional).

The local segments stay the source of truth and double as the spool: a task
reads stored lines after its cursor and publishes them in order, each with
``Nats-Msg-Id = <instance>-<seq>`` so JetStream drops a duplicate when a
publish is retried (after a timeout or a crash between publish and cursor
save), and ``Fixgw-Chain = <chain>`` (``main``, or ``worker-K`` with
several workers: one chain each, interleaved in one stream) so a verifier
can take the chains apart again (``chains_of``).  The cursor (last
acknowledged seq) is persisted; when NATS is unreachable nothing is lost —
the task retries with backoff and catches up in order when it returns.

Durability on the NATS side: JetStream acknowledges a publish once the
record is in the stream's store; the server fsyncs that store only every
``sync_interval`` (2 minutes by default), so an acknowledged record can be
lost if the NATS host loses power.  For audit data run the stream with
``replicas = 3`` across machines, and on NATS 2.10+ set
``jetstream { sync_interval: always }`` on the servers.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import structlog

from gateway.edges.audit import MAIN_CHAIN, segments

log = structlog.get_logger("fixgw.replicate")

#: the header naming the chain a record belongs to (the audit folder's name for it)
CHAIN_HEADER = "Fixgw-Chain"


def stored_lines_after(folder: Path, after_seq: int) -> Iterator[tuple[int, bytes]]:
    """(seq, stored line) of every complete record with seq > ``after_seq``, in order."""
    for _, path in segments(folder):
        data = path.read_bytes()
        for line in data.split(b"\n")[:-1]:  # the part after the last newline may be half-written
            try:
                seq = msgspec.json.decode(line).get("seq", 0)
            except msgspec.DecodeError:
                continue
            if isinstance(seq, int) and seq > after_seq:
                yield seq, line


class Replicator:
    def __init__(self, folder: Path, url: str, stream: str, subject: str, instance: str, replicas: int,
                 cursor_file: Path, on_alert: Any, chain: str = MAIN_CHAIN) -> None:
        self.folder = folder
        self.chain = chain
        self.url = url
        self.stream = stream
        self.subject = subject
        self.instance = instance
        self.replicas = replicas
        self.cursor_file = cursor_file
        self.on_alert = on_alert
        self.cursor = self._load_cursor()
        self.wake = asyncio.Event()
        self.connected = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def _load_cursor(self) -> int:
        try:
            return int(json.loads(self.cursor_file.read_text()).get("acked_seq", 0))
        except (OSError, ValueError):
            return 0

    def _save_cursor(self) -> None:
        tmp = self.cursor_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"acked_seq": self.cursor}))
        os.replace(tmp, self.cursor_file)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def notify(self) -> None:
        self.wake.set()

    async def _run(self) -> None:
        import nats
        from nats.js.api import StorageType, StreamConfig

        delay = 0.2
        nc = None
        while not self._stopping:
            try:
                if nc is None:
                    nc = await nats.connect(self.url, allow_reconnect=False, connect_timeout=2,
                                            max_reconnect_attempts=0)
                    js = nc.jetstream()
                    await js.add_stream(StreamConfig(name=self.stream, subjects=[self.subject],
                                                     storage=StorageType.FILE, num_replicas=self.replicas,
                                                     duplicate_window=600.0))
                    self.connected = True
                    log.info("nats_connected", url=self.url, stream=self.stream, acked_seq=self.cursor)
                    delay = 0.2
                sent = 0
                for seq, line in stored_lines_after(self.folder, self.cursor):
                    headers = {"Nats-Msg-Id": f"{self.instance}-{seq}", CHAIN_HEADER: self.chain}
                    await js.publish(self.subject, line, headers=headers, timeout=5)
                    self.cursor = seq
                    sent += 1
                    if sent % 500 == 0:
                        self._save_cursor()
                if sent:
                    self._save_cursor()
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), 0.5)
                except TimeoutError:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any NATS/network failure: spool and retry
                if self.connected:
                    self.on_alert(f"NATS replication paused: {type(exc).__name__}: {exc}")
                self.connected = False
                if nc is not None:
                    try:
                        await nc.close()
                    except Exception:  # noqa: BLE001
                        pass
                    nc = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if nc is not None:
            await nc.close()

    async def stop(self, drain: float = 2.0) -> None:
        """Give the task a moment to publish what is left, then stop it."""
        self.notify()
        deadline = asyncio.get_running_loop().time() + drain
        last = max((s for s, _ in stored_lines_after(self.folder, self.cursor)), default=self.cursor)
        while self.connected and self.cursor < last and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass


async def fetch_stream(url: str, stream: str) -> list[tuple[int, bytes]]:
    """Every message of the stream in order: (stream seq, data)."""
    return [(seq, data) for seq, data, _ in await fetch_labelled(url, stream)]


async def fetch_labelled(url: str, stream: str) -> list[tuple[int, bytes, str]]:
    """Every message of the stream in order: (stream seq, data, the chain its header names)."""
    import nats

    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=3, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            out.append((seq, msg.data or b"", (msg.headers or {}).get(CHAIN_HEADER, MAIN_CHAIN)))
        return out
    finally:
        await nc.close()


def chains_of(msgs: list[tuple[int, bytes, str]]) -> dict[str, list[tuple[int, bytes]]]:
    """The stream taken apart by chain, each in stream order (a chain's records were published in order)."""
    out: dict[str, list[tuple[int, bytes]]] = {}
    for seq, data, chain in msgs:
        out.setdefault(chain, []).append((seq, data))
    return out
