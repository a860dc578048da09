"""`edgefl demo`: a local federation (server + clients on 127.0.0.1) on the shipped digits data."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="run a local federation on 127.0.0.1 (digits task, no network needed)")
    parser.add_argument("--clients", type=int, default=2, choices=range(1, 9), metavar="N", help="1..8 (default 2)")
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 101), metavar="N", help="1..100 (default 3)")
    parser.add_argument("--epochs", type=int, default=2, choices=range(1, 21), metavar="N",
                        help="local epochs per round, 1..20 (default 2)")
    parser.add_argument("--workdir", metavar="DIR", help="keep config, state and logs here (default: a new temp dir)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgefld.demo import run_demo

    return run_demo(args.workdir, args.clients, args.rounds, args.epochs)
