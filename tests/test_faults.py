"""Faults around the gateway: the exchange leg dropped and restored, with the client session kept."""

from __future__ import annotations

from pathlib import Path

from tests import harness
from tests.harness import FixClient, client_ssl

NOS = [(21, "1"), (38, "10"), (40, "2"), (44, "10"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")]


def test_exchange_leg_dropped_and_restored_clients_are_told_and_numbers_continue(tmp_path: Path) -> None:
    certs = harness.make_pki(tmp_path / "certs")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, clients=("ALGO1",),
                                 upstream_extra="reconnect_min = 0.1\nreconnect_max = 0.4",
                                 sim_extra=f'journal = "{tmp_path}/received.log"')
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp_path / "sim.log", sim_port)
    gw = harness.start(["run", "--config", str(cfg)], tmp_path / "gw.log", gw_port)
    audit = tmp_path / "state" / "audit"
    try:
        harness.wait_legs_logged_on(tmp_path / "gw.log", 1, gw)
        c = FixClient(gw_port, client_ssl(certs, "algo1"), "ALGO1")
        c.logon()
        c.send("D", [(11, "UP1"), *NOS])
        assert [c.recv_type(b"8").get(150), c.recv_type(b"8").get(150)] == [b"0", b"F"]

        sim.kill()  # the venue disappears without a Logout
        harness.wait_record(audit, lambda r: r["kind"] == "upstream_logout",
                            "an upstream_logout record: the gateway noticing the dead exchange leg", proc=gw)
        c.send("D", [(11, "DOWN1"), *NOS])
        bmr = c.recv_type(b"j")  # the client is told, nothing is queued silently
        assert bmr.get(380) == b"4" and b"not logged on" in (bmr.get(58) or b"")

        sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp_path / "sim2.log", sim_port)
        harness.wait_for(lambda: sum(r["kind"] == "upstream_logon" for r in harness.read_records(audit)) >= 2,
                         "a second upstream_logon record: the exchange leg reconnecting", proc=gw)
        c.send("D", [(11, "UP2"), *NOS])  # the same client session, never logged out
        assert [c.recv_type(b"8").get(150), c.recv_type(b"8").get(150)] == [b"0", b"F"]
        received = [line.split()[2] for line in (tmp_path / "received.log").read_text().splitlines()]
        assert received == ["UP1", "UP2"]  # DOWN1 never crossed, nothing crossed twice
        seqs = [r for r in harness.audit_records(audit) if r["kind"] == "decision"
                and r["direction"] == "outbound"]
        assert [r["client_seq"] for r in seqs] == [2, 3, 4]  # the client leg's numbers went on
    finally:
        gw.stop()
        sim.stop()
    assert harness.audit_records(audit)  # and the chain is whole
    from gateway.edges.audit import load_or_create_key, verify

    assert verify(audit, load_or_create_key(tmp_path / "state" / "audit-signing.key").public_key()).ok


def test_a_fill_sent_while_the_gateway_was_down_arrives_by_resend_on_both_legs(tmp_path: Path) -> None:
    """The venue fills an order while the gateway is dead (SIGKILL): the Fill waits in the venue's
    store under the next sequence number; when the gateway's exchange leg logs on again the gap is
    seen, a ResendRequest brings the Fill over (PossDupFlag=Y), the gateway keeps it for the client,
    and the client gets it on its next Logon by resend — nothing lost on either leg."""
    certs = harness.make_pki(tmp_path / "certs")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, clients=("ALGO1",),
                                 upstream_extra="reconnect_min = 0.1\nreconnect_max = 0.4",
                                 sim_extra="fill_delay_ms = 800")
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp_path / "sim.log", sim_port)
    gw = harness.start(["run", "--config", str(cfg)], tmp_path / "gw.log", gw_port)
    audit = tmp_path / "state" / "audit"
    try:
        harness.wait_legs_logged_on(tmp_path / "gw.log", 1, gw)
        c = FixClient(gw_port, client_ssl(certs, "algo1"), "ALGO1")
        c.logon()
        c.send("D", [(11, "GAP1"), *NOS])
        assert c.recv_type(b"8").get(150) == b"0"  # New at once; the Fill follows in 0.8 s
        gw.kill()
        c.close()
        # the venue fills now, with nobody connected: the Fill goes into its store for resend
        [venue_store] = (tmp_path / "sim-state").glob("*/messages.log")
        harness.wait_for(lambda: b"\x01150=F\x01" in venue_store.read_bytes(),
                         "the venue to store its Fill of GAP1 for resend", proc=sim)
        gw = harness.start(["run", "--config", str(cfg)], tmp_path / "gw2.log", gw_port)
        harness.wait_record(audit, lambda r: r["kind"] == "stored_for_offline_client" and r.get("cl_ord_id") == "GAP1",
                            "a stored_for_offline_client record: the venue's Fill reaching the gateway", proc=gw)
        c2 = FixClient(gw_port, client_ssl(certs, "algo1"), "ALGO1")
        c2.seq = c.seq
        c2.logon()
        c2.send("2", [(7, "1"), (16, "0")])  # the client asks for everything it may have missed
        fill = None
        for _ in range(20):  # gap fills for session-level messages, the New again, then the Fill
            m = c2.recv(timeout=5)
            assert m is not None, "closed before the Fill came"
            if m.msg_type == b"8" and m.get(150) == b"F":
                fill = m
                break
        assert fill is not None and fill.get(11) == b"GAP1" and fill.get(43) == b"Y"  # delivered by resend
        c2.close()
    finally:
        gw.stop()
        sim.stop()
    inbound = [r for r in harness.audit_records(audit) if r["kind"] == "stored_for_offline_client"]
    assert [r["cl_ord_id"] for r in inbound] == ["GAP1"]  # the Fill crossed exactly once
