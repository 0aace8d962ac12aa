"""An allowed order never vanishes: when the exchange leg's store cannot write, the client is told.

Hole 8 of the one-trust-pipeline issue: with the disk under ``state_dir``
full, the forward step died with a traceback, the client got no answer, and
the audit said ``allow`` for an order that never reached the exchange.

The failure is a real one: the gateway runs in this process (its own event
loop in a thread, real TLS sockets, the simulator as a subprocess), and the
exchange leg's store files are pointed at ``/dev/full``, whose every write
fails with ENOSPC — exactly what a full disk returns.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from gateway.app.gateway import Gateway
from gateway.core.fix import tags as T
from gateway.edges.config import load
from tests import harness
from tests.harness import FixClient, client_ssl

R = TypeVar("R")


@dataclass
class InProcess:
    tmp: Path
    certs: Path
    port: int
    gw: Gateway
    loop: asyncio.AbstractEventLoop

    def call(self, fn: Callable[[], R]) -> R:
        """Run ``fn`` on the gateway's loop and return its result (the gateway is not thread-safe)."""
        done: Future[R] = Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout=10)

    def audit(self) -> list[dict[str, object]]:
        return harness.audit_records(self.tmp / "state" / "audit")

    def wait_record(self, pred: Callable[[dict[str, object]], bool], timeout: float = 5.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while True:
            for r in self.audit():
                if pred(r):
                    return r
            if time.monotonic() > deadline:
                raise AssertionError("no such audit record")
            time.sleep(0.05)

    def journal(self) -> list[str]:
        path = self.tmp / "received.log"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def world(tmp_path: Path) -> Iterator[InProcess]:
    certs = harness.make_pki(tmp_path / "certs")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, sim_extra=f'journal = "{tmp_path}/received.log"')
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp_path / "sim.log", sim_port)
    loop = asyncio.new_event_loop()
    gw = Gateway(load(str(cfg)))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(gw.start(), loop).result(timeout=15)
        world = InProcess(tmp_path, certs, gw_port, gw, loop)
        harness.wait_port(gw_port)
        deadline = time.monotonic() + 15
        while not world.call(lambda: all(r.upstream.logged_on for r in gw.routes.values())):
            assert time.monotonic() < deadline, "exchange legs did not log on"
            time.sleep(0.02)
        yield world
    finally:
        try:
            asyncio.run_coroutine_threadsafe(gw.stop(1.0), loop).result(timeout=15)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            sim.stop()


def _nos(cl: str) -> list[tuple[int, str]]:
    return [(11, cl), (21, "1"), (38, "100"), (40, "2"), (44, "30.15"), (54, "1"), (55, "INTC"),
            (60, "20260101-00:00:00")]


def _disk_full(world: InProcess, comp: str) -> None:
    """Every later write to the exchange leg's store (messages and sequence numbers) fails with ENOSPC."""

    def swap() -> None:
        route = next(r for r in world.gw.routes.values() if r.cfg.client_comp_id == comp)
        assert route.upstream.protocol is not None and route.upstream.protocol.session is not None
        store = route.upstream.protocol.session.store
        full = os.open("/dev/full", os.O_WRONLY)
        try:
            for fd in (store._log_fd, store._seq_fd):  # type: ignore[attr-defined]
                os.dup2(full, fd)
        finally:
            os.close(full)

    world.call(swap)


def test_an_exchange_store_that_cannot_write_refuses_the_order_and_says_so(world: InProcess) -> None:
    c = FixClient(world.port, client_ssl(world.certs, "algo1"), "ALGO1")
    c.logon(reset=True)
    bystander = FixClient(world.port, client_ssl(world.certs, "algo2"), "ALGO2")
    bystander.logon(reset=True)
    c.send("D", _nos("before-full"))
    assert [c.recv_type(b"8").get(39) for _ in range(2)] == [b"0", b"2"]  # New, then Fill
    _disk_full(world, "ALGO1")
    c.send("D", _nos("disk-full"))
    m = c.recv_type(b"j")
    assert m.get(T.BusinessRejectReason) == b"4", m  # ApplicationNotAvailable: the gateway could not carry it
    assert b"store cannot write" in (m.get(T.Text) or b"")
    outcome = world.wait_record(lambda r: r.get("kind") == "outcome" and r.get("cl_ord_id") == "disk-full")
    assert outcome["result"] == "not_forwarded" and "store cannot write" in str(outcome["reason"])
    decision = world.wait_record(lambda r: r.get("kind") == "decision" and r.get("cl_ord_id") == "disk-full")
    assert outcome["decision_seq"] == decision["seq"]
    assert not any(line.endswith(" disk-full") for line in world.journal())  # never at the exchange
    assert "Traceback" not in "".join(str(r) for r in world.audit())
    # other sessions are untouched
    bystander.send("D", _nos("bystander-1"))
    m = bystander.recv_type(b"8")
    assert m.get(11) == b"bystander-1" and m.get(39) != b"8"
    c.close()
    bystander.close()


def test_a_client_store_that_cannot_write_ends_that_session_and_records_the_undelivered_report(
        world: InProcess) -> None:
    """The other direction: the venue's New and Fill cannot be kept for a resend on the client leg, so
    they are not sent (a frame the store cannot repeat must not leave), the session ends, and the audit
    says which report was not delivered — no exception escapes into the loop, other sessions go on."""
    escaped: list[dict[str, object]] = []
    world.call(lambda: world.loop.set_exception_handler(lambda loop, ctx: escaped.append(ctx)))
    c = FixClient(world.port, client_ssl(world.certs, "algo1"), "ALGO1")
    c.logon(reset=True)
    bystander = FixClient(world.port, client_ssl(world.certs, "algo2"), "ALGO2")
    bystander.logon(reset=True)

    def client_store_full() -> None:
        route = next(r for r in world.gw.routes.values() if r.cfg.client_comp_id == "ALGO1")
        assert route.client is not None and route.client.session is not None
        store = route.client.session.store
        full = os.open("/dev/full", os.O_WRONLY)
        try:  # the message log only: the order itself is still read (its number kept) and forwarded
            os.dup2(full, store._log_fd)  # type: ignore[attr-defined]
        finally:
            os.close(full)

    world.call(client_store_full)
    c.send("D", _nos("client-disk-full"))
    alert = world.wait_record(lambda r: r.get("kind") == "alert" and r.get("cl_ord_id") == "client-disk-full")
    assert "not delivered" in str(alert["what"]) and "No space left" in str(alert["error"]), alert
    assert alert["session"] and alert["upstream_seq"], alert
    deadline = time.monotonic() + 5
    while world.call(lambda: any(r.client is not None for r in world.gw.routes.values()
                                 if r.cfg.client_comp_id == "ALGO1")):
        assert time.monotonic() < deadline, "the session whose store cannot write is still connected"
        time.sleep(0.02)
    assert escaped == [], escaped
    bystander.send("D", _nos("bystander-2"))
    m = bystander.recv_type(b"8")
    assert m.get(11) == b"bystander-2" and m.get(39) != b"8"
    c.close()
    bystander.close()
