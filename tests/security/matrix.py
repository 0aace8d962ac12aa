"""The attack matrix: each row is one attack, the answer fixgw must give, and the audit record that proves it.

``tests/security/test_attack_matrix.py`` has one test per row (``test_<id>``)
and asserts, for every row: refused as described, audited with the reason,
nothing from the attacker reached the exchange, and a bystander session that
was logged on throughout still trades.  The table in docs/security.md is generated from
this list (``python -m tests.security.matrix --write docs/security.md``) and checked
by a test, so the table only ever shows what the tests enforce.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple


class Row(NamedTuple):
    id: str
    attack: str
    answer: str
    audit: str  # record kind: words in its reason


ROWS: list[Row] = [
    Row("no_client_certificate", "TLS without a client certificate", "handshake refused", "tls_refused"),
    Row("certificate_from_another_ca", "certificate for a registered name from another CA", "handshake refused",
        "tls_refused"),
    Row("expired_certificate", "expired client certificate", "handshake refused", "tls_refused"),
    Row("not_yet_valid_certificate", "client certificate not valid yet", "handshake refused", "tls_refused"),
    Row("revoked_by_crl", "certificate revoked in the CRL", "closed before Logon", "connection_refused: CRL"),
    Row("denylisted_identity", "identity on the denylist", "closed before Logon", "connection_refused: denylist"),
    Row("wrong_trust_domain", "URI SAN in another trust domain", "closed before Logon",
        "connection_refused: not in trust domain"),
    Row("two_uri_sans", "certificate with two URI SANs", "closed before Logon", "connection_refused: 2 URI SANs"),
    Row("compid_not_owned", "Logon with a SenderCompID the identity does not own", "Logon unanswered, closed",
        "logon_refused: may not log on as"),
    Row("duplicate_logon", "second Logon for a live session", "Logon unanswered, first session untouched",
        "logon_refused: already"),
    Row("tls_1_1_client", "TLS 1.0/1.1 client", "handshake refused", "tls_refused: PROTOCOL"),
    Row("missing_signature_ed25519", "unsigned order from an Ed25519 identity", "Reject(3) 373=8 on 89",
        "signature_refused: missing"),
    Row("missing_signature_hmac", "unsigned order from an HMAC identity", "Reject(3) 373=8 on 89",
        "signature_refused: missing"),
    Row("bad_signature_ed25519", "order altered after signing (Ed25519)", "Reject(3) 373=8 on 89",
        "signature_refused: does not verify"),
    Row("bad_signature_hmac", "order altered after signing (HMAC)", "Reject(3) 373=8 on 89",
        "signature_refused: does not verify"),
    Row("replayed_signature_ed25519", "byte-for-byte replay of a signed order (Ed25519)",
        "Logout: MsgSeqNum too low", "logout: MsgSeqNum too low"),
    Row("replayed_signature_hmac", "byte-for-byte replay of a signed order (HMAC)", "Logout: MsgSeqNum too low",
        "logout: MsgSeqNum too low"),
    Row("sending_time_outside_window", "signed order with SendingTime 10 minutes old", "Reject(3) 373=10, Logout",
        "session_reject: SendingTime"),
    Row("wrong_totp", "right password, wrong TOTP code", "Logon unanswered", "logon_refused: wrong TOTP code"),
    Row("replayed_totp", "a TOTP code used once already", "Logon unanswered", "logon_refused: already used"),
    Row("totp_brute_force", "guessing codes until the account locks", "Logon unanswered, then locked",
        "logon_refused: locked"),
    Row("failed_logon_resetting_sequence_numbers", "refused Logon with ResetSeqNumFlag(141)=Y for a live session",
        "Logon unanswered; the live session's numbers unchanged", "logon_refused: may not log on as"),
    Row("message_type_not_allowed_for_role", "algo sends UserRequest(BE) (system configuration)",
        "BusinessMessageReject, default deny", "decision: default-deny"),
    Row("right_role_wrong_zone", "algo order from the corporate LAN instead of the colo",
        "ExecutionReport 39=8, default deny", "decision: default-deny"),
    Row("non_compliant_posture", "trader order from a non-compliant device", "ExecutionReport 39=8",
        "decision: device-health-deny"),
    Row("stale_posture", "trader order with a posture assertion older than the TTL", "ExecutionReport 39=8",
        "decision: device-health-deny"),
    Row("order_outside_risk_limits", "order above the identity's max_order_qty", "ExecutionReport 39=8",
        "decision: max_order_qty"),
    Row("kill_switch_on", "order while the identity's kill switch is on", "ExecutionReport 39=8",
        "decision: kill switch"),
    Row("frame_over_size_limit", "8 KiB frame where max_frame is 4 KiB", "frame dropped, session goes on",
        "frame_dropped"),
    Row("slowloris", "TLS connection that never sends Logon", "closed after logon_timeout",
        "logon_refused: no Logon within"),
    Row("garbage_before_logon", "random bytes instead of a Logon", "connection closed at once",
        "logon_refused: garbled first message"),
    Row("garbage_after_logon", "random bytes inside a logged-on session", "dropped, session goes on",
        "frame_dropped"),
]



class Hole(NamedTuple):
    """An attack found by review that the one gateway of the matrix cannot stage (it needs its own
    policy, a route without dictionary validation, an offline client, a failing disk ...): its own test."""

    test: str  # "module::function" under tests/security/
    attack: str
    answer: str
    audit: str


HOLES: list[Hole] = [
    Hole("test_pipeline_holes::test_routing_fields_need_a_grant",
         "OnBehalfOfCompID(115), DeliverToCompID(128), TargetSubID(57), SenderLocationID(142) ... without a grant",
         "ExecutionReport 39=8 naming the field", "decision: routing.<field>"),
    Hole("test_pipeline_holes::test_every_occurrence_in_repeating_groups_counts",
         "restricted symbol × 5,000,000 in the second NoRelatedSym(146) entry of a QuoteRequest(R)",
         "BusinessMessageReject", "decision: risk"),
    Hole("test_pipeline_holes::test_kill_switch_covers_every_order_creating_msgtype",
         "QuoteRequest(R) while the global kill switch is on", "BusinessMessageReject", "decision: kill-switch"),
    Hole("test_pipeline_holes::test_numbers_fail_closed_without_dictionary_validation",
         "NaN, negative or infinite OrderQty(38)/Price(44) on a route with validate = false",
         "ExecutionReport 39=8", "decision: risk"),
    Hole("test_pipeline_holes::test_messages_for_an_offline_client_are_decided_and_recorded_first",
         "exchange message for a client that logged out", "decided, recorded, then stored for its next Logon",
         "decision (client_online false), stored_for_offline_client"),
    Hole("test_session_bounds::test_new_seq_no_of_2_to_the_64_is_rejected_and_the_route_still_trades",
         "SequenceReset with NewSeqNo(36) = 2^64", "Reject(3) 373=5 naming 36; the route still trades",
         "session_reject"),
    Hole("test_session_bounds::test_msg_seq_num_of_5000_digits_logs_out_and_the_gateway_serves_the_next_connection",
         "MsgSeqNum(34) of 5,000 digits", "Logout naming 34; the next connection is served", "logout"),
    Hole("test_pipeline_holes::test_an_order_followed_at_once_by_logout_is_forwarded_and_has_an_outcome",
         "order and Logout in one write, before the order's record is written",
         "the order reaches the venue; the Logout is answered", "decision: allow, outcome: forwarded"),
    Hole("test_lost_orders::test_an_exchange_store_that_cannot_write_refuses_the_order_and_says_so",
         "order while the exchange leg's store cannot write (ENOSPC)", "BusinessMessageReject 380=4",
         "outcome: not_forwarded"),
    Hole("test_pipeline_holes::test_outcome_records_name_the_exchange_sequence_number_under_pipelining",
         "20 pipelined orders", "each outcome names the MsgSeqNum its order was sent with", "outcome: forwarded"),
    Hole("test_pipeline_holes::test_possresend_duplicate_is_not_a_second_order",
         "a forwarded ClOrdID(11) sent again with PossResend(97)=Y", "consumed, not forwarded (FIX 19a)",
         "decision: ignore"),
    Hole("test_policy_holes::test_hole5_the_shipped_policy_catches_every_spelling",
         "`xyz-restricted`, `XYZ-RESTRICTED ` or the instrument by SecurityID(48)/SecurityIDSource(22)",
         "refused as the restricted symbol (pre-trade risk, shipped policy)", "decision: risk.restricted_symbol"),
]

START = "<!-- attack-matrix:start (generated by `python -m tests.security.matrix --write docs/security.md`) -->"
END = "<!-- attack-matrix:end -->"


def markdown() -> str:
    lines = [START, "", "| # | attack | fixgw answers | audited as |", "| ---: | --- | --- | --- |"]
    for i, r in enumerate(ROWS, 1):
        lines.append(f"| {i} | {r.attack} | {r.answer} | `{r.audit}` |")
    lines += ["", "Found by review, each staged by its own test in `tests/security/` (own policy, route or fault):",
              "", "| # | attack | fixgw answers | audited as | test |", "| ---: | --- | --- | --- | --- |"]
    for i, h in enumerate(HOLES, len(ROWS) + 1):
        module, _, name = h.test.partition("::")
        lines.append(f"| {i} | {h.attack} | {h.answer} | `{h.audit}` | `{module}.py::{name}` |")
    lines += ["", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--write"] and len(args) == 2:
        path = Path(args[1])
        text = path.read_text()
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        path.write_text(head + markdown() + tail)
        print(f"updated {path}")
        return 0
    print(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
