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
    Row("non_compliant_posture", "trader Logon from a device already non-compliant", "Logon unanswered",
        "logon_refused: device posture is non-compliant"),
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
    Hole("test_lost_orders::test_a_client_store_that_cannot_write_ends_that_session_and_records_the_undelivered_"
         "report",
         "the venue's reports while the client leg's message store cannot write (ENOSPC)",
         "not sent (nothing leaves that a resend could not repeat); that session ends, others trade on",
         "alert: message not delivered (it used to raise out of the audit writer's callback, unrecorded)"),
    Hole("test_pipeline_holes::test_outcome_records_name_the_exchange_sequence_number_under_pipelining",
         "20 pipelined orders", "each outcome names the MsgSeqNum its order was sent with", "outcome: forwarded"),
    Hole("test_pipeline_holes::test_possresend_duplicate_is_not_a_second_order",
         "a forwarded ClOrdID(11) sent again with PossResend(97)=Y", "consumed, not forwarded (FIX 19a)",
         "decision: ignore"),
    Hole("test_policy_holes::test_hole5_the_shipped_policy_catches_every_spelling",
         "`xyz-restricted`, `XYZ-RESTRICTED ` or the instrument by SecurityID(48)/SecurityIDSource(22)",
         "refused as the restricted symbol (pre-trade risk, shipped policy)", "decision: risk.restricted_symbol"),
    Hole("test_logon_holes::test_another_persons_password_and_code_do_not_open_an_identity",
         "risk officer logs on with a trader's certificate using her own valid password and TOTP code",
         "Logon unanswered, closed", "logon_refused: nobody bound to"),
    Hole("test_logon_holes::test_failures_through_one_identity_never_lock_the_person_out_of_another",
         "guessing another person's codes through one's own MFA certificate to lock her out",
         "Logon unanswered; she still logs on through her own identity", "logon_refused: nobody bound to"),
    Hole("test_logon_holes::test_unknown_usernames_are_never_written_verbatim", "a password typed into Username(553)",
         "Logon unanswered; the name kept only as a keyed hash", "mfa: unknown user #"),
    Hole("test_logon_holes::test_full_capture_redacts_passwords_even_split_across_tls_records",
         "Password(554) split across TLS records, NewPassword(925), RawData(96) in a fully captured session",
         "every frame captured with those values REDACTED", "capture: REDACTED"),
    Hole("test_logon_holes::test_a_zone_where_no_rule_can_ever_allow_anything_is_refused_at_connect",
         "quant connects from the development sandbox, where no rule allows it anything", "closed before Logon",
         "connection_refused: identity.reach"),
    Hole("test_logon_holes::test_a_replayed_signed_logon_is_refused",
         "byte-for-byte replay of a signed Logon within the SendingTime window", "Logon unanswered",
         "logon_refused: already used (replay)"),
    Hole("test_logon_holes::test_a_signed_order_replayed_after_a_sequence_reset_is_refused",
         "signed order replayed after a sequence reset", "Reject(3) 373=8 on 89; not carried on",
         "signature_refused: already used (replay)"),
    Hole("test_handshake_flood::test_one_source_flooding_handshakes_does_not_lock_out_other_clients",
         "one source without a certificate opening ~200 TLS handshakes a second",
         "its ClientHellos refused over its own rate; other clients log on", "connections_refused: per source"),
    Hole("test_admin_plane::test_a_crl_revoked_admin_and_posture_agent_are_refused_on_every_endpoint_and_each_refusal_is_audited",
         "admin certificate revoked in the CRL calls every admin endpoint (kill switch, revoke, reinstate, JIT, "
         "requests, reload, /metrics, unknown paths), also over a connection kept alive from before",
         "HTTP 403 on every call; nothing changes", "admin_call: status 403, admin.revoked"),
    Hole("test_admin_plane::test_a_crl_revoked_posture_agent_cannot_push_posture",
         "posture agent revoked in the CRL pushes posture", "HTTP 403; posture unchanged",
         "admin_call: status 403, admin.revoked"),
    Hole("test_admin_plane::test_one_administrator_alone_cannot_lift_the_kill_switch",
         "one administrator turns the global kill switch off and approves it",
         "202 request, kept on; self-approval 409; a second administrator lifts it",
         "admin_call: kill_switch_off, status 409"),
    Hole("test_admin_plane::test_one_administrator_alone_cannot_revoke_the_other_administrators",
         "a rogue administrator revokes another administrator",
         "202 request, target unaffected; self- and target-approval 409; the request dies with its requester",
         "admin_call: revoke, status 409"),
    Hole("test_admin_plane::test_one_administrator_alone_cannot_reinstate",
         "one administrator reinstates a revoked identity", "202 request; still refused until a second approves",
         "admin_call: reinstate, status 409"),
    Hole("test_audit_tamper::test_records_after_the_last_checkpoint_removed_and_the_rest_rechained_fail",
         "audit records after a signed checkpoint removed, the rest re-chained and padded",
         "verify exit 1: open tail; with --allow-open-tail the anchor mismatches", "(offline) verify: open tail"),
    Hole("test_audit_tamper::test_every_segment_deleted_fails", "every audit segment deleted", "verify exit 1",
         "(offline) verify: no records"),
    Hole("test_audit_tamper::test_the_newest_segment_deleted_fails", "the newest audit segment deleted",
         "verify exit 1 naming the chain", "(offline) verify: without the audit_closed record"),
    Hole("test_audit_tamper::test_a_forged_chain_with_no_checkpoint_fails",
         "a worker's chain replaced by a consistent forgery with no checkpoint",
         "verify exit 1, also with --allow-open-tail", "(offline) verify: no signed checkpoint"),
    Hole("test_audit_tamper::test_one_workers_chain_deleted_fails", "one worker's audit chain deleted",
         "verify exit 1 naming the missing chain", "(offline) verify: chain worker-1 is missing"),
    Hole("test_audit_tamper::test_the_verifying_key_is_never_taken_from_beside_the_data",
         "rewritten stream with an attacker's audit.pub beside it",
         "never reported as signed: without --pubkey only the links are checked, and it says so; with the "
         "auditor's key, exit 1", "(offline) verify: NOT checked / no signed checkpoint"),
    Hole("test_audit_tamper::test_a_chain_cut_back_to_a_signed_checkpoint_fails_against_the_anchor_even_when_open_tails_are_allowed",
         "a chain cut back to an earlier signed checkpoint", "verify exit 1 against the kept anchor",
         "(offline) verify: before the anchored head"),
    Hole("test_audit_output::test_table_output_shows_terminal_escape_sequences_escaped",
         "ClOrdID(11) carrying terminal escape sequences", "recorded verbatim; shown escaped (\\x1b)",
         "decision: cl_ord_id verbatim"),
    Hole("test_audit_output::test_csv_output_neutralises_spreadsheet_formulas",
         "ClOrdID(11) that is a spreadsheet formula (= + - @ tab)", "CSV cell prefixed with '",
         "decision: cl_ord_id verbatim"),
    Hole("test_audit_output::test_a_reader_that_stops_early_ends_the_query_quietly",
         "fixgw audit query piped into head", "exit 0, no BrokenPipe traceback", "(offline) none"),
    Hole("test_feed_holes::test_bad_posture_input_is_refused_and_the_watch_goes_on",
         "posture file as a JSON array, with NaN, a non-UTF-8 byte, or asserted_at \"soon\"",
         "file or entry refused, last good posture stays; the next good change still logs a session out",
         "alert: posture ... is not epoch seconds"),
    Hole("test_feed_holes::test_bad_denylist_byte_is_refused_and_the_watch_goes_on",
         "a non-UTF-8 byte in the denylist", "refused, last good list stays; the next good denylist cuts the session",
         "alert: denylist line 2 byte 0xff is not UTF-8"),
    Hole("test_feed_holes::test_bad_kill_switch_and_jit_input_keep_the_last_good_state",
         "kill switch \"global\": \"no\", identities as a string, an array or broken JSON; JIT grant \"tomorrow\"",
         "refused; the kill switch stays on, no grant", "alert: kill_switch global must be true or false"),
    Hole("test_feed_holes::test_a_watch_step_that_raises_does_not_stop_the_watch",
         "a watch tick that raises", "alerted; the watch keeps going and applies the next change",
         "alert: watch RuntimeError"),
    Hole("test_feed_holes::test_a_stale_posture_feed_raises_an_alert_until_it_is_rewritten",
         "posture agent stops rewriting the posture file", "alert once past [posture] max_age, fresh again on rewrite",
         "alert: posture not rewritten"),
    Hole("test_feed_holes::test_future_dated_posture_does_not_outrank_a_non_compliant_push",
         "posture asserted ten years ahead, then a non-compliant push", "clamped; the push logs the session out",
         "alert: in the future; session_revoked: non-compliant"),
    Hole("test_feed_holes::test_an_older_crl_is_refused_and_the_revoked_certificate_stays_refused",
         "an older, validly signed CRL written over the newer one", "refused; the revoked certificate stays refused",
         "alert: crl CRLNumber 1 is lower than 2"),
    Hole("test_feed_holes::test_a_crl_past_its_next_update_raises_an_alert",
         "CRL past its nextUpdate", "alert once; the CRL stays in use", "alert: crl past its nextUpdate"),
    Hole("test_feed_holes::test_stale_crl_refuse_fails_closed_and_a_rollback_is_refused_after_a_restart",
         "CRL past nextUpdate with stale_crl = \"refuse\"; an older CRL on disk at restart",
         "Logout, connections closed until a fresh CRL; the restart exits 2",
         "connection_refused: past its nextUpdate"),
    Hole("test_feed_holes::test_an_older_signed_policy_is_refused_and_the_refusal_survives_a_restart",
         "an earlier signed policy with its .sig (or one without version) written back",
         "refused; the newer policy stays; a restart on the old one exits 2",
         "alert: policy version 1 is older than version 2"),
    Hole("test_feed_holes::test_jit_grant_needs_two_people_and_break_glass_is_audited",
         "`fixgw jit grant` with no second approver",
         "exit 2 naming the two-person flow; `fixgw jit break-glass` counts only once audited",
         "jit_break_glass: by, reason"),
    Hole("test_budget_holes::test_a_refused_flood_costs_a_bounded_amount_of_disk_and_logs_the_identity_out",
         "2,000 orders from an identity the policy lets send nothing, every 10th with a 20 KB Symbol(55)",
         "refusal_burst answered (echoes <= 256 bytes), then Logout naming the refusal budget; the rest not decided; "
         "a new Logon cut at its first message", "refusal_budget_exhausted, refused_unprocessed"),
    Hole("test_budget_holes::test_a_value_the_peer_chooses_is_capped_in_event_records_too",
         "Logon with a 30 KB SenderCompID(49)", "Logon unanswered, closed",
         "logon_refused: reason cut at 4096 chars (and each log value at 1,024)"),
    Hole("test_budget_holes::test_malformed_messages_and_garbled_frames_cost_the_same_budget",
         "2,000 messages the session layer refuses itself (OrderQty(38) not a number) and garbled frames, "
         "from an identity the policy allows nothing",
         "Reject(3) only as far as the malformed-message budget goes, then Logout naming it; bounded disk",
         "session_reject, frame_dropped, refusal_budget_exhausted"),
    Hole("test_handoff_sockets::test_a_stream_refused_in_connection_made_leaves_no_socket_owning_its_old_fd",
         "with workers = 2, a revoked identity's connection handed to its owner and refused there at once",
         "the refusal closes only that connection (it used to leave a socket object whose finalizer closed "
         "the descriptor a later admin or client connection reused)", "connection_refused"),
    Hole("test_budget_holes::test_a_burst_of_cancels_after_the_order_budget_is_spent_all_pass",
         "8 cancels at once after 8 resting orders used the whole order budget",
         "all 8 cancelled; a further cancel flood throttled", "decision: risk.cancel_throttle"),
    Hole("test_budget_holes::test_a_restart_refuses_a_duplicate_clordid_and_still_counts_open_orders",
         "a ClOrdID(11) reused, and a 4th order with 3 open, after a SIGTERM or SIGKILL restart",
         "ExecutionReport 39=8; nothing reaches the exchange",
         "risk_rebuilt, decision: risk.duplicate_clordid / risk.max_open_orders"),
    Hole("test_workers_posture::test_a_batch_over_16_kib_is_applied_by_every_worker_before_the_200",
         "posture batch over 16 KiB pushed to worker 0 for a session on worker 1",
         "200 only after worker 1 applied it; its session logged out", "posture_shared, session_revoked"),
    Hole("test_workers_posture::test_a_worker_that_cannot_apply_a_push_makes_it_a_503_naming_it",
         "posture push while another worker is stopped (SIGSTOP)", "503 naming the worker; retry 200",
         "admin_call: workers_not_reached"),
    Hole("test_workers_posture::test_a_batch_above_the_body_limit_is_413_naming_the_limit_and_audited",
         "posture batch above the 1 MiB request limit", "413 naming the limit (limit_bytes)",
         "admin_call: status 413"),
    Hole("test_session_floods::test_a_resend_request_flood_leaves_other_sessions_fast_and_memory_bounded",
         "~15 KB of ResendRequest(2) for 1..0 from a session holding 20,000 stored messages",
         "the first 10 served a chunk at a time, then Logout naming ResendRequest(2); other sessions keep their "
         "latency, memory bounded", "logout: ResendRequest(2)"),
    Hole("test_session_floods::test_a_peer_that_asks_for_everything_and_reads_nothing_costs_at_most_a_write_buffer",
         "ResendRequest(2) for 200,000 messages from a peer that never reads",
         "resend paused at the write buffer (memory bounded), resumed when the peer reads",
         "none: throttled, not refused"),
    Hole("test_session_floods::test_a_gap_that_is_never_filled_holds_bounded_memory_and_ends_in_a_logout",
         "MsgSeqNum(34) gap never filled, 60 MB of frames above it (a third invalid)",
         "held within max_queue_bytes (invalid frames never), Logout after gap_timeout", "logout: gap not filled"),
    Hole("test_session_floods::test_a_message_without_msg_seq_num_gets_a_logout_and_the_connection_closes",
         "order without MsgSeqNum(34), or with MsgSeqNum(34)=-10", "Logout naming MsgSeqNum(34), connection closed",
         "logout: MsgSeqNum(34)"),
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
