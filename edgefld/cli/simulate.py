"""`edgefl simulate`: a virtual fleet on Flower's simulation engine (edgefld.simulation)."""

from __future__ import annotations

import argparse

from edgefld.cli.common import add_config_argument, add_override_flags, load_from_args

# The [server] keys a simulated run takes; the rest of [server] is about a real server's network.
SERVER_KEYS = ("server.task", "server.rounds", "server.local_epochs", "server.batch_size", "server.sample_fraction")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Nothing is read here: every edgefl command builds this parser (the board names are listed by
    # --fleet's error for a name it does not know, from edgefld/hardware/boards.json).
    parser = subparsers.add_parser(
        "simulate",
        help="run a virtual fleet of boards on Flower's simulation engine (Ray)",
        description="Run edgefl's ServerApp and ClientApp on Flower's simulation engine with virtual boards, "
                    "each with the profile `edgefl detect` gives that board; writes a server state directory "
                    "(`edgefl status`, `edgefl report`). --fleet names the boards edgefl ships descriptions of "
                    "(an unknown name is answered with the list).",
    )
    add_config_argument(parser)
    add_override_flags(parser, "simulate", "server", "log", only=SERVER_KEYS)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_from_args(args, optional=True)
    from edgefld.simulation.runner import describe, simulate

    result = simulate(config)
    print(describe(result))
    # A run in which no board trained did not simulate the fleet: `edgefl status` says why they failed.
    trained = bool(result.boards_ok) and all(result.boards_ok)
    return 0 if result.rounds_done >= config.server.rounds and trained else 1
