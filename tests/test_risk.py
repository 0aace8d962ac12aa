"""Pre-trade risk book: each check, time passed in."""

from __future__ import annotations

from gateway.core.fix import codec
from gateway.core.policy.risk import Limits, RiskBook

T0 = 1_800_000_000.0


def order(cl: bytes, qty: bytes = b"10", px: bytes | None = b"10", sym: bytes = b"INTC",
          possresend: bool = False, mt: bytes = b"D") -> codec.Message:
    fields = [(35, mt), (34, b"2")] + ([(97, b"Y")] if possresend else []) + [(11, cl), (38, qty), (55, sym)]
    if px is not None:
        fields.append((44, px))
    return codec.parse(codec.encode(b"FIX.4.4", fields))


def er(cl: bytes, status: bytes) -> codec.Message:
    return codec.parse(codec.encode(b"FIX.4.4", [(35, b"8"), (34, b"3"), (11, cl), (39, status)]))


def test_max_open_orders_counts_until_a_terminal_execution_report() -> None:
    book = RiskBook(Limits(max_open_orders=2))
    for cl in (b"A", b"B"):
        assert book.check(order(cl), T0, None, {}) is None
        book.accepted(order(cl))
    assert book.check(order(b"C"), T0, None, {})[0] == "risk.max_open_orders"  # type: ignore[index]
    book.on_execution(er(b"A", b"1"))  # partial fill: still open
    assert book.check(order(b"C"), T0, None, {}) is not None
    book.on_execution(er(b"A", b"2"))  # filled
    assert book.check(order(b"C"), T0, None, {}) is None


def test_duplicate_clordid_is_refused_even_with_possresend() -> None:
    book = RiskBook(Limits())
    book.accepted(order(b"X"))
    assert book.check(order(b"X"), T0, None, {})[0] == "risk.duplicate_clordid"  # type: ignore[index]
    # the venue would fill a PossResend(97)=Y copy again: refused under its own name (the gateway consumes it)
    hit = book.check(order(b"X", possresend=True), T0, None, {})
    assert hit == ("risk.possresend_duplicate", "PossResend(97)=Y and ClOrdID(11) X was already accepted")
    assert book.check(order(b"Y", possresend=True), T0, None, {}) is None  # not seen: a real resend


def test_notional_uses_the_reference_for_orders_without_price_and_fails_closed_without_one() -> None:
    book = RiskBook(Limits(max_notional=1000, duplicate_clordid=False))
    assert book.check(order(b"M", qty=b"50", px=None), T0, None, {b"INTC": 10.0}) is None
    assert book.check(order(b"M", qty=b"500", px=None), T0, None, {b"INTC": 10.0})[0] == "risk.max_notional"  # type: ignore[index]
    assert "fail closed" in book.check(order(b"M", px=None), T0, None, {})[1]  # type: ignore[index]


def test_account_limits_apply_on_top_of_the_identity_limits() -> None:
    book = RiskBook(Limits(max_order_qty=1000, duplicate_clordid=False))
    assert book.check(order(b"A", qty=b"600"), T0, Limits(max_order_qty=500), {})[0] == "risk.max_order_qty"  # type: ignore[index]
    assert book.check(order(b"A", qty=b"600"), T0, None, {}) is None


def test_throttle_refills_with_the_time_passed_in() -> None:
    book = RiskBook(Limits(max_msgs_per_sec=2, burst=2, duplicate_clordid=False))
    results = [book.check(order(b"T"), T0, None, {}) for _ in range(3)]
    assert results[:2] == [None, None] and results[2][0] == "risk.throttle"  # type: ignore[index]
    assert book.check(order(b"T"), T0 + 0.6, None, {}) is None


def test_identity_limits_override_the_defaults() -> None:
    merged = Limits(max_order_qty=100, max_notional=5).merged(Limits(max_order_qty=7))
    assert (merged.max_order_qty, merged.max_notional) == (7, 5)


def msg(mt: bytes, *fields: tuple[int, bytes]) -> codec.Message:
    return codec.parse(codec.encode(b"FIX.4.4", [(35, mt), (34, b"2"), *fields]))


