"""Exchange simulator: ``fixgw exchange-sim --config FILE``.

A FIX acceptor for the upstream side of every route in the config, with one
of two applications:

* ``echo`` — the QuickFIX acceptance-test application (DESIGN §7): echoes
  NewOrderSingle (dropping a PossResend(97) duplicate of a ClOrdID it has
  seen), SecurityDefinition and Email; answers any other application message
  with BusinessMessageReject(j), BusinessRejectReason(380)=3.  Echoes carry
  header fields in tag order and body fields in tag order, values untouched.
* ``fill`` — a tiny venue: NewOrderSingle -> ExecutionReport New, then Fill at
  the limit price; OrderCancelRequest -> Canceled (or OrderCancelReject for an
  unknown order); QuoteRequest(R) -> Quote(S).

The applications are pure (message in, replies out); the shell reuses the
gateway's session engine and asyncio leg.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from gateway.core.fix import tags as T
from gateway.core.fix.carry import split_for_carry
from gateway.core.fix.codec import Field, FrameGarbled, Framer, FrameReceived, Message
from gateway.core.fix.dictionary import MessageDef, ValidationSettings, Validator, standard_validator
from gateway.core.fix.session import AppMessageReceived, Disconnected, Event, LoggedOn, Role, Session, SessionConfig
from gateway.core.fix.store import MemoryStore, SessionStore
from gateway.edges import tls
from gateway.edges.config import Config, ExchangeSimConfig
from gateway.edges.store import FileStore, session_dir_name
from gateway.shells.legs import SessionProtocol

log = structlog.get_logger("fixgw.exchange_sim")

Reply = tuple[bytes, list[Field], list[Field]]  # (MsgType, header fields, body fields)


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
    """The acceptance-test application behind QuickFIX's test acceptor."""

    validator: Validator | None
    header_tags: frozenset[int]
    fixt: bool = False
    seen_cl_ord_ids: set[bytes] = field(default_factory=set)

    def on_message(self, msg: Message) -> list[Reply]:
        header, body = split_for_carry(msg, self.header_tags)
        mt = msg.msg_type
        if mt == T.MT_NEW_ORDER_SINGLE:
            cl = msg.get(T.ClOrdID) or b""
            if msg.get(T.PossResend) == b"Y" and cl in self.seen_cl_ord_ids:
                return []
            self.seen_cl_ord_ids.add(cl)
        if mt in (T.MT_NEW_ORDER_SINGLE, T.MT_SECURITY_DEFINITION, T.MT_EMAIL):
            md = self.validator.message_def(mt) if self.validator else None
            return [(mt, header, sort_body(body, md))]
        reject: list[Field] = []
        seq = msg.get(T.MsgSeqNum)
        if seq:
            reject.append((T.RefSeqNum, seq))
        reject += [
            (T.Text, b"Unsupported Message Type"),
            (T.RefMsgType, mt),
            (T.BusinessRejectReason, b"%d" % T.BRR_UNSUPPORTED_MESSAGE_TYPE),
        ]
        if self.fixt:
            reject.append((T.DefaultApplVerID, b"9"))
        return [(T.MT_BUSINESS_MESSAGE_REJECT, [], reject)]


@dataclass
class _Order:
    cl_ord_id: bytes
    order_id: bytes
    symbol: bytes
    side: bytes
    qty: bytes
    price: bytes
    open: bool = True


