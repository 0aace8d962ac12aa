"""Our runner for the QuickFIX acceptance scripts, over mutual TLS.

Script format (see ../shared/refdata/quickfix/doc/html/acceptance_tests.html):
``I`` lines are sent, ``E`` lines are expected, ``iCONNECT`` / ``iDISCONNECT``
/ ``eDISCONNECT`` manage or expect the connection, an optional ``N,`` picks the
connection.  ``<TIME>`` / ``<TIME±n>`` stand for now in UTC.  BodyLength(9)
and CheckSum(10) are filled in when a line leaves them out.  Fields compare
in order; the tags in fields.fmt compare by format only.

Usable from pytest (``run_script``) and as an outside runner::

    python tests/conformance/runner.py --port 9878 --cert certs/dev/conformance.crt \\
        --key certs/dev/conformance.key --ca certs/dev/ca.crt SCRIPT.def ...
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import socket
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

SOH = b"\x01"
# The scripts ship with the tests (QuickFIX licence and provenance in quickfix/).
REFDATA = Path(__file__).resolve().parent / "quickfix"
SCRIPTS = REFDATA / "definitions" / "server"
FIELDS_FMT = REFDATA / "definitions" / "fields.fmt"
#: one folder of scripts per FIX version QuickFIX's acceptor runs (at.cfg); the session each
#: plays is TW40 ... TW50SP2 (the folder's name after "fix", upper-cased)
VERSIONS = ("fix40", "fix41", "fix42", "fix43", "fix44", "fix50", "fix50sp1", "fix50sp2")

_TIME_RE = re.compile(rb"<TIME([+-]\d+)?>")


def load_formats(path: Path = FIELDS_FMT) -> dict[int, re.Pattern[bytes]]:
    out: dict[int, re.Pattern[bytes]] = {}
    for line in path.read_bytes().splitlines():
        if b"=" in line:
            tag, _, rx = line.partition(b"=")
            # unanchored, as the reference runner matches formats
            out[int(tag)] = re.compile(rx.strip())
    return out


def _utc(offset: int = 0) -> bytes:
    t = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)
    # seconds only: the scripts' expected BodyLength(9) values assume it
    return t.strftime("%Y%m%d-%H:%M:%S").encode()


def substitute_time(line: bytes) -> bytes:
    return _TIME_RE.sub(lambda m: _utc(int(m.group(1) or 0)), line)


def fill_length_and_checksum(msg: bytes) -> bytes:
    """Insert BodyLength(9) after the first field and CheckSum(10) at the end when absent."""
    if not msg.endswith(SOH):
        msg += SOH
    fields = msg[:-1].split(SOH)
    has9 = len(fields) > 1 and fields[1].startswith(b"9=")
    has10 = fields[-1].startswith(b"10=")
    if not has9:
        body_fields = fields[1:-1] if has10 else fields[1:]
        body = b"".join(f + SOH for f in body_fields)
        fields.insert(1, b"9=%d" % len(body))
    if not has10:
        head = b"".join(f + SOH for f in fields)
        fields.append(b"10=%03d" % (sum(head) % 256))
    return b"".join(f + SOH for f in fields)


@dataclass
class Result:
    script: str
    passed: bool
    detail: str = ""
    steps: int = 0


@dataclass
class _Conn:
    sock: ssl.SSLSocket | socket.socket
    buf: bytearray = field(default_factory=bytearray)


class ScriptFailure(Exception):
    pass


class Runner:
    def __init__(self, host: str, port: int, ssl_ctx: ssl.SSLContext | None, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.ctx = ssl_ctx
        self.timeout = timeout
        self.formats = load_formats()

    def _connect(self) -> _Conn:
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ctx is None:
            return _Conn(raw)
        return _Conn(self.ctx.wrap_socket(raw, server_hostname=self.host))

    def _read_message(self, c: _Conn, deadline: float) -> bytes | None:
        """Next frame from the connection; None on EOF; raises on timeout."""
        while True:
            m = re.search(rb"\x0110=\d{3}\x01", c.buf)
            if m is not None:
                frame = bytes(c.buf[: m.end()])
                del c.buf[: m.end()]
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            c.sock.settimeout(remaining)
            try:
                data = c.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
                data = b""
            if not data:
                if c.buf:
                    raise ScriptFailure(f"connection closed with a partial message {bytes(c.buf)!r}")
                return None
            c.buf += data

    def _compare(self, expected: bytes, actual: bytes) -> str | None:
        exp = expected[:-1].split(SOH)
        act = actual[:-1].split(SOH)
        if len(exp) != len(act):
            return f"field count {len(act)} != expected {len(exp)}"
        for e, a in zip(exp, act, strict=True):
            et, _, ev = e.partition(b"=")
            at, _, av = a.partition(b"=")
            if et != at:
                return f"tag {at.decode()} where {et.decode()} was expected"
            fmt = self.formats.get(int(et)) if et.isdigit() else None
            if fmt is not None:
                if not fmt.search(av):
                    return f"{et.decode()}={av.decode('latin-1')} does not match its format"
            elif ev != av:
                return f"{et.decode()}={av.decode('latin-1')} where {ev.decode('latin-1')} was expected"
        return None

    def run(self, path: Path) -> Result:
        conns: dict[int, _Conn] = {}
        name = f"{path.parent.name}/{path.name}"
        step = 0
        try:
            for raw_line in path.read_bytes().splitlines():
                line = raw_line.strip(b"\r\n ")
                if not line or line.startswith(b"#"):
                    continue
                step += 1
                kind = line[:1]
                rest = line[1:]
                num = 1
                m = re.match(rb"^(\d+),", rest)
                if m:
                    num = int(m.group(1))
                    rest = rest[m.end():]
                if kind == b"i" and rest == b"CONNECT":
                    conns[num] = self._connect()
                elif kind == b"i" and rest == b"DISCONNECT":
                    c = conns.pop(num, None)
                    if c:
                        c.sock.close()
                elif kind == b"e" and rest == b"DISCONNECT":
                    c = conns.get(num)
                    if c is None:
                        raise ScriptFailure(f"step {step}: eDISCONNECT on connection {num} that is not open")
                    try:
                        frame = self._read_message(c, time.monotonic() + self.timeout)
                    except TimeoutError:
                        raise ScriptFailure(f"step {step}: expected disconnect within {self.timeout:.0f} s") from None
                    if frame is not None:
                        raise ScriptFailure(
                            f"step {step}: expected disconnect, received {frame.replace(SOH, b'|').decode('latin-1')}"
                        )
                    c.sock.close()
                    conns.pop(num)
                elif kind == b"I":
                    c = conns.get(num)
                    if c is None:
                        raise ScriptFailure(f"step {step}: send on connection {num} that is not open")
                    msg = fill_length_and_checksum(substitute_time(rest))
                    try:
                        c.sock.sendall(msg)
                    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                        pass  # the next expectation tells whether that was right
                elif kind == b"E":
                    c = conns.get(num)
                    if c is None:
                        raise ScriptFailure(f"step {step}: expect on connection {num} that is not open")
                    expected = fill_length_and_checksum(rest)
                    try:
                        frame = self._read_message(c, time.monotonic() + self.timeout)
                    except TimeoutError:
                        raise ScriptFailure(
                            f"step {step}: nothing received within {self.timeout:.0f} s; expected "
                            f"{expected.replace(SOH, b'|').decode('latin-1')}"
                        ) from None
                    if frame is None:
                        raise ScriptFailure(
                            f"step {step}: disconnected; expected {expected.replace(SOH, b'|').decode('latin-1')}"
                        )
                    problem = self._compare(expected, frame)
                    if problem:
                        raise ScriptFailure(
                            f"step {step}: {problem}\n  expected {expected.replace(SOH, b'|').decode('latin-1')}"
                            f"\n  received {frame.replace(SOH, b'|').decode('latin-1')}"
                        )
                else:
                    raise ScriptFailure(f"step {step}: cannot read script line {line[:40]!r}")
            return Result(name, True, steps=step)
        except ScriptFailure as exc:
            return Result(name, False, str(exc), step)
        except OSError as exc:
            return Result(name, False, f"step {step}: {type(exc).__name__}: {exc}", step)
        finally:
            for c in conns.values():
                try:
                    c.sock.close()
                except OSError:
                    pass


def client_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def version_scripts(version: str) -> list[Path]:
    """The scripts of one version folder, in name order."""
    return sorted((SCRIPTS / version).glob("*.def"))


def all_scripts() -> list[Path]:
    out: list[Path] = []
    for version in VERSIONS:
        out += version_scripts(version)
    return out


def run_all(runner: Runner) -> list[Result]:
    """Every version's scripts, one thread per version (each version plays its own sessions, and
    most of a script's time is spent waiting on the acceptor)."""
    with ThreadPoolExecutor(len(VERSIONS)) as pool:
        batches = pool.map(lambda v: [runner.run(p) for p in version_scripts(v)], VERSIONS)
        return [r for batch in batches for r in batch]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run QuickFIX acceptance scripts against a FIX acceptor over mTLS")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9878)
    p.add_argument("--cert", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--ca", type=Path, required=True)
    p.add_argument("scripts", nargs="*", type=Path, help=f"scripts (default: all {len(all_scripts())})")
    args = p.parse_args(argv)
    runner = Runner(args.host, args.port, client_context(args.cert, args.key, args.ca))
    scripts = args.scripts or all_scripts()
    failed = 0
    for s in scripts:
        r = runner.run(s)
        print(("PASS " if r.passed else "FAIL ") + r.script + ("" if r.passed else "\n  " + r.detail))
        failed += not r.passed
    print(f"{len(scripts) - failed}/{len(scripts)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
