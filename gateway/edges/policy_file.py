"""Policy files (TOML) -> compiled ``Policy`` (edge: reads files).

Errors raise ``ConfigError`` naming the file, the rule id and the key, with
what would be valid.  The policy's SHA-256 (of the file bytes) identifies
the version in audit records.

Besides the rules, the loader compiles and checks what the hot path must be
able to trust:

* ``[instruments]`` (``gateway/core/policy/instruments.py``): rule
  ``symbols`` and risk ``restricted_symbols`` entries are normalised and
  expanded with their aliases here, once; ``restricted_symbols`` and the
  ``reference_prices`` keys are written back into the returned spec in that
  normalised form (``SOURCE:ID`` for identifiers), so ``LimitsSpec.compile()``
  needs nothing else;
* an action's ``kind`` (``gateway/core/policy/actions.py``) may not loosen a
  FIX MsgType, two actions may not give one MsgType two kinds, and ``kind``
  is for outbound actions only;
* an outbound allow rule may not allow an ORDER-kind MsgType that pre-trade
  risk cannot check (a venue's own MsgType declared ``kind = "order"``);
* every bound and reference price is a finite number above 0 (TOML has
  ``nan`` and ``inf``, and a NaN bound compares false with everything).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import math
import os
import tomllib
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.core.identity import ROUTING_FIELDS
from gateway.core.policy.actions import KINDS, ORDER, RISK_CHECKABLE, downgrade, kind_of
from gateway.core.policy.anomaly import AnomalySettings
from gateway.core.policy.engine import CONTROLS, DAYS, POSTURE_LEVELS, Policy, Rule, TimeWindow
from gateway.core.policy.instruments import (
    AS_WRITTEN,
    NORMALIZE_STEPS,
    InstrumentError,
    Instruments,
    compile_instruments,
    display,
)
from gateway.core.policy.risk import Limits
from gateway.edges.config import ConfigError, check_zones


class _S(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ActionSpec(_S, kw_only=True, forbid_unknown_fields=True):
    msg_types: list[str]
    direction: Literal["outbound", "inbound"] = "outbound"
    description: str = ""
    kind: str | None = None  # order | cancel | read | other, for a venue's own MsgTypes (actions.py)


class InstrumentsSpec(_S, kw_only=True, forbid_unknown_fields=True):
    normalize: list[str] = msgspec.field(default_factory=lambda: list(NORMALIZE_STEPS))
    aliases: dict[str, list[str]] = {}  # symbol -> its SecurityIDs, "SOURCE:ID"


class TimeSpec(_S, kw_only=True, forbid_unknown_fields=True):
    tz: str = "UTC"
    days: list[str] = msgspec.field(default_factory=lambda: list(DAYS))
    start: str = "00:00"  # HH:MM local time, inclusive
    end: str = "24:00"  # HH:MM local time, exclusive


class RuleSpec(_S, kw_only=True, forbid_unknown_fields=True):
    id: str
    description: str = ""
    roles: list[str] = []
    actions: list[str]
    zones: list[str] | None = None
    posture: list[str] | None = None
    time: TimeSpec | None = None
    symbols: list[str] | None = None
    accounts: list[str] | None = None
    max_qty: float | None = None
    max_notional: float | None = None
    decision: Literal["allow", "deny"]
    controls: list[str] = []
    ip_allowlist: list[str] = []
    mode: Literal["enforce", "shadow"] = "enforce"
    routing: dict[str, list[str]] = {}  # FIX name of a routing field -> values the message must carry


class PostureSpec(_S, kw_only=True, forbid_unknown_fields=True):
    ttl: float = 300.0  # seconds; an older assertion counts as "unknown"
    # levels that end a live session at once
    logout_on: list[str] = msgspec.field(default_factory=lambda: ["non-compliant"])
    cancel_open_orders: bool = True  # before such a logout, cancel the session's open orders upstream


class LimitsSpec(_S, kw_only=True, forbid_unknown_fields=True):
    max_msgs_per_sec: float | None = None
    burst: float | None = None
    restricted_symbols: list[str] = []
    max_order_qty: float | None = None
    max_notional: float | None = None
    price_collar_pct: float | None = None
    max_open_orders: int | None = None
    duplicate_clordid: bool = True

    def compile(self, instruments: Instruments | None = None) -> Limits:
        """``Limits``; entries as the loader wrote them back (normalised, with aliases) unless ``instruments``."""
        restricted = (instruments or AS_WRITTEN).entry_keys(self.restricted_symbols, any_source=True)
        return Limits(self.max_msgs_per_sec, self.burst, restricted, self.max_order_qty, self.max_notional,
                      self.price_collar_pct, self.max_open_orders, self.duplicate_clordid)


class RiskSpec(_S, kw_only=True, forbid_unknown_fields=True):
    default: LimitsSpec = msgspec.field(default_factory=LimitsSpec)
    identities: dict[str, LimitsSpec] = {}
    accounts: dict[str, LimitsSpec] = {}
    reference_prices: dict[str, float] = {}


class AnomalySpec(_S, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = False
    learn_orders: int = 200  # warm-up: new orders that only build the baseline
    rate_factor: float = 5.0
    min_rate: float = 5.0
    new_symbols: bool = True
    off_hours: bool = True
    kill_on: list[Literal["rate_spike", "new_symbol", "off_hours"]] = []  # findings that trip the kill switch

    def compile(self) -> AnomalySettings:
        return AnomalySettings(self.enabled, self.learn_orders, self.rate_factor, self.min_rate, self.new_symbols,
                               self.off_hours, frozenset(self.kill_on))


class PolicySpec(_S, kw_only=True, forbid_unknown_fields=True):
    # raised every time the policy is signed: with [policy] signer_key the gateway refuses an older one
    version: int | None = None
    shadow: bool = False
    anomaly: AnomalySpec = msgspec.field(default_factory=AnomalySpec)
    risk: RiskSpec = msgspec.field(default_factory=RiskSpec)
    zones: dict[str, list[str]] = {}
    instruments: InstrumentsSpec = msgspec.field(default_factory=InstrumentsSpec)
    actions: dict[str, ActionSpec] = {}
    rules: list[RuleSpec] = []
    posture: PostureSpec = msgspec.field(default_factory=PostureSpec)


def _minutes(value: str, path: Path, key: str) -> int:
    try:
        hh, mm = value.split(":")
        m = int(hh) * 60 + int(mm)
    except ValueError:
        raise ConfigError(path, key, f"{value!r} is not HH:MM") from None
    if not 0 <= m <= 24 * 60:
        raise ConfigError(path, key, f"{value!r} is not a time of day", "00:00 .. 24:00")
    return m


def parse(data: bytes, path: Path) -> tuple[Policy, PolicySpec]:
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "(syntax)", f"not valid TOML: {exc}") from None
    try:
        spec = msgspec.convert(raw, PolicySpec)
    except msgspec.ValidationError as exc:
        text = str(exc)
        problem, _, where = text.partition(" - at `$.")
        where = where.rstrip("`")
        if where.startswith("rules["):
            idx = int(where[6 : where.index("]")])
            raw_rules = raw.get("rules", [])
            entry = raw_rules[idx] if idx < len(raw_rules) else None
            rid = entry.get("id", f"#{idx}") if isinstance(entry, dict) else f"#{idx}"
            where = f"rule {rid!r}: {where}"
        raise ConfigError(path, where or "(top level)", problem) from None
    if spec.version is not None and spec.version < 1:
        raise ConfigError(path, "version", f"{spec.version} is not a version", VERSION_HINT)
    known_zones = set(spec.zones)
    check_zones(spec.zones, path)
    try:
        instruments = compile_instruments(spec.instruments.normalize, spec.instruments.aliases)
    except InstrumentError as exc:
        raise ConfigError(path, f"instruments.{exc.key}", exc.problem, exc.hint) from None
    kinds = _kinds(spec, path)
    _compile_risk(spec, instruments, path)
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, r in enumerate(spec.rules):
        where = f"rule {r.id!r}"
        if r.id in seen:
            raise ConfigError(path, where, f"rule id {r.id!r} is used twice (rules[{i}])")
        seen.add(r.id)
        msg_types: set[bytes] = set()
        directions = set()
        for a in r.actions:
            act = spec.actions.get(a)
            if act is None:
                raise ConfigError(path, f"{where}: actions", f"unknown action {a!r}",
                                  f"defined actions: {', '.join(sorted(spec.actions)) or 'none'}")
            msg_types |= {m.encode() for m in act.msg_types}
            directions.add(act.direction)
        if len(directions) > 1:
            raise ConfigError(path, f"{where}: actions", "mixes inbound and outbound actions", "split the rule")
        if r.decision == "allow" and directions != {"inbound"}:
            _check_risk_can_see(r, spec, kinds, path)
        for key, bound in (("max_qty", r.max_qty), ("max_notional", r.max_notional)):
            if bound is not None and not _positive(bound):
                raise ConfigError(path, f"{where}: {key}", f"{bound!r} is not a positive number",
                                  "a finite number above 0")
        symbols = None
        if r.symbols is not None:
            try:  # a deny-list matches an identifier under any source (instruments.py)
                symbols = instruments.entry_keys(r.symbols, any_source=r.decision == "deny")
            except InstrumentError as exc:
                raise ConfigError(path, f"{where}: symbols", exc.problem, exc.hint) from None
        for z in r.zones or []:
            if z not in known_zones:
                raise ConfigError(path, f"{where}: zones", f"unknown zone {z!r}",
                                  f"defined zones: {', '.join(sorted(known_zones)) or 'none'}")
        for p in r.posture or []:
            if p not in POSTURE_LEVELS:
                raise ConfigError(path, f"{where}: posture", f"unknown level {p!r}",
                                  f"valid: {', '.join(POSTURE_LEVELS)}")
        for c in r.controls:
            if c not in CONTROLS:
                raise ConfigError(path, f"{where}: controls", f"unknown control {c!r}",
                                  f"valid: {', '.join(sorted(CONTROLS))}")
        if "ip_allowlist" in r.controls and not r.ip_allowlist:
            raise ConfigError(path, f"{where}: ip_allowlist", "control ip_allowlist needs addresses")
        nets = []
        for c in r.ip_allowlist:
            try:
                nets.append(ipaddress.ip_network(c, strict=False))
            except ValueError:
                raise ConfigError(path, f"{where}: ip_allowlist", f"{c!r} is not a CIDR") from None
        window = None
        if r.time is not None:
            try:
                tz = ZoneInfo(r.time.tz)
            except (ZoneInfoNotFoundError, ValueError):
                raise ConfigError(path, f"{where}: time.tz", f"unknown time zone {r.time.tz!r}",
                                  "an IANA name such as Europe/London") from None
            bad = [d for d in r.time.days if d not in DAYS]
            if bad:
                raise ConfigError(path, f"{where}: time.days", f"unknown days {bad}", f"valid: {', '.join(DAYS)}")
            window = TimeWindow(tz, frozenset(DAYS.index(d) for d in r.time.days),
                                _minutes(r.time.start, path, f"{where}: time.start"),
                                _minutes(r.time.end, path, f"{where}: time.end"))
        rules.append(Rule(
            id=r.id,
            decision=r.decision,
            shadow=r.mode == "shadow",
            roles=frozenset(r.roles),
            msg_types=frozenset(msg_types),
            direction=directions.pop() if directions else "outbound",
            zones=frozenset(r.zones) if r.zones is not None else None,
            posture=frozenset(r.posture) if r.posture is not None else None,
            window=window,
            symbols=symbols,
            accounts=frozenset(a.encode() for a in r.accounts) if r.accounts is not None else None,
            max_qty=r.max_qty,
            max_notional=r.max_notional,
            controls=frozenset(r.controls),
            ip_allowlist=tuple(nets),
            reason=r.description,
            routing=_routing(r.routing, path, where),
        ))
    for level in spec.posture.logout_on:
        if level not in POSTURE_LEVELS:
            raise ConfigError(path, "posture.logout_on", f"unknown level {level!r}",
                              f"valid: {', '.join(POSTURE_LEVELS)}")
    policy = Policy(rules, spec.shadow, hashlib.sha256(data).hexdigest(), str(path), kinds, instruments)
    return policy, spec


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _kinds(spec: PolicySpec, path: Path) -> dict[bytes, str]:
    """MsgType -> kind, as the outbound actions declare it (checked: no FIX MsgType loosened)."""
    kinds: dict[bytes, str] = {}
    declared_by: dict[bytes, str] = {}
    for name, act in spec.actions.items():
        if act.kind is None:
            continue
        key = f"action {name!r}: kind"
        if act.kind not in KINDS:
            raise ConfigError(path, key, f"unknown kind {act.kind!r}", f"valid: {', '.join(KINDS)}")
        if act.direction != "outbound":
            raise ConfigError(path, key, "kind applies to outbound actions only (what clients send)",
                              "remove kind from this inbound action")
        for m in act.msg_types:
            mt = m.encode()
            why = downgrade(mt, act.kind)
            if why is not None:
                raise ConfigError(path, key, why, "remove kind; declare kinds for a venue's own MsgTypes only")
            if kinds.get(mt, act.kind) != act.kind:
                raise ConfigError(path, key, f"MsgType(35)={m} is declared {kinds[mt]!r} by action "
                                             f"{declared_by[mt]!r} and {act.kind!r} by action {name!r}",
                                  "give each MsgType one kind")
            kinds[mt], declared_by[mt] = act.kind, name
    return kinds


def _check_risk_can_see(r: RuleSpec, spec: PolicySpec, kinds: dict[bytes, str], path: Path) -> None:
    """Refuse an allow of an ORDER-kind MsgType whose instruments and sizes risk cannot find."""
    for a in r.actions:
        for m in spec.actions[a].msg_types:
            mt = m.encode()
            if kind_of(mt, kinds) == ORDER and mt not in RISK_CHECKABLE:
                known = ", ".join(sorted(t.decode() for t in RISK_CHECKABLE))
                raise ConfigError(path, f"rule {r.id!r}: actions",
                                  f"action {a!r} allows MsgType(35)={m} as an order, which pre-trade risk cannot "
                                  "check (it does not know where that MsgType carries instruments, sizes and prices)",
                                  f"risk checks the FIX order types ({known}); do not allow {m}, or declare its "
                                  'action kind = "other" if it creates no exposure')


def _compile_risk(spec: PolicySpec, instruments: Instruments, path: Path) -> None:
    """Check every limit; write restricted symbols and reference prices back normalised, aliases included."""
    sections = [("risk.default", spec.risk.default),
                *((f"risk.identities.{k}", ls) for k, ls in spec.risk.identities.items()),
                *((f"risk.accounts.{k}", ls) for k, ls in spec.risk.accounts.items())]
    for where, ls in sections:
        for key in ("max_msgs_per_sec", "burst", "max_order_qty", "max_notional", "price_collar_pct"):
            value = getattr(ls, key)
            if value is not None and not _positive(value):
                raise ConfigError(path, f"{where}.{key}", f"{value!r} is not a positive number",
                                  "a finite number above 0, or leave it out")
        if ls.max_open_orders is not None and ls.max_open_orders < 0:
            raise ConfigError(path, f"{where}.max_open_orders", f"{ls.max_open_orders} is negative")
        try:
            keys = instruments.entry_keys(ls.restricted_symbols, any_source=False)
        except InstrumentError as exc:
            raise ConfigError(path, f"{where}.restricted_symbols", exc.problem, exc.hint) from None
        ls.restricted_symbols = sorted(display(k) for k in keys)
    prices: dict[str, float] = {}
    for name, price in spec.risk.reference_prices.items():
        where = f"risk.reference_prices.{name}"
        if not _positive(price):
            raise ConfigError(path, where, f"{price!r} is not a positive number", "a finite price above 0")
        try:
            key = display(instruments.symbol_of(instruments.entry_key(name)))
        except InstrumentError as exc:
            raise ConfigError(path, where, exc.problem, exc.hint) from None
        if key in prices:
            raise ConfigError(path, where, f"{key} has two reference prices (names are compared normalised)")
        prices[key] = price
    spec.risk.reference_prices = prices


VERSION_HINT = "a whole number from 1 up, raised every time the policy is signed"


class PolicyVersions:
    """``state_dir/policy-version.json``: the highest signed policy ``version`` loaded, and its SHA-256.

    Any policy ever signed verifies for ever, so the signature alone lets an
    older signed policy (with permissions since removed) be put back.  The
    version inside the signed bytes orders them: with ``[policy] signer_key``
    the gateway refuses a lower version, the same version with other bytes,
    and no version once one was seen.  The mark is kept under ``state_dir``
    so a restart does not forget it (the gateway refuses to start on a
    rollback).  Without a signer the check would protect nothing — whoever
    can write the file can write any version — so it is not made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.version: int | None = None
        self.sha256 = ""
        try:
            raw = json.loads(path.read_text()) if path.exists() else {}
            if raw:
                self.version, self.sha256 = int(raw["version"]), str(raw["sha256"])
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(path, "version", f"cannot read the policy version state ({exc!r})",
                              "it records the newest signed policy loaded, to refuse rollbacks: restore it, "
                              "or delete it to trust the policy on disk as the newest") from None

    def check(self, path: Path, version: int | None, sha256: str) -> None:
        """Raise ConfigError (naming the policy file and ``version``) when this would roll back."""
        if self.version is None:
            return
        if version is None:
            raise ConfigError(path, "version", f"the signed policy has no version; version {self.version} was "
                              "loaded before (refused as a possible rollback)",
                              f"add version = {self.version + 1} and sign it again")
        if version < self.version:
            raise ConfigError(path, "version", f"version {version} is older than version {self.version}, "
                              "loaded before: refused as a rollback",
                              f"sign a policy with version {self.version + 1} or higher")
        if version == self.version and sha256 != self.sha256:
            raise ConfigError(path, "version", f"version {version} was loaded before with other contents "
                              f"(sha256 {self.sha256[:16]}...)", f"raise it to version = {version + 1} and sign again")

    def advance(self, version: int | None, sha256: str) -> None:
        """Remember a loaded policy's version (raises OSError; the caller refuses the policy then)."""
        if version is None or (self.version is not None and version < self.version):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")  # workers share state_dir
        tmp.write_text(json.dumps({"version": version, "sha256": sha256}))
        os.replace(tmp, self.path)
        self.version, self.sha256 = version, sha256


