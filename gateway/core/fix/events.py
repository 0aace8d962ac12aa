"""Events the session core reports to its shell: small, frozen, past tense.

The shell (``gateway.legs``) drains them after every input and turns them
into forwarding, audit records and connection management.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.fix.codec import Message


@dataclass(frozen=True, slots=True)
class LoggedOn:
    heartbeat_interval: int
    reset_seq_nums: bool


@dataclass(frozen=True, slots=True)
class LogonRefused:
    """Invalid Logon: the socket is closed without an answer; why goes to audit."""

    reason: str


@dataclass(frozen=True, slots=True)
class AppMessageReceived:
    """An application message accepted in sequence; the proxy carries it on."""

    message: Message


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """We answered a peer message with Reject(3)."""

    ref_seq_num: int | None
    msg_type: bytes
    reason: int
    tag: int | None
    detail: str
    #: the message refused: a refused application message never reaches the application, so the shell may
    #: owe someone word of it (the exchange leg tells the client that the venue's report on its order was refused)
    message: Message | None = None
    #: the application asked for it (``Session.reject``: a refused signature), having decided on the message;
    #: False when the session layer found the message invalid itself
    decided: bool = False


@dataclass(frozen=True, slots=True)
class RejectReceived:
    """The peer refused one of our messages with Reject(3); RefSeqNum(45) names it, and the shell
    decides who must hear of it (the exchange leg: the client whose message the venue refused)."""

    message: Message


@dataclass(frozen=True, slots=True)
class FrameDropped:
    """Garbled bytes skipped without consuming a sequence number (2d, 3b, 3c)."""

    data: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class DuplicateIgnored:
    """PossDupFlag(43)=Y message below the expected MsgSeqNum (2e)."""

    seq_num: int


@dataclass(frozen=True, slots=True)
class GapDetected:
    expected: int
    received: int


@dataclass(frozen=True, slots=True)
class ResendServed:
    begin: int
    end: int
    resent: int
    gap_filled: int


@dataclass(frozen=True, slots=True)
class SequenceReset:
    old: int
    new: int
    gap_fill: bool


@dataclass(frozen=True, slots=True)
class LogoutSent:
    text: str


@dataclass(frozen=True, slots=True)
class LoggedOut:
    """The session ended; ``reason`` says how.  The shell closes the transport."""

    reason: str
    by_peer: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    """Close the transport now (after writing pending frames)."""

    reason: str


Event = (
    LoggedOn
    | LogonRefused
    | AppMessageReceived
    | MessageRejected
    | RejectReceived
    | FrameDropped
    | DuplicateIgnored
    | GapDetected
    | ResendServed
    | SequenceReset
    | LogoutSent
    | LoggedOut
    | Disconnected
)
