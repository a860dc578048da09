"""The run's figures for Prometheus, in node_exporter's textfile-collector format.

edgefl-server has no HTTP endpoint of its own (the only port it opens is the boards' Fleet API);
Debian's convention for such a daemon is a ``*.prom`` file that prometheus-node-exporter's
textfile collector serves (--collector.textfile.directory, on Debian
/var/lib/prometheus/node-exporter). The daemon rewrites it atomically after every round
([server] prometheus_textfile), so node_exporter never reads half a file.

Names follow Prometheus' rules: an ``edgefl_`` prefix, base units (seconds, bytes) in the name,
``_total`` for counters, ``_ratio`` for a fraction, ``_timestamp_seconds`` for a Unix time.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from edgefld.apps.settings import ERROR_RESOURCES
from edgefld.persist import atomic_write_bytes
from edgefld.records import BoardRecord, FleetRecord, RoundRecord, ServerState

Sample = tuple[dict[str, str], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format(value: float) -> str:
    if value != value:
        return "NaN"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metrics:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        samples = list(samples)
        if not samples:
            return
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            shown = ",".join(f'{key}="{_escape(text)}"' for key, text in labels.items())
            self.lines.append(f"{name}{{{shown}}} {_format(value)}" if shown else f"{name} {_format(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(state: ServerState | None, fleet: FleetRecord, last: RoundRecord | None) -> str:
    """The textfile: the run, the last round's figures, and each board's."""
    metrics = _Metrics()
    task = {"task": fleet.task or (state.task if state is not None else "")}
    if state is not None:
        metrics.add("edgefl_server_info", "gauge", "The server daemon's state (1 for the current one).",
                    [({**task, "state": name}, 1.0 if name == state.state else 0.0) for name in ServerState.STATES])
        metrics.add("edgefl_server_state_since_timestamp_seconds", "gauge",
                    "Unix time the server daemon entered its current state.", [(task, state.since)])
        metrics.add("edgefl_rounds_configured", "gauge", "Rounds the run is configured to train.",
                    [(task, float(state.rounds))])
    metrics.add("edgefl_round", "gauge", "The last round recorded.", [(task, float(fleet.last_round))])
    if last is not None:
        if last.time is not None:
            metrics.add("edgefl_round_timestamp_seconds", "gauge", "Unix time the last round was recorded.",
                        [(task, last.time)])
        if last.evaluation is not None:
            metrics.add("edgefl_eval_accuracy_ratio", "gauge",
                        "The server's centralised accuracy of the last round's global model (0..1).",
                        [(task, last.evaluation.eval_accuracy)])
            metrics.add("edgefl_eval_loss", "gauge", "The server's centralised loss of the last round's global model.",
                        [(task, last.evaluation.eval_loss)])
        training = last.training
        if training is not None:
            refused = len([f for f in training.failures if f.code == ERROR_RESOURCES])
            metrics.add("edgefl_round_boards", "gauge", "Boards of the last round by outcome (refused: by the "
                        "board's resource guards; failed: every other failure).",
                        [({**task, "outcome": "ok"}, float(training.clients_ok)),
                         ({**task, "outcome": "failed"}, float(len(training.failures) - refused)),
                         ({**task, "outcome": "refused"}, float(refused))])
            if training.train_loss is not None:
                metrics.add("edgefl_train_loss", "gauge", "The boards' weighted mean training loss of the last round.",
                            [(task, training.train_loss)])
            if training.client_val_accuracy is not None:
                metrics.add("edgefl_client_val_accuracy_ratio", "gauge",
                            "The boards' weighted mean validation accuracy of the model the last round started from.",
                            [(task, training.client_val_accuracy)])
            if training.wall_seconds is not None:
                metrics.add("edgefl_round_duration_seconds", "gauge", "Wall time of the last round.",
                            [(task, training.wall_seconds)])
            metrics.add("edgefl_round_sent_bytes", "gauge", "Model bytes sent to the boards in the last round.",
                        [(task, float(training.bytes_sent))])
            metrics.add("edgefl_round_received_bytes", "gauge",
                        "Model bytes received from the boards in the last round.",
                        [(task, float(training.bytes_received))])

    def board_labels(board: BoardRecord) -> dict[str, str]:
        identity = board.identity
        return {**task, "node": str(board.node), "cid": "" if identity is None else str(identity.cid),
                "board": (identity.board or "") if identity is not None else ""}

    boards = fleet.boards
    metrics.add("edgefl_board_last_seen_timestamp_seconds", "gauge",
                "Unix time of the board's last reply (trained or refused).",
                [(board_labels(b), b.last_seen) for b in boards if b.last_seen is not None])
    metrics.add("edgefl_board_last_trained_round", "gauge", "The last round whose reply from the board was aggregated.",
                [(board_labels(b), float(b.last_trained)) for b in boards if b.last_trained is not None])
    metrics.add("edgefl_board_rounds_total", "counter", "Rounds the board was asked to train, by outcome.",
                [(dict(board_labels(b), outcome=outcome), float(count)) for b in boards
                 for outcome, count in (("ok", b.rounds_ok), ("failed", b.rounds_failed - b.rounds_refused),
                                        ("refused", b.rounds_refused))])
    return metrics.text()


def write_textfile(path: str | Path, text: str) -> None:
    """Atomically, readable by node_exporter's user (prometheus): StateWriteError when it cannot be written."""
    atomic_write_bytes(path, text.encode(), mode=0o644, durable=False)
