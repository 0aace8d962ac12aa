"""FIX data dictionaries (QuickFIX XML format) and message validation.

The loader reads the de facto standard QuickFIX XML layout (``<fields>``,
``<header>``, ``<trailer>``, ``<messages>``, ``<components>``, repeating
``<group>`` elements) so a venue's own dictionary with custom fields loads
the same way as the shipped ones in ``fixdicts/``.

``validate()`` is a pure function that returns the first problem as a
``ValidationError`` carrying the SessionRejectReason(373) the FIX spec names
for it, the offending tag, and a detailed text for the audit record and the
logs (the Reject(3) itself uses the spec's short wording).

Valid messages take a fast path (``_Plan``): one table per MsgType, built at
the first message of that type, gives each tag the message may carry at its
top level its place (header, body, trailer) and its value check, so a valid
message costs one lookup and one check per field, and a test that no tag
repeats and no required tag is missing.  Anything the table does not answer
(a repeating group, an empty value, a tag it does not list, a value that
fails its check) goes to the exact checks, which find the first problem in
the order QuickFIX does: the fast path can only say "valid", and says it
only where the exact checks would (``tests/test_dictionary.py`` checks the
two against each other on valid and broken messages).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.core.fix import tags as T
from gateway.core.fix.codec import Field, Message, excerpt, parse_uint
from gateway.core.fix.utctime import is_utc_date_only, is_utc_time_only, parse_utc_timestamp
from gateway.core.fix.versions import (
    APPL_VERSIONS,
    BEGIN_STRING_DICTIONARY,
    DEFAULT_APPL_VER_ID,
    FIXT11,
    PRE_FIX42,
    appl_ver_id_choices,
    appl_version_name,
)

#: Folder of the shipped dictionaries (the repository's ``fixdicts/``).
DICT_DIR = Path(__file__).resolve().parents[3] / "fixdicts"


class DictionaryError(ValueError):
    """A dictionary file that cannot be used; the text names file and element."""


@dataclass(frozen=True, slots=True)
class FieldDef:
    tag: int
    name: str
    type: str
    enums: frozenset[bytes] | None


@dataclass(slots=True)
class GroupDef:
    """A repeating group: the NumInGroup field, its delimiter and members."""

    count_tag: int
    delimiter: int = 0
    members: set[int] = field(default_factory=set)
    required: list[int] = field(default_factory=list)
    groups: dict[int, GroupDef] = field(default_factory=dict)


@dataclass(slots=True)
class MessageDef:
    """Allowed top-level tags (group members excluded), required tags in order."""

    name: str
    msg_type: bytes
    admin: bool
    tags: set[int] = field(default_factory=set)
    required: list[int] = field(default_factory=list)
    groups: dict[int, GroupDef] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ValidationError:
    reason: int  # SessionRejectReason(373)
    tag: int | None  # RefTagID(371), None when the spec's reject carries none
    detail: str

    @property
    def text(self) -> str:
        return T.SESSION_REJECT_TEXT.get(self.reason, "Other")


class Dictionary:
    """One FIX version's vocabulary and message layouts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fields: dict[int, FieldDef] = {}
        self.by_name: dict[str, FieldDef] = {}
        self.header = MessageDef("Header", b"", True)
        self.trailer = MessageDef("Trailer", b"", True)
        self.messages: dict[bytes, MessageDef] = {}
        self.begin_string = b""
        self._load()

    # -- loading -------------------------------------------------------------
    def _fail(self, what: str) -> DictionaryError:
        return DictionaryError(f"{self.path}: {what}")

    def _load(self) -> None:
        try:
            root = ET.parse(self.path).getroot()
        except (OSError, ET.ParseError) as exc:
            raise self._fail(f"cannot read dictionary: {exc}") from exc
        if root.tag != "fix":
            raise self._fail("root element must be <fix> (QuickFIX dictionary format)")
        kind = root.get("type", "FIX")
        major, minor = root.get("major", "?"), root.get("minor", "?")
        sp = root.get("servicepack", "0")
        self.begin_string = f"{kind}.{major}.{minor}".encode()
        self.version = f"{kind}.{major}.{minor}" + (f"SP{sp}" if sp not in ("0", "") else "")
        fields_el = root.find("fields")
        if fields_el is None:
            raise self._fail("missing <fields>")
        for f in fields_el.findall("field"):
            try:
                tag = int(f.get("number", ""))
            except ValueError:
                raise self._fail(f"field {f.get('name')!r} has no numeric 'number'") from None
            name = f.get("name") or ""
            values = [v.get("enum", "").encode() for v in f.findall("value")]
            fd = FieldDef(tag, name, self._type(f.get("type", "STRING")), frozenset(values) or None)
            self.fields[tag] = fd
            self.by_name[name] = fd
        self._components: dict[str, ET.Element] = {}
        comps = root.find("components")
        if comps is not None:
            for c in comps.findall("component"):
                self._components[c.get("name", "")] = c
        header = root.find("header")
        if header is not None:
            self._collect(header, self.header, True, self.header.groups)
        trailer = root.find("trailer")
        if trailer is not None:
            self._collect(trailer, self.trailer, True, self.trailer.groups)
        msgs = root.find("messages")
        if msgs is not None:
            for m in msgs.findall("message"):
                mt = m.get("msgtype", "").encode()
                md = MessageDef(m.get("name", ""), mt, m.get("msgcat") == "admin")
                self._collect(m, md, True, md.groups)
                self.messages[mt] = md

    def _type(self, xml_type: str) -> str:
        """The value format a field type stands for, read as QuickFIX reads it (``XMLTypeToType``):
        before FIX.4.2 ``char`` meant a string of characters (SenderCompID(49) is one), and
        FIX.4.0/4.1's ``TIME`` is what later versions call UTCTimestamp."""
        t = xml_type.upper()
        if t == "CHAR" and self.begin_string in PRE_FIX42:
            return "STRING"
        return "UTCTIMESTAMP" if t == "TIME" else t

    def _tag_of(self, name: str, where: str) -> int:
        fd = self.by_name.get(name)
        if fd is None:
            raise self._fail(f"{where} refers to undefined field {name!r}")
        return fd.tag

    def _collect(
        self,
        el: ET.Element,
        target: MessageDef | GroupDef,
        required_ctx: bool,
        groups: dict[int, GroupDef],
        depth: int = 0,
    ) -> None:
        if depth > 32:
            raise self._fail("components nest deeper than 32 levels (a cycle?)")
        members = target.tags if isinstance(target, MessageDef) else target.members
        for child in el:
            req = required_ctx and child.get("required", "N") == "Y"
            name = child.get("name", "")
            if child.tag == "field":
                tag = self._tag_of(name, f"<{el.tag} name={el.get('name')!r}>")
                members.add(tag)
                if req:
                    target.required.append(tag)
                if isinstance(target, GroupDef) and not target.delimiter:
                    target.delimiter = tag
            elif child.tag == "group":
                tag = self._tag_of(name, f"<group name={name!r}>")
                members.add(tag)
                if req:
                    target.required.append(tag)
                if isinstance(target, GroupDef) and not target.delimiter:
                    target.delimiter = tag
                g = GroupDef(tag)
                self._collect(child, g, True, g.groups, depth + 1)
                groups[tag] = g
            elif child.tag == "component":
                comp = self._components.get(name)
                if comp is None:
                    raise self._fail(f"reference to undefined component {name!r}")
                self._collect(comp, target, req, groups, depth + 1)

    def field_label(self, tag: int) -> str:
        fd = self.fields.get(tag)
        return f"{fd.name}({tag})" if fd else T.field_name(tag)


