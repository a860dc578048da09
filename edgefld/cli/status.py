"""`edgefl status`: the server's run and boards, or this board's connection and last round (state files only)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgefld.cli.common import add_config_argument, load_from_args, nonempty_path
from edgefld.errors import EdgeflError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show the server's run and boards, or this board's connection and last round",
        description="Show what the edgefl server or client on this machine is doing, read from its state "
                    "directory ([server] state_dir, [client] state_dir): it works while the daemon runs, after "
                    "it stopped, and for members of the edgefl group.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (schema: README.md)")
    parser.add_argument("--role", choices=("auto", "server", "client"), default="auto",
                        help="whose state to show (auto: the server's where there is one, else the client's)")
    parser.add_argument("--state-dir", metavar="DIR", type=nonempty_path,
                        help="the state directory to read (default: the role's state_dir in the config)")
    add_config_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgefld.status import client_status, describe_client, describe_server, server_status

    config = load_from_args(args, optional=True)
    server_dir = Path(args.state_dir or config.server.state_dir)
    client_dir = Path(args.state_dir or config.client.state_dir)
    status = server_status(server_dir) if args.role in ("auto", "server") else None
    if status is None and args.role in ("auto", "client"):
        status = client_status(client_dir)
    if status is None:
        where = {"server": str(server_dir), "client": str(client_dir)}.get(
            args.role, str(server_dir) if server_dir == client_dir else f"{server_dir} or {client_dir}")
        raise EdgeflError(f"no edgefl state in {where}: no daemon has run here with this config "
                          "(another config: --config PATH)")
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(describe_server(status) if status["role"] == "server" else describe_client(status))
    return 0
