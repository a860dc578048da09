"""[server] transport_dtype: what float16 on the wire costs in bytes and in accuracy.

Five rounds of two boards on MNIST-format data, in this process: the real ClientApp
handler (torch backend, its data partition) answers Flower Message objects that
ResumableFedAvg casts for the wire, and ResumableFedAvg aggregates the replies, cast
back up to float32, with Flower's FedAvg. The data is made hard enough that the model
does not reach 100 % in five rounds, so a precision loss would show.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from edgefld.apps import client_app, settings
from edgefld.apps.strategy import ResumableFedAvg, payload_bytes
from edgefld.apps.weights import record_from, weights_from
from edgefld.backends.layout import task_layout
from edgefld.tasks import get_task
from tests.data.real_format_files import Expected, write_mnist

pytestmark = pytest.mark.slow
ROUNDS = 5


def _hard_mnist(train: int, test: int, seed: int = 0) -> Expected:
    """A faint class block in heavy noise: learnable, but not to 100 % in five rounds."""
    rng = np.random.default_rng(seed)

    def make(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 150, (count, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 4)
            block = images[i, 2 + row * 8: 8 + row * 8, 2 + col * 6: 7 + col * 6].astype(np.int32)
            images[i, 2 + row * 8: 8 + row * 8, 2 + col * 6: 7 + col * 6] = np.minimum(block + 70, 255)
        return images[..., None], labels

    return Expected(*make(train), *make(test))


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    from edgefld.cli.main import main as edgefl_main

    root = tmp_path_factory.mktemp("transport")
    write_mnist(root / "idx", _hard_mnist(1200, 400), gz=False)
    assert edgefl_main(["data", "import", str(root / "idx"), "--data-dir", str(root / "data")]) == 0
    return root / "data"


def _federate(data_dir, transport_dtype: str) -> tuple[float, list[int], list[int]]:
    """(test accuracy after ROUNDS rounds, bytes sent per round, bytes received per round)."""
    from edgefld.backends.base import load_backend
    from edgefld.data import load_test

    task = get_task("mnist")
    shapes = [spec.shape for spec in task_layout(task)]
    backend = load_backend("torch", "cpu", 1)
    run = dict(settings.RUN_CONFIG_DEFAULTS, task="mnist", **{"num-partitions": 2, "local-epochs": 1,
                                                              "transport-dtype": transport_dtype})
    contexts = [Context(run_id=1, node_id=10 + cid, node_config={
        "cid": cid, "data-dir": str(data_dir), "backend": "torch", "device": "cpu", "threads": 1,
        "guards": False, "status-file": ""}, state=RecordDict(), run_config=run) for cid in (0, 1)]
    strategy = ResumableFedAvg(server_version=settings.RUN_CONFIG_DEFAULTS["server-version"],
                               transport_dtype=transport_dtype, fraction_evaluate=0.0)
    arrays = record_from(backend.initial_weights(task, seed=42))
    sent, received = [], []
    for round_ in range(1, ROUNDS + 1):
        wire = strategy.wire_arrays(arrays)
        instructions = [Message(RecordDict({"arrays": wire, "config": ConfigRecord({"server-round": round_})}),
                                metadata=Metadata(run_id=1, message_id=f"r{round_}-{ctx.node_id}", src_node_id=0,
                                                  dst_node_id=ctx.node_id, reply_to_message_id="",
                                                  group_id=str(round_), created_at=time.time(), ttl=600.0,
                                                  message_type="train"))
                        for ctx in contexts]
        stats = strategy._stats(round_)
        stats.sent, stats.train_sent = instructions, len(instructions)
        stats.bytes_sent = sum(payload_bytes(m.content) for m in instructions)
        replies = []
        for instruction, ctx in zip(instructions, contexts, strict=True):
            reply = client_app.train(instruction, ctx)
            assert not reply.has_error(), reply.error
            assert str(reply.content["arrays"]["weights"].numpy().dtype) == transport_dtype
            reply.metadata.__dict__["_reply_to_message_id"] = instruction.metadata.message_id
            replies.append(reply)
        arrays, _ = strategy.aggregate_train(round_, replies)
        assert stats.train_ok == 2, stats.failures
        assert str(arrays["weights"].numpy().dtype) == "float32"  # the global model never leaves float32
        sent.append(stats.bytes_sent)
        received.append(stats.bytes_received)
    test_x, test_y = load_test(task.dataset, str(data_dir))
    return backend.evaluate(task, weights_from(arrays, shapes), test_x, test_y).accuracy, sent, received


def test_float16_halves_the_bytes_of_a_round_and_costs_at_most_half_a_point_on_mnist(mnist_dir):
    accuracy32, sent32, received32 = _federate(mnist_dir, "float32")
    accuracy16, sent16, received16 = _federate(mnist_dir, "float16")
    print(f"mnist, 2 boards, {ROUNDS} rounds: accuracy float32 {accuracy32:.4f}, float16 {accuracy16:.4f} "
          f"(cost {100 * (accuracy32 - accuracy16):.2f} points); bytes per round sent+received "
          f"float32 {sent32[0] + received32[0]}, float16 {sent16[0] + received16[0]}")
    assert 0.3 < accuracy32 < 0.99, "the data must leave room to lose accuracy"
    # Half, but for each message's array header (numpy's .npy header, 128 bytes).
    assert all(abs(b16 - b32 / 2) <= 2 * 128 for b16, b32 in zip(sent16 + received16, sent32 + received32, strict=True))
    assert accuracy32 - accuracy16 <= 0.005
