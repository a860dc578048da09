"""Every failure in a round's record names its board: node id, cid and board model, whoever reported it.

Real Flower messages through ResumableFedAvg.aggregate_train: a board's own error reply, Flower's
"Node Unavailable" reply that the SuperLink sends on behalf of a board that vanished (its source is
the SuperLink's node id, 1), and a board that never answered.
"""

from __future__ import annotations

import time

import numpy as np
from flwr.app import ConfigRecord, Error, Message, Metadata, MetricRecord, RecordDict

from edgefld.apps.strategy import ResumableFedAvg
from edgefld.apps.weights import record_from
from edgefld.records import BoardIdentity, RoundRecord, TrainMetrics
from edgefld.run_state import RunState

SUPERLINK_NODE = 1
SERVER_NODE = 0


def _metadata(message_id: str, src: int, dst: int, reply_to: str = "") -> Metadata:
    return Metadata(run_id=1, message_id=message_id, src_node_id=src, dst_node_id=dst, reply_to_message_id=reply_to,
                    group_id="1", created_at=time.time(), ttl=600.0, message_type="train")


def _instructions(strategy: ResumableFedAvg, round_: int, nodes: list[int]) -> list[Message]:
    # The message ids are what Flower's grid gives them when it sends them.
    messages = [Message(RecordDict({"arrays": record_from([np.zeros(3, dtype=np.float32)]),
                                    "config": ConfigRecord({"server-round": round_})}),
                        metadata=_metadata(f"r{round_}-to-{node}", SERVER_NODE, node)) for node in nodes]
    stats = strategy._stats(round_)
    stats.sent, stats.train_sent = messages, len(messages)
    return messages


def _trained(instruction: Message, cid: int, board: str, version: str = "0", without: str = "") -> Message:
    metrics = TrainMetrics(train_loss=0.5, train_seconds=1.0, val_loss=0.5, val_accuracy=0.5, startup_seconds=0.1,
                           handler_seconds=1.5, prepare_seconds=0.2, num_examples=10).to_metrics()
    reply = Message(RecordDict({"arrays": record_from([np.ones(3, dtype=np.float32)]),
                                "metrics": MetricRecord({k: v for k, v in metrics.items() if k != without}),
                                "client": ConfigRecord({"edgefl-version": version, "cid": cid, "board": board,
                                                        "backend": "torch"})}),
                    metadata=_reply_metadata(instruction))
    return reply


def _reply_metadata(instruction: Message, src: int | None = None) -> Metadata:
    return _metadata(f"reply-{instruction.metadata.message_id}",
                     instruction.metadata.dst_node_id if src is None else src, SERVER_NODE,
                     instruction.metadata.message_id)


def test_failures_name_the_board_also_when_the_superlink_reports_it(tmp_path):
    strategy = ResumableFedAvg(server_version="0", min_train_nodes=1, min_available_nodes=1)
    strategy.server_version = "0"
    first = _instructions(strategy, 1, [11, 12, 13])
    strategy.aggregate_train(1, [_trained(first[0], 0, "Raspberry Pi 4 Model B Rev 1.4"),
                                 _trained(first[1], 1, "NVIDIA Jetson Orin Nano"),
                                 _trained(first[2], 2, "Raspberry Pi 5")])
    assert strategy.stats[1].failures == []

    second = _instructions(strategy, 2, [11, 12, 13])
    refused = Message(Error(4006, "not enough memory"), metadata=_reply_metadata(second[0]))
    # As the SuperLink sends it for a board without heartbeats: from itself.
    unavailable = Message(Error(5, "Error: Node Unavailable"), metadata=_reply_metadata(second[1], SUPERLINK_NODE))
    strategy.aggregate_train(2, [refused, unavailable])  # node 13: nothing at all
    failures = {f.node: f for f in strategy.stats[2].failures}
    assert set(failures) == {11, 12, 13}, failures  # never the SuperLink's id
    assert (failures[11].cid, failures[11].board, failures[11].code) == (0, "Raspberry Pi 4 Model B Rev 1.4", 4006)
    assert (failures[12].cid, failures[12].board) == (1, "NVIDIA Jetson Orin Nano")
    assert "Node Unavailable" in failures[12].reason
    assert (failures[13].cid, failures[13].board) == (2, "Raspberry Pi 5")
    assert "did not answer" in failures[13].reason
    # One shape whatever the branch: each names its kind.
    assert [failures[node].error for node in (11, 12, 13)] == ["resources", "flower", "timeout"]
    assert "node 12 (cid 1, board NVIDIA Jetson Orin Nano)" == strategy.describe_node(12)

    # A restarted ServerApp knows them from the metrics log.
    state = RunState(tmp_path, {"task": "digits"})
    state.save_round(2, [np.ones(3, dtype=np.float32)],
                     RoundRecord(round=2, training=strategy.stats[2].training(strategy.boards)))
    assert state.known_boards() == strategy.boards == {
        11: BoardIdentity(0, "Raspberry Pi 4 Model B Rev 1.4", backend="torch"),
        12: BoardIdentity(1, "NVIDIA Jetson Orin Nano", backend="torch"),
        13: BoardIdentity(2, "Raspberry Pi 5", backend="torch")}


def test_replies_that_are_not_aggregated_are_failures_of_the_same_shape():
    strategy = ResumableFedAvg(server_version="0", min_train_nodes=1, min_available_nodes=1)
    sent = _instructions(strategy, 1, [21, 22, 23])
    other_series = _trained(sent[0], 0, "Raspberry Pi 5", version="9.9.0")
    no_metrics = _trained(sent[1], 1, "Raspberry Pi 4 Model B Rev 1.4", without="train_seconds")
    strategy.aggregate_train(1, [other_series, no_metrics, _trained(sent[2], 2, "Raspberry Pi 3 Model B")])
    stats = strategy.stats[1]
    assert stats.train_ok == 1 and stats.backends == {"torch": 1}
    failures = {f.node: f for f in stats.failures}
    assert (failures[21].code, failures[21].error, failures[21].cid) == (4005, "incompatible-version", 0)
    assert failures[21].reason == "client runs edgefl 9.9.0, the server 0: reply not aggregated"
    assert (failures[22].code, failures[22].error, failures[22].cid) == (4099, "internal", 1)
    assert failures[22].reason == 'reply not aggregated: metrics: "train_seconds" must be a number, got nothing'
    assert stats.client_seconds_max == 1.0 and stats.client_handler_seconds_max == 1.5  # the aggregated reply's
    # Only the aggregated board has a round split in the record, named by its node id.
    assert set(stats.trained) == {23}
    split = stats.trained[23]
    assert (split.startup, split.loading, split.training) == (0.1, 0.2, 1.3)  # no load_seconds sent: the fallback
    assert split.transfer is not None and split.transfer >= 0.0
    assert set(stats.training({}).to_json()["trained"]) == {"23"}  # type: ignore[arg-type]