# --- value formats -----------------------------------------------------------


def _count(v: bytes) -> int:
    """A NumInGroup value already known to be digits, bounded (never int() on unbounded peer input)."""
    n = parse_uint(v)
    return n if n is not None else -1


def _is_int(v: bytes) -> bool:
    return v.isdigit() or (v[:1] == b"-" and v[1:].isdigit())


def _is_float(v: bytes) -> bool:
    if v[:1] == b"-":
        v = v[1:]
    if not v:
        return False
    whole, dot, frac = v.partition(b".")
    if not whole and not frac:
        return False
    return (not whole or whole.isdigit()) and (not frac or frac.isdigit())


def _is_month_year(v: bytes) -> bool:
    if len(v) < 6 or not v[:6].isdigit() or not 1 <= int(v[4:6]) <= 12:
        return False
    rest = v[6:]
    return (
        rest == b""
        or (len(rest) == 2 and rest.isdigit())
        or (len(rest) == 2 and rest[:1] == b"w" and rest[1:].isdigit())
    )


_FORMAT_CHECKS: dict[str, Callable[[bytes], bool]] = {
    "INT": _is_int,
    "LENGTH": bytes.isdigit,
    "SEQNUM": bytes.isdigit,
    "NUMINGROUP": bytes.isdigit,
    "TAGNUM": bytes.isdigit,
    "DAYOFMONTH": bytes.isdigit,
    "FLOAT": _is_float,
    "PRICE": _is_float,
    "QTY": _is_float,
    "AMT": _is_float,
    "PERCENTAGE": _is_float,
    "PRICEOFFSET": _is_float,
    "CHAR": lambda v: len(v) == 1,
    "BOOLEAN": lambda v: v in (b"Y", b"N"),
    "UTCTIMESTAMP": lambda v: parse_utc_timestamp(v) is not None,
    "UTCDATE": is_utc_date_only,
    "UTCDATEONLY": is_utc_date_only,
    "LOCALMKTDATE": is_utc_date_only,
    "UTCTIMEONLY": is_utc_time_only,
    "MONTHYEAR": _is_month_year,
}

