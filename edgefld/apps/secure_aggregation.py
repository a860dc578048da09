"""Secure aggregation: Flower's SecAgg+ around edgefl's rounds, so the ServerApp sees only the weighted sum.

Flower's SecAggPlusWorkflow (server) and secaggplus_mod (boards) run the protocol: four
exchanges per round (public keys, encrypted key shares, masked updates, unmasking shares), after
which the server holds the weighted average of the surviving boards' updates and nothing of any
one board's. Both are written for Flower's legacy API (a LegacyContext, a legacy Strategy, the
"fitins"/"fitres" records); edgefl's apps use the Message API. This module is the glue between them:

- Server (run_secure_rounds): each round, the edgefl strategy's configure_train picks the boards and
  builds their instructions as without secure aggregation; a legacy Strategy (_RoundInstructions)
  hands them to a fresh SecAggPlusWorkflow and receives the unmasked average of the updates. The
  new global model (the model plus that average) then goes through the Flower strategy's own
  aggregate_train (inside the DP wrapper with [server.dp] mode "local") as one equal result per
  aggregated board, so FedAvgM's momentum, FedAdam's moments and the DP noise work on it as on a
  plain round. Every message of the protocol passes a _StageLog, which keeps what
  the ServerApp received (for the round's record: failures naming the board; and the test hook).
- Board (secure_aggregation_mod): SecAgg+ messages go through secaggplus_mod, whose training
  stage is given edgefl's train handler in the shape the mod expects: the FitIns becomes edgefl's
  train message, the reply's weights become the update (trained - global) in a FitRes, which the
  mod quantises, masks, and sends instead of the weights.

The update, not the weights, is masked: updates are small, so the quantisation's fixed number of
levels over [-clipping_range, clipping_range] resolves them finely; the clipping range comes from
the model's weights each round ([server.secagg] clipping_range = 0), the same for every backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log

from edgefld import flower_compat
from edgefld.apps import settings
from edgefld.apps.weights import COMPUTE_DTYPE, PACKED
from edgefld.records import TrainMetrics

if TYPE_CHECKING:
    from flwr.serverapp import Grid

    from edgefld.apps.strategy import ResumableStrategy

# The train config keys the server adds for the boards' side of the glue.
CLIPPING_RANGE_KEY = "secagg-clipping-range"
MAX_WEIGHT_KEY = "secagg-max-weight"
# Metrics a board adds to its reply: values of its update beyond the clipping range (clipped by SecAgg+).
CLIPPED_METRIC = "secagg-clipped"
# Flower's SecAgg+ stages, in the order the workflow runs them (one grid exchange each).
STAGES = ("setup", "share-keys", "collect-masked-vectors", "unmask")
# The phase of a round's failure that is no board's: secure aggregation stopped (edgefld.records.Failure).
AGGREGATE_PHASE = "aggregate"
# Masks are taken modulo 2^32 (Flower's default modulus_range): the sum of the boards' quantised values must fit.
MODULUS_RANGE = 2**32
# Where the ServerApp writes what it received, when a test asks ($EDGEFL_SECAGG_RECEIVED_DIR): see _StageLog.
RECEIVED_DIR_ENV = "EDGEFL_SECAGG_RECEIVED_DIR"


@dataclass(frozen=True)
class SecureAggregation:
    """[server.secagg], from the run config."""

    num_shares: int  # 0: every board of the round
    reconstruction_threshold: float  # fraction of num_shares
    max_weight: float
    clipping_range: float  # 0: the largest absolute weight of the round's global model
    quantization_range: int

    @classmethod
    def from_run(cls, run: dict[str, Any]) -> SecureAggregation | None:
        if str(run["secure-aggregation"]).lower() not in ("true", "1"):
            return None
        return cls(num_shares=int(run["secagg-num-shares"]),
                   reconstruction_threshold=float(run["secagg-reconstruction-threshold"]),
                   max_weight=float(run["secagg-max-weight"]), clipping_range=float(run["secagg-clipping-range"]),
                   quantization_range=int(run["secagg-quantization-range"]))

    def clipping_range_for(self, global_model: np.ndarray) -> float:
        """The round's clipping range: configured, or the model's largest absolute weight (never 0)."""
        if self.clipping_range > 0:
            return self.clipping_range
        largest = float(np.max(np.abs(global_model))) if global_model.size else 0.0
        return max(largest, 1e-3)

    def workflow(self, clipping_range: float, timeout: float) -> Any:
        """Flower's SecAggPlusWorkflow for one round."""
        from flwr.server.workflow import SecAggPlusWorkflow

        # Flower reads an int num_shares as a count and a float as a fraction of the round's boards.
        shares: int | float = self.num_shares if self.num_shares else 1.0
        return SecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=self.reconstruction_threshold,
                                  max_weight=self.max_weight, clipping_range=clipping_range,
                                  quantization_range=self.quantization_range, timeout=timeout)

    def threshold_for(self, boards: int) -> int:
        """The shares needed to rebuild a secret in a round of ``boards`` (as Flower computes it)."""
        shares = self.num_shares or boards
        return max(round(self.reconstruction_threshold * shares), 2)


