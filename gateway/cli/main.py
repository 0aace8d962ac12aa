"""The ``fixgw`` command line (entry point).

Fixed command names (DESIGN §5): ``run``, ``certs init``, ``certs issue``,
``exchange-sim``, ``audit verify``.  User mistakes end with one clear line
on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.core.errors import UsageError
from gateway.edges import logs

if TYPE_CHECKING:
    from gateway.shells.handoff import Worker


def _run_gateway(config_path: str, log_level: str = "info", worker: Worker | None = None) -> int:
    from gateway.app.gateway import Gateway
    from gateway.edges.config import load

    cfg = load(config_path)
    if not cfg.policy.allow_all and not cfg.policy.file and worker is None:
        print(
            f"note: {config_path}: no [policy] file and allow_all is not set, so every application "
            "message is refused (default deny)",
            file=sys.stderr,
        )
    if worker is None and cfg.gateway.workers > 1:
        from gateway.app import workers

        return workers.run(cfg, config_path, log_level)
    if worker is not None:
        import structlog

        from gateway.app.workers import die_with_parent, pin_to_core

        die_with_parent()
        structlog.contextvars.bind_contextvars(worker=worker.index)
        if cfg.gateway.pin_workers:
            pin_to_core(worker.index)

    async def main() -> None:
        gw = Gateway(cfg, worker)
        await gw.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, gw.operator.reload_now)
        await stop.wait()
        await gw.stop()

    _event_loop_run(main())
    return 0


def raise_fd_limit(want: int = 65536) -> int:
    """Every session holds a socket per leg and its store files: lift the soft
    RLIMIT_NOFILE towards the hard limit (1,000 sessions need ~6,000 descriptors)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return int(soft)


def _event_loop_run(coro: object) -> None:
    raise_fd_limit()
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - uvloop is a hard dependency
        asyncio.run(coro)  # type: ignore[arg-type]


def _run_sim(config_path: str) -> int:
    from gateway.app.exchange_sim import serve
    from gateway.edges.config import load

    cfg = load(config_path, need_gateway=False)
    _event_loop_run(serve(cfg))
    return 0


def _certs_init(args: argparse.Namespace) -> int:
    from gateway.edges import pki

    created = pki.init(Path(args.dir), args.trust_domain)
    if created:
        for p in created:
            print(f"created {p}")
    else:
        print(f"{args.dir}: CA and gateway certificate already exist (nothing to do)")
    return 0


def _certs_issue(args: argparse.Namespace) -> int:
    from gateway.edges import pki

    crt, key, identity = pki.issue(Path(args.dir), args.name, args.key_type, days=args.days)
    print(f"created {crt}\ncreated {key}\nidentity {identity}\n")
    print("# identity registry entry for the gateway config:")
    print(pki.registry_snippet(identity, args.comp_id or [], args.role or []))
    return 0


def _keys_new(args: argparse.Namespace) -> int:
    from gateway.edges.registry import new_keys

    for p in new_keys(args.scheme, Path(args.out)):
        print(f"created {p}")
    if args.scheme == "ed25519":
        print("give the .pub to the gateway (identities[].keys); the .key stays with the client")
    else:
        print("the same secret goes to the gateway (identities[].keys) and the client; both files mode 0600")
    return 0


def _users_add(args: argparse.Namespace) -> int:
    import getpass

    from gateway.edges.config import ConfigError, load
    from gateway.edges.mfa import add_user

    cfg = load(args.config, need_gateway=False)
    if cfg.users is None:
        raise ConfigError(args.config, "users", "missing", '[users] file = "users.toml", secrets = "totp.secrets"')
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("fixgw users add: the passwords differ", file=sys.stderr)
            return 2
    if len(password) < 12:
        print("fixgw users add: use a password of at least 12 characters", file=sys.stderr)
        return 2
    uri = add_user(cfg.resolve(cfg.users.file), cfg.resolve(cfg.users.secrets), args.name, password)
    print(f"enrolled {args.name}; add this to the authenticator app (shown once, keep it private):\n{uri}")
    try:
        import io

        import qrcode

        qr = qrcode.QRCode(border=1)
        qr.add_data(uri)
        buf = io.StringIO()
        qr.print_ascii(out=buf)
        print(buf.getvalue())
    except ImportError:  # pragma: no cover - qrcode is a dependency
        pass
    return 0


