"""A training run's state directory: its checkpoints and metrics.jsonl, and where the run resumes.

One home for resuming a run. The server daemon asks how many rounds are done (before it submits
a run and after each one); the ServerApp asks for the global model to continue from. Both get
the same checks (the checkpoint is of this run, or RunStateError) and the same repair of the
metrics log. Framework-free: the Flower apps and the daemons both use it.

    <state dir>/checkpoints/round-NNNNNN.npz   the global model after round N (0: the initial one),
                                               with this run's identity and round N's record
    <state dir>/metrics.jsonl                  one edgefld.records.RoundRecord per round
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgefld.errors import EdgeflError
from edgefld.exit_codes import ExitCode
from edgefld.persist import (
    KEEP_CHECKPOINTS,
    Checkpoint,
    append_jsonl,
    checkpoint_files,
    load_latest_checkpoint,
    read_checkpoint,
    read_jsonl,
    reconcile_metrics,
    save_checkpoint,
)
from edgefld.records import BoardIdentity, RecordError, RoundRecord

if TYPE_CHECKING:  # arrays pass through; numpy is loaded by whoever made them
    import numpy as np

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"

# The line the server daemon looks for in a failed run's log: the state directory cannot be written
# (disk full, read-only), which no resubmission fixes. The ServerApp logs it, the daemon reads it.
STATE_WRITE_FAILED = "edgefl: state write failed: "


class RunStateError(EdgeflError):
    """The state directory holds another run's state (a different task or partitioning)."""


class CheckpointError(EdgeflError):
    """No usable checkpoint where one was asked for (none stored, not that round, or corrupt)."""

    exit_code = ExitCode.DATA


def run_identity(run: Mapping[str, object]) -> dict[str, object]:
    """What must match for a checkpoint to continue this run (from the run config's keys)."""
    identity: dict[str, object] = {"task": str(run["task"]), "num-partitions": _int(run["num-partitions"]),
                                   "partition-seed": _int(run["partition-seed"])}
    # Another split is another run. Named only when not the IID default, so that the state of runs
    # from before partitioning was a setting still continues.
    if str(run.get("partitioning", "iid")) != "iid":
        identity.update(partitioning=str(run["partitioning"]), alpha=float(str(run["dirichlet-alpha"])))
    return identity


def _int(value: object) -> int:
    if isinstance(value, (int, float, str)):
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


@dataclass(frozen=True)
class ResumePoint:
    """Where a run continues, and what was found on the way (each a line for the log)."""

    round: int  # the last completed round; 0: none (or only the initial model)
    weights: list[np.ndarray] | None  # the global model after it; None: no checkpoint, a new model
    problems: list[str] = field(default_factory=list)  # checkpoints passed over: "<what>; using the one before"
    repair: str | None = None  # what reconciling metrics.jsonl changed, if anything
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict)  # the server optimiser's, that round


class RunState:
    """The state directory of one run, as identified by ``identity`` (run_identity)."""

    def __init__(self, directory: Path, identity: Mapping[str, object]) -> None:
        self.directory = directory
        self.identity = dict(identity)
        self.checkpoints = directory / CHECKPOINT_DIR
        self.metrics = directory / METRICS_FILE

    def latest_checkpoint(self) -> tuple[Checkpoint | None, list[str]]:
        """The newest checkpoint that verifies, and a note for each newer one that did not.

        RunStateError if it is another run's: continuing it would mix two runs' rounds."""
        checkpoint, problems = load_latest_checkpoint(self.checkpoints)
        if checkpoint is not None and checkpoint.meta.get("identity") != self.identity:
            raise RunStateError(
                f"{self.directory} holds the state of another run ({checkpoint.meta.get('identity')}); "
                f"this config asks for {self.identity}: set another [server] state_dir or remove that one")
        return checkpoint, problems

    def completed_rounds(self) -> tuple[int, list[str]]:
        checkpoint, problems = self.latest_checkpoint()
        return (0 if checkpoint is None else checkpoint.round), problems

    def resume(self) -> ResumePoint:
        """The newest good checkpoint, with metrics.jsonl made to agree with it.

        The checkpoint is written before the metrics line: a crash between the two leaves the line
        missing, and it is restored from the checkpoint, so no round is lost. Lines after the
        checkpoint (its successors were unusable) and torn lines are set aside: no round twice."""
        checkpoint, problems = self.latest_checkpoint()
        last_round = 0 if checkpoint is None else checkpoint.round
        restored = checkpoint.meta.get("record") if checkpoint is not None else None
        repair = reconcile_metrics(self.metrics, last_round, restored if isinstance(restored, dict) else None)
        return ResumePoint(last_round, None if checkpoint is None else checkpoint.weights, problems, repair,
                           {} if checkpoint is None else checkpoint.state)

    def save_round(self, round_: int, weights: Sequence[np.ndarray], record: RoundRecord | None,
                   optimizer_state: dict[str, np.ndarray] | None = None) -> None:
        """Checkpoint the global model after ``round_`` (with the server optimiser's state), then append its
        record (None: the initial model)."""
        stored = record.to_json() if record is not None else None
        save_checkpoint(self.checkpoints, round_, list(weights), {"identity": self.identity, "record": stored},
                        optimizer_state)
        if stored is not None:
            append_jsonl(self.metrics, stored)

    def rounds(self) -> list[RoundRecord]:
        return read_rounds(self.metrics)

    def known_boards(self) -> dict[int, BoardIdentity]:
        """The boards by node id as the last round recorded them: a restarted ServerApp names failures with them."""
        rounds = self.rounds()
        return dict(rounds[-1].training.boards) if rounds and rounds[-1].training is not None else {}


