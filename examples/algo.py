"""A minimal algo engine on the fixgw client SDK: signed orders in, fills out.

    .venv/bin/python examples/algo.py            # against `make demo`'s set-up on :9880

It connects with its mTLS certificate, signs every message with Ed25519
(DESIGN §4), sends a few limit orders and prints each execution report.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.sdk import FixClient, load_signer, now_utc  # noqa: E402

ORDERS = [("AAPL", 1, 100, "189.50"), ("MSFT", 2, 250, "411.20"), ("INTC", 1, 1000, "30.15"),
          ("NVDA", 1, 40, "875.00"), ("AMZN", 2, 75, "178.35")]


async def run(port: int, certs: Path, name: str, comp_id: str, sign_key: Path, orders: int) -> list[float]:
    client = await FixClient.connect(
        "127.0.0.1", port,
        cert=certs / f"{name}.crt", key=certs / f"{name}.key", ca=certs / "ca.crt",
        sender_comp_id=comp_id, target_comp_id="FIXGW",
        signer=load_signer("ed25519", sign_key),
    )
    round_trips: list[float] = []
    async with client:
        print(f"   {'ClOrdID':<8}{'Symbol':<7}{'Side':<5}{'Qty':>6}{'Px':>9}  {'ExecType':<9}{'round trip':>11}")
        for i in range(orders):
            sym, side, qty, px = ORDERS[i % len(ORDERS)]
            t0 = time.perf_counter()
            await client.send("D", [(11, f"O{i + 1}"), (21, 1), (38, qty), (40, 2), (44, px), (54, side),
                                    (55, sym), (60, now_utc())])
            kinds = []
            while len(kinds) < 2:
                msg = await client.receive(timeout=10)
                if msg is None:
                    raise SystemExit(f"session ended: {client.logout_text}")
                if msg.msg_type == b"8" and msg.get(11) == f"O{i + 1}".encode():
                    kinds.append(msg.get(150))
            round_trips.append((time.perf_counter() - t0) * 1e6)
            status = "New+Fill" if kinds == [b"0", b"F"] else "/".join(k.decode() for k in kinds if k)
            print(f"   O{i + 1:<7}{sym:<7}{'Buy' if side == 1 else 'Sell':<5}{qty:>6}{px:>9}  {status:<9}"
                  f"{round_trips[-1]:>9.0f} µs")
    return round_trips


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=9880)
    p.add_argument("--certs", type=Path, default=ROOT / "certs" / "dev")
    p.add_argument("--name", default="algo-demo")
    p.add_argument("--comp-id", default="ALGO1")
    p.add_argument("--sign-key", type=Path, default=ROOT / "certs" / "dev" / "algo-demo-sign.key")
    p.add_argument("--orders", type=int, default=5)
    a = p.parse_args()
    asyncio.run(run(a.port, a.certs, a.name, a.comp_id, a.sign_key, a.orders))
    return 0


if __name__ == "__main__":
    sys.exit(main())
