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
                   peer=st.just(ipaddress.ip_address("127.0.0.1")), jit=st.booleans(), now=st.just(T0),
                   direction=st.just("outbound"))
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


# --- every occurrence, fail-closed numbers, kinds -----------------------------------

extra_st = st.sampled_from([(55, b"INTC"), (55, b"MSFT"), (38, b"10"), (38, b"5000"), (38, b"-5"), (38, b"nan"),
                            (600, b"MSFT"), (1, b"ACC")])


@settings(max_examples=150, deadline=None)
@given(rules=rules_st, ctx=ctx_st, msg=msg_st, extra=extra_st, first=st.booleans())
def test_another_occurrence_never_turns_a_deny_into_an_allow(rules: tuple[Rule, ...], ctx: Context,
                                                             msg: codec.Message, extra: tuple[int, bytes],
                                                             first: bool) -> None:
    """Allow rules need every occurrence, deny rules any one: more fields can only make a message less allowed."""
    body = list(msg.fields[2:])
    more = codec.parse(codec.encode(b"FIX.4.4", [msg.fields[0], msg.fields[1],
                                                 *([extra, *body] if first else [*body, extra])]))
    p = Policy(list(rules))
    if p.decide(ctx, more).allowed:
        assert p.decide(ctx, msg).allowed


def _policy_text(rule_extra: str = "", actions_extra: str = "") -> str:
    return f"""
[actions.orders]
msg_types = ["D"]
{actions_extra}
[[rules]]
id = "r"
actions = ["orders"]
decision = "allow"
{rule_extra}
"""


@pytest.mark.parametrize("text,words", [
    (_policy_text("max_qty = nan"), ["rule 'r': max_qty", "positive"]),
    (_policy_text("max_qty = -1"), ["rule 'r': max_qty", "positive"]),
    (_policy_text("max_notional = inf"), ["rule 'r': max_notional", "positive"]),
    (_policy_text() + "[risk.default]\nmax_order_qty = nan\n", ["risk.default.max_order_qty", "positive"]),
    (_policy_text() + "[risk.accounts.A]\nmax_notional = -5\n", ["risk.accounts.A.max_notional", "positive"]),
    (_policy_text() + "[risk.reference_prices]\nINTC = 0\n", ["risk.reference_prices.INTC", "positive"]),
    (_policy_text() + '[risk.default]\nrestricted_symbols = ["FOO:1"]\n', ["restricted_symbols", "FOO"]),
    (_policy_text('symbols = [" "]'), ["rule 'r': symbols", "empty"]),
    (_policy_text(actions_extra='[actions.b]\nmsg_types = ["U1"]\nkind = "cancel"\n'
                                '[actions.c]\nmsg_types = ["U1"]\nkind = "read"'),
     ["U1", "cancel", "read", "'b'", "'c'"]),
    (_policy_text(actions_extra='direction = "inbound"\nkind = "order"'), ["action 'orders': kind", "outbound"]),
])
def test_numbers_symbols_and_kinds_are_checked_at_load(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert str(path) in str(exc.value) and all(w in str(exc.value) for w in words), str(exc.value)


def test_a_rule_reports_the_field_that_kept_it_from_allowing(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(_policy_text('symbols = ["INTC"]\naccounts = ["A1"]\nmax_qty = 100'))
    policy, _ = load(path)
    ctx = Context("x", frozenset(), None, "compliant", False, None, False, T0)

    def d(*fields: tuple[int, bytes]) -> str:
        decision = policy.decide(ctx, codec.parse(codec.encode(b"FIX.4.4", [(35, b"D"), (34, b"2"), *fields])))
        assert not decision.allowed
        return decision.reason

    assert "r: Symbol(55) MSFT not in the rule's list" in d((1, b"A1"), (55, b"INTC"), (55, b"MSFT"), (38, b"1"))
    assert "r: AllocAccount(79) B2 not in the rule's list" in d((1, b"A1"), (79, b"B2"), (55, b"INTC"), (38, b"1"))
    assert "r: OrderQty(38) 1e2 is not a positive number" in d((1, b"A1"), (55, b"INTC"), (38, b"1e2"))
    assert "r: OrderQty2(192) 101 above 100" in d((1, b"A1"), (55, b"INTC"), (38, b"1"), (192, b"101"))
    assert "r: no quantity" in d((1, b"A1"), (55, b"INTC"))
    assert "r: no instrument" in d((1, b"A1"), (38, b"1"))


def test_policy_kinds_are_the_fix_table_plus_declared_custom_msgtypes(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(_policy_text(actions_extra='[actions.venue]\nmsg_types = ["U5", "U6"]\nkind = "read"\n'
                                               '[actions.venue_in]\nmsg_types = ["U7"]\ndirection = "inbound"'))
    policy, _ = load(path)
    assert [policy.kind_of(mt) for mt in (b"D", b"AB", b"F", b"V", b"U5", b"U6", b"U7", b"BE")] == \
        ["order", "order", "cancel", "read", "read", "read", "other", "other"]
    assert Policy([]).kind_of(b"R") == "order"  # a policy built in code knows the FIX table


def test_the_shipped_policy_declares_its_instruments() -> None:
    policy, spec = load(Path(__file__).resolve().parents[1] / "config" / "policy.toml")
    assert policy.instruments.normalize == ("trim", "upper")
    assert "ISIN:US9999999999" in spec.instruments.aliases["XYZ-RESTRICTED"]


def test_an_allow_hands_its_scan_to_risk(tmp_path: Path) -> None:
    from gateway.core.policy.risk import Limits, RiskBook

    path = tmp_path / "p.toml"
    path.write_text(_policy_text('symbols = ["INTC"]') + '[instruments]\nnormalize = ["trim"]\n')
    policy, _ = load(path)
    ctx = Context("x", frozenset(), None, "compliant", False, None, False, T0)
    m = codec.parse(codec.encode(b"FIX.4.4", [(35, b"D"), (34, b"2"), (11, b"A"), (55, b"INTC "), (38, b"-1")]))
    d = policy.decide(ctx, m)
    assert d.allowed and d.facts is not None
    book = RiskBook(Limits(max_order_qty=10))
    assert book.check(m, T0, None, {}, facts=d.facts) == book.check(m, T0, None, {}) == \
        ("risk.max_order_qty", "OrderQty(38) -1 is not a positive number")
    # with exact case (normalize = ["trim"]) the rule's INTC is not intc
    lower = codec.parse(codec.encode(b"FIX.4.4", [(35, b"D"), (34, b"2"), (55, b"intc"), (38, b"1")]))
    assert not policy.decide(ctx, lower).allowed
    assert Policy([]).decide(ctx, m).facts is None  # no rule read fields: nothing scanned
