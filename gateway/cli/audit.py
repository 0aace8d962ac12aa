"""``fixgw audit ...``: the compliance officer's tools, reading the stream offline.

verify, query, tail, flows (who talks to whom), report (a day's summary) and
export (OCSF-shaped JSON for a SIEM).  Nothing here writes to the stream.

``verify`` takes the verifying key as ``--pubkey`` only (never the
``audit.pub`` beside the data), checks every chain of the folder
(``gateway.edges.audit_chain`` says what must hold), fails on an open end
unless ``--allow-open-tail``, and prints the anchor — each chain's head as
``CHAIN=SEQ:SHA256`` — to keep elsewhere and pass back later with
``--expect-head`` or ``--anchor FILE``.  What the other commands print comes
partly from clients, so tables escape control characters and CSV cells never
start a spreadsheet formula; a reader that stops early (``| head``) ends the
command quietly.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from gateway.core.errors import UsageError


def add_verify_arguments(av: argparse.ArgumentParser) -> None:
    """The options of ``fixgw audit verify`` (the parser is built in ``gateway.cli.main``)."""
    av.add_argument("dir", nargs="?", help="the audit folder (or use --nats)")
    av.add_argument("--nats", help="verify the replicated stream at this NATS URL instead")
    av.add_argument("--stream", default="FIXGW_AUDIT")
    av.add_argument("--pubkey",
                    help="the gateway's audit public key (PEM), taken out of band: never the audit.pub beside "
                         "the data, which whoever rewrites the stream can rewrite too.  Without it only the "
                         "hash links are checked, and the output says so")
    av.add_argument("--allow-open-tail", action="store_true",
                    help="accept a stream that does not end in a clean shutdown (a running gateway's); the "
                         "unsigned tail is still reported")
    av.add_argument("--expect-head", action="append", default=[], metavar="CHAIN=SEQ:SHA256",
                    help="a head printed by an earlier verify, kept elsewhere: the chain must still hold that "
                         "record (repeatable: one per chain)")
    av.add_argument("--anchor", action="append", default=[], metavar="FILE",
                    help="a file of CHAIN=SEQ:SHA256 lines (as --write-anchor writes them)")
    av.add_argument("--write-anchor", metavar="FILE",
                    help="after a successful verify, write the chains and their heads here to keep elsewhere")


def _anchor(args: argparse.Namespace) -> dict[str, tuple[int, str]]:
    """What the auditor kept elsewhere: ``--anchor`` files, then ``--expect-head`` values."""
    from gateway.edges.audit import parse_anchor

    out: dict[str, tuple[int, str]] = {}
    try:
        for path in args.anchor:
            out.update(parse_anchor(Path(path).read_text(), path))
        for i, value in enumerate(args.expect_head, 1):
            out.update(parse_anchor(value, f"--expect-head #{i}"))
    except OSError as exc:
        raise UsageError(f"--anchor {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return out


def verify_cmd(args: argparse.Namespace) -> int:
    """Exit 0 when every chain verifies (see ``gateway.edges.audit_chain``), 1 naming the first problem,
    2 for a usage mistake.  Prints the anchor (chain=seq:hash per chain) to keep elsewhere."""
    from gateway.edges.audit import MAIN_CHAIN, format_anchor, read_public_key, verify_folder

    try:
        pub = read_public_key(Path(args.pubkey)) if args.pubkey else None
    except OSError as exc:
        raise UsageError(f"--pubkey {args.pubkey}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"--pubkey {exc}") from None
    anchor = _anchor(args)
    if pub is None and (anchor or args.write_anchor or args.allow_open_tail):
        raise UsageError("--expect-head, --anchor, --write-anchor and --allow-open-tail need --pubkey KEY: "
                         "an anchor means something only for a stream whose checkpoints were verified")
    if args.nats:
        return _verify_nats(args, pub, anchor)
    if not args.dir or not Path(args.dir).is_dir():
        print(f"fixgw audit verify: {args.dir} is not a folder", file=sys.stderr)
        return 2
    result = verify_folder(Path(args.dir), pub, args.allow_open_tail, anchor, progress=sys.stdout.isatty())
    single = len(result.chains) == 1 and result.chains[0][0] == MAIN_CHAIN
    for name, chain in result.chains:
        print(chain.summary() if single else f"{name}: {chain.summary()}")
    for problem in result.problems:
        print(f"FAILED: {problem}")
    if not result.ok:
        return 1
    if pub is not None:  # an anchor is worth keeping only for a verified stream
        _anchor_out(format_anchor(result.anchor()), args.write_anchor)
    return 0


def _anchor_out(heads: list[str], path: str | None) -> None:
    """Print the anchor (``anchor CHAIN=SEQ:SHA256`` lines) and write it to ``--write-anchor``."""
    for line in heads:
        print(f"anchor {line}")
    if path:
        try:
            Path(path).write_text("".join(f"{line}\n" for line in heads))
        except OSError as exc:
            raise UsageError(f"--write-anchor {path}: {exc.strerror}") from None


def _verify_nats(args: argparse.Namespace, pub: Any, anchor: dict[str, tuple[int, str]]) -> int:
    """The replicated copy in JetStream, chain by chain: the records name their chain (``main``, or
    ``worker-K`` with several workers, interleaved in one stream), so the anchor of the local folder
    checks the copy (and the other way round)."""
    import asyncio

    import msgspec

    from gateway.edges.audit import MAIN_CHAIN, format_anchor, verify_lines
    from gateway.edges.replicate import chains_of, fetch_labelled

    try:
        msgs = asyncio.run(fetch_labelled(args.nats, args.stream))
    except Exception as exc:  # noqa: BLE001 - unreachable server, unknown stream ...
        print(f"fixgw audit verify: cannot read stream {args.stream} at {args.nats}: {exc}", file=sys.stderr)
        return 2

    def decoded(data: bytes) -> dict[str, Any] | None:
        try:
            return dict(msgspec.json.decode(data))
        except (msgspec.DecodeError, TypeError, ValueError):
            return None

    by_chain = chains_of(msgs) or {MAIN_CHAIN: []}
    single = list(by_chain) == [MAIN_CHAIN]
    ok, heads = True, {}
    for chain in sorted(by_chain, key=lambda c: (c != MAIN_CHAIN, c)):
        where = f"nats:{args.stream}" + ("" if single else f" {chain}")
        result = verify_lines(((where, seq, data, decoded(data)) for seq, data in by_chain[chain]), pub,
                              args.allow_open_tail, anchor.get(chain), name=where)
        print(result.summary() if single else f"{chain}: {result.summary()}")
        ok &= result.ok
        if result.head is not None:
            heads[chain] = result.head
    unknown = sorted(set(anchor) - set(by_chain))
    for name in unknown:
        print(f"FAILED: chain {name} is in the anchor but not in the stream "
              f"(it holds {', '.join(sorted(by_chain))})")
    if not ok or unknown:
        return 1
    _anchor_out(format_anchor(heads), args.write_anchor)
    return 0


# -- showing client-chosen text safely --------------------------------------------------------
# ClOrdIDs, reasons, posture assertions, admin call bodies ... are chosen by whoever sent them.  A terminal
# obeys escape sequences (it can be made to retitle, hide lines, even answer back) and a spreadsheet
# runs a cell that starts like a formula, so neither gets such text raw.
#: Unicode categories shown escaped: controls (C0, DEL, C1), format characters (bidi overrides, zero
#: width) and the line/paragraph separators
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
#: a spreadsheet cell starting with one of these is read as a formula (OWASP "CSV injection")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def printable(text: str) -> str:
    """``text`` with every control, format and separator character (and the backslash, so the
    result reads back unambiguously) written as a Python-style escape: ESC becomes ``\\x1b``."""
    import unicodedata

    if text.isprintable() and "\\" not in text:
        return text  # the common case: nothing to do
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def csv_cell(value: object) -> object:
    """A CSV cell that is shown, not run: control characters escaped (``printable``) and text that a
    spreadsheet would take for a formula prefixed with ``'``.  Numbers stay numbers."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return "'" + printable(text) if text.startswith(_FORMULA_START) else printable(text)


