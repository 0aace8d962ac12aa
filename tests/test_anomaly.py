"""Anomaly detection: findings against a learned baseline, and the automatic kill switch."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.core.fix import codec
from gateway.core.policy.anomaly import AnomalyDetector, AnomalySettings
from gateway.edges import pki
from tests import harness
from tests.harness import FixClient, client_ssl

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC


def nos(sym: bytes) -> codec.Message:
    return codec.parse(codec.encode(b"FIX.4.4", [(35, b"D"), (34, b"2"), (11, b"X"), (38, b"1"), (55, sym)]))


def test_nothing_is_reported_during_warm_up_and_new_symbols_after_it() -> None:
    d = AnomalyDetector(AnomalySettings(enabled=True, learn_orders=3, min_rate=100))
    assert [d.observe("a", nos(b"INTC"), T0 + i) for i in range(3)] == [[], [], []]
    assert d.observe("a", nos(b"INTC"), T0 + 4) == []
    assert d.observe("a", nos(b"MSFT"), T0 + 5)[0][0] == "new_symbol"
    assert d.observe("a", nos(b"MSFT"), T0 + 6) == []  # learned now
    assert d.observe("b", nos(b"MSFT"), T0 + 7) == []  # baselines are per identity


def test_off_hours_activity_is_reported_once() -> None:
    d = AnomalyDetector(AnomalySettings(enabled=True, learn_orders=2, min_rate=100))
    for i in range(2):
        d.observe("a", nos(b"INTC"), T0 + i)
    night = T0 + 14 * 3600  # 22:00 UTC
    assert [k for k, _ in d.observe("a", nos(b"INTC"), night)] == ["off_hours"]
    assert d.observe("a", nos(b"INTC"), night + 1) == []


def test_a_rate_spike_against_the_moving_average_is_reported() -> None:
    d = AnomalyDetector(AnomalySettings(enabled=True, learn_orders=5, rate_factor=3, min_rate=2))
    for i in range(30):  # one order a second builds the baseline
        d.observe("a", nos(b"INTC"), T0 + i)
    findings = [f for _ in range(20) for f in d.observe("a", nos(b"INTC"), T0 + 31.5)]
    assert [k for k, _ in findings] == ["rate_spike"]


def test_disabled_detector_reports_nothing() -> None:
    d = AnomalyDetector(AnomalySettings(enabled=False, learn_orders=0))
    assert d.observe("a", nos(b"NEW"), T0) == []


def test_an_anomaly_can_trip_the_identitys_kill_switch_through_the_gateway(tmp_path: Path) -> None:
    certs = harness.make_pki(tmp_path / "certs")
    pki.issue(certs, "algo9")
    policy = tmp_path / "policy.toml"
    text = (harness.ROOT / "config" / "policy.toml").read_text()
    text = text.replace("enabled = false", "enabled = true").replace("learn_orders = 200", "learn_orders = 3")
    policy.write_text(text.replace("kill_on = []", 'kill_on = ["new_symbol"]'))
    identities = '[[identities]]\nid = "spiffe://fixgw.dev/client/algo9"\ncomp_ids = ["ALGO9"]\nroles = ["algo"]\n'
    gw_port, sim_port, admin_port = harness.free_port(), harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp_path, certs, gw_port, sim_port, clients=("ALGO9",), identities=identities,
                                 extra=f"[admin]\nport = {admin_port}\n")
    cfg.write_text(cfg.read_text().replace("[policy]\nallow_all = true", f'[policy]\nfile = "{policy}"'))
    sim = harness.start(["exchange-sim", "--config", str(cfg)], tmp_path / "sim.log", sim_port)
    gw = harness.start(["run", "--config", str(cfg)], tmp_path / "gw.log", gw_port)
    try:
        harness.wait_legs_logged_on(tmp_path / "gw.log", 1, gw)
        c = FixClient(gw_port, client_ssl(certs, "algo9"), "ALGO9")
        c.logon()
        base = [(21, "1"), (38, "10"), (40, "2"), (44, "10"), (54, "1"), (60, "20240101-00:00:00")]
        for i in range(3):
            c.send("D", [(11, f"A{i}"), (55, "INTC"), *base])
            assert c.recv_type(b"8").get(150) == b"0"
            c.recv_type(b"8")
        c.send("D", [(11, "A3"), (55, "GME"), *base])  # never traded before
        er = c.recv_type(b"8")
        assert (er.get(150), er.get(39)) == (b"8", b"8") and b"kill-switch" in (er.get(58) or b"")
        c.send("F", [(11, "A4"), (41, "A0"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")])
        assert c.recv_type(b"9").get(41) == b"A0"  # cancels still go through
        audit = tmp_path / "state" / "audit"
        harness.wait_record(audit, lambda r: r["kind"] == "anomaly" and r["finding"] == "new_symbol",
                            "an anomaly audit record with finding new_symbol")
        harness.wait_record(audit, lambda r: r["kind"] == "kill_switch" and r.get("automatic"),
                            "an automatic kill_switch audit record")
        state = json.loads((tmp_path / "state" / "killswitch.json").read_text())
        assert state["identities"] == ["spiffe://fixgw.dev/client/algo9"]
        import http.client

        conn = http.client.HTTPSConnection("127.0.0.1", admin_port, context=client_ssl(certs, "algo9"), timeout=10)
        conn.request("GET", "/metrics")
        assert 'fixgw_anomalies_total{finding="new_symbol"} 1.0' in conn.getresponse().read().decode()
    finally:
        gw.stop()
        sim.stop()
