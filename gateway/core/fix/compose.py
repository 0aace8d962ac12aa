"""Application messages written in one FIX version's layout, from what the sender knows.

Whoever writes an application message — the gateway answering a refused
message, the exchange simulator answering an order — knows its meaning
("rejected, nothing left open", "filled 100 at 10.5") but not what each of
the eight FIX versions makes of it: FIX.4.0 has no ExecType(150) and wants
LastShares(32)/LastPx(31) on every ExecutionReport(8); FIX.4.0-4.2 want
ExecTransType(20), which FIX.4.3 removed; a fill is ExecType(150)=2 up to
FIX.4.2 and F (Trade) from FIX.4.3; OrdRejReason(103)=99 exists only from
FIX.4.4.  Coding that per version by hand drifts from the dictionaries; so
``Layout.compose`` reads the version's dictionary instead:

* a field the message does not define in this version is left out (the
  sender gives everything it knows; the version keeps what it has);
* a value may be a tuple of choices, best first: the first one the field's
  format and enumeration accept is sent, none of them: the field is left out
  (``(b"F", b"2")`` is a fill in every version that has ExecType(150);
  ``(b"E-7", b"7")`` an ExecID(17), which FIX.4.0 wants as an integer);
* a required field the sender did not give comes from ``fallback`` — the
  value a version that insists on it gets (LastShares(32)=0 on FIX.4.0's
  New) — and with no fallback the composition fails (``ComposeError``), so
  a test over every version finds a gap before a peer does;
* repeating groups are given as a list of entries, each a list of fields;
  an entry's fields are kept in the group's order (delimiter first).

Pure: dictionaries are read (once, cached) through ``gateway.core.fix.dictionary``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

from gateway.core.fix import tags as T
from gateway.core.fix.codec import Field
from gateway.core.fix.dictionary import _FORMAT_CHECKS as FORMAT_CHECKS  # the validator's own value formats
from gateway.core.fix.dictionary import DICT_DIR, Dictionary, GroupDef, load
from gateway.core.fix.versions import APPL_VERSIONS, BEGIN_STRING_DICTIONARY, DEFAULT_APPL_VER_ID, FIXT11
from gateway.core.fix.versions import timestamp_precision as _precision

#: one value, or choices (best first); a list of entries is a repeating group
Value: TypeAlias = "bytes | tuple[bytes, ...] | list[Entry]"
Entry: TypeAlias = "Sequence[tuple[int, Value]]"
#: what a version that insists on a field gets when the sender gave none
Fallback: TypeAlias = Mapping[int, bytes | tuple[bytes, ...]]

_MULTI_VALUE_TYPES = frozenset({"MULTIPLEVALUESTRING", "MULTIPLECHARVALUE", "MULTIPLESTRINGVALUE"})


class ComposeError(ValueError):
    """The sender's values cannot make a valid message of this version (the sender's bug)."""


class Layout:
    """The application messages of one FIX version (a FIXT.1.1 session: of one ApplVerID)."""

    def __init__(self, dictionary: Dictionary, begin_string: bytes, appl_ver_id: bytes | None = None) -> None:
        self.dictionary = dictionary
        self.begin_string = begin_string
        self.appl_ver_id = appl_ver_id
        #: fractional digits of the UTCTimestamps this version sends (none before FIX.4.2)
        self.timestamp_precision = _precision(begin_string)

    @property
    def version(self) -> str:
        """``FIX.4.2``, ``FIX.5.0SP2``: the version the messages are written in."""
        return self.dictionary.version

    def has(self, msg_type: bytes) -> bool:
        """Does this version define ``msg_type`` at all (BusinessMessageReject(j) before FIX.4.2: no)."""
        return msg_type in self.dictionary.messages

    def defines(self, msg_type: bytes, tag: int) -> bool:
        """Is ``tag`` a field of ``msg_type`` (top level) in this version."""
        md = self.dictionary.messages.get(msg_type)
        return md is not None and tag in md.tags

    def choose(self, tag: int, value: bytes | tuple[bytes, ...]) -> bytes | None:
        """The first of the choices whose format and enumeration this version's field accepts."""
        choices = value if isinstance(value, tuple) else (value,)
        fd = self.dictionary.fields.get(tag)
        if fd is None:
            return None
        fits = FORMAT_CHECKS.get(fd.type)
        for c in choices:
            if not c or (fits is not None and not fits(c)):
                continue
            if fd.enums is None:
                return c
            if fd.type in _MULTI_VALUE_TYPES:
                if all(v in fd.enums for v in c.split(b" ")):
                    return c
            elif c in fd.enums:
                return c
        return None

    def compose(self, msg_type: bytes, values: Entry, fallback: Fallback | None = None) -> list[Field]:
        """The body of ``msg_type`` in this version from ``values`` (see the module docstring)."""
        md = self.dictionary.messages.get(msg_type)
        if md is None:
            raise ComposeError(f"MsgType(35) {msg_type.decode('latin-1')} is not defined in {self.version}")
        return self._fields(md.name, md.tags, md.groups, md.required, values, fallback or {})

    def business_reject_type(self) -> bytes:
        """How this version refuses a message at the application level: BusinessMessageReject(j) from
        FIX.4.2 on, Reject(3) before (FIX.4.0/4.1 have nothing else)."""
        return T.MT_BUSINESS_MESSAGE_REJECT if self.has(T.MT_BUSINESS_MESSAGE_REJECT) else T.MT_REJECT

    def _fields(self, where: str, allowed: set[int], groups: Mapping[int, GroupDef], required: Sequence[int],
                values: Entry, fallback: Fallback) -> list[Field]:
        out: list[Field] = []
        given: set[int] = set()
        for tag, value in values:
            if tag not in allowed or tag in given:
                continue
            if isinstance(value, list):
                g = groups.get(tag)
                if g is None:
                    continue
                entries = [e for e in (self._entry(g, entry, fallback) for entry in value) if e]
                if entries:
                    out.append((tag, b"%d" % len(entries)))
                    for e in entries:
                        out.extend(e)
                    given.add(tag)
                continue
            chosen = self.choose(tag, value)
            if chosen is not None:
                out.append((tag, chosen))
                given.add(tag)
        for tag in required:
            if tag in given:
                continue
            fb = fallback.get(tag)
            chosen = self.choose(tag, fb) if fb is not None else None
            if chosen is None:
                raise ComposeError(f"{self.version} {where} requires {self.dictionary.field_label(tag)} and "
                                   "nothing gives a value it accepts")
            out.append((tag, chosen))
            given.add(tag)
        return out

    def _entry(self, g: GroupDef, entry: Entry, fallback: Fallback) -> list[Field]:
        """One group entry: its fields this version has, the delimiter first; empty without one."""
        fields = self._fields(self.dictionary.field_label(g.count_tag), g.members, g.groups, g.required,
                              entry, fallback)
        first = [f for f in fields if f[0] == g.delimiter]
        if not first:
            return []
        return first + [f for f in fields if f[0] != g.delimiter]


