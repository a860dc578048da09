"""edgefld.apps.server_app.RoundRecorder: after each round, evaluate, checkpoint, record and log, in that order.

The recorder as Flower's strategy calls it (its evaluate_fn), with the real torch backend
on the digits task and a real state directory; no Flower grid is needed.
"""

from __future__ import annotations

import logging

import numpy as np

from edgefld.apps.server_app import RoundRecorder
from edgefld.apps.settings import RUN_CONFIG_DEFAULTS
from edgefld.apps.strategy import TIMEOUT_ERROR, ResumableFedAvg
from edgefld.apps.weights import record_from
from edgefld.backends.base import load_backend
from edgefld.backends.layout import task_layout
from edgefld.data import load_test
from edgefld.persist import load_latest_checkpoint, weights_digest
from edgefld.records import BoardIdentity
from edgefld.run_state import CHECKPOINT_DIR, RunState, run_identity
from edgefld.tasks import get_task

RUN = {**RUN_CONFIG_DEFAULTS, "task": "digits", "num-partitions": 2}


def test_a_round_is_evaluated_checkpointed_recorded_and_logged(tmp_path, caplog):
    task = get_task("digits")
    backend = load_backend("torch", "cpu", 1)
    start = backend.initial_weights(task, seed=42)
    state = RunState(tmp_path / "state", run_identity(RUN))
    strategy = ResumableFedAvg(round_offset=2, server_version="0")  # rounds 1 and 2 were done before
    strategy.boards[7] = BoardIdentity(0, "Raspberry Pi 5")
    stats = strategy._stats(3)
    stats.train_ok, stats.backends = 1, {"torch": 1}
    stats.train_metrics = {"train_loss": 0.5, "val_loss": 0.625, "val_accuracy": 0.75}
    stats.failures.append(strategy.failure(8, None, TIMEOUT_ERROR, "did not answer within the round timeout"))
    recorder = RoundRecorder(task=task, shapes=[spec.shape for spec in task_layout(task)], done=2, total_rounds=4,
                             strategy=strategy, state=state, start_model=start, eval_backend=backend,
                             test_set=load_test(task.dataset, str(tmp_path / "data")))
    assert recorder(0, record_from(start)) is None  # Flower's round 0: the starting model, already checkpointed
    assert state.rounds() == []

    produced = [w + np.float32(0.01) for w in start]
    with caplog.at_level(logging.INFO, logger="flwr"):
        metrics = recorder(1, record_from(produced))
    (record,) = state.rounds()
    assert (record.round, record.task) == (3, "digits")
    assert (record.start_model_sha256, record.model_sha256) == (weights_digest(start), weights_digest(produced))
    training, evaluation = record.training, record.evaluation
    assert training is not None and evaluation is not None
    assert (training.clients_ok, training.clients_failed, training.train_loss) == (1, 1, 0.5)
    assert training.failures[0].board_name() == "node 8 (cid ?, board unknown)"
    assert training.boards == {7: BoardIdentity(0, "Raspberry Pi 5")}
    assert evaluation.eval_samples == len(load_test(task.dataset, str(tmp_path / "data"))[1])
    assert metrics is not None and dict(metrics) == {"eval_loss": evaluation.eval_loss,
                                                     "eval_accuracy": evaluation.eval_accuracy}
    checkpoint, _ = load_latest_checkpoint(tmp_path / "state" / CHECKPOINT_DIR)
    assert checkpoint is not None and checkpoint.round == 3 and checkpoint.meta["record"] == record.to_json()
    assert [r.getMessage() for r in caplog.records if "round 3/4" in r.getMessage()] == [
        f"edgefl: round 3/4 done: 1 clients ok, 1 failed, eval accuracy {evaluation.eval_accuracy:.4f}"]

    # The next round starts from the model this one produced: the chain of digests is unbroken.
    recorder(2, record_from(produced))
    assert state.rounds()[1].start_model_sha256 == record.model_sha256
    assert state.rounds()[1].training is None  # the strategy saw nothing of that round here


def test_without_a_state_dir_or_an_evaluation_nothing_is_written(tmp_path):
    task = get_task("digits")
    start = [np.zeros(spec.shape, np.float32) for spec in task_layout(task)]
    recorder = RoundRecorder(task=task, shapes=[spec.shape for spec in task_layout(task)], done=0, total_rounds=1,
                             strategy=ResumableFedAvg(server_version="0"), state=None, start_model=start,
                             eval_backend=None, test_set=None)
    assert recorder(1, record_from(start)) is None
    assert list(tmp_path.iterdir()) == []