@dataclass
class FillApp:
    """A venue that accepts and fully fills every order at its limit price."""

    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    orders: dict[bytes, _Order] = field(default_factory=dict)
    rest_symbols: frozenset[bytes] = frozenset()
    fill_delay: float = 0.0  # seconds; > 0: fills are handed out through ``take_delayed``
    delayed: list[Reply] = field(default_factory=list)

    def take_delayed(self) -> list[Reply]:
        out, self.delayed = self.delayed, []
        return out

    def _exec(self, o: _Order, exec_type: bytes, status: bytes, cum: bytes, leaves: bytes,
              last: tuple[bytes, bytes] | None, now_ts: bytes) -> Reply:
        n = next(self.ids)
        body: list[Field] = [
            (T.AvgPx, o.price if cum != b"0" else b"0"),
            (T.ClOrdID, o.cl_ord_id),
            (T.CumQty, cum),
            (T.ExecID, b"E%d" % n),
        ]
        if last is not None:
            body += [(T.LastPx, last[1]), (T.LastQty, last[0])]
        body += [
            (T.OrderID, o.order_id),
            (T.OrderQty, o.qty),
            (T.OrdStatus, status),
            (T.Price, o.price),
            (T.Side, o.side),
            (T.Symbol, o.symbol),
            (T.TransactTime, now_ts),
            (T.ExecType, exec_type),
            (T.LeavesQty, leaves),
        ]
        return (T.MT_EXECUTION_REPORT, [], body)

    def on_message(self, msg: Message, now_ts: bytes = b"") -> list[Reply]:
        mt = msg.msg_type
        if mt == T.MT_NEW_ORDER_SINGLE:
            o = _Order(
                msg.get(T.ClOrdID) or b"",
                b"O%d" % next(self.ids),
                msg.get(T.Symbol) or b"",
                msg.get(T.Side) or b"1",
                msg.get(T.OrderQty) or b"0",
                msg.get(T.Price) or b"0",
            )
            self.orders[o.cl_ord_id] = o
            new = self._exec(o, b"0", b"0", b"0", o.qty, None, now_ts)
            if o.symbol in self.rest_symbols:
                return [new]  # rests on the book until cancelled
            fill = self._exec(o, b"F", b"2", o.qty, b"0", (o.qty, o.price), now_ts)
            o.open = False
            if self.fill_delay > 0:
                self.delayed.append(fill)
                return [new]
            return [new, fill]
        if mt == T.MT_ORDER_CANCEL_REQUEST:
            orig = msg.get(T.OrigClOrdID) or b""
            target = self.orders.get(orig)
            if target is None or not target.open:
                body: list[Field] = [
                    (T.ClOrdID, msg.get(T.ClOrdID) or b""),
                    (T.OrderID, target.order_id if target else b"NONE"),
                    (T.OrdStatus, b"2" if target else b"8"),
                    (T.OrigClOrdID, orig),
                    (T.Text, b"unknown order" if target is None else b"order is not open"),
                    (T.CxlRejReason, b"1" if target is None else b"0"),
                    (T.CxlRejResponseTo, b"1"),
                ]
                return [(T.MT_ORDER_CANCEL_REJECT, [], body)]
            target.open = False
            mt, hdr, body = self._exec(target, b"4", b"4", b"0", b"0", None, now_ts)
            body = [(T.ClOrdID, msg.get(T.ClOrdID) or b"") if t == T.ClOrdID else (t, v) for t, v in body]
            body.append((T.OrigClOrdID, orig))
            body.sort(key=lambda f: f[0])
            return [(mt, hdr, body)]
        if mt == T.MT_QUOTE_REQUEST:
            req = msg.get(T.QuoteReqID) or b""
            sym = msg.get(T.Symbol) or b""
            body = [(T.QuoteReqID, req), (T.QuoteID, b"Q%d" % next(self.ids)), (T.Symbol, sym),
                    (T.BidPx, b"99.5"), (T.OfferPx, b"100.5")]
            return [(T.MT_QUOTE, [], body)]
        reject: list[Field] = []
        seq = msg.get(T.MsgSeqNum)
        if seq:
            reject.append((T.RefSeqNum, seq))
        reject += [(T.Text, b"Unsupported Message Type"), (T.RefMsgType, mt),
                   (T.BusinessRejectReason, b"3")]
        return [(T.MT_BUSINESS_MESSAGE_REJECT, [], reject)]


@dataclass
class SimSession:
    config: SessionConfig
    store: SessionStore
    app: EchoApp | FillApp
    active: SimProtocol | None = None


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
            if isinstance(app, FillApp):
                from gateway.core.fix.utctime import format_utc_timestamp

                replies = app.on_message(event.message, format_utc_timestamp(now, 3))
            else:
                replies = app.on_message(event.message)
            for mt, header, body in replies:
                self.session.send_app(mt, body, now, header)
            if isinstance(app, FillApp) and app.fill_delay > 0:
                loop = asyncio.get_running_loop()
                for reply in app.take_delayed():
                    loop.call_later(app.fill_delay, self.sim.deliver_later, self.entry, reply)
        elif isinstance(event, LoggedOn):
            if isinstance(self.entry.app, EchoApp):
                self.entry.app.seen_cl_ord_ids.clear()  # the acceptance app forgets per session
        elif isinstance(event, Disconnected):
            self._release()

    def _release(self) -> None:
        if self.entry is not None and self.entry.active is self:
            self.entry.active = None

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
        for s in cfg.sessions:
            begin = s.begin_string.encode()
            ours = s.upstream.target_comp_id.encode()
            theirs = s.upstream.sender_comp_id.encode()
            key = (begin, theirs, ours)
            if key in self.sessions:
                continue
            validator = None
            if self.sim.validate:
                validator = standard_validator(begin, ValidationSettings(allow_unknown_message_fields=True))
            header_tags = frozenset(validator.transport.header.tags) if validator else T.STANDARD_HEADER_TAGS
            store: SessionStore
            if self.sim.state_dir:
                store = FileStore(cfg.resolve(self.sim.state_dir) / session_dir_name(begin, ours, theirs))
            else:
                store = MemoryStore()
            fixt = begin == b"FIXT.1.1"
            app: EchoApp | FillApp = (
                EchoApp(validator, header_tags, fixt) if self.sim.mode == "echo"
                else FillApp(rest_symbols=frozenset(s.encode() for s in self.sim.rest_symbols),
                             fill_delay=self.sim.fill_delay_ms / 1000)
            )
            config = SessionConfig(
                begin_string=begin,
                sender_comp_id=ours,
                target_comp_id=theirs,
                role=Role.ACCEPTOR,
                reset_on_logon=self.sim.reset_on_logon,
                default_appl_ver_id=b"9" if fixt else None,
                validator=validator,
            )
            self.sessions[key] = SimSession(config, store, app)
        self.server: asyncio.AbstractServer | None = None
        self.journal = open(cfg.resolve(self.sim.journal), "ab") if self.sim.journal else None  # noqa: SIM115

    def deliver_later(self, entry: SimSession, reply: Reply) -> None:
        """A delayed fill: sent if the session is up, else stored under the next sequence number,
        so the gateway gets it through its ResendRequest when it logs on again."""
        mt, header, body = reply
        p = entry.active
        now = time.time()
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
