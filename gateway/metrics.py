"""Prometheus metrics (edge), served by the admin API at ``GET /metrics``.

Each gateway process owns a registry (no global state, so tests can run
several gateways).  Label children are bound once and cached: an increment
on the per-message path is a dict lookup and an add.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter("fixgw_decisions_total", "Policy decisions on application messages",
                                 ["direction", "decision"], registry=self.registry)
        self.anomalies = Counter("fixgw_anomalies_total", "Behavioural anomaly findings", ["finding"],
                                 registry=self.registry)
        self.refusals = Counter("fixgw_refusals_total", "Refusals by rule or check", ["rule"],
                                registry=self.registry)
        self.policy_rules = Gauge("fixgw_policy_rules", "Rules in the loaded policy", registry=self.registry)
        self.audit_failures = Counter("fixgw_audit_write_failures_total", "Audit records that could not be written",
                                      registry=self.registry)
        self.audit_lag = Gauge("fixgw_audit_write_lag_records", "Audit records queued but not yet written "
                               "(fsynced in fsync mode)", registry=self.registry)
        self._decision_children: dict[tuple[str, str], object] = {}

    def decision(self, direction: str, outcome: str) -> None:
        child = self._decision_children.get((direction, outcome))
        if child is None:
            child = self._decision_children[(direction, outcome)] = self.decisions.labels(direction, outcome)
        child.inc()  # type: ignore[attr-defined]

    def render(self) -> bytes:
        return generate_latest(self.registry)
