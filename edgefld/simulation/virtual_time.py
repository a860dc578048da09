"""Virtual time: how long each simulated round would take on the real fleet (edgefld.simulation.costs).

For each round, the boards that trained in it (the round record's ``trained``, by node id -> cid ->
the virtual board's description), each with the samples its ClientApp trained (its partition's
training part, capped by its profile's samples per round), the run's local epochs, its batch size
(the run's, capped by its profile) and its share of the round's bytes; the round takes as long as
its slowest board. Boards without a figure are named and left out of the maximum.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefld.records import RoundRecord
from edgefld.simulation.costs import CostTable, Figure, board_round_seconds


@dataclass(frozen=True)
class VirtualBoard:
    """A virtual board as the estimate needs it (one per cid)."""

    description: str  # edgefld/hardware/boards.json's name
    backend: str
    batch_size: int  # the run's, capped by the board's profile
    samples: int  # trained per round: the partition's training part, capped by the profile
    epochs: int


@dataclass(frozen=True)
class RoundEstimate:
    round: int
    seconds: float | None  # None: no board that trained has a figure
    slowest: str | None  # the slowest board's description
    startup_s: float  # the slowest board's parts
    training_s: float
    transfer_s: float
    boards_estimated: int
    without_figure: tuple[str, ...]  # descriptions of boards that trained but have no figure

    def to_json(self) -> dict[str, object]:
        return {"round": self.round, "seconds": _rounded(self.seconds), "slowest_board": self.slowest,
                "startup_s": _rounded(self.startup_s), "training_s": _rounded(self.training_s),
                "transfer_s": _rounded(self.transfer_s), "boards_estimated": self.boards_estimated,
                "boards_without_figure": list(self.without_figure)}


@dataclass(frozen=True)
class VirtualTime:
    rounds: tuple[RoundEstimate, ...]
    link_mbps: float
    runtime: str
    figures: dict[str, dict[str, object]]  # description -> what was used, with its provenance

    @property
    def total_seconds(self) -> float | None:
        known = [r.seconds for r in self.rounds if r.seconds is not None]
        return sum(known) if known else None

    def to_json(self) -> dict[str, object]:
        return {
            "about": "Estimated duration of each round on the real boards (edgefld/simulation/costs.json): an "
                     "order of magnitude, not a prediction; see README, 'Virtual time'.",
            "link_mbps": self.link_mbps, "clientapp_runtime": self.runtime,
            "total_seconds": _rounded(self.total_seconds),
            "rounds": [r.to_json() for r in self.rounds], "figures": self.figures,
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def estimate_round(record: RoundRecord, boards: Sequence[VirtualBoard], table: CostTable, task: str, runtime: str,
                   link_mbps: float) -> RoundEstimate:
    training = record.training
    trained_cids = sorted({training.boards[node].cid for node in training.trained if node in training.boards}
                          if training else set())
    instructed = (training.clients_ok + training.clients_failed) if training else 0
    per_board_bytes = (training.bytes_sent + training.bytes_received) // instructed if training and instructed else 0
    best: tuple[float, str, tuple[float, float, float]] | None = None
    missing: set[str] = set()
    estimated = 0
    for cid in trained_cids:
        if not 0 <= cid < len(boards):
            continue
        board = boards[cid]
        figure = table.figure(board.description, board.backend, task, board.batch_size, runtime)
        if not isinstance(figure, Figure):
            missing.add(board.description)
            continue
        parts = board_round_seconds(figure, board.samples, board.epochs, per_board_bytes, link_mbps)
        estimated += 1
        if best is None or sum(parts) > best[0]:
            best = (sum(parts), board.description, parts)
    if best is None:
        return RoundEstimate(record.round, None, None, 0.0, 0.0, 0.0, 0, tuple(sorted(missing)))
    seconds, slowest, (startup, train, transfer) = best
    return RoundEstimate(record.round, seconds, slowest, startup, train, transfer, estimated, tuple(sorted(missing)))


def estimate_run(records: Sequence[RoundRecord], boards: Sequence[VirtualBoard], table: CostTable, task: str,
                 runtime: str, link_mbps: float) -> VirtualTime:
    figures: dict[str, dict[str, object]] = {}
    for board in boards:
        if board.description in figures:
            continue
        figure = table.figure(board.description, board.backend, task, board.batch_size, runtime)
        figures[board.description] = (
            {"samples_per_s": round(figure.samples_per_s, 1), "startup_s": round(figure.startup_s, 3),
             "provenance": figure.provenance} if isinstance(figure, Figure) else {"no_figure": figure.reason})
    return VirtualTime(rounds=tuple(estimate_round(r, boards, table, task, runtime, link_mbps) for r in records),
                       link_mbps=link_mbps, runtime=runtime, figures=figures)


def virtual_boards(descriptions: Sequence[str], node_configs: Sequence[dict[str, Any]], run_config: dict[str, Any],
                   data_dir: str) -> list[VirtualBoard]:
    """One VirtualBoard per cid, from the node configs and run config the simulation ran with."""
    from edgefld.apps.settings import RUN_CONFIG_DEFAULTS
    from edgefld.data.partition import partition_summaries, validation_size
    from edgefld.tasks import get_task

    run = {**RUN_CONFIG_DEFAULTS, **run_config}
    sizes = [summary.size for summary in partition_summaries(
        get_task(str(run["task"])).dataset, data_dir, len(node_configs), int(run["partition-seed"]),
        str(run["partitioning"]), float(run["dirichlet-alpha"]))]
    boards = []
    for cid, (description, node) in enumerate(zip(descriptions, node_configs, strict=True)):
        train = sizes[cid] - validation_size(sizes[cid])
        cap = int(node.get("max-train-samples", 0))
        batch_cap = int(node.get("batch-size-cap", 0))
        batch = int(run["batch-size"])
        boards.append(VirtualBoard(
            description=description, backend=str(node["backend"]),
            batch_size=min(batch, batch_cap) if batch_cap else batch,
            samples=min(train, cap) if cap else train, epochs=int(run["local-epochs"])))
    return boards


def write(virtual: VirtualTime, path: Path) -> None:
    from edgefld.persist import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(virtual.to_json(), indent=2) + "\n").encode())
