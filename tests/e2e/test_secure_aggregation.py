"""Secure aggregation (Flower's SecAgg+) in a real federation: it trains, the ServerApp never holds one
board's update, and a board dropping out mid-protocol is survived above the reconstruction threshold and
fails the round with one line below it.

What the ServerApp received is written by its grid wrapper when $EDGEFL_SECAGG_RECEIVED_DIR is set
(edgefld.apps.secure_aggregation._StageLog): every array and every byte vector of every board's
masked-vector reply. The boards' own updates are recomputed here: they train deterministically (seeded
by the round, one thread), so this process can train each board's partition from the round's starting
model and get the update that board masked.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from edgefld.apps.secure_aggregation import RECEIVED_DIR_ENV, received_arrays
from edgefld.backends.base import load_backend
from edgefld.backends.catalog import installed_backends
from edgefld.backends.layout import task_layout
from edgefld.data import load_partition
from edgefld.run_state import stored_checkpoint
from edgefld.tasks import get_task
from tests.faults.helpers import children_running, cpu_seconds, error_lines, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BOARDS = 3
QUANTIZATION_RANGE = 2**22  # [server.secagg] quantization_range's default
SECURE = {"secure_aggregation": True, "task": "digits", "num_partitions": BOARDS, "local_epochs": 1}


def _flat(weights) -> np.ndarray:
    return np.concatenate([np.ravel(w) for w in weights]).astype(np.float32)


def _clean_logs(fed) -> None:
    for daemon in fed.daemons:
        assert " ERROR " not in daemon.log() and "Traceback" not in daemon.log(), (daemon.name, daemon.log()[-4000:])


def test_secure_aggregation_trains_and_the_server_app_sees_only_masked_vectors(federation, tmp_path):
    received_dir = tmp_path / "received"
    received_dir.mkdir()
    fed = federation(rounds=3, min_clients=BOARDS, client_config={"backend": "torch"}, **SECURE)
    server = fed.start_server(env={RECEIVED_DIR_ENV: str(received_dir)})
    for cid in range(BOARDS):
        fed.start_client(cid)
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=240)
    assert server.process.returncode == 0, server.log()
    _clean_logs(fed)

    # (a) It trains: every round aggregated all three boards, and the accuracy rose.
    records = fed.metrics()
    assert [r["round"] for r in records] == [1, 2, 3]
    assert all(r["clients_ok"] == BOARDS and r["clients_failed"] == 0 for r in records), records
    accuracy = [r["eval_accuracy"] for r in records]
    print(f"\nsecure aggregation, digits, {BOARDS} boards: eval accuracy per round {accuracy}")
    assert accuracy[-1] > accuracy[0] and accuracy[-1] > 0.5, accuracy

    # (b) What the ServerApp received from each board in round 3: no array, only the masked vector.
    received = {stem: arrays for stem, arrays in received_arrays(str(received_dir)).items()
                if stem.startswith("round-3-")}
    assert len(received) == BOARDS, sorted(received)
    task = get_task("digits")
    start = _flat(stored_checkpoint(fed.root / "server", 2).checkpoint.weights)
    end = _flat(stored_checkpoint(fed.root / "server", 3).checkpoint.weights)
    # Each board's own update, as it trained it: its partition, the round's model, seeded by the round.
    backend = load_backend("torch", "cpu", 1)
    shapes = [spec.shape for spec in task_layout(task)]
    offsets = np.cumsum([0, *[int(np.prod(s)) for s in shapes]])
    start_weights = [start[a:b].reshape(s) for a, b, s in zip(offsets[:-1], offsets[1:], shapes, strict=True)]
    updates, samples = [], []
    for cid in range(BOARDS):
        part = load_partition("digits", fed.data_dir, cid, BOARDS, 42, "iid", 0.5)
        result = backend.train(task, start_weights, part.train_x, part.train_y, epochs=1, batch_size=16, seed=3,
                               proximal_mu=0.0)
        updates.append(_flat(result.weights) - start)
        samples.append(result.num_examples)
    plain_average = sum(n * u for n, u in zip(samples, updates, strict=True)) / sum(samples)
    aggregate = end - start
    # The unmasked sum the server used is the boards' weighted average update, to within quantisation
    # (the clipping range is the model's largest weight; each board's update is scaled by samples/max_weight).
    step = 2 * float(np.max(np.abs(start))) / QUANTIZATION_RANGE * 10_000 / min(samples)
    error = float(np.max(np.abs(aggregate - plain_average)))
    print(f"largest difference between the unmasked aggregate and the plain weighted average: {error:.2e} "
          f"(quantisation step {step:.2e}); largest update value {float(np.max(np.abs(plain_average))):.3f}")
    assert error < 4 * step
    for stem, arrays in received.items():
        # Flower's mod emptied the reply's arrays: the update travels only as the masked vector.
        assert all(array.size == 0 for key, array in arrays.items() if not key.startswith("secaggplus_configs/")), stem
        (masked,) = [a for key, a in arrays.items() if key.startswith("secaggplus_configs/") and a.size == start.size]
        # A quantised update lies in [0, quantization_range); the masks spread the vector over [0, 2^32).
        assert masked.min() >= 0 and masked.max() < 2**32
        assert np.mean(masked >= QUANTIZATION_RANGE) > 0.99, stem
        # As floats, the received vector has nothing of any board's update (nor of the aggregate).
        centred = masked.astype(np.float64) - masked.mean()
        for update in [*updates, aggregate]:
            correlation = float(np.corrcoef(centred, update)[0, 1])
            assert abs(correlation) < 0.1, (stem, correlation)
    # Nor does their sum: the boards' private masks come off only with the shares of the unmask stage.
    total = sum(next(a for k, a in arrays.items() if k.startswith("secaggplus_configs/") and a.size == start.size)
                for arrays in received.values()) % 2**32
    assert np.mean(total >= BOARDS * QUANTIZATION_RANGE) > 0.99


def _training(daemon, cpu_s: float = 0.3) -> bool:
    """Whether the board's ClientApp has trained ``cpu_s`` of CPU time: the masked-vector stage, the one
    that trains (the key stages take a few hundredths of a second)."""
    return any(cpu_seconds(pid) >= cpu_s for pid in children_running(daemon, b"flwr-clientapp"))


@pytest.mark.parametrize("threshold,completes", [(0.67, True), (1.0, False)], ids=["above", "below"])
def test_a_board_dropping_out_mid_protocol(federation, threshold, completes):
    """Three boards (fedavgm); board 2's daemon is SIGKILLed while it trains round 2 (between the key exchange and its
    masked vector). With 2 of 3 shares needed, the two others' shares rebuild its keys and the round
    aggregates them; with 3 of 3 the round fails with one WARNING line and the model stays as it was."""
    # 100 epochs: seconds of training per round, so the kill lands in the masked-vector stage.
    # FedAvgM: a Flower strategy with server state, which works on the unmasked average as on a plain round.
    fed = federation(rounds=2, min_clients=BOARDS, round_timeout=60.0, client_config={"backend": "torch"},
                     strategy={"name": "fedavgm"}, **{**SECURE, "local_epochs": 100})
    fed.secagg_config = {"reconstruction_threshold": threshold}
    fed.write_config()
    server = fed.start_server()
    clients = [fed.start_client(cid) for cid in range(BOARDS)]
    fed.wait_for("round 1 in the metrics", lambda: len(fed.metrics()) >= 1, timeout=180)
    assert wait_until(lambda: _training(clients[2]), 60, 0.02) is not None, "board 2 never trained round 2"
    assert len(fed.metrics()) == 1, "round 2 was over before board 2 could be killed in it"
    os.kill(clients[2].process.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=180)
    assert server.process.returncode == 0, server.log()
    assert error_lines(fed.root) == []
    first, second = fed.metrics()
    assert first["clients_ok"] == BOARDS
    dropped = [(f["cid"], f["phase"]) for f in second["failures"] if f["phase"] == "train"]
    print(f"\nthreshold {threshold}: round 2 {second['clients_ok']} ok, failures {second['failures']}, "
          f"{time.monotonic() - killed_at:.1f} s from the kill to the end of the run")
    halted = [line for line in server.log().splitlines() if "round failed: secure aggregation" in line]
    assert set(stored_checkpoint(fed.root / "server").checkpoint.state) == {"momentum_vector/0"}
    if completes:
        assert second["clients_ok"] == BOARDS - 1 and dropped == [(2, "train")], second
        assert second["model_sha256"] != second["start_model_sha256"]
        assert halted == []
    else:
        assert second["clients_ok"] == 0 and dropped == [(2, "train")], second
        assert second["model_sha256"] == second["start_model_sha256"]  # the global model is unchanged
        assert second["trained"] == {} and second["backends"] == {}  # nothing of the others was aggregated
        assert len(halted) == 1, server.log()
        assert "every board needs 3 of its share holders" in halted[0], halted


MIXED = ("torch", "tensorflow", "litert")


@pytest.mark.skipif(not set(MIXED) <= installed_backends(), reason=f"needs every backend: {', '.join(MIXED)}")
def test_mixed_backends_with_float16_transport_train_under_secure_aggregation(federation):
    """One board per backend, the model sent as float16: every backend's update is masked on the same
    clipping range (from the model's weights) and quantisation, and the sum is the one model."""
    fed = federation(rounds=2, min_clients=BOARDS, transport_dtype="float16", **SECURE)
    server = fed.start_server()
    for cid, name in enumerate(MIXED):
        fed.start_client(cid, "--backend", name)
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=300)
    assert server.process.returncode == 0, server.log()
    _clean_logs(fed)
    records = fed.metrics()
    assert all(r["clients_ok"] == BOARDS and r["backends"] == {name: 1 for name in MIXED} for r in records), records
    accuracy = [r["eval_accuracy"] for r in records]
    print(f"\nsecure aggregation, {', '.join(MIXED)}, float16 transport: eval accuracy per round {accuracy}")
    assert accuracy[-1] > accuracy[0] and accuracy[-1] > 0.4, accuracy


def test_local_dp_clips_each_update_before_it_is_masked(federation):
    """[server.dp] mode "local" with secure aggregation: each board clips its update (Flower's fixedclipping_mod)
    before SecAgg+ masks it, so the unmasked average is within the clipping norm (no noise here: multiplier 0);
    a round of digits moves the model by far more unclipped (norm 0.2 and up)."""
    fed = federation(rounds=2, min_clients=BOARDS, client_config={"backend": "torch"}, **SECURE)
    fed.dp_config = {"mode": "local", "clipping_norm": 0.01, "noise_multiplier": 0.0}
    fed.write_config()
    server = fed.start_server()
    for cid in range(BOARDS):
        fed.start_client(cid)
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=240)
    assert server.process.returncode == 0, server.log()
    _clean_logs(fed)
    assert [r["clients_ok"] for r in fed.metrics()] == [BOARDS, BOARDS]
    first, second = (_flat(stored_checkpoint(fed.root / "server", n).checkpoint.weights) for n in (1, 2))
    norm = float(np.linalg.norm(second - first))
    print(f"\nlocal DP under secure aggregation: round 2 moved the model by {norm:.5f} (clipping norm 0.01)")
    assert 0 < norm <= 0.01 * 1.02
