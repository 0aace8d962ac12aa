"""``fixgw audit query`` shows client-chosen text: it must not be run by the terminal or the spreadsheet.

A FIX client chooses its ClOrdID(11) freely (any byte but SOH), and the
gateway records it as sent — the record must be faithful.  The compliance
officer then reads the stream: in a terminal, where an escape sequence can
retitle the window, clear the screen or hide lines; or in a spreadsheet,
where a cell starting with ``=``, ``+``, ``-`` or ``@`` is a formula.  The
table escapes control characters, the CSV neutralises formulas, JSON escapes
by itself; and ``... | head`` ends quietly.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.edges.audit import AuditLog
from tests import harness
from tests.harness import FixClient, client_ssl

ORDER = [(21, "1"), (38, "10"), (40, "2"), (44, "10"), (54, "1"), (55, "INTC"), (60, "20240101-00:00:00")]
#: ClOrdIDs an attacker would choose: terminal escapes (OSC window title + BEL, clear screen, and the 8-bit CSI
#: that byte 0x9b is once the gateway reads the value as Latin-1) and spreadsheet formulas (OWASP CSV injection)
TERMINAL = "\x1b]0;owned\x07\x1b[2J"
TERMINAL_C1 = b"\x9b2Jevil"
FORMULAS = ['=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0",
            "@SUM(1+1)*cmd|' /C calc'!A0", "\t=1+1"]


def query(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "audit", "query", str(folder), *args],
                          cwd=harness.ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("audit-output")
    certs = harness.make_pki(tmp / "certs")
    gw_port, sim_port = harness.free_port(), harness.free_port()
    cfg = harness.trading_config(tmp, certs, gw_port, sim_port, reset_on_logon=True, clients=("ALGO1",))
    with harness.gateway_and_sim(tmp, cfg, gw_port, sim_port):
        c = FixClient(gw_port, client_ssl(certs, "algo1"), "ALGO1")
        c.logon(reset=True)
        for cl_ord_id in (TERMINAL, TERMINAL_C1, *FORMULAS):
            c.send("D", [(11, cl_ord_id), *ORDER])  # type: ignore[list-item]
            c.recv_type(b"8")
            c.recv_type(b"8")
        c.close()
    folder = tmp / "state" / "audit"
    recorded = {str(r.get("cl_ord_id")) for r in harness.audit_records(folder) if r["kind"] == "decision"}
    # the stream keeps what the client sent, byte for byte
    assert {TERMINAL, TERMINAL_C1.decode("latin-1"), *FORMULAS} <= recorded
    yield folder


def test_table_output_shows_terminal_escape_sequences_escaped(audit: Path) -> None:
    r = query(audit, "--kind", "decision", "--format", "table")
    assert r.returncode == 0, r.stderr
    assert not {"\x1b", "\x07", "\x9b"} & set(r.stdout)
    assert "\\x1b]0;owned\\x07\\x1b[2J" in r.stdout and "\\x9b2Jevil" in r.stdout  # still there to read


def test_csv_output_neutralises_spreadsheet_formulas(audit: Path) -> None:
    r = query(audit, "--kind", "decision", "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    cells = [cell for row in rows for cell in row.values() if cell]
    assert cells and not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    shown = {row["cl_ord_id"] for row in rows}
    assert {"'" + f for f in FORMULAS[:4]} <= shown and "'\\x09=1+1" in shown
    assert "\x1b" not in r.stdout and "\\x1b]0;owned" in r.stdout


def test_json_output_escapes_control_characters_and_keeps_the_value(audit: Path) -> None:
    r = query(audit, "--kind", "decision", "--format", "json")
    assert r.returncode == 0 and "\x1b" not in r.stdout and "\x9b" not in r.stdout
    assert TERMINAL in {json.loads(line).get("cl_ord_id") for line in r.stdout.splitlines()}


def test_a_reader_that_stops_early_ends_the_query_quietly(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a", Ed25519PrivateKey.generate())
    for i in range(3000):  # well past a pipe's buffer
        log.record("decision", cl_ord_id=f"ORDER-{i:06d}", reason="x" * 100)
    log.close()
    for fmt in ("table", "csv", "json"):
        cmd = [sys.executable, "-m", "gateway", "audit", "query", str(tmp_path / "a"), "--format", fmt]
        p = subprocess.Popen(cmd, cwd=harness.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdout is not None and p.stderr is not None
        assert p.stdout.readline()  # `| head -1`: one line, then the reader is gone
        p.stdout.close()
        err = p.stderr.read().decode()
        rc = p.wait(timeout=60)
        p.stderr.close()
        assert rc in (0, 141) and err == "", (fmt, rc, err)
