"""Policy engine properties (Hypothesis) and the loader's errors."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.fix import codec
from gateway.core.policy.engine import POSTURE_LEVELS, Context, Policy, Rule
from gateway.edges.config import ConfigError
from gateway.edges.policy_file import load

ROLES = ["trader", "algo", "quant", "risk"]
ZONES = ["lan", "vpn", "colo", None]
TYPES = [b"D", b"F", b"R", b"V"]
T0 = 1_800_000_000.0


def rule_st(i: int) -> st.SearchStrategy[Rule]:
    return st.builds(
        Rule,
        id=st.just(f"r{i}"),
        decision=st.sampled_from(["allow", "deny"]),
        shadow=st.booleans(),
        roles=st.frozensets(st.sampled_from(ROLES), max_size=2),
        msg_types=st.frozensets(st.sampled_from(TYPES), min_size=1, max_size=2),
        direction=st.just("outbound"),
        zones=st.none() | st.frozensets(st.sampled_from([z for z in ZONES if z]), min_size=1),
        posture=st.none() | st.frozensets(st.sampled_from(POSTURE_LEVELS), min_size=1),
        window=st.none(),
        symbols=st.none() | st.just(frozenset({b"INTC"})),
        accounts=st.none(),
        max_qty=st.none() | st.sampled_from([50.0, 500.0]),
        max_notional=st.none(),
        controls=st.frozensets(st.sampled_from(["mfa", "session_logging"])),
        ip_allowlist=st.just(()),
    )


rules_st = st.integers(0, 12).flatmap(lambda n: st.tuples(*[rule_st(i) for i in range(n)]))
ctx_st = st.builds(Context, identity=st.just("x"), roles=st.frozensets(st.sampled_from(ROLES), max_size=2),
                   zone=st.sampled_from(ZONES), posture=st.sampled_from(POSTURE_LEVELS), mfa=st.booleans(),
                   peer=st.just(ipaddress.ip_address("127.0.0.1")), jit=st.booleans(), now=st.just(T0))
msg_st = st.builds(lambda mt, sym, qty: codec.parse(codec.encode(b"FIX.4.4", [(35, mt), (34, b"2"), (55, sym),
                                                                              (38, qty)])),
                   st.sampled_from(TYPES), st.sampled_from([b"INTC", b"MSFT"]), st.sampled_from([b"10", b"100"]))


@settings(max_examples=120, deadline=None)
@given(rules=rules_st, ctx=ctx_st, msg=msg_st)
def test_evaluation_is_deterministic(rules: tuple[Rule, ...], ctx: Context, msg: codec.Message) -> None:
    p = Policy(list(rules))
    assert p.decide(ctx, msg) == p.decide(ctx, msg) == Policy(list(rules)).decide(ctx, msg)


@settings(max_examples=120, deadline=None)
@given(rules=rules_st, ctx=ctx_st, msg=msg_st)
def test_a_matching_enforced_deny_always_wins(rules: tuple[Rule, ...], ctx: Context, msg: codec.Message) -> None:
    p = Policy(list(rules))
    deny = Rule("deny-all", "deny", False, frozenset(), frozenset(TYPES), "outbound", None, None, None, None, None,
                None, None, frozenset(), ())
    d = Policy([*rules, deny]).decide(ctx, msg)
    assert not d.allowed and "deny-all" in d.rule_ids
    assert p.decide(ctx, msg).allowed in (True, False)


@settings(max_examples=120, deadline=None)
@given(rules=rules_st, ctx=ctx_st, msg=msg_st)
def test_shadow_rules_never_change_the_enforced_outcome(rules: tuple[Rule, ...], ctx: Context,
                                                        msg: codec.Message) -> None:
    enforced = [r for r in rules if not r.shadow]
    with_shadow = Policy(list(rules)).decide(ctx, msg)
    without = Policy(enforced).decide(ctx, msg)
    assert (with_shadow.allowed, with_shadow.rule_ids) == (without.allowed, without.rule_ids)
    flipped = [dataclasses.replace(r, shadow=True) for r in rules]
    assert not Policy(flipped).decide(ctx, msg).allowed  # only shadow rules: default deny


@settings(max_examples=100, deadline=None)
@given(rules=rules_st, ctx=ctx_st, msg=msg_st)
def test_global_shadow_lets_everything_through_but_records_the_would_be_decision(
        rules: tuple[Rule, ...], ctx: Context, msg: codec.Message) -> None:
    normal = Policy(list(rules)).decide(ctx, msg)
    shadow = Policy(list(rules), global_shadow=True).decide(ctx, msg)
    assert shadow.allowed
    assert shadow.rule_ids == normal.rule_ids
    assert shadow.outcome == ("allow" if normal.allowed else "shadow-deny")


def test_shipped_policy_loads() -> None:
    policy, spec = load(Path(__file__).resolve().parents[1] / "config" / "policy.toml")
    assert len(policy.rules) >= 7 and "corporate_lan" in spec.zones


@pytest.mark.parametrize("mutate,words", [
    (lambda t: t.replace('decision = "deny"', 'decision = "maybe"', 1), "rule 'quant-analytics-sandbox-deny'"),
    (lambda t: t.replace('zones = ["dev_sandbox"]', 'zones = ["nowhere"]'), "unknown zone 'nowhere'"),
    (lambda t: t.replace('actions = ["rfq_analytics"]', 'actions = ["teleport"]', 1), "unknown action 'teleport'"),
    (lambda t: t.replace('controls = ["jit", "mfa", "full_capture"]', 'controls = ["prayer"]'),
     "unknown control 'prayer'"),
    (lambda t: t.replace('id = "trader-history-vpn"', 'id = "trader-create-rfq-lan"'), "used twice"),
])
def test_policy_errors_name_the_file_the_rule_and_the_key(tmp_path: Path, mutate, words) -> None:  # type: ignore[no-untyped-def]
    src = (Path(__file__).resolve().parents[1] / "config" / "policy.toml").read_text()
    bad = tmp_path / "p.toml"
    bad.write_text(mutate(src))
    with pytest.raises(ConfigError) as exc:
        load(bad)
    assert str(bad) in str(exc.value) and words in str(exc.value), str(exc.value)


def test_inbound_rules_decide_what_the_exchange_may_send_to_a_role() -> None:
    policy, _ = load(Path(__file__).resolve().parents[1] / "config" / "policy.toml")
    er = codec.parse(codec.encode(b"FIX.4.4", [(35, b"8"), (34, b"2"), (150, b"F")]))

    def ctx(role: str) -> Context:
        return Context("x", frozenset({role}), "corporate_lan", "compliant", True, None, False, T0, "inbound")

    assert policy.decide(ctx("trader"), er).allowed
    assert policy.decide(ctx("risk_officer"), er).rule_ids == ("inbound-risk-read-only",)
    denied = policy.decide(ctx("quant"), er)
    assert not denied.allowed and denied.rule_ids == ("default-deny",)
    # an inbound rule never grants the outbound direction: the risk officer still cannot send orders
    nos = codec.parse(codec.encode(b"FIX.4.4", [(35, b"D"), (34, b"2"), (38, b"1"), (44, b"1")]))
    out = Context("x", frozenset({"risk_officer"}), "corporate_lan", "compliant", True, None, False, T0)
    assert not policy.decide(out, nos).allowed


def test_time_windows_are_judged_in_the_rules_time_zone() -> None:
    from zoneinfo import ZoneInfo

    from gateway.core.policy.engine import TimeWindow

    london_hours = TimeWindow(ZoneInfo("Europe/London"), frozenset(range(5)), 7 * 60, 19 * 60)
    # 2027-01-15 is a Friday; London is on UTC in January
    assert london_hours.contains(1_800_000_000.0)  # 08:00 UTC
    assert not london_hours.contains(1_800_000_000.0 - 2 * 3600)  # 06:00
    assert not london_hours.contains(1_800_000_000.0 + 86400)  # Saturday
    tokyo = TimeWindow(ZoneInfo("Asia/Tokyo"), frozenset(range(7)), 9 * 60, 15 * 60)
    assert not tokyo.contains(1_800_000_000.0)  # 17:00 in Tokyo
    overnight = TimeWindow(ZoneInfo("UTC"), frozenset(range(7)), 22 * 60, 2 * 60)
    assert overnight.contains(1_800_000_000.0 - 9 * 3600) and not overnight.contains(1_800_000_000.0)


def test_zones_by_cidr_or_listener_first_definition_wins() -> None:
    from gateway.core.identity import zone_entries, zone_of

    table = zone_entries({"desk": ["127.0.0.2/32"], "fix-listener": ["listener:default"], "lo": ["127.0.0.0/8"]})
    assert zone_of("127.0.0.2", table, "default") == "desk"
    assert zone_of("127.0.0.9", table, "default") == "fix-listener"
    assert zone_of("127.0.0.9", table, "other") == "lo"