QUERY_FIELDS = ("seq", "ts", "kind", "decision", "direction", "identity", "session", "msg_type", "cl_ord_id",
                "rules", "reason")


def _matches(rec: dict[str, object], args: argparse.Namespace) -> bool:
    def has(field: str, want: str | None) -> bool:
        return want is None or str(rec.get(field, "")) == want

    rules = rec.get("rules") or ([rec["rule"]] if "rule" in rec else [])
    return (has("kind", args.kind) and has("identity", args.identity) and has("decision", args.decision)
            and has("msg_type", args.msg_type) and has("cl_ord_id", args.cl_ord_id)
            and (args.session is None or args.session in str(rec.get("session", "")))
            and (args.rule is None or args.rule in (rules if isinstance(rules, list) else []))
            and (args.since is None or str(rec.get("ts", "")) >= args.since)
            and (args.until is None or str(rec.get("ts", "")) <= args.until))


def _emit(records: list[dict[str, object]], fmt: str) -> None:
    import csv

    if fmt == "json":  # json.dumps escapes every control and non-ASCII character: safe as it is
        for r in records:
            print(json.dumps(r))
    elif fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(QUERY_FIELDS)
        for r in records:
            w.writerow([csv_cell(r.get(f, "")) for f in QUERY_FIELDS])
    else:
        for r in records:
            rules = r.get("rules")
            p = printable
            print(f"{r.get('seq', ''):>7} {p(str(r.get('ts', ''))[:26]):<26} {p(str(r.get('kind', ''))):<20} "
                  f"{p(str(r.get('decision', ''))):<11} {p(str(r.get('identity', r.get('leg', '')))[-34:]):<34} "
                  f"{p(str(r.get('msg_type', ''))):<3} {p(str(r.get('cl_ord_id', '') or '')):<12} "
                  f"{p(','.join(map(str, rules)) if isinstance(rules, list) else '')} "
                  f"{p(str(r.get('reason', ''))[:60])}")