def signature_path(path: Path) -> Path:
    return path.with_name(path.name + ".sig")


def sign(path: Path, key: Ed25519PrivateKey) -> Path:
    """Write ``FILE.sig``: base64 Ed25519 signature over the policy file's bytes."""
    out = signature_path(path)
    out.write_bytes(base64.b64encode(key.sign(path.read_bytes())) + b"\n")
    return out


def load(path: str | Path, signer_key: Ed25519PublicKey | None = None) -> tuple[Policy, PolicySpec]:
    """Load a policy; with ``signer_key`` the detached ``FILE.sig`` must verify (config-drift protection)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(p, "(file)", f"cannot read: {exc.strerror}") from None
    if signer_key is not None:
        sig_path = signature_path(p)
        try:
            sig = base64.b64decode(sig_path.read_bytes().strip(), validate=True)
            signer_key.verify(sig, data)
        except OSError:
            raise ConfigError(p, "(signature)", f"{sig_path.name} is missing",
                              f"sign it: fixgw policy sign {p} --key ADMIN.key") from None
        except (ValueError, InvalidSignature):
            raise ConfigError(p, "(signature)", f"{sig_path.name} does not verify with the admin key",
                              "the file changed after signing, or it was signed with another key") from None
    return parse(data, p)


def _routing(spec: dict[str, list[str]], path: Path, where: str) -> tuple[tuple[int, frozenset[bytes]], ...]:
    """A rule's ``routing`` predicate: FIX field names (as in the identity registry) -> values."""
    out = []
    for name, values in spec.items():
        tag = ROUTING_FIELDS.get(name)
        if tag is None or name == "XmlData":
            valid = ", ".join(n for n in ROUTING_FIELDS if n != "XmlData")
            raise ConfigError(path, f"{where}: routing.{name}", "not a routing field a rule can name",
                              f"valid: {valid}")
        out.append((tag, frozenset(v.encode() for v in values)))
    return tuple(out)
