"""The ServerApp: the run's strategy (Flower's FedAvg, FedProx, FedAdam, ...) over the boards,
centralised evaluation, a checkpoint every round; with [server] secure_aggregation, each round's
training goes through Flower's SecAgg+ (edgefld.apps.secure_aggregation).

With a ``state-dir`` in the run config, the global model is checkpointed after
every round (atomically) and one JSON line per round is appended to
``metrics.jsonl`` (edgefld.run_state); a resubmitted run continues after the last
checkpointed round instead of starting again. Without one (simulation) nothing
is written.
"""

from __future__ import annotations

import time
from dataclasses import replace
from logging import ERROR, INFO, WARNING
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from edgefld.apps import settings
from edgefld.apps.secure_aggregation import SecureAggregation, run_secure_rounds
from edgefld.apps.strategy import ResumableStrategy, make_strategy
from edgefld.apps.weights import record_from, weights_from
from edgefld.flower_compat import abandon_uploads_of_nodes_that_left, fast_grid_polls, patient_node_waits
from edgefld.records import Evaluation, RoundRecord
from edgefld.run_state import STATE_WRITE_FAILED, RunState, RunStateError, run_identity

if TYPE_CHECKING:
    import numpy as np

    from edgefld.backends.base import Backend, Weights
    from edgefld.tasks import Task

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    from edgefld.errors import StateWriteError

    try:
        _main(grid, context)
    except StateWriteError as exc:
        # One line, no traceback: the run ends here and the daemon reports this line.
        log(ERROR, "%s%s", STATE_WRITE_FAILED, exc)


def _main(grid: Grid, context: Context) -> None:
    from edgefld.backends.layout import task_layout
    from edgefld.tasks import get_task

    run = {**settings.RUN_CONFIG_DEFAULTS, **context.run_config}
    task = get_task(str(run["task"]))
    total_rounds = int(run["num-rounds"])
    state = RunState(Path(str(run["state-dir"])), run_identity(run)) if run["state-dir"] else None
    eval_backend = _load_backend(str(run["eval-backend"]))

    done, weights, optimizer_state = _resume(state)
    if done >= total_rounds:
        log(INFO, "edgefl: all %d rounds are done already", total_rounds)
        return
    if weights is None:
        if eval_backend is None:
            raise RunStateError("no eval-backend to create the initial model with")
        weights = eval_backend.initial_weights(task, seed=int(run["partition-seed"]))
        if state is not None:
            state.save_round(0, weights, None)
    log(INFO, "edgefl: task %s, strategy %s, rounds %d..%d of %d, weights sent as %s", task.name, run["strategy"],
        done + 1, total_rounds, total_rounds, run["transport-dtype"])

    strategy = _strategy(run, done)
    if optimizer_state:
        try:
            strategy.load_optimizer_state(optimizer_state)
        except ValueError as exc:  # the run was continued with another strategy: its optimiser starts afresh
            log(WARNING, "edgefl: %s; the %s optimiser starts afresh", exc, run["strategy"])
    if state is not None:
        strategy.boards.update(state.known_boards())
    recorder = RoundRecorder(task=task, shapes=[spec.shape for spec in task_layout(task)], done=done,
                             total_rounds=total_rounds, strategy=strategy, state=state, start_model=weights,
                             eval_backend=eval_backend, test_set=_test_set(eval_backend, task, str(run["data-dir"])))
    if float(run["grid-poll"]) > 0:
        fast_grid_polls(grid, float(run["grid-poll"]))
    abandon_uploads_of_nodes_that_left(grid)
    patient_node_waits()
    rounds: dict[str, Any] = dict(
        grid=grid,
        initial_arrays=record_from(weights),
        num_rounds=total_rounds - done,
        timeout=float(run["round-timeout"]),
        train_config=ConfigRecord({"local-epochs": int(run["local-epochs"])}),
        evaluate_fn=recorder,
    )
    secure = SecureAggregation.from_run(run)
    if secure is None:
        strategy.start(**rounds)
    else:  # each round's training through Flower's SecAgg+: the strategy gets only the sum
        run_secure_rounds(context=context, strategy=strategy, secure=secure, **rounds)


