"""Context that changes while sessions live (edge): device posture, JIT grants, kill switch.

All three are small JSON files, watched by the gateway (and written by the
posture agent, ``fixgw jit``/``fixgw kill`` or, later, the admin API):

* posture — ``{"<identity>": {"level": "compliant", "asserted_at": <epoch s>}}``;
  an assertion older than the policy's TTL counts as ``unknown``;
* JIT grants — ``{"<identity>": <expires_at epoch s>}``;
* kill switch — ``{"global": false, "identities": [...], "accounts": [...]}``.

A file that cannot be read keeps the last good state (and the caller raises
an alert); a missing file means "nothing asserted".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.edges.revocation import mtime


class FeedError(Exception):
    pass


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise FeedError(f"{path}: {exc}") from None


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


@dataclass
class Watched:
    path: Path | None
    stamp: float | None = None

    def changed(self) -> bool:
        now = mtime(self.path)
        if now != self.stamp:
            self.stamp = now
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

    def reload(self) -> None:
        if self.file.path is None:
            return
        data = read_json(self.file.path)
        out: dict[str, tuple[str, float]] = {}
        for ident, a in data.items():
            if isinstance(a, dict) and isinstance(a.get("level"), str):
                out[ident] = (a["level"], float(a.get("asserted_at", 0)))
        self.assertions = out

    def age(self, identity: str, now: float) -> float:
        """Seconds since the newest assertion for ``identity`` (-1 when there is none)."""
        times = [a[1] for a in (self.assertions.get(identity), self.pushed.get(identity)) if a is not None]
        return now - max(times) if times else -1.0

    def level(self, identity: str, now: float) -> str:
        a = self.assertions.get(identity)
        p = self.pushed.get(identity)
        if p is not None and (a is None or p[1] >= a[1]):
            a = p  # the newer assertion wins, whichever way it came
        if a is None or now - a[1] > self.ttl:
            return "unknown"
        return a[0]


@dataclass
class JitGrants:
    file: Watched
    grants: dict[str, float] = field(default_factory=dict)

    def reload(self) -> None:
        if self.file.path is not None:
            self.grants = {k: float(v) for k, v in read_json(self.file.path).items()}

    def active(self, identity: str, now: float) -> bool:
        return now < self.grants.get(identity, 0.0)


@dataclass
class KillSwitch:
    file: Watched
    everything: bool = False
    identities: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()

    def reload(self) -> None:
        if self.file.path is None:
            return
        data = read_json(self.file.path)
        self.everything = bool(data.get("global", False))
        self.identities = frozenset(data.get("identities", []))
        self.accounts = frozenset(data.get("accounts", []))

    def blocks(self, identity: str, account: str | None) -> str | None:
        if self.everything:
            return "global kill switch is on"
        if identity in self.identities:
            return f"kill switch is on for {identity}"
        if account is not None and account in self.accounts:
            return f"kill switch is on for account {account}"
        return None
