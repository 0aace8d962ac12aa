"""Risk state across a restart: rebuilt at start-up from the audit stream.

Pre-trade risk is only as good as its memory.  A gateway that forgot, on
restart, which ClOrdIDs it had carried would forward a duplicate; one that
forgot its open orders would count ``max_open_orders`` from zero; a fresh
anomaly baseline is a new warm-up in which nothing is judged.  So the
gateway rebuilds, before it listens:

* per identity (``RiskBook``): the ClOrdIDs seen and the orders still open;
* per route: the ClOrdIDs forwarded (PossResend duplicates, FIX 19a) and the
  open orders with Side, Symbol and OrderQty (cancel on a posture logout);
* the reference prices learned from LastPx(31);
* per identity (``AnomalyDetector``): the baseline, and the findings already
  reported this hour.

The source is the audit stream, because every message crosses only after
its decision record was written, and it is already on disk: nothing is
written on the message path to make this possible.  Records replayed:

* ``decision`` outbound, allowed (``allow``, ``shadow-deny``): the order is
  counted at the exchange — its ClOrdIDs seen and open, an OrigClOrdID it
  replaces closed — as the live path does once it forwarded it.  When its
  ``outcome`` says ``not_forwarded`` that is undone.  A decision without an
  outcome (the process died between forwarding it and writing the outcome)
  stays counted: fail closed, a duplicate is refused and a limit counts it;
* every ``decision`` outbound and ``signature_refused``: the anomaly
  baseline learns the message (as ``AnomalyDetector.observe`` did, before
  any check);
* ``decision`` inbound: a terminal OrdStatus(39) closes its ClOrdID(11) and
  OrigClOrdID(41); LastPx(31) is the symbol's reference price;
* ``venue_reject`` of a NewOrderSingle: the venue refused it at the session
  level, so it never reached the book — closed (in the book the record names);
* ``logon`` with ``reset``: a new FIX session, the route's PossResend memory
  starts again (as ``Router.session_reset``);
* ``anomaly``: not reported again within the hour.

Every chain of the audit folder is read (``main`` and each ``worker-K``: the
identity may have lived on another worker before the worker count changed),
merged in time order; only identities and routes this process owns are
rebuilt.  Sealed records are opened with the audit key; a line that cannot
be read is skipped and counted in the ``risk_rebuilt`` record.  The token
buckets (throttle, refusal budget) are not rebuilt: they refill within
seconds.  Limits are the ones in force now (the policy at start-up).
"""

from __future__ import annotations

import base64
import binascii
import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.app.routing import FORWARDED_SIZE, Router
from gateway.core import pipeline
from gateway.core.numbers import positive
from gateway.core.policy.risk import CLORDID_TYPES, TERMINAL_STATUS
from gateway.edges.audit_chain import chains, segments
from gateway.shells.route import Route

#: outcomes of an allowed outbound decision (``Verdict.outcome``)
ALLOWED = frozenset({"allow", "shadow-deny"})
#: OrdStatus(39) values that end an order, as text
_TERMINAL = frozenset(s.decode() for s in TERMINAL_STATUS)
#: MsgTypes whose ClOrdIDs stay open on the route for a cancel on logout (``Router._accepted``)
_ROUTE_OPEN_TYPES = frozenset({"D", "G"})


class Rec(msgspec.Struct):
    """The fields of an audit record the rebuild reads; every other field is skipped unread.

    Decoding into this instead of a dict is what makes the replay fast (about four times: the
    dozens of fields a decision record has for compliance are never built as Python objects).
    Values stay untyped (``Any``) and are checked where used: a record of another kind may use the
    same name for something else."""

    kind: str = ""
    seq: Any = None
    ts: Any = None
    identity: Any = None
    direction: Any = None
    decision: Any = None
    msg_type: Any = None
    cl_ord_id: Any = None
    cl_ord_ids: Any = None
    orig_cl_ord_id: Any = None
    orig_cl_ord_ids: Any = None
    symbol: Any = None
    side: Any = None
    qty: Any = None
    session: Any = None
    decision_seq: Any = None
    result: Any = None
    ord_status: Any = None
    last_px: Any = None
    reset: Any = None
    finding: Any = None
    detail: Any = None
    written_late: Any = None
    nonce: Any = None  # sealed records (encrypted at rest)
    data: Any = None


_DECODER = msgspec.json.Decoder(Rec)


class _Undo:
    """What counting one allowed order changed, so a ``not_forwarded`` outcome can take it back."""

    __slots__ = ("identity", "route", "ids", "closed", "route_closed")

    def __init__(self, identity: str, route: Route | None, ids: list[bytes]) -> None:
        self.identity, self.route, self.ids = identity, route, ids
        self.closed: list[bytes] = []  # open orders a replace closed in the book
        self.route_closed: list[tuple[bytes, tuple[bytes, bytes, bytes]]] = []