class RoundRecorder:
    """What follows each round: evaluate the new global model, checkpoint it, record the round, log it.

    Flower's strategy calls it as its ``evaluate_fn`` with the model it aggregated. Each round's
    record names the global model it started from and the one it produced, so the metrics log
    shows an unbroken chain across restarts and matches the checkpoints' digests.
    """

    def __init__(self, *, task: Task, shapes: list[tuple[int, ...]], done: int, total_rounds: int,
                 strategy: ResumableStrategy, state: RunState | None, start_model: Weights,
                 eval_backend: Backend | None, test_set: tuple[np.ndarray, np.ndarray] | None) -> None:
        from edgefld.persist import weights_digest

        self.task = task
        self.shapes = shapes
        self.done = done  # rounds completed before this run: Flower counts this run's rounds from 1
        self.total_rounds = total_rounds
        self.strategy = strategy
        self.state = state
        self.eval_backend = eval_backend
        self.test_set = test_set
        self.model_digest = weights_digest(start_model)

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None  # the starting model: evaluated when it was checkpointed
        from edgefld.persist import weights_digest

        true_round = server_round + self.done
        weights = weights_from(arrays, self.shapes)
        digest = weights_digest(weights)
        record = self.record(true_round, digest)  # before evaluating: the round's wall time excludes it
        evaluation = self.evaluate(weights)
        record = replace(record, evaluation=evaluation)
        if self.state is not None:
            # The checkpoint (with the optimiser's state after this round), then the metrics line.
            self.state.save_round(true_round, weights, record, self.strategy.optimizer_state())
        self.model_digest = digest
        self.log(record)
        if evaluation is None:
            return None
        return MetricRecord({"eval_loss": evaluation.eval_loss, "eval_accuracy": evaluation.eval_accuracy})

    def record(self, true_round: int, model_digest: str) -> RoundRecord:
        stats = self.strategy.stats.get(true_round)
        return RoundRecord(round=true_round, task=self.task.name, time=time.time(),
                           start_model_sha256=self.model_digest, model_sha256=model_digest,
                           training=None if stats is None else stats.training(self.strategy.boards))

    def evaluate(self, weights: Weights) -> Evaluation | None:
        if self.eval_backend is None or self.test_set is None:
            return None
        result = self.eval_backend.evaluate(self.task, weights, *self.test_set)
        return Evaluation(eval_loss=result.loss, eval_accuracy=result.accuracy, eval_samples=result.num_examples)

    def log(self, record: RoundRecord) -> None:
        training, evaluation = record.training, record.evaluation
        log(INFO, "edgefl: round %d/%d done: %s clients ok, %s failed, eval accuracy %s",
            record.round, self.total_rounds, training.clients_ok if training else None,
            training.clients_failed if training else None,
            f"{evaluation.eval_accuracy:.4f}" if evaluation is not None else "n/a")


def _resume(state: RunState | None) -> tuple[int, Weights | None, dict[str, np.ndarray]]:
    """(last completed round, its global model, the server optimiser's state then) from the state
    directory; (0, None, {}) without one."""
    if state is None:
        return 0, None, {}
    point = state.resume()
    for problem in point.problems:
        log(WARNING, "edgefl: %s; using the one before", problem)
    if point.repair:
        log(WARNING, "edgefl: %s", point.repair)
    return point.round, point.weights, point.optimizer_state


def _load_backend(name: str) -> Backend | None:
    if not name:
        return None
    from edgefld.backends.base import load_backend

    return load_backend(name)


def _test_set(eval_backend: Backend | None, task: Task, data_dir: str) -> tuple[np.ndarray, np.ndarray] | None:
    if eval_backend is None or not data_dir:
        return None
    from edgefld.data import load_test

    return load_test(task.dataset, data_dir)


def _strategy(run: dict[str, Any], done: int) -> ResumableStrategy:
    min_clients = int(run["min-clients"])
    return make_strategy(
        run,
        round_offset=done,
        server_version=str(run["server-version"]),
        transport_dtype=str(run["transport-dtype"]),
        fraction_train=float(run["sample-fraction"]),
        # The boards evaluate the global model they receive inside the train message (see
        # client_app.train), so no separate evaluate round trip (and ClientApp start) is needed.
        fraction_evaluate=0.0,
        min_train_nodes=min_clients,
        min_available_nodes=min_clients,
    )
