"""Interop: the acceptance scripts pass when the echo peer is QuickFIX, not ours.

The exchange leg talks to the QuickFIX acceptance application
(``quickfix_echo.cpp`` built against Debian's libquickfix-dev 1.15), so the
gateway's initiator side is checked against an independent FIX engine while
the client side is checked by the scripts — for every version, with
QuickFIX's own session settings (test/cfg/at.cfg: one dictionary per FIX.4.x
session, FIXT11.xml plus the application dictionary of the DefaultApplVerID
for the FIX.5.0 family).  ``make test`` installs the Debian packages
(``make system-deps``).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness
from tests.conformance.runner import Result, Runner, all_scripts, client_context, run_all
from tests.conformance.test_conformance import KNOWN_GAPS

pytestmark = pytest.mark.interop
HERE = Path(__file__).resolve().parent
DICTS = harness.ROOT / "fixdicts"
SCRIPT_IDS = [f"{p.parent.name}/{p.name}" for p in all_scripts()]


def build_echo(out: Path) -> Path:
    if shutil.which("g++") is None or not Path("/usr/include/quickfix/Application.h").exists():
        pytest.fail("QuickFIX interop needs g++ and libquickfix-dev: run `make system-deps` "
                    "(Debian: apt-get install -y g++ libquickfix-dev)")
    exe = out / "quickfix_echo"
    r = subprocess.run(["g++", "-std=c++14", "-O1", "-Wno-deprecated", "-o", str(exe),
                        str(HERE / "quickfix_echo.cpp"), "-lquickfix", "-lpthread"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return exe


def settings(port: int) -> str:
    sessions = [(f"FIX.4.{n}", f"TW4{n}", f"DataDictionary={DICTS}/FIX4{n}.xml") for n in range(5)]
    sessions += [("FIX.4.4", "TW", f"DataDictionary={DICTS}/FIX44.xml"),
                 ("FIX.4.4", "NO_CHECK_FIELDS_HAVE_VALUES",
                  f"DataDictionary={DICTS}/FIX44.xml\nValidateFieldsHaveValues=N")]
    sessions += [("FIXT.1.1", f"TW{sp}", f"DefaultApplVerID=FIX.5.0{sp[2:]}\n"
                                        f"TransportDataDictionary={DICTS}/FIXT11.xml\n"
                                        f"AppDataDictionary={DICTS}/FIX{sp}.xml")
                 for sp in ("50", "50SP1", "50SP2")]
    text = (f"[DEFAULT]\nConnectionType=acceptor\nSocketAcceptPort={port}\nSocketReuseAddress=Y\n"
            "StartTime=00:00:00\nEndTime=00:00:00\nSenderCompID=ISLD\nResetOnLogon=Y\nUseDataDictionary=Y\n")
    for begin, target, extra in sessions:
        text += f"[SESSION]\nBeginString={begin}\nTargetCompID={target}\n{extra}\n"
    return text


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Result]]:
    tmp = tmp_path_factory.mktemp("interop")
    exe = build_echo(tmp)
    certs = harness.make_pki(tmp / "certs")
    gw_port, qf_port = harness.free_port(), harness.free_port()
    (tmp / "qf.cfg").write_text(settings(qf_port))
    log = open(tmp / "quickfix.log", "wb")
    qf = subprocess.Popen([str(exe), str(tmp / "qf.cfg")], stdout=log, stderr=log)
    gw: harness.Proc | None = None
    try:
        harness.wait_port(qf_port, timeout=30)
        cfg = harness.conformance_config(tmp, certs, gw_port, qf_port)
        gw = harness.start(["run", "--config", str(cfg)], tmp / "gw.log", gw_port)
        runner = Runner("127.0.0.1", gw_port,
                        client_context(certs / "conformance.crt", certs / "conformance.key", certs / "ca.crt"))
        yield {r.script: r for r in run_all(runner)}
    finally:
        if gw is not None:
            gw.stop()
        qf.terminate()
        qf.wait(10)


@pytest.mark.parametrize("script", [
    pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[s])) if s in KNOWN_GAPS else s
    for s in SCRIPT_IDS])
def test_acceptance_script_with_quickfix_upstream(results: dict[str, Result], script: str) -> None:
    r = results[script]
    assert r.passed, r.detail
