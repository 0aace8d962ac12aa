"""Where the gateway's time goes: a py-spy sampling profile of the relay process during a bench run.

py-spy samples the running gateway from outside (no instrumentation, so the
numbers are the gateway's own) and writes folded stacks; ``summarise`` turns
them into the functions with the most self time and the most inclusive time,
leaving out samples where the event loop was simply waiting for input.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

#: leaf frames that mean "waiting", not working (epoll inside uvloop, the writer's idle wait)
IDLE_LEAVES = ("Runner.run (", "run (uvloop", "Writer._run (gateway/edges/audit.py")


def py_spy() -> str | None:
    exe = Path(sys.executable).parent / "py-spy"
    return str(exe) if exe.exists() else shutil.which("py-spy")


class Sampler:
    """``py-spy record`` attached to ``pid`` until ``stop()``."""

    def __init__(self, pid: int, out: Path, rate: int = 1000) -> None:
        self.out = out
        self.error: str | None = None
        exe = py_spy()
        self.proc: subprocess.Popen[bytes] | None = None
        if exe is None:
            self.error = "py-spy is not installed"
            return
        self.proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "-o", str(out),
                                      "--rate", str(rate), "--nonblocking", "--threads"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            self.error = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            self.error = f"py-spy failed: {self.error[0]}"


def summarise(raw: Path, top: int = 12) -> dict[str, object]:
    """Self and inclusive shares of busy samples, per function (file:line folded away)."""
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    busy = idle = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n_text = line.rpartition(" ")
        if not stack or not n_text.isdigit():
            continue
        n = int(n_text)
        frames = [f for f in stack.split(";") if not f.startswith("thread (") and not f.startswith("process ")]
        if not frames or frames[-1].startswith(IDLE_LEAVES):
            idle += n
            continue
        busy += n

        def name(frame: str) -> str:  # "func (path:line)" -> "func (path)"
            head, _, rest = frame.partition(" (")
            return f"{head} ({rest.rsplit(':', 1)[0]})" if rest else head

        self_t[name(frames[-1])] += n
        for f in {name(x) for x in frames}:
            incl[f] += n
    share = (lambda c: c / busy) if busy else (lambda c: 0.0)
    return {
        "busy_samples": busy, "idle_samples": idle,
        "self": [{"function": f, "share": round(share(c), 4)} for f, c in self_t.most_common(top)],
        "inclusive": [{"function": f, "share": round(share(c), 4)} for f, c in incl.most_common(top * 3)
                      if not f.startswith(("<module>", "_run_module_as_main", "_run_code", "main (gateway/cli/main",
                                           "run (uvloop", "Runner.run", "_run_gateway", "_event_loop_run",
                                           "Thread._bootstrap", "Thread.run"))][:top],
    }


def table(prof: dict[str, Any]) -> list[str]:
    """Markdown rows: self time beside inclusive time, or the reason there is no profile."""
    if "error" in prof:
        return [f"- profile unavailable: {prof['error']}"]
    lines = ["| self time | function | | inclusive | function |", "| ---: | --- | --- | ---: | --- |"]
    for a, b in zip(prof["self"], prof["inclusive"], strict=False):
        lines.append(f"| {a['share']:.1%} | `{a['function']}` | | {b['share']:.1%} | `{b['function']}` |")
    return lines
