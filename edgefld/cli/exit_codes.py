"""`edgefl exit-codes`: the registry of exit codes, for people and scripts."""

from __future__ import annotations

import argparse

from edgefld.exit_codes import EXIT_CODE_HELP


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("exit-codes", help="list edgefl's exit codes and what they mean")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for code, text in EXIT_CODE_HELP.items():
        print(f"{int(code):>3}  {code.name.lower():<12} {text}")
    return 0
