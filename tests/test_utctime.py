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


def _parse_uncached(value: bytes) -> float | None:
    """The parser as it was before the per-second cache: every check on every call (the reference)."""
    import calendar

    n = len(value)
    if n not in (17, 21, 24, 27):
        return None
    if value[8:9] != b"-" or value[11:12] != b":" or value[14:15] != b":":
        return None
    date, hh, mm, ss = value[0:8], value[9:11], value[12:14], value[15:17]
    if not (date.isdigit() and hh.isdigit() and mm.isdigit() and ss.isdigit()):
        return None
    frac = 0.0
    if n > 17:
        if value[17:18] != b".":
            return None
        digits = value[18:]
        if not digits.isdigit():
            return None
        frac = int(digits) / (10 ** len(digits))
    year, month, day = int(date[0:4]), int(date[4:6]), int(date[6:8])
    hour, minute, sec = int(hh), int(mm), int(ss)
    days = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    if not (1 <= month <= 12 and 1 <= day <= days[month - 1]):
        return None
    if hour > 23 or minute > 59 or sec > 60:
        return None
    if month == 2 and day == 29 and not calendar.isleap(year):
        return None
    return calendar.timegm((year, month, day, hour, minute, sec, 0, 0, 0)) + frac


_TIMESTAMP_BYTES = st.sampled_from(b"0123456789-:. x\xff")


@st.composite
def _timestamps(draw: st.DrawFn) -> bytes:
    """Valid timestamps (any second, 0/3/6/9 digits) and their mutations: a byte changed, cut, or added."""
    t = draw(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
    value = format_utc_timestamp(t, draw(st.sampled_from((0, 3, 6)))) + draw(st.sampled_from((b"", b"000")))
    how = draw(st.sampled_from(("keep", "change", "cut", "add")))
    i = draw(st.integers(0, len(value)))
    b = bytes([draw(_TIMESTAMP_BYTES)])
    if how == "change" and i < len(value):
        value = value[:i] + b + value[i + 1:]
    elif how == "cut":
        value = value[:i]
    elif how == "add":
        value = value[:i] + b + value[i:]
    return value


@given(st.lists(st.one_of(_timestamps(), st.binary(max_size=30)), min_size=1, max_size=20))
def test_cached_parse_equals_the_uncached_parse(values: list[bytes]) -> None:
    # a sequence, so the per-second cache is warm with some prefixes and cold with others
    for value in values:
        got, want = parse_utc_timestamp(value), _parse_uncached(value)
        assert got == want and type(got) is type(want), value
        assert parse_utc_timestamp(value) == want  # a second time: from the cache
