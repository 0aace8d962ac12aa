"""Instruments: every name a message gives one, compared the way the policy says.

A message names an instrument by Symbol(55), UnderlyingSymbol(311) or
LegSymbol(600), or by an identifier with its source: SecurityID(48) with
SecurityIDSource(22), UnderlyingSecurityID(309) with (305), LegSecurityID(602)
with (603).  Venues compare symbols loosely (``XYZ-RESTRICTED `` and
``xyz-restricted`` reach the same book), so the policy's ``[instruments]``
table says how names are normalised before any comparison, on both sides:

* ``normalize`` — steps applied in order: ``trim`` (ASCII white space at
  both ends) and ``upper`` (ASCII upper case); default both.  Identifiers
  and their sources are normalised the same way.
* ``aliases`` — ``{ "XYZ-RESTRICTED" = ["ISIN:US9999999999"] }``: the
  SecurityIDs (``SOURCE:ID``, SOURCE a SecurityIDSource(22) code or name)
  that name the same instrument as a symbol.

A list entry (rule ``symbols``, risk ``restricted_symbols``) is a symbol or
a ``SOURCE:ID``; listing one name of an instrument lists all its aliases.
Keys: a symbol's key is its normalised text; a SecurityID's key is
``source SOH id`` — SOH cannot occur in a FIX value, so no symbol can pose
as an identifier.  How lists match (``gateway/core/policy/engine.py``):

* an *allow*-list needs every name the message gives to be listed, a
  SecurityID with its exact source (an unknown or unpaired identifier is
  never allowed);
* a *deny*-list (restricted) matches any listed name, a SecurityID whatever
  source the message claims (``SOH id`` keys): a wrong or missing
  SecurityIDSource(22) cannot hide a restricted identifier.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SEP = b"\x01"
NORMALIZE_STEPS = ("trim", "upper")
#: SecurityIDSource(22) by name (the FIX enumeration's common names)
SOURCES: dict[str, str] = {
    "CUSIP": "1", "SEDOL": "2", "QUIK": "3", "ISIN": "4", "RIC": "5", "ISO_CURRENCY": "6", "ISO_COUNTRY": "7",
    "EXCHANGE": "8", "CTA": "9", "BLOOMBERG": "A", "WERTPAPIER": "B", "DUTCH": "C", "VALOREN": "D",
    "SICOVAM": "E", "BELGIAN": "F", "COMMON": "G",
}
#: SecurityIDSource(22) codes of FIX.5.0SP2 (1-9, A-Y) and Z for what comes next
CODES = frozenset("123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NAME_OF_CODE = {code: name for name, code in SOURCES.items()}
SOURCE_HINT = (f"SOURCE is a SecurityIDSource(22) code (1-9, A-Z) or one of {', '.join(SOURCES)}, "
               "e.g. ISIN:US0378331005; a symbol that contains ':' is written SYMBOL:ES:H5")


class InstrumentError(ValueError):
    """A wrong ``[instruments]`` table or list entry; ``key`` is where (relative), for the loader's ConfigError."""

    def __init__(self, key: str, problem: str, hint: str = "") -> None:
        super().__init__(problem)
        self.key, self.problem, self.hint = key, problem, hint


