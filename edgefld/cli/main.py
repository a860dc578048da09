"""Entry point of the `edgefl` command.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and a
``run(args) -> int``. This module turns every expected failure into one line on
stderr and its registered exit code; a traceback is shown only with --debug.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from edgefld import __version__
from edgefld.cli import (
    check_config,
    client,
    data,
    demo,
    detect,
    exit_codes,
    model,
    pki,
    report,
    server,
    simulate,
    status,
)
from edgefld.errors import EdgeflError
from edgefld.exit_codes import ExitCode

SUBCOMMANDS = (detect, check_config, client, server, simulate, status, report, data, model, demo, pki, exit_codes)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 64 (EX_USAGE) like the rest of edgefl."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message} (see `{self.prog} --help`)\n")
        sys.exit(ExitCode.USAGE)


def one_line(message: str) -> str:
    """Journals, scripts and people read the first line: a library's multi-line reason is folded into it."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="edgefl",
        description="Federated learning on Raspberry Pi and NVIDIA Jetson fleets, built on Flower.",
    )
    parser.add_argument("--version", action="version", version=f"edgefl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show a traceback on internal errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except EdgeflError as exc:
        sys.stderr.write(f"edgefl: {one_line(str(exc))}\n")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # `edgefl detect | head` closed our stdout: not an error worth a message.
        sys.stderr.close()
        return int(ExitCode.OK)
    except Exception as exc:  # the one place that turns a bug into one line
        if args.debug:
            raise
        sys.stderr.write(
            f"edgefl: internal error: {type(exc).__name__}: {one_line(str(exc))} (run with --debug for a traceback, "
            "and please report it)\n"
        )
        return int(ExitCode.SOFTWARE)


if __name__ == "__main__":
    sys.exit(main())