class Rebuild:
    """One replay of the audit stream into a router (``run``)."""

    def __init__(self, router: Router, owns: Callable[[str], bool], routes: Iterable[Route]) -> None:
        self.router = router
        self.owns = owns
        self.routes = {r.name: r for r in routes}
        self.pending: dict[tuple[int, int], _Undo] = {}  # (chain, decision seq) -> waiting for its outcome
        self.stats = {"records": 0, "unreadable": 0, "orders": 0, "not_forwarded": 0, "closed": 0}
        self._second: tuple[str, float] = ("", 0.0)

    # -- reading -------------------------------------------------------------------------
    def run(self, root: Path, aead: AESGCM | None) -> dict[str, Any]:
        """Replay every chain under ``root``; the summary for the ``risk_rebuilt`` record."""
        t0 = time.monotonic()
        found = chains(root) if root.exists() else []
        names = [name for name, _ in found]
        streams = [self._records(i, folder, aead) for i, (_, folder) in enumerate(found)]
        for chain, rec in heapq.merge(*streams, key=lambda item: str(item[1].ts)):
            self._apply(chain, rec)
        without_outcome = len(self.pending)
        self.pending.clear()
        books = [b for i, b in self.router.risk_books.items() if self.owns(i)]
        return {"chains": names, **self.stats, "without_outcome": without_outcome,
                "identities": len(books), "open_orders": sum(len(b.open_orders) for b in books),
                "clordids": sum(len(b.seen) for b in books), "reference_prices": len(self.router.last_px),
                "seconds": round(time.monotonic() - t0, 3)}

    def _records(self, chain: int, folder: Path, aead: AESGCM | None) -> Iterator[tuple[int, Rec]]:
        """The records of one chain, in order; a torn, altered or (without the key) sealed line is counted
        unreadable and skipped — the rebuild takes what the stream proves, ``fixgw audit verify`` judges it."""
        for _, path in segments(folder):
            with open(path, "rb") as f:  # line by line: one chain's segment is never all in memory
                for line in f:
                    try:
                        rec = _DECODER.decode(line)
                        if rec.kind == "sealed":
                            rec = _unseal(rec, aead)
                    except (msgspec.DecodeError, ValueError, InvalidTag, binascii.Error, TypeError):
                        self.stats["unreadable"] += 1
                        continue
                    yield chain, rec

    def _when(self, ts: object) -> float:
        """A record's ``ts`` (``2026-11-21T12:00:00.123456Z``) as epoch seconds; the second is parsed once."""
        if not isinstance(ts, str) or len(ts) < 26:
            return 0.0
        head, sec = self._second
        if ts[:19] != head:
            sec = datetime.fromisoformat(ts[:19]).replace(tzinfo=UTC).timestamp()
            self._second = (ts[:19], sec)
        return sec + int(ts[20:26]) / 1e6

    # -- replaying -----------------------------------------------------------------------
    def _apply(self, chain: int, rec: Rec) -> None:
        self.stats["records"] += 1
        kind = rec.kind
        if kind == "outcome":
            undo = self.pending.pop((chain, _int(rec.decision_seq)), None)
            if undo is not None and rec.result != "forwarded":
                self._take_back(undo)
            return
        if kind == "venue_reject":
            self._venue_rejected(rec)
            return
        if kind not in ("decision", "signature_refused", "logon", "anomaly"):
            return
        if kind == "logon":
            route = self.routes.get(str(rec.session))
            if route is not None and rec.reset is True:
                self.router.forwarded.pop(route.key, None)
            return
        ident = rec.identity
        if not isinstance(ident, str) or not self.owns(ident):
            return
        if kind == "anomaly":
            self.router.anomaly.reported_at(ident, str(rec.finding), str(rec.detail or ""), self._when(rec.ts))
        elif rec.direction == "inbound":
            self._inbound(ident, rec)
        else:  # outbound: a decision, or a signature_refused the pipeline stopped at its first check
            msg_type = _b(rec.msg_type) or b""
            if self.router.anomaly.settings.enabled:
                self.router.anomaly.learn(ident, msg_type, _b(rec.symbol), self._when(rec.ts))
            if kind == "decision" and rec.decision in ALLOWED and not rec.written_late:
                self._outbound(chain, ident, msg_type, rec)

    def _outbound(self, chain: int, ident: str, msg_type: bytes, rec: Rec) -> None:
        """An allowed order: counted at the exchange (``Router._accepted``) until an outcome says otherwise."""
        router = self.router
        if router.rules.kind(msg_type) != pipeline.ORDER:
            return
        ids = [x for x in map(_b, _listed(rec.cl_ord_ids, rec.cl_ord_id)) if x is not None]
        if not ids and msg_type in CLORDID_TYPES:
            ids = [b""]
        origs = [x for x in map(_b, _listed(rec.orig_cl_ord_ids, rec.orig_cl_ord_id)) if x is not None]
        route = self.routes.get(str(rec.session))
        undo = _Undo(ident, route, ids)
        book = router.book(ident)
        if book is not None:
            undo.closed = [o for o in origs if o in book.open_orders]
            book.accept(ids, origs)
        if route is not None:
            fwd = router.forwarded.setdefault(route.key, OrderedDict())
            for cl in ids:
                fwd[cl] = None
            while len(fwd) > FORWARDED_SIZE:
                fwd.popitem(last=False)
            cl = ids[0] if ids else b""
            if cl and rec.msg_type in _ROUTE_OPEN_TYPES:
                route.open_orders[cl] = (_b(rec.side) or b"1", _b(rec.symbol) or b"", _b(rec.qty) or b"0")
                if rec.msg_type == "G" and origs:
                    was = route.open_orders.pop(origs[0], None)
                    if was is not None:
                        undo.route_closed.append((origs[0], was))
        self.pending[(chain, _int(rec.seq))] = undo
        self.stats["orders"] += 1

    def _take_back(self, undo: _Undo) -> None:
        """The order was not forwarded after all (exchange leg down, its store could not write)."""
        self.stats["not_forwarded"] += 1
        book = self.router.risk_books.get(undo.identity)
        if book is not None:
            for cl in undo.ids:
                book.seen.pop(cl, None)
                book.open_orders.discard(cl)
            book.open_orders.update(undo.closed)
        route = undo.route
        if route is not None:
            fwd = self.router.forwarded.get(route.key)
            for cl in undo.ids:
                route.open_orders.pop(cl, None)
                if fwd is not None:
                    fwd.pop(cl, None)
            for cl, was in undo.route_closed:
                route.open_orders[cl] = was

    def _venue_rejected(self, rec: Rec) -> None:
        """The venue's Reject(3) of a NewOrderSingle we carried: it never reached the venue's book, so it
        is not open (``Router.venue_rejected``, which names whose book it closed)."""
        cl = _b(rec.cl_ord_id)
        if rec.msg_type != "D" or not cl:
            return
        route = self.routes.get(str(rec.session))
        if route is not None:
            route.open_orders.pop(cl, None)
        ident = rec.identity
        book = self.router.risk_books.get(ident) if isinstance(ident, str) and self.owns(ident) else None
        if book is not None:
            book.close((cl,))
        self.stats["closed"] += 1

    def _inbound(self, ident: str, rec: Rec) -> None:
        """What the exchange said (``Router._observe``): finished orders closed, the last price kept."""
        if rec.msg_type != "8":
            return
        route = self.routes.get(str(rec.session))
        if rec.ord_status in _TERMINAL:
            ids = (_b(rec.cl_ord_id), _b(rec.orig_cl_ord_id))
            book = self.router.risk_books.get(ident)
            if book is not None:
                book.close(ids)
            if route is not None:
                for cl in ids:
                    if cl is not None:
                        route.open_orders.pop(cl, None)
            self.stats["closed"] += 1
        px, sym = _b(rec.last_px), _b(rec.symbol)
        if px and sym and route is not None:  # prices this process would have seen itself
            value = positive(px)
            if value is not None:
                self.router.last_px[sym] = value


