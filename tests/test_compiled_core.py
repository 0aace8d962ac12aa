"""The compiled core (mypyc, ``make compile``) and the interpreted one agree, byte for byte.

Two copies of the package are made in a temporary directory: one compiled
(``python -m gateway.cli.build_core --into``, ~45 s on 2 cores), one left as
source — the reference.  Each runs in its own long-lived child process (one
interpreter cannot load both: the compiled modules import their siblings by
absolute name), driven by the same Hypothesis-generated client traffic:

* the bytes, cut into reads of a generated size and sometimes damaged, go
  through an acceptor ``Session`` with the FIX.4.4 dictionary — every frame it
  writes and every event it reports;
* every application message the session accepts goes through
  ``pipeline.outbound`` with the shipped policy, pre-trade risk and the
  colo or the sandbox zone (the risk book keeps its state across messages) —
  every verdict — and through ``pipeline.inbound`` as if the venue had sent it;
* each verdict's decision record (``gateway.core.records``) is written by the
  real ``AuditLog`` (interpreted on both sides, its clock fixed) — the audit
  segment's bytes, hash chain included.

Both children return the same ``repr`` of everything, or the test fails naming
the first difference.  ``PYTHONHASHSEED`` is fixed so set orders agree.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import build_core
from gateway.core.fix import codec
from gateway.core.fix.utctime import format_utc_timestamp

ROOT = Path(__file__).resolve().parent.parent

#: the child: imports ``gateway`` from its own copy (cwd), ``bench`` from the repository, then answers
#: length-prefixed pickled cases with length-prefixed pickled results until stdin closes
DRIVER = r"""
import os, pickle, struct, sys
sys.path.insert(0, os.getcwd())
sys.path.insert(1, sys.argv[1])
import gateway.core.fix.codec as codec
assert codec.__file__.startswith(os.getcwd()), codec.__file__
from bench.pipeline import build
from gateway.core import pipeline
from gateway.core.fix.dictionary import standard_validator
from gateway.core.fix.session import Role, Session, SessionConfig
from gateway.core.fix.store import MemoryStore
from gateway.core.fix.events import AppMessageReceived
from gateway.core import records
import shutil, tempfile, time, types
import gateway.edges.audit as audit_mod
from pathlib import Path
clock = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
clock.time = lambda: NOW
audit_mod.time = clock  # the records' ts: the children's clock

NOW = 1_800_000_000.0
V44 = standard_validator(b"FIX.4.4")
out = sys.stdout.buffer
kind = pickle.dumps("compiled" if codec.__file__.endswith(".so") else "interpreted", protocol=4)
out.write(struct.pack(">I", len(kind)) + kind)
out.flush()


def run(case):
    setup = build(NOW)
    by = {c.name: c for c in setup.cases}
    colo = by["NewOrderSingle allowed"].args
    sandbox = by["NewOrderSingle refused by policy (dev sandbox zone)"].args[0]
    _, _, at, rules, book, forwarded = colo
    s = Session(SessionConfig(b"FIX.4.4", b"FIXGW", b"ALGO1", Role.ACCEPTOR, validator=V44), MemoryStore())
    s.connection_made(NOW)
    result = []
    data, step, zone = case
    folder = Path(tempfile.mkdtemp(prefix="audit-"))
    log = audit_mod.AuditLog(folder)
    for i in range(0, len(data), step):
        s.receive_data(data[i:i + step], NOW)
        result.append([bytes(f) for f in s.frames_to_send()])
        for ev in s.events():
            result.append(repr(ev))
            msg = getattr(ev, "message", None)
            if msg is not None:  # whole, not the repr's abbreviation
                result.append((msg.raw, list(msg.fields)))
            if isinstance(ev, AppMessageReceived):
                party = colo[0] if zone == "colo" else sandbox
                verdict = pipeline.outbound(party, ev.message, at, rules, book, forwarded)
                result.append(repr(verdict))
                log.record_fields("decision", records.outbound_decision(party, ev.message, verdict, at,
                                                                        "ALGO1", "127.0.0.1", 0))
                back = pipeline.inbound(party, ev.message, at, rules)  # as if the venue had sent it
                log.record_fields("decision", records.inbound_decision(party, ev.message, back, "ALGO1",
                                                                       zone == "colo"))
    log.close()
    result.append(b"".join(p.read_bytes() for p in sorted(folder.glob("audit-*.jsonl"))))
    shutil.rmtree(folder)
    return result


inp = sys.stdin.buffer
while True:
    head = inp.read(4)
    if len(head) < 4:
        break
    case = pickle.loads(inp.read(struct.unpack(">I", head)[0]))
    try:
        res = ("ok", run(case))
    except Exception as exc:  # the same exception both ways is agreement too
        res = ("raised", repr(exc))
    blob = pickle.dumps(res, protocol=4)
    out.write(struct.pack(">I", len(blob)) + blob)
    out.flush()
