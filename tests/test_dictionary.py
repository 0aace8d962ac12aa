"""Dictionary loading and validation with the SessionRejectReason(373) the spec names."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.fix import codec
from gateway.core.fix import tags as T
from gateway.core.fix.dictionary import DictionaryError, ValidationSettings, Validator, load, standard_validator

HDR = [(34, b"2"), (49, b"TW44"), (52, b"20240101-00:00:00.000"), (56, b"ISLD")]


def msg(mt: bytes, body: list[tuple[int, bytes]], header: list[tuple[int, bytes]] | None = None) -> codec.Message:
    return codec.parse(codec.encode(b"FIX.4.4", [(35, mt), *(header if header is not None else HDR), *body]))


V44 = standard_validator(b"FIX.4.4")
NOS = [(11, b"ID"), (21, b"1"), (38, b"100"), (40, b"1"), (54, b"1"), (55, b"INTC"), (60, b"20240101-00:00:00")]


def test_valid_order_passes() -> None:
    assert V44.validate(msg(b"D", NOS)) is None


@pytest.mark.parametrize(
    "body,header,reason,tag",
    [
        (NOS + [(9999, b"x")], None, T.SRR_INVALID_TAG_NUMBER, 9999),
        ([f for f in NOS if f[0] != 11], None, T.SRR_REQUIRED_TAG_MISSING, 11),
        (NOS + [(112, b"x")], None, T.SRR_TAG_NOT_DEFINED_FOR_MSG_TYPE, 112),
        (NOS + [(1, b"")], None, T.SRR_TAG_SPECIFIED_WITHOUT_VALUE, 1),
        ([(21, b"9")] + [f for f in NOS if f[0] != 21], None, T.SRR_VALUE_INCORRECT, 21),
        ([(38, b"+1")] + [f for f in NOS if f[0] != 38], None, T.SRR_INCORRECT_DATA_FORMAT, 38),
        (NOS + [(126, b"20240101")], None, T.SRR_INCORRECT_DATA_FORMAT, 126),
        (NOS[:2] + [(34, b"3")] + NOS[2:], HDR[1:], T.SRR_TAG_OUT_OF_ORDER, 34),
        (NOS + [(40, b"2")], None, T.SRR_TAG_APPEARS_MORE_THAN_ONCE, 40),
        (NOS + [(386, b"2"), (336, b"A")], None, T.SRR_INCORRECT_NUMINGROUP_COUNT, 386),
    ],
    ids=["invalid-tag", "required-missing", "not-for-msgtype", "no-value", "enum", "format",
         "timestamp-format", "header-after-body", "repeated", "group-count"],
)
def test_each_problem_gets_its_reject_reason(body, header, reason, tag) -> None:  # type: ignore[no-untyped-def]
    err = V44.validate(msg(b"D", body, header))
    assert err is not None
    assert (err.reason, err.tag) == (reason, tag), err.detail
    assert err.text == T.SESSION_REJECT_TEXT[reason]
    assert f"({tag})" in err.detail or str(tag) in err.detail


def test_unknown_msgtype_is_invalid_msgtype() -> None:
    err = V44.validate(msg(b"*", []))
    assert err is not None and err.reason == T.SRR_INVALID_MSGTYPE and err.tag is None


def test_repeating_group_with_correct_count_and_zero_count() -> None:
    assert V44.validate(msg(b"D", NOS + [(386, b"2"), (336, b"A"), (336, b"B")])) is None
    assert V44.validate(msg(b"D", NOS + [(386, b"0")])) is None


def test_empty_values_allowed_when_switched_off() -> None:
    v = standard_validator(b"FIX.4.4", ValidationSettings(check_fields_have_values=False))
    assert v.validate(msg(b"D", NOS + [(1, b"")])) is None


def test_fixt_uses_transport_dictionary_for_session_messages() -> None:
    v = standard_validator(b"FIXT.1.1")
    hb = codec.parse(codec.encode(b"FIXT.1.1", [(35, b"0"), *HDR, (999, b"x")]))
    err = v.validate(hb)
    assert err is not None and err.reason == T.SRR_INVALID_TAG_NUMBER
    order = codec.parse(codec.encode(b"FIXT.1.1", [(35, b"D"), *HDR, *NOS]))
    assert v.validate(order) is None


def test_user_dictionary_with_custom_field_loads(tmp_path: Path) -> None:
    text = (Path(V44.transport.path)).read_text()
    text = text.replace("<fields>", "<fields>\n  <field number='20001' name='VenueTag' type='STRING'/>", 1)
    nos = "<message name='NewOrderSingle' msgtype='D' msgcat='app'>"
    text = text.replace(nos, nos + "\n   <field name='VenueTag' required='N' />", 1)
    custom = tmp_path / "FIX44-venue.xml"
    custom.write_text(text)
    v = Validator(load(custom))
    assert v.validate(msg(b"D", NOS + [(20001, b"abc")])) is None
    err = V44.validate(msg(b"D", NOS + [(20001, b"abc")]))
    assert err is not None and err.reason == T.SRR_INVALID_TAG_NUMBER


def test_broken_dictionary_names_file_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<fix><fields><field number='x' name='A' type='INT'/></fields></fix>")
    with pytest.raises(DictionaryError, match="bad.xml.*numeric"):
        load(bad)
    with pytest.raises(DictionaryError, match="valid: FIX.4.0, FIX.4.1, FIX.4.2, FIX.4.3, FIX.4.4, FIXT.1.1"):
        standard_validator(b"FIX.3.9")


def test_a_numingroup_of_thousands_of_digits_is_a_count_problem_not_an_exception() -> None:
    err = V44.validate(msg(b"D", NOS + [(386, b"9" * 5000), (336, b"A")]))
    assert err is not None and (err.reason, err.tag) == (T.SRR_INCORRECT_NUMINGROUP_COUNT, 386)
