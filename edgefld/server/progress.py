"""The server daemon's account of a run: one log line (and systemd STATUS) per round, from metrics.jsonl.

The ServerApp appends a RoundRecord per round (edgefld.run_state); this reads the log as
it grows, in the daemon's process, and says each new round once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgefld.logs import get_logger
from edgefld.records import RoundRecord
from edgefld.run_state import read_rounds

log = get_logger("server")


class ProgressReporter:
    def __init__(self, metrics: Path, total_rounds: int, set_status: Callable[[str], None],
                 on_rounds: Callable[[list[RoundRecord]], None] | None = None) -> None:
        self.metrics = metrics
        self.total_rounds = total_rounds
        self.set_status = set_status  # systemd's STATUS
        self.on_rounds = on_rounds  # the new rounds, once logged (the fleet registry, the Prometheus textfile)
        self.rounds_seen: set[int] = set()
        self._metrics_seen: tuple[int, int] | None = None  # metrics.jsonl's (mtime, size) when last read

    @property
    def last_round_seen(self) -> bool:
        """The last configured round is in the log: the run is about to end."""
        return self.total_rounds in self.rounds_seen

    def log_existing_rounds(self) -> None:
        """At start: the rounds a previous run did are not news, only named."""
        self.rounds_seen.update(record.round for record in read_rounds(self.metrics))
        if self.rounds_seen:
            log.info("resuming: rounds %s already done (metrics in %s)", ranges(sorted(self.rounds_seen)),
                     self.metrics)

    def log_new_rounds(self) -> None:
        try:
            stat = self.metrics.stat()
            seen: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            seen = None
        if seen is not None and seen == self._metrics_seen:
            return  # unchanged since last read
        self._metrics_seen = seen
        new: list[RoundRecord] = []
        for record in read_rounds(self.metrics):
            if record.round in self.rounds_seen:
                continue
            self.rounds_seen.add(record.round)
            new.append(record)
            line = describe_round(record, self.total_rounds)
            log.info("%s", line)
            self.set_status(line)
        if new and self.on_rounds is not None:
            self.on_rounds(new)

    def summary(self) -> str:
        records = read_rounds(self.metrics)
        evaluation = records[-1].evaluation if records else None
        return f"{len(records)}/{self.total_rounds} rounds" + (
            f", accuracy {evaluation.eval_accuracy:.4f}" if evaluation is not None else "")


def describe_round(record: RoundRecord, total: int) -> str:
    training, evaluation = record.training, record.evaluation
    parts = [f"round {record.round}/{total}: {training.clients_ok if training is not None else '?'} clients ok"]
    if training is not None and training.clients_failed:
        parts.append(f"{training.clients_failed} failed")
    if training is not None and training.train_loss is not None:
        parts.append(f"train loss {training.train_loss:.4f}")
    if evaluation is not None:
        parts.append(f"eval loss {evaluation.eval_loss:.4f}, accuracy {evaluation.eval_accuracy:.4f}")
    if training is not None and training.wall_seconds is not None:
        parts.append(f"{training.wall_seconds:.1f} s")
    line = ", ".join(parts)
    for failure in training.failures if training is not None else ():
        if failure.node is None and failure.phase == "aggregate":  # the round's, no board's (secure aggregation)
            line += f"; round failed: {failure.reason}"
        else:
            line += f"; {failure.phase} failure of {failure.board_name()}: {failure.reason}"
    return line


def ranges(numbers: list[int]) -> str:
    """Sorted round numbers as spans: [1, 2, 3, 5] -> "1-3, 5"."""
    spans: list[tuple[int, int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], n)
        else:
            spans.append((n, n))
    return ", ".join(f"{first}" if first == last else f"{first}-{last}" for first, last in spans)
