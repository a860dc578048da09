"""Errors that end a command with one line on stderr and a registered exit code.

Code anywhere in edgefl raises these; only the CLI layer turns them into a
message and an exit status, so library code stays testable and never exits.
"""

from __future__ import annotations

from edgefld.exit_codes import ExitCode


class EdgeflError(Exception):
    """An expected failure with a message meant for a person."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(EdgeflError):
    """Invalid configuration: file, line, key, what is wrong and what is allowed."""

    exit_code = ExitCode.CONFIG

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.source = source
        self.line = line
        self.key = key
        self.problem = problem
        where = ""
        if source is not None:
            where = source if line is None else f"{source}:{line}"
        parts = [p for p in (where, key) if p]
        message = ": ".join(parts + [problem])
        super().__init__(message)


class BackendUnavailable(EdgeflError):
    exit_code = ExitCode.UNAVAILABLE


class DataError(EdgeflError):
    exit_code = ExitCode.DATA


class StateWriteError(EdgeflError):
    exit_code = ExitCode.CANT_CREATE
