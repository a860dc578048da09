"""FedAvg that resumes at a given round and records what happened in each round.

Flower's ``Strategy.start`` counts rounds from 1 and has no start parameter;
to continue a run from a checkpoint, every hook shifts the round number by
``round_offset``, so clients, logs and the metrics file see the true round.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from edgefld.apps import settings
from edgefld.apps.weights import to_compute_dtype
from edgefld.records import (
    BoardIdentity,
    ClientIdentity,
    Failure,
    RecordError,
    RoundSplit,
    RoundTraining,
    TrainMetrics,
    board_name,
)

# The kind of a failure that is not an edgefl refusal (settings.ERROR_NAMES): an error Flower reported
# (the board's process crashed, the node left), or no answer at all.
FLOWER_ERROR = "flower"
TIMEOUT_ERROR = "timeout"


def payload_bytes(content: RecordDict) -> int:
    """Bytes of the arrays in a message: what dominates the traffic to and from a board."""
    return sum(len(array.data) for record in content.array_records.values() for array in record.values())


@dataclass
class RoundStats:
    round: int
    started: float = field(default_factory=time.time)
    train_sent: int = 0
    train_ok: int = 0
    failures: list[Failure] = field(default_factory=list)
    train_metrics: dict[str, float] = field(default_factory=dict)  # FedAvg's weighted means of TrainMetrics
    client_seconds_max: float = 0.0
    client_startup_seconds_max: float = 0.0
    client_handler_seconds_max: float = 0.0
    client_prepare_seconds_max: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    backends: dict[str, int] = field(default_factory=dict)
    sent: list[Message] = field(default_factory=list)  # the train instructions; the grid gives them ids
    trained: dict[int, RoundSplit] = field(default_factory=dict)  # the aggregated boards by node id

    def add_timings(self, metrics: TrainMetrics) -> None:
        """The slowest board's figures: what a round waits for."""
        self.client_seconds_max = max(self.client_seconds_max, metrics.train_seconds)
        self.client_startup_seconds_max = max(self.client_startup_seconds_max, metrics.startup_seconds)
        self.client_handler_seconds_max = max(self.client_handler_seconds_max, metrics.handler_seconds)
        self.client_prepare_seconds_max = max(self.client_prepare_seconds_max, metrics.prepare_seconds)

    def training(self, boards: dict[int, BoardIdentity]) -> RoundTraining:
        """The round as its record keeps it; ``boards``: every board seen so far, to name later failures."""
        return RoundTraining(
            clients_ok=self.train_ok, clients_failed=len([f for f in self.failures if f.phase == "train"]),
            failures=tuple(self.failures), train_loss=self.train_metrics.get("train_loss"),
            # The boards' validation of the model this round started from (the previous global model).
            client_val_loss=self.train_metrics.get("val_loss"),
            client_val_accuracy=self.train_metrics.get("val_accuracy"),
            client_train_seconds_max=round(self.client_seconds_max, 3),
            client_startup_seconds_max=round(self.client_startup_seconds_max, 3),
            client_handler_seconds_max=round(self.client_handler_seconds_max, 3),
            client_prepare_seconds_max=round(self.client_prepare_seconds_max, 3),
            bytes_sent=self.bytes_sent, bytes_received=self.bytes_received, backends=dict(self.backends),
            wall_seconds=round(time.time() - self.started, 3), boards=dict(boards), trained=dict(self.trained),
        )


