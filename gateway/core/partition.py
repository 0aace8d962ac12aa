"""Which worker process owns which identities and sessions (pure).

With ``[gateway] workers = N`` the gateway runs N shared-nothing worker
processes.  Everything that must be decided in one place for an identity
lives in exactly one worker: its client sessions, their exchange legs and
stores, its pre-trade risk book, its anomaly baseline and its audit chain's
records.  The partition is therefore by *identity*, and identities that
share a CompID travel together (either of them may log on as it, so its
session must be in one place).

Assignment is deterministic from the config alone, so every worker computes
the same table without talking to the others: an identity's explicit
``worker = k`` wins; every other group goes to the worker with the fewest
groups so far (lowest index on a tie), in config order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.core.errors import ConfigError


class _Identity(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def comp_ids(self) -> list[str]: ...
    @property
    def worker(self) -> int | None: ...


class _Gateway(Protocol):
    @property
    def workers(self) -> int: ...


class _Config(Protocol):
    """The parts of ``gateway.edges.config.Config`` the partition reads."""

    @property
    def path(self) -> str: ...
    @property
    def gateway(self) -> _Gateway: ...
    @property
    def identities(self) -> Sequence[_Identity]: ...


@dataclass(frozen=True)
class Partition:
    """The owner of every identity and session; ``count`` workers in all."""

    count: int
    by_identity: dict[str, int]
    by_comp_id: dict[str, int]

    def owner_of_identity(self, identity: str) -> int:
        """Unknown identities stay where they landed: that worker refuses them."""
        return self.by_identity.get(identity, -1)

    def owner_of_session(self, client_comp_id: str) -> int:
        """Sessions no identity may log on to are kept by worker 0 (nobody reaches them)."""
        return self.by_comp_id.get(client_comp_id, 0)


def partition(cfg: _Config) -> Partition:
    """Group identities by shared CompIDs and give each group a worker."""
    n = cfg.gateway.workers
    idents = cfg.identities
    parent = list(range(len(idents)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_with: dict[str, int] = {}
    for i, ic in enumerate(idents):
        for comp in ic.comp_ids:
            j = first_with.setdefault(comp, i)
            if j != i:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(idents)):
        groups.setdefault(find(i), []).append(i)
    load = [0] * n
    owner_of_group: dict[int, int] = {}
    for root, members in groups.items():  # explicit choices first, checked for conflicts
        pinned = {(idents[i].worker, i) for i in members if idents[i].worker is not None}
        workers = {w for w, _ in pinned}
        if len(workers) > 1:
            (w1, i1), (w2, i2) = sorted(pinned)[:2]
            raise ConfigError(cfg.path, f"identities[{i2}].worker",
                              f"worker {w2}, but it shares a CompID with identities[{i1}] on worker {w1}",
                              "identities that share a CompID must be on the same worker")
        if workers:
            w = workers.pop()
            assert w is not None
            owner_of_group[root] = w
            load[w] += 1
    for root in groups:
        if root not in owner_of_group:
            w = min(range(n), key=lambda k: (load[k], k))
            owner_of_group[root] = w
            load[w] += 1
    by_identity = {idents[i].id: owner_of_group[find(i)] for i in range(len(idents))}
    by_comp = {comp: owner_of_group[find(i)] for comp, i in first_with.items()}
    return Partition(n, by_identity, by_comp)
