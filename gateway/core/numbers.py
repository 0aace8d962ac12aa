"""One strict grammar for the FIX numbers a check reads: Qty, Price, Amt, float.

The FIX specification defines these as "a sequence of digits with optional
decimal point and sign character": ``-``, ``0``-``9`` and ``.``, nothing
else.  Python's ``float()`` reads far more — ``nan``, ``inf``, ``1e3``,
``1_000``, ``+5``, surrounding spaces — and a NaN compares false with every
bound, so a check written ``qty > limit`` lets it through.  Every predicate
and risk check therefore reads numbers through :func:`parse_decimal`, which
accepts exactly::

    -?(digits[.digits?] | .digits)        at most MAX_DECIMAL_LEN bytes

(so ``5``, ``-5``, ``002000.00``, ``5.`` and ``.5``) and returns a finite
float, or ``None`` for anything else.  The length bound keeps the result
finite (at most 32 digits) and the work constant.  Whether a value must also
be positive is the caller's rule: quantities and prices must be.
"""

from __future__ import annotations

#: longest value accepted (FIX engines send at most ~20 significant digits)
MAX_DECIMAL_LEN = 32


def parse_decimal(value: bytes) -> float | None:
    """The FIX decimal in ``value`` as a finite float; ``None`` when it is not one."""
    if value.isdigit():  # the common case, an unsigned integer quantity (isdigit on bytes is ASCII only)
        return float(value) if len(value) <= MAX_DECIMAL_LEN else None
    if len(value) > MAX_DECIMAL_LEN:
        return None
    whole, dot, frac = (value[1:] if value[:1] == b"-" else value).partition(b".")
    if dot:
        if not (whole or frac) or (whole and not whole.isdigit()) or (frac and not frac.isdigit()):
            return None
    elif not whole.isdigit():
        return None
    return float(value)


def positive(value: bytes) -> float | None:
    """``value`` as a number > 0, or ``None`` (not a FIX decimal, zero or negative).

    The same grammar, read for the hot path: a positive decimal has no sign,
    so it is digits with at most one ``.`` — one C-level ``replace`` and
    ``isdigit`` instead of the general parse (equal to
    ``parse_decimal(value)`` when that is > 0, and ``None`` otherwise).
    """
    if len(value) <= MAX_DECIMAL_LEN and value.replace(b".", b"", 1).isdigit():
        return float(value) or None
    return None
