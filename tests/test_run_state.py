"""edgefld.run_state: where a resubmitted run continues, and what the metrics log says then.

The one resume path: the server daemon and the ServerApp both go through RunState.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgefld.apps.settings import RUN_CONFIG_DEFAULTS
from edgefld.errors import EdgeflError
from edgefld.persist import append_jsonl, read_jsonl, save_checkpoint
from edgefld.records import BoardIdentity, RoundRecord, RoundTraining
from edgefld.run_state import CHECKPOINT_DIR, METRICS_FILE, RunState, RunStateError, read_rounds, run_identity

RUN = {**RUN_CONFIG_DEFAULTS, "task": "digits", "num-partitions": 2}


def _state(tmp_path, rounds: int) -> list[list[np.ndarray]]:
    models = []
    for round_ in range(rounds + 1):
        weights = [np.full((2, 2), round_, dtype=np.float32)]
        models.append(weights)
        record = {"round": round_} if round_ else None
        save_checkpoint(tmp_path / CHECKPOINT_DIR, round_, weights, {"identity": run_identity(RUN), "record": record})
        if record is not None:
            append_jsonl(tmp_path / METRICS_FILE, record)
    return models


def _run_state(tmp_path, run=RUN) -> RunState:
    return RunState(tmp_path, run_identity(run))


def test_resumes_from_the_newest_good_checkpoint_and_sets_later_rounds_aside(tmp_path):
    models = _state(tmp_path, 2)
    (tmp_path / CHECKPOINT_DIR / "round-000002.npz").write_bytes(b"garbage")
    point = _run_state(tmp_path).resume()
    assert point.round == 1 and point.weights is not None and point.weights[0].tobytes() == models[1][0].tobytes()
    assert len(point.problems) == 1 and point.problems[0].startswith(
        f"checkpoint {tmp_path / CHECKPOINT_DIR / 'round-000002.npz'} is unusable: ")
    # Round 2 runs again: its old line must not stay, or the log would hold round 2 twice.
    assert read_jsonl(tmp_path / METRICS_FILE) == ([{"round": 1}], [])
    assert read_jsonl(tmp_path / (METRICS_FILE + ".rejected")) == ([{"round": 2}], [])
    assert point.repair is not None and "set aside in metrics.jsonl.rejected" in point.repair


def test_restores_the_line_of_the_checkpointed_round_a_crash_lost(tmp_path):
    _state(tmp_path, 2)
    (tmp_path / METRICS_FILE).write_text('{"round": 1}\n{"round": 2, "tor')  # crash mid-append of round 2's line
    point = _run_state(tmp_path).resume()
    assert point.round == 2
    assert read_jsonl(tmp_path / METRICS_FILE) == ([{"round": 1}, {"round": 2}], [])


def test_a_clean_state_is_left_as_it_is(tmp_path):
    _state(tmp_path, 1)
    before = (tmp_path / METRICS_FILE).read_bytes()
    point = _run_state(tmp_path).resume()
    assert (point.round, point.problems, point.repair) == (1, [], None)
    assert (tmp_path / METRICS_FILE).read_bytes() == before
    assert not (tmp_path / (METRICS_FILE + ".rejected")).exists()


def test_an_empty_state_dir_starts_a_new_model(tmp_path):
    state = _run_state(tmp_path)
    point = state.resume()
    assert (point.round, point.weights, point.problems, point.repair) == (0, None, [], None)
    assert state.completed_rounds() == (0, []) and state.rounds() == [] and state.known_boards() == {}


def test_another_runs_state_is_refused_by_both_callers_with_one_error(tmp_path):
    _state(tmp_path, 1)
    other = _run_state(tmp_path, {**RUN, "task": "mnist"})
    for ask in (other.resume, other.completed_rounds):
        with pytest.raises(RunStateError) as info:
            ask()
        assert isinstance(info.value, EdgeflError)  # one line and the daemon's exit code, never a traceback
        assert str(info.value) == (
            f"{tmp_path} holds the state of another run ({run_identity(RUN)}); this config asks for "
            f"{run_identity({**RUN, 'task': 'mnist'})}: set another [server] state_dir or remove that one")
    assert read_jsonl(tmp_path / METRICS_FILE) == ([{"round": 1}], [])  # nothing touched


def test_a_saved_round_is_checkpointed_and_recorded_and_resumes_with_its_boards(tmp_path):
    state = _run_state(tmp_path)
    boards = {7: BoardIdentity(0, "Raspberry Pi 5"), 8: BoardIdentity(1, None)}
    training = RoundTraining(clients_ok=2, clients_failed=0, failures=(), train_loss=0.5, client_val_loss=0.5,
                             client_val_accuracy=0.5, client_train_seconds_max=1.0, client_startup_seconds_max=0.1,
                             client_handler_seconds_max=1.5, client_prepare_seconds_max=0.2, bytes_sent=10,
                             bytes_received=10, backends={"torch": 2}, wall_seconds=2.0, boards=boards)
    record = RoundRecord(round=1, task="digits", time=1.0, start_model_sha256="a", model_sha256="b",
                         training=training)
    state.save_round(0, [np.zeros(2, np.float32)], None)
    state.save_round(1, [np.ones(2, np.float32)], record)
    assert read_rounds(tmp_path / METRICS_FILE) == state.rounds() == [record]
    assert state.known_boards() == boards
    (tmp_path / METRICS_FILE).unlink()  # lost: the checkpoint holds the record too
    point = state.resume()
    assert point.round == 1 and point.weights is not None and point.weights[0].tolist() == [1.0, 1.0]
    assert state.rounds() == [record]
