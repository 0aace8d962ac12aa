"""Every FIX version QuickFIX speaks: FIX.4.0 to 4.4, and FIXT.1.1 with FIX.5.0, 5.0SP1, 5.0SP2.

The acceptance scripts of each version run through the gateway in
``tests/conformance``; these tests pin the rules behind them one at a time —
how the old dictionaries are read, which application dictionary a FIXT.1.1
message is validated against, what the config accepts — so a regression names
its cause instead of a script step.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app.exchange_sim import EchoApp
from gateway.core.fix import codec
from gateway.core.fix import tags as T
from gateway.core.fix.dictionary import DictionaryError, ValidationSettings, standard_validator
from gateway.core.fix.session import LogonRefused, Role, Session, SessionConfig
from gateway.core.fix.store import MemoryStore
from gateway.core.fix.versions import (
    APPL_VERSIONS,
    BEGIN_STRINGS,
    appl_ver_id,
    session_appl_ver_id,
    timestamp_precision,
)
from gateway.edges.config import ConfigError, load

NOW = 1_700_000_000.0


def msg(begin: bytes, mt: bytes, body: list[tuple[int, bytes]], sender: bytes = b"TW",
        header: list[tuple[int, bytes]] | None = None) -> codec.Message:
    hdr = [(34, b"2"), (49, sender), (52, b"20240101-00:00:00"), (56, b"ISLD"), *(header or [])]
    return codec.parse(codec.encode(begin, [(35, mt), *hdr, *body]))


# -- FIX.4.0 / 4.1: read as QuickFIX reads them ------------------------------------------------


@pytest.mark.parametrize("begin", [b"FIX.4.0", b"FIX.4.1"])
def test_before_fix42_a_char_field_is_a_string(begin: bytes) -> None:
    """FIX.4.0/4.1 type SenderCompID(49) ``char``: a CompID of four letters is valid there."""
    v = standard_validator(begin)
    assert v.validate(msg(begin, b"0", [], sender=b"TW40")) is None


def test_from_fix42_on_a_char_field_holds_one_character() -> None:
    v = standard_validator(b"FIX.4.2")
    order = [(11, b"ID"), (21, b"1"), (38, b"100"), (40, b"1"), (54, b"1"), (55, b"X"), (60, b"20240101-00:00:00")]
    err = v.validate(msg(b"FIX.4.2", b"D", [(f[0], b"12" if f[0] == 54 else f[1]) for f in order]))
    assert err is not None and (err.reason, err.tag) == (T.SRR_INCORRECT_DATA_FORMAT, 54), err


def test_fix40_time_is_a_utc_timestamp() -> None:
    v = standard_validator(b"FIX.4.0")
    bad = codec.parse(codec.encode(b"FIX.4.0", [(35, b"0"), (34, b"2"), (49, b"TW"), (52, b"yesterday"),
                                                (56, b"ISLD")]))
    err = v.validate(bad)
    assert err is not None and (err.reason, err.tag) == (T.SRR_INCORRECT_DATA_FORMAT, T.SendingTime), err
    assert "SendingTime(52) value yesterday is not a valid UTCTIMESTAMP" == err.detail


def test_a_missing_required_field_is_named_before_a_field_the_version_does_not_define() -> None:
    """FIX.4.0's 14b: an order without Symbol(55) that carries TransactTime(60) (not in FIX.4.0's
    NewOrderSingle) is answered "Required tag missing (55)", as QuickFIX checks in that order."""
    v = standard_validator(b"FIX.4.0")
    order = [(11, b"id"), (21, b"3"), (38, b"100"), (40, b"1"), (54, b"1"), (60, b"20240101-00:00:00")]
    err = v.validate(msg(b"FIX.4.0", b"D", order))
    assert err is not None and (err.reason, err.tag) == (T.SRR_REQUIRED_TAG_MISSING, T.Symbol), err
    err = v.validate(msg(b"FIX.4.0", b"D", [*order, (55, b"X")]))
    assert err is not None and (err.reason, err.tag) == (T.SRR_TAG_NOT_DEFINED_FOR_MSG_TYPE, 60), err


@pytest.mark.parametrize("begin,digits", [(b"FIX.4.0", 0), (b"FIX.4.1", 0), (b"FIX.4.2", 3), (b"FIX.4.3", 3),
                                          (b"FIX.4.4", 3), (b"FIXT.1.1", 3)])
def test_sending_time_has_milliseconds_only_from_fix42_on(begin: bytes, digits: int) -> None:
    """The acceptance scripts compare BodyLength(9): a FIX.4.0 Logon answer is 4 bytes shorter."""
    assert timestamp_precision(begin) == digits
    s = Session(SessionConfig(begin, b"TW", b"ISLD", Role.INITIATOR, timestamp_precision=digits,
                              default_appl_ver_id=session_appl_ver_id(begin, None)), MemoryStore())
    s.connection_made(NOW)
    logon = codec.parse(s.frames_to_send()[0])
    assert len(logon.get(T.SendingTime) or b"") == 17 + (digits and digits + 1)
    assert standard_validator(begin, default_appl_ver_id=session_appl_ver_id(begin, None)).validate(logon) is None


# -- FIXT.1.1: the application dictionary of the message's version --------------------------------

NOS50 = [(11, b"id"), (38, b"100"), (40, b"1"), (54, b"1"), (55, b"X"), (60, b"20240101-00:00:00")]


def fixt(mt: bytes, body: list[tuple[int, bytes]], header: list[tuple[int, bytes]] | None = None) -> codec.Message:
    return msg(b"FIXT.1.1", mt, body, header=header)


def test_fixt_validates_against_the_default_appl_ver_id_s_dictionary() -> None:
    """ProductComplex(1227) came with FIX.5.0SP1: refused on a FIX.5.0 session, valid on SP1 and SP2."""
    order = [*NOS50, (1227, b"EQ")]
    fix50 = standard_validator(b"FIXT.1.1", default_appl_ver_id=b"7")
    err = fix50.validate(fixt(b"D", order))
    assert err is not None and err.tag == 1227 and "FIX.5.0" in err.detail, err
    for default in (b"8", b"9"):
        assert standard_validator(b"FIXT.1.1", default_appl_ver_id=default).validate(fixt(b"D", order)) is None


def test_appl_ver_id_on_the_message_picks_that_version_s_dictionary() -> None:
    fix50 = standard_validator(b"FIXT.1.1", default_appl_ver_id=b"7")
    order = [*NOS50, (1227, b"EQ")]
    assert fix50.validate(fixt(b"D", order, header=[(T.ApplVerID, b"8")])) is None
    sp2 = standard_validator(b"FIXT.1.1", default_appl_ver_id=b"9")
    err = sp2.validate(fixt(b"D", order, header=[(T.ApplVerID, b"7")]))
    assert err is not None and err.tag == 1227, err
    # a MsgType SP1 introduced (BQ) is unknown to FIX.5.0, known when the message says SP1
    err = fix50.validate(fixt(b"BQ", []))
    assert err is not None and err.reason == T.SRR_INVALID_MSGTYPE and "FIX.5.0" in err.detail, err
    err = fix50.validate(fixt(b"BQ", [], header=[(T.ApplVerID, b"8")]))
    assert err is None or err.reason != T.SRR_INVALID_MSGTYPE, err


def test_an_appl_ver_id_without_a_dictionary_is_refused_naming_the_valid_ones() -> None:
    v = standard_validator(b"FIXT.1.1", default_appl_ver_id=b"9")
    for value in (b"1", b"Z"):
        err = v.validate(fixt(b"D", NOS50, header=[(T.ApplVerID, value)]))
        assert err is not None and (err.reason, err.tag) == (T.SRR_VALUE_INCORRECT, T.ApplVerID), err
        assert err.detail == (f"ApplVerID(1128) {value.decode()} ({value.decode()}) has no dictionary in this "
                              "session; valid: 2 (FIX.4.0), 3 (FIX.4.1), 4 (FIX.4.2), 5 (FIX.4.3), 6 (FIX.4.4), "
                              "7 (FIX.5.0), 8 (FIX.5.0SP1), 9 (FIX.5.0SP2)")
    assert v.appl_ver_ids == frozenset(APPL_VERSIONS)


def test_a_logon_declaring_another_default_appl_ver_id_is_refused() -> None:
    """A FIX.5.0 session whose client says 1137=9 would have every message read as the wrong
    version: the Logon is invalid (373=5 on 1137), and the session closes without an answer."""
    v = standard_validator(b"FIXT.1.1", default_appl_ver_id=b"7")
    logon = [(98, b"0"), (108, b"30"), (T.DefaultApplVerID, b"9")]
    err = v.validate(fixt(b"A", logon))
    assert err is not None and (err.reason, err.tag) == (T.SRR_VALUE_INCORRECT, T.DefaultApplVerID), err
    assert "9 (FIX.5.0SP2) is not this session's 7 (FIX.5.0)" in err.detail
    assert v.validate(fixt(b"A", [*logon[:2], (T.DefaultApplVerID, b"7")])) is None
    acceptor = Session(SessionConfig(b"FIXT.1.1", b"ISLD", b"TW", default_appl_ver_id=b"7", validator=v,
                                     check_latency=False), MemoryStore())
    acceptor.connection_made(NOW)
    acceptor.receive_data(codec.encode(b"FIXT.1.1", [(35, b"A"), (34, b"1"), (49, b"TW"),
                                                     (52, b"20240101-00:00:00"), (56, b"ISLD"), *logon]), NOW)
    assert acceptor.closed and acceptor.frames_to_send() == []
    refused = [e for e in acceptor.events() if isinstance(e, LogonRefused)]
    assert refused and "DefaultApplVerID(1137) 9 (FIX.5.0SP2) is not this session's" in refused[0].reason


def test_session_messages_of_fixt_know_only_the_transport_vocabulary_whatever_the_version() -> None:
    v = standard_validator(b"FIXT.1.1", default_appl_ver_id=b"7")
    err = v.validate(fixt(b"0", [(55, b"X")]))
    assert err is not None and (err.reason, err.tag) == (T.SRR_INVALID_TAG_NUMBER, 55), err


def test_a_dictionary_is_for_one_kind_of_session() -> None:
    with pytest.raises(DictionaryError, match="for FIXT.1.1 sessions, not FIX.4.4"):
        standard_validator(b"FIX.4.4", default_appl_ver_id=b"9")
    with pytest.raises(DictionaryError, match="valid: 2 \\(FIX.4.0\\)"):
        standard_validator(b"FIXT.1.1", default_appl_ver_id=b"1")


# -- configuration -----------------------------------------------------------------------------

BASE = """
[listen]
port = 9000
cert = "c"
key = "k"
ca = "a"
[audit]
dir = "audit"
[[sessions]]
begin_string = "{begin}"
client_comp_id = "C"
gateway_comp_id = "G"
{extra}
upstream = {{ host = "127.0.0.1", port = 9001, tls = false, sender_comp_id = "G", target_comp_id = "X" }}
"""


def write(tmp: Path, begin: str, extra: str = "") -> Path:
    p = tmp / "gw.toml"
    p.write_text(BASE.format(begin=begin, extra=extra))
    return p


@pytest.mark.parametrize("begin", [b.decode() for b in BEGIN_STRINGS])
def test_every_begin_string_is_a_valid_session(tmp_path: Path, begin: str) -> None:
    assert load(write(tmp_path, begin)).sessions[0].begin_string == begin


@pytest.mark.parametrize("spelling,wire", [("7", b"7"), ("FIX.5.0", b"7"), ("8", b"8"), ("FIX.5.0SP1", b"8"),
                                           ("FIX.5.0SP2", b"9"), ("6", b"6")])
def test_default_appl_ver_id_by_number_or_by_quickfix_s_name(tmp_path: Path, spelling: str, wire: bytes) -> None:
    s = load(write(tmp_path, "FIXT.1.1", f'default_appl_ver_id = "{spelling}"')).sessions[0]
    assert appl_ver_id(spelling) == wire == session_appl_ver_id(b"FIXT.1.1", s.default_appl_ver_id)
    assert session_appl_ver_id(b"FIXT.1.1", None) == b"9"


@pytest.mark.parametrize("begin,extra,words", [
    ("FIXT.1.1", 'default_appl_ver_id = "FIX.5.0SP3"', "valid: 2 (FIX.4.0), 3 (FIX.4.1), 4 (FIX.4.2)"),
    ("FIXT.1.1", 'default_appl_ver_id = "1"', "9 (FIX.5.0SP2) (the number or the name)"),
    ("FIX.4.4", 'default_appl_ver_id = "9"', "only FIXT.1.1 sessions have a DefaultApplVerID(1137)"),
])
def test_a_bad_default_appl_ver_id_names_file_key_and_what_is_valid(tmp_path: Path, begin: str, extra: str,
                                                                   words: str) -> None:
    p = write(tmp_path, begin, extra)
    with pytest.raises(ConfigError) as exc:
        load(p)
    text = str(exc.value)
    assert str(p) in text and "sessions[0].default_appl_ver_id" in text and words in text, text


# -- the exchange simulator answers as QuickFIX's acceptance application does --------------------


@pytest.mark.parametrize("begin,appl", [(b"FIX.4.0", None), (b"FIX.4.1", None)])
def test_before_fix42_an_unsupported_type_gets_a_reject_not_a_business_reject(begin: bytes,
                                                                             appl: bytes | None) -> None:
    v = standard_validator(begin, ValidationSettings(allow_unknown_message_fields=True))
    app = EchoApp(v, frozenset(v.transport.header.tags), appl)
    (mt, header, body), = app.on_message(msg(begin, b"8", [(37, b"x")]))
    assert (mt, header, body) == (T.MT_REJECT, [], [(T.RefSeqNum, b"2"), (T.Text, b"Unsupported message type")])


@pytest.mark.parametrize("appl", [b"7", b"8", b"9"])
def test_fixt_business_reject_names_the_session_s_default_appl_ver_id(appl: bytes) -> None:
    v = standard_validator(b"FIXT.1.1", ValidationSettings(allow_unknown_message_fields=True),
                           default_appl_ver_id=appl)
    app = EchoApp(v, frozenset(v.transport.header.tags), appl)
    (mt, _, body), = app.on_message(fixt(b"8", [(37, b"x")]))
    assert mt == T.MT_BUSINESS_MESSAGE_REJECT and body[-1] == (T.DefaultApplVerID, appl)
