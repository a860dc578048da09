"""The ServerApp: FedAvg over the boards, centralised evaluation, a checkpoint every round.

With a ``state-dir`` in the run config, the global model is checkpointed after
every round (atomically) and one JSON line per round is appended to
``metrics.jsonl``; a resubmitted run continues after the last checkpointed
round instead of starting again. Without one (simulation) nothing is written.
"""

from __future__ import annotations

import time
from logging import ERROR, INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from edgefld.apps import settings
from edgefld.flower_compat import fast_grid_polls, patient_node_waits
from edgefld.apps.records import record_from, weights_from
from edgefld.apps.strategy import ResumableFedAvg

app = ServerApp()

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


class RunStateError(Exception):
    """The state directory holds another run's state (a different task or partitioning)."""


# The line the daemon looks for in a failed run's log: the state directory cannot be written
# (disk full, read-only), which no resubmission fixes.
STATE_WRITE_FAILED = "edgefl: state write failed: "


def run_identity(run: dict[str, Any]) -> dict[str, Any]:
    """What must match for a checkpoint to continue this run."""
    return {"task": str(run["task"]), "num-partitions": int(run["num-partitions"]),
            "partition-seed": int(run["partition-seed"])}


def resume_point(state_dir: Path, run: dict[str, Any]) -> tuple[int, list | None]:
    """(last completed round, its weights) from the newest good checkpoint, reconciling metrics.jsonl."""
    from edgefld.persist import load_latest_checkpoint, reconcile_metrics

    checkpoint, problems = load_latest_checkpoint(state_dir / CHECKPOINT_DIR)
    for problem in problems:
        log(WARNING, "edgefl: %s; using the one before", problem)
    if checkpoint is None:
        return 0, None
    identity = run_identity(run)
    stored = checkpoint.meta.get("identity")
    if stored != identity:
        raise RunStateError(
            f"{state_dir} holds a checkpoint of another run ({stored}), not of {identity}: "
            "use another state_dir or remove that one"
        )
    # The checkpoint is written before the metrics line: a crash between the two leaves the line
    # missing, and it is restored from the checkpoint, so no round is lost. Lines after the
    # checkpoint (its successors were unusable) and torn lines are set aside: no round twice.
    note = reconcile_metrics(state_dir / METRICS_FILE, checkpoint.round, checkpoint.meta.get("record"))
    if note:
        log(WARNING, "edgefl: %s", note)
    return checkpoint.round, checkpoint.weights


def known_boards(metrics_path: Path) -> dict[int, dict[str, Any]]:
    """The boards by node id as the last round recorded them (see evaluate_fn)."""
    from edgefld.persist import read_jsonl

    records, _ = read_jsonl(metrics_path)
    boards = records[-1].get("boards") if records else None
    if not isinstance(boards, dict):
        return {}
    return {int(node): board for node, board in boards.items() if node.lstrip("-").isdigit() and isinstance(board, dict)}


@app.main()
def main(grid: Grid, context: Context) -> None:
    from edgefld.errors import StateWriteError

    try:
        _main(grid, context)
    except StateWriteError as exc:
        # One line, no traceback: the run ends here and the daemon reports this line.
        log(ERROR, "%s%s", STATE_WRITE_FAILED, exc)