def test_the_kind_decides_which_checks_run() -> None:
    book = RiskBook(Limits(max_order_qty=10, duplicate_clordid=False))
    huge = order(b"K", qty=b"1000")
    assert book.check(huge, T0, None, {}, kind="cancel") is None  # only the throttle for other kinds
    assert book.check(huge, T0, None, {}, kind="order")[0] == "risk.max_order_qty"  # type: ignore[index]
    venue = msg(b"U1", (11, b"V"), (55, b"INTC"), (38, b"1000"), (44, b"1"))
    assert book.check(venue, T0, None, {}) is None  # a custom MsgType is "other" by default
    assert book.check(venue, T0, None, {}, kind="order")[0] == "risk.max_order_qty"  # type: ignore[index]
    quote = msg(b"S", (117, b"Q"), (55, b"INTC"), (132, b"1"), (133, b"2"), (134, b"5"), (135, b"500"))
    assert "OfferSize(135) 500 above 10" in book.check(quote, T0, None, {})[1]  # type: ignore[index]


def test_a_quote_request_without_size_or_price_commits_to_nothing_but_its_sizes_are_checked() -> None:
    book = RiskBook(Limits(max_order_qty=1000, max_notional=10_000, duplicate_clordid=False))
    assert book.check(msg(b"R", (131, b"Q"), (146, b"1"), (55, b"INTC")), T0, None, {}) is None
    assert book.check(msg(b"R", (131, b"Q"), (146, b"1"), (55, b"INTC"), (38, b"500")), T0, None, {}) is None
    hit = book.check(msg(b"R", (131, b"Q"), (146, b"1"), (55, b"INTC"), (38, b"500")), T0, None, {b"INTC": 30.0})
    assert hit is not None and hit[0] == "risk.max_notional"  # with a reference, the notional is known
    hit = book.check(msg(b"R", (131, b"Q"), (146, b"1"), (55, b"INTC"), (38, b"-1")), T0, None, {})
    assert hit == ("risk.max_order_qty", "OrderQty(38) -1 is not a positive number")
    # an order without a size is refused, as before
    no_size = msg(b"D", (11, b"N"), (55, b"INTC"), (44, b"1"))
    assert book.check(no_size, T0, None, {})[0] == "risk.max_order_qty"  # type: ignore[index]


def test_notional_of_unpriced_entries_needs_a_reference_for_every_instrument() -> None:
    book = RiskBook(Limits(max_notional=100_000, duplicate_clordid=False))
    two = msg(b"E", (73, b"2"), (11, b"A"), (55, b"INTC"), (38, b"100"), (11, b"B"), (55, b"MSFT"), (38, b"100"))
    assert book.check(two, T0, None, {b"INTC": 30.0, b"MSFT": 400.0}) is None
    hit = book.check(two, T0, None, {b"INTC": 30.0})
    assert hit is not None and hit[0] == "risk.max_notional" and "fail closed" in hit[1]
    hit = book.check(two, T0, None, {b"INTC": 30.0, b"MSFT": 4000.0})
    assert hit is not None and hit[0] == "risk.max_notional"


def test_price_collar_checks_every_price() -> None:
    book = RiskBook(Limits(price_collar_pct=10, duplicate_clordid=False))
    ok = msg(b"S", (117, b"Q"), (55, b"INTC"), (132, b"29"), (133, b"31"), (134, b"1"), (135, b"1"))
    assert book.check(ok, T0, None, {b"INTC": 30.0}) is None
    far = msg(b"S", (117, b"Q"), (55, b"INTC"), (132, b"29"), (133, b"300"), (134, b"1"), (135, b"1"))
    hit = book.check(far, T0, None, {b"INTC": 30.0})
    assert hit is not None and hit[0] == "risk.price_collar" and "OfferPx(133) 300" in hit[1]


def test_every_clordid_of_a_list_is_tracked() -> None:
    book = RiskBook(Limits(max_open_orders=3))
    lst = msg(b"E", (73, b"2"), (11, b"L1"), (55, b"INTC"), (38, b"1"), (11, b"L2"), (55, b"INTC"), (38, b"1"))
    assert book.check(lst, T0, None, {}) is None
    book.accepted(lst)
    assert book.open_orders == {b"L1", b"L2"}
    again = msg(b"E", (73, b"2"), (11, b"L3"), (55, b"INTC"), (38, b"1"), (11, b"L4"), (55, b"INTC"), (38, b"1"))
    assert book.check(again, T0, None, {})[0] == "risk.max_open_orders"  # type: ignore[index]
    twice = msg(b"E", (73, b"2"), (11, b"L5"), (55, b"INTC"), (38, b"1"), (11, b"L5"), (55, b"INTC"), (38, b"1"))
    assert book.check(twice, T0, None, {})[0] == "risk.duplicate_clordid"  # type: ignore[index]
    # a replace frees the ClOrdID it replaces
    book.accepted(msg(b"G", (11, b"L6"), (41, b"L1"), (55, b"INTC"), (38, b"1")))
    assert book.open_orders == {b"L2", b"L6"}


