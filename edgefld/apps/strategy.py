"""Flower's strategies, made to resume at a given round and to record what happened in each round.

Flower's ``Strategy.start`` counts rounds from 1 and has no start parameter;
to continue a run from a checkpoint, every hook shifts the round number by
``round_offset``, so clients, logs and the metrics file see the true round (and
FedAdam's bias correction, which counts rounds, continues as it would have).

``ResumableStrategy`` adds this to any of Flower's FedAvg-family Message-API
strategies by inheritance: ``ResumableFedAdam(ResumableStrategy, FedAdam)`` runs
edgefl's bookkeeping around Flower's own FedAdam (``super()`` is FedAdam there),
so no aggregation rule is copied. The server optimiser's state (FedAdam's moments,
FedAvgM's momentum) is read and restored through edgefld.flower_compat, and
checkpointed with the model by the ServerApp.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    Strategy,
)

from edgefld.apps import settings
from edgefld.apps.weights import to_compute_dtype, to_global_model
from edgefld.flower_compat import load_server_optimizer_state, server_optimizer_state
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


@dataclass(frozen=True)
class Privacy:
    """[server.dp]: Flower's fixed-clipping DP around the strategy's aggregation."""

    mode: str  # "central": the server clips each update; "local": the boards do (Flower's mod)
    clipping_norm: float
    noise_multiplier: float
    num_sampled_clients: int  # the noise's denominator: the boards a round aggregates at least

    @classmethod
    def from_run(cls, run: dict[str, Any]) -> Privacy | None:
        mode = str(run["dp-mode"])
        if mode == "off":
            return None
        if mode not in ("central", "local"):
            raise ValueError(f'unknown dp mode "{mode}"; one of off, central, local')
        return cls(mode, float(run["dp-clipping-norm"]), float(run["dp-noise-multiplier"]), int(run["min-clients"]))


class _FlowerSide:
    """The strategy as Flower defines it (the class after ResumableStrategy in the MRO), for a Flower wrapper.

    Flower's DP wrappers take the strategy they wrap as an object and call its configure_train and
    aggregate_train; handing them this keeps edgefl's bookkeeping outside them: the wrapper sees
    the round's accepted replies (in compute dtype, refusals recorded and left out) and its
    aggregate goes to the recorder."""

    def __init__(self, strategy: ResumableStrategy) -> None:
        self._strategy = strategy

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return super(ResumableStrategy, self._strategy).configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return super(ResumableStrategy, self._strategy).aggregate_train(server_round, replies)

    def summary(self) -> None:
        super(ResumableStrategy, self._strategy).summary()

    def __getattr__(self, name: str) -> Any:  # weighted_by_key and the like, read by the wrapper
        return getattr(self._strategy, name)


class ResumableStrategy(FedAvg):
    """edgefl's rounds around a Flower strategy: combine it with one (see STRATEGY_CLASSES), not alone."""

    def __init__(self, *, round_offset: int = 0, server_version: str, transport_dtype: str = "float32",
                 privacy: Privacy | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.round_offset = round_offset
        self.privacy = privacy
        self.private: Strategy | None = None  # Flower's DP wrapper around _FlowerSide(self)
        if privacy is not None:
            wrapper = (DifferentialPrivacyServerSideFixedClipping if privacy.mode == "central"
                       else DifferentialPrivacyClientSideFixedClipping)
            self.private = wrapper(cast(Strategy, _FlowerSide(self)), noise_multiplier=privacy.noise_multiplier,
                                   clipping_norm=privacy.clipping_norm,
                                   num_sampled_clients=privacy.num_sampled_clients)
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
        # The strategy sees the float32 model (FedOpt and FedAvgM keep it to compute the update); only
        # the messages carry the transport dtype.
        if self.private is not None:  # the wrapper keeps the model (central) or asks for clipping (local)
            messages = list(self.private.configure_train(true_round, arrays, config, grid))
        else:
            messages = list(super().configure_train(true_round, arrays, config, grid))
        wire = self.wire_arrays(arrays)
        if wire is not arrays:
            for message in messages:
                message.content["arrays"] = wire
        stats = self._stats(true_round)
        stats.started = time.time()
        stats.train_sent = len(messages)
        stats.sent = messages
        stats.bytes_sent += sum(payload_bytes(m.content) for m in messages)
        return messages

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The server optimiser's state after the last round, by name ({} for a stateless strategy)."""
        return server_optimizer_state(self)

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        """Continue from a checkpointed optimiser state (optimizer_state's)."""
        load_server_optimizer_state(self, state)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        true_round = server_round + self.round_offset
        stats = self._stats(true_round)
        accepted: list[tuple[int, int, Message]] = []  # (cid, node id, reply)
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
                self.record_error_reply(stats, node, reply.error, true_round)
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
            # From the instruction's creation (here) to the reply's (on the board): two clocks.
            instructed = sent_at.get(reply.metadata.reply_to_message_id)
            self.record_trained(stats, node, client, reported,
                                None if instructed is None else reply.metadata.created_at - instructed)
            accepted.append((client.cid, node, reply))
        silent = [m.metadata.dst_node_id for m in stats.sent if m.metadata.dst_node_id not in answered]
        for node in silent:
            self.record_silent(stats, node, true_round, "did not answer within the round timeout")
        missing = stats.train_sent - len(replies) - len(silent)
        if missing > 0:  # instructions the grid never gave an id (not sent): no board to name
            stats.failures.append(self.failure(None, None, TIMEOUT_ERROR,
                                               f"{missing} client(s) did not answer within the round timeout"))
        stats.train_ok = len(accepted)
        if not accepted:
            return None, None
        # In the boards' order, not the replies' arrival: float sums depend on their order, and a run
        # continued after a restart must aggregate exactly as an uninterrupted one.
        ordered = [reply for _, _, reply in sorted(accepted, key=lambda entry: entry[:2])]
        if self.private is not None:  # clipped (central), aggregated by the strategy, noised
            arrays, metrics = self.private.aggregate_train(true_round, ordered)
        else:
            arrays, metrics = super().aggregate_train(true_round, ordered)
        stats.train_metrics = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        return (None if arrays is None else to_global_model(arrays)), metrics

    def record_error_reply(self, stats: RoundStats, node: int, error: Error, true_round: int,
                           context: str = "") -> None:
        """A board's error reply, in the round's record, named, and one WARNING line: a board's refusal
        (edgefl codes 4001-4099: no data, cannot afford the round, ...) is not a crash, and the round goes
        on with the others. ``context`` precedes the board's reason."""
        kind = settings.ERROR_NAMES.get(error.code, FLOWER_ERROR)
        reason = f"{context}{(error.reason or '')[:300]}"
        log(WARNING, "edgefl: %s failed round %d (%s): %s", self.describe_node(node), true_round, kind, reason)
        stats.failures.append(self.failure(node, error.code, kind, reason))

    def record_silent(self, stats: RoundStats, node: int, true_round: int, reason: str) -> None:
        """A board that did not answer: in the round's record, named, and one WARNING line."""
        log(WARNING, "edgefl: %s %s of round %d", self.describe_node(node), reason, true_round)
        stats.failures.append(self.failure(node, None, TIMEOUT_ERROR, reason))

    @staticmethod
    def record_trained(stats: RoundStats, node: int, client: ClientIdentity, reported: TrainMetrics,
                       transfer_gap: float | None) -> None:
        """A board whose update the round aggregates: its backend, timings and split in the round's record."""
        stats.backends[client.backend] = stats.backends.get(client.backend, 0) + 1
        stats.add_timings(reported)
        stats.trained[node] = reported.split(transfer_gap)

    def _refuse(self, stats: RoundStats, node: int, code: int, reason: str) -> None:
        """A reply that is not aggregated: logged and recorded, named."""
        log(WARNING, "edgefl: %s: %s", self.describe_node(node), reason)
        stats.failures.append(self.failure(node, code, settings.ERROR_NAMES[code], reason))


class ResumableFedAvg(ResumableStrategy, FedAvg):
    pass


class ResumableFedAvgM(ResumableStrategy, FedAvgM):
    pass


class ResumableFedProx(ResumableStrategy, FedProx):
    pass


class ResumableFedAdam(ResumableStrategy, FedAdam):
    pass


class ResumableFedYogi(ResumableStrategy, FedYogi):
    pass


class ResumableFedAdagrad(ResumableStrategy, FedAdagrad):
    pass


class ResumableFedMedian(ResumableStrategy, FedMedian):
    pass


class ResumableFedTrimmedAvg(ResumableStrategy, FedTrimmedAvg):
    pass


class ResumableKrum(ResumableStrategy, Krum):
    pass


# [server.strategy] name -> the class, and which run-config keys become which of Flower's parameters.
STRATEGY_CLASSES: dict[str, type[ResumableStrategy]] = {
    "fedavg": ResumableFedAvg, "fedavgm": ResumableFedAvgM, "fedprox": ResumableFedProx,
    "fedadam": ResumableFedAdam, "fedyogi": ResumableFedYogi, "fedadagrad": ResumableFedAdagrad,
    "fedmedian": ResumableFedMedian, "fedtrimmedavg": ResumableFedTrimmedAvg, "krum": ResumableKrum,
}
FLOWER_PARAMETERS = {
    "proximal-mu": "proximal_mu", "server-learning-rate": "server_learning_rate",
    "server-momentum": "server_momentum", "eta": "eta", "beta-1": "beta_1", "beta-2": "beta_2", "tau": "tau",
    "trim-beta": "beta", "num-malicious-nodes": "num_malicious_nodes",
}


def strategy_parameters(name: str, run: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters strategy ``name`` reads, from the run config, as Flower's parameters."""
    from edgefld.config.schema import STRATEGY_KEYS

    parameters: dict[str, Any] = {}
    for schema_name in STRATEGY_KEYS[name]:
        run_key = schema_name.replace("_", "-")
        value = run[run_key]
        parameters[FLOWER_PARAMETERS[run_key]] = int(value) if run_key == "num-malicious-nodes" else float(value)
    return parameters


def make_strategy(run: dict[str, Any], *, round_offset: int, **kwargs: Any) -> ResumableStrategy:
    """The run's strategy (run config "strategy"), with its hyperparameters and edgefl's bookkeeping."""
    name = str(run["strategy"])
    cls = STRATEGY_CLASSES.get(name)
    if cls is None:
        raise ValueError(f'unknown strategy "{name}"; this server knows {", ".join(STRATEGY_CLASSES)}')
    return cls(round_offset=round_offset, privacy=Privacy.from_run(run), **strategy_parameters(name, run), **kwargs)
