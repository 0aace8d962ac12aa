"""What a FIX MsgType does, by kind: the scopes of the kill switch, pre-trade risk and read-only.

* ``order`` — creates or changes market exposure: blocked by the kill
  switch, given every pre-trade risk check, refused to read-only sessions;
* ``cancel`` — reduces exposure: passes the kill switch;
* ``read`` — a query a read-only session may send;
* ``other`` — everything else; a write, as far as read-only is concerned.

The table below classifies the MsgTypes of FIX.4.0 to FIX.5.0SP2 (names as
the specification spells them).  A policy action may declare ``kind`` for
the MsgTypes it lists; that is how a venue's own MsgTypes (``U1`` ...) get
a kind.  A declaration may make a FIX MsgType stricter, never looser
(``KIND_RANK``): a FIX order type is an order whatever a policy says.  The
loader refuses a downgrade, and :func:`kind_of` ignores one.

Pre-trade risk finds instruments, sizes, prices and ClOrdIDs by tag in
every repeating-group entry, so it can check every FIX order type
(``RISK_CHECKABLE``).  It cannot check a venue's own order type (it does not
know where that type carries them): a policy that allows one is refused at
load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

ORDER: Final = "order"
CANCEL: Final = "cancel"
READ: Final = "read"
OTHER: Final = "other"
KINDS: Final = (ORDER, CANCEL, READ, OTHER)
#: how much a kind lets through, least first: a declaration may only keep or raise a FIX MsgType's rank
KIND_RANK: Final = {READ: 0, CANCEL: 1, OTHER: 2, ORDER: 3}

#: FIX MsgTypes that create or change exposure
ORDER_TYPES: Final = frozenset({
    b"D",   # NewOrderSingle
    b"G",   # OrderCancelReplaceRequest
    b"E",   # NewOrderList
    b"AB",  # NewOrderMultileg
    b"AC",  # MultilegOrderCancelReplace
    b"R",   # QuoteRequest
    b"S",   # Quote
    b"i",   # MassQuote
    b"s",   # NewOrderCross
    b"t",   # CrossOrderCancelReplaceRequest
    b"AJ",  # QuoteResponse (hits or lifts a quote)
    b"DJ",  # MassOrder (FIX.5.0SP2)
})
CANCEL_TYPES: Final = frozenset({
    b"F",   # OrderCancelRequest
    b"q",   # OrderMassCancelRequest
    b"u",   # CrossOrderCancelRequest
    b"Z",   # QuoteCancel
    b"K",   # ListCancelRequest
})
READ_TYPES: Final = frozenset({
    b"V",   # MarketDataRequest
    b"AD",  # TradeCaptureReportRequest
    b"a",   # QuoteStatusRequest
    b"x",   # SecurityListRequest
    b"c",   # SecurityDefinitionRequest
    b"e",   # SecurityStatusRequest
    b"H",   # OrderStatusRequest
    b"AF",  # OrderMassStatusRequest
    b"g",   # TradingSessionStatusRequest
    b"v",   # SecurityTypeRequest
    b"BB",  # CollateralInquiry
    b"M",   # ListStatusRequest
    b"z",   # DerivativeSecurityListRequest
    b"AN",  # RequestForPositions
    b"AV",  # SettlementInstructionRequest
    b"BC",  # NetworkCounterpartySystemStatusRequest
    b"BH",  # ConfirmationRequest
    b"BI",  # TradingSessionListRequest
    b"BT",  # MarketDefinitionRequest
    b"BW",  # ApplicationMessageRequest
    b"CF",  # PartyDetailsListRequest
    b"CH",  # MarginRequirementInquiry
    b"CL",  # PartyRiskLimitsRequest
    b"CN",  # SecurityMassStatusRequest
    b"CU",  # PartyEntitlementsRequest
    b"DO",  # MarketDataStatisticsRequest
})
#: every MsgType of FIX.4.0 to FIX.5.0SP2 and FIXT.1.1 (QuickFIX's dictionaries); anything else is a venue's own
FIX_MSG_TYPES: Final = frozenset(s.encode() for s in """
0 1 2 3 4 5 6 7 8 9 A B C D E F G H J K L M N P Q R S T V W X Y Z a b c d e f g h i j k l m n o p q
r s t u v w x y z AA AB AC AD AE AF AG AH AI AJ AK AL AM AN AO AP AQ AR AS AT AU AV AW AX AY AZ BA
BB BC BD BE BF BG BH BI BJ BK BL BM BN BO BP BQ BR BS BT BU BV BW BX BY BZ CA CB CC CD CE CF CG CH
CI CJ CK CL CM CN CO CQ CR CS CT CU CV CW CX CY CZ DA DB DC DD DE DF DG DH DI DJ DK DL DM DN DO DP
DQ DR DS DT DU DV DW DX DY DZ EA EB
""".split())
#: ORDER-kind MsgTypes whose instruments, sizes, prices and ClOrdIDs the risk engine finds (by tag)
RISK_CHECKABLE: Final = ORDER_TYPES

#: the FIX table: MsgType -> kind (absent: other)
TABLE: Final[Mapping[bytes, str]] = {
    **{mt: READ for mt in READ_TYPES}, **{mt: CANCEL for mt in CANCEL_TYPES}, **{mt: ORDER for mt in ORDER_TYPES}}

#: names for messages about the classified MsgTypes
NAMES: Final[Mapping[bytes, str]] = {
    b"D": "NewOrderSingle", b"G": "OrderCancelReplaceRequest", b"E": "NewOrderList", b"AB": "NewOrderMultileg",
    b"AC": "MultilegOrderCancelReplace", b"R": "QuoteRequest", b"S": "Quote", b"i": "MassQuote",
    b"s": "NewOrderCross", b"t": "CrossOrderCancelReplaceRequest", b"AJ": "QuoteResponse", b"DJ": "MassOrder",
    b"F": "OrderCancelRequest", b"q": "OrderMassCancelRequest", b"u": "CrossOrderCancelRequest",
    b"Z": "QuoteCancel", b"K": "ListCancelRequest",
}


def table_kind(msg_type: bytes) -> str:
    """The kind the FIX table gives ``msg_type`` (a venue's own MsgType: other)."""
    return TABLE.get(msg_type, OTHER)


def kind_of(msg_type: bytes, overrides: Mapping[bytes, str] | None = None) -> str:
    """The kind of ``msg_type``: a policy's declaration where it is no looser than the FIX table."""
    kind = TABLE.get(msg_type, OTHER)
    if overrides:
        declared = overrides.get(msg_type)
        if declared is not None and (msg_type not in FIX_MSG_TYPES or KIND_RANK[declared] >= KIND_RANK[kind]):
            return declared
    return kind


def downgrade(msg_type: bytes, declared: str) -> str | None:
    """Why declaring ``msg_type`` as ``declared`` would loosen a FIX MsgType; None when it does not."""
    if msg_type not in FIX_MSG_TYPES:
        return None
    kind = TABLE.get(msg_type, OTHER)
    if KIND_RANK[declared] >= KIND_RANK[kind]:
        return None
    name = NAMES.get(msg_type)
    what = f"MsgType(35)={msg_type.decode('latin-1')}" + (f" ({name})" if name else "")
    return f"{what} is a FIX {kind} type; kind {declared!r} would let it past checks that apply to {kind}s"


def merged(overrides: Mapping[bytes, str]) -> dict[bytes, str]:
    """The FIX table with a policy's declarations (a downgrade ignored): one lookup per message."""
    out = dict(TABLE)
    out.update({mt: kind_of(mt, overrides) for mt in overrides})
    return out