_LAYOUTS: dict[tuple[bytes, bytes | None], Layout] = {}


def layout(begin_string: bytes, appl_ver_id: bytes | None = None) -> Layout:
    """The shipped dictionary's layout of a session's version, built once.

    FIX.4.x: the version's dictionary (``appl_ver_id`` ignored).  FIXT.1.1:
    the application dictionary of ``appl_ver_id`` (default FIX.5.0SP2).  A
    ``begin_string`` or ``appl_ver_id`` with no shipped dictionary raises
    ``ComposeError`` — callers build their layouts at start-up, so that is a
    start-up error, never a stall on a live session.
    """
    key = (begin_string, appl_ver_id if begin_string == FIXT11 else None)
    found = _LAYOUTS.get(key)
    if found is not None:
        return found
    if begin_string == FIXT11:
        appl = APPL_VERSIONS.get(appl_ver_id or DEFAULT_APPL_VER_ID)
        if appl is None:
            raise ComposeError(f"ApplVerID(1128) {(appl_ver_id or b'').decode('latin-1')} has no shipped dictionary")
        path = DICT_DIR / appl.dictionary
    else:
        name = BEGIN_STRING_DICTIONARY.get(begin_string)
        if name is None:
            raise ComposeError(f"BeginString(8) {begin_string.decode('latin-1')} has no shipped dictionary")
        path = DICT_DIR / name
    found = _LAYOUTS[key] = Layout(load(path), begin_string, key[1])
    return found