_MULTI_VALUE_TYPES = frozenset({"MULTIPLEVALUESTRING", "MULTIPLECHARVALUE", "MULTIPLESTRINGVALUE"})

_HEADER, _BODY, _TRAILER = 0, 1, 2  # where a field sits; a valid message never goes back


@dataclass(frozen=True, slots=True)
class _Plan:
    """The fast path for one MsgType: tag -> (place, format check, enumerated values) for every tag a
    valid message of the type carries at its top level, except repeating groups; and its required tags."""

    fields: dict[int, tuple[int, Callable[[bytes], bool] | None, frozenset[bytes] | None]]
    required: frozenset[int]


@dataclass(frozen=True, slots=True)
class ValidationSettings:
    """Per-session switches, named after QuickFIX's where they match."""

    check_fields_have_values: bool = True  # ValidateFieldsHaveValues
    check_fields_out_of_order: bool = True  # ValidateFieldsOutOfOrder
    check_user_defined_fields: bool = True  # ValidateUserDefinedFields (tags >= 5000)
    allow_unknown_message_fields: bool = False  # AllowUnknownMsgFields


@dataclass(frozen=True, slots=True)
class _AppLayer:
    """One application dictionary as a session sees it: its vocabulary with the transport's on top."""

    transport: Dictionary  # held so the ids in the cache key stay this pair's
    application: Dictionary
    fields: dict[int, FieldDef]


_LAYERS: dict[tuple[int, int], _AppLayer] = {}


def _layer(transport: Dictionary, application: Dictionary) -> _AppLayer:
    """The merged vocabulary of ``application`` under ``transport``, built once per pair: a FIXT.1.1
    session knows every ApplVerID's dictionary, and a thousand sessions must not each copy them."""
    key = (id(transport), id(application))
    layer = _LAYERS.get(key)
    if layer is None:
        fields = dict(application.fields)
        fields.update(transport.fields)
        layer = _LAYERS[key] = _AppLayer(transport, application, fields)
    return layer