"""


class Child:
    """One copy of the package in its own interpreter."""

    def __init__(self, copy: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONHASHSEED"] = "0"
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(ROOT)], cwd=copy, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.kind = self._read()

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        head = self.proc.stdout.read(4)
        assert len(head) == 4, f"the child in {self.proc.args} died (exit {self.proc.poll()})"
        return pickle.loads(self.proc.stdout.read(struct.unpack(">I", head)[0]))

    def ask(self, case: object) -> Any:
        assert self.proc.stdin is not None
        blob = pickle.dumps(case, protocol=4)
        self.proc.stdin.write(struct.pack(">I", len(blob)) + blob)
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def children(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Child, Child]]:
    compiled = build_core.copy_package(tmp_path_factory.mktemp("compiled"))
    build_core.build(compiled)
    reference = build_core.copy_package(tmp_path_factory.mktemp("interpreted"))
    pair = (Child(compiled), Child(reference))
    try:
        yield pair
    finally:
        for c in pair:
            c.close()


NOW = 1_800_000_000.0  # the children's clock
TS = format_utc_timestamp(NOW)  # SendingTime(52) within the session's window
SYMBOLS = [b"INTC", b"AAPL", b"XYZ-RESTRICTED", b"xyz-restricted ", b"", b"A" * 40]
NUMBERS = [b"100", b"0", b"-5", b"1e3", b"NaN", b"10.25", b"99999999999999999999", b"abc", b"0.0000001", b""]


@st.composite
def orders(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes]]]:
    mt = draw(st.sampled_from([b"D", b"D", b"F", b"G", b"R", b"0", b"1"]))
    body: list[tuple[int, bytes]] = []
    if mt in (b"D", b"F", b"G"):
        body += [(11, b"C%d" % draw(st.integers(0, 5)))]
        if mt != b"D":
            body += [(41, b"C%d" % draw(st.integers(0, 5)))]
        body += [(21, b"1"), (38, draw(st.sampled_from(NUMBERS))), (40, draw(st.sampled_from([b"1", b"2"]))),
                 (44, draw(st.sampled_from(NUMBERS))), (54, draw(st.sampled_from([b"1", b"2", b"9"]))),
                 (55, draw(st.sampled_from(SYMBOLS))), (60, TS)]
    elif mt == b"R":
        entries = draw(st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=3))
        body += [(131, b"Q1"), (146, b"%d" % len(entries))]
        for sym in entries:
            body += [(55, sym), (38, draw(st.sampled_from(NUMBERS)))]
    elif mt == b"1":
        body += [(112, b"T")]
    if draw(st.booleans()):
        body.append((draw(st.sampled_from([1, 115, 128, 9999, 58])), b"x"))
    return mt, body


@st.composite
def traffic(draw: st.DrawFn) -> tuple[bytes, int, str]:
    msgs = [(b"A", [(98, b"0"), (108, b"30")])] + draw(st.lists(orders(), min_size=1, max_size=12))
    out = bytearray()
    for seq, (mt, body) in enumerate(msgs, 1):
        header = [(34, b"%d" % seq), (49, b"ALGO1"), (52, TS), (56, b"FIXGW")]
        frame = bytearray(codec.encode(b"FIX.4.4", [(35, mt), *header, *body]))
        if seq > 1 and draw(st.integers(0, 9)) == 0:  # damaged on the way: a byte changed
            frame[draw(st.integers(0, len(frame) - 1))] = draw(st.sampled_from(b"=\x01 9A"))
        out += frame
    return bytes(out), draw(st.integers(1, 400)), draw(st.sampled_from(["colo", "colo", "sandbox"]))


def test_the_children_are_what_they_say(children: tuple[Child, Child]) -> None:
    compiled, reference = children
    assert (compiled.kind, reference.kind) == ("compiled", "interpreted")
    # and the driver works: a plain order comes back as frames, events, a verdict and audit lines (a
    # harness that raised the same way on both sides would make every comparison agree)
    logon = codec.encode(b"FIX.4.4", [(35, b"A"), (34, b"1"), (49, b"ALGO1"), (52, TS), (56, b"FIXGW"),
                                      (98, b"0"), (108, b"30")])
    order = codec.encode(b"FIX.4.4", [(35, b"D"), (34, b"2"), (49, b"ALGO1"), (52, TS), (56, b"FIXGW"),
                                      (11, b"C1"), (21, b"1"), (38, b"100"), (40, b"2"), (44, b"10.25"),
                                      (54, b"1"), (55, b"INTC"), (60, TS)])
    for child in children:
        got = child.ask((logon + order, 1000, "colo"))
        assert got[0] == "ok", got
        audit = got[1][-1]
        assert audit.count(b'"kind":"decision"') == 2 and b'"cl_ord_id":"C1"' in audit, audit


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=traffic())
def test_compiled_and_interpreted_core_agree_on_frames_events_verdicts_and_audit_records(
        children: tuple[Child, Child], case: tuple[bytes, int, str]) -> None:
    compiled, reference = children
    got, want = compiled.ask(case), reference.ask(case)
    assert got[0] == want[0], (got, want)
    if got[0] == "raised":
        assert got == want
        return
    assert len(got[1]) == len(want[1]), (got[1], want[1])
    for i, (a, b) in enumerate(zip(got[1], want[1], strict=True)):
        assert a == b, f"item {i}: compiled {a!r} != interpreted {b!r}"
