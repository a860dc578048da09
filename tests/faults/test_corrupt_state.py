"""The server starts on damaged state: its newest checkpoint and its metrics log are corrupt.

The state is what a server leaves after 2 rounds (checkpoints 0-2, metrics lines 1-2,
written with edgefld.persist), then damaged as a power cut or a bad card would. The server
must say what it found in one line each, resume from the newest checkpoint that verifies
(round 1), run round 2 again, and leave a metrics log with each round once.
"""

from __future__ import annotations

import os
import time

import pytest

from edgefld.apps.settings import RUN_CONFIG_DEFAULTS
from edgefld.persist import append_jsonl, save_checkpoint, weights_digest
from edgefld.run_state import run_identity
from tests.faults.conftest import say
from tests.faults.helpers import assert_model_chain, checkpoint_of, checkpoints_dir, rounds
from tests.service.test_persist import _corrupt as corrupt_checkpoint

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.slow]

CASES = {
    # name: (how checkpoint 2 is damaged, how the metrics log is damaged)
    "truncated-checkpoint+torn-metrics-line": ("truncated", "torn"),
    "bad-digest-checkpoint+garbage-metrics-bytes": ("flipped-byte-crc-fixed", "garbage"),
}


def _write_two_rounds(fed) -> list[str]:
    """Checkpoints 0..2 and metrics lines 1..2 as the ServerApp writes them; the models' digests."""
    from edgefld.backends.base import load_backend
    from edgefld.tasks import get_task

    weights = load_backend("torch").initial_weights(get_task("digits"), seed=RUN_CONFIG_DEFAULTS["partition-seed"])
    identity = run_identity({**RUN_CONFIG_DEFAULTS, "task": "digits", "num-partitions": 2})
    digests = [weights_digest(weights)]
    save_checkpoint(checkpoints_dir(fed), 0, weights, {"identity": identity, "record": None})
    for round_ in (1, 2):
        weights = [w + 0.01 * round_ for w in weights]  # a model the round "trained"
        record = {"round": round_, "task": "digits", "time": time.time(), "clients_ok": 1, "clients_failed": 0,
                  "failures": [], "start_model_sha256": digests[-1], "model_sha256": weights_digest(weights)}
        digests.append(record["model_sha256"])
        save_checkpoint(checkpoints_dir(fed), round_, weights, {"identity": identity, "record": record})
        append_jsonl(fed.metrics_path, record)
    return digests


@pytest.mark.parametrize("case", list(CASES))
def test_corrupt_state_at_start(federation, fault_row, case):
    checkpoint_damage, metrics_damage = CASES[case]
    fault_row.injected = f"checkpoint 2 {checkpoint_damage}; metrics.jsonl {metrics_damage}"
    fed = federation(task="digits", num_partitions=2, rounds=2, min_clients=1, local_epochs=1)
    digests = _write_two_rounds(fed)
    expected = corrupt_checkpoint(checkpoints_dir(fed) / "round-000002.npz", checkpoint_damage)
    if metrics_damage == "torn":
        with open(fed.metrics_path, "ab") as handle:
            handle.write(b'{"round": 3, "clients_ok": 1, "tra')  # the power went out mid-append
    else:
        text = fed.metrics_path.read_bytes().splitlines(keepends=True)
        fed.metrics_path.write_bytes(text[0] + os.urandom(40).replace(b"\n", b"x") + b"\n" + text[1])
    say(f"state: checkpoints 0-2, metrics rounds 1-2; damaged: {fault_row.injected}")

    server = fed.start_server()
    started = time.monotonic()
    client = fed.start_client(0)
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=240)
    assert server.process.returncode == 0, server.log()
    log = server.log()
    checkpoint_lines = [line for line in log.splitlines() if "is unusable" in line]
    metrics_lines = [line for line in log.splitlines() if "metrics.jsonl:" in line]
    for line in checkpoint_lines + metrics_lines:
        say(f"server reported: {line}")
    # Each damage is reported once, in one line, saying what is wrong.
    assert len(checkpoint_lines) == 1 and "round-000002.npz is unusable: " in checkpoint_lines[0], log
    assert expected in checkpoint_lines[0] and checkpoint_lines[0].endswith("; using the one before")
    assert len(metrics_lines) == 1, log
    assert "not a JSON record" in metrics_lines[0] or "not JSON records" in metrics_lines[0]
    assert "round 2 after the last usable checkpoint" in metrics_lines[0]
    assert "Traceback" not in log
    assert "task digits: rounds 2..2" in log  # resumed from checkpoint 1, the newest good one

    records = fed.metrics()
    assert rounds(fed) == [1, 2], records  # round 2 once: the abandoned line was set aside, not kept
    assert_model_chain(records)
    assert records[1]["start_model_sha256"] == digests[1]  # round 2 ran again from checkpoint 1
    assert records[1]["model_sha256"] != digests[2]
    assert checkpoint_of(fed, 2).meta["sha256"] == records[1]["model_sha256"]  # the damaged file replaced
    rejected = (fed.metrics_path.parent / "metrics.jsonl.rejected").read_text(errors="replace")
    assert f'"model_sha256": "{digests[2]}"' in rejected  # the abandoned round 2 kept aside, not lost
    assert client.alive()
    fault_row.happened = ("both reported in one line each; resumed from checkpoint 1; round 2 re-run; "
                          "metrics rounds 1,2 once each (bad lines in metrics.jsonl.rejected)")
    fault_row.rounds_lost = "0 (round 2 re-trained: its checkpoint was the damaged one)"
    fault_row.recover_s = f"{time.monotonic() - started:.1f} (start -> run complete)"