class Validator:
    """Validates messages of one session against its dictionaries.

    For FIX.4.x one dictionary serves both layers; for FIXT.1.1 the transport
    dictionary covers header, trailer and session messages and an application
    dictionary the application messages: the one of the message's
    ApplVerID(1128), or without one the session's DefaultApplVerID(1137)
    (``application``).  An ApplVerID the session has no dictionary for is
    refused (373=5): validating it against another version's layouts would
    let through what that version forbids.  A Logon(A) whose
    DefaultApplVerID(1137) is not the session's is refused the same way —
    every message it sends without ApplVerID(1128) would otherwise be read
    as the wrong version (fail closed; the session closes without an answer).
    """

    def __init__(
        self,
        transport: Dictionary,
        application: Dictionary | None = None,
        settings: ValidationSettings | None = None,
        default_appl_ver_id: bytes | None = None,
        by_appl_ver_id: Mapping[bytes, Dictionary] | None = None,
    ) -> None:
        self.transport = transport
        self.application = application or transport
        self.settings = settings or ValidationSettings()
        #: FIXT.1.1: the DefaultApplVerID(1137) the session was built with (None: FIX.4.x)
        self.default_appl_ver_id = default_appl_ver_id
        self._default = _layer(transport, self.application)
        self._fields = self._default.fields
        self._by_appl: dict[bytes, _AppLayer] = {
            k: _layer(transport, d) for k, d in (by_appl_ver_id or {}).items() if k != default_appl_ver_id
        }
        if default_appl_ver_id is not None:
            self._by_appl[default_appl_ver_id] = self._default
        # session messages of FIXT.1.1 know only the transport vocabulary
        self._admin_fields: dict[int, FieldDef] = dict(transport.fields)
        self._header_tags = frozenset(transport.header.tags)
        self._trailer_tags = frozenset(transport.trailer.tags)
        self._plans: dict[int, dict[bytes, _Plan]] = {}  # id(layer) -> MsgType -> fast path

    @property
    def appl_ver_ids(self) -> frozenset[bytes]:
        """ApplVerID(1128) values this validator has a dictionary for (empty for FIX.4.x)."""
        return frozenset(self._by_appl)

    def label(self, tag: int) -> str:
        return _label(self._fields, tag)

    def message_def(self, msg_type: bytes, appl_ver_id: bytes | None = None) -> MessageDef | None:
        """The layout of ``msg_type`` (application messages: of ``appl_ver_id``, default the session's)."""
        layer = self._by_appl.get(appl_ver_id, self._default) if appl_ver_id else self._default
        return self._message_def(msg_type, layer)

    def _message_def(self, msg_type: bytes, layer: _AppLayer) -> MessageDef | None:
        md = self.transport.messages.get(msg_type)
        if md is not None and (md.admin or self.application is self.transport):
            return md
        return layer.application.messages.get(msg_type)

    def _appl_layer(self, msg: Message) -> _AppLayer | ValidationError:
        """The application dictionary ``msg`` is written in: ApplVerID(1128), else the session's."""
        if self.default_appl_ver_id is None:
            return self._default
        value = msg.get(T.ApplVerID)
        if msg.msg_type == T.MT_LOGON:
            declared = msg.get(T.DefaultApplVerID)
            if declared and declared != self.default_appl_ver_id:
                return ValidationError(
                    T.SRR_VALUE_INCORRECT,
                    T.DefaultApplVerID,
                    f"DefaultApplVerID(1137) {excerpt(declared)} ({appl_version_name(declared)}) is not this "
                    f"session's {self.default_appl_ver_id.decode()} ({appl_version_name(self.default_appl_ver_id)})",
                )
        if not value or value == self.default_appl_ver_id:
            return self._default  # an empty ApplVerID(1128) is reported by the field checks
        layer = self._by_appl.get(value)
        if layer is None:
            valid = ", ".join(f"{k.decode()} ({appl_version_name(k)})" for k in sorted(self._by_appl))
            return ValidationError(
                T.SRR_VALUE_INCORRECT,
                T.ApplVerID,
                f"ApplVerID(1128) {excerpt(value)} ({appl_version_name(value)}) has no dictionary in this "
                f"session; valid: {valid}",
            )
        return layer

    def validate(self, msg: Message) -> ValidationError | None:
        """First validation failure of ``msg`` or ``None`` when it is valid."""
        if self._fast(msg):
            return None
        return self.validate_exact(msg)

    def _fast(self, msg: Message) -> bool:
        """True only when ``validate_exact`` would find nothing (see the module docstring)."""
        layer = self._default if self.default_appl_ver_id is None else self._appl_layer(msg)
        if not isinstance(layer, _AppLayer):
            return False
        plans = self._plans.get(id(layer))
        if plans is None:
            plans = self._plans[id(layer)] = {}
        plan = plans.get(msg.msg_type)
        if plan is None:
            md = self._message_def(msg.msg_type, layer)
            if md is None:
                return False  # not cached: MsgType is peer input
            plan = plans[msg.msg_type] = self._plan(md, layer)
        checks = plan.fields
        ordered = self.settings.check_fields_out_of_order
        place = _HEADER
        fields = msg.fields
        for tag, value in fields:
            spec = checks.get(tag)
            if spec is None or not value:
                return False
            at, check, enums = spec
            if at < place and ordered:
                return False
            place = at
            if check is not None and not check(value):
                return False
            if enums is not None and value not in enums:
                return False
        return msg.distinct_tags() == len(fields) and msg.has_all(plan.required)

    def _plan(self, md: MessageDef, layer: _AppLayer) -> _Plan:
        vocabulary = self._admin_fields if md.admin else layer.fields
        header, trailer = self.transport.header, self.transport.trailer
        fields: dict[int, tuple[int, Callable[[bytes], bool] | None, frozenset[bytes] | None]] = {}
        for at, scope, tags in ((_BODY, md, md.tags - self._header_tags - self._trailer_tags),
                                (_TRAILER, trailer, self._trailer_tags - self._header_tags),
                                (_HEADER, header, self._header_tags)):
            for tag in tags:
                fd = vocabulary.get(tag)
                if fd is None or tag in scope.groups or (fd.enums is not None and fd.type in _MULTI_VALUE_TYPES):
                    continue  # the exact checks decide
                fields[tag] = (at, _FORMAT_CHECKS.get(fd.type), fd.enums)
        required = {t for d in (header, md, trailer) for t in d.required} - {T.BeginString, T.BodyLength, T.CheckSum}
        return _Plan(fields, frozenset(required))

    def validate_exact(self, msg: Message) -> ValidationError | None:
        """``validate`` without the fast path: every check, in QuickFIX's order."""
        fields = msg.fields
        s = self.settings
        # 1. structure: header first, trailer last (test case 14g)
        if s.check_fields_out_of_order:
            err = self._check_order(fields)
            if err:
                return err
        layer = self._appl_layer(msg)
        if isinstance(layer, ValidationError):
            return layer
        # 2. MsgType known (test case 2q)
        md = self._message_def(msg.msg_type, layer)
        if md is None:
            return ValidationError(
                T.SRR_INVALID_MSGTYPE,
                None,
                f"MsgType(35) {excerpt(msg.msg_type)} is not defined in {layer.application.version}",
            )
        vocabulary = self._admin_fields if md.admin else layer.fields
        # 3. every field: value, tag, membership, format, enum, repeats, groups
        err = self._walk(msg, md, vocabulary, layer)
        if err is not None:
            # QuickFIX checks required fields before any field's value (FIX.4.0's 14b: an order
            # without Symbol(55) that carries TransactTime(60), which FIX.4.0 does not define, is
            # "Required tag missing (55)"); asked only here, the valid path pays nothing for it
            return self._missing_required(msg, md, layer) or err
        return None

    def _missing_required(self, msg: Message, md: MessageDef, layer: _AppLayer) -> ValidationError | None:
        """A required field of header, body or trailer absent from ``msg`` (anywhere in it)."""
        for scope_def in (self.transport.header, md, self.transport.trailer):
            for tag in scope_def.required:
                if tag not in msg and tag not in (T.BeginString, T.BodyLength, T.CheckSum):
                    return ValidationError(
                        T.SRR_REQUIRED_TAG_MISSING, tag, f"required {_label(layer.fields, tag)} is missing"
                    )
        return None

    def _walk(
        self, msg: Message, md: MessageDef, vocabulary: dict[int, FieldDef], layer: _AppLayer
    ) -> ValidationError | None:
        """Each field once, in order; then the required fields at the top level (14b)."""
        fields = msg.fields
        header, trailer = self.transport.header, self.transport.trailer
        seen: set[int] = set()
        i = 0
        n = len(fields)
        while i < n:
            tag, value = fields[i]
            if tag in seen:
                return ValidationError(
                    T.SRR_TAG_APPEARS_MORE_THAN_ONCE, tag, f"{_label(layer.fields, tag)} appears more than once"
                )
            seen.add(tag)
            if tag in self._header_tags:
                scope: MessageDef = header
            elif tag in self._trailer_tags:
                scope = trailer
            else:
                scope = md
            err = self._check_field(tag, value, scope.tags, md, vocabulary, layer)
            if err:
                return err
            group = scope.groups.get(tag)
            if group is not None and value.isdigit():
                i, err = self._walk_group(fields, i + 1, group, _count(value), md, vocabulary, layer)
                if err:
                    return err
                continue
            i += 1
        # required fields at the top level, not only inside a repeating group (14b)
        for scope_def in (header, md, trailer):
            for tag in scope_def.required:
                if tag not in seen and tag not in (T.BeginString, T.BodyLength, T.CheckSum):
                    return ValidationError(
                        T.SRR_REQUIRED_TAG_MISSING, tag, f"required {_label(layer.fields, tag)} is missing"
                    )
        return None

    def _check_order(self, fields: Sequence[Field]) -> ValidationError | None:
        header_tags, trailer_tags = self._header_tags, self._trailer_tags
        phase = 0  # 0 header, 1 body, 2 trailer
        for tag, _ in fields:
            if tag in header_tags:
                if phase:
                    return ValidationError(
                        T.SRR_TAG_OUT_OF_ORDER,
                        tag,
                        f"header field {self.label(tag)} after the body started",
                    )
            elif tag in trailer_tags:
                phase = 2
            else:
                if phase == 2:
                    return ValidationError(
                        T.SRR_TAG_OUT_OF_ORDER, tag, f"{self.label(tag)} after the trailer started"
                    )
                phase = 1
        return None

    def _check_field(
        self,
        tag: int,
        value: bytes,
        allowed: set[int],
        md: MessageDef,
        vocabulary: dict[int, FieldDef],
        layer: _AppLayer,
    ) -> ValidationError | None:
        s = self.settings
        if not value and s.check_fields_have_values:
            return ValidationError(
                T.SRR_TAG_SPECIFIED_WITHOUT_VALUE, tag, f"{_label(layer.fields, tag)} has no value"
            )
        fd = vocabulary.get(tag)
        if fd is None:
            if tag >= 5000 and not s.check_user_defined_fields:
                return None
            return ValidationError(
                T.SRR_INVALID_TAG_NUMBER,
                tag,
                f"tag {tag} is not defined in {layer.application.version}",
            )
        if tag not in allowed and not s.allow_unknown_message_fields:
            return ValidationError(
                T.SRR_TAG_NOT_DEFINED_FOR_MSG_TYPE,
                tag,
                f"{fd.name}({tag}) is not defined for {md.name}({md.msg_type.decode('latin-1')})",
            )
        if not value:
            return None
        check = _FORMAT_CHECKS.get(fd.type)
        if check is not None and not check(value):
            return ValidationError(
                T.SRR_INCORRECT_DATA_FORMAT,
                tag,
                f"{fd.name}({tag}) value {excerpt(value)} is not a valid {fd.type}",
            )
        if fd.enums is not None:
            if fd.type in _MULTI_VALUE_TYPES:
                bad = [v for v in value.split(b" ") if v not in fd.enums]
            else:
                bad = [] if value in fd.enums else [value]
            if bad:
                return ValidationError(
                    T.SRR_VALUE_INCORRECT,
                    tag,
                    f"{fd.name}({tag}) value {excerpt(bad[0])} is not one of its enumerated values",
                )
        return None

    def _walk_group(
        self,
        fields: Sequence[Field],
        i: int,
        group: GroupDef,
        declared: int,
        md: MessageDef,
        vocabulary: dict[int, FieldDef],
        layer: _AppLayer,
    ) -> tuple[int, ValidationError | None]:
        """Walk the instances of ``group`` from ``fields[i]``; check count and members.

        The count is checked before any member, as the NumInGroup field comes
        first on the wire (14i).
        """
        _, instances = self._group_span(fields, i, group)
        if instances != declared:
            return i, ValidationError(
                T.SRR_INCORRECT_NUMINGROUP_COUNT,
                group.count_tag,
                f"{_label(layer.fields, group.count_tag)} declares {declared} instances but {instances} follow",
            )
        n = len(fields)
        count = 0
        seen: set[int] = set()
        while i < n:
            tag, value = fields[i]
            if tag == group.delimiter:
                if count:
                    err = self._group_required(group, seen, layer)
                    if err:
                        return i, err
                count += 1
                seen = set()
            elif tag not in group.members or not count:
                break
            if tag in seen:
                return i, ValidationError(
                    T.SRR_TAG_APPEARS_MORE_THAN_ONCE,
                    tag,
                    f"{_label(layer.fields, tag)} appears twice in one instance of group "
                    f"{_label(layer.fields, group.count_tag)}",
                )
            seen.add(tag)
            err = self._check_field(tag, value, group.members, md, vocabulary, layer)
            if err:
                return i, err
            sub = group.groups.get(tag)
            if sub is not None and value.isdigit():
                i, err = self._walk_group(fields, i + 1, sub, _count(value), md, vocabulary, layer)
                if err:
                    return i, err
                continue
            i += 1
        if count:
            err = self._group_required(group, seen, layer)
            if err:
                return i, err
        if count != declared:
            return i, ValidationError(
                T.SRR_INCORRECT_NUMINGROUP_COUNT,
                group.count_tag,
                f"{_label(layer.fields, group.count_tag)} declares {declared} instances but {count} follow",
            )
        return i, None

    def _group_span(self, fields: Sequence[Field], i: int, group: GroupDef) -> tuple[int, int]:
        """Index after the group's last field and the number of instances."""
        n = len(fields)
        count = 0
        while i < n:
            tag, value = fields[i]
            if tag == group.delimiter:
                count += 1
            elif tag not in group.members or not count:
                break
            sub = group.groups.get(tag)
            if sub is not None and value.isdigit():
                i, _ = self._group_span(fields, i + 1, sub)
                continue
            i += 1
        return i, count

    def _group_required(self, group: GroupDef, seen: set[int], layer: _AppLayer) -> ValidationError | None:
        for tag in group.required:
            if tag not in seen:
                return ValidationError(
                    T.SRR_REQUIRED_TAG_MISSING,
                    tag,
                    f"required {_label(layer.fields, tag)} is missing from a "
                    f"{_label(layer.fields, group.count_tag)} instance",
                )
        return None


