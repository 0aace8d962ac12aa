"""UTCTimestamp(52, 60, 122 ...) parsing and formatting, pure.

Time is passed into the core as a float of seconds since the epoch (``now``);
nothing here reads a clock.
"""

from __future__ import annotations

import calendar
import time

_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_utc_timestamp(value: bytes) -> float | None:
    """``YYYYMMDD-HH:MM:SS[.sss|.ssssss|.sssssssss]`` -> epoch seconds, else None."""
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
    if not (1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]):
        return None
    if hour > 23 or minute > 59 or sec > 60:
        return None
    if month == 2 and day == 29 and not calendar.isleap(year):
        return None
    return calendar.timegm((year, month, day, hour, minute, sec, 0, 0, 0)) + frac


def format_utc_timestamp(now: float, precision: int = 3) -> bytes:
    """Epoch seconds -> UTCTimestamp with ``precision`` fractional digits (0, 3, 6)."""
    whole = int(now)
    tm = time.gmtime(whole)
    base = b"%04d%02d%02d-%02d:%02d:%02d" % (
        tm.tm_year,
        tm.tm_mon,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
    )
    if precision == 0:
        return base
    frac = int((now - whole) * (10**precision))
    if frac >= 10**precision:
        frac = 10**precision - 1
    return b"%s.%0*d" % (base, precision, frac)


def is_utc_date_only(value: bytes) -> bool:
    """``YYYYMMDD`` with a real month and day."""
    if len(value) != 8 or not value.isdigit():
        return False
    month, day = int(value[4:6]), int(value[6:8])
    return 1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]


def is_utc_time_only(value: bytes) -> bool:
    """``HH:MM:SS[.sss...]``."""
    if len(value) < 8 or value[2:3] != b":" or value[5:6] != b":":
        return False
    hh, mm, ss = value[0:2], value[3:5], value[6:8]
    if not (hh.isdigit() and mm.isdigit() and ss.isdigit()):
        return False
    if int(hh) > 23 or int(mm) > 59 or int(ss) > 60:
        return False
    rest = value[8:]
    return rest == b"" or (rest[:1] == b"." and rest[1:].isdigit())
