"""FIX vocabulary used by the core: tag numbers, message types, reject reasons.

Names are spelled as the FIX specification spells them so the code greps
against the spec. Only what the session layer and the gateway need lives
here; the full vocabulary of a FIX version comes from its dictionary.
"""

from __future__ import annotations

from typing import Final

# --- Standard header / trailer --------------------------------------------
BeginString: Final = 8
BodyLength: Final = 9
MsgType: Final = 35
MsgSeqNum: Final = 34
SenderCompID: Final = 49
TargetCompID: Final = 56
SenderSubID: Final = 50
TargetSubID: Final = 57
SendingTime: Final = 52
PossDupFlag: Final = 43
PossResend: Final = 97
OrigSendingTime: Final = 122
OnBehalfOfCompID: Final = 115
DeliverToCompID: Final = 128
OnBehalfOfSubID: Final = 116
DeliverToSubID: Final = 129
OnBehalfOfLocationID: Final = 144
DeliverToLocationID: Final = 145
LastMsgSeqNumProcessed: Final = 369
ApplVerID: Final = 1128
CheckSum: Final = 10
SignatureLength: Final = 93
Signature: Final = 89

# --- Bounds -----------------------------------------------------------------
#: The largest sequence number (MsgSeqNum(34), NewSeqNo(36), BeginSeqNo(7),
#: EndSeqNo(16)) a session holds: 2**31 - 1.  The FIX specification leaves
#: SeqNum unbounded, but QuickFIX keeps it in a signed 32-bit int (C++
#: ``typedef int SEQNUM``, QuickFIX/J an ``int``) and so do most venues, so no
#: real counterparty goes beyond it; at 1,000 messages a second it lasts 24
#: days without a reset.  Peer input beyond it gets a FIX answer (Reject(3)
#: 373=5 or a Logout), and the stores refuse it outright.
MAX_SEQ_NUM: Final = 2**31 - 1
#: The longest heartbeat interval a Logon may ask for, in seconds: beyond an
#: hour a dead connection would go unnoticed for hours (2.4 x HeartBtInt(108)).
MAX_HEART_BT_INT: Final = 3600

# --- Session-level body fields -------------------------------------------
BeginSeqNo: Final = 7
EndSeqNo: Final = 16
NewSeqNo: Final = 36
GapFillFlag: Final = 123
RefSeqNum: Final = 45
RefTagID: Final = 371
RefMsgType: Final = 372
SessionRejectReason: Final = 373
BusinessRejectReason: Final = 380
BusinessRejectRefID: Final = 379
Text: Final = 58
TestReqID: Final = 112
EncryptMethod: Final = 98
HeartBtInt: Final = 108
ResetSeqNumFlag: Final = 141
DefaultApplVerID: Final = 1137
Username: Final = 553
Password: Final = 554

# --- Application fields the gateway and simulator look at ----------------
Account: Final = 1
ClOrdID: Final = 11
OrigClOrdID: Final = 41
OrderID: Final = 37
ExecID: Final = 17
ExecType: Final = 150
OrdStatus: Final = 39
Symbol: Final = 55
Side: Final = 54
OrderQty: Final = 38
Price: Final = 44
OrdType: Final = 40
LeavesQty: Final = 151
CumQty: Final = 14
AvgPx: Final = 6
LastQty: Final = 32
LastPx: Final = 31
TransactTime: Final = 60
OrdRejReason: Final = 103
CxlRejReason: Final = 102
CxlRejResponseTo: Final = 434
QuoteReqID: Final = 131
QuoteID: Final = 117
BidPx: Final = 132
OfferPx: Final = 133
HandlInst: Final = 21
ExecTransType: Final = 20

# --- Message types (MsgType(35) values) ------------------------------------
MT_HEARTBEAT: Final = b"0"
MT_TEST_REQUEST: Final = b"1"
MT_RESEND_REQUEST: Final = b"2"
MT_REJECT: Final = b"3"
MT_SEQUENCE_RESET: Final = b"4"
MT_LOGOUT: Final = b"5"
MT_LOGON: Final = b"A"
MT_EXECUTION_REPORT: Final = b"8"
MT_ORDER_CANCEL_REJECT: Final = b"9"
MT_NEW_ORDER_SINGLE: Final = b"D"
MT_ORDER_CANCEL_REQUEST: Final = b"F"
MT_ORDER_CANCEL_REPLACE_REQUEST: Final = b"G"
MT_QUOTE_REQUEST: Final = b"R"
MT_QUOTE: Final = b"S"
MT_BUSINESS_MESSAGE_REJECT: Final = b"j"
MT_SECURITY_DEFINITION: Final = b"d"
MT_EMAIL: Final = b"C"