def _label(fields: dict[int, FieldDef], tag: int) -> str:
    """``MsgSeqNum(34)``: the dictionary's name for ``tag``, else the standard one."""
    fd = fields.get(tag)
    return f"{fd.name}({tag})" if fd else T.field_name(tag)


_CACHE: dict[Path, Dictionary] = {}


def load(path: str | Path) -> Dictionary:
    """Load (and cache) a QuickFIX-format dictionary file."""
    p = Path(path).resolve()
    d = _CACHE.get(p)
    if d is None:
        d = Dictionary(p)
        _CACHE[p] = d
    return d


def standard_validator(
    begin_string: bytes,
    settings: ValidationSettings | None = None,
    dictionary: str | Path | None = None,
    app_dictionary: str | Path | None = None,
    default_appl_ver_id: bytes | None = None,
) -> Validator:
    """A validator for ``begin_string`` from the shipped or the given dictionaries.

    FIX.4.x: ``dictionary`` or the shipped one of the version.  FIXT.1.1:
    ``dictionary`` (transport) or FIXT11.xml; the application dictionary of
    ``default_appl_ver_id`` (default 9, FIX.5.0SP2) is ``app_dictionary`` or the
    shipped one, and every other ApplVerID(1128) gets its shipped dictionary.
    All are loaded here, at start-up, so a missing file is a start-up error and
    never a stall or an exception on a live session.
    """
    if begin_string not in BEGIN_STRING_DICTIONARY:
        raise DictionaryError(
            f"no shipped dictionary for BeginString {begin_string.decode('latin-1')!r}; "
            f"valid: {', '.join(b.decode() for b in BEGIN_STRING_DICTIONARY)}"
        )
    transport = load(dictionary if dictionary is not None else DICT_DIR / BEGIN_STRING_DICTIONARY[begin_string])
    if begin_string != FIXT11:
        if default_appl_ver_id is not None:
            raise DictionaryError(f"DefaultApplVerID(1137) is for FIXT.1.1 sessions, not {begin_string.decode()}")
        return Validator(transport, None, settings)
    default = default_appl_ver_id or DEFAULT_APPL_VER_ID
    if default not in APPL_VERSIONS:
        raise DictionaryError(
            f"DefaultApplVerID(1137) {default.decode('latin-1')!r} has no dictionary; valid: {appl_ver_id_choices()}"
        )
    by_appl = {k: load(DICT_DIR / v.dictionary) for k, v in APPL_VERSIONS.items() if k != default}
    app = load(app_dictionary if app_dictionary is not None else DICT_DIR / APPL_VERSIONS[default].dictionary)
    return Validator(transport, app, settings, default, by_appl)
