"""The command line's one error type: a message for stderr and an exit code."""
from __future__ import annotations

USAGE = 2  # argparse's exit code for bad usage: a wrong file, name or option
FAILURE = 1  # the command ran and failed


class CLIError(Exception):
    """An error the command reports as one line on stderr, exiting with `code`."""

    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        self.code = code
