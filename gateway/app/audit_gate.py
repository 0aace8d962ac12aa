"""The audit gate: nothing crosses unrecorded, and an outage is itself recorded.

Every decision record goes through ``record`` (which raises when the stream
cannot write, so the caller refuses: fail closed); every other event through
``event`` (best effort: logged when it cannot be written).  With a writer
(the thread, or the loop writing once per iteration: ``gateway/edges/audit.py``),
a forward waits in ``after_durable`` until its record reached the OS
(``write``) or the disk (``fsync``); if the writer fails first, the waiting
messages are refused.

An outage starts at the first failed write and ends at the first success:
then the records kept meanwhile (cancels let through, when configured) are
written late, messages from the exchange held meanwhile are decided and
delivered, and one ``alert`` record sums the outage up.

A peer decides what many event records contain (a CompID in a refused
Logon, a Username, a session reject's detail), so ``event`` keeps no text
value longer than ``MAX_EVENT_VALUE`` characters: the cut is marked
``...[N chars]`` (``capped_text``).  ``capture`` records are verbatim by
design and not cut; decision records are capped where they are built
(``routing.py``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from gateway.core.records import capped_text
from gateway.edges.audit import AuditError, AuditLog
from gateway.edges.metrics import Metrics
from gateway.edges.replicate import Replicator
from gateway.shells.legs import held_writes

log = structlog.get_logger("fixgw.audit_gate")

Action = Callable[[], None]
#: characters of one text value of an event record (see the module docstring)
MAX_EVENT_VALUE = 4096
#: record kinds kept verbatim, however long
VERBATIM_KINDS = frozenset({"capture"})


class AuditGate:
    def __init__(self, audit: AuditLog, metrics: Metrics) -> None:
        self.audit = audit
        self.metrics = metrics
        self.replicator: Replicator | None = None
        self.outage: dict[str, Any] | None = None  # since when writes fail, what was refused
        self._late: list[tuple[str, dict[str, Any]]] = []  # records of cancels let through during an outage
        self._held: list[Action] = []  # exchange messages waiting for the stream to recover
        # (audit seq, forward, refuse-if-the-write-fails or None to keep waiting), FIFO
        self._pending: deque[tuple[int, Action, Action | None]] = deque()

    @property
    def down(self) -> bool:
        return self.outage is not None

    def record(self, kind: str, **fields: Any) -> int:
        """Append; raises AuditError (the caller refuses).  A failure starts an outage."""
        return self._record(kind, fields, True)

    def record_fields(self, kind: str, fields: dict[str, Any]) -> int:
        """``record`` with the fields already in a dict (the per-message decision records)."""
        return self._record(kind, fields, True)

    def outcome(self, fields: dict[str, Any]) -> bool:
        """What happened to an allowed message.  Nobody waits for it, so it does not wake the writer
        thread: it is written with the next batch (at most one watch tick, 10 ms, later)."""
        try:
            self._record("outcome", fields, False)
            return True
        except AuditError as exc:
            log.error("audit_failed", kind="outcome", error=str(exc))
            return False

    def _record(self, kind: str, fields: dict[str, Any], wake: bool) -> int:
        try:
            seq = self.audit.record_fields(kind, fields, wake)
        except AuditError as exc:
            self._start_outage(str(exc))
            self.metrics.audit_failures.inc()
            raise
        if self.audit.writer is None:  # inline writer: the record is in the OS already
            if self.replicator is not None:
                self.replicator.notify()
            if self.outage is not None:
                self._end_outage()
        return seq

    def event(self, kind: str, **fields: Any) -> bool:
        """Best-effort record of an event that decides nothing; False if it could not be written."""
        if kind not in VERBATIM_KINDS:
            for key, value in fields.items():
                if isinstance(value, str) and len(value) > MAX_EVENT_VALUE:
                    fields[key] = capped_text(value, MAX_EVENT_VALUE)  # same keys: safe while iterating
        try:
            self.record(kind, **fields)
            return True
        except AuditError as exc:
            log.error("audit_failed", kind=kind, error=str(exc))
            return False

    def record_late(self, kind: str, fields: dict[str, Any]) -> None:
        """A record the outage kept from being written: written when the stream recovers."""
        self._late.append((kind, fields))
        if self.outage is not None:
            self.outage["late"] += 1

    def hold(self, action: Action) -> None:
        """Run ``action`` (decide, record, deliver) again when the stream recovers."""
        self._held.append(action)

    def refused_in_outage(self) -> None:
        if self.outage is not None:
            self.outage["refused"] += 1

    def after_durable(self, seq: int, action: Action, on_fail: Action | None = None) -> None:
        """Run ``action`` once the writer reports record ``seq`` done (in the OS for ``write``,
        fsynced for ``fsync``).  FIFO, so per-session order holds.  If the writer fails first,
        ``on_fail`` runs instead (None: keep waiting)."""
        writer = self.audit.writer
        if writer is None or writer.done_seq >= seq:
            action()
            return
        self._pending.append((seq, action, on_fail))

    def on_durable(self, seq: int) -> None:
        """The writer's report (on the loop): records up to ``seq`` are done."""
        if self.replicator is not None:
            self.replicator.notify()
        while self._pending and self._pending[0][0] <= seq:
            _, action, _ = self._pending.popleft()
            action()
        if self.outage is not None and self.audit.writer is not None and self.audit.writer.failed is None:
            self._end_outage()

    def on_written(self, seq: int) -> None:
        """The loop writer's report (``LoopWriter``: the records of one loop turn, typically of one read):
        the forwards and deliveries they release leave as one write per connection (``held_writes``).
        Not for the thread's reports: those cover whatever queued meanwhile, and holding the first
        forward of a large batch until the last is done only delays it."""
        with held_writes():
            self.on_durable(seq)

    def on_failed(self, error: str) -> None:
        """The writer could not write (runs on the loop).  Messages whose records were still
        queued are refused now rather than held for an unknown time — their records are
        written when the disk recovers, and the outage alert lists them."""
        self._start_outage(error)
        self.metrics.audit_failures.inc()
        assert self.outage is not None
        keep: deque[tuple[int, Action, Action | None]] = deque()
        for seq, action, on_fail in self._pending:
            if on_fail is None:
                keep.append((seq, action, on_fail))
            else:
                self.outage["refused_after_decision"].append(seq)
                on_fail()
        self._pending = keep

    def probe(self) -> None:
        """Inline writer: try a write so recovery does not wait for traffic (the thread retries itself)."""
        if self.outage is not None and self.audit.writer is None:
            self.event("audit_probe", outage_since=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                 time.gmtime(self.outage["since"])))

    def _start_outage(self, error: str) -> None:
        if self.outage is None:
            self.outage = {"since": time.time(), "error": error, "refused": 0, "late": 0,
                           "refused_after_decision": []}
            log.error("audit_outage_started", error=error)

    def _end_outage(self) -> None:
        """The writer writes again: record what happened meanwhile, deliver what was held."""
        assert self.outage is not None
        outage, self.outage = self.outage, None
        late, self._late = self._late, []
        held, self._held = self._held, []
        try:
            for k, f in late:
                self.audit.record(k, **f, written_late=True)
            self.audit.record("alert", what="audit stream was unavailable; service resumed",
                              error=outage["error"], seconds=round(time.time() - outage["since"], 3),
                              refused=outage["refused"] + len(outage["refused_after_decision"]),
                              refused_after_decision=outage["refused_after_decision"],
                              late_records=len(late), held_inbound=len(held))
        except AuditError as exc:  # failing again already: keep everything for the next recovery
            self._late, self._held = late + self._late, held + self._held
            self._start_outage(str(exc))
            return
        log.warning("audit_outage_ended", refused=outage["refused"], late_records=len(late))
        for again in held:  # exchange messages that waited, in arrival order
            again()
