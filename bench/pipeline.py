"""The trust pipeline alone (``gateway/core/pipeline.py``): µs per decision, by case and by stage.

The objects are the gateway's own, built the way it builds them: the demo's
identity registry (``config/demo.toml``, identity ``algo-demo``: role algo,
colo zone) through ``gateway.edges.registry.load_registry`` with freshly
generated keys, the shipped policy (``config/policy.toml``) through the
policy loader, ``Rules`` as the gateway compiles them on each policy load
(``gateway.app.routing.compile_rules``), and the ``Moment`` and ``RiskBook`` from a
real ``Router`` (posture, JIT and kill switch feeds, nothing switched on).  As in ``bench.e2e``, the policy's
per-identity throttle and open-order cap are lifted so that a tight loop does
not trip them (every check still runs).  Messages are real frames
(``codec.encode``/``signature.encode_signed``, then ``codec.parse``); each is
decided again and again, so its field index is built once — as in the
gateway, where the session layer has read the message before the pipeline.

Each case times ``pipeline.outbound`` (or ``inbound``) over a loop of ``--n``
decisions; rounds alternate between cases and the median round is reported.
Each case's verdict is checked before and after every timed loop, so a case
cannot silently measure another path.  The stages table times the parts
separately (signature verify, ``Policy.decide``, ``RiskBook.check``, the kill
switch) and, for comparison, ``Router.moment``, which the gateway builds per
message just before deciding (outside the pipeline).

    python -m bench.pipeline [--n 2000] [--rounds 9] [--out bench/results]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import msgspec

from gateway.app.audit_gate import AuditGate
from gateway.app.routing import Router, compile_rules
from gateway.core import pipeline
from gateway.core.fix import codec, signature
from gateway.core.fix.codec import Field, Message
from gateway.core.identity import Identity, zone_entries, zone_of
from gateway.core.pipeline import Moment, Party, Verdict
from gateway.core.policy.anomaly import AnomalyDetector
from gateway.core.policy.engine import Context, Decision, Policy
from gateway.edges import config as config_file
from gateway.edges import policy_file
from gateway.edges.config import Config, KeyConfig
from gateway.edges.feeds import JitGrants, KillSwitch, PostureFeed, Watched
from gateway.edges.metrics import Metrics
from gateway.edges.policy_file import PolicySpec
from gateway.edges.registry import load_registry, new_keys
from gateway.sdk import load_signer

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "demo.toml"
POLICY = ROOT / "config" / "policy.toml"
IDENTITY = "spiffe://fixgw.dev/client/algo-demo"
COLO = "127.0.0.1"  # the colo zone's loopback stand-in (config/policy.toml [zones])
SANDBOX = "127.0.0.13"  # dev_sandbox: no rule lets algo engines trade from there
TS = b"20240101-00:00:00.000"
HEADER: list[Field] = [(49, b"ALGO1"), (52, TS), (56, b"FIXGW")]

#: the shipped policy's limits a tight loop would trip, raised as bench.e2e raises them
LIFTS = (("max_msgs_per_sec = 200 ", "max_msgs_per_sec = 10000000 "), ("burst = 400", "burst = 10000000"),
         ("max_open_orders = 1000\n", "max_open_orders = 10000000\n"))


class BenchError(RuntimeError):
    pass


def nos(cl_ord_id: bytes, qty: bytes = b"100") -> list[Field]:
    return [(35, b"D"), (34, b"1234"), *HEADER, (11, cl_ord_id), (1, b"ACCT-42"), (21, b"1"), (38, qty),
            (40, b"2"), (44, b"101.25"), (54, b"1"), (55, b"INTC"), (59, b"0"), (60, TS)]


CANCEL: list[Field] = [(35, b"F"), (34, b"1235"), *HEADER, (11, b"CXL-000012346"), (41, b"ORDER-000012345"),
                       (1, b"ACCT-42"), (38, b"100"), (54, b"1"), (55, b"INTC"), (60, TS)]
#: an ExecutionReport as the exchange leg receives it for ALGO1's route
EXEC_REPORT: list[Field] = [
    (35, b"8"), (34, b"98765"), (49, b"XCHG"), (52, TS), (56, b"FIXGW-ALGO1"), (6, b"101.25"),
    (11, b"ORDER-000012345"), (14, b"100"), (17, b"EXEC-778899"), (31, b"101.25"), (32, b"100"),
    (37, b"O-55667788"), (38, b"100"), (39, b"2"), (44, b"101.25"), (54, b"1"), (55, b"INTC"), (60, TS),
    (150, b"F"), (151, b"0")]


@dataclass(frozen=True)
class Expect:
    allowed: bool
    stage: str
    rule: str  # first rule id of the verdict

    def check(self, case: str, v: Verdict) -> None:
        got = Expect(v.allowed, v.stage, v.rule_ids[0] if v.rule_ids else "")
        if got != self:
            raise BenchError(f"{case}: expected {self}, the pipeline said {got} ({v.reason})")


@dataclass
class Case:
    name: str
    direction: str
    signing: str
    message: str
    fn: Callable[..., Verdict]
    args: tuple[Any, ...]
    expect: Expect


@dataclass
class Stage:
    name: str
    fn: Callable[..., object]
    args: tuple[Any, ...]
    ok: Callable[[Any], bool]  # is this the result the stage is named after?

    def check(self, result: object) -> None:
        if not self.ok(result):
            raise BenchError(f"{self.name}: unexpected result {result!r}")


@dataclass
class Setup:
    cases: list[Case]
    stages: list[Stage]
    policy: Policy
    message_bytes: dict[str, int]


def lifted_policy() -> tuple[Policy, PolicySpec]:
    text = POLICY.read_text()
    for old, new in LIFTS:
        if old not in text:
            raise BenchError(f"{POLICY}: {old.strip()!r} not found; update LIFTS in bench/pipeline.py")
        text = text.replace(old, new)
    return policy_file.parse(text.encode(), POLICY)


def identities(cfg: Config, keys: Path) -> dict[str, Identity]:
    """algo-demo from the demo registry, per signing scheme, through the gateway's own registry loader."""
    base = next(i for i in cfg.identities if i.id == IDENTITY)
    variants = {
        "none": msgspec.structs.replace(base, signing="none", keys=[]),
        "hmac-sha256": msgspec.structs.replace(base, signing="hmac-sha256",
                                               keys=[KeyConfig(path=str(keys / "algo.hmac"))]),
        "ed25519": msgspec.structs.replace(base, signing="ed25519", keys=[KeyConfig(path=str(keys / "algo.pub"))]),
    }
    return {scheme: load_registry(msgspec.structs.replace(cfg, identities=[ic]))[IDENTITY]
            for scheme, ic in variants.items()}


