"""Coverage-guided fuzzing (atheris / libFuzzer) of the FIX codec and the session core.

    python tests/fuzz/fuzz_fix.py codec   -max_total_time=300     # or: make fuzz FUZZ_SECONDS=300
    python tests/fuzz/fuzz_fix.py session -runs=50000

Targets (instrumented: everything under ``gateway.core.fix``):

* ``codec`` — bytes into a ``Framer`` in two chunks split where the input
  says, every event drained; each complete frame's body through
  ``parse_fields``.  Allowed outcomes: events (``FrameReceived``,
  ``FrameGarbled``) and ``ParseError``; anything else escaping is a crash.
* ``session`` — a logged-on acceptor session (FIX.4.4 dictionary) fed the
  input as peer bytes, timers fired, frames and events drained.  Nothing may
  escape, and the framer's buffer must stay under its bound.

libFuzzer prints ``Done N runs in S second(s)`` at the end; a crash leaves
``crash-<sha1>`` with the input and exits non-zero.  The seed corpus (valid
frames of the message types the gateway carries) is written to a temporary
folder at start, so nothing generated is committed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["gateway.core.fix"]):
    from gateway.core.fix import codec
    from gateway.core.fix import session as S
    from gateway.core.fix.dictionary import standard_validator
    from gateway.core.fix.store import MemoryStore
    from gateway.core.fix.utctime import format_utc_timestamp

T0 = 1_800_000_000.0
V44 = standard_validator(b"FIX.4.4")
NOS = [(11, b"ID"), (21, b"1"), (38, b"100"), (40, b"2"), (44, b"10.5"), (54, b"1"), (55, b"X"),
       (60, b"20240101-00:00:00")]
MAX_FRAME = 4096


def frame(mt: bytes, seq: int, body: list[tuple[int, bytes]]) -> bytes:
    hdr = [(34, b"%d" % seq), (49, b"CLI"), (52, format_utc_timestamp(T0)), (56, b"GW")]
    return codec.encode(b"FIX.4.4", [(35, mt), *hdr, *body])


SEEDS = [
    frame(b"D", 2, NOS),
    frame(b"0", 2, []) + frame(b"1", 3, [(112, b"t")]),
    frame(b"2", 2, [(7, b"1"), (16, b"0")]),
    frame(b"4", 2, [(123, b"Y"), (36, b"9")]),
    frame(b"5", 2, [(58, b"bye")]),
    frame(b"F", 2, [(11, b"C"), (41, b"ID"), (54, b"1"), (55, b"X"), (60, b"20240101-00:00:00")]),
    frame(b"D", 2, [(95, b"4"), (96, b"a\x01=b"), *NOS]),
]


def fuzz_codec(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cut = fdp.ConsumeIntInRange(0, 64)
    raw = fdp.ConsumeBytes(fdp.remaining_bytes())
    f = codec.Framer(max_frame=MAX_FRAME)
    for part in (raw[:cut], raw[cut:]):
        f.feed(part)
        while (ev := f.next_event()) is not None:
            if isinstance(ev, codec.FrameReceived):
                body = ev.message.raw
                try:
                    codec.parse_fields(body[body.index(b"\x0135=") + 1:body.rindex(b"\x0110=") + 1])
                except (codec.ParseError, ValueError):
                    pass
    assert f.buffered <= MAX_FRAME + 64, f.buffered


def _logged_on() -> S.Session:
    s = S.Session(S.SessionConfig(b"FIX.4.4", b"GW", b"CLI", S.Role.ACCEPTOR, validator=V44), MemoryStore())
    s.connection_made(T0)
    s.receive_data(frame(b"A", 1, [(98, b"0"), (108, b"30")]), T0)
    s.frames_to_send()
    s.events()
    return s


def fuzz_session(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    skew = fdp.ConsumeIntInRange(-300, 300)
    s = _logged_on()
    now = T0 + skew
    s.receive_data(fdp.ConsumeBytes(fdp.remaining_bytes()), now)
    s.handle_timer(now + 31)
    s.frames_to_send()
    s.events()
    assert s.framer.buffered <= 64 * 1024


TARGETS = {"codec": fuzz_codec, "session": fuzz_session}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        print(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]", file=sys.stderr)
        sys.exit(2)
    target = TARGETS[sys.argv[1]]
    corpus = Path(tempfile.mkdtemp(prefix=f"fixgw-fuzz-{sys.argv[1]}-"))
    for i, seed in enumerate(SEEDS):
        (corpus / f"seed{i}").write_bytes(b"\x00" + seed)  # first byte: the split / skew
    atheris.Setup([sys.argv[0], *sys.argv[2:], str(corpus)], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
