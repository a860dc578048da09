"""`edgefl check-config [PATH]` and `edgefl default-config`."""

from __future__ import annotations

import argparse
import sys

from edgefld.config import load_config, resolve_config_path
from edgefld.config.template import default_config_text


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = subparsers.add_parser(
        "check-config",
        help="validate a configuration file (exit 0 if valid, 78 if not)",
        description="Validate a configuration file: exit 0 if valid, 78 with one line naming the problem if not.",
    )
    check.add_argument("path", nargs="?", help="file to check (default: $EDGEFL_CONFIG, else /etc/edgefl.toml)")
    check.set_defaults(handler=run_check)

    template = subparsers.add_parser(
        "default-config",
        help="print the documented default configuration (the shipped /etc/edgefl.toml)",
    )
    template.set_defaults(handler=run_template)


def run_check(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.path)
    load_config(path)
    print(f"{path}: OK")
    return 0


def run_template(args: argparse.Namespace) -> int:
    sys.stdout.write(default_config_text())
    return 0
