"""Gateway configuration: TOML, validated with msgspec.

Every relative path in a config file is resolved against the folder of that
file.  Errors raise ``ConfigError`` whose text names the file, the key and
what would be valid — never a traceback for a user mistake.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from gateway.core.errors import ConfigError
from gateway.core.fix import versions
from gateway.core.identity import ROUTING_FIELDS, parse_zone_entry

__all__ = ["ConfigError"]  # defined in the core (pure code raises it too); imported from here by the edges

BEGIN_STRINGS = tuple(b.decode() for b in versions.BEGIN_STRINGS)  # FIX.4.0 ... FIX.4.4, FIXT.1.1


class _S(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ListenerConfig(_S, kw_only=True, forbid_unknown_fields=True):
    """The client-facing mTLS listener. There is no plaintext listener."""

    host: str = "127.0.0.1"  # address to listen on
    port: int  # TCP port of the client listener
    cert: str  # the gateway's server certificate (PEM)
    key: str  # its private key (PEM, keep it mode 0600)
    ca: str  # CA bundle client certificates must chain to
    name: str = "default"  # listener name, usable in [zones] as listener:NAME
    # with [gateway] workers > 1: worker K also listens on worker_port_base + K, so a client that
    # connects to its own worker's port needs no hand-off (any other worker's port still works)
    worker_port_base: int | None = None


class UpstreamConfig(_S, kw_only=True, forbid_unknown_fields=True):
    """The exchange leg of one route: our initiator session to the venue."""

    host: str  # the venue's FIX host
    port: int  # the venue's FIX port
    sender_comp_id: str  # our SenderCompID(49) on the exchange leg
    target_comp_id: str  # the venue's CompID, TargetCompID(56)
    tls: bool = True  # TLS to the venue (default); false must be spelled out
    ca: str | None = None  # CA bundle for the venue's certificate (required with tls)
    cert: str | None = None  # our client certificate, when the venue checks one
    key: str | None = None  # its private key
    server_name: str | None = None  # name to verify in the venue's certificate (default: host)
    heartbeat_interval: int = 30  # HeartBtInt(108) we propose, seconds
    reset_on_logon: bool = False  # ResetSeqNumFlag(141)=Y on every Logon
    validate: bool = True  # validate the venue's messages against the dictionary
    allow_unknown_message_fields: bool = False  # accept fields the dictionary does not list for the message
    reconnect_min: float = 0.2  # first reconnect delay, seconds (doubles up to reconnect_max)
    reconnect_max: float = 30.0  # longest reconnect delay, seconds
    # persistent: logged on from start-up, reconnects with backoff, shared by
    #   every logon of the client session (a venue session that stays up);
    # mirror: logs on when the client logs on (the client's Logon is answered
    #   once the venue answered ours) and logs out when the client leaves.
    mode: Literal["persistent", "mirror"] = "persistent"
    pin_sha256: list[str] = []  # optional: the venue's leaf certificate (hex SHA-256 of the DER)
    # what the client is told when the venue refuses its message with a Reject(3), or sends something about
    # it the exchange leg rejects as invalid: "business_reject" (BusinessMessageReject(j)) or
    # "execution_report" (orders: ExecutionReport(8) OrdStatus(39)=8, cancels: OrderCancelReject(9), others:
    # BusinessMessageReject(j)); before FIX.4.2 (no j) a Reject(3) instead; Text(58) carries the venue's reason
    venue_reject_answer: Literal["business_reject", "execution_report"] = "business_reject"


class SessionConfigToml(_S, kw_only=True, forbid_unknown_fields=True):
    """A client session the gateway accepts and the route it maps to."""

    begin_string: str  # FIX.4.0, FIX.4.1, FIX.4.2, FIX.4.3, FIX.4.4 or FIXT.1.1 (FIX.5.0, 5.0SP1, 5.0SP2)
    client_comp_id: str  # the client's SenderCompID(49)
    gateway_comp_id: str  # the client's TargetCompID(56): the gateway's CompID
    upstream: UpstreamConfig
    reset_on_logon: bool = False  # ResetOnLogon: reset both sequence numbers at every Logon
    validate: bool = True  # dictionary validation (Reject(3) with SessionRejectReason(373))
    validate_fields_have_values: bool = True  # QuickFIX ValidateFieldsHaveValues
    validate_fields_out_of_order: bool = True  # ValidateFieldsOutOfOrder
    validate_user_defined_fields: bool = True  # ValidateUserDefinedFields (tags >= 5000)
    allow_unknown_message_fields: bool = False  # AllowUnknownMsgFields
    max_latency: float = 120.0  # SendingTime(52) window, seconds (MaxLatency)
    # FIXT.1.1 only: the DefaultApplVerID(1137) both legs send and require in Logon, "7" or "FIX.5.0",
    # "8" or "FIX.5.0SP1", "9" or "FIX.5.0SP2" (default; "2"-"6": FIX.4.0-4.4); a message naming another
    # version in ApplVerID(1128) is validated against that version's shipped dictionary
    default_appl_ver_id: str | None = None
    dictionary: str | None = None  # a venue's own QuickFIX-format dictionary instead of fixdicts/
    app_dictionary: str | None = None  # FIXT.1.1: the application dictionary of default_appl_ver_id
    # client message while the exchange leg is down: reject (BMR 380=4) or logout
    on_exchange_down: Literal["reject", "logout"] = "reject"
    # stored messages resent per turn when serving a ResendRequest(2); the next chunk waits until the
    # connection's write buffer drained and other sessions had their turn
    resend_chunk_size: int = 100
    # ResendRequest(2) a client may send at once, and may have waiting to be served; beyond: Logout
    resend_request_burst: int = 10
    resend_request_rate: float = 1.0  # ResendRequest(2) per second after the burst (token bucket); beyond: Logout
    # bytes of messages held above a MsgSeqNum(34) gap until it fills (beyond: not held, the resend brings
    # them again; invalid frames are never held)
    max_queue_bytes: int = 1048576
    gap_timeout: float = 30.0  # seconds a gap may go without any message filling it before Logout


class KeyConfig(_S, kw_only=True, forbid_unknown_fields=True):
    """A signing key of an identity: Ed25519 public key (PEM) or HMAC secret file (hex)."""

    path: str  # Ed25519 public key (PEM) or HMAC secret file (64 hex, mode 0600)
    valid_until: str | None = None  # RFC 3339; the old key's end in a rotation overlap
    id: str | None = None  # key id clients may name in the signature (for rotation)


class IdentityConfig(_S, kw_only=True, forbid_unknown_fields=True):
    id: str  # spiffe://<trust domain>/client/<name>, the certificate's URI SAN
    comp_ids: list[str]  # SenderCompIDs this identity may log on as
    sub_ids: list[str] = []  # SenderSubID(50) values it may use; empty: any
    zones: list[str] = []  # names from [zones] it may connect from; empty: any
    # policy roles (trader, algo, risk_officer, quant, it_admin, gateway_admin, posture_agent ...)
    roles: list[str] = []
    # per-message signature scheme required of it (DESIGN §4)
    signing: Literal["none", "ed25519", "hmac-sha256"] = "none"
    keys: list[KeyConfig] = []
    max_bad_signatures: int = 3  # consecutive bad signatures before Logout
    mfa: bool = False  # a person: Username(553) + Password(554) = password + TOTP
    # with mfa = true (required): the people, by [users] name, who may log on through this identity;
    # anyone else is refused whatever password and code they bring, and failures lock out per identity
    users: list[str] = []
    pin_sha256: list[str] = []  # optional leaf-certificate pins (hex SHA-256 of the DER)
    sign_outbound: bool = False  # the gateway signs every message to this identity ([gateway] signing_key)
    worker: int | None = None  # with [gateway] workers > 1: the worker that owns its sessions (default: spread)
    # routing/attribution header fields it may use, by FIX name -> values ("*": any); default none:
    # OnBehalfOfCompID, OnBehalfOfSubID, DeliverToCompID, DeliverToSubID, TargetSubID, SenderLocationID,
    # TargetLocationID, OnBehalfOfLocationID, DeliverToLocationID, XmlData (only "*")
    routing: dict[str, list[str]] = {}


class RevocationConfig(_S, kw_only=True, forbid_unknown_fields=True):
    """Revocation data, reloaded without a restart (file watch or SIGHUP)."""

    crl: str | None = None  # PEM or DER CRL signed by the listener CA
    denylist: str | None = None  # one identity URI per line, '#' comments
    check_interval: float = 0.25  # seconds between file / live-session checks
    # past the CRL's nextUpdate: "alert" (once; the CRL stays in use) or "refuse" (also refuse every client
    # certificate, live sessions and admin API calls included, until a fresh CRL loads)
    stale_crl: Literal["alert", "refuse"] = "alert"


class UsersConfig(_S, kw_only=True, forbid_unknown_fields=True):
    """People who log on with Username(553) and password + TOTP in Password(554)."""

    file: str  # users.toml: names and scrypt password hashes
    secrets: str  # totp.secrets: TOTP secrets; refused if group/other can read it
    max_failures: int = 5  # failed logons in failure_window before lockout
    failure_window: float = 300.0  # seconds
    lockout: float = 900.0  # seconds


class NatsConfig(_S, kw_only=True, forbid_unknown_fields=True):
    """Replicate the audit stream to NATS JetStream (local segments stay the source and the spool)."""

    url: str = "nats://127.0.0.1:4222"  # NATS server URL
    stream: str = "FIXGW_AUDIT"  # JetStream stream name (created with file storage if missing)
    subject: str = "fixgw.audit"  # subject each record is published on
    instance: str = "gw1"  # Nats-Msg-Id = <instance>-<seq>: unique per gateway
    replicas: int = 1  # stream replicas (3 on a production cluster)


class AuditConfig(_S, kw_only=True, forbid_unknown_fields=True):
    dir: str  # audit folder (segments, audit.pub)
    nats: NatsConfig | None = None
    key: str | None = None  # Ed25519 signing key for checkpoints (default: state_dir/audit-signing.key, created)
    checkpoint_every: int = 1000  # records
    checkpoint_ms: float = 1000.0  # or at least this often, milliseconds
    max_segment_mb: float = 64.0  # rotate a segment at this size
    max_segment_hours: float = 24.0  # or at this age
    # write: each record reaches the OS before its message is forwarded (survives a gateway crash);
    # fsync: forwarded once a group commit (one fsync per batch) made it durable (survives power loss)
    durability: Literal["write", "fsync"] = "write"
    # who writes: "auto" (default) — "inline" with write durability, "thread" with fsync;
    # "inline" (write durability only) — the loop writes each turn's records to the page cache with one
    # write before it forwards them: no thread to wake, ~10–30 µs less per message, but a stall in
    # kernel writeback stalls every session (the session stores write on the loop already);
    # "thread" — a writer thread, so the event loop never waits on the disk
    writer: Literal["auto", "thread", "inline"] = "auto"
    # while the audit stream cannot write: "refuse" every message (default) or "allow" cancels,
    # whose decision records are kept in memory and written when the stream recovers
    cancels_when_unavailable: Literal["refuse", "allow"] = "refuse"
    inject_enospc_if_exists: str | None = None  # drills and tests: writes fail while this file exists
    # full capture: values of these tags are written as REDACTED too (Password(554), NewPassword(925),
    # EncryptedPassword(1402), EncryptedNewPassword(1404) and RawData(96) always are)
    redact_tags: list[int] = []
    encryption_key: str | None = None  # AES-256 key (64 hex, mode 0600): records encrypted at rest


class GatewaySection(_S, kw_only=True, forbid_unknown_fields=True):
    state_dir: str = "state"  # session stores, feeds (posture, JIT, kill switch), keys
    trust_domain: str = "fixgw.dev"  # identities must be spiffe://<trust_domain>/...
    max_frame: int = 65536  # bytes; larger frames are dropped as garbled
    shutdown_grace: float = 2.0  # seconds to wait for Logout replies on SIGTERM
    logon_timeout: float = 10.0  # seconds from TLS handshake to Logon(A) before the connection is closed
    signing_key: str | None = None  # Ed25519 private key: sign what goes to identities with sign_outbound
    jit_max_minutes: int = 240  # the longest just-in-time grant an operator may give
    max_connections: int = 1000  # client connections open at once (handshaking or logged on)
    max_connections_per_source: int = 50  # of those, from one source address
    handshake_rate: float = 200.0  # TLS handshakes (ClientHellos) per second, all sources (token bucket)
    handshake_burst: float = 400.0  # handshakes allowed at once before the rate applies
    handshake_rate_per_source: float = 20.0  # TLS handshakes per second from one address (IPv6: one /64)
    handshake_burst_per_source: float = 40.0  # of those, allowed at once before the rate applies
    # share of handshake_rate/handshake_burst kept for addresses a Logon completed from in the last 24 h:
    # a flood from new addresses cannot lock out the clients that were already trading
    handshake_reserve: float = 0.25
    max_buffered_bytes: int = 1048576  # per connection: above this the other leg stops reading (backpressure)
    # refused messages per second one identity may send (token bucket); the refusal that empties the bucket
    # logs the session out, and until it refills the identity's messages are not decided, only counted
    refusal_rate: float = 10.0
    refusal_burst: float = 100.0  # refused messages one identity may send at once before refusal_rate applies
    # the same for messages the FIX session layer refuses itself (Reject(3): malformed, a field out of order,
    # a bad value) and garbled frames it drops: a budget of their own, larger, as a counterparty's engine
    # may produce a run of them in good faith (an acceptance suite does); emptying it logs the session out
    malformed_rate: float = 100.0
    malformed_burst: float = 1000.0  # malformed messages one identity may send at once before malformed_rate
    # worker processes sharing the listener (SO_REUSEPORT); each owns a fixed share of the identities
    workers: int = 1
    pin_workers: bool = False  # worker K runs only on the K-th allowed CPU (no cross-core wake-ups)


class ExchangeSimConfig(_S, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"  # listen address
    port: int  # listen port
    mode: Literal["echo", "fill"] = "fill"  # fill: New + Fill per order; echo: the acceptance scripts' echo application
    tls: bool = False  # TLS listener
    cert: str | None = None  # its certificate
    key: str | None = None  # its private key
    ca: str | None = None  # CA for client certificates
    require_client_cert: bool = False  # mutual TLS
    state_dir: str | None = None  # file stores (default: in memory)
    reset_on_logon: bool = True  # reset sequence numbers at every Logon
    validate: bool = True  # validate incoming messages against the dictionary
    # fill mode: what follows an order's New — "full" (one Fill at the limit price), "partial" (partial_fills
    # executions, the last completes it) or "rest" (nothing: it rests until cancelled or replaced)
    fill: Literal["full", "partial", "rest"] = "full"
    partial_fills: int = 3  # fill = "partial": executions per order (2 or more)
    rest_symbols: list[str] = []  # fill mode: orders in these symbols rest (New, no fill) until cancelled
    fill_delay_ms: float = 0.0  # fill mode: each execution follows the previous one after this long (0: at once)
    md_interval_ms: float = 250.0  # fill mode: MarketDataIncrementalRefresh(X) period of a subscription
    # tests: an order whose ClOrdID(11) starts with this gets one ExecutionReport without OrdStatus(39)
    # (invalid in every FIX version) and nothing more
    malformed_prefix: str | None = None
    reject_prefix: str | None = None  # tests: an order whose ClOrdID(11) starts with this gets a Reject(3)
    journal: str | None = None  # append "<session> <MsgType> <ClOrdID>" per received application message


class PolicySection(_S, kw_only=True, forbid_unknown_fields=True):
    """The policy file; without one a config must say explicitly that it allows all."""

    file: str | None = None  # config/policy.toml; reloaded on change or SIGHUP
    signer_key: str | None = None  # admin Ed25519 public key: the policy needs a valid FILE.sig
    allow_all: bool = False  # only for set-ups that test something else (the acceptance scripts)


class AdminConfig(_S, kw_only=True, forbid_unknown_fields=True):
    """The admin API's own listener: HTTPS with client certificates (the listener's CA)."""

    host: str = "127.0.0.1"  # listen address of the admin API
    port: int  # its port (HTTPS, client certificates required)


class PostureConfig(_S, kw_only=True, forbid_unknown_fields=True):
    file: str | None = None  # JSON written by the posture agent (see gateway/edges/feeds.py)
    check_interval: float = 0.01  # seconds between checks of posture, JIT, kill switch and policy files
    # seconds: a posture file not rewritten for this long raises an alert (default: the policy's posture ttl; 0: never)
    max_age: float | None = None


class Config(_S, kw_only=True, forbid_unknown_fields=True):
    gateway: GatewaySection = msgspec.field(default_factory=GatewaySection)
    listen: ListenerConfig | None = None
    audit: AuditConfig | None = None
    policy: PolicySection = msgspec.field(default_factory=PolicySection)
    identities: list[IdentityConfig] = []
    zones: dict[str, list[str]] = {}  # network zone name -> source CIDRs
    revocation: RevocationConfig = msgspec.field(default_factory=RevocationConfig)
    posture: PostureConfig = msgspec.field(default_factory=PostureConfig)
    admin: AdminConfig | None = None
    users: UsersConfig | None = None
    sessions: list[SessionConfigToml] = []
    exchange_sim: ExchangeSimConfig | None = None
    path: str = ""  # set by load(): the file this came from

    @property
    def base(self) -> Path:
        return Path(self.path).resolve().parent

    def resolve(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else (self.base / p).resolve()


def _key_of(err: msgspec.ValidationError) -> tuple[str, str]:
    text = str(err)
    if " - at `$." in text:
        problem, _, key = text.partition(" - at `$.")
        return key.rstrip("`"), problem
    if " - at `$`" in text:
        return "(top level)", text.split(" - at ")[0]
    return "(top level)", text


def load(path: str | Path, need_gateway: bool = True) -> Config:
    """Read and check a config file (``need_gateway``: listener, audit, sessions required)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(p, "(file)", f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(p, "(syntax)", f"not valid TOML: {exc}") from None
    try:
        cfg = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        key, problem = _key_of(exc)
        raise ConfigError(p, key, problem) from None
    cfg.path = str(p)
    _check(cfg, p, need_gateway)
    return cfg


def _check(cfg: Config, p: Path, need_gateway: bool) -> None:
    if need_gateway:
        if cfg.listen is None:
            raise ConfigError(p, "listen", "missing", "add a [listen] table with port, cert, key and ca")
        if cfg.audit is None:
            raise ConfigError(p, "audit.dir", "missing",
                              'every gateway config names its audit folder: [audit] dir = "..."')
        if cfg.audit.writer == "inline" and cfg.audit.durability == "fsync":
            raise ConfigError(p, "audit.writer", '"inline" cannot group-commit fsyncs',
                              'valid with durability = "fsync": "thread"')
        if not cfg.sessions:
            raise ConfigError(p, "sessions", "no [[sessions]] defined", "add one [[sessions]] table per client session")
        _port(p, "listen.port", cfg.listen.port)
        base = cfg.listen.worker_port_base
        if base is not None:
            n = cfg.gateway.workers
            if not 1 <= base <= 65536 - n:
                raise ConfigError(p, "listen.worker_port_base", f"{base}: ports {base}-{base + n - 1} are not all "
                                  "TCP ports", f"valid with {n} workers: 1-{65536 - n}")
            if base <= cfg.listen.port < base + n:
                raise ConfigError(p, "listen.worker_port_base", f"ports {base}-{base + n - 1} include listen.port "
                                  f"{cfg.listen.port}", "choose a range next to it, e.g. listen.port + 1")
    seen: set[tuple[str, str, str]] = set()
    for i, s in enumerate(cfg.sessions):
        k = f"sessions[{i}]"
        if s.begin_string not in BEGIN_STRINGS:
            raise ConfigError(p, f"{k}.begin_string", f"{s.begin_string!r} is not supported",
                              f"valid: {', '.join(BEGIN_STRINGS)}")
        if s.default_appl_ver_id is not None:
            if s.begin_string != "FIXT.1.1":
                raise ConfigError(p, f"{k}.default_appl_ver_id", f"not used with {s.begin_string}",
                                  "only FIXT.1.1 sessions have a DefaultApplVerID(1137); remove the key")
            if versions.appl_ver_id(s.default_appl_ver_id) is None:
                raise ConfigError(p, f"{k}.default_appl_ver_id", f"{s.default_appl_ver_id!r} is not supported",
                                  f"valid: {versions.appl_ver_id_choices()} (the number or the name)")
        ident = (s.begin_string, s.client_comp_id, s.gateway_comp_id)
        if ident in seen:
            raise ConfigError(p, k, f"session {'/'.join(ident)} is defined twice")
        seen.add(ident)
        _port(p, f"{k}.upstream.port", s.upstream.port)
        if s.upstream.heartbeat_interval < 0:
            raise ConfigError(p, f"{k}.upstream.heartbeat_interval", "must be >= 0 seconds")
        for key, least in (("resend_chunk_size", 1), ("resend_request_burst", 1), ("max_queue_bytes", 0)):
            if getattr(s, key) < least:
                raise ConfigError(p, f"{k}.{key}", f"{getattr(s, key)} is too small", f"valid: an integer >= {least}")
        for key in ("resend_request_rate", "gap_timeout"):
            if not getattr(s, key) > 0:
                raise ConfigError(p, f"{k}.{key}", f"{getattr(s, key)} is not positive", "valid: a number > 0")
        if s.upstream.tls and not s.upstream.ca:
            raise ConfigError(p, f"{k}.upstream.ca", "an upstream with tls = true needs a CA bundle",
                              "set ca = \"...\" or, only for a plaintext venue link, tls = false")
    for i, ident_cfg in enumerate(cfg.identities):
        if not ident_cfg.id.startswith(f"spiffe://{cfg.gateway.trust_domain}/"):
            raise ConfigError(p, f"identities[{i}].id", f"{ident_cfg.id!r} is not in the trust domain",
                              f"identities look like spiffe://{cfg.gateway.trust_domain}/client/NAME")
    check_zones(cfg.zones, p)
    if not 1 <= cfg.gateway.workers <= 64:
        raise ConfigError(p, "gateway.workers", f"{cfg.gateway.workers} workers", "valid: 1-64 (one per core)")
    g = cfg.gateway
    for key in ("handshake_rate", "handshake_burst", "handshake_rate_per_source", "handshake_burst_per_source"):
        if not getattr(g, key) > 0:
            raise ConfigError(p, f"gateway.{key}", f"{getattr(g, key)}: must be above 0", "e.g. 20")
    if not 0 <= g.handshake_reserve < 1:
        raise ConfigError(p, "gateway.handshake_reserve", f"{g.handshake_reserve}: a share of the rate",
                          "valid: 0 (no reserve) up to, not including, 1; default 0.25")
    if not g.refusal_rate > 0:
        raise ConfigError(p, "gateway.refusal_rate", f"{g.refusal_rate}: must be above 0", "default 10 (per second)")
    if not g.refusal_burst >= 1:
        raise ConfigError(p, "gateway.refusal_burst", f"{g.refusal_burst}: must be 1 or more", "default 100")
    if not g.malformed_rate > 0:
        raise ConfigError(p, "gateway.malformed_rate", f"{g.malformed_rate}: must be above 0",
                          "default 100 (per second)")
    if not g.malformed_burst >= 1:
        raise ConfigError(p, "gateway.malformed_burst", f"{g.malformed_burst}: must be 1 or more", "default 1000")
    if cfg.audit is not None:
        for j, tag in enumerate(cfg.audit.redact_tags):
            if tag < 1:
                raise ConfigError(p, f"audit.redact_tags[{j}]", f"{tag} is not a FIX tag", "valid: 1 and above")
    for i, ident_cfg in enumerate(cfg.identities):
        w = ident_cfg.worker
        if w is not None and not 0 <= w < cfg.gateway.workers:
            raise ConfigError(p, f"identities[{i}].worker", f"worker {w} does not exist",
                              f"valid with [gateway] workers = {cfg.gateway.workers}: 0-{cfg.gateway.workers - 1}")
    for i, ident_cfg in enumerate(cfg.identities):
        for z in ident_cfg.zones:
            if z not in cfg.zones:
                raise ConfigError(p, f"identities[{i}].zones", f"zone {z!r} is not defined",
                                  f"defined zones: {', '.join(cfg.zones) or 'none (add a [zones] table)'}")
        if ident_cfg.signing != "none" and not ident_cfg.keys:
            raise ConfigError(p, f"identities[{i}].keys", f"signing = {ident_cfg.signing!r} needs at least one key",
                              'keys = [{ path = "keys/NAME.pub" }]')
        if ident_cfg.sign_outbound and not cfg.gateway.signing_key:
            raise ConfigError(p, f"identities[{i}].sign_outbound", "needs the gateway's own key",
                              '[gateway] signing_key = "keys/gateway.key" (fixgw keys new --scheme ed25519)')
        for name, values in ident_cfg.routing.items():
            if name not in ROUTING_FIELDS or name == "ApplVerID":
                valid = ", ".join(n for n in ROUTING_FIELDS if n != "ApplVerID")
                raise ConfigError(p, f"identities[{i}].routing.{name}", "not a routing field", f"valid: {valid}")
            if name == "XmlData" and values not in ([], ["*"]):
                raise ConfigError(p, f"identities[{i}].routing.XmlData", "XmlData cannot be matched by value",
                                  'use ["*"] to allow it, or leave it out')
        if ident_cfg.mfa and cfg.users is None:
            raise ConfigError(p, f"identities[{i}].mfa", "mfa = true needs a [users] table",
                              '[users] file = "users.toml", secrets = "totp.secrets"')
        if ident_cfg.mfa and not ident_cfg.users:
            raise ConfigError(p, f"identities[{i}].users", "mfa = true needs the people who may log on "
                              "through this identity (without them it would open for any enrolled user)",
                              'e.g. users = ["alice"] (names from the [users] file)')
        if ident_cfg.users and not ident_cfg.mfa:
            raise ConfigError(p, f"identities[{i}].users", "users are checked only with mfa = true",
                              "set mfa = true, or remove users")
    if cfg.exchange_sim is not None:
        _port(p, "exchange_sim.port", cfg.exchange_sim.port)
        if cfg.exchange_sim.tls and not (cfg.exchange_sim.cert and cfg.exchange_sim.key):
            raise ConfigError(p, "exchange_sim.cert", "tls = true needs cert and key")
        sim = cfg.exchange_sim
        if sim.partial_fills < 2:
            raise ConfigError(p, "exchange_sim.partial_fills", f"{sim.partial_fills} executions do not make a "
                              "partial fill", "valid: an integer >= 2")
        if not sim.md_interval_ms > 0:
            raise ConfigError(p, "exchange_sim.md_interval_ms", f"{sim.md_interval_ms} is not positive",
                              "valid: milliseconds > 0, e.g. 250")
        if not sim.fill_delay_ms >= 0:
            raise ConfigError(p, "exchange_sim.fill_delay_ms", f"{sim.fill_delay_ms} is negative",
                              "valid: milliseconds >= 0 (0: at once)")


def check_zones(zones: dict[str, list[str]], path: Path) -> None:
    """Zone tables in the gateway config and in policy files: every entry a CIDR or ``listener:NAME``."""
    for name, entries in zones.items():
        for j, e in enumerate(entries):
            try:
                parse_zone_entry(e)
            except ValueError:
                raise ConfigError(path, f"zones.{name}[{j}]", f"{e!r} is neither a CIDR nor listener:NAME",
                                  'e.g. "10.0.0.0/8" or "listener:default"') from None


def _port(p: Path, key: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(p, key, f"{port} is not a TCP port", "valid: 1-65535")
