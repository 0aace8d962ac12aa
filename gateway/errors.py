"""Errors that are the user's, not ours: the CLI prints one line and exits 2."""

from __future__ import annotations


class UsageError(Exception):
    """Bad command-line input (a value, a file of the wrong kind); the text says what would be valid."""
