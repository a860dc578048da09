"""`edgefl client`: the board daemon (unit edgefl-client)."""

from __future__ import annotations

import argparse
import os

from edgefld.cli.common import add_config_argument, add_override_flags, existing_directory, load_from_args


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "client",
        help="run this board as a federation client (the edgefl-client daemon)",
        description="Join the federation at [client] server and train in every round, as a daemon.",
    )
    add_config_argument(parser)
    parser.add_argument(
        "--sysroot", default="/", metavar="DIR", type=existing_directory,
        help="read the board's /proc, /sys and /etc below DIR, as `edgefl detect --sysroot` does (a container "
             "that mounts the host's at /host; fixture boards in tests); board tools are looked up on PATH",
    )
    add_override_flags(parser, "client", "log")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_from_args(args)
    config.require("client", ("cid", "server"))
    from edgefld.client.daemon import run_client

    return run_client(config, sysroot=os.path.abspath(args.sysroot))
