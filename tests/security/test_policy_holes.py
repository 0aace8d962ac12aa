"""Policy and pre-trade risk holes, each reproduced at the pure level.

Every test loads a policy from TOML text with ``gateway.edges.policy_file``,
builds FIX messages with ``gateway.core.fix.codec`` and asks the policy
(``Policy.decide``) and the risk book (``RiskBook.check``) what they decide,
exactly as the gateway does for each outbound message.  One test (or a few)
per hole:

1. predicates and risk saw only the first occurrence of a field;
2. numbers failed open (negative, NaN, exponents);
3. scopes were hard-wired MsgTypes instead of the policy's actions;
4. a reused ClOrdID(11) passed with PossResend(97)=Y;
5. symbols were compared byte for byte, SecurityIDs never.
"""

from __future__ import annotations

import ipaddress
import math
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.fix import codec
from gateway.core.fix.codec import Message
from gateway.core.policy.engine import Context, Policy
from gateway.core.policy.risk import Limits, RiskBook
from gateway.edges.config import ConfigError
from gateway.edges.policy_file import PolicySpec, load

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.0
ALGO = Context("spiffe://fixgw.dev/client/algo1", frozenset({"algo"}), "colo", "compliant", True,
               ipaddress.ip_address("127.0.0.1"), False, T0)

ACTIONS = """
[zones]
colo = ["127.0.0.1/32"]

[actions.create_rfq]
msg_types = ["R"]
[actions.order_entry]
msg_types = ["D", "G", "AB", "E"]
"""
#: the rule of hole 1: QuoteRequests for INTC, at most 1,000
RFQ_RULE = """
[[rules]]
id = "intc-rfq"
roles = ["algo"]
actions = ["create_rfq"]
symbols = ["INTC"]
max_qty = 1000
decision = "allow"
"""
ORDER_RULE = """
[[rules]]
id = "intc-orders"
roles = ["algo"]
actions = ["order_entry"]
symbols = ["INTC"]
accounts = ["ACC-1"]
max_qty = 1000
max_notional = 100000
decision = "allow"
"""
DENY_RESTRICTED = """
[[rules]]
id = "no-restricted"
actions = ["create_rfq", "order_entry"]
symbols = ["XYZ-RESTRICTED"]
decision = "deny"
"""
RISK = """
[risk.default]
max_order_qty = 1000000
max_notional = 50000000
restricted_symbols = ["XYZ-RESTRICTED"]
"""
INSTRUMENTS = """
[instruments]
normalize = ["trim", "upper"]
aliases = { "XYZ-RESTRICTED" = ["ISIN:US9999999999"] }
"""


def load_text(tmp_path: Path, text: str) -> tuple[Policy, PolicySpec]:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return load(path)


def msg(mt: bytes, *fields: tuple[int, bytes]) -> Message:
    return codec.parse(codec.encode(b"FIX.4.4", [(35, mt), (34, b"2"), *fields]))


def nos(cl: bytes = b"O1", qty: bytes = b"100", px: bytes = b"30", sym: bytes = b"INTC",
        account: bytes = b"ACC-1", *extra: tuple[int, bytes]) -> Message:
    return msg(b"D", (1, account), (11, cl), *extra, (38, qty), (40, b"2"), (44, px), (54, b"1"), (55, sym))


def book_for(spec: PolicySpec) -> RiskBook:
    return RiskBook(spec.risk.default.compile())


def refused(book: RiskBook, m: Message, policy: Policy | None = None) -> tuple[str, str] | None:
    if policy is None:
        return book.check(m, T0, None, {})
    return book.check(m, T0, None, {}, kind=policy.kind_of(m.msg_type), instruments=policy.instruments)


# --- hole 1: every occurrence in every repeating-group entry -----------------------

