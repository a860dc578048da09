"""`edgefl report`: the run's plots as one self-contained HTML file and PNGs (server state only)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgefld.cli.common import add_config_argument, load_from_args, nonempty_path


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write the run's plots: one self-contained HTML file and PNGs",
        description="Write report.html (opens without a network: the plots are inlined) and PNGs of the same "
                    "plots: accuracy and loss per round, which board trained, refused or failed each round, each "
                    "board's round time by part, bytes per round. Read from [server] state_dir. The plots need "
                    "matplotlib (edgefl[report]); without it the report has tables.",
    )
    parser.add_argument("--out", metavar="DIR", type=nonempty_path, default="edgefl-report",
                        help="where to write them (default: ./edgefl-report)")
    parser.add_argument("--state-dir", metavar="DIR", type=nonempty_path,
                        help="the server's state directory (default: [server] state_dir in the config)")
    add_config_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgefld.report import build_report

    config = load_from_args(args, optional=True)
    written = build_report(Path(args.state_dir or config.server.state_dir), Path(args.out))
    print(f"{written[0]}" + (f" and {len(written) - 1} PNGs: " + ", ".join(p.name for p in written[1:])
                             if len(written) > 1 else " (tables only: install edgefl[report] for the plots)"))
    return 0