def test_limits_of_every_account_apply() -> None:
    book = RiskBook(Limits(duplicate_clordid=False))
    lst = msg(b"E", (73, b"2"), (11, b"A"), (1, b"ACC-1"), (55, b"INTC"), (38, b"10"),
              (11, b"B"), (1, b"ACC-2"), (55, b"INTC"), (38, b"600"))
    per_account = [Limits(max_order_qty=1000), Limits(max_order_qty=500)]
    assert book.check(lst, T0, per_account, {})[0] == "risk.max_order_qty"  # type: ignore[index]
    assert book.check(lst, T0, per_account[:1], {}) is None


def test_restricted_instruments_by_any_name() -> None:
    from gateway.core.policy.instruments import compile_instruments

    inst = compile_instruments(["trim", "upper"], {"BAD": ["ISIN:US9"]})
    book = RiskBook(Limits(restricted_symbols=inst.entry_keys(["BAD"], any_source=True), duplicate_clordid=False))
    for fields in ([(55, b" bad")], [(48, b"US9"), (22, b"4")], [(311, b"BAD")], [(309, b"us9"), (305, b"4")]):
        hit = book.check(msg(b"D", (11, b"R"), *fields, (38, b"1")), T0, None, {}, instruments=inst)
        assert hit is not None and hit[0] == "risk.restricted_symbol", fields


# -- cancels have a budget of their own (issue 15 item 16) -------------------------------------------
def cancel(cl: bytes, orig: bytes) -> codec.Message:
    return msg(b"F", (11, cl), (41, orig), (55, b"INTC"), (54, b"1"))


def test_a_burst_of_cancels_for_every_open_order_passes_after_the_order_budget_is_spent() -> None:
    book = RiskBook(Limits(max_msgs_per_sec=2, burst=8, duplicate_clordid=False))
    for i in range(8):  # the whole order budget
        o = order(b"O%d" % i)
        assert book.check(o, T0, None, {}) is None
        book.accepted(o)
    assert book.check(order(b"O9"), T0, None, {})[0] == "risk.throttle"  # type: ignore[index]
    hits = [book.check(cancel(b"C%d" % i, b"O%d" % i), T0, None, {}, kind="cancel") for i in range(8)]
    assert hits == [None] * 8  # all 8 (before: each drew on the spent order budget and 8 of 8 were refused)


def test_the_cancel_bucket_is_as_deep_as_the_burst_plus_the_orders_open_now() -> None:
    book = RiskBook(Limits(max_msgs_per_sec=1, burst=2, duplicate_clordid=False))
    book.accept([b"O%d" % i for i in range(8)])  # 8 open, far more than the burst
    hits = [book.check(cancel(b"C%d" % i, b"O%d" % i), T0, None, {}, kind="cancel") for i in range(11)]
    assert hits[:10] == [None] * 10 and hits[10] is not None and hits[10][0] == "risk.cancel_throttle"


def test_cancels_do_not_spend_the_order_budget_and_a_flood_of_them_is_still_bounded() -> None:
    book = RiskBook(Limits(max_msgs_per_sec=2, burst=4, duplicate_clordid=False))
    cancels = [book.check(cancel(b"C%d" % i, b"X"), T0, None, {}, kind="cancel") for i in range(10)]
    assert cancels[:4] == [None] * 4  # no open orders: the burst alone
    assert all(h is not None and h[0] == "risk.cancel_throttle" for h in cancels[4:])
    assert "burst 4 plus 0 open orders" in cancels[4][1]  # type: ignore[index]
    assert [book.check(order(b"O%d" % i), T0, None, {}) for i in range(4)] == [None] * 4  # orders untouched
    assert book.check(cancel(b"C", b"X"), T0 + 0.5, None, {}, kind="cancel") is None  # refilled at the rate