def build(now: float) -> Setup:
    cfg = config_file.load(CONFIG)
    policy, spec = lifted_policy()
    with tempfile.TemporaryDirectory() as d:
        keys = Path(d)
        new_keys("ed25519", keys / "algo")
        new_keys("hmac-sha256", keys / "algo")
        idents = identities(cfg, keys)
        signers = {"hmac-sha256": load_signer("hmac-sha256", keys / "algo.hmac"),
                   "ed25519": load_signer("ed25519", keys / "algo.key")}
    posture = PostureFeed(Watched(None), spec.posture.ttl)
    posture.push(IDENTITY, "compliant", now)
    # the router's audit gate is never used by moment() or book()
    router = Router(cfg, cast(AuditGate, None), Metrics(), KillSwitch(Watched(None)), posture,
                    JitGrants(Watched(None)), AnomalyDetector(spec.anomaly.compile()), lambda ident, why: None,
                    {IDENTITY: idents["none"]})
    router.rules = rules = compile_rules(policy, spec, cfg.policy.allow_all, router.last_px)
    zones = zone_entries({**cfg.zones, **spec.zones})  # as the gateway's _apply_zones
    session = next(s for s in cfg.sessions if s.client_comp_id == "ALGO1")
    appl = (session.default_appl_ver_id or ("9" if session.begin_string == "FIXT.1.1" else "")).encode()

    def party(ident: Identity, peer: str) -> Party:  # as Router.party, for a connection from ``peer``
        return Party(ident, frozenset(ident.roles), zone_of(peer, zones), ipaddress.ip_address(peer), None,
                     frozenset({appl}) if appl else frozenset())

    at: Moment = router.moment(IDENTITY, now)
    book = router.book(IDENTITY)
    forwarded: OrderedDict[bytes, None] = OrderedDict()  # Router._forwarded: this route's ClOrdIDs
    if party(idents["none"], COLO).zone != "colo" or party(idents["none"], SANDBOX).zone != "dev_sandbox":
        raise BenchError("config/policy.toml zones changed: colo / dev_sandbox not where bench/pipeline.py expects")

    def frame(fields: Sequence[Field], scheme: str) -> bytes:
        return codec.encode(b"FIX.4.4", fields) if scheme == "none" else signature.encode_signed(
            b"FIX.4.4", fields, signers[scheme])

    allow = Expect(True, "policy", "algo-orders-colo")
    outbound_cases = [  # (name, message, fields, peer, expectation)
        ("NewOrderSingle allowed", "D", nos(b"ORDER-000012345"), COLO, allow),
        ("NewOrderSingle refused by policy (dev sandbox zone)", "D", nos(b"ORDER-000012345"), SANDBOX,
         Expect(False, "policy", "default-deny")),
        ("NewOrderSingle refused by risk (qty above max)", "D", nos(b"ORDER-000012345", b"2000000"), COLO,
         Expect(False, "risk", "risk.max_order_qty")),
        ("OrderCancelRequest allowed", "F", CANCEL, COLO, Expect(True, "policy", "cancels-always")),
    ]
    cases: list[Case] = []
    raw: dict[str, bytes] = {}
    for scheme in ("none", "hmac-sha256"):
        for name, mt, fields, peer, expect in outbound_cases:
            label = name if scheme == "none" else f"{name}, HMAC-signed"
            raw[label] = frame(fields, scheme)
            cases.append(Case(label, "outbound", scheme, mt, pipeline.outbound,
                              (party(idents[scheme], peer), codec.parse(raw[label]), at, rules, book, forwarded),
                              expect))
    label = "NewOrderSingle allowed, Ed25519-signed"
    raw[label] = frame(nos(b"ORDER-000012345"), "ed25519")
    cases.append(Case(label, "outbound", "ed25519", "D", pipeline.outbound,
                      (party(idents["ed25519"], COLO), codec.parse(raw[label]), at, rules, book, forwarded), allow))
    label = "NewOrderSingle refused: bad HMAC signature"
    wrong = signature.Signer("hmac-sha256", bytes(range(32)))  # not the identity's secret
    raw[label] = signature.encode_signed(b"FIX.4.4", nos(b"ORDER-000012345"), wrong)
    cases.append(Case(label, "outbound", "hmac-sha256", "D", pipeline.outbound,
                      (party(idents["hmac-sha256"], COLO), codec.parse(raw[label]), at, rules, book, forwarded),
                      Expect(False, "signature", "signature")))
    label = "ExecutionReport inbound allowed"
    raw[label] = codec.encode(b"FIX.4.4", EXEC_REPORT)
    cases.append(Case(label, "inbound", "none", "8", pipeline.inbound,
                      (party(idents["none"], COLO), codec.parse(raw[label]), at, rules),
                      Expect(True, "policy", "inbound-trading")))

    # the stages, on the messages of the cases above
    by_name = {c.name: c for c in cases}
    nos_hmac = by_name["NewOrderSingle allowed, HMAC-signed"].args[1]
    nos_ed = by_name["NewOrderSingle allowed, Ed25519-signed"].args[1]
    nos_plain: Message = by_name["NewOrderSingle allowed"].args[1]
    er: Message = by_name["ExecutionReport inbound allowed"].args[1]

    def ctx(p: Party, direction: str) -> Context:  # as pipeline._policy builds it
        return Context(p.identity.id, p.roles, p.zone, at.posture, p.user is not None, p.peer_ip, at.jit, at.now,
                       direction)

    colo, sandbox = party(idents["none"], COLO), party(idents["none"], SANDBOX)
    decision = policy.decide(ctx(colo, "outbound"), nos_plain)
    if book is None or not decision.allowed:
        raise BenchError("the allowed NewOrderSingle's policy decision or risk book is missing")

    def key_id(r: object) -> bool:
        return isinstance(r, str) and r != ""

    def allowed(r: Decision) -> bool:
        return r.allowed

    def refused(r: Decision) -> bool:
        return not r.allowed

    def none(r: object) -> bool:
        return r is None

    stages = [
        Stage("signature.verify hmac-sha256", signature.verify, (nos_hmac.raw, idents["hmac-sha256"].keys, now),
              key_id),
        Stage("signature.verify ed25519", signature.verify, (nos_ed.raw, idents["ed25519"].keys, now), key_id),
        Stage("Policy.decide NewOrderSingle allowed", policy.decide, (ctx(colo, "outbound"), nos_plain), allowed),
        Stage("Policy.decide NewOrderSingle refused", policy.decide, (ctx(sandbox, "outbound"), nos_plain),
              refused),
        Stage("Policy.decide ExecutionReport inbound", policy.decide, (ctx(colo, "inbound"), er), allowed),
        Stage("RiskBook.check NewOrderSingle allowed", book.check,
              (nos_plain, now, None, rules.references, rules.kind(b"D"), policy.instruments, decision.facts), none),
        Stage("kill switch (Moment.kill)", at.kill, (IDENTITY, nos_plain), none),
        Stage("Router.moment (per message, outside the pipeline)", router.moment, (IDENTITY, now),
              lambda m: isinstance(m, Moment) and m.posture == "compliant"),
    ]
    return Setup(cases, stages, policy, {k: len(v) for k, v in raw.items()})


