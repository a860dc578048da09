"""`edgefl model info|export`: the server's checkpointed global models, listed and exported for inference."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgefld.cli.common import add_config_argument, bounded_int, load_from_args, nonempty_path
from edgefld.export import FORMATS
from edgefld.run_state import CHECKPOINT_DIR


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "model", help="list the server's checkpoints, or export a global model for inference",
        description="The global models the server checkpointed under [server] state_dir (or --state-dir).",
    )
    commands = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    info = commands.add_parser("info", help="list the checkpoints: round, task, accuracy")
    info.add_argument("--json", action="store_true")
    info.set_defaults(handler=run_info)

    export = commands.add_parser(
        "export", help="write a checkpoint's global model in a format for inference, with PATH.json beside it",
        description="Formats: " + "; ".join(f"{spec.name}: {spec.what}" for spec in FORMATS.values())
                    + ". The model takes normalised float32 images and returns logits; PATH.json says how.",
    )
    export.add_argument("--format", required=True, choices=list(FORMATS))
    export.add_argument("--round", type=bounded_int(0, 10**9), metavar="N",
                        help="the round whose global model to export (default: the newest checkpoint)")
    export.add_argument("--out", type=nonempty_path, metavar="PATH",
                        help="the file to write, or a directory (one that exists, or PATH/) for the default "
                             "name <task>-round<N>.<suffix> (default: that name in the current directory)")
    export.set_defaults(handler=run_export)

    for sub in (info, export):
        add_config_argument(sub)
        sub.add_argument("--state-dir", type=nonempty_path, metavar="DIR",
                         help="the server's state directory (default: [server] state_dir of the config)")


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return Path(args.state_dir)
    return Path(load_from_args(args, optional=True).server.state_dir)


def run_info(args: argparse.Namespace) -> int:
    from edgefld.run_state import stored_checkpoints

    state_dir = _state_dir(args)
    entries = stored_checkpoints(state_dir)
    if args.json:
        json.dump([{"round": e.round, "task": e.task, "accuracy": e.accuracy, "path": str(e.path),
                    "problem": e.problem} for e in entries], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not entries:
        print(f"no checkpoints in {state_dir / CHECKPOINT_DIR}")
        return 0
    print(f"{'round':>6}  {'task':<8} {'accuracy':>8}  file")
    for e in entries:
        accuracy = f"{e.accuracy:.4f}" if e.accuracy is not None else "-"
        line = f"{e.round:>6}  {e.task or '-':<8} {accuracy:>8}  {e.path}"
        print(line if e.problem is None else f"{line}  UNUSABLE: {e.problem}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from edgefld.export import export_checkpoint

    result = export_checkpoint(_state_dir(args), args.format, round_=args.round, out=args.out)
    meta = result.metadata
    accuracy = f"accuracy {meta['accuracy']:.4f}" if meta["accuracy"] is not None else "not evaluated"
    print(f"{result.path}: {meta['task']} round {meta['round']} ({accuracy}), {meta['format']}, "
          f"{meta['bytes']} bytes; metadata in {result.metadata_path}")
    return 0
