"""The server's registry of boards (fleet.json) and its own state (server-state.json), for `edgefl status`.

Both are the daemon's, written atomically in the state directory. fleet.json is folded from the
round records of metrics.jsonl (the ServerApp's): one BoardRecord per board that ever took part,
updated as each round is recorded, rebuilt from metrics.jsonl at every start, so a lost or damaged
file costs nothing. Its size is bounded by MAX_BOARDS (the boards seen longest ago give way first),
not by the number of rounds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from edgefld.apps.settings import ERROR_RESOURCES
from edgefld.persist import atomic_write_bytes
from edgefld.records import BoardIdentity, BoardRecord, FleetRecord, LastFailure, RoundRecord, ServerState
from edgefld.status import FLEET_FILE, SERVER_STATE_FILE

MAX_BOARDS = 10_000  # about 600 bytes each: fleet.json stays under 6 MB whatever the fleet and the run
# Failures of these kinds carry no word from the board: they do not make it "seen".
UNSEEN_ERRORS = ("timeout", "flower")


def empty_fleet(task: str | None = None) -> FleetRecord:
    return FleetRecord(task=task, last_round=0, boards=())


def fold(fleet: FleetRecord, record: RoundRecord) -> FleetRecord:
    """The fleet after ``record``'s round: each board asked, with what its round did."""
    training = record.training
    if training is None or record.round <= fleet.last_round:
        return replace(fleet, last_round=max(fleet.last_round, record.round))
    boards = {board.node: board for board in fleet.boards}
    seen_at = record.time
    for node, split in training.trained.items():
        board = _board(boards.get(node), node, record.round, training.boards.get(node))
        boards[node] = replace(board, last_trained=record.round, rounds_ok=board.rounds_ok + 1, last_split=split,
                               last_seen=seen_at if seen_at is not None else board.last_seen)
    for failure in training.failures:
        if failure.node is None:
            continue  # instructions the grid never sent: no board to charge it to
        board = _board(boards.get(failure.node), failure.node, record.round, training.boards.get(failure.node))
        seen = failure.error not in UNSEEN_ERRORS and seen_at is not None
        boards[failure.node] = replace(
            board, rounds_failed=board.rounds_failed + 1,
            rounds_refused=board.rounds_refused + (1 if failure.code == ERROR_RESOURCES else 0),
            last_failure=LastFailure(round=record.round, code=failure.code, error=failure.error, reason=failure.reason),
            last_seen=seen_at if seen else board.last_seen)
    kept = sorted(boards.values(), key=lambda b: (b.last_round, b.last_seen or 0.0), reverse=True)[:MAX_BOARDS]
    return FleetRecord(task=record.task or fleet.task, last_round=record.round,
                       boards=tuple(sorted(kept, key=lambda b: b.node)))


def _board(board: BoardRecord | None, node: int, round_: int, identity: BoardIdentity | None) -> BoardRecord:
    if board is None:
        board = BoardRecord(node=node, identity=None, first_round=round_, last_round=round_, last_trained=None,
                            last_seen=None, rounds_ok=0, rounds_failed=0, rounds_refused=0, last_failure=None,
                            last_split=None)
    return replace(board, last_round=round_, identity=identity if identity is not None else board.identity)


def fold_all(records: Iterable[RoundRecord], task: str | None = None) -> FleetRecord:
    fleet = empty_fleet(task)
    for record in records:
        fleet = fold(fleet, record)
    return fleet


class FleetRegistry:
    """fleet.json and server-state.json in the state directory, written by the server daemon only."""

    def __init__(self, state_dir: Path, task: str) -> None:
        self.fleet_path = state_dir / FLEET_FILE
        self.state_path = state_dir / SERVER_STATE_FILE
        self.fleet = empty_fleet(task)
        self.state: ServerState | None = None

    def rebuild(self, records: Iterable[RoundRecord]) -> None:
        """From the whole metrics log (at start): whatever fleet.json held is replaced."""
        self.fleet = fold_all(records, self.fleet.task)
        self._write(self.fleet_path, self.fleet.to_json())

    def add_rounds(self, records: Iterable[RoundRecord]) -> None:
        for record in records:
            self.fleet = fold(self.fleet, record)
        self._write(self.fleet_path, self.fleet.to_json())

    def set_state(self, state: str, *, task: str, rounds: int, listen: str, detail: str = "") -> None:
        self.state = ServerState(state=state, since=time.time(), pid=os.getpid(), task=task, rounds=rounds,
                                 listen=listen, detail=detail)
        self._write(self.state_path, self.state.to_json())

    @staticmethod
    def _write(path: Path, data: dict[str, object]) -> None:
        # Readable by the edgefl group (the state directory is 0750 edgefl:edgefl): `edgefl status` as an operator.
        atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode(), mode=0o640)