def read_rounds(path: Path) -> list[RoundRecord]:
    """The round records of a metrics log; lines that are not one (torn, foreign, newer) are left out."""
    records, _ = read_jsonl(path)
    rounds: list[RoundRecord] = []
    for data in records:
        try:
            rounds.append(RoundRecord.from_json(data))
        except RecordError:
            continue
    return rounds


# --- the stored global models, for people and exporters (edgefl model info|export) ---------------------


@dataclass(frozen=True)
class StoredCheckpoint:
    """One checkpoint file as read back: its round, task and evaluated accuracy, or why it is unusable."""

    round: int
    path: Path
    checkpoint: Checkpoint | None  # None: unusable (``problem`` says why)
    problem: str | None = None

    @property
    def task(self) -> str | None:
        identity = self.checkpoint.meta.get("identity") if self.checkpoint is not None else None
        task = identity.get("task") if isinstance(identity, dict) else None
        return task if isinstance(task, str) else None

    @property
    def record(self) -> RoundRecord | None:
        """Round N's record as the checkpoint carries it (None for the initial model, round 0)."""
        stored = self.checkpoint.meta.get("record") if self.checkpoint is not None else None
        try:
            return RoundRecord.from_json(stored) if stored is not None else None
        except RecordError:
            return None

    @property
    def accuracy(self) -> float | None:
        """The server's evaluation of this global model, if it evaluated the round."""
        record = self.record
        return record.evaluation.eval_accuracy if record is not None and record.evaluation is not None else None


def stored_checkpoints(directory: Path) -> list[StoredCheckpoint]:
    """Every checkpoint in the state directory ``directory``, oldest first, each read and verified."""
    stored: list[StoredCheckpoint] = []
    for round_, path in checkpoint_files(directory / CHECKPOINT_DIR):
        try:
            stored.append(StoredCheckpoint(round_, path, read_checkpoint(path)))
        except ValueError as exc:
            stored.append(StoredCheckpoint(round_, path, None, str(exc)))
    return stored


def stored_checkpoint(directory: Path, round_: int | None = None) -> StoredCheckpoint:
    """The checkpoint of ``round_`` (None: the newest usable one) in the state directory ``directory``.

    CheckpointError, naming the rounds there are, if there is none such or it is unusable."""
    stored = stored_checkpoints(directory)
    usable = [entry for entry in stored if entry.checkpoint is not None]
    rounds = ", ".join(str(entry.round) for entry in usable) or "none"
    if not stored:
        raise CheckpointError(f"no checkpoints in {directory / CHECKPOINT_DIR}: is {directory} the server's "
                              "state directory ([server] state_dir, --state-dir), and has a round finished?")
    if round_ is None:
        if not usable:
            raise CheckpointError(f"every checkpoint in {directory / CHECKPOINT_DIR} is unusable: "
                                  + "; ".join(f"round {entry.round}: {entry.problem}" for entry in stored))
        return usable[-1]
    entry = next((entry for entry in stored if entry.round == round_), None)
    if entry is None:
        raise CheckpointError(f"round {round_} has no checkpoint in {directory / CHECKPOINT_DIR} "
                              f"(the last {KEEP_CHECKPOINTS} are kept); usable rounds: {rounds}")
    if entry.checkpoint is None:
        raise CheckpointError(f"the checkpoint of round {round_} ({entry.path}) is unusable: {entry.problem}; "
                              f"usable rounds: {rounds}")
    return entry
