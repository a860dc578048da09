"""Every failure in a round's record names its board: node id, cid and board model, whoever reported it.

Real Flower messages through ResumableFedAvg.aggregate_train: a board's own error reply, Flower's
"Node Unavailable" reply that the SuperLink sends on behalf of a board that vanished (its source is
the SuperLink's node id, 1), and a board that never answered.
"""

from __future__ import annotations

import time

import numpy as np
from flwr.app import ConfigRecord, Error, Message, Metadata, MetricRecord, RecordDict

from edgefld.apps.records import record_from
from edgefld.apps.server_app import known_boards
from edgefld.apps.strategy import ResumableFedAvg
from edgefld.persist import append_jsonl

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


def _trained(instruction: Message, cid: int, board: str) -> Message:
    reply = Message(RecordDict({"arrays": record_from([np.ones(3, dtype=np.float32)]),
                                "metrics": MetricRecord({"num-examples": 10, "train_loss": 0.5}),
                                "client": ConfigRecord({"edgefl-version": "0", "cid": cid, "board": board,
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
    failures = {f["node"]: f for f in strategy.stats[2].failures}
    assert set(failures) == {11, 12, 13}, failures  # never the SuperLink's id
    assert (failures[11]["cid"], failures[11]["board"], failures[11]["code"]) == (0, "Raspberry Pi 4 Model B Rev 1.4",
                                                                                  4006)
    assert (failures[12]["cid"], failures[12]["board"]) == (1, "NVIDIA Jetson Orin Nano")
    assert "Node Unavailable" in failures[12]["reason"]
    assert (failures[13]["cid"], failures[13]["board"]) == (2, "Raspberry Pi 5")
    assert "did not answer" in failures[13]["reason"]
    assert "node 12 (cid 1, board NVIDIA Jetson Orin Nano)" == strategy.describe_node(12)

    # A restarted ServerApp knows them from the metrics log.
    append_jsonl(tmp_path / "metrics.jsonl", {"round": 1, "boards": {str(k): v for k, v in strategy.boards.items()}})
    assert known_boards(tmp_path / "metrics.jsonl") == strategy.boards
