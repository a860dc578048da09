"""[server.dp] (Flower's fixed-clipping DP wrappers around the strategy, and the boards' clipping mod), and one
round of every strategy through the same path.

Real Flower messages through the strategy's configure_train and aggregate_train (the nodes a round samples
come from a stand-in for the grid: sampling needs nothing else of it), and Flower's own fixedclipping_mod
around the ClientApp's handler.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict

from edgefld.apps import settings
from edgefld.apps.client_app import clip_when_asked
from edgefld.apps.strategy import ResumableStrategy, make_strategy
from edgefld.apps.weights import record_from, weights_from
from edgefld.flower_compat import DP_CLIPPING_NORM_KEY
from edgefld.records import ClientIdentity, TrainMetrics

SIZE = 100_000  # one flat weight array: enough draws to measure the noise's scale within 2%


@pytest.fixture(autouse=True)
def _serverapp_identity():
    """The run and node a ServerApp process is (Flower's runtime sets them there; messages read them)."""
    from flwr.supercore.task_identity import TaskIdentity

    before = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = before


class Nodes:
    """What sampling asks of Flower's grid: the connected nodes."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return self.nodes


def _strategy(mode: str, clipping_norm: float, noise_multiplier: float, clients: int) -> ResumableStrategy:
    run = {**settings.RUN_CONFIG_DEFAULTS, "dp-mode": mode, "dp-clipping-norm": clipping_norm,
           "dp-noise-multiplier": noise_multiplier, "min-clients": clients}
    return make_strategy(run, round_offset=0, server_version=settings.RUN_CONFIG_DEFAULTS["server-version"],
                         min_train_nodes=clients, min_available_nodes=clients, fraction_evaluate=0.0)


def _reply(instruction: Message, cid: int, weights: np.ndarray) -> Message:
    metrics = TrainMetrics(train_loss=0.5, train_seconds=1.0, val_loss=0.5, val_accuracy=0.5, startup_seconds=0.1,
                           handler_seconds=1.5, prepare_seconds=0.2, num_examples=10).to_metrics()
    client = ClientIdentity(edgefl_version=settings.RUN_CONFIG_DEFAULTS["server-version"], cid=cid, board="",
                            backend="torch", device="cpu")
    metadata = Metadata(run_id=1, message_id=f"reply-{cid}", src_node_id=instruction.metadata.dst_node_id,
                        dst_node_id=0, reply_to_message_id=instruction.metadata.message_id, group_id="1",
                        created_at=time.time(), ttl=600.0, message_type="train")
    return Message(RecordDict({"arrays": record_from([weights]), "metrics": MetricRecord(metrics),
                               "client": ConfigRecord(client.to_config())}), metadata=metadata)


def _round(strategy: ResumableStrategy, start: np.ndarray, updates: list[np.ndarray]) -> np.ndarray:
    """One round: the instructions, a reply per board (start + its update), the new global model."""
    messages = list(strategy.configure_train(1, record_from([start]), ConfigRecord({}),
                                             Nodes(list(range(10, 10 + len(updates))))))  # type: ignore[arg-type]
    for index, message in enumerate(messages):  # the ids the grid gives them when it sends them
        message.metadata.__dict__["_message_id"] = f"to-{index}"
    replies = [_reply(message, cid, start + update) for cid, (message, update) in enumerate(zip(messages, updates,
                                                                                                strict=True))]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    return weights_from(arrays, [start.shape])[0]


def test_central_clipping_bounds_every_update_the_aggregate_sees():
    start = np.zeros(SIZE, np.float32)
    rng = np.random.default_rng(0)
    direction = rng.normal(size=SIZE).astype(np.float32)
    direction /= np.linalg.norm(direction)
    # Norms 10 and 0.5 against a bound of 1: the first is scaled down to 1, the second passes unchanged.
    new = _round(_strategy("central", 1.0, 0.0, 2), start, [10 * direction, 0.5 * direction])
    assert np.linalg.norm(new - start) == pytest.approx((1.0 + 0.5) / 2, rel=1e-5)
    # Without DP, the same round's mean update is dominated by the large one.
    plain = _round(_strategy("off", 1.0, 0.0, 2), start, [10 * direction, 0.5 * direction])
    assert np.linalg.norm(plain - start) == pytest.approx((10 + 0.5) / 2, rel=1e-5)


@pytest.mark.parametrize("mode", ["central", "local"])
def test_the_noise_has_the_configured_scale(mode):
    clipping_norm, noise_multiplier, clients = 2.0, 0.5, 4
    start = np.zeros(SIZE, np.float32)
    # Tiny updates (Flower's clipping divides by the update's norm: not exactly zero), so the aggregate
    # moves by the noise alone.
    new = _round(_strategy(mode, clipping_norm, noise_multiplier, clients), start,
                 [np.full(SIZE, 1e-7, np.float32)] * clients)
    expected = noise_multiplier * clipping_norm / clients  # Flower's compute_stdv: 0.25
    assert abs(float(new.mean())) < 5 * expected / np.sqrt(SIZE)
    assert float(new.std()) == pytest.approx(expected, rel=0.02)


def test_local_mode_asks_the_boards_to_clip_and_central_mode_does_not():
    start = np.zeros(4, np.float32)
    local = list(_strategy("local", 1.5, 1.0, 1).configure_train(1, record_from([start]), ConfigRecord({}),
                                                                   Nodes([7])))  # type: ignore[arg-type]
    central = list(_strategy("central", 1.5, 1.0, 1).configure_train(1, record_from([start]), ConfigRecord({}),
                                                                       Nodes([7])))  # type: ignore[arg-type]
    assert local[0].content.config_records["config"][DP_CLIPPING_NORM_KEY] == 1.5
    assert DP_CLIPPING_NORM_KEY not in central[0].content.config_records["config"]


def _train_message(config: dict) -> Message:
    metadata = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=7, reply_to_message_id="",
                        group_id="1", created_at=time.time(), ttl=600.0, message_type="train")
    return Message(RecordDict({"arrays": record_from([np.zeros(SIZE, np.float32)]), "config": ConfigRecord(config)}),
                   metadata=metadata)


def test_a_board_clips_its_update_where_the_server_asks_and_only_there():
    context = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    update = np.full(SIZE, 0.01, np.float32)  # norm 3.16

    def handler(msg: Message, ctxt: Context) -> Message:
        start = weights_from(msg.content.array_records["arrays"], [(SIZE,)])[0]
        return Message(RecordDict({"arrays": record_from([start + update])}), reply_to=msg)

    clipped = clip_when_asked(_train_message({DP_CLIPPING_NORM_KEY: 1.0}), context, handler)
    sent = weights_from(clipped.content.array_records["arrays"], [(SIZE,)])[0]
    # Flower scales the float32 update by bound / norm: the result's norm is the bound to float32 rounding
    # over 100 000 elements (measured 1.0000215).
    assert 0.9999 < np.linalg.norm(sent) <= 1.0 + 1e-4
    untouched = clip_when_asked(_train_message({}), context, handler)
    assert np.linalg.norm(weights_from(untouched.content.array_records["arrays"], [(SIZE,)])[0]) == pytest.approx(
        np.linalg.norm(update), rel=1e-6)


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedmedian",
                                  "fedtrimmedavg", "krum"])
def test_every_strategy_gives_a_float32_global_model(name):
    """FedAdam's and FedYogi's bias correction is a numpy float64 scalar: their aggregate comes out float64,
    which the model's record refuses; the strategy hands on float32 whatever Flower computed in."""
    run = {**settings.RUN_CONFIG_DEFAULTS, "strategy": name, "min-clients": 3}
    strategy = make_strategy(run, round_offset=0, server_version=settings.RUN_CONFIG_DEFAULTS["server-version"],
                             min_train_nodes=3, min_available_nodes=3, fraction_evaluate=0.0)
    start = np.zeros(8, np.float32)
    new = _round(strategy, start, [np.full(8, value, np.float32) for value in (0.1, 0.2, 0.3)])
    assert new.dtype == np.float32 and np.all(new != 0)