#: Session-level message types: they never cross from one leg to the other.
ADMIN_MSG_TYPES: Final = frozenset(
    {
        MT_HEARTBEAT,
        MT_TEST_REQUEST,
        MT_RESEND_REQUEST,
        MT_REJECT,
        MT_SEQUENCE_RESET,
        MT_LOGOUT,
        MT_LOGON,
    }
)

# --- SessionRejectReason(373) codes and the specification's wording ------
SRR_INVALID_TAG_NUMBER: Final = 0
SRR_REQUIRED_TAG_MISSING: Final = 1
SRR_TAG_NOT_DEFINED_FOR_MSG_TYPE: Final = 2
SRR_UNDEFINED_TAG: Final = 3
SRR_TAG_SPECIFIED_WITHOUT_VALUE: Final = 4
SRR_VALUE_INCORRECT: Final = 5
SRR_INCORRECT_DATA_FORMAT: Final = 6
SRR_DECRYPTION_PROBLEM: Final = 7
SRR_SIGNATURE_PROBLEM: Final = 8
SRR_COMPID_PROBLEM: Final = 9
SRR_SENDING_TIME_ACCURACY: Final = 10
SRR_INVALID_MSGTYPE: Final = 11
SRR_XML_VALIDATION_ERROR: Final = 12
SRR_TAG_APPEARS_MORE_THAN_ONCE: Final = 13
SRR_TAG_OUT_OF_ORDER: Final = 14
SRR_REPEATING_GROUP_FIELDS_OUT_OF_ORDER: Final = 15
SRR_INCORRECT_NUMINGROUP_COUNT: Final = 16
SRR_NON_DATA_VALUE_INCLUDES_DELIMITER: Final = 17
SRR_OTHER: Final = 99

#: Text(58) for each SessionRejectReason, worded as the FIX specification
#: (and therefore the acceptance scripts) word it.
SESSION_REJECT_TEXT: Final[dict[int, str]] = {
    SRR_INVALID_TAG_NUMBER: "Invalid tag number",
    SRR_REQUIRED_TAG_MISSING: "Required tag missing",
    SRR_TAG_NOT_DEFINED_FOR_MSG_TYPE: "Tag not defined for this message type",
    SRR_UNDEFINED_TAG: "Undefined Tag",
    SRR_TAG_SPECIFIED_WITHOUT_VALUE: "Tag specified without a value",
    SRR_VALUE_INCORRECT: "Value is incorrect (out of range) for this tag",
    SRR_INCORRECT_DATA_FORMAT: "Incorrect data format for value",
    SRR_DECRYPTION_PROBLEM: "Decryption problem",
    SRR_SIGNATURE_PROBLEM: "Signature problem",
    SRR_COMPID_PROBLEM: "CompID problem",
    SRR_SENDING_TIME_ACCURACY: "SendingTime accuracy problem",
    SRR_INVALID_MSGTYPE: "Invalid MsgType",
    SRR_XML_VALIDATION_ERROR: "XML Validation error",
    SRR_TAG_APPEARS_MORE_THAN_ONCE: "Tag appears more than once",
    SRR_TAG_OUT_OF_ORDER: "Tag specified out of required order",
    SRR_REPEATING_GROUP_FIELDS_OUT_OF_ORDER: "Repeating group fields out of order",
    SRR_INCORRECT_NUMINGROUP_COUNT: "Incorrect NumInGroup count for repeating group",
    SRR_NON_DATA_VALUE_INCLUDES_DELIMITER: "Non Data value includes field delimiter",
    SRR_OTHER: "Other",
}

# --- BusinessRejectReason(380) -------------------------------------------
BRR_OTHER: Final = 0
BRR_UNKNOWN_ID: Final = 1
BRR_UNKNOWN_SECURITY: Final = 2
BRR_UNSUPPORTED_MESSAGE_TYPE: Final = 3
BRR_APPLICATION_NOT_AVAILABLE: Final = 4
BRR_CONDITIONALLY_REQUIRED_FIELD_MISSING: Final = 5
BRR_NOT_AUTHORIZED: Final = 6
BRR_DELIVERTO_FIRM_NOT_AVAILABLE: Final = 7

