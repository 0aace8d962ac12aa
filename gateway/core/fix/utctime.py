"""UTCTimestamp(52, 60, 122 ...) parsing and formatting, pure.

Time is passed into the core as a float of seconds since the epoch (``now``);
nothing here reads a clock.
"""

from __future__ import annotations

import calendar

_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


#: whole-second prefix ``YYYYMMDD-HH:MM:SS`` -> epoch seconds, for the few seconds in flight: every
#: message carries SendingTime(52) (and most a TransactTime(60)) of the current second, each read two or
#: three times (validation, latency check, replay window).  Bounded: cleared when full.  Only valid
#: prefixes are kept, so a hit needs no checks; the result is the same as the full parse.
_SECONDS: dict[bytes, int] = {}
_SECONDS_MAX = 64


def parse_utc_timestamp(value: bytes) -> float | None:
    """``YYYYMMDD-HH:MM:SS[.sss|.ssssss|.sssssssss]`` -> epoch seconds, else None."""
    n = len(value)
    if n not in (17, 21, 24, 27):
        return None
    head = value[:17] if n > 17 else value
    whole = _SECONDS.get(head)
    if whole is None:
        whole = _parse_second(head)
        if whole is None:
            return None
        if len(_SECONDS) >= _SECONDS_MAX:
            _SECONDS.clear()
        _SECONDS[head] = whole
    frac = 0.0
    if n > 17:
        if value[17:18] != b".":
            return None
        digits = value[18:]
        if not digits.isdigit():
            return None
        frac = int(digits) / (10 ** len(digits))
    return whole + frac


def _parse_second(value: bytes) -> int | None:
    """``YYYYMMDD-HH:MM:SS`` (exactly) -> epoch seconds, else None."""
    if value[8:9] != b"-" or value[11:12] != b":" or value[14:15] != b":":
        return None
    date, hh, mm, ss = value[0:8], value[9:11], value[12:14], value[15:17]
    if not (date.isdigit() and hh.isdigit() and mm.isdigit() and ss.isdigit()):
        return None
    year, month, day = int(date[0:4]), int(date[4:6]), int(date[6:8])
    hour, minute, sec = int(hh), int(mm), int(ss)
    if not (1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]):
        return None
    if hour > 23 or minute > 59 or sec > 60:
        return None
    if month == 2 and day == 29 and not calendar.isleap(year):
        return None
    return calendar.timegm((year, month, day, hour, minute, sec, 0, 0, 0))


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """Days since 1970-01-01 -> (year, month, day), proleptic Gregorian."""
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


_last_second: list[object] = [None, b""]  # one-entry cache: whole second -> its text


def format_utc_timestamp(now: float, precision: int = 3) -> bytes:
    """Epoch seconds -> UTCTimestamp with ``precision`` fractional digits (0, 3, 6)."""
    whole = int(now // 1)
    if _last_second[0] == whole:
        base = _last_second[1]
        assert isinstance(base, bytes)
    else:
        days, rem = divmod(whole, 86400)
        year, month, day = _civil_from_days(days)
        base = b"%04d%02d%02d-%02d:%02d:%02d" % (year, month, day, rem // 3600, rem // 60 % 60, rem % 60)
        _last_second[0], _last_second[1] = whole, base
    if precision == 0:
        return base
    scale = 10**precision
    frac = int((now - whole) * scale)
    if frac >= scale:
        frac = scale - 1
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
