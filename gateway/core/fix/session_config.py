"""What a FIX session is configured with, and the states it passes through.

Kept apart from the state machine (``session.py``) so the shells, the
configuration loader and the tests can name them without the machine.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.core.fix.codec import Field
from gateway.core.fix.dictionary import Validator
from gateway.core.fix.signature import Signer


class Role(enum.Enum):
    ACCEPTOR = "acceptor"
    INITIATOR = "initiator"


class State(enum.Enum):
    AWAITING_LOGON = "awaiting_logon"  # acceptor: connected, no Logon yet
    LOGON_SENT = "logon_sent"  # initiator: Logon sent, waiting for the reply
    ACTIVE = "active"
    LOGOUT_SENT = "logout_sent"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SessionConfig:
    begin_string: bytes
    sender_comp_id: bytes  # ours
    target_comp_id: bytes  # the counterparty's
    role: Role = Role.ACCEPTOR
    heartbeat_interval: int = 30  # initiator's HeartBtInt(108)
    reset_on_logon: bool = False  # reset both sequence numbers at every Logon
    check_latency: bool = True
    max_latency: float = 120.0  # SendingTime(52) accuracy window, seconds
    logon_timeout: float = 10.0
    logout_timeout: float = 2.0
    default_appl_ver_id: bytes | None = None  # FIXT.1.1: DefaultApplVerID(1137)
    timestamp_precision: int = 3
    validator: Validator | None = None
    max_frame: int = 64 * 1024
    max_queue: int = 10_000  # out-of-order messages kept while a gap fills
    max_queue_bytes: int = 1024 * 1024  # ... and the bytes they may hold (``gateway.core.fix.gap``)
    gap_timeout: float = 30.0  # seconds an open gap may go without a message filling any of it: Logout
    resend_chunk_size: int = 100  # stored messages resent per turn (``gateway.core.fix.resend``)
    resend_request_burst: int = 10  # ResendRequest(2) at once, and at most waiting to be served ...
    resend_request_rate: float = 1.0  # ... then per second (token bucket); beyond: Logout
    signer: Signer | None = None  # sign every frame we send (93/89, DESIGN §4)
    logon_fields: tuple[Field, ...] = ()  # initiator: extra Logon fields (Username(553), Password(554))

    def __post_init__(self) -> None:
        """Bounds that make no sense are caller misuse (config loading names them for users first)."""
        if self.max_queue < 0 or self.max_queue_bytes < 0:
            raise ValueError("max_queue and max_queue_bytes must be >= 0")
        if not self.gap_timeout > 0 or not self.resend_request_rate > 0:
            raise ValueError("gap_timeout and resend_request_rate must be > 0")
        if self.resend_chunk_size < 1 or self.resend_request_burst < 1:
            raise ValueError("resend_chunk_size and resend_request_burst must be >= 1")
