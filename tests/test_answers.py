"""Refusal answers (pure): the message type and fields the client's order state machine expects,
valid in every FIX version the gateway speaks (checked against each version's own dictionary)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.answers import (
    business_reject,
    cancel_refusal,
    order_refusal,
    refusal,
    venue_invalid,
    venue_reject,
)
from gateway.core.fix import codec
from gateway.core.fix import tags as T
from gateway.core.fix.compose import layout
from gateway.core.fix.dictionary import Validator, standard_validator
from gateway.core.fix.versions import APPL_VERSIONS, FIXT11

NOS = codec.parse(codec.encode(b"FIX.4.4", [(35, b"D"), (34, b"7"), (11, b"C1"), (38, b"100"), (54, b"2"),
                                            (55, b"INTC")]))
#: every (BeginString, ApplVerID) a session can speak: FIX.4.0-4.4, and FIXT.1.1 over each application version
VERSIONS = [(b, None) for b in (b"FIX.4.0", b"FIX.4.1", b"FIX.4.2", b"FIX.4.3", b"FIX.4.4")] + [
    (FIXT11, a) for a in APPL_VERSIONS]
IDS = [f"{b.decode()}{'/' + a.decode() if a else ''}" for b, a in VERSIONS]
_VALIDATORS: dict[tuple[bytes, bytes | None], Validator] = {}


def validator(begin: bytes, appl: bytes | None) -> Validator:
    key = (begin, appl)
    if key not in _VALIDATORS:
        _VALIDATORS[key] = standard_validator(begin, default_appl_ver_id=appl)
    return _VALIDATORS[key]


def check(begin: bytes, appl: bytes | None, msg_type: bytes, body: list[tuple[int, bytes]]) -> codec.Message:
    """The answer as the client's session would send it, validated against the version's dictionary."""
    head = [(35, msg_type), (34, b"2"), (49, b"GW"), (52, b"20260101-00:00:00"), (56, b"CLIENT")]
    m = codec.parse(codec.encode(begin, [*head, *body]))
    err = validator(begin, appl).validate(m)
    assert err is None, f"{begin.decode()}/{appl!r} {msg_type.decode()}: {err.detail if err else ''} in {body}"
    return m


def refused(begin: bytes, mt: bytes, fields: list[tuple[int, bytes]]) -> codec.Message:
    return codec.parse(codec.encode(begin, [(35, mt), (34, b"7"), *fields]))


def test_a_refused_order_is_a_rejected_execution_report_with_nothing_left_open() -> None:
    mt, body = order_refusal(NOS, "refused by r1: no", b"GW-REJ-1", 0.0, b"FIX.4.4")
    d = dict(body)
    assert mt == b"8" and (d[39], d[150], d[151], d[14], d[103]) == (b"8", b"8", b"0", b"0", b"99")
    assert (d[11], d[38], d[54], d[55], d[58]) == (b"C1", b"100", b"2", b"INTC", b"refused by r1: no")
    assert 20 not in d


def test_each_version_gets_the_values_and_fields_it_has() -> None:
    v40 = dict(order_refusal(NOS, "x", b"E", 0.0, b"FIX.4.0").body)
    assert v40[20] == b"0" and v40[32] == v40[31] == b"0" and 150 not in v40 and v40[103] == b"0"
    assert dict(order_refusal(NOS, "x", b"E", 0.0, b"FIX.4.1").body)[20] == b"0"
    v42 = dict(order_refusal(NOS, "x", b"E", 0.0, b"FIX.4.2").body)
    assert v42[20] == b"0" and v42[103] == b"0"
    assert dict(order_refusal(NOS, "x", b"E", 0.0, b"FIX.4.3").body)[103] == b"0"
    assert dict(cancel_refusal(NOS, "x", b"FIX.4.2").body)[102] == b"2"
    assert dict(cancel_refusal(NOS, "x", b"FIX.4.3").body)[102] == b"2"
    assert dict(cancel_refusal(NOS, "x", b"FIX.4.4").body)[102] == b"99"
    c40 = dict(cancel_refusal(NOS, "x", b"FIX.4.0").body)
    assert 39 not in c40 and 102 not in c40 and c40[11] == b"C1"
    assert business_reject(NOS, 6, "x", b"FIX.4.2").body[-1] == (380, b"0")  # no NotAuthorized in 4.2
    assert business_reject(NOS, 6, "x", b"FIX.4.4").body[-1] == (380, b"6")
    # before FIX.4.2 there is no BusinessMessageReject(j): Reject(3) with RefSeqNum(45)
    assert business_reject(NOS, 6, "no", b"FIX.4.1") == (b"3", [(45, b"7"), (58, b"no")])


def test_timestamps_have_milliseconds_only_from_fix42() -> None:
    assert dict(order_refusal(NOS, "x", b"E", 1.5, b"FIX.4.1").body)[60] == b"19700101-00:00:01"
    assert dict(order_refusal(NOS, "x", b"E", 1.5, b"FIX.4.2").body)[60] == b"19700101-00:00:01.500"


def test_a_business_reject_names_the_refused_message() -> None:
    mt, body = business_reject(NOS, 6, "not authorized", b"FIX.4.4")
    d = dict(body)
    assert mt == b"j" and (d[45], d[372], d[379], d[380], d[58]) == (b"7", b"D", b"C1", b"6", b"not authorized")


@pytest.mark.parametrize("begin,appl", VERSIONS, ids=IDS)
def test_every_refusal_answer_of_every_version_is_valid_in_that_version(begin: bytes, appl: bytes | None) -> None:
    b = begin if begin != FIXT11 else b"FIX.4.4"  # the refused message's own BeginString does not matter
    nos = refused(b, b"D", [(11, b"C1"), (38, b"100"), (54, b"2"), (55, b"INTC")])
    bare = refused(b, b"D", [])  # a refused message may lack anything (validation off, or refused for it)
    cxl = refused(b, b"F", [(11, b"C2"), (41, b"C1"), (37, b"O1"), (54, b"1"), (55, b"INTC")])
    rfq = refused(b, b"R", [(131, b"Q1")])
    for m in (nos, bare, cxl, rfq, refused(b, b"V", []), refused(b, b"G", [(11, b"C3"), (41, b"C1")])):
        for reason in (T.BRR_NOT_AUTHORIZED, T.BRR_APPLICATION_NOT_AVAILABLE, T.BRR_OTHER):
            mt, body = refusal(m, "refused by r: why", reason, b"GW-REJ-1", 1.0, begin, appl)
            answer = check(begin, appl, mt, body)
            assert answer.get(T.Text) == b"refused by r: why"
    assert refusal(nos, "x", 6, b"E", 0.0, begin, appl).msg_type == b"8"
    assert refusal(cxl, "x", 6, b"E", 0.0, begin, appl).msg_type == b"9"
    assert refusal(rfq, "x", 6, b"E", 0.0, begin, appl).msg_type == (b"j" if layout(begin, appl).has(b"j") else b"3")


@pytest.mark.parametrize("begin,appl", VERSIONS, ids=IDS)
def test_every_venue_answer_of_every_version_is_valid_in_that_version(begin: bytes, appl: bytes | None) -> None:
    carried = refused(begin, b"D", [(11, b"C1"), (38, b"100"), (54, b"2"), (55, b"INTC")])
    er = refused(begin, b"8", [(11, b"C1"), (17, b"E1")])
    for mode in ("business_reject", "execution_report"):
        mt, body = venue_reject(carried, "Unsupported message type", mode, b"GW-1", 1.0, begin, appl)  # type: ignore[arg-type]
        assert b"Unsupported message type" in (check(begin, appl, mt, body).get(T.Text) or b"")
        for venue in (er, refused(begin, b"W", [])):
            for order in (None, (b"1", b"INTC", b"100")):
                mt, body = venue_invalid(venue, "required OrdStatus(39) is missing", mode, order, 7, b"GW-2",  # type: ignore[arg-type]
                                         1.0, begin, appl)
                assert b"OrdStatus(39)" in (check(begin, appl, mt, body).get(T.Text) or b"")


def test_venue_answers_by_configuration_and_version() -> None:
    carried = refused(b"FIX.4.4", b"D", [(11, b"C1"), (38, b"100"), (54, b"2"), (55, b"INTC")])
    mt, body = venue_reject(carried, "bad", "execution_report", b"E", 0.0, b"FIX.4.4")
    assert mt == b"8" and dict(body)[39] == b"8" and dict(body)[58] == b"rejected by the venue: bad"
    mt, body = venue_reject(carried, "bad", "business_reject", b"E", 0.0, b"FIX.4.4")
    assert mt == b"j" and (dict(body)[45], dict(body)[372]) == (b"7", b"D")
    # FIX.4.0: the venue's Reject(3) as the venue worded it, numbered for the client
    v40 = refused(b"FIX.4.0", b"8", [(11, b"id")])
    assert venue_reject(v40, "Unsupported message type", "execution_report", b"E", 0.0, b"FIX.4.0") == (
        b"3", [(45, b"7"), (58, b"Unsupported message type")])
    bad = refused(b"FIX.4.4", b"8", [(11, b"C1")])
    mt, body = venue_invalid(bad, "why", "execution_report", (b"1", b"INTC", b"100"), 3, b"E", 0.0, b"FIX.4.4")
    assert mt == b"8" and (dict(body)[11], dict(body)[55], dict(body)[39]) == (b"C1", b"INTC", b"8")
    mt, body = venue_invalid(bad, "why", "business_reject", None, 3, b"E", 0.0, b"FIX.4.4")
    assert mt == b"j" and 45 not in dict(body) and (dict(body)[372], dict(body)[379]) == (b"8", b"C1")
    assert b"ExecutionReport(8) was refused by the gateway (why)" in dict(body)[58]
    mt, body = venue_invalid(refused(b"FIX.4.1", b"8", [(11, b"C1")]), "why", "business_reject", None, 3, b"E", 0.0,
                             b"FIX.4.1")
    assert mt == b"3" and dict(body)[45] == b"3"


# -- property: whatever a client sends, the refusal is valid in its version ------------------------

_VALUE = st.binary(min_size=1, max_size=12).filter(lambda v: b"\x01" not in v and b"=" not in v)
_FIELDS = st.lists(st.tuples(st.sampled_from([11, 37, 38, 41, 44, 54, 55, 131, 262, 568, 649, 923]), _VALUE),
                   max_size=8, unique_by=lambda f: f[0])


@settings(max_examples=150, deadline=None)
@given(version=st.sampled_from(VERSIONS), fields=_FIELDS, seq=st.integers(1, 2**31 - 1),
       text=st.text(max_size=40), reason=st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 18, 99]))
def test_any_refused_message_of_any_type_gets_an_answer_valid_in_its_version(
        version: tuple[bytes, bytes | None], fields: list[tuple[int, bytes]], seq: int, text: str,
        reason: int) -> None:
    begin, appl = version
    lay = layout(begin, appl)
    for mt in sorted(m for m, md in lay.dictionary.messages.items() if not md.admin):
        msg = codec.Message(begin, mt, [(34, b"%d" % seq), *fields])
        answer_type, body = refusal(msg, text, reason, b"GW-REJ-9", 0.0, begin, appl)
        check(begin, appl, answer_type, body)