def query_cmd(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"fixgw audit query: {folder} is not a folder", file=sys.stderr)
        return 2
    out = [rec for rec in _records(folder, args.key) if _matches(rec, args)]
    _emit(out[-args.limit:] if args.limit else out, args.format)
    return 0


def tail_cmd(args: argparse.Namespace) -> int:
    import time as _time

    folder = Path(args.dir)
    recs = _records(folder, args.key)
    _emit(recs[-args.n:], args.format)
    last: dict[str, int] = {}  # per chain: the last seq shown
    for rec in recs:
        last[rec.get("chain", "")] = rec["seq"]
    while args.follow:
        _time.sleep(0.5)
        new = [rec for rec in _records(folder, args.key) if rec["seq"] > last.get(rec.get("chain", ""), 0)]
        if new:
            _emit(new, args.format)
            for rec in new:
                last[rec.get("chain", "")] = rec["seq"]
            sys.stdout.flush()
    return 0


def _records(folder: Path, key: str | None = None) -> list[dict[str, Any]]:
    from gateway.edges.audit import AuditError, chains, iter_records, load_encryption_key, open_record

    if not folder.is_dir():
        raise UsageError(f"{folder} is not an audit folder")
    try:
        aead = load_encryption_key(Path(key)) if key else None
        found = chains(folder)
        if len(found) == 1:
            return [open_record(rec, aead) for _, _, _, rec in iter_records(found[0][1]) if rec is not None]
        merged = [{**open_record(rec, aead), "chain": name}
                  for name, path in found for _, _, _, rec in iter_records(path) if rec is not None]
        merged.sort(key=lambda r: str(r.get("ts", "")))  # one timeline across the workers' chains
        return merged
    except OSError as exc:
        raise UsageError(f"{exc.filename}: {exc.strerror}") from None
    except (AuditError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def flows_cmd(args: argparse.Namespace) -> int:
    """Identity x zone x session x message types, with counts and denials (traffic analysis)."""
    flows: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    denied: Counter[tuple[str, str, str]] = Counter()
    for r in _records(Path(args.dir), args.key):
        if r.get("kind") != "decision" or r.get("direction") == "inbound":
            continue
        key = (str(r.get("identity")), str(r.get("zone")), str(r.get("session")))
        flows[key][str(r.get("msg_type"))] += 1
        if r.get("decision") == "deny":
            denied[key] += 1
    rows: list[dict[str, Any]] = [{"identity": k[0], "zone": k[1], "session": k[2],
                                   "msg_types": dict(sorted(v.items())),
             "messages": sum(v.values()), "denied": denied[k]} for k, v in sorted(flows.items())]
    if args.format == "json":
        for row in rows:
            print(json.dumps(row))
    else:
        print(f"{'identity':<44} {'zone':<22} {'session':<28} {'msgs':>6} {'denied':>6}  types")
        for row in rows:
            types = printable(" ".join(f"{t}:{n}" for t, n in row["msg_types"].items()))
            print(f"{printable(row['identity'][-44:]):<44} {printable(row['zone']):<22} "
                  f"{printable(row['session']):<28} {row['messages']:>6} {row['denied']:>6}  {types}")
    return 0


def report_cmd(args: argparse.Namespace) -> int:
    """A day's compliance summary."""
    day = args.day
    recs = [r for r in _records(Path(args.dir), args.key) if str(r.get("ts", "")).startswith(day)]
    kinds = Counter(str(r.get("kind")) for r in recs)
    decisions = [r for r in recs if r.get("kind") == "decision" and r.get("direction") != "inbound"]
    by_outcome = Counter(str(r.get("decision")) for r in decisions)
    denials = Counter(rule for r in decisions if r.get("decision") == "deny" for rule in (r.get("rules") or ["?"]))
    mfa_fail = sum(1 for r in recs if r.get("kind") == "mfa" and not r.get("accepted"))
    report = {
        "day": day,
        "records": len(recs),
        "sessions": len({r.get("session") for r in recs if r.get("kind") == "logon"}),
        "logons": kinds["logon"],
        "logons_refused": kinds["logon_refused"],
        "tls_refused": kinds["tls_refused"],
        "connections_refused": kinds["connection_refused"],
        "decisions": dict(by_outcome),
        "denials_by_rule": dict(denials.most_common()),
        "mfa_failures": mfa_fail,
        "revocations": kinds["session_revoked"],
        "posture_changes": kinds["posture_change"],
        "kill_switch_events": kinds["kill_switch"],
        "anomalies": kinds["anomaly"],
        "alerts": kinds["alert"],
        "policy_loads": [r.get("sha256") for r in recs if r.get("kind") == "policy_loaded"],
    }
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(f"fixgw compliance report for {day} ({report['records']} records)")
        for k, v in report.items():
            if k not in ("day", "records"):
                print(f"  {k.replace('_', ' '):<22} {printable(str(v))}")
    return 0


#: OCSF class per record kind: (class_uid, category_uid, activity_id for success, activity_id for failure)
OCSF_CLASSES: dict[str, tuple[int, int, int]] = {
    "logon": (3002, 3, 1), "logon_refused": (3002, 3, 1), "mfa": (3002, 3, 1), "logout": (3002, 3, 2),
    "connection_accepted": (4001, 4, 1), "connection_refused": (4001, 4, 5), "tls_refused": (4001, 4, 5),
    "decision": (6003, 6, 99), "admin_call": (6003, 6, 99),
    "anomaly": (2004, 2, 1), "alert": (2004, 2, 1), "session_revoked": (2004, 2, 1),
}


def _ocsf(r: dict[str, Any]) -> dict[str, Any]:
    import calendar
    import time

    kind = str(r.get("kind"))
    class_uid, category_uid, activity = OCSF_CLASSES.get(kind, (6003, 6, 99))
    failed = (kind in ("logon_refused", "connection_refused", "tls_refused")
              or r.get("decision") == "deny" or r.get("accepted") is False or r.get("allowed") is False)
    ts = str(r.get("ts", ""))
    epoch = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) if len(ts) >= 19 else 0
    out: dict[str, Any] = {
        "class_uid": class_uid, "category_uid": category_uid, "activity_id": activity,
        "type_uid": class_uid * 100 + activity,
        "time": epoch * 1000 + int(ts[20:23] or 0) if len(ts) >= 23 else epoch * 1000,
        "severity_id": 3 if kind in ("anomaly", "alert", "session_revoked") else (2 if failed else 1),
        "status_id": 2 if failed else 1,
        "message": f"{kind}: {r.get('reason') or r.get('decision') or r.get('what') or ''}".strip(),
        "metadata": {"product": {"name": "fixgw", "vendor_name": "fixgw"}, "version": "1.1.0",
                     "uid": str(r.get("seq"))},
        "unmapped": r,
    }
    if r.get("identity"):
        out["actor"] = {"user": {"uid": r["identity"], "type": "machine identity"}}
    peer = r.get("peer")
    if isinstance(peer, str) and ":" in peer:
        host, _, port = peer.rpartition(":")
        out["src_endpoint"] = {"ip": host, "port": int(port) if port.isdigit() else None}
    if kind == "decision":
        out["api"] = {"operation": f"FIX MsgType {r.get('msg_type')}", "service": {"name": str(r.get("session"))}}
    return out


