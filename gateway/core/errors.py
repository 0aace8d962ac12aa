"""Errors that are the user's, not ours: the CLI prints one line and exits 2."""

from __future__ import annotations

from pathlib import Path


class UsageError(Exception):
    """Bad command-line input (a value, a file of the wrong kind); the text says what would be valid."""


class ConfigError(Exception):
    """A config or policy file is wrong: the text names the file, the key and what would be valid."""

    def __init__(self, path: Path | str, key: str, problem: str, hint: str = "") -> None:
        self.path, self.key, self.problem, self.hint = str(path), key, problem, hint
        text = f"{path}: {key}: {problem}"
        if hint:
            text += f" (hint: {hint})"
        super().__init__(text)
