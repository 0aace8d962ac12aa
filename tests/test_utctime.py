from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.fix.utctime import format_utc_timestamp, parse_utc_timestamp


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_format_matches_the_c_library_and_parses_back(t: float) -> None:
    whole = int(t // 1)
    assert format_utc_timestamp(t, 0) == time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(whole)).encode()
    parsed = parse_utc_timestamp(format_utc_timestamp(t, 6))
    assert parsed is not None and abs(parsed - t) < 1e-5


def test_invalid_timestamps_are_rejected() -> None:
    for bad in (b"20040415", b"20240230-00:00:00", b"20240101-24:00:00", b"20240101 00:00:00", b"2024010100:00:00"):
        assert parse_utc_timestamp(bad) is None
