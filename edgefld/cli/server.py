"""`edgefl server`: the federation's coordinator (unit edgefl-server)."""

from __future__ import annotations

import argparse

from edgefld.cli.common import add_config_argument, add_override_flags, load_from_args


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "server",
        help="run the federation server (the edgefl-server daemon)",
        description="Run Flower's SuperLink, drive the training run, evaluate and checkpoint, as a daemon.",
    )
    add_config_argument(parser)
    add_override_flags(parser, "server", "server.strategy", "server.dp", "log")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_from_args(args)
    from edgefld.server.daemon import run_server

    return run_server(config)
