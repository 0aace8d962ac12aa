"""Context that changes while sessions live (edge): device posture, JIT grants, kill switch.

All are small JSON files, watched by the gateway (and written by the posture
agent, the admin API, ``fixgw kill`` and ``fixgw jit break-glass``):

* posture — ``{"<identity>": {"level": "compliant", "asserted_at": <epoch s>}}``;
  an assertion older than the policy's TTL counts as ``unknown``;
* JIT grants — ``{"<identity>": <expires_at epoch s>}``, written by the admin
  API once a *second* administrator approved (the two-person flow);
* break-glass JIT grants — ``jit-break-glass.json`` next to it,
  ``{"<identity>": {"until": <epoch s>, "by": "<os user>", "reason": "...",
  "at": <epoch s>}}``, written by ``fixgw jit break-glass`` on the gateway
  host when the admin API cannot be used; the gateway writes a
  ``jit_break_glass`` audit record before such a grant counts;
* kill switch — ``{"global": false, "identities": [...], "accounts": [...]}``.

Every file is someone else's input, so nothing in it is trusted to be well
formed.  A file that is not UTF-8, not JSON, has NaN/Infinity in it, or is
not a JSON object at the top raises ``FeedError`` naming the file and what is
wrong: the caller keeps the last good state and raises an alert.  A bad
*entry* (a non-numeric ``asserted_at``, an unknown level, a grant that is not
a number) is refused on its own and reported, so one broken line cannot hold
back the others — for posture that matters, since the entry held back might
be the one that says a device turned non-compliant.  A missing file means
"nothing asserted".

Posture times are clamped to the time the file was read: an assertion dated in
the future would otherwise never go stale and would outrank every later
assertion.  When the file and an admin-API push disagree, both being fresh,
the more restrictive level wins (``RESTRICTIVENESS``): each source can lift
only its own restriction, by asserting again (or by letting it age out).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core.policy.engine import POSTURE_LEVELS
from gateway.edges.revocation import Stamp, stamp

#: posture levels, least to most restrictive; a level not listed ranks above all of them
RESTRICTIVENESS = {"highly-compliant": 0, "compliant": 1, "unknown": 2, "non-compliant": 3}
#: an assertion dated this far ahead of the time read is reported (clock skew below it is not news)
FUTURE_TOLERANCE = 1.0


class FeedError(Exception):
    """A feed file that cannot be used at all; ``str()`` names the file and what is wrong."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _show(value: object, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters: a hostile file must not flood the log and the audit stream."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), "null" if value is None else type(value).__name__)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` ({} when the file is missing or empty); FeedError names what is wrong."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise FeedError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FeedError(f"{path}: line {line}: byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8 "
                        "(the file must be UTF-8 JSON)") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise FeedError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # NaN, Infinity
        raise FeedError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise FeedError(f"{path}: a JSON object {{...}} is expected at the top level, found {_kind(data)}")
    return data


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # workers share state_dir: one temp file each
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def epoch(value: object) -> float | None:
    """``value`` as epoch seconds: a finite JSON number (not a boolean), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


@dataclass
class Watched:
    path: Path | None
    seen: Stamp | None = None

    def changed(self) -> bool:
        now = stamp(self.path)
        if now != self.seen:
            self.seen = now
            return True
        return False


@dataclass
class PostureFeed:
    file: Watched
    ttl: float = 300.0
    assertions: dict[str, tuple[str, float]] = field(default_factory=dict)
    pushed: dict[str, tuple[str, float]] = field(default_factory=dict)  # via the admin API

    def push(self, identity: str, level: str, now: float) -> None:
        self.pushed[identity] = (level, now)

    def reload(self, now: float) -> list[str]:
        """Read the file at ``now``: the entries that are refused (each keeps its last good assertion,
        which ages out by the TTL) and assertions dated in the future (clamped to ``now``)."""
        if self.file.path is None:
            return []
        data = read_json(self.file.path)
        out: dict[str, tuple[str, float]] = {}
        problems: list[str] = []
        where = self.file.path
        for ident, a in data.items():
            if not isinstance(a, dict):
                problems.append(f"{where}: {_show(ident)}: expected an object with level and asserted_at, "
                                f"found {_kind(a)}")
            elif a.get("level") not in POSTURE_LEVELS:
                problems.append(f"{where}: {_show(ident)}: level {_show(a.get('level'))} is not one of "
                                f"{', '.join(POSTURE_LEVELS)}")
            elif (at := epoch(a.get("asserted_at"))) is None:
                problems.append(f"{where}: {_show(ident)}: asserted_at {_show(a.get('asserted_at'))} is not "
                                "epoch seconds (a finite number)")
            else:
                if at > now + FUTURE_TOLERANCE:
                    problems.append(f"{where}: {_show(ident)}: asserted_at is {at - now:.0f} s in the future; "
                                    "counted from the time read")
                out[ident] = (a["level"], min(at, now))
                continue
            if ident in self.assertions:
                out[ident] = self.assertions[ident]  # the last good assertion stays (and ages out)
        self.assertions = out
        return problems

    def age(self, identity: str, now: float) -> float:
        """Seconds since the newest assertion for ``identity`` (-1 when there is none)."""
        times = [a[1] for a in (self.assertions.get(identity), self.pushed.get(identity)) if a is not None]
        return now - max(times) if times else -1.0

    def level(self, identity: str, now: float) -> str:
        """The level in force (per message: two lookups).  Stale assertions count as none; of two
        fresh ones the more restrictive wins, whichever way it came."""
        a = self.assertions.get(identity)
        p = self.pushed.get(identity)
        if a is not None and now - a[1] > self.ttl:
            a = None
        if p is not None and now - p[1] > self.ttl:
            p = None
        if a is None:
            return p[0] if p is not None else "unknown"
        if p is None or RESTRICTIVENESS.get(a[0], 9) >= RESTRICTIVENESS.get(p[0], 9):
            return a[0]
        return p[0]


@dataclass(frozen=True)
class BreakGlass:
    """A JIT grant given on the gateway host without a second approver (``fixgw jit break-glass``)."""

    identity: str
    until: float
    by: str
    reason: str
    at: float


@dataclass
class JitGrants:
    file: Watched
    grants: dict[str, float] = field(default_factory=dict)
    #: ``jit-break-glass.json`` beside ``jit.json``; its grants count once the watch has audited them
    break_glass_file: Watched = field(default_factory=lambda: Watched(None))
    break_glass: dict[str, BreakGlass] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.break_glass_file.path is None and self.file.path is not None:
            self.break_glass_file = Watched(self.file.path.with_name("jit-break-glass.json"))

    def reload(self, now: float) -> list[str]:
        """Read the approved grants: the entries refused (no grant for them: a grant is a permission)."""
        if self.file.path is None:
            return []
        grants: dict[str, float] = {}
        problems = []
        for ident, until in read_json(self.file.path).items():
            value = epoch(until)
            if value is None:
                problems.append(f"{self.file.path}: {_show(ident)}: {_show(until)} is not an expiry in epoch seconds")
            else:
                grants[ident] = value
        self.grants = grants
        return problems

    def read_break_glass(self, known: Container[str]) -> tuple[dict[str, BreakGlass], list[str]]:
        """The break-glass grants on disk for ``known`` identities (not yet in force: the watch audits
        them first) and the entries refused."""
        path = self.break_glass_file.path
        if path is None:
            return {}, []
        out: dict[str, BreakGlass] = {}
        problems = []
        for ident, g in read_json(path).items():
            if not isinstance(g, dict):
                problems.append(f"{path}: {_show(ident)}: expected an object with until, by, reason, found {_kind(g)}")
                continue
            until, at = epoch(g.get("until")), epoch(g.get("at"))
            by, reason = g.get("by"), g.get("reason")
            if until is None or at is None:
                problems.append(f"{path}: {_show(ident)}: until and at must be epoch seconds")
            elif not (isinstance(by, str) and by.strip() and isinstance(reason, str) and reason.strip()):
                problems.append(f"{path}: {_show(ident)}: a break-glass grant must say who (by) and why (reason)")
            elif ident not in known:
                problems.append(f"{path}: {_show(ident)}: not in the identity registry")
            else:
                out[ident] = BreakGlass(ident, until, by, reason, at)
        return out, problems

    def active(self, identity: str, now: float) -> bool:
        if now < self.grants.get(identity, 0.0):
            return True
        g = self.break_glass.get(identity)
        return g is not None and now < g.until


@dataclass
class KillSwitch:
    file: Watched
    everything: bool = False
    identities: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()

    def reload(self, now: float) -> list[str]:
        """Read the switch; anything malformed refuses the whole file (it is one switch: half of it
        applied could be the half that switches something off)."""
        if self.file.path is None:
            return []
        path = self.file.path
        data = read_json(path)
        everything = data.get("global", False)
        if not isinstance(everything, bool):
            raise FeedError(f"{path}: global must be true or false, found {_show(everything)}")
        lists = {}
        for key in ("identities", "accounts"):
            values = data.get(key, [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise FeedError(f"{path}: {key} must be a list of strings, found {_show(values)}")
            lists[key] = frozenset(values)
        self.everything, self.identities, self.accounts = everything, lists["identities"], lists["accounts"]
        return []

    def blocks(self, identity: str, account: str | None) -> str | None:
        if self.everything:
            return "global kill switch is on"
        if identity in self.identities:
            return f"kill switch is on for {identity}"
        if account is not None and account in self.accounts:
            return f"kill switch is on for account {account}"
        return None
