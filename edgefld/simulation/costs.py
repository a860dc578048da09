"""The cost table of virtual time: what a round costs each board edgefl knows, and where each figure comes from.

One home: ``costs.json`` beside this module. Its ``measured_here`` part is one thread of one host
(``bench/bench_costs.py --write``): samples/s of each backend x task at the batch sizes profiles use,
and the ClientApp's start-up, cold (a fresh interpreter: [client] clientapp_runtime = "flower") and
warm (a fork of the warm runtime, the framework already imported). Its ``boards`` part gives each
board description (edgefld/hardware/boards.json) a per-core speed index with its source, published
or derived, or none. A board's figure is the host's scaled by board index / host index:

    samples/s on the board = samples/s here x index(board) / index(host)
    start-up on the board  = start-up here / (index(board) / index(host))

A round on the real fleet then takes, for the slowest of the boards that trained in it,

    start-up + samples x local epochs / (samples/s) + bytes to and from the board / link rate

(``board_round_seconds``). An order of magnitude, not a prediction: README, "Virtual time", says
what it leaves out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

COSTS_FILE = Path(__file__).with_name("costs.json")


class CostTableError(ValueError):
    """costs.json does not hold what this module reads: what is wrong, in one line."""


@dataclass(frozen=True)
class Measured:
    """One backend x task on the host, one thread."""

    backend: str
    task: str
    samples_per_s: dict[int, float]  # by batch size
    startup_cold_s: float
    startup_warm_s: float


@dataclass(frozen=True)
class BoardSpeed:
    name: str  # the board description's (edgefld/hardware/boards.json)
    cpu: str
    index: float | None  # per-core speed index (Geekbench 6 single-core); None: no figure
    source: str


@dataclass(frozen=True)
class Figure:
    """What one round costs one board, with where it comes from."""

    samples_per_s: float
    startup_s: float
    provenance: str


@dataclass(frozen=True)
class NoFigure:
    reason: str


@dataclass(frozen=True)
class CostTable:
    host_cpu: str
    host_index: float
    host_source: str
    measured_on: str  # the host, the date and the load while it was measured, in words
    measured: dict[tuple[str, str], Measured]  # by (backend, task)
    boards: dict[str, BoardSpeed]

    def figure(self, board: str, backend: str, task: str, batch_size: int, runtime: str) -> Figure | NoFigure:
        """``board`` (a description's name) training ``task`` with ``backend`` at ``batch_size``; ``runtime``
        is [client] clientapp_runtime ("warm" or "flower")."""
        speed = self.boards.get(board)
        if speed is None:
            return NoFigure(f"{board}: not in the cost table")
        if speed.index is None:
            return NoFigure(f"{board}: {speed.source}")
        measured = self.measured.get((backend, task))
        if measured is None:
            return NoFigure(f"{backend} x {task}: not measured here (bench/bench_costs.py)")
        # The batch size measured nearest (by ratio) to the board's.
        measured_batch = min(measured.samples_per_s, key=lambda size: abs(_log2(size) - _log2(batch_size)))
        ratio = speed.index / self.host_index
        cold = runtime == "flower"
        startup_here = measured.startup_cold_s if cold else measured.startup_warm_s
        provenance = (f"{backend} {task} at batch {measured_batch} measured on {self.measured_on}, x {ratio:.3f} "
                      f"({speed.cpu}: {speed.index:g} / host {self.host_index:g}; {speed.source}); "
                      f"{'cold' if cold else 'warm'} start-up")
        return Figure(samples_per_s=measured.samples_per_s[measured_batch] * ratio,
                      startup_s=startup_here / ratio, provenance=provenance)


def _log2(value: float) -> float:
    import math

    return math.log2(max(value, 1e-9))


def board_round_seconds(figure: Figure, samples: int, epochs: int, transfer_bytes: int,
                        link_mbps: float) -> tuple[float, float, float]:
    """(start-up, training, transfer) seconds of one board's round."""
    return (figure.startup_s, samples * epochs / figure.samples_per_s,
            transfer_bytes * 8 / (link_mbps * 1_000_000))


@cache
def load_costs(path: Path = COSTS_FILE) -> CostTable:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return _parse(raw)
    except OSError as exc:
        raise CostTableError(f"cannot read the cost table {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise CostTableError(f"the cost table {path} is not JSON: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise CostTableError(f"the cost table {path} is malformed: {exc!r}") from None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _parse(raw: dict[str, Any]) -> CostTable:
    host = raw["host"]
    here = raw.get("measured_here") or {}
    machine = here.get("host", {})
    measured_on = (f"{machine.get('cpu', 'an unnamed host')} ({machine.get('date', 'undated')}, load average "
                   f"{machine.get('load_average_start', '?')}-{machine.get('load_average_end', '?')})")
    measured: dict[tuple[str, str], Measured] = {}
    for row in here.get("figures", []):
        backend, task = str(row["backend"]), str(row["task"])
        measured[(backend, task)] = Measured(
            backend=backend, task=task,
            samples_per_s={int(size): _number(value, f"{backend} {task} samples/s")
                           for size, value in row["samples_per_s"].items()},
            startup_cold_s=_number(row["startup_cold_s"], f"{backend} {task} startup_cold_s"),
            startup_warm_s=_number(row["startup_warm_s"], f"{backend} {task} startup_warm_s"))
    boards = {}
    for name, entry in raw["boards"].items():
        index = entry["geekbench6_single"]
        boards[name] = BoardSpeed(name=name, cpu=str(entry["cpu"]),
                                  index=None if index is None else _number(index, f"{name} geekbench6_single"),
                                  source=str(entry["source"]))
        if not boards[name].source:
            raise ValueError(f"{name}: a figure without a source")
    return CostTable(host_cpu=str(host["cpu"]), host_index=_number(host["geekbench6_single"], "host index"),
                     host_source=str(host["source"]), measured_on=measured_on, measured=measured, boards=boards)


def markdown_table(table: CostTable) -> str:
    """README's table of the board figures (`bench/bench_costs.py --readme-table` prints it; a test keeps
    README's copy equal to it): per board description, its index and what the host's figures become."""
    from edgefld.hardware.boards import descriptions
    from edgefld.profile import choose_profile

    lines = ["| board | CPU | index | x host | batch | mnist samples/s, litert / torch / tensorflow "
             "| cifar10 samples/s, litert | torch start-up s, warm / cold | the index is |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, description in descriptions().items():
        speed = table.boards.get(name)
        if speed is None or speed.index is None:
            reason = speed.source.split(":", 1)[-1].strip() if speed else "not in the cost table"
            lines.append(f"| {name} | {speed.cpu if speed else ''} | no figure | | | | | | {reason} |")
            continue
        profile = choose_profile(description.board, "litert", frozenset({"litert"}))
        batch = min(16, profile.batch_size_cap)  # [server] batch_size's default, capped by the profile

        def at(backend: str, task: str, runtime: str = "warm", board: str = name, size: int = batch) -> Figure:
            figure = table.figure(board, backend, task, size, runtime)
            assert isinstance(figure, Figure), figure
            return figure

        mnist = " / ".join(f"{at(backend, 'mnist').samples_per_s:,.0f}"
                           for backend in ("litert", "torch", "tensorflow"))
        cifar = f"{at('litert', 'cifar10').samples_per_s:,.0f}" if profile.allows("cifar10") else "not offered"
        kind = speed.source.split(":", 1)[0].lower()
        lines.append(f"| {name} | {speed.cpu} | {speed.index:g} | {speed.index / table.host_index:.3f} | {batch} "
                     f"| {mnist} | {cifar} | {at('torch', 'mnist').startup_s:.2f} / "
                     f"{at('torch', 'mnist', 'flower').startup_s:.1f} | {kind} |")
    return "\n".join(lines) + "\n"
