"""Dictionary loading and validation with the SessionRejectReason(373) the spec names."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- the fast path for valid messages says what the exact checks say ---------------------------------

_VALID_BY_TYPE = {
    "INT": b"-12", "LENGTH": b"3", "SEQNUM": b"7", "NUMINGROUP": b"0", "TAGNUM": b"55", "DAYOFMONTH": b"15",
    "FLOAT": b"1.5", "PRICE": b"100.25", "QTY": b"002000.00", "AMT": b".5", "PERCENTAGE": b"0.1",
    "PRICEOFFSET": b"-0.5", "CHAR": b"A", "BOOLEAN": b"Y", "UTCTIMESTAMP": b"20240101-00:00:00.000",
    "UTCDATE": b"20240229", "UTCDATEONLY": b"20240101", "LOCALMKTDATE": b"20241231", "UTCTIMEONLY": b"12:00:00",
    "MONTHYEAR": b"202401w2",
}
_JUNK = [b"", b"x", b"-1", b"1.5", b"+1", b"20240101", b"20240101-24:00:00", b"Y", b"N", b"999", b"A B", b"0",
         b"12:60:00", b"202413", b"2"]
_VALIDATORS = {
    "FIX.4.4": V44,
    "FIX.4.2": standard_validator(b"FIX.4.2"),
    "FIX.4.0": standard_validator(b"FIX.4.0"),
    "FIX.4.4 lax": standard_validator(b"FIX.4.4", ValidationSettings(False, False, False, True)),
    "FIX.4.4 no order": standard_validator(b"FIX.4.4", ValidationSettings(check_fields_out_of_order=False)),
    "FIXT.1.1": standard_validator(b"FIXT.1.1"),
}


def _value(v: Validator, tag: int, draw: st.DrawFn) -> bytes:
    fd = v._fields.get(tag)
    if fd is None:
        return b"x"
    if fd.enums:
        return draw(st.sampled_from(sorted(fd.enums)))
    return _VALID_BY_TYPE.get(fd.type, b"abc")


@st.composite
def _messages(draw: st.DrawFn) -> tuple[str, codec.Message]:
    """A message of a MsgType the dictionary defines (or not), its required fields and some optional
    ones with valid values, then up to four mutations: a field dropped, repeated, moved, given a junk
    value, or a tag added (defined elsewhere, user-defined, unknown)."""
    name = draw(st.sampled_from(sorted(_VALIDATORS)))
    v = _VALIDATORS[name]
    types = sorted({*v.transport.messages, *v.application.messages})
    mt = draw(st.sampled_from([*types, b"*", b"ZZ"]))
    md = v.message_def(mt)
    header = v.transport.header
    begin = v.transport.begin_string
    fields: list[tuple[int, bytes]] = [(35, mt)]
    for tag in sorted(header.required):
        if tag not in (8, 9, 10, 35):
            fields.append((tag, _value(v, tag, draw)))
    fields += [(t, _value(v, t, draw)) for t in draw(st.lists(st.sampled_from(sorted(header.tags - {8, 9, 10, 35})),
                                                               max_size=2, unique=True))]
    if md is not None:
        fields += [(t, _value(v, t, draw)) for t in md.required]
        optional = sorted(md.tags - set(md.required))
        if optional:
            fields += [(t, _value(v, t, draw)) for t in draw(st.lists(st.sampled_from(optional), max_size=6,
                                                                      unique=True))]
    for _ in range(draw(st.integers(0, 4))):
        if not fields:
            break
        i = draw(st.integers(0, len(fields) - 1))
        how = draw(st.sampled_from(["drop", "repeat", "move", "junk", "add"]))
        if how == "drop":
            del fields[i]
        elif how == "repeat":
            fields.insert(draw(st.integers(0, len(fields))), fields[i])
        elif how == "move":
            fields.insert(draw(st.integers(0, len(fields) - 1)), fields.pop(i))
        elif how == "junk":
            fields[i] = (fields[i][0], draw(st.sampled_from(_JUNK)))
        else:
            tag = draw(st.one_of(st.sampled_from(sorted(v._fields)), st.sampled_from([5001, 9999, 1128, 627])))
            fields.insert(i, (tag, draw(st.one_of(st.just(_value(v, tag, draw)), st.sampled_from(_JUNK)))))
    return name, codec.Message(begin, mt, fields, b"")


@given(_messages())
@settings(max_examples=1500, deadline=None)
def test_fast_path_and_exact_checks_give_the_same_verdict(case: tuple[str, codec.Message]) -> None:
    name, m = case
    v = _VALIDATORS[name]
    assert v.validate(m) == v.validate_exact(m), (name, m)


@pytest.mark.parametrize("name", sorted(_VALIDATORS))
def test_valid_messages_without_groups_take_the_fast_path(name: str) -> None:
    """Every MsgType whose required fields are no repeating group: a message of just those, valid by
    the exact checks, is valid by the fast path alone (else the fast path would be dead code)."""
    v = _VALIDATORS[name]
    header = v.transport.header
    taken = 0
    for mt in sorted({*v.transport.messages, *v.application.messages}):
        md = v.message_def(mt)
        assert md is not None
        if any(t in md.groups or t in header.groups for t in md.required):
            continue
        fields = [(35, mt)] + [(t, _VALID_BY_TYPE.get(v._fields[t].type, b"abc") if not v._fields[t].enums
                                else min(v._fields[t].enums)) for t in [*header.required, *md.required]
                               if t not in (8, 9, 10, 35)]
        m = codec.Message(v.transport.begin_string, mt, fields, b"")
        if v.validate_exact(m) is None:
            assert v._fast(m), (name, mt)
            taken += 1
    assert taken >= 10
