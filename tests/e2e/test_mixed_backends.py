"""A federation in which every backend trains the same global model: torch, TensorFlow and LiteRT.

Three real `edgefl client` daemons on 127.0.0.1, one per backend (--backend, as a
per-board config would set it), exchange weights in the one canonical layout
(edgefld/backends/layout.py); the server averages them and evaluates the global
model itself. If any backend read or wrote a weight differently (a transposed
kernel, a swapped flatten order) the average would be noise and accuracy would not rise.
"""

from __future__ import annotations

import pytest

from edgefld.backends.catalog import installed_backends

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BACKENDS = ("torch", "tensorflow", "litert")
ROUNDS = 4


@pytest.mark.skipif(not set(BACKENDS) <= installed_backends(),
                    reason=f"needs every backend installed: {', '.join(BACKENDS)}")
def test_one_client_per_backend_trains_one_global_model(federation):
    fed = federation(task="digits", num_partitions=len(BACKENDS), rounds=ROUNDS, min_clients=len(BACKENDS),
                     local_epochs=1)
    server = fed.start_server()
    clients = {name: fed.start_client(cid, "--backend", name) for cid, name in enumerate(BACKENDS)}
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=360)
    assert server.process.returncode == 0, server.log()

    records = fed.metrics()
    for record in records:
        print(f"mixed federation round {record['round']}: backends {record['backends']}, "
              f"train_loss {record['train_loss']:.4f}, eval_loss {record['eval_loss']:.4f}, "
              f"eval_accuracy {record['eval_accuracy']:.4f}, {record['wall_seconds']:.1f} s")
    assert [r["round"] for r in records] == list(range(1, ROUNDS + 1))
    for record in records:
        assert record["clients_ok"] == len(BACKENDS) and record["clients_failed"] == 0, record
        assert record["backends"] == {name: 1 for name in BACKENDS}, record
    accuracies = [r["eval_accuracy"] for r in records]
    # The global model learns from all three: accuracy rises over the run, and well beyond
    # chance (0.1 for ten classes).
    assert accuracies[-1] > accuracies[0] and accuracies[-1] > 0.6, accuracies
    assert records[-1]["eval_loss"] < records[0]["eval_loss"], records
    for name, client in clients.items():  # each daemon's own profile line names its backend
        assert f": {name} on cpu" in client.log(), client.log()
