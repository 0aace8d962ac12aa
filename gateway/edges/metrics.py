"""Prometheus metrics (edge), served by the admin API at ``GET /metrics``.

Each gateway process owns a registry (no global state, so tests can run
several gateways).  Label children are bound once and cached: an increment
on the per-message path is a dict lookup and an add.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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
        self.rule_hits = Counter("fixgw_rule_hits_total", "Decisions each policy rule (or check) took part in",
                                 ["rule"], registry=self.registry)
        self.decision_seconds = Histogram(
            "fixgw_decision_seconds", "Time to decide an outbound message (kill switch, policy, risk)",
            buckets=(2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2), registry=self.registry)
        self.sessions = Gauge("fixgw_sessions", "Client connections by state (at scrape time)", ["state"],
                              registry=self.registry)
        self.upstream_up = Gauge("fixgw_upstream_logged_on", "1 when the exchange leg is logged on",
                                 ["session"], registry=self.registry)
        self.posture_age = Gauge("fixgw_posture_age_seconds",
                                 "Age of the newest posture assertion per identity with a live session",
                                 ["identity"], registry=self.registry)
        self.connections_refused = Counter("fixgw_connections_refused_total",
                                           "Client connections refused before TLS by the admission limits",
                                           ["limit"], registry=self.registry)
        # a refused feed keeps the last good state in force, so only these say that something is wrong
        self.feed_errors = Counter("fixgw_feed_errors_total",
                                   "Feed input refused (a whole file or one entry), by feed: posture, jit, "
                                   "jit_break_glass, kill_switch, crl, denylist, admin_revoked, policy, server_cert "
                                   "(watch: a step of the watch itself failed)",
                                   ["feed"], registry=self.registry)
        self.feed_stale = Gauge("fixgw_feed_stale", "1 while a feed is stale: the posture file not rewritten "
                                "within max_age, the CRL past its nextUpdate", ["feed"], registry=self.registry)
        self._decision_children: dict[tuple[str, str], object] = {}
        self._rule_children: dict[str, object] = {}

    def decision(self, direction: str, outcome: str, rules: tuple[str, ...] = ()) -> None:
        child = self._decision_children.get((direction, outcome))
        if child is None:
            child = self._decision_children[(direction, outcome)] = self.decisions.labels(direction, outcome)
        child.inc()  # type: ignore[attr-defined]
        for rule in rules:
            hit = self._rule_children.get(rule)
            if hit is None:
                hit = self._rule_children[rule] = self.rule_hits.labels(rule)
            hit.inc()  # type: ignore[attr-defined]

    def render(self) -> bytes:
        return generate_latest(self.registry)
