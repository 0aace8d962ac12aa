"""The per-message metrics are plain numbers on the hot path; a scrape shows what prometheus_client would.

``Metrics.decision`` and ``decision_seconds.observe`` count in plain integers
and reach Prometheus at scrape time.  These tests build the same metrics
with prometheus_client's own ``Counter`` / ``Histogram``, feed both the same
observations, and compare the two expositions line by line (the ``_created``
timestamps aside, which differ by construction time).
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.edges.metrics import Metrics

BUCKETS = (2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2)


def _lines(exposition: bytes, names: tuple[str, ...]) -> list[str]:
    out = []
    for line in exposition.decode().splitlines():
        name = line.split(" ", 3)[2] if line.startswith("#") else line.split("{", 1)[0].split(" ", 1)[0]
        if not name.startswith(names):
            continue
        if "_created" in line and not line.startswith("#"):
            line = line.rsplit(" ", 1)[0] + " <created>"
        out.append(line)
    return out


DECISIONS = st.tuples(st.sampled_from(["outbound", "inbound"]), st.sampled_from(["allow", "deny", "shadow"]),
                      st.lists(st.sampled_from(["r1", "r2", "kill-switch"]), max_size=3).map(tuple))
AMOUNTS = st.one_of(st.floats(min_value=0, max_value=0.1), st.sampled_from([*BUCKETS, 0.0, 1.0, math.inf]))


@given(st.lists(st.one_of(DECISIONS, AMOUNTS), max_size=60), st.integers(0, 60))
def test_a_scrape_shows_what_prometheus_client_would(events: list[object], scrape_at: int) -> None:
    m = Metrics()
    ref = CollectorRegistry()
    decisions = Counter("fixgw_decisions_total", "Policy decisions on application messages",
                        ["direction", "decision"], registry=ref)
    hits = Counter("fixgw_rule_hits_total", "Decisions each policy rule (or check) took part in", ["rule"],
                   registry=ref)
    seconds = Histogram("fixgw_decision_seconds", "Time to decide an outbound message (kill switch, policy, risk)",
                        buckets=BUCKETS, registry=ref)
    names = ("fixgw_decisions", "fixgw_rule_hits", "fixgw_decision_seconds")
    for i, ev in enumerate(events):
        if i == scrape_at:  # a scrape in the middle: counts move to Prometheus once, never twice
            assert _lines(m.render(), names) == _lines(generate_latest(ref), names)
        if isinstance(ev, tuple):
            direction, outcome, rules = ev
            m.decision(direction, outcome, rules)
            decisions.labels(direction, outcome).inc()
            for rule in rules:
                hits.labels(rule).inc()
        else:
            assert isinstance(ev, float)
            m.decision_seconds.observe(ev)
            seconds.observe(ev)
    assert _lines(m.render(), names) == _lines(generate_latest(ref), names)
    assert _lines(m.render(), names) == _lines(generate_latest(ref), names)  # a second scrape: nothing new