# -- what a restart must not forget (issue 15 item 17): the book's own entry points ------------------
def test_accept_and_close_are_what_accepted_and_on_execution_do() -> None:
    live, rebuilt = RiskBook(Limits(max_open_orders=5)), RiskBook(Limits(max_open_orders=5))
    for m in (order(b"A"), order(b"B"), msg(b"G", (11, b"B2"), (41, b"B"), (55, b"INTC"), (38, b"1"))):
        live.accepted(m)
    rebuilt.accept([b"A"])
    rebuilt.accept([b"B"])
    rebuilt.accept([b"B2"], [b"B"])
    assert (live.seen, live.open_orders) == (rebuilt.seen, rebuilt.open_orders)
    live.on_execution(er(b"A", b"2"))
    rebuilt.close([b"A", None])
    assert live.open_orders == rebuilt.open_orders == {b"B2"}


# -- the refusal budget (issue 15 item 8) -------------------------------------------------------------
def test_refusal_budget_logs_out_at_the_last_token_and_refills_with_time() -> None:
    from gateway.core.budget import RefusalBudget

    budget = RefusalBudget(rate=2, burst=3)
    assert budget.buckets.get("a") is None  # the allowed path: one lookup, nothing created
    assert [budget.spend("a", T0) for _ in range(3)] == [False, False, True]  # the 3rd uses it up
    b = budget.buckets["a"]
    assert budget.exhausted(b, T0) and budget.exhausted(b, T0 + 0.4)
    assert not budget.exhausted(b, T0 + 0.5)  # one token back at 2/s
    assert budget.buckets.get("b") is None  # per identity
    assert budget.drop(b, 7) and not budget.drop(b, 8) and not budget.drop(b, 9)
    assert budget.report(b) == (3, 7, 9) and budget.report(b) == (0, None, None)


# -- the start-up rebuild from the audit stream (gateway/app/risk_state.py) --------------------------
REPLAY_POLICY = """
[anomaly]
enabled = true
learn_orders = 3
[actions.order_entry]
msg_types = ["D", "G", "E"]
[actions.cancel]
msg_types = ["F"]
[[rules]]
id = "algos-trade"
roles = ["algo"]
actions = ["order_entry", "cancel"]
decision = "allow"
[risk.default]
max_open_orders = 10
"""
ME, OTHER = "spiffe://fixgw.dev/client/algo1", "spiffe://fixgw.dev/client/algo2"
SESSION = "FIX.4.4/ALGO1/FIXGW"


def _router(tmp: object) -> object:
    from pathlib import Path
    from typing import cast

    import msgspec

    from gateway.app.audit_gate import AuditGate
    from gateway.app.routing import Router, compile_rules
    from gateway.core.policy.anomaly import AnomalyDetector
    from gateway.edges import config as config_mod
    from gateway.edges import policy_file
    from gateway.edges.feeds import JitGrants, KillSwitch, PostureFeed, Watched
    from gateway.edges.metrics import Metrics

    folder = cast(Path, tmp)
    (folder / "policy.toml").write_text(REPLAY_POLICY)
    policy, spec = policy_file.load(folder / "policy.toml")
    cfg = msgspec.convert({"audit": {"dir": str(folder / "audit")}}, config_mod.Config)
    router = Router(cfg, cast(AuditGate, None), Metrics(), KillSwitch(Watched(None)), PostureFeed(Watched(None)),
                    JitGrants(Watched(None)), AnomalyDetector(spec.anomaly.compile()), lambda i, why: None, {})
    router.rules = compile_rules(policy, spec, False, router.last_px)
    return router


