"""Prometheus metrics (edge), served by the admin API at ``GET /metrics``.

Each gateway process owns a registry (no global state, so tests can run
several gateways).  The per-message figures (decisions, rule hits, decision
time) are plain integers on the hot path and reach their Prometheus metrics
at scrape time (``render``): a prometheus_client increment takes a lock and
a histogram observation walks its buckets, which cost more per message than
the counting itself.  The exposition is the same as if every increment had
gone to prometheus_client directly (``tests/test_metrics.py``).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client import metrics as _prometheus_metrics
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class _Tally:
    """Counts since the last scrape, and the label child of a Counter they go to."""

    __slots__ = ("n", "child")

    def __init__(self, child: Counter) -> None:
        self.n = 0
        self.child = child


class PlainHistogram(Collector):
    """A label-less histogram counted in plain numbers, exported as prometheus_client's ``Histogram``
    exports (``_bucket`` cumulative per ``le``, ``_count``, ``_sum``, ``_created``)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...],
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = [float(b) for b in buckets]
        if self.bounds[-1] != float("inf"):
            self.bounds.append(float("inf"))
        self.labels: list[str] = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.created = time.time()
        registry.register(self)

    def observe(self, amount: float) -> None:
        i = bisect.bisect_left(self.bounds, amount)
        self.sum += amount
        if i < len(self.counts) and amount <= self.bounds[i]:  # NaN: counted in no bucket, as Histogram does
            self.counts[i] += 1

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation)
        acc = 0
        cumulative: list[tuple[str, float]] = []
        for le, n in zip(self.labels, self.counts, strict=True):
            acc += n
            cumulative.append((le, float(acc)))
        family.add_metric([], cumulative, self.sum)
        if getattr(_prometheus_metrics, "_use_created", True):
            family.add_sample(self.name + "_created", {}, self.created)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation)


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
        self.decision_seconds = PlainHistogram(
            "fixgw_decision_seconds", "Time to decide an outbound message (kill switch, policy, risk)",
            (2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2), self.registry)
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
        # plain counts since the last scrape, with the label child each one goes to (bound at the first
        # count, so the child's ``_created`` is when it was first counted, as with direct increments)
        self._decision_counts: dict[tuple[str, str], _Tally] = {}
        self._rule_counts: dict[str, _Tally] = {}

    def decision(self, direction: str, outcome: str, rules: tuple[str, ...] = ()) -> None:
        """One decision (and the rules it hit): counted here, exported at the next scrape."""
        entry = self._decision_counts.get((direction, outcome))
        if entry is None:
            entry = self._decision_counts[(direction, outcome)] = _Tally(self.decisions.labels(direction, outcome))
        entry.n += 1
        for rule in rules:
            hit = self._rule_counts.get(rule)
            if hit is None:
                hit = self._rule_counts[rule] = _Tally(self.rule_hits.labels(rule))
            hit.n += 1

    def sync(self) -> None:
        """Move the plain counts into their Prometheus counters (before every scrape)."""
        for tallies in (self._decision_counts.values(), self._rule_counts.values()):
            for tally in tallies:
                if tally.n:
                    tally.child.inc(tally.n)
                    tally.n = 0

    def render(self) -> bytes:
        self.sync()
        return generate_latest(self.registry)
