"""``fixgw admin``: a command-line client for the admin API (mutual TLS, JSON).

    fixgw admin --url https://127.0.0.1:9443 --cert me.crt --key me.key --ca ca.crt sessions
    fixgw admin ... kill on --global --reason "venue incident"
    fixgw admin ... revoke spiffe://fixgw.dev/client/algo2 --reason "key leaked"
    fixgw admin ... jit request spiffe://fixgw.dev/client/adam --minutes 30 --reason "patch window"
    fixgw admin ... jit approve 3f2a9c...      # as a second administrator
    fixgw admin ... kill off --global            # a request: a second administrator runs
    fixgw admin ... approve 5d1e7a...            # ... this (revoke and reinstate work the same way)
    fixgw admin ... requests                     # what is waiting for approval, and what was done

Exit 0 on success (a request now waiting for a second administrator
included: the answer says so and names the request), 1 when the gateway
refused (the reason is printed), 2 when it could not be reached or the
command was wrong.  Tables show text the gateway got from others, so control
characters in it are printed escaped (``fixgw audit``'s ``printable``).
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.edges import tls


def add_parser(sub: Any) -> None:
    adm = sub.add_parser("admin", help="operator actions through the admin API (mTLS)")
    adm.add_argument("--url", required=True, help="https://HOST:PORT of the [admin] listener")
    adm.add_argument("--cert", required=True, help="your certificate (an identity with role gateway_admin)")
    adm.add_argument("--key", required=True)
    adm.add_argument("--ca", required=True, help="CA bundle that signed the gateway's certificate")
    adm.add_argument("--json", action="store_true", help="print the raw JSON answer")
    asub = adm.add_subparsers(dest="admin_command", required=True)
    asub.add_parser("sessions", help="live sessions: identity, zone, posture, sequence numbers, last decision")
    k = asub.add_parser("kill", help="kill switch: block new orders (cancels pass), or show it")
    k.add_argument("state", choices=["on", "off", "status"])
    k.add_argument("--global", dest="everything", action="store_true")
    k.add_argument("--identity", action="append", default=[])
    k.add_argument("--account", action="append", default=[])
    k.add_argument("--reason", default="")
    r = asub.add_parser("revoke", help="refuse an identity from now on and cut its live sessions "
                        "(a second administrator approves)")
    r.add_argument("identity")
    r.add_argument("--reason", required=True)
    ri = asub.add_parser("reinstate", help="undo an admin revocation (a second administrator approves)")
    ri.add_argument("identity")
    ri.add_argument("--reason", default="")
    ap = asub.add_parser("approve", help="approve another administrator's request (kill off, revoke, reinstate, JIT)")
    ap.add_argument("request_id")
    asub.add_parser("requests", help="requests waiting for a second administrator, and what became of them")
    asub.add_parser("reload", help="reload the policy file now")
    p = asub.add_parser("posture", help="assert a device posture for an identity")
    p.add_argument("identity")
    p.add_argument("level")
    j = asub.add_parser("jit", help="just-in-time access: request, approve (a second admin), list")
    jsub = j.add_subparsers(dest="jit_command", required=True)
    jr = jsub.add_parser("request")
    jr.add_argument("identity")
    jr.add_argument("--minutes", type=float, required=True)
    jr.add_argument("--reason", required=True)
    ja = jsub.add_parser("approve")
    ja.add_argument("request_id")
    jsub.add_parser("list")


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    ctx = tls.client_context(Path(args.ca), Path(args.cert), Path(args.key))
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(args.url.rstrip("/") + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=15) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"error": exc.reason}


def _request(args: argparse.Namespace) -> tuple[str, str, Any]:
    c = args.admin_command
    if c == "sessions":
        return "GET", "/v1/sessions", None
    if c == "kill":
        if args.state == "status":
            return "GET", "/v1/kill-switch", None
        return "POST", "/v1/kill-switch", {"on": args.state == "on", "global": args.everything,
                                           "identities": args.identity, "accounts": args.account,
                                           "reason": args.reason}
    if c == "revoke":
        return "POST", "/v1/revoke", {"identity": args.identity, "reason": args.reason}
    if c == "reinstate":
        return "POST", "/v1/reinstate", {"identity": args.identity, "reason": args.reason}
    if c == "approve":
        return "POST", f"/v1/requests/{args.request_id}/approve", None
    if c == "requests":
        return "GET", "/v1/requests", None
    if c == "reload":
        return "POST", "/v1/policy/reload", None
    if c == "posture":
        return "POST", "/v1/posture", {"identity": args.identity, "level": args.level}
    if args.jit_command == "request":
        return "POST", "/v1/jit/requests", {"identity": args.identity, "minutes": args.minutes,
                                            "reason": args.reason}
    if args.jit_command == "approve":
        return "POST", f"/v1/jit/requests/{args.request_id}/approve", None
    return "GET", "/v1/jit/requests", None


def _sessions_table(answer: dict[str, Any]) -> str:
    from gateway.cli.audit import printable

    rows = [("IDENTITY", "ZONE", "POSTURE", "SESSION", "SEQ IN/OUT", "EXCH IN/OUT", "MSGS IN/OUT", "LAST DECISION")]
    for s in answer.get("sessions", []):
        last = s.get("last_decision") or {}
        ex = s["exchange"]
        rows.append((s["identity"].rsplit("/", 1)[-1], s["zone"] or "-", s["posture"], s["session"],
                     f"{s['client_seq']['next_in']}/{s['client_seq']['next_out']}",
                     f"{ex['next_in']}/{ex['next_out']}" if ex["next_in"] is not None else "down",
                     f"{s['messages']['in']}/{s['messages']['out']}",
                     f"{last.get('decision', '-')} {last.get('rules', '')} {last.get('msg_type', '')}".strip()))
    shown = [[printable(str(v)) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in shown) for i in range(len(shown[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in shown)


def run(args: argparse.Namespace) -> int:
    method, path, body = _request(args)
    try:
        status, answer = _call(args, method, path, body)
    except (urllib.error.URLError, ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"fixgw admin: cannot reach {args.url}: {reason}", file=sys.stderr)
        return 2
    if status >= 400:
        print(f"fixgw admin: refused (HTTP {status}): {answer.get('error', answer)}", file=sys.stderr)
        return 1
    if args.admin_command == "sessions" and not args.json:
        print(_sessions_table(answer))
    else:
        print(json.dumps(answer, indent=2))
    if status == 202 and not args.json:
        print(f"waiting for a second administrator: fixgw admin ... approve {answer.get('id')}", file=sys.stderr)
    return 0