def _main(grid: Grid, context: Context) -> None:
    from edgefld.persist import weights_digest
    from edgefld.tasks import get_task

    run = {**settings.RUN_CONFIG_DEFAULTS, **context.run_config}
    task = get_task(str(run["task"]))
    total_rounds = int(run["num-rounds"])
    state_dir = Path(str(run["state-dir"])) if run["state-dir"] else None
    data_dir = str(run["data-dir"])
    eval_backend = None
    if run["eval-backend"]:
        from edgefld.backends.base import load_backend

        eval_backend = load_backend(str(run["eval-backend"]))

    done, weights = resume_point(state_dir, run) if state_dir else (0, None)
    if done >= total_rounds:
        log(INFO, "edgefl: all %d rounds are done already", total_rounds)
        return
    if weights is None:
        if eval_backend is None:
            raise RunStateError("no eval-backend to create the initial model with")
        weights = eval_backend.initial_weights(task, seed=int(run["partition-seed"]))
        if state_dir:
            from edgefld.persist import save_checkpoint

            save_checkpoint(state_dir / CHECKPOINT_DIR, 0, weights,
                            {"identity": run_identity(run), "record": None})
    from edgefld.backends.layout import task_layout

    shapes = [spec.shape for spec in task_layout(task)]
    log(INFO, "edgefl: task %s, rounds %d..%d of %d, weights sent as %s", task.name, done + 1, total_rounds,
        total_rounds, run["transport-dtype"])
    # Each round's record names the global model it started from and the one it produced, so the
    # metrics log shows an unbroken chain across restarts and matches the checkpoints' digests.
    model_digest = [weights_digest(weights)]

    test_set = None
    if eval_backend is not None and data_dir:
        from edgefld.data import load_test

        test_set = load_test(task.dataset, data_dir)

    if float(run["grid-poll"]) > 0:
        fast_grid_polls(grid, float(run["grid-poll"]))
    patient_node_waits()
    min_clients = int(run["min-clients"])
    fraction = float(run["sample-fraction"])
    strategy = ResumableFedAvg(
        round_offset=done,
        server_version=str(run["server-version"]),
        transport_dtype=str(run["transport-dtype"]),
        fraction_train=fraction,
        # The boards evaluate the global model they receive inside the train message (see
        # client_app.train), so no separate evaluate round trip (and ClientApp start) is needed.
        fraction_evaluate=0.0,
        min_train_nodes=min_clients,
        min_available_nodes=min_clients,
    )
    if state_dir:
        strategy.boards.update(known_boards(state_dir / METRICS_FILE))

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None  # the starting model: evaluated when it was checkpointed
        true_round = server_round + done
        stats = strategy.stats.get(true_round)
        produced = weights_from(arrays, shapes)
        record: dict[str, Any] = {"round": true_round, "task": task.name, "time": time.time(),
                                  "start_model_sha256": model_digest[0], "model_sha256": weights_digest(produced)}
        if stats is not None:
            record.update({
                "clients_ok": stats.train_ok, "clients_failed": len([f for f in stats.failures if f["phase"] == "train"]),
                "failures": stats.failures, "train_loss": stats.train_metrics.get("train_loss"),
                # The boards' validation of the model this round started from (the previous global model).
                "client_val_loss": stats.train_metrics.get("val_loss"),
                "client_val_accuracy": stats.train_metrics.get("val_accuracy"),
                "client_train_seconds_max": round(stats.client_seconds_max, 3),
                "client_startup_seconds_max": round(stats.client_startup_seconds_max, 3),
                "client_handler_seconds_max": round(stats.client_handler_seconds_max, 3),
                "client_prepare_seconds_max": round(stats.client_prepare_seconds_max, 3),
                "bytes_sent": stats.bytes_sent, "bytes_received": stats.bytes_received,
                "backends": stats.backends, "wall_seconds": round(time.time() - stats.started, 3),
                # Every board seen so far by node id: names the failures of later rounds, across restarts.
                "boards": {str(node): board for node, board in sorted(strategy.boards.items())},
            })
        metrics: dict[str, float] = {}
        if test_set is not None and eval_backend is not None:
            result = eval_backend.evaluate(task, produced, *test_set)
            record.update({"eval_loss": result.loss, "eval_accuracy": result.accuracy,
                           "eval_samples": result.num_examples})
            metrics = {"eval_loss": result.loss, "eval_accuracy": result.accuracy}
        if state_dir:
            from edgefld.persist import append_jsonl, save_checkpoint

            save_checkpoint(state_dir / CHECKPOINT_DIR, true_round, produced,
                            {"identity": run_identity(run), "record": record})
            append_jsonl(state_dir / METRICS_FILE, record)
        model_digest[0] = record["model_sha256"]
        log(INFO, "edgefl: round %d/%d done: %s clients ok, %s failed, eval accuracy %s",
            true_round, total_rounds, record.get("clients_ok"), record.get("clients_failed"),
            f"{record['eval_accuracy']:.4f}" if "eval_accuracy" in record else "n/a")
        return MetricRecord(metrics) if metrics else None

    strategy.start(
        grid=grid,
        initial_arrays=record_from(weights),
        num_rounds=total_rounds - done,
        timeout=float(run["round-timeout"]),
        train_config=ConfigRecord({"local-epochs": int(run["local-epochs"])}),
        evaluate_fn=evaluate_fn,
    )
