"""Flower's stateful strategies in a real federation: a server killed and restarted continues the run with
the optimiser state it checkpointed, so the final model is bit for bit the one an uninterrupted run reaches.

Each strategy runs twice on the same partitions: once straight through, once with the server SIGKILLed once
round 2 is in the metrics and started again. The boards train deterministically (seeded, one thread) and
the server aggregates in the boards' order, so the two final models' digests must be equal; without the
checkpointed state (FedAdam's moments restarting from zero, FedAvgM's momentum) they differ.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgefld.run_state import stored_checkpoint

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROUNDS = 4
STATEFUL = {
    "fedavgm": {"server_momentum": 0.9},
    "fedadam": {"eta": 0.01},
    "fedyogi": {"eta": 0.01},
    "fedadagrad": {"eta": 0.01},
}


def _run(federation, name: str, strategy: dict, kill_after: int | None) -> tuple[list[dict], object]:
    fed = federation(subdir=f"{strategy['name']}-{name}", strategy=strategy, task="digits", num_partitions=2,
                     rounds=ROUNDS, min_clients=2, local_epochs=1)
    server = fed.start_server("server-first")
    clients = [fed.start_client(0), fed.start_client(1)]
    if kill_after is not None:
        fed.wait_for(f"round {kill_after} in the metrics", lambda: len(fed.metrics()) >= kill_after, timeout=180)
        server.process.kill()
        server.process.wait(10)
        server = fed.start_server("server-second")
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=300)
    assert server.process.returncode == 0, server.log()
    assert all(client.alive() for client in clients)
    for daemon in fed.daemons:
        assert " ERROR " not in daemon.log() and "Traceback" not in daemon.log(), daemon.log()
    return fed.metrics(), stored_checkpoint(fed.root / "server")


@pytest.mark.parametrize("name", list(STATEFUL))
def test_a_restarted_server_continues_the_strategys_optimiser_state(federation, name):
    strategy = {"name": name, **STATEFUL[name]}
    straight, straight_checkpoint = _run(federation, "straight", strategy, None)
    resumed, resumed_checkpoint = _run(federation, "resumed", strategy, 2)
    assert [r["round"] for r in straight] == [r["round"] for r in resumed] == list(range(1, ROUNDS + 1))
    print(f"\n{name}: final model {straight[-1]['model_sha256'][:16]} straight, "
          f"{resumed[-1]['model_sha256'][:16]} killed after round 2 and resumed; eval accuracy "
          f"{straight[-1]['eval_accuracy']:.4f} / {resumed[-1]['eval_accuracy']:.4f}")
    # The optimiser state is in the checkpoint, beside the model, and equal in both runs.
    state = straight_checkpoint.checkpoint.state
    assert state and state.keys() == resumed_checkpoint.checkpoint.state.keys()
    for key, array in state.items():
        np.testing.assert_array_equal(array, resumed_checkpoint.checkpoint.state[key])
    assert straight[-1]["model_sha256"] == resumed[-1]["model_sha256"]