def per_op_ns(fn: Callable[..., object], args: tuple[Any, ...], n: int) -> tuple[float, object]:
    clock = time.perf_counter_ns
    out: object = None
    t0 = clock()
    for _ in range(n):
        out = fn(*args)
    return (clock() - t0) / n, out


def run(n: int, rounds: int) -> dict[str, Any]:
    now = time.time()
    s = build(now)
    for c in s.cases:  # before timing: every case takes the path it is named after
        c.expect.check(c.name, c.fn(*c.args))
    for st in s.stages:
        st.check(st.fn(*st.args))
    case_ns: dict[str, list[float]] = {c.name: [] for c in s.cases}
    stage_ns: dict[str, list[float]] = {st.name: [] for st in s.stages}
    for r in range(rounds + 1):  # round 0 warms up (policy candidate cache, allocator) and is dropped
        print(f"round {r}/{rounds}", file=sys.stderr, end="\r", flush=True)
        for c in s.cases:
            ns, v = per_op_ns(c.fn, c.args, n)
            c.expect.check(c.name, cast(Verdict, v))  # ... and still took it at the end of the loop
            if r:
                case_ns[c.name].append(ns)
        for st in s.stages:
            ns, out = per_op_ns(st.fn, st.args, n)
            st.check(out)
            if r:
                stage_ns[st.name].append(ns)
    print(file=sys.stderr)
    case_rows: list[dict[str, Any]] = []
    for c in s.cases:
        v = c.fn(*c.args)
        med = statistics.median(case_ns[c.name])
        case_rows.append({
            "case": c.name, "direction": c.direction, "signing": c.signing, "msg_type": c.message,
            "message_bytes": s.message_bytes[c.name],
            "verdict": {"allowed": v.allowed, "outcome": v.outcome, "stage": v.stage, "rule_ids": list(v.rule_ids)},
            "us": round(med / 1000, 2), "us_min": round(min(case_ns[c.name]) / 1000, 2),
            "us_max": round(max(case_ns[c.name]) / 1000, 2), "decisions_per_s": round(1e9 / med)})
    stage_us = {name: round(statistics.median(v) / 1000, 2) for name, v in stage_ns.items()}
    stage_rows = [{"stage": name, "us": stage_us[name], "ops_per_s": round(1e9 / statistics.median(v))}
                  for name, v in stage_ns.items()]
    case_us: dict[str, float] = {r["case"]: r["us"] for r in case_rows}
    full = case_us["NewOrderSingle allowed, HMAC-signed"]
    parts = {"signature.verify": stage_us["signature.verify hmac-sha256"],
             "Policy.decide": stage_us["Policy.decide NewOrderSingle allowed"],
             "RiskBook.check": stage_us["RiskBook.check NewOrderSingle allowed"],
             "kill switch": stage_us["kill switch (Moment.kill)"]}
    breakdown = {"case": "NewOrderSingle allowed, HMAC-signed", "us": full, "parts_us": parts,
                 "rest_us": round(full - sum(parts.values()), 2)}
    return {"benchmark": "pipeline", "decisions_per_round": n, "rounds": rounds,
            "policy": str(POLICY.relative_to(ROOT)), "policy_sha256": s.policy.sha256,
            "policy_rules": len(s.policy.rules), "registry": str(CONFIG.relative_to(ROOT)), "identity": IDENTITY,
            "lifted": [old.strip() + " -> " + new.strip() for old, new in LIFTS],
            "python": platform.python_version(), "machine": platform.machine(),
            "cases": case_rows, "stages": stage_rows, "breakdown": breakdown}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Trust pipeline alone: {result['policy']} ({result['policy_rules']} rules), identity "
             f"{result['identity'].rsplit('/', 1)[-1]} from {result['registry']}; median of {result['rounds']} "
             f"rounds of {result['decisions_per_round']} decisions (Python {result['python']}).", "",
             "| case | verdict | µs/decision | best round µs | decisions/s |", "|---|---|---:|---:|---:|"]
    for r in result["cases"]:
        v = r["verdict"]
        verdict = f"{v['outcome']} at {v['stage']} ({', '.join(v['rule_ids'])})"
        lines.append(f"| {r['case']} | {verdict} | {r['us']:.2f} | {r['us_min']:.2f} | {r['decisions_per_s']:,} |")
    lines += ["", "| stage | µs | per second |", "|---|---:|---:|"]
    lines += [f"| {r['stage']} | {r['us']:.2f} | {r['ops_per_s']:,} |" for r in result["stages"]]
    b = result["breakdown"]
    parts = " + ".join(f"{name} {us:.2f}" for name, us in b["parts_us"].items())
    lines += ["", f"{b['case']}: {b['us']:.2f} µs = {parts} + the rest {b['rest_us']:.2f} "
              "(SenderSubID, routing fields, MsgType kind, Context and Verdict, calls)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pipeline", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="decisions per timed loop")
    p.add_argument("--rounds", type=int, default=9, help="timed loops per case (the median is reported)")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for pipeline.json and .md")
    a = p.parse_args(argv)
    if a.n < 1 or a.rounds < 1:
        p.error("--n and --rounds must be at least 1")
    try:
        result = run(a.n, a.rounds)
    except BenchError as exc:
        print(f"bench.pipeline: {exc}", file=sys.stderr)
        return 1
    text = markdown(result)
    print(text, end="")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    (a.out / "pipeline.md").write_text(text)
    print(f"written {a.out / 'pipeline.json'}, {a.out / 'pipeline.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
