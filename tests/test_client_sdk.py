"""The client SDK against the running gateway: signed orders, fills, TOTP logon."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.edges import pki
from gateway.edges.mfa import add_user
from gateway.edges.registry import new_keys
from gateway.sdk import FixClient, LogonFailed, load_signer, now_utc
from tests import harness


@dataclass
class Env:
    tmp: Path
    certs: Path
    port: int
    totp: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("sdk")
    certs = harness.make_pki(tmp / "certs")
    pki.issue(certs, "trader")
    new_keys("ed25519", tmp / "algo1")
    new_keys("ed25519", tmp / "gateway-sign")
    new_keys("ed25519", tmp / "impostor")
    add_user(tmp / "users.toml", tmp / "totp.secrets", "alice", "correct horse battery")
    identities = f"""
[[identities]]
id = "spiffe://fixgw.dev/client/algo1"
comp_ids = ["ALGO1"]
signing = "ed25519"
keys = [{{ path = "{tmp}/algo1.pub" }}]
sign_outbound = true
[[identities]]
id = "spiffe://fixgw.dev/client/trader"
comp_ids = ["TRADER"]
mfa = true
users = ["alice"]
"""
    extra = f'[users]\nfile = "{tmp}/users.toml"\nsecrets = "{tmp}/totp.secrets"\n'
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, clients=("ALGO1", "TRADER"),
                                 identities=identities, extra=extra, reset_on_logon=True,
                                 gateway_extra=f'signing_key = "{tmp}/gateway-sign.key"')
    with harness.gateway_and_sim(tmp, cfg, gw_port, sim_port):  # returns once both exchange legs logged on
        yield Env(tmp, certs, gw_port, tomllib.loads((tmp / "totp.secrets").read_text())["totp"]["alice"])


def connect_kwargs(env: Env, name: str) -> dict[str, object]:
    return {"cert": env.certs / f"{name}.crt", "key": env.certs / f"{name}.key", "ca": env.certs / "ca.crt",
            "target_comp_id": "FIXGW", "reset_on_logon": True}


async def test_signed_algo_sends_orders_and_iterates_fills(env: Env) -> None:
    client = await FixClient.connect("127.0.0.1", env.port, sender_comp_id="ALGO1",
                                     signer=load_signer("ed25519", env.tmp / "algo1.key"),
                                     gateway_key=env.tmp / "gateway-sign.pub",  # fills must come via the gateway
                                     **connect_kwargs(env, "algo1"))  # type: ignore[arg-type]
    async with client:
        for i in range(3):
            await client.send("D", [(11, f"SDK{i}"), (21, 1), (38, 100), (40, 2), (44, "10.5"), (54, 1),
                                    (55, "INTC"), (60, now_utc())])
        fills = []
        async for msg in client:
            if msg.get(150) == b"F":
                fills.append(msg.get(11))
            if len(fills) == 3:
                break
    assert fills == [b"SDK0", b"SDK1", b"SDK2"]


async def test_human_logs_on_with_password_and_totp(env: Env) -> None:
    client = await FixClient.connect("127.0.0.1", env.port, sender_comp_id="TRADER", username="alice",
                                     password="correct horse battery", totp_secret=env.totp,
                                     **connect_kwargs(env, "trader"))  # type: ignore[arg-type]
    assert client.logged_on
    await client.logout()


async def test_logon_refusal_is_an_exception(env: Env) -> None:
    with pytest.raises(LogonFailed):
        await FixClient.connect("127.0.0.1", env.port, sender_comp_id="ALGO1",  # unsigned Logon
                                **connect_kwargs(env, "algo1"))  # type: ignore[arg-type]


async def test_messages_not_signed_by_the_trusted_gateway_key_are_dropped(env: Env) -> None:
    import asyncio

    client = await FixClient.connect("127.0.0.1", env.port, sender_comp_id="ALGO1",
                                     signer=load_signer("ed25519", env.tmp / "algo1.key"),
                                     gateway_key=env.tmp / "impostor.pub",
                                     **connect_kwargs(env, "algo1"))  # type: ignore[arg-type]
    await client.send("D", [(11, "X1"), (21, 1), (38, 1), (40, 2), (44, "1"), (54, 1), (55, "INTC"),
                            (60, now_utc())])
    with pytest.raises(asyncio.TimeoutError):
        await client.receive(timeout=1.5)
    assert client.unverified >= 2 and "does not verify" in client.last_unverified
    await client.logout()