def export_cmd(args: argparse.Namespace) -> int:
    for r in _records(Path(args.dir), args.key):
        print(json.dumps(_ocsf(r)))
    return 0


def run(args: argparse.Namespace) -> int:
    """One ``fixgw audit`` command.  A reader that stops early (``| head``) is not an error: the
    command ends quietly with exit 0 instead of a BrokenPipeError traceback."""
    import os

    command = {"verify": verify_cmd, "query": query_cmd, "tail": tail_cmd, "flows": flows_cmd,
               "report": report_cmd, "export": export_cmd}[args.audit_command]
    try:
        code = command(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
        return code
    except BrokenPipeError:
        # nothing more can be written; point stdout at /dev/null so the exit flush is silent too
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0


def replay(args: argparse.Namespace) -> int:
    """Re-decide every recorded outbound decision under a new policy; report what would change."""
    import ipaddress

    from gateway.core.fix import codec
    from gateway.core.fix import tags as T
    from gateway.core.policy.engine import Context
    from gateway.edges.policy_file import load as load_policy

    policy, _ = load_policy(args.policy)
    changes: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    total = 0
    for r in _records(Path(args.audit), args.key):
        if r.get("kind") != "decision" or r.get("direction") != "outbound":
            continue
        old_rules = ",".join(r.get("rules") or [])
        if old_rules in ("kill-switch", "read-only") or old_rules.startswith("risk."):
            continue  # not a policy outcome: state at the time, not rules
        total += 1
        fields: list[tuple[int, bytes]] = [(35, str(r.get("msg_type", "")).encode()), (34, b"1")]
        for tag, key in ((T.Symbol, "symbol"), (T.Side, "side"), (T.OrderQty, "qty"), (T.Price, "price"),
                         (T.Account, "account"), (T.ClOrdID, "cl_ord_id")):
            if r.get(key) is not None:
                fields.append((tag, str(r[key]).encode()))
        try:
            peer = ipaddress.ip_address(str(r["peer"])) if r.get("peer") else None
        except ValueError:
            peer = None
        import calendar
        import time as _time

        ts = str(r.get("ts", ""))
        now = calendar.timegm(_time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) if len(ts) >= 19 else 0.0
        ctx = Context(str(r.get("identity")), frozenset(r.get("roles") or []), r.get("zone"),
                      str(r.get("posture", "unknown")), bool(r.get("mfa")), peer, bool(r.get("jit")), float(now))
        d = policy.decide(ctx, codec.parse(codec.encode(b"FIX.4.4", fields)))
        old = str(r.get("decision"))
        new_rules = ",".join(d.rule_ids)
        if d.outcome != old or (old == "deny") != (not d.allowed):
            changes[(old, old_rules, d.outcome, new_rules)].append(str(r.get("cl_ord_id") or r.get("seq")))
    changed = sum(len(v) for v in changes.values())
    print(f"replayed {total} recorded decisions under {args.policy} (sha256 {policy.sha256[:16]}): "
          f"{changed} would change")
    for (old, old_rules, new, new_rules), ids in sorted(changes.items(), key=lambda kv: -len(kv[1])):
        sample = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
        print(f"  {len(ids):>5}  {old} by {old_rules or '-'}  ->  {new} by {new_rules}   e.g. {sample}")
    return 1 if changed and args.fail_on_change else 0