def test_hole1_quote_request_second_entry_is_checked(tmp_path: Path) -> None:
    """The exact report: NoRelatedSym(146)=2, INTC x 1,000 then XYZ-RESTRICTED x 5,000,000."""
    policy, spec = load_text(tmp_path, ACTIONS + RFQ_RULE + RISK)
    one = msg(b"R", (131, b"Q1"), (146, b"1"), (55, b"INTC"), (38, b"1000"))
    two = msg(b"R", (131, b"Q2"), (146, b"2"), (55, b"INTC"), (38, b"1000"),
              (55, b"XYZ-RESTRICTED"), (38, b"5000000"))
    assert policy.decide(ALGO, one).allowed  # the rule still allows what it was written for
    d = policy.decide(ALGO, two)
    assert not d.allowed and d.rule_ids == ("default-deny",)
    assert "XYZ-RESTRICTED" in d.reason  # the deny says which occurrence broke the rule
    # risk sees the second entry too: restricted, and 5,000,000 above max_order_qty
    hit = refused(book_for(spec), two, policy)
    assert hit is not None and hit[0] == "risk.restricted_symbol" and "XYZ-RESTRICTED" in hit[1]
    big = msg(b"R", (131, b"Q3"), (146, b"2"), (55, b"INTC"), (38, b"1000"), (55, b"MSFT"), (38, b"5000000"))
    hit = refused(book_for(spec), big, policy)
    assert hit is not None and hit[0] == "risk.max_order_qty" and "5000000" in hit[1]


def test_hole1_deny_lists_match_any_occurrence_allow_lists_need_every_one(tmp_path: Path) -> None:
    policy, _ = load_text(tmp_path, ACTIONS + ORDER_RULE + DENY_RESTRICTED)
    assert policy.decide(ALGO, nos()).allowed
    # a second instrument of a list order, a leg, an underlying: each is an occurrence
    for extra in ((55, b"XYZ-RESTRICTED"), (600, b"XYZ-RESTRICTED"), (311, b"XYZ-RESTRICTED")):
        d = policy.decide(ALGO, nos(b"O2", b"100", b"30", b"INTC", b"ACC-1", extra))
        assert not d.allowed and d.rule_ids == ("no-restricted",), extra
    for extra in ((55, b"MSFT"), (600, b"MSFT"), (1, b"ACC-2"), (79, b"ACC-2"), (38, b"1001")):
        d = policy.decide(ALGO, nos(b"O3", b"100", b"30", b"INTC", b"ACC-1", extra))
        assert not d.allowed and d.rule_ids == ("default-deny",), extra


def test_hole1_notional_is_bounded_over_all_entries(tmp_path: Path) -> None:
    """max_notional: max(quantity) x max(price) over every entry (conservative, fails closed)."""
    policy, _ = load_text(tmp_path, ACTIONS + ORDER_RULE)
    # NewOrderList(E): 10 @ 5,000 and 1,000 @ 10 — the first entry alone is only 50,000
    lst = msg(b"E", (66, b"L1"), (394, b"3"), (73, b"2"),
              (11, b"E1"), (67, b"1"), (1, b"ACC-1"), (55, b"INTC"), (54, b"1"), (38, b"10"), (40, b"2"),
              (44, b"5000"),
              (11, b"E2"), (67, b"2"), (1, b"ACC-1"), (55, b"INTC"), (54, b"1"), (38, b"1000"), (40, b"2"),
              (44, b"10"))
    d = policy.decide(ALGO, lst)
    assert not d.allowed and "notional" in d.reason


# --- hole 2: numbers ----------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("qty", b"-5"), ("qty", b"0"), ("qty", b"NaN"), ("qty", b"nan"), ("qty", b"inf"), ("qty", b"1e3"),
    ("qty", b" 5"), ("qty", b"5_0"), ("qty", b"+5"), ("qty", b"-0"),
    ("px", b"-10"), ("px", b"0"), ("px", b"nan"), ("px", b"-inf"), ("px", b"1E2"), ("px", b"0x1p3"),
])
def test_hole2_numbers_fail_closed(tmp_path: Path, field: str, value: bytes) -> None:
    policy, spec = load_text(tmp_path, ACTIONS + ORDER_RULE + RISK)
    m = nos(b"N1", qty=value) if field == "qty" else nos(b"N1", px=value)
    name = "OrderQty(38)" if field == "qty" else "Price(44)"
    d = policy.decide(ALGO, m)
    assert not d.allowed and f"{name} {value.decode()} is not a positive number" in d.reason, d.reason
    hit = refused(book_for(spec), m, policy)
    assert hit is not None and hit[0] in ("risk.max_order_qty", "risk.max_notional"), hit
    assert f"{name} {value.decode()} is not a positive number" in hit[1]


def test_hole2_the_message_of_the_report() -> None:
    """OrderQty(38)=-5 reads as a quantity below every bound; now it is refused and named."""
    book = RiskBook(Limits(max_order_qty=1000, duplicate_clordid=False))
    hit = book.check(nos(qty=b"-5"), T0, None, {})
    assert hit == ("risk.max_order_qty", "OrderQty(38) -5 is not a positive number")


DECIMAL_TEXT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