def _unseal(outer: Rec, aead: AESGCM | None) -> Rec:
    """A sealed record opened (``gateway/edges/audit.py``: AES-256-GCM, the seq as associated data)."""
    if aead is None:
        raise ValueError("sealed record and no key")
    plain = aead.decrypt(base64.b64decode(str(outer.nonce)), base64.b64decode(str(outer.data)),
                         str(outer.seq).encode())
    inner = _DECODER.decode(plain)
    inner.seq, inner.ts = outer.seq, outer.ts
    return inner


def _listed(many: object, one: object) -> list[object]:
    """Every value of a field recorded once (``cl_ord_id``) and, for lists and crosses, as a list too."""
    return many if isinstance(many, list) and many else [one]


def _b(v: object) -> bytes | None:
    """A recorded FIX value back as the bytes it was (records keep them as latin-1 text)."""
    return v.encode("latin-1", "replace") if isinstance(v, str) else None


def _int(v: object) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else -1


def rebuild(router: Router, root: Path, aead: AESGCM | None, owns: Callable[[str], bool],
            routes: Iterable[Route] | Mapping[Any, Route]) -> dict[str, Any]:
    """Rebuild ``router``'s risk state from the audit folder ``root`` (see the module docstring); returns
    the summary the gateway records as ``risk_rebuilt``.  Call it after the policy loaded, before any
    session starts."""
    values = routes.values() if isinstance(routes, Mapping) else routes
    return Rebuild(router, owns, values).run(root, aead)
