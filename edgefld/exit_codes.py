"""The one registry of edgefl's process exit codes, with help text.

Codes follow sysexits.h where one fits, because systemd units and shell
scripts already know them: 78 (EX_CONFIG) is what ``RestartPreventExitStatus=``
keys on so that a bad /etc/edgefl.toml does not make a unit restart forever.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 64  # EX_USAGE
    DATA = 65  # EX_DATAERR: a data file is missing, corrupt or of the wrong format
    UNAVAILABLE = 69  # EX_UNAVAILABLE: a needed component (backend, tool) is not installed
    SOFTWARE = 70  # EX_SOFTWARE: an internal error (a bug in edgefl)
    CANT_CREATE = 73  # EX_CANTCREAT: cannot write a state, checkpoint or data file
    IO = 74  # EX_IOERR
    CONFIG = 78  # EX_CONFIG
    INTERRUPTED = 130  # 128 + SIGINT


EXIT_CODE_HELP: dict[ExitCode, str] = {
    ExitCode.OK: "Success.",
    ExitCode.FAILURE: "The command failed; the message on stderr says why.",
    ExitCode.USAGE: "Bad command-line usage; see `edgefl COMMAND --help`.",
    ExitCode.DATA: (
        "A dataset or checkpoint file is missing, truncated or corrupt. Fetch a dataset with "
        "`edgefl data download TASK` or bring the original files with `edgefl data import PATH`; "
        "`edgefl model info` lists the checkpoints there are."
    ),
    ExitCode.UNAVAILABLE: (
        "A required component is not installed (for example the configured training backend). "
        "Install it, or set `backend = \"auto\"` in /etc/edgefl.toml."
    ),
    ExitCode.SOFTWARE: "An internal error in edgefl. Please report it with the log (`journalctl -u edgefl-*`).",
    ExitCode.CANT_CREATE: "A file could not be written (read-only or full disk, or wrong owner).",
    ExitCode.IO: "An input/output error while reading or writing a file.",
    ExitCode.CONFIG: (
        "The configuration is invalid: the message names the file, line, key, the problem and what "
        "is allowed. systemd units do not restart on this code; fix the file and start the unit again."
    ),
    ExitCode.INTERRUPTED: "Interrupted (SIGINT).",
}


def help_for(code: int) -> str:
    try:
        return EXIT_CODE_HELP[ExitCode(code)]
    except ValueError:
        return "Unknown exit code."