@dataclass(frozen=True, slots=True)
class Instruments:
    """Compiled ``[instruments]``: normalisation and aliases (SecurityID key -> symbol key)."""

    normalize: tuple[str, ...] = NORMALIZE_STEPS
    aliases: Mapping[bytes, bytes] = field(default_factory=dict)
    members: Mapping[bytes, frozenset[bytes]] = field(init=False, default_factory=dict)  # symbol -> its ID keys
    _trim: bool = field(init=False, default=True, repr=False)
    _upper: bool = field(init=False, default=True, repr=False)

    def __post_init__(self) -> None:
        members: dict[bytes, set[bytes]] = {}
        for key, symbol in self.aliases.items():
            members.setdefault(symbol, set()).add(key)
        object.__setattr__(self, "members", {s: frozenset(k) for s, k in members.items()})
        object.__setattr__(self, "_trim", "trim" in self.normalize)
        object.__setattr__(self, "_upper", "upper" in self.normalize)

    def norm(self, value: bytes) -> bytes:
        """A name as the policy compares it."""
        if self._trim:
            value = value.strip()
        if self._upper:
            value = value.upper()
        return value

    def entry_key(self, text: str) -> bytes:
        """The key of one list entry: a symbol, ``SOURCE:ID`` or ``SYMBOL:text``."""
        prefix, colon, rest = text.partition(":")
        if colon:
            source = source_code(prefix)
            if source is not None:
                ident = self.norm(rest.encode())
                if not ident:
                    raise InstrumentError("", f"{text!r} names no SecurityID", SOURCE_HINT)
                return source.encode() + SEP + ident
            if prefix.strip().upper() != "SYMBOL":
                raise InstrumentError("", f"{text!r} looks like SOURCE:ID but {prefix!r} is not a "
                                          "SecurityIDSource(22)", SOURCE_HINT)
            text = rest
        key = self.norm(text.encode())
        if not key:
            raise InstrumentError("", f"{text!r} is empty once normalised ({', '.join(self.normalize) or 'as is'})")
        return key

    def entry_keys(self, entries: Iterable[str], any_source: bool) -> frozenset[bytes]:
        """Keys of a list, each with every alias of its instrument; ``any_source`` for deny-lists."""
        keys: set[bytes] = set()
        for text in entries:
            key = self.entry_key(text)
            symbol = self.aliases.get(key, key)
            keys |= {key, symbol} | self.members.get(symbol, frozenset())
        if any_source:
            keys |= {SEP + k.partition(SEP)[2] for k in keys if SEP in k}
        return frozenset(keys)

    def symbol_of(self, key: bytes) -> bytes:
        """The symbol an identifier is an alias of (itself when none)."""
        return self.aliases.get(key, key)


DEFAULT_INSTRUMENTS = Instruments()
#: entries that are already normalised keys (what the loader writes back into a LimitsSpec)
AS_WRITTEN = Instruments(normalize=())


def source_code(text: str) -> str | None:
    """SecurityIDSource(22) code of a name or code (``ISIN`` or ``4`` -> ``4``); None when neither."""
    t = text.strip().upper()
    if t in CODES:
        return t
    return SOURCES.get(t)


def display(key: bytes) -> str:
    """A key as a list entry would write it: ``INTC``, ``4:US9999999999``, ``SYMBOL:ES:H5``."""
    source, sep, ident = key.partition(SEP)
    if sep:
        return f"{source.decode('utf-8', 'replace')}:{ident.decode('utf-8', 'replace')}"
    text = key.decode("utf-8", "replace")
    return f"SYMBOL:{text}" if ":" in text else text


def compile_instruments(normalize: Iterable[str], aliases: Mapping[str, Iterable[str]]) -> Instruments:
    """``[instruments]`` -> ``Instruments``; ``InstrumentError`` names the key and what would be valid."""
    steps = tuple(normalize)
    for step in steps:
        if step not in NORMALIZE_STEPS:
            raise InstrumentError("normalize", f"unknown step {step!r}", f"valid steps: {', '.join(NORMALIZE_STEPS)}")
    plain = Instruments(steps)
    table: dict[bytes, bytes] = {}
    owner: dict[bytes, str] = {}
    for name, ids in aliases.items():
        where = f"aliases.{name}"
        try:
            symbol = plain.entry_key(name)
        except InstrumentError as exc:
            raise InstrumentError(where, exc.problem, exc.hint) from None
        if SEP in symbol:
            raise InstrumentError(where, f"{name!r} is a SecurityID; aliases map SecurityIDs to the Symbol(55) "
                                         "they name", 'e.g. "XYZ" = ["ISIN:US9999999999"]')
        for text in ids:
            prefix, colon, _ = text.partition(":")
            if not colon or source_code(prefix) is None:
                raise InstrumentError(where, f"{text!r} is not SOURCE:ID", SOURCE_HINT)
            try:
                key = plain.entry_key(text)
            except InstrumentError as exc:
                raise InstrumentError(where, exc.problem, exc.hint) from None
            if key in table and table[key] != symbol:
                raise InstrumentError(where, f"{text!r} ({display(key)}) is an alias of both {owner[key]!r} "
                                             f"and {name!r}", "one SecurityID names one instrument")
            table[key], owner[key] = symbol, name
    return Instruments(steps, table)