class ResumableFedAvg(FedAvg):
    def __init__(self, *, round_offset: int = 0, server_version: str, transport_dtype: str = "float32",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.round_offset = round_offset
        # The global model stays float32 here; it is cast for the wire only (configure_train), and
        # the boards' replies are cast back up before they are averaged (aggregate_train).
        self.transport_dtype = transport_dtype
        self.server_version = server_version
        self.stats: dict[int, RoundStats] = {}
        # From the boards' replies (and the metrics log, across restarts): a failure names the board
        # even when the board itself said nothing (it vanished mid-round).
        self.boards: dict[int, BoardIdentity] = {}

    def failure(self, node: int | None, code: int | None, error: str, reason: str) -> Failure:
        """A failure of the train phase, naming the board as far as it is known."""
        board = self.boards.get(node) if node is not None else None
        return Failure(node=node, cid=board.cid if board else None, board=board.board if board else None,
                       phase="train", code=code, error=error, reason=reason)

    def describe_node(self, node: int | None) -> str:
        board = self.boards.get(node) if node is not None else None
        return board_name(node, board.cid if board else None, board.board if board else None)

    def wire_arrays(self, arrays: ArrayRecord) -> ArrayRecord:
        """The global model as it travels: cast to the transport dtype (it stays float32 here)."""
        if self.transport_dtype == "float32":
            return arrays
        return ArrayRecord({key: Array(array.numpy().astype(self.transport_dtype)) for key, array in arrays.items()})

    def _stats(self, server_round: int) -> RoundStats:
        return self.stats.setdefault(server_round, RoundStats(server_round))

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        true_round = server_round + self.round_offset
        messages = list(super().configure_train(true_round, self.wire_arrays(arrays), config, grid))
        stats = self._stats(true_round)
        stats.started = time.time()
        stats.train_sent = len(messages)
        stats.sent = messages
        stats.bytes_sent += sum(payload_bytes(m.content) for m in messages)
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        true_round = server_round + self.round_offset
        stats = self._stats(true_round)
        accepted: list[Message] = []
        replies = list(replies)
        # An error reply may come from the SuperLink on the board's behalf (Flower's "Node Unavailable"
        # has the SuperLink's own id as its source): the instruction it answers names the board.
        destination = {m.metadata.message_id: m.metadata.dst_node_id for m in stats.sent}
        sent_at = {m.metadata.message_id: m.metadata.created_at for m in stats.sent}
        answered: set[int] = set()
        for reply in replies:
            node = destination.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            answered.add(node)
            if reply.has_error():
                # A board's refusal (edgefl codes 4001-4099: no data, cannot afford the round, ...) is
                # part of the round's record, named, not a crash: the round goes on with the others.
                kind = settings.ERROR_NAMES.get(reply.error.code, FLOWER_ERROR)
                reason = (reply.error.reason or "")[:300]
                log(WARNING, "edgefl: %s failed round %d (%s): %s", self.describe_node(node), true_round, kind,
                    reason)
                stats.failures.append(self.failure(node, reply.error.code, kind, reason))
                continue
            stats.bytes_received += payload_bytes(reply.content)
            client_config = reply.content.get("client")
            try:
                self.boards[node] = ClientIdentity.from_config(client_config).board_identity()
            except RecordError:
                pass  # recorded below, unless the reply's version already rules it out
            version = ClientIdentity.version_in(client_config)
            if not settings.compatible_versions(self.server_version, version):
                reason = f"client runs edgefl {version}, the server {self.server_version}: reply not aggregated"
                self._refuse(stats, node, settings.ERROR_INCOMPATIBLE, reason)
                continue
            try:
                client = ClientIdentity.from_config(client_config)
                reported = TrainMetrics.from_metrics(reply.content.get("metrics") or {})
                reply.content["arrays"] = to_compute_dtype(reply.content.array_records["arrays"])
            except (KeyError, ValueError) as exc:  # RecordError is a ValueError
                self._refuse(stats, node, settings.ERROR_INTERNAL, f"reply not aggregated: {exc}")
                continue
            stats.backends[client.backend] = stats.backends.get(client.backend, 0) + 1
            stats.add_timings(reported)
            # From the instruction's creation (here) to the reply's (on the board): two clocks.
            instructed = sent_at.get(reply.metadata.reply_to_message_id)
            stats.trained[node] = reported.split(None if instructed is None
                                                 else reply.metadata.created_at - instructed)
            accepted.append(reply)
        silent = [m.metadata.dst_node_id for m in stats.sent if m.metadata.dst_node_id not in answered]
        for node in silent:
            reason = "did not answer within the round timeout"
            log(WARNING, "edgefl: %s %s of round %d", self.describe_node(node), reason, true_round)
            stats.failures.append(self.failure(node, None, TIMEOUT_ERROR, reason))
        missing = stats.train_sent - len(replies) - len(silent)
        if missing > 0:  # instructions the grid never gave an id (not sent): no board to name
            stats.failures.append(self.failure(None, None, TIMEOUT_ERROR,
                                               f"{missing} client(s) did not answer within the round timeout"))
        stats.train_ok = len(accepted)
        if not accepted:
            return None, None
        arrays, metrics = super().aggregate_train(true_round, accepted)
        stats.train_metrics = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        return arrays, metrics

    def _refuse(self, stats: RoundStats, node: int, code: int, reason: str) -> None:
        """A reply that is not aggregated: logged and recorded, named."""
        log(WARNING, "edgefl: %s: %s", self.describe_node(node), reason)
        stats.failures.append(self.failure(node, code, settings.ERROR_NAMES[code], reason))
