"""The FIX versions fixgw speaks, and what each one changes at the session layer.

DESIGN §1: every version QuickFIX speaks — FIX.4.0, 4.1, 4.2, 4.3, 4.4 and
FIXT.1.1 carrying FIX.5.0, 5.0SP1 or 5.0SP2.  This table is the one place
that knows them, so the config check, the dictionary choice and the session
settings cannot disagree:

* a FIX.4.x session names its version in BeginString(8) and one dictionary
  covers both layers;
* a FIXT.1.1 session carries application messages of the version its
  DefaultApplVerID(1137) names, unless a message says otherwise in
  ApplVerID(1128) — so each ApplVerID maps to the dictionary of its version
  (QuickFIX's ``AppDataDictionary`` per version does the same);
* UTCTimestamp has milliseconds only from FIX.4.2 on (FIX.4.0 and 4.1 send
  ``YYYYMMDD-HH:MM:SS``, and their acceptance scripts count the bytes).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ApplVersion:
    """One value of ApplVerID(1128) / DefaultApplVerID(1137) and its shipped dictionary."""

    appl_ver_id: bytes  # the enumerated value on the wire, b"2" .. b"9"
    name: str  # how QuickFIX settings spell it (DefaultApplVerID=FIX.5.0SP1)
    dictionary: str  # file in fixdicts/


#: BeginString(8) values a session may use, oldest first.
BEGIN_STRINGS: tuple[bytes, ...] = (b"FIX.4.0", b"FIX.4.1", b"FIX.4.2", b"FIX.4.3", b"FIX.4.4", b"FIXT.1.1")

FIXT11 = b"FIXT.1.1"

#: Versions before FIX.4.2: no milliseconds in UTCTimestamp, no BusinessMessageReject(j), no
#: RefTagID(371) in Reject(3), and a dictionary ``char`` is a string.
PRE_FIX42: frozenset[bytes] = frozenset({b"FIX.4.0", b"FIX.4.1"})

#: Shipped dictionary of each FIX.4.x BeginString (FIXT.1.1: the transport dictionary).
BEGIN_STRING_DICTIONARY: dict[bytes, str] = {
    b"FIX.4.0": "FIX40.xml",
    b"FIX.4.1": "FIX41.xml",
    b"FIX.4.2": "FIX42.xml",
    b"FIX.4.3": "FIX43.xml",
    b"FIX.4.4": "FIX44.xml",
    FIXT11: "FIXT11.xml",
}

#: ApplVerID(1128) values with a shipped application dictionary.  0 (FIX27) and
#: 1 (FIX30) are valid enumerations that no dictionary covers: refused.
APPL_VERSIONS: dict[bytes, ApplVersion] = {
    v.appl_ver_id: v
    for v in (
        ApplVersion(b"2", "FIX.4.0", "FIX40.xml"),
        ApplVersion(b"3", "FIX.4.1", "FIX41.xml"),
        ApplVersion(b"4", "FIX.4.2", "FIX42.xml"),
        ApplVersion(b"5", "FIX.4.3", "FIX43.xml"),
        ApplVersion(b"6", "FIX.4.4", "FIX44.xml"),
        ApplVersion(b"7", "FIX.5.0", "FIX50.xml"),
        ApplVersion(b"8", "FIX.5.0SP1", "FIX50SP1.xml"),
        ApplVersion(b"9", "FIX.5.0SP2", "FIX50SP2.xml"),
    )
}

#: A FIXT.1.1 session without a configured DefaultApplVerID(1137) speaks FIX.5.0SP2.
DEFAULT_APPL_VER_ID = b"9"


def appl_ver_id(text: str) -> bytes | None:
    """DefaultApplVerID as a config spells it — ``"8"`` or QuickFIX's ``"FIX.5.0SP1"`` — as the
    wire value, or ``None`` when it names no version we have a dictionary for."""
    raw = text.strip().encode()
    if raw in APPL_VERSIONS:
        return raw
    for v in APPL_VERSIONS.values():
        if v.name == text.strip():
            return v.appl_ver_id
    return None


def appl_ver_id_choices() -> str:
    """The accepted spellings, for error hints: ``2 (FIX.4.0), ..., 9 (FIX.5.0SP2)``."""
    return ", ".join(f"{v.appl_ver_id.decode()} ({v.name})" for v in APPL_VERSIONS.values())


def appl_version_name(value: bytes) -> str:
    """``FIX.5.0SP1`` for ``b"8"``; the value itself (excerpted) when it is not one of ours."""
    v = APPL_VERSIONS.get(value)
    return v.name if v is not None else value[:16].decode("latin-1")


def timestamp_precision(begin_string: bytes) -> int:
    """Fractional digits of the UTCTimestamps we send: none before FIX.4.2, milliseconds after."""
    return 0 if begin_string in PRE_FIX42 else 3


def session_appl_ver_id(begin_string: bytes, configured: str | None) -> bytes | None:
    """The DefaultApplVerID(1137) a session sends in its Logon and validates with.

    FIXT.1.1 only: the configured one (either spelling) or FIX.5.0SP2.  The
    config loader has refused anything else, so ``ValueError`` here is a caller's mistake.
    """
    if begin_string != FIXT11:
        if configured is not None:
            raise ValueError(f"DefaultApplVerID(1137) is for FIXT.1.1 sessions, not {begin_string.decode()}")
        return None
    if configured is None:
        return DEFAULT_APPL_VER_ID
    value = appl_ver_id(configured)
    if value is None:
        raise ValueError(f"DefaultApplVerID(1137) {configured!r} is not one of {appl_ver_id_choices()}")
    return value
