"""edgefld.apps.server_app.resume_point: where a resubmitted run continues, and what the metrics log says then."""

from __future__ import annotations

import numpy as np

from edgefld.apps.server_app import CHECKPOINT_DIR, METRICS_FILE, resume_point, run_identity
from edgefld.apps.settings import RUN_CONFIG_DEFAULTS
from edgefld.persist import append_jsonl, read_jsonl, save_checkpoint

RUN = {**RUN_CONFIG_DEFAULTS, "task": "digits", "num-partitions": 2}


def _state(tmp_path, rounds: int) -> list[list[np.ndarray]]:
    models = []
    for round_ in range(rounds + 1):
        weights = [np.full((2, 2), round_, dtype=np.float32)]
        models.append(weights)
        record = {"round": round_} if round_ else None
        save_checkpoint(tmp_path / CHECKPOINT_DIR, round_, weights, {"identity": run_identity(RUN), "record": record})
        if round_:
            append_jsonl(tmp_path / METRICS_FILE, record)
    return models


def test_resumes_from_the_newest_good_checkpoint_and_sets_later_rounds_aside(tmp_path):
    models = _state(tmp_path, 2)
    (tmp_path / CHECKPOINT_DIR / "round-000002.npz").write_bytes(b"garbage")
    done, weights = resume_point(tmp_path, RUN)
    assert done == 1 and weights[0].tobytes() == models[1][0].tobytes()
    # Round 2 runs again: its old line must not stay, or the log would hold round 2 twice.
    assert read_jsonl(tmp_path / METRICS_FILE) == ([{"round": 1}], [])
    assert read_jsonl(tmp_path / (METRICS_FILE + ".rejected")) == ([{"round": 2}], [])


def test_restores_the_line_of_the_checkpointed_round_a_crash_lost(tmp_path):
    _state(tmp_path, 2)
    (tmp_path / METRICS_FILE).write_text('{"round": 1}\n{"round": 2, "tor')  # crash mid-append of round 2's line
    done, _ = resume_point(tmp_path, RUN)
    assert done == 2
    assert read_jsonl(tmp_path / METRICS_FILE) == ([{"round": 1}, {"round": 2}], [])


def test_a_clean_state_is_left_as_it_is(tmp_path):
    _state(tmp_path, 1)
    before = (tmp_path / METRICS_FILE).read_bytes()
    assert resume_point(tmp_path, RUN)[0] == 1
    assert (tmp_path / METRICS_FILE).read_bytes() == before
    assert not (tmp_path / (METRICS_FILE + ".rejected")).exists()
