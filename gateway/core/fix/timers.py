"""The deadlines of one session: Logon, Logout, heartbeats, and an open sequence gap.

Kept apart from the state machine (``session.py``) so it stays one screen
of rules; the session owns one ``Timers`` and asks it for the next deadline
its shell must arm.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.fix.session_config import State


@dataclass(slots=True)
class Timers:
    """When we last sent and received, and the deadlines that follow (seconds, the caller's clock)."""

    last_sent: float = 0.0
    last_received: float = 0.0
    test_requests: int = 0
    logon_deadline: float | None = None
    logout_deadline: float | None = None

    def next_deadline(self, state: State, hb: int, gap: float | None) -> float | None:
        """The earliest deadline in ``state``; ``hb``: the heartbeat interval while logged on, else 0;
        ``gap``: when an open sequence gap must have moved."""
        if state is State.CLOSED:
            return None
        deadlines: list[float] = [gap] if gap is not None and state is State.ACTIVE else []
        if self.logon_deadline is not None and state in (State.AWAITING_LOGON, State.LOGON_SENT):
            deadlines.append(self.logon_deadline)
        if self.logout_deadline is not None and state is State.LOGOUT_SENT:
            deadlines.append(self.logout_deadline)
        if hb > 0:
            deadlines.append(self.last_sent + hb)
            deadlines.append(self.last_received + 1.5 * (self.test_requests + 1) * hb)
            deadlines.append(self.last_received + 2.4 * hb)
        return min(deadlines) if deadlines else None
