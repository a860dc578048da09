"""The virtual fleet: "BOARD:COUNT,..." -> boards, and each virtual board's node config.

A virtual board goes through the path a real one does: its description (what `edgefl detect` finds
on that board) -> edgefld.profile -> the client daemon's node config -> the ClientApp. Its live
state (edgefld.guards: MemAvailable, throttling, power mode) is read, as on the board, below a
board root: a small tree this module writes with the description's idle figures, and stand-ins
of vcgencmd and nvpmodel that answer as a healthy board does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgefld.config.schema import shorten
from edgefld.hardware.boards import BoardDescription, known_names, lookup

MAX_VIRTUAL_BOARDS = 100_000  # [server] num_partitions' bound: one data partition per board
_ENTRY = re.compile(r"^([a-z0-9][a-z0-9-]*):([0-9]{1,6})$")


@dataclass(frozen=True)
class FleetEntry:
    name: str  # as the plan names the board
    description: BoardDescription
    count: int


class FleetError(ValueError):
    pass


def parse_fleet(spec: str) -> tuple[FleetEntry, ...]:
    entries: list[FleetEntry] = []
    for part in spec.split(","):
        match = _ENTRY.match(part.strip())
        if match is None:
            raise FleetError(f'"{shorten(part.strip())}" is not BOARD:COUNT (e.g. "rpi-4-4gb:20")')
        name, count = match.group(1), int(match.group(2))
        description = lookup(name)
        if description is None:
            raise FleetError(f'unknown board "{name}"; known boards: {", ".join(known_names())}')
        if count < 1:
            raise FleetError(f'"{shorten(part.strip())}": a count of at least 1')
        entries.append(FleetEntry(name, description, count))
    total = sum(entry.count for entry in entries)
    if total > MAX_VIRTUAL_BOARDS:
        raise FleetError(f"{total} virtual boards; at most {MAX_VIRTUAL_BOARDS}")
    return tuple(entries)


def fleet_problem(spec: str) -> str | None:
    """The schema's check of [simulate] fleet: what is wrong, or None."""
    try:
        parse_fleet(spec)
    except FleetError as exc:
        return str(exc)
    return None


_HEALTHY_TOOLS = {
    # What a Raspberry Pi with a good supply and cooling answers (edgefld.hardware.raspberry_pi).
    "vcgencmd": '[ "$1" = get_throttled ] || exit 2\necho throttled=0x0\n',
}


def write_board_root(description: BoardDescription, root: Path) -> str:
    """The tree the guards read for a virtual board of this description; returns its tools' search path."""
    board = description.board
    files: dict[str, str | bytes] = {
        "proc/meminfo": (f"MemTotal:       {board.ram_mb * 1024} kB\n"
                         f"MemAvailable:   {description.mem_available_mb * 1024} kB\n"),
    }
    tools: dict[str, str] = {}
    if board.family == "raspberry-pi":
        files["proc/device-tree/model"] = (board.model or "Raspberry Pi").encode() + b"\0"
        tools.update(_HEALTHY_TOOLS)
    elif board.family == "jetson":
        files["etc/nv_tegra_release"] = "# virtual board (edgefl simulate)\n"
        mode = board.jetson.power_mode if board.jetson is not None else None
        if mode is not None:
            tools["nvpmodel"] = f'[ "$1" = -q ] || exit 2\nprintf "NV Power Mode: %s\\n%d\\n" "{mode.name}" {mode.id}\n'
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in tools.items():
        tool = bin_dir / name
        tool.write_text("#!/bin/sh\n# Stand-in of a healthy board's tool (edgefl simulate).\n" + body, encoding="utf-8")
        tool.chmod(0o755)
    return str(bin_dir)


def virtual_node_configs(entries: tuple[FleetEntry, ...], config: Any, backend: str, data_dir: str,
                         boards_dir: Path) -> list[dict[str, Any]]:
    """One node config per virtual board (cid 0..N-1, in the plan's order), as its client daemon writes it."""
    from edgefld.client.daemon import node_config
    from edgefld.config import Config
    from edgefld.config.loader import Section
    from edgefld.profile import choose_profile

    assert isinstance(config, Config)
    configs: list[dict[str, Any]] = []
    for entry in entries:
        board = entry.description.board
        root = boards_dir / entry.description.name
        tools_path = write_board_root(entry.description, root)
        # As a board with [client] backend set to this backend: its profile's caps and tasks, this backend.
        profile = choose_profile(board, backend, frozenset({backend}))
        for _ in range(entry.count):
            cid = len(configs)
            client = Section("client", {**config.client.values, "cid": cid, "data_dir": data_dir})
            values = node_config(
                replace(config, client=client),
                profile, boards_dir / f"last-round-{cid}.json", str(root), board.model or board.family,
                board.family)
            values["board-tools-path"] = tools_path
            configs.append(values)
    return configs
