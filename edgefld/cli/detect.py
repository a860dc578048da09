"""`edgefl detect`: what board this is and what edgefl would make it do."""

from __future__ import annotations

import argparse
import json
import sys

from edgefld.backends.catalog import installed_backends
from edgefld.cli.common import add_config_argument, existing_directory, load_from_args
from edgefld.errors import EdgeflError
from edgefld.hardware import Board, detect_board
from edgefld.profile import Profile, choose_profile


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="detect the board and show the workload profile edgefl chooses for it",
        description="Detect the board (Raspberry Pi, Jetson or generic) and show the workload profile.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--sysroot", default="/", metavar="DIR", type=existing_directory,
        help="read /proc, /sys and /etc below DIR (for fixture trees)",
    )
    parser.add_argument("--no-cuda-probe", action="store_true", help="do not start a Python to ask torch for CUDA")
    add_config_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_from_args(args, optional=True)
    board = detect_board(args.sysroot, probe_cuda=not args.no_cuda_probe)
    profile: Profile | None = None
    problem: EdgeflError | None = None
    try:
        profile = choose_profile(board, config.client.backend, installed_backends(), config.client.threads)
    except EdgeflError as exc:
        problem = exc
    if args.json:
        out = {
            "board": board.to_json(),
            "profile": profile.to_json() if profile else {"error": str(problem)},
        }
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_table(board, profile, problem))
    if problem is not None:
        sys.stderr.write(f"edgefl: {problem}\n")
        return int(problem.exit_code)
    return 0


def render_table(board: Board, profile: Profile | None, problem: EdgeflError | None) -> str:
    rows: list[tuple[str, str]] = [
        ("Board", f"{board.model or 'unknown model'} ({board.family}, {board.arch})"),
    ]
    ram = f"{board.ram_mb} MB usable"
    if board.raspberry_pi and board.raspberry_pi.ram_mb_nominal:
        ram += f", {board.raspberry_pi.ram_mb_nominal} MB nominal"
    rows.append(("RAM", ram))
    rows.append(("CPUs", f"{board.cpus_online} online of {board.cpus_present} present"))
    if board.raspberry_pi:
        pi = board.raspberry_pi
        rows.append(("Pi", f"revision {pi.revision}, type {pi.type or '?'}, SoC {pi.soc or '?'}"))
    if board.jetson:
        j = board.jetson
        jetpack = f" (JetPack {j.jetpack})" if j.jetpack else ""
        mode = f"{j.power_mode.name} ({j.power_mode.id})" if j.power_mode else "unknown"
        rows.append(("Jetson", f"{j.module}, SoC {j.soc or '?'}, L4T {j.l4t or '?'}{jetpack}"))
        rows.append(("Power", f"mode {mode}, CUDA {'usable' if j.cuda else 'not usable'}"))
    if board.cpu_temp_c is not None:
        rows.append(("CPU temp", f"{board.cpu_temp_c:.1f} C"))
    if board.throttling is not None:
        t = board.throttling
        now = [n for n, v in (("under-voltage", t.under_voltage), ("freq capped", t.freq_capped),
                              ("throttled", t.throttled), ("soft temp limit", t.soft_temp_limit)) if v]
        rows.append(("Throttling", f"0x{t.raw:x}: " + (", ".join(now) if now else "none now")))
    if profile is not None:
        cap = f"<= {profile.max_train_samples} samples/round" if profile.max_train_samples else "no sample cap"
        rows.append(("Profile", f"rule {profile.rule} ({profile.memory_class} class)"))
        backend = profile.backend or "none installed"
        rows.append(("Backend", f"{backend} on {profile.device}, {profile.threads} threads"))
        rows.append(("Workload", f"batch <= {profile.batch_size_cap}, {cap}"))
        rows.append(("Tasks", ", ".join(profile.tasks)))
        rows.extend(("Note", note) for note in profile.notes)
    else:
        rows.append(("Profile", f"error: {problem}"))
    width = max(len(k) for k, _ in rows)
    return "".join(f"{k:<{width}}  {v}\n" for k, v in rows)
