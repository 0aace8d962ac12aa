"""Exchange simulator: ``fixgw exchange-sim --config FILE``.

A FIX acceptor for the upstream side of every route in the config, with one
of two applications:

* ``echo`` — the QuickFIX acceptance-test application (DESIGN §7): echoes
  NewOrderSingle (dropping a PossResend(97) duplicate of a ClOrdID it has
  seen), SecurityDefinition and Email; answers any other application message
  with BusinessMessageReject(j), BusinessRejectReason(380)=3.  Echoes carry
  header fields in tag order and body fields in tag order, values untouched.
* ``fill`` — a venue (``gateway/app/venue.py``) that answers orders, cancels,
  replaces, RFQs, quote status, trade capture, market data and user requests
  in the session's own FIX version, with full, partial or no fills.

The applications are pure (message in, replies out); the shell reuses the
gateway's session engine and asyncio leg, and runs one timer per session for
what the venue sends later (delayed executions, market data updates).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from gateway.app.venue import Market, Reply, Venue, VenueSettings
from gateway.core.fix import tags as T
from gateway.core.fix.carry import split_for_carry
from gateway.core.fix.codec import Field, FrameGarbled, Framer, FrameReceived, Message
from gateway.core.fix.dictionary import MessageDef, ValidationSettings, Validator, standard_validator
from gateway.core.fix.session import AppMessageReceived, Disconnected, Event, LoggedOn, Role, Session, SessionConfig
from gateway.core.fix.store import MemoryStore, SessionStore
from gateway.core.fix.versions import PRE_FIX42, session_appl_ver_id, timestamp_precision
from gateway.edges import tls
from gateway.edges.config import Config, ExchangeSimConfig
from gateway.edges.store import FileStore, session_dir_name
from gateway.shells.legs import SessionProtocol

log = structlog.get_logger("fixgw.exchange_sim")


def sort_body(body: Sequence[Field], md: MessageDef | None) -> list[Field]:
    """Body fields in tag order, each repeating group kept whole after its count."""
    blocks: list[list[Field]] = []
    i = 0
    groups = md.groups if md is not None else {}
    while i < len(body):
        tag, value = body[i]
        block = [body[i]]
        i += 1
        g = groups.get(tag)
        if g is not None and value.isdigit() and int(value) > 0:
            while i < len(body) and body[i][0] in g.members:
                block.append(body[i])
                i += 1
        blocks.append(block)
    blocks.sort(key=lambda b: b[0][0])
    return [f for b in blocks for f in b]


@dataclass
class EchoApp:
    """The acceptance-test application behind QuickFIX's test acceptor.

    A message type it does not support is answered as QuickFIX answers the
    application's ``UnsupportedMessageType``: BusinessMessageReject(j) with
    BusinessRejectReason(380)=3 from FIX.4.2 on, and before it (FIX.4.0/4.1
    have no MsgType j) a Reject(3) whose Text(58) says "Unsupported message
    type".  The session core has no call for a Reject(3) with the
    application's own Text, so that one is sent like an application reply:
    numbered and stored, a resend repeats it rather than gap-filling it.
    """

    validator: Validator | None
    header_tags: frozenset[int]
    default_appl_ver_id: bytes | None = None  # FIXT.1.1: the session's, named at the end of a BMR
    seen_cl_ord_ids: set[bytes] = field(default_factory=set)

    def on_message(self, msg: Message, now: float = 0.0) -> list[Reply]:
        """The acceptance application's answer (``now``: unused, the venue's interface)."""
        header, body = split_for_carry(msg, self.header_tags)
        mt = msg.msg_type
        if mt == T.MT_NEW_ORDER_SINGLE:
            cl = msg.get(T.ClOrdID) or b""
            if msg.get(T.PossResend) == b"Y" and cl in self.seen_cl_ord_ids:
                return []
            self.seen_cl_ord_ids.add(cl)
        if mt in (T.MT_NEW_ORDER_SINGLE, T.MT_SECURITY_DEFINITION, T.MT_EMAIL):
            md = self.validator.message_def(mt, msg.get(T.ApplVerID)) if self.validator else None
            return [(mt, header, sort_body(body, md))]
        reject: list[Field] = []
        seq = msg.get(T.MsgSeqNum)
        if seq:
            reject.append((T.RefSeqNum, seq))
        if msg.begin_string in PRE_FIX42:
            return [(T.MT_REJECT, [], [*reject, (T.Text, b"Unsupported message type")])]
        reject += [
            (T.Text, b"Unsupported Message Type"),
            (T.RefMsgType, mt),
            (T.BusinessRejectReason, b"%d" % T.BRR_UNSUPPORTED_MESSAGE_TYPE),
        ]
        if self.default_appl_ver_id:
            reject.append((T.DefaultApplVerID, self.default_appl_ver_id))
        return [(T.MT_BUSINESS_MESSAGE_REJECT, [], reject)]


@dataclass
class SimSession:
    config: SessionConfig
    store: SessionStore
    app: EchoApp | Venue
    active: SimProtocol | None = None
    timer: asyncio.TimerHandle | None = None  # the venue's next scheduled message (``Venue.next_due``)


class SimProtocol(SessionProtocol):
    def __init__(self, sim: ExchangeSim) -> None:
        super().__init__()
        self.sim = sim
        self.framer = Framer()
        self.entry: SimSession | None = None

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.session is not None:
            self.session.receive_data(data, now)
            self.pump()
            return
        self.framer.feed(data)
        ev = self.framer.next_event()
        if ev is None:
            return
        if isinstance(ev, FrameGarbled) or not isinstance(ev, FrameReceived):
            self.close_transport()
            return
        msg = ev.message
        key = (msg.begin_string, msg.get(T.SenderCompID) or b"", msg.get(T.TargetCompID) or b"")
        entry = self.sim.sessions.get(key)
        if entry is None or entry.active is not None:
            log.info("sim_logon_refused", key=[k.decode("latin-1") for k in key])
            self.close_transport()
            return
        entry.active = self
        self.entry = entry
        self.session = Session(entry.config, entry.store, self.framer)
        self.session.connection_made(now)
        self.session.receive_message(msg, now)
        self.session.receive_data(b"", now)
        self.pump()

    def on_event(self, event: Event, now: float) -> None:
        if self.entry is None or self.session is None:
            return
        if isinstance(event, AppMessageReceived):
            if self.sim.journal is not None:
                m = event.message
                self.sim.journal.write(b"%s %s %s\n" % (m.get(T.SenderCompID) or b"-", m.msg_type,
                                                        m.get(T.ClOrdID) or b"-"))
                self.sim.journal.flush()
            app = self.entry.app
            replies = app.on_message(event.message, now)
            for mt, header, body in replies:
                self.session.send_app(mt, body, now, header)
            if isinstance(app, Venue):
                self.sim.arm(self.entry)
        elif isinstance(event, LoggedOn):
            if isinstance(self.entry.app, EchoApp):
                self.entry.app.seen_cl_ord_ids.clear()  # the acceptance app forgets per session
        elif isinstance(event, Disconnected):
            self._release()

    def _release(self) -> None:
        if self.entry is not None and self.entry.active is self:
            self.entry.active = None
            if isinstance(self.entry.app, Venue):
                self.entry.app.disconnected()  # market data subscriptions end with the connection

    def on_closed(self, exc: Exception | None) -> None:
        self._release()


class ExchangeSim:
    def __init__(self, cfg: Config) -> None:
        if cfg.exchange_sim is None:
            from gateway.edges.config import ConfigError

            raise ConfigError(cfg.path, "exchange_sim", "missing",
                              "add an [exchange_sim] table with port and mode")
        self.cfg = cfg
        self.sim: ExchangeSimConfig = cfg.exchange_sim
        self.sessions: dict[tuple[bytes, bytes, bytes], SimSession] = {}
        self.market = Market()  # what every session's venue shares: the tape, quotes, users
        sim = self.sim
        settings = VenueSettings(
            fill=sim.fill, partial_fills=sim.partial_fills,
            rest_symbols=frozenset(x.encode() for x in sim.rest_symbols),
            fill_delay=sim.fill_delay_ms / 1000, md_interval=sim.md_interval_ms / 1000,
            malformed_prefix=(sim.malformed_prefix or "").encode(), reject_prefix=(sim.reject_prefix or "").encode())
        for s in cfg.sessions:
            begin = s.begin_string.encode()
            ours = s.upstream.target_comp_id.encode()
            theirs = s.upstream.sender_comp_id.encode()
            key = (begin, theirs, ours)
            if key in self.sessions:
                continue
            appl = session_appl_ver_id(begin, s.default_appl_ver_id)
            validator = None
            if self.sim.validate:
                validator = standard_validator(begin, ValidationSettings(allow_unknown_message_fields=True),
                                               default_appl_ver_id=appl)
            header_tags = frozenset(validator.transport.header.tags) if validator else T.STANDARD_HEADER_TAGS
            store: SessionStore
            if self.sim.state_dir:
                store = FileStore(cfg.resolve(self.sim.state_dir) / session_dir_name(begin, ours, theirs))
            else:
                store = MemoryStore()
            app: EchoApp | Venue = (
                EchoApp(validator, header_tags, appl) if self.sim.mode == "echo"
                else Venue(begin, appl, self.market, settings)
            )
            config = SessionConfig(
                begin_string=begin,
                sender_comp_id=ours,
                target_comp_id=theirs,
                role=Role.ACCEPTOR,
                reset_on_logon=self.sim.reset_on_logon,
                default_appl_ver_id=appl,
                timestamp_precision=timestamp_precision(begin),
                validator=validator,
            )
            self.sessions[key] = SimSession(config, store, app)
        self.server: asyncio.AbstractServer | None = None
        self.journal = open(cfg.resolve(self.sim.journal), "ab") if self.sim.journal else None  # noqa: SIM115

    def arm(self, entry: SimSession) -> None:
        """One timer per session for the venue's next scheduled message (re-armed after every change)."""
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        app = entry.app
        due = app.next_due() if isinstance(app, Venue) else None
        if due is not None:
            entry.timer = asyncio.get_running_loop().call_later(max(0.0, due - time.time()), self._fire, entry)

    def _fire(self, entry: SimSession) -> None:
        entry.timer = None
        now = time.time()
        if isinstance(entry.app, Venue):
            for reply in entry.app.due(now):
                self.deliver(entry, reply, now)
        self.arm(entry)

    def deliver(self, entry: SimSession, reply: Reply, now: float) -> None:
        """A scheduled message: sent if the session is up, else stored under the next sequence number,
        so the gateway gets it through its ResendRequest when it logs on again."""
        mt, header, body = reply
        p = entry.active
        if p is not None and p.session is not None and p.session.is_logged_on:
            p.session.send_app(mt, body, now, header)
            p.pump()
        else:
            Session(entry.config, entry.store).store_app(mt, body, now, header)

    async def start(self) -> None:
        ctx = None
        if self.sim.tls:
            assert self.sim.cert and self.sim.key
            ctx = tls.server_context(
                self.cfg.resolve(self.sim.cert),
                self.cfg.resolve(self.sim.key),
                self.cfg.resolve(self.sim.ca) if self.sim.ca else self.cfg.resolve(self.sim.cert),
                require_client_cert=self.sim.require_client_cert,
            )
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SimProtocol(self), self.sim.host, self.sim.port, ssl=ctx, reuse_address=True
        )
        log.info("exchange_sim_listening", host=self.sim.host, port=self.sim.port, mode=self.sim.mode,
                 sessions=len(self.sessions), tls=self.sim.tls)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        now = time.time()
        for entry in self.sessions.values():
            p = entry.active
            if p is not None and p.session is not None and p.session.is_logged_on:
                p.session.logout(now, "exchange simulator shutting down")
                p.pump()
        await asyncio.sleep(0.1)
        for entry in self.sessions.values():
            if entry.timer is not None:
                entry.timer.cancel()
            if entry.active is not None:
                entry.active.abort()


async def serve(cfg: Config) -> None:
    sim = ExchangeSim(cfg)
    await sim.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.stop()
