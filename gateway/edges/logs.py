"""Operational logs: JSON lines via structlog on stderr (edge).

Logs never carry message bodies, passwords, TOTP codes or keys; per-message
detail belongs in the audit stream, not here.  Some values a log line names
are chosen by a peer (a CompID, a reason quoting a value, a TLS error); each
text value is capped at ``MAX_LOG_VALUE`` characters (the cut marked with
the original length, as in the audit stream), so what one hostile message
costs in the logs does not grow with what its sender puts in it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from gateway.core.records import capped_text

MAX_LOG_VALUE = 1024


def cap_values(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: every ``str`` value at most ``MAX_LOG_VALUE`` characters."""
    for key, value in event.items():
        if isinstance(value, str) and len(value) > MAX_LOG_VALUE:
            event[key] = capped_text(value, MAX_LOG_VALUE)  # same keys: safe while iterating
    return event


def setup(level: str = "info", json: bool = True) -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=lvl, format="%(message)s")
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,  # e.g. worker=K in a worker process
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            cap_values,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