BUSINESS_REJECT_TEXT: Final[dict[int, str]] = {
    BRR_OTHER: "Other",
    BRR_UNKNOWN_ID: "Unknown ID",
    BRR_UNKNOWN_SECURITY: "Unknown Security",
    BRR_UNSUPPORTED_MESSAGE_TYPE: "Unsupported Message Type",
    BRR_APPLICATION_NOT_AVAILABLE: "Application not available",
    BRR_CONDITIONALLY_REQUIRED_FIELD_MISSING: "Conditionally Required Field Missing",
    BRR_NOT_AUTHORIZED: "Not authorized",
    BRR_DELIVERTO_FIRM_NOT_AVAILABLE: "DeliverTo firm not available at this time",
}

#: Length field -> the data field whose byte length it carries. Data fields
#: may contain SOH, so the codec must read them by length, not by delimiter.
DATA_LENGTH_TAGS: Final[dict[int, int]] = {
    90: 91,  # SecureDataLen -> SecureData
    93: 89,  # SignatureLength -> Signature
    95: 96,  # RawDataLength -> RawData
    212: 213,  # XmlDataLen -> XmlData
    348: 349,  # EncodedIssuerLen -> EncodedIssuer
    350: 351,  # EncodedSecurityDescLen -> EncodedSecurityDesc
    352: 353,  # EncodedListExecInstLen -> EncodedListExecInst
    354: 355,  # EncodedTextLen -> EncodedText
    356: 357,  # EncodedSubjectLen -> EncodedSubject
    358: 359,  # EncodedHeadlineLen -> EncodedHeadline
    360: 361,  # EncodedAllocTextLen -> EncodedAllocText
    362: 363,  # EncodedUnderlyingIssuerLen -> EncodedUnderlyingIssuer
    364: 365,  # EncodedUnderlyingSecurityDescLen -> EncodedUnderlyingSecurityDesc
    445: 446,  # EncodedListStatusTextLen -> EncodedListStatusText
    618: 619,  # EncodedLegIssuerLen -> EncodedLegIssuer
    621: 622,  # EncodedLegSecurityDescLen -> EncodedLegSecurityDesc
}

#: Field names used in error texts (`MsgSeqNum(34)`); the dictionary has the
#: rest, this covers what the core names without one.
FIELD_NAMES: Final[dict[int, str]] = {
    BeginString: "BeginString",
    BodyLength: "BodyLength",
    MsgType: "MsgType",
    MsgSeqNum: "MsgSeqNum",
    SenderCompID: "SenderCompID",
    TargetCompID: "TargetCompID",
    SendingTime: "SendingTime",
    PossDupFlag: "PossDupFlag",
    OrigSendingTime: "OrigSendingTime",
    CheckSum: "CheckSum",
    BeginSeqNo: "BeginSeqNo",
    EndSeqNo: "EndSeqNo",
    NewSeqNo: "NewSeqNo",
    GapFillFlag: "GapFillFlag",
    HeartBtInt: "HeartBtInt",
    ResetSeqNumFlag: "ResetSeqNumFlag",
    DefaultApplVerID: "DefaultApplVerID",
    EncryptMethod: "EncryptMethod",
    SignatureLength: "SignatureLength",
    Signature: "Signature",
}


def field_name(tag: int) -> str:
    """`Name(tag)` as error texts spell a field, e.g. ``MsgSeqNum(34)``."""
    name = FIELD_NAMES.get(tag)
    return f"{name}({tag})" if name else f"tag {tag}"

#: Header tags of FIX.4.2 - FIXT.1.1: a stored frame is split at these when
#: it is resent (header rebuilt with PossDupFlag(43) / OrigSendingTime(122)).
STANDARD_HEADER_TAGS: Final = frozenset(
    {8, 9, 35, 49, 56, 115, 128, 90, 91, 34, 50, 142, 57, 143, 116, 144, 129, 145,
     43, 97, 52, 122, 212, 213, 347, 369, 627, 628, 629, 630, 1128, 1129, 1156}
)

#: Header fields every session writes itself; all other header fields of an
#: application message (routing, PossResend ...) are carried across legs.
SESSION_HEADER_TAGS: Final = frozenset(
    {BeginString, BodyLength, MsgType, MsgSeqNum, SenderCompID, TargetCompID, SendingTime,
     PossDupFlag, OrigSendingTime, LastMsgSeqNumProcessed, 90, 91}
)

#: Reverse routing for replies the session generates (Reject(3)).
REVERSE_ROUTE: Final[dict[int, int]] = {
    OnBehalfOfCompID: DeliverToCompID,
    DeliverToCompID: OnBehalfOfCompID,
    OnBehalfOfSubID: DeliverToSubID,
    DeliverToSubID: OnBehalfOfSubID,
    OnBehalfOfLocationID: DeliverToLocationID,
    DeliverToLocationID: OnBehalfOfLocationID,
}