def _certs_revoke(args: argparse.Namespace) -> int:
    from gateway.edges import pki

    path = pki.revoke(Path(args.dir), args.name)
    print(f"revoked {', '.join(args.name)}; CRL written to {path} (point [revocation] crl at it)")
    return 0


def _policy(args: argparse.Namespace) -> int:
    import ipaddress
    import time as _time

    from gateway.core.fix import codec
    from gateway.core.policy.engine import Context
    from gateway.edges.policy_file import load as load_policy

    if args.policy_command == "sign":
        from gateway.edges.policy_file import sign
        from gateway.sdk import load_signer

        try:
            signer = load_signer("ed25519", args.key)
        except ValueError as exc:
            raise UsageError(f"--key {args.key}: not an Ed25519 private key ({exc})") from None
        assert not isinstance(signer.key, bytes)
        policy, spec = load_policy(args.file)  # an invalid policy is not signed
        if spec.version is None:
            raise UsageError(f"{args.file}: no version: add `version = N` at the top and raise it every time you "
                             "sign (with [policy] signer_key the gateway refuses a signed policy older than the "
                             "newest it loaded)")
        print(f"written {sign(Path(args.file), signer.key)} (version {spec.version}, sha256 {policy.sha256})")
        return 0
    if args.policy_command == "test":
        return _policy_test(args)
    if args.policy_command == "replay":
        from gateway.cli import audit as audit_cli

        return audit_cli.replay(args)
    policy, spec = load_policy(args.file if args.policy_command == "check" else args.policy)
    if args.policy_command == "check":
        shadow = sum(r.shadow for r in policy.rules)
        print(f"{args.file}: ok — version {spec.version if spec.version is not None else 'none'}, "
              f"{len(policy.rules)} rules ({shadow} shadow), {len(spec.zones)} zones, "
              f"{len(spec.actions)} actions, global shadow {'on' if policy.global_shadow else 'off'}, "
              f"sha256 {policy.sha256}")
        return 0
    msg_types = [args.msg_type.encode()] if args.msg_type else []
    if args.action:
        act = spec.actions.get(args.action)
        if act is None:
            print(f"fixgw policy explain: unknown action {args.action!r}; defined: {', '.join(sorted(spec.actions))}",
                  file=sys.stderr)
            return 2
        msg_types += [m.encode() for m in act.msg_types]
    if not msg_types:
        print("fixgw policy explain: give --action or --msg-type", file=sys.stderr)
        return 2
    fields = []
    for f in args.field:
        tag, eq, value = f.partition("=")
        if not eq or not tag.isdigit():
            raise UsageError(f"--field {f!r}: expected TAG=VALUE with a numeric tag, e.g. 55=INTC")
        fields.append((int(tag), value.encode()))
    now = _time.time() if args.at is None else float(args.at)
    peer = ipaddress.ip_address(args.ip) if args.ip else None
    ctx = Context("cli", frozenset(args.role), args.zone, args.posture, args.mfa, peer, args.jit, now, args.direction)
    worst = 0
    for mt in msg_types:
        msg = codec.parse(codec.encode(b"FIX.4.4", [(35, mt), (34, b"1"), *fields]))
        d = policy.decide(ctx, msg)
        print(f"{mt.decode():<3} {d.outcome.upper():<12} rules={','.join(d.rule_ids)} "
              f"controls={','.join(sorted(d.controls)) or '-'} reason={d.reason}"
              + (f" shadow={d.shadow}" if d.shadow else ""))
        for rule in policy.candidates(ctx, mt):
            why = rule.matches(ctx, msg)
            unmet = rule.unmet_conditions(ctx) if rule.decision == "allow" and why is None else []
            state = "matches" if why is None and not unmet else f"skipped: {why or 'needs ' + ', '.join(unmet)}"
            print(f"      {rule.id} ({rule.decision}{', shadow' if rule.shadow else ''}): {state}")
        worst = max(worst, 0 if d.allowed else 1)
    return worst