@settings(max_examples=400, deadline=None)
@given(st.from_regex(r"\A-?[0-9]{1,15}(\.[0-9]{0,12})?\Z") | st.from_regex(r"\A-?\.[0-9]{1,12}\Z"))
def test_hole2_decimal_grammar_agrees_with_decimal_on_valid_text(text: str) -> None:
    from gateway.core.numbers import parse_decimal

    assert parse_decimal(text.encode()) == float(Decimal(text))


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789.-+eEinfatyINFATY _x\t", max_size=40) | st.binary(max_size=40).map(
    lambda b: b.decode("latin-1")))
def test_hole2_decimal_grammar_accepts_nothing_else(text: str) -> None:
    from gateway.core.numbers import parse_decimal

    got = parse_decimal(text.encode("latin-1"))
    if DECIMAL_TEXT.fullmatch(text) and len(text) <= 32:
        assert got == float(Decimal(text))
    else:
        assert got is None
    assert got is None or math.isfinite(got)


@settings(max_examples=400, deadline=None)
@given(st.from_regex(r"\A-?[0-9]{0,20}(\.[0-9]{0,12})?\Z") | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_hole2_the_hot_path_reads_positive_numbers_by_the_same_grammar(text: str) -> None:
    from gateway.core.numbers import parse_decimal, positive

    value = parse_decimal(text.encode("latin-1"))
    assert positive(text.encode("latin-1")) == (value if value is not None and value > 0 else None)


# --- hole 3: scopes from the policy's actions ------------------------------------

def test_hole3_every_order_kind_msgtype_gets_the_order_checks(tmp_path: Path) -> None:
    """NewOrderMultileg(AB) and NewOrderList(E) under an order action went past every risk limit."""
    policy, spec = load_text(tmp_path, ACTIONS + RISK)
    assert {policy.kind_of(mt) for mt in (b"D", b"G", b"E", b"AB", b"R")} == {"order"}
    multileg = msg(b"AB", (11, b"M1"), (555, b"2"), (600, b"INTC"), (687, b"5000000"), (600, b"MSFT"),
                   (687, b"10"), (54, b"1"), (38, b"10"), (40, b"2"), (44, b"1"), (55, b"INTC-MSFT"))
    hit = refused(book_for(spec), multileg, policy)
    assert hit is not None and hit[0] == "risk.max_order_qty" and "LegQty(687) 5000000" in hit[1]
    lst = msg(b"E", (66, b"L1"), (394, b"3"), (73, b"2"),
              (11, b"E1"), (67, b"1"), (55, b"INTC"), (54, b"1"), (38, b"10"), (40, b"2"), (44, b"30"),
              (11, b"E2"), (67, b"2"), (55, b"XYZ-RESTRICTED"), (54, b"1"), (38, b"10"), (40, b"2"), (44, b"30"))
    hit = refused(book_for(spec), lst, policy)
    assert hit is not None and hit[0] == "risk.restricted_symbol"
    # callers that do not pass the kind get the FIX table's (E and AB are orders there too)
    assert book_for(spec).check(lst, T0, None, {}) is not None


def test_hole3_kinds_come_from_the_fix_table_and_the_policys_actions(tmp_path: Path) -> None:
    from gateway.core.policy.actions import kind_of

    for mt in (b"D", b"G", b"E", b"AB", b"AC", b"R", b"S", b"i", b"s", b"t", b"AJ"):
        assert kind_of(mt) == "order", mt
    for mt in (b"F", b"q", b"u", b"Z"):
        assert kind_of(mt) == "cancel", mt
    for mt in (b"V", b"AD", b"a", b"x", b"c", b"e", b"H", b"AF", b"g", b"v", b"BB"):
        assert kind_of(mt) == "read", mt
    assert kind_of(b"BE") == kind_of(b"U1") == "other"
    policy, _ = load_text(tmp_path, ACTIONS + """
[actions.venue_mass_cancel]
msg_types = ["U9"]
kind = "cancel"
[[rules]]
id = "venue-cancel"
roles = ["algo"]
actions = ["venue_mass_cancel"]
decision = "allow"
""")
    assert policy.kind_of(b"U9") == "cancel" and policy.kind_of(b"R") == "order" and policy.kind_of(b"U1") == "other"


@pytest.mark.parametrize("action,words", [
    # a venue's own order type: the risk engine does not know where its instrument and size are
    ('[actions.venue_order]\nmsg_types = ["U7"]\nkind = "order"\n', ["venue_order", "U7", "risk"]),
    # a FIX order type may never be made something else
    ('[actions.venue_order]\nmsg_types = ["AB"]\nkind = "read"\n', ["venue_order", "AB", "order"]),
    ('[actions.venue_order]\nmsg_types = ["F"]\nkind = "read"\n', ["venue_order", "F", "cancel"]),
    ('[actions.venue_order]\nmsg_types = ["U7"]\nkind = "buy"\n', ["venue_order", "kind", "order"]),
])
def test_hole3_unsafe_kinds_are_refused_at_load(tmp_path: Path, action: str, words: list[str]) -> None:
    rule = '[[rules]]\nid = "r"\nroles = ["algo"]\nactions = ["venue_order"]\ndecision = "allow"\n'
    with pytest.raises(ConfigError) as exc:
        load_text(tmp_path, ACTIONS + action + rule)
    text = str(exc.value)
    assert str(tmp_path / "policy.toml") in text and all(w in text for w in words), text


# --- hole 4: duplicate orders ------------------------------------------------------

def test_hole4_possresend_never_makes_a_reused_clordid_pass(tmp_path: Path) -> None:
    policy, spec = load_text(tmp_path, ACTIONS + RISK)
    book = book_for(spec)
    first = nos(b"DUP")
    assert refused(book, first, policy) is None
    book.accepted(first)
    again = refused(book, nos(b"DUP"), policy)
    assert again is not None and again[0] == "risk.duplicate_clordid"
    resent = refused(book, nos(b"DUP", b"100", b"30", b"INTC", b"ACC-1", (97, b"Y")), policy)
    assert resent is not None and resent[0] == "risk.possresend_duplicate" and "DUP" in resent[1]
    # every ClOrdID of a NewOrderList is an order of its own
    lst = msg(b"E", (66, b"L1"), (394, b"3"), (73, b"2"),
              (11, b"NEW"), (67, b"1"), (55, b"INTC"), (54, b"1"), (38, b"10"), (40, b"2"), (44, b"30"),
              (11, b"DUP"), (67, b"2"), (55, b"INTC"), (54, b"1"), (38, b"10"), (40, b"2"), (44, b"30"))
    hit = refused(book, lst, policy)
    assert hit is not None and hit[0] == "risk.duplicate_clordid" and "DUP" in hit[1]


# --- hole 5: symbols and SecurityIDs ------------------------------------------------

@pytest.mark.parametrize("sym", [b"XYZ-RESTRICTED ", b"xyz-restricted", b" Xyz-Restricted\t"])
def test_hole5_restricted_symbols_survive_case_and_spaces(tmp_path: Path, sym: bytes) -> None:
    policy, spec = load_text(tmp_path, ACTIONS + ORDER_RULE.replace('"INTC"', '"INTC", "XYZ-RESTRICTED"')
                             + DENY_RESTRICTED + RISK + INSTRUMENTS)
    m = nos(b"S1", sym=sym)
    d = policy.decide(ALGO, m)
    assert not d.allowed and d.rule_ids == ("no-restricted",)
    hit = refused(book_for(spec), m, policy)
    assert hit is not None and hit[0] == "risk.restricted_symbol"
    assert policy.decide(ALGO, nos(b"S2", sym=b" intc ")).allowed  # allow-lists are normalised the same way


@pytest.mark.parametrize("ids", [
    [(48, b"US9999999999"), (22, b"4")],  # SecurityID only, its ISIN aliased to XYZ-RESTRICTED
    [(22, b"4"), (48, b"us9999999999 ")],  # source first, lower case, trailing space
    [(48, b"US9999999999"), (22, b"5")],  # the same identifier under another source: still restricted
    [(48, b"US9999999999")],  # no SecurityIDSource(22) at all
    [(55, b"INTC"), (48, b"US9999999999"), (22, b"4")],  # Symbol says INTC, SecurityID says otherwise
    [(55, b"INTC"), (555, b"1"), (602, b"US9999999999"), (603, b"4")],  # a leg named by its ISIN
])
def test_hole5_an_instrument_named_by_security_id_is_checked(tmp_path: Path,
                                                             ids: list[tuple[int, bytes]]) -> None:
    policy, spec = load_text(tmp_path, ACTIONS + ORDER_RULE + RISK + INSTRUMENTS)
    m = msg(b"D", (1, b"ACC-1"), (11, b"ID1"), *ids, (38, b"100"), (40, b"2"), (44, b"30"), (54, b"1"))
    hit = refused(book_for(spec), m, policy)
    assert hit is not None and hit[0] == "risk.restricted_symbol", hit
    assert not policy.decide(ALGO, m).allowed  # not in the INTC allow-list: default deny


def test_hole5_an_unknown_security_id_never_matches_an_allow_list(tmp_path: Path) -> None:
    aliases = INSTRUMENTS.replace('aliases = {', 'aliases = { "INTC" = ["ISIN:US4581401001"],')
    policy, spec = load_text(tmp_path, ACTIONS + ORDER_RULE + RISK + aliases)
    base = [(1, b"ACC-1"), (11, b"ID2"), (38, b"100"), (40, b"2"), (44, b"30"), (54, b"1")]
    unknown = msg(b"D", *base, (48, b"US0000000001"), (22, b"4"))
    d = policy.decide(ALGO, unknown)
    assert not d.allowed and d.rule_ids == ("default-deny",) and "US0000000001" in d.reason
    assert refused(book_for(spec), unknown, policy) is None  # unknown is not restricted: risk lets it be
    known = msg(b"D", *base, (48, b"US4581401001"), (22, b"4"))  # INTC's ISIN, by alias
    assert policy.decide(ALGO, known).allowed
    both = msg(b"D", *base, (55, b"INTC"), (48, b"US4581401001"), (22, b"4"))
    assert policy.decide(ALGO, both).allowed


def test_hole5_the_shipped_policy_catches_every_spelling(tmp_path: Path) -> None:
    policy, spec = load(ROOT / "config" / "policy.toml")
    book = RiskBook(spec.risk.default.compile())
    base = [(11, b"X1"), (38, b"100"), (40, b"2"), (44, b"30"), (54, b"1")]
    for names in ([(55, b"XYZ-RESTRICTED ")], [(55, b"xyz-restricted")], [(48, b"US9999999999"), (22, b"4")]):
        m = msg(b"D", *base, *names)
        hit = book.check(m, T0, None, {}, instruments=policy.instruments)
        assert hit is not None and hit[0] == "risk.restricted_symbol", names
        # the alias is in the compiled limits too, so a caller without the instruments still refuses
        assert book.check(m, T0, None, {}) is not None, names


@pytest.mark.parametrize("table,words", [
    ('normalize = ["trim", "lower"]', ["instruments.normalize", "lower", "trim, upper"]),
    ('aliases = { "XYZ" = ["US9999999999"] }', ["instruments.aliases", "US9999999999", "ISIN"]),
    ('aliases = { "XYZ" = ["FOO:US9999999999"] }', ["instruments.aliases", "FOO", "CUSIP"]),
    ('aliases = { "XYZ" = ["ISIN:US1"], "ABC" = ["4:US1"] }', ["instruments.aliases", "US1", "XYZ", "ABC"]),
])
def test_hole5_instrument_table_errors_name_the_key_and_what_is_valid(tmp_path: Path, table: str,
                                                                      words: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        load_text(tmp_path, ACTIONS + ORDER_RULE + f"[instruments]\n{table}\n")
    text = str(exc.value)
    assert all(w in text for w in words), text



ROUTING_RULES = """
[[rules]]
id = "obo-client-a"
roles = ["algo"]
actions = ["order_entry"]
routing = { OnBehalfOfCompID = ["CLIENT-A"] }
decision = "allow"
[[rules]]
id = "never-for-sanctioned"
actions = ["order_entry"]
routing = { DeliverToCompID = ["SANCTIONED"] }
decision = "deny"
"""


def test_rules_may_name_routing_fields(tmp_path: Path) -> None:
    """Rules name routing/attribution values: an allow needs every occurrence listed, a deny matches any one."""
    policy, _ = load_text(tmp_path, ACTIONS + ROUTING_RULES)
    assert policy.decide(ALGO, nos()).allowed is False  # no OnBehalfOfCompID: the allow rule does not apply
    assert policy.decide(ALGO, msg(b"D", (115, b"CLIENT-A"), (11, b"O1"))).allowed
    assert not policy.decide(ALGO, msg(b"D", (115, b"CLIENT-A"), (115, b"CLIENT-B"), (11, b"O1"))).allowed
    d = policy.decide(ALGO, msg(b"D", (115, b"CLIENT-A"), (128, b"SANCTIONED"), (11, b"O1")))
    assert not d.allowed and d.rule_ids == ("never-for-sanctioned",)
    with pytest.raises(ConfigError, match="routing.Bogus"):
        load_text(tmp_path, ACTIONS + ROUTING_RULES.replace("DeliverToCompID", "Bogus"))
