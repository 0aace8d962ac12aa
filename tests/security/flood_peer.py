"""The attacker of ``test_session_floods.py``, in its own process so its reading costs the test's clock nothing.

    python -m tests.security.flood_peer PORT CERTS BURST EXPECT FLOOD

Logs on as ALGO2 (mTLS identity ``algo2``, no reset), sends BURST
ResendRequest(2) for 1..0 in one write and reads everything the gateway
sends as fast as it can, reporting ``frames N`` as it goes, until EXPECT
frames came (or 120 s passed); then sends FLOOD more in one write and
reports the Logout's Text and whether the gateway closed the connection.
One line per report on stdout.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from gateway.core.fix import codec
from tests.harness import FixClient, client_ssl


def say(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str]) -> int:
    port, certs, burst, expect, flood = int(argv[0]), Path(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    c = FixClient(port, client_ssl(certs, "algo2"), "ALGO2")
    c.logon()
    c.send_raw(b"".join(c.frame("2", [(7, "1"), (16, "0")]) for _ in range(burst)))
    say("sent")
    frames, tail, last_report = 0, b"", 0.0
    deadline = time.monotonic() + 120
    while frames < expect and time.monotonic() < deadline:
        c.sock.settimeout(max(0.1, deadline - time.monotonic()))
        data = c.sock.recv(1 << 20)
        if not data:
            break
        joined = tail + data  # the 3 bytes kept cannot hold a whole "\x0110=": nothing counted twice
        frames += joined.count(b"\x0110=")
        tail = joined[-3:]
        if time.monotonic() - last_report > 0.05:
            say(f"frames {frames}")
            last_report = time.monotonic()
    say(f"drained {frames}")
    if frames != expect:
        return 1
    c.send_raw(b"".join(c.frame("2", [(7, "1"), (16, "0")]) for _ in range(flood)))
    while True:
        m = c.recv(timeout=30)
        if m is None:
            say("closed before a Logout")
            return 1
        if m.msg_type == b"5":
            say(f"logout {(m.get(58) or b'').decode('latin-1')}")
            break
    say("closed" if c.recv(timeout=10) is None else "still open")
    c.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (OSError, TimeoutError, codec.ParseError) as exc:
        say(f"error {exc}")
        sys.exit(1)