def _policy_test(args: argparse.Namespace) -> int:
    """Run a table of expected decisions (like `opa test`): exit 1 on any mismatch."""
    import ipaddress
    import tomllib

    from gateway.core.fix import codec
    from gateway.core.policy.engine import Context
    from gateway.edges.config import ConfigError
    from gateway.edges.policy_file import load as load_policy

    cases_path = Path(args.cases)
    try:
        doc = tomllib.loads(cases_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(cases_path, "(file)", f"cannot read cases: {exc}") from None
    policy_file = args.policy or doc.get("policy")
    if not policy_file:
        raise ConfigError(cases_path, "policy", "missing", "policy = \"policy.toml\" or --policy FILE")
    policy_path = Path(policy_file) if Path(policy_file).is_absolute() or args.policy else \
        cases_path.parent / policy_file
    policy, spec = load_policy(policy_path)
    failed = 0
    cases = doc.get("cases", [])
    for i, case in enumerate(cases):
        name = case.get("name", f"case {i + 1}")
        where = f"cases[{i}] ({name})"
        if "expect" not in case or case["expect"] not in ("allow", "deny", "shadow-deny"):
            raise ConfigError(cases_path, f"{where}.expect", "missing or not one of allow, deny, shadow-deny")
        if "msg_type" not in case and case.get("action") not in spec.actions:
            raise ConfigError(cases_path, f"{where}.action", f"unknown action {case.get('action')!r}",
                              f"give msg_type, or one of: {', '.join(sorted(spec.actions))}")
        mts = [case["msg_type"].encode()] if "msg_type" in case else \
            [m.encode() for m in spec.actions[case["action"]].msg_types[:1]]
        fields = [(int(k), str(v).encode()) for k, v in case.get("fields", {}).items()]
        ctx = Context("test", frozenset(case.get("roles", [])), case.get("zone"), case.get("posture", "compliant"),
                      bool(case.get("mfa", False)),
                      ipaddress.ip_address(case["ip"]) if "ip" in case else None, bool(case.get("jit", False)),
                      float(case.get("at", 1_800_000_000)), case.get("direction", "outbound"))
        d = policy.decide(ctx, codec.parse(codec.encode(b"FIX.4.4", [(35, mts[0]), (34, b"1"), *fields])))
        ok = d.outcome == case["expect"] and ("rule" not in case or case["rule"] in d.rule_ids)
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name}: {d.outcome} by {','.join(d.rule_ids)}"
              + ("" if ok else f" (expected {case['expect']}{' by ' + case['rule'] if 'rule' in case else ''})"))
    print(f"{len(cases) - failed}/{len(cases)} cases pass")
    return 1 if failed else 0


def _kill(args: argparse.Namespace) -> int:
    from gateway.edges.config import load
    from gateway.edges.feeds import read_json, write_json

    cfg = load(args.config)
    path = cfg.resolve(cfg.gateway.state_dir) / "killswitch.json"
    data = read_json(path)
    on = args.state == "on"
    if not (args.everything or args.identity or args.account):
        print("fixgw kill: say what: --global, --identity ID or --account ACCOUNT", file=sys.stderr)
        return 2
    if args.everything:
        data["global"] = on
    for key, values in (("identities", args.identity), ("accounts", args.account)):
        current = set(data.get(key, []))
        current = current | set(values) if on else current - set(values)
        data[key] = sorted(current)
    write_json(path, data)
    print(f"kill switch {args.state}: {json.dumps(data)} (the gateway applies it within check_interval)")
    return 0


JIT_TWO_PERSON = (
    "a JIT grant needs a second administrator, so it is given through the admin API:\n"
    "  fixgw admin ... jit request IDENTITY --minutes N --reason WHY   (one administrator asks)\n"
    "  fixgw admin ... jit approve REQUEST_ID                          (another one approves)\n"
    "only when the admin API cannot be used, on the gateway host:\n"
    "  fixgw jit break-glass IDENTITY --minutes N --reason WHY --config FILE   (audited as jit_break_glass)"
)