# --- the server ----------------------------------------------------------------------------------


@dataclass
class _Stage:
    name: str
    sent: dict[str, int] = field(default_factory=dict)  # message id -> node id
    replies: list[Message] = field(default_factory=list)

    def node_of(self, reply: Message) -> int:
        """The board a reply answers (an error from the SuperLink on a board's behalf names the SuperLink)."""
        return self.sent.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)


class _StageLog:
    """The grid as SecAggPlusWorkflow uses it, keeping every exchange: what was sent to which board, and
    every reply the ServerApp received. With $EDGEFL_SECAGG_RECEIVED_DIR set (tests), each received array
    (masked vectors included) is also written there, so a test can show what the ServerApp saw."""

    def __init__(self, grid: Grid, true_round: int) -> None:
        self._grid = grid
        self.true_round = true_round
        self.stages: list[_Stage] = []

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        stage = _Stage(STAGES[min(len(self.stages), len(STAGES) - 1)],
                       {m.metadata.message_id: m.metadata.dst_node_id for m in messages}, replies)
        self.stages.append(stage)
        self._record(stage)
        return replies

    def _record(self, stage: _Stage) -> None:
        directory = os.environ.get(RECEIVED_DIR_ENV)
        if not directory or stage.name != "collect-masked-vectors":
            return
        from flwr.common import bytes_to_ndarray

        for reply in stage.replies:
            if reply.has_error():
                continue
            node = stage.node_of(reply)
            received = {f"{name}/{key}": array.numpy() for name, record in reply.content.array_records.items()
                        for key, array in record.items()}
            configs = reply.content.config_records.get(flower_compat.SECAGG_CONFIGS_KEY)
            for key, value in (configs or {}).items():
                if isinstance(value, list) and value and isinstance(value[0], bytes):
                    for index, item in enumerate(value):
                        received[f"{flower_compat.SECAGG_CONFIGS_KEY}/{key}/{index}"] = bytes_to_ndarray(item)
            np.savez(os.path.join(directory, f"round-{self.true_round}-node-{node}.npz"),
                     **received)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


class _RoundInstructions(flower_compat.legacy_strategy_base()):  # type: ignore[misc]
    """The legacy Strategy SecAggPlusWorkflow drives, for one round: configure_fit gives it the instructions
    edgefl's strategy built, aggregate_fit receives the unmasked average of the updates."""

    def __init__(self, instructions: dict[int, tuple[np.ndarray, dict[str, Any]]], grid: Any, run_id: int) -> None:
        self.instructions = instructions  # node id -> (packed global model as sent, train config)
        self.grid = grid
        self.run_id = run_id
        self.average_update: np.ndarray | None = None
        self.results = 0

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list[tuple[Any, Any]]:
        return [(flower_compat.node_proxy(node, self.grid, self.run_id),
                 flower_compat.fit_instruction(packed, config))
                for node, (packed, config) in self.instructions.items()]

    def aggregate_fit(self, server_round: int, results: list[tuple[Any, Any]],
                      failures: list[Any]) -> tuple[Any, dict[str, Any]]:
        self.results = len(results)
        if not results:
            return None, {}
        # The workflow gives every result the same parameters: the unmasked weighted average.
        (average,) = flower_compat.fit_result_arrays(results[0][1])
        self.average_update = np.asarray(average, dtype=np.float64)
        return flower_compat.aggregate_parameters([average]), {}

    # The rest of the legacy interface: evaluation is edgefl's (RoundRecorder), not the workflow's.
    def initialize_parameters(self, client_manager: Any) -> None:
        return None

    def configure_evaluate(self, server_round: int, parameters: Any, client_manager: Any) -> list[Any]:
        return []

    def aggregate_evaluate(self, server_round: int, results: list[Any],
                           failures: list[Any]) -> tuple[None, dict[str, Any]]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Any) -> None:
        return None


