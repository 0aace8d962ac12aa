"""The attack matrix: each row is one attack, the answer fixgw must give, and the audit record that proves it.

``tests/security/test_attack_matrix.py`` has one test per row (``test_<id>``)
and asserts, for every row: refused as described, audited with the reason,
nothing from the attacker reached the exchange, and a bystander session that
was logged on throughout still trades.  The README's table is generated from
this list (``python -m tests.security.matrix --write README.md``) and checked
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

START = "<!-- attack-matrix:start (generated by `python -m tests.security.matrix --write README.md`) -->"
END = "<!-- attack-matrix:end -->"


def markdown() -> str:
    lines = [START, "", "| # | attack | fixgw answers | audited as |", "| ---: | --- | --- | --- |"]
    for i, r in enumerate(ROWS, 1):
        lines.append(f"| {i} | {r.attack} | {r.answer} | `{r.audit}` |")
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