def _jit(args: argparse.Namespace) -> int:
    """``jit grant`` used to write a grant with no second approver and no audit record: it now says
    how to get one (the admin API's two-person flow).  ``jit break-glass`` is the audited exception."""
    if args.jit_command == "grant":
        print(f"fixgw jit grant: {JIT_TWO_PERSON}", file=sys.stderr)
        return 2
    return _jit_break_glass(args)


def _jit_break_glass(args: argparse.Namespace) -> int:
    """Write ``state_dir/jit-break-glass.json``; the gateway audits the grant (who, why, until) as
    ``jit_break_glass`` before it counts.  Who is the operating-system account running this command
    (and the one behind sudo): on the gateway host that is the accountable person."""
    import os
    import pwd
    import time as _time

    from gateway.edges.config import load
    from gateway.edges.feeds import epoch, read_json, write_json

    cfg = load(args.config)
    cap = cfg.gateway.jit_max_minutes
    if not 0 < args.minutes <= cap:
        raise UsageError(f"jit break-glass: --minutes must be 1..{cap} ([gateway] jit_max_minutes in {args.config})")
    if not args.reason.strip():
        raise UsageError("jit break-glass: --reason must say why the two-person flow cannot be used")
    if args.identity not in {i.id for i in cfg.identities}:
        raise UsageError(f"jit break-glass: {args.identity} is not in the identity registry of {args.config}")
    account = pwd.getpwuid(os.getuid()).pw_name
    sudo = os.environ.get("SUDO_USER")
    by = f"{sudo} (via sudo as {account})" if sudo and sudo != account else account
    path = cfg.resolve(cfg.gateway.state_dir) / "jit-break-glass.json"
    now = _time.time()
    data = {k: v for k, v in read_json(path).items()  # expired (and unusable) entries go
            if isinstance(v, dict) and (until := epoch(v.get("until"))) is not None and until > now}
    until = now + args.minutes * 60
    data[args.identity] = {"until": until, "by": by, "reason": args.reason.strip(), "at": now}
    write_json(path, data)
    print(f"BREAK-GLASS JIT grant for {args.identity} until "
          f"{_time.strftime('%Y-%m-%d %H:%M:%S UTC', _time.gmtime(until))}, by {by}, with no second approver.\n"
          "The gateway records it in the audit stream (jit_break_glass: who, why, until) before it counts, "
          "within [posture] check_interval.  Next time: fixgw admin ... jit request / jit approve.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fixgw", description="Zero-trust FIX session gateway")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("--config", required=True, help="gateway TOML config")
    # one of [gateway] workers = N processes, started by `fixgw run` (not for people to call)
    wk = sub.add_parser("_worker")
    wk.add_argument("--config", required=True)
    wk.add_argument("--index", type=int, required=True)
    wk.add_argument("--count", type=int, required=True)
    wk.add_argument("--inbox", type=int, required=True)
    wk.add_argument("--outboxes", required=True)

    sim = sub.add_parser("exchange-sim", help="run the exchange simulator")
    sim.add_argument("--config", required=True, help="TOML config with an [exchange_sim] table")

    certs = sub.add_parser("certs", help="development PKI")
    csub = certs.add_subparsers(dest="certs_command", required=True)
    ci = csub.add_parser("init", help="create the dev CA and the gateway certificate (idempotent)")
    ci.add_argument("--dir", required=True)
    ci.add_argument("--trust-domain", default="fixgw.dev")
    cs = csub.add_parser("issue", help="issue a client identity certificate")
    cs.add_argument("--dir", required=True)
    cs.add_argument("--name", required=True)
    cs.add_argument("--comp-id", action="append", help="SenderCompID the identity may use (repeatable)")
    cs.add_argument("--role", action="append", help="role (repeatable)")
    cs.add_argument("--key-type", choices=["ec", "rsa"], default="ec")
    cs.add_argument("--days", type=int, default=397)
    cr = csub.add_parser("revoke", help="add certificates to the dev CA's CRL (DIR/ca.crl)")
    cr.add_argument("--dir", required=True)
    cr.add_argument("--name", action="append", required=True)

    keys = sub.add_parser("keys", help="message-signing keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    kn = ksub.add_parser("new", help="ed25519 key pair (OUT.key, OUT.pub) or HMAC secret (OUT.hmac)")
    kn.add_argument("--scheme", choices=["ed25519", "hmac-sha256"], required=True)
    kn.add_argument("--out", required=True, help="path without suffix, e.g. keys/algo1")

    users = sub.add_parser("users", help="people who log on with password + TOTP")
    usub = users.add_subparsers(dest="users_command", required=True)
    ua = usub.add_parser("add", help="enrol a user: scrypt hash + TOTP secret, prints the otpauth:// URI")
    ua.add_argument("name")
    ua.add_argument("--config", required=True, help="gateway config naming the [users] files")
    ua.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    pol = sub.add_parser("policy", help="policy files")
    psub = pol.add_subparsers(dest="policy_command", required=True)
    pc = psub.add_parser("check", help="validate a policy file")
    pc.add_argument("file")
    pt = psub.add_parser("test", help="run a table of expected decisions (exit 1 on any mismatch)")
    pt.add_argument("cases")
    pt.add_argument("--policy", help="policy file (default: `policy` in the cases file)")
    pr = psub.add_parser("replay", help="re-decide recorded traffic under a new policy; report what changes")
    pr.add_argument("--audit", required=True, help="the audit folder")
    pr.add_argument("--policy", required=True, help="the new policy file")
    pr.add_argument("--key", help="AES-256 key file, for a stream encrypted at rest")
    pr.add_argument("--fail-on-change", action="store_true", help="exit 1 when any decision would change")
    ps = psub.add_parser("sign", help="write FILE.sig, a detached Ed25519 signature by an admin key")
    ps.add_argument("file")
    ps.add_argument("--key", required=True, help="admin Ed25519 private key (fixgw keys new --scheme ed25519)")
    pe = psub.add_parser("explain", help="decide one request and show every candidate rule (exit 1 when denied)")
    pe.add_argument("--policy", required=True)
    pe.add_argument("--role", action="append", default=[])
    pe.add_argument("--action")
    pe.add_argument("--msg-type")
    pe.add_argument("--zone")
    pe.add_argument("--posture", default="compliant")
    pe.add_argument("--mfa", action="store_true")
    pe.add_argument("--jit", action="store_true")
    pe.add_argument("--ip")
    pe.add_argument("--direction", choices=["outbound", "inbound"], default="outbound")
    pe.add_argument("--at", help="epoch seconds (default now)")
    pe.add_argument("--field", action="append", default=[], help="TAG=VALUE, e.g. 55=INTC")

    kill = sub.add_parser("kill", help="kill switch: block new orders, let cancels through")
    kill.add_argument("state", choices=["on", "off"])
    kill.add_argument("--config", required=True)
    kill.add_argument("--global", dest="everything", action="store_true")
    kill.add_argument("--identity", action="append", default=[])
    kill.add_argument("--account", action="append", default=[])
    jit = sub.add_parser("jit", help="just-in-time grants")
    jsub = jit.add_subparsers(dest="jit_command", required=True)
    # the two-person flow lives in the admin API (fixgw admin ... jit request / approve): `grant` says so
    jg = jsub.add_parser("grant", help="refused: a JIT grant needs a second administrator (see fixgw admin jit)")
    jg.add_argument("identity", nargs="?")
    jg.add_argument("--minutes", type=int)
    jg.add_argument("--config")
    jb = jsub.add_parser("break-glass", help="JIT grant without a second approver, on the gateway host, when "
                         "the admin API cannot be used; audited as jit_break_glass (who, why)")
    jb.add_argument("identity")
    jb.add_argument("--minutes", type=int, required=True, help="capped by [gateway] jit_max_minutes")
    jb.add_argument("--reason", required=True, help="why the two-person flow cannot be used")
    jb.add_argument("--config", required=True)

    from gateway.cli.admin import add_parser as add_admin_parser

    add_admin_parser(sub)
    audit = sub.add_parser("audit", help="audit stream tools")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    from gateway.cli.audit import add_verify_arguments

    add_verify_arguments(asub.add_parser("verify", help="verify segments, hash chain, signed checkpoints, "
                                                         "a clean end, every chain, an anchor"))
    aq = asub.add_parser("query", help="filter records")
    aq.add_argument("dir")
    aq.add_argument("--key", help="AES-256 key file, for a stream encrypted at rest")
    for opt in ("identity", "session", "decision", "rule", "msg-type", "cl-ord-id", "kind", "since", "until"):
        aq.add_argument(f"--{opt}", help="ISO 8601 UTC for --since/--until" if opt in ("since", "until") else None)
    aq.add_argument("--format", choices=["table", "json", "csv"], default="table")
    aq.add_argument("--limit", type=int, default=0, help="only the last N matches")
    at = asub.add_parser("tail", help="the last records, optionally following new ones")
    at.add_argument("dir")
    at.add_argument("--key", help="AES-256 key file, for a stream encrypted at rest")
    at.add_argument("-n", type=int, default=20)
    at.add_argument("-f", "--follow", action="store_true")
    at.add_argument("--format", choices=["table", "json", "csv"], default="table")
    af = asub.add_parser("flows", help="who talks to whom: identity x zone x session x message types")
    af.add_argument("dir")
    af.add_argument("--key", help="AES-256 key file, for a stream encrypted at rest")
    af.add_argument("--format", choices=["table", "json"], default="table")
    ar = asub.add_parser("report", help="a day's compliance summary")
    ar.add_argument("dir")
    ar.add_argument("--key", help="AES-256 key file, for a stream encrypted at rest")
    ar.add_argument("--day", required=True, help="YYYY-MM-DD (UTC)")
    ar.add_argument("--format", choices=["table", "json"], default="table")
    ae = asub.add_parser("export", help="OCSF-shaped JSON lines for SIEM ingestion")
    ae.add_argument("dir")
    ae.add_argument("--key", help="AES-256 key file, for a stream encrypted at rest")
    ae.add_argument("--format", choices=["ocsf"], default="ocsf")
    return p


def main(argv: list[str] | None = None) -> int:
    from gateway.core.fix.dictionary import DictionaryError
    from gateway.edges.config import ConfigError
    from gateway.edges.feeds import FeedError
    from gateway.edges.pki import PKIError
    from gateway.edges.tls import TLSConfigError

    args = build_parser().parse_args(argv)
    logs.setup(args.log_level)
    try:
        if args.command == "run":
            return _run_gateway(args.config, args.log_level)
        if args.command == "_worker":
            from gateway.shells.handoff import Worker

            worker = Worker.parse(args.index, args.count, args.inbox, args.outboxes)
            return _run_gateway(args.config, args.log_level, worker)
        if args.command == "exchange-sim":
            return _run_sim(args.config)
        if args.command == "certs":
            return {"init": _certs_init, "issue": _certs_issue, "revoke": _certs_revoke}[args.certs_command](args)
        if args.command == "audit":
            from gateway.cli import audit as audit_cli

            return audit_cli.run(args)
        if args.command == "keys":
            return _keys_new(args)
        if args.command == "users":
            return _users_add(args)
        if args.command == "policy":
            return _policy(args)
        if args.command == "kill":
            return _kill(args)
        if args.command == "jit":
            return _jit(args)
        if args.command == "admin":
            from gateway.cli.admin import run as run_admin

            return run_admin(args)
    except (ConfigError, DictionaryError, FeedError, PKIError, TLSConfigError, UsageError) as exc:
        print(f"fixgw: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno in (98,):  # EADDRINUSE
            print(f"fixgw: cannot listen: {exc.strerror}", file=sys.stderr)
            return 2
        if exc.filename:  # a path the user gave that cannot be read or written
            print(f"fixgw: {exc.filename}: {exc.strerror}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 130
    return 2