def test_the_audit_stream_rebuilds_books_routes_prices_and_baselines(tmp_path: object) -> None:
    import os
    from pathlib import Path
    from typing import Any, cast

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from gateway.app.risk_state import rebuild
    from gateway.core.policy.anomaly import AnomalyDetector
    from gateway.edges.audit import AuditLog
    from gateway.shells.route import Route

    tmp = cast(Path, tmp_path)
    aead = AESGCM(os.urandom(32))
    log = AuditLog(tmp / "audit")
    log.aead = aead  # sealed at rest: the rebuild opens them with the gateway's key

    def decision(cl: str, decision: str = "allow", mt: str = "D", ident: str = ME, **more: Any) -> int:
        return log.record("decision", direction="outbound", decision=decision, identity=ident, session=SESSION,
                          msg_type=mt, cl_ord_id=cl, symbol="INTC", side="1", qty="10", **more)

    def outcome(seq: int, result: str = "forwarded") -> None:
        log.record("outcome", session=SESSION, decision_seq=seq, result=result)

    def report(cl: str, status: str, **more: Any) -> None:
        log.record("decision", direction="inbound", decision="allow", identity=ME, session=SESSION, msg_type="8",
                   cl_ord_id=cl, ord_status=status, symbol="INTC", **more)

    outcome(decision("A"))
    log.record("logon", session=SESSION, identity=ME, reset=True)  # a new FIX session: PossResend memory anew
    outcome(decision("B"), "not_forwarded")  # the exchange leg was down: never at the venue
    decision("C")  # forwarded, then the process died before the outcome was written: counted (fail closed)
    outcome(decision("A2", mt="G", orig_cl_ord_id="A"))  # replaces A
    outcome(decision("L1", mt="E", cl_ord_ids=["L1", "L2"], orig_cl_ord_ids=[]))
    outcome(decision("R", decision="deny"))  # refused: never counted
    outcome(decision("Z", ident=OTHER))  # another worker's identity
    report("X", "4", orig_cl_ord_id="L1")  # L1 cancelled (the cancel's report names it in OrigClOrdID)
    report("A2", "2", last_px="31.5")  # filled
    outcome(decision("V"))
    log.record("venue_reject", session=SESSION, msg_type="D", cl_ord_id="V", identity=ME, client_seq=9,
               upstream_ref_seq=12, text="unknown symbol")  # the venue's Reject(3): never in its book
    log.close()

    router = cast(Any, _router(tmp))
    route = Route(cast(Any, None), (b"FIX.4.4", b"ALGO1", b"FIXGW"), cast(Any, None), cast(Any, None),
                  cast(Any, None))
    summary = rebuild(router, tmp / "audit", aead, lambda i: i == ME, [route])
    book = router.risk_books[ME]
    assert set(book.seen) == {b"A", b"C", b"A2", b"L1", b"L2", b"V"}  # V stays a used ClOrdID
    assert book.open_orders == {b"C", b"L2"}  # ... but is not open: the venue rejected it
    assert set(route.open_orders) == {b"C"}  # D and G only (cancel on logout), finished ones closed
    assert set(router.forwarded[route.key]) == {b"C", b"A2", b"L1", b"L2", b"V"}  # A was before the reset
    assert router.last_px == {b"INTC": 31.5}
    assert OTHER not in router.risk_books
    assert summary["unreadable"] == 0 and summary["without_outcome"] == 1 and summary["not_forwarded"] == 1
    assert (summary["open_orders"], summary["clordids"]) == (2, 6)
    # the anomaly baseline learned every outbound message of ME: warm, so a first order in MSFT is judged
    anomaly: AnomalyDetector = router.anomaly
    from gateway.core.fix import codec as c

    msft = c.parse(c.encode(b"FIX.4.4", [(35, b"D"), (34, b"9"), (11, b"N"), (55, b"MSFT"), (38, b"1")]))
    assert [k for k, _ in anomaly.observe(ME, msft, T0 + 10 * 86400)][:1] == ["new_symbol"]


def test_without_its_key_a_sealed_stream_rebuilds_nothing_and_says_so(tmp_path: object) -> None:
    import os
    from pathlib import Path
    from typing import Any, cast

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from gateway.app.risk_state import rebuild
    from gateway.edges.audit import AuditLog

    tmp = cast(Path, tmp_path)
    log = AuditLog(tmp / "audit")
    log.aead = AESGCM(os.urandom(32))
    seq = log.record("decision", direction="outbound", decision="allow", identity=ME, session=SESSION,
                     msg_type="D", cl_ord_id="A")
    log.record("outcome", session=SESSION, decision_seq=seq, result="forwarded")
    log.close()
    router = cast(Any, _router(tmp))
    summary = rebuild(router, tmp / "audit", AESGCM(os.urandom(32)), lambda i: True, [])
    assert summary["unreadable"] >= 2 and summary["clordids"] == 0