def run_secure_rounds(grid: Grid, context: Context, strategy: ResumableStrategy, secure: SecureAggregation, *,
                      initial_arrays: ArrayRecord, num_rounds: int, timeout: float, train_config: ConfigRecord,
                      evaluate_fn: Callable[[int, ArrayRecord], Any]) -> None:
    """Strategy.start's rounds, each one's training through SecAgg+ (rounds counted from 1, as Flower does)."""
    flower_compat.secure_aggregation_halts_at_info()
    log(INFO, "edgefl: secure aggregation (SecAgg+): %s", secure)
    arrays = initial_arrays
    for server_round in range(1, num_rounds + 1):
        aggregate = _secure_round(grid, context, strategy, secure, server_round, arrays, train_config, timeout)
        if aggregate is not None:
            arrays = aggregate
        evaluate_fn(server_round, arrays)


def _secure_round(grid: Grid, context: Context, strategy: ResumableStrategy, secure: SecureAggregation,
                  server_round: int, arrays: ArrayRecord, train_config: ConfigRecord,
                  timeout: float) -> ArrayRecord | None:
    from edgefld.apps.strategy import _FlowerSide

    true_round = server_round + strategy.round_offset
    messages = list(strategy.configure_train(server_round, arrays, train_config, grid))
    stats = strategy.stats[true_round]
    if not messages:
        _halt(strategy, true_round, "no boards were sampled")
        return None
    global_model = arrays[PACKED].numpy().astype(COMPUTE_DTYPE)
    clipping_range = secure.clipping_range_for(global_model)
    if len(messages) * secure.quantization_range >= MODULUS_RANGE:
        _halt(strategy, true_round, f"{len(messages)} boards x quantization_range {secure.quantization_range} "
                                    "reach 2^32, where SecAgg+'s masked sums overflow; lower quantization_range")
        return None
    instructions = {
        m.metadata.dst_node_id: (m.content.array_records["arrays"][PACKED].numpy(),
                                 {**dict(m.content.config_records["config"]), CLIPPING_RANGE_KEY: clipping_range,
                                  MAX_WEIGHT_KEY: secure.max_weight})
        for m in messages
    }
    legacy_strategy = _RoundInstructions(instructions, grid, context.run_id)
    stage_log = _StageLog(grid, true_round)
    legacy_context = flower_compat.secure_aggregation_context(context, legacy_strategy, instructions, grid,
                                                              true_round, arrays)
    secure.workflow(clipping_range, timeout)(stage_log, legacy_context)

    accepted = _record_stages(strategy, stats, stage_log, set(instructions), true_round)
    if legacy_strategy.average_update is None:
        reached = stage_log.stages[-1].name if stage_log.stages else STAGES[0]
        answering = len([r for r in stage_log.stages[-1].replies if not r.has_error()]) if stage_log.stages else 0
        _halt(strategy, true_round,
              f"secure aggregation stopped at its {reached} stage: {answering} of {len(instructions)} boards "
              f"answered, and every board needs {secure.threshold_for(len(instructions))} of its share holders "
              f"(reconstruction_threshold {secure.reconstruction_threshold} of "
              f"{secure.num_shares or len(instructions)} shares)")
        return None
    stats.train_ok = legacy_strategy.results
    new_model = (global_model + legacy_strategy.average_update).astype(COMPUTE_DTYPE)
    # The round's result for the Flower strategy: the FedAvg of the boards' weights (the model plus their
    # average update), with the boards' weighted mean metrics.
    weights = {node: float(metrics.get(TrainMetrics.NUM_EXAMPLES, 0)) for node, metrics in accepted.items()}
    total = sum(weights.values())
    means: dict[str, float] = {}
    for name in ("train_loss", "val_loss", "val_accuracy"):
        values = [(weights[node], float(m[name])) for node, m in accepted.items() if name in m]
        if values and total > 0:
            means[name] = sum(w * v for w, v in values) / total
    # One equal result per aggregated board (the new model, an equal share of the samples): their FedAvg is
    # the new model, and a DP wrapper counts the boards it aggregated, as on a plain round.
    share = MetricRecord({**means, TrainMetrics.NUM_EXAMPLES: max(int(total) // max(len(accepted), 1), 1)})
    model = ArrayRecord({PACKED: Array(new_model)})
    results = [Message(RecordDict({"arrays": model, "metrics": share}), reply_to=message)
               for message in messages if message.metadata.dst_node_id in accepted] or [
        Message(RecordDict({"arrays": model, "metrics": share}), reply_to=messages[0])]
    if strategy.private is not None:  # [server.dp] mode "local": the boards clipped; the wrapper adds the noise
        aggregated, metrics = strategy.private.aggregate_train(true_round, results)
    else:
        aggregated, metrics = _FlowerSide(strategy).aggregate_train(true_round, results)
    stats.train_metrics = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
    if aggregated is None:
        return None
    from edgefld.apps.weights import to_global_model

    return to_global_model(aggregated)


def _halt(strategy: ResumableStrategy, true_round: int, reason: str) -> None:
    """A round secure aggregation could not complete: one WARNING line, and the same reason in the round's
    record (a failure of no board, phase "aggregate"), which the server daemon's round line shows."""
    from edgefld.records import Failure

    log(WARNING, "edgefl: round %d failed: %s; the global model is unchanged", true_round, reason)
    stats = strategy.stats[true_round]
    # The boards that sent their masked update trained, but nothing of theirs was aggregated.
    stats.train_ok = 0
    stats.trained.clear()
    stats.backends.clear()
    stats.failures.append(Failure(node=None, cid=None, board=None, phase=AGGREGATE_PHASE, code=None,
                                  error="secure-aggregation", reason=f"{reason}; the global model is unchanged"))


def _record_stages(strategy: ResumableStrategy, stats: Any, stage_log: _StageLog, nodes: set[int],
                   true_round: int) -> dict[int, dict[str, Any]]:
    """The round's record from the protocol's exchanges: each board that failed, named, with the stage it
    failed in; each board's identity, timings and metrics from its masked-vector reply (sent in the clear
    beside the masked update). Returns the metrics of the boards whose masked update was received."""
    from edgefld.apps.strategy import payload_bytes
    from edgefld.records import ClientIdentity

    accepted: dict[int, dict[str, Any]] = {}
    failed: set[int] = set()
    for stage in stage_log.stages:
        answered = set()
        for reply in stage.replies:
            node = stage.node_of(reply)
            answered.add(node)
            if reply.has_error() and node in accepted:
                # Its masked update is in the sum already; the others' shares unmask it without this board.
                log(WARNING, "edgefl: %s left in the %s stage of round %d, after its masked update: it is aggregated",
                    strategy.describe_node(node), stage.name, true_round)
                continue
            if reply.has_error():
                strategy.record_error_reply(stats, node, reply.error, true_round,
                                            f"secure aggregation {stage.name} stage: ")
                failed.add(node)
                continue
            stats.bytes_received += payload_bytes(reply.content) + _config_bytes(reply.content)
            if stage.name != "collect-masked-vectors":
                continue
            client_config = reply.content.config_records.get("client")
            try:
                client = ClientIdentity.from_config(client_config)
                reported = TrainMetrics.from_metrics(reply.content.metric_records.get("metrics") or {})
            except (KeyError, ValueError):
                continue  # the update is in the sum all the same: only the record lacks its figures
            strategy.boards[node] = client.board_identity()
            strategy.record_trained(stats, node, client, reported, None)
            accepted[node] = dict(reply.content.metric_records.get("metrics") or {})
            clipped = accepted[node].get(CLIPPED_METRIC, 0)
            if clipped:
                log(WARNING, "edgefl: %s: %d values of its round %d update were beyond the clipping range and "
                    "clipped", strategy.describe_node(node), int(clipped), true_round)
        for node in sorted((set(stage.sent.values()) - answered) - failed - set(accepted)):
            strategy.record_silent(stats, node, true_round,
                                   f"did not answer the secure aggregation {stage.name} stage within the round timeout")
            failed.add(node)
    return accepted


def _config_bytes(content: RecordDict) -> int:
    """Bytes of the SecAgg+ record of a reply (keys, shares, and the masked vector travel there)."""
    record = content.config_records.get(flower_compat.SECAGG_CONFIGS_KEY)
    if record is None:
        return 0
    total = 0
    for value in record.values():
        for item in value if isinstance(value, list) else [value]:
            total += len(item) if isinstance(item, bytes) else 0
    return total


# --- the boards ----------------------------------------------------------------------------------


class _Refusal(Exception):
    """The train handler's error reply (or the glue's own), to be answered as it is."""

    def __init__(self, error: Error) -> None:
        super().__init__(error.reason)
        self.error = error


def secure_aggregation_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """The ClientApp's mod for SecAgg+: train messages that carry the protocol go through Flower's
    secaggplus_mod, whose training stage runs edgefl's train handler (``call_next``) through
    _train_for_secaggplus; every other message passes untouched.

    A refusal of the train handler (no data, the board cannot afford the round) and a protocol
    check of Flower's failing (a stage out of order, too few neighbours) become an error reply
    with one WARNING line, as any refusal of this board, never an exception in the ClientApp."""
    if (msg.metadata.message_type != MessageType.TRAIN
            or flower_compat.SECAGG_CONFIGS_KEY not in msg.content.config_records):
        passed: Message = call_next(msg, context)
        return passed
    from flwr.client.mod import secaggplus_mod

    def train(fit_msg: Message, fit_context: Context) -> Message:
        return _train_for_secaggplus(fit_msg, fit_context, call_next)

    try:
        reply: Message = secaggplus_mod(msg, context, train)
        return reply
    except _Refusal as refusal:
        return Message(refusal.error, reply_to=msg)
    except (KeyError, TypeError, ValueError) as exc:
        reason = f"secure aggregation: {exc}"
        log(WARNING, "edgefl: train refused (secure-aggregation): %s", reason)
        return Message(Error(code=settings.ERROR_SECURE_AGGREGATION, reason=reason), reply_to=msg)


def _train_for_secaggplus(fit_msg: Message, context: Context, train: Any) -> Message:
    """edgefl's train handler in the shape secaggplus_mod expects: a legacy FitIns in, a legacy FitRes out
    whose one array is the update (trained - global) and whose weight is the samples trained on."""
    global_packed, config = flower_compat.fit_instruction_from(fit_msg.content)
    clipping_range = float(config.pop(CLIPPING_RANGE_KEY))
    max_weight = float(config.pop(MAX_WEIGHT_KEY))
    fit_msg.content = RecordDict({"arrays": ArrayRecord({PACKED: Array(global_packed)}),
                                  "config": ConfigRecord(config)})
    reply: Message = train(fit_msg, context)
    if reply.has_error():
        raise _Refusal(reply.error)
    trained = reply.content.array_records["arrays"][PACKED].numpy().astype(COMPUTE_DTYPE)
    update = trained - global_packed.astype(COMPUTE_DTYPE)
    metrics = reply.content.metric_records["metrics"]
    num_examples = TrainMetrics.from_metrics(metrics).num_examples
    if num_examples > max_weight:
        reason = (f"this board trained on {num_examples} samples, more than [server.secagg] max_weight "
                  f"{max_weight:g} (SecAgg+ weighs each update by its samples up to it); raise max_weight")
        log(WARNING, "edgefl: train refused (secure-aggregation): %s", reason)
        raise _Refusal(Error(code=settings.ERROR_SECURE_AGGREGATION, reason=reason))
    clipped = int(np.count_nonzero(np.abs(update) > clipping_range))
    if clipped:
        log(WARNING, "edgefl: %d values of this round's update are beyond the secure aggregation clipping range "
            "%.4g: SecAgg+ clips them", clipped, clipping_range)
    content = flower_compat.fit_result_content(update, num_examples)
    # Beside the masked update, in the clear: the board's identity and its figures for the round's record
    # (training loss, validation of the model it received, timings): what every round record has.
    content.metric_records["metrics"] = MetricRecord({**dict(metrics), CLIPPED_METRIC: clipped})
    content.config_records["client"] = reply.content.config_records["client"]
    return Message(content, reply_to=fit_msg)


def received_arrays(directory: str) -> dict[str, dict[str, np.ndarray]]:
    """What _StageLog wrote with $EDGEFL_SECAGG_RECEIVED_DIR: file stem -> its arrays (tests, bench)."""
    found: dict[str, dict[str, np.ndarray]] = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".npz"):
            with np.load(os.path.join(directory, name)) as data:
                found[name[:-4]] = {key: data[key] for key in data.files}
    return found

