"""The ClientApp: train and evaluate on this board's partition, with the board's backend.

Flower runs this module in a fresh process for every message, so only Flower's
records and numpy are imported at module level; the dataset layer and the
backend (and with it torch or TensorFlow) are imported inside the handlers.
Expected failures (no data, cid out of range, a task the board cannot afford,
a missing backend) are answered with an error reply carrying an edgefl code
and a one-line reason, which the ServerApp records: never a traceback.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from logging import ERROR, INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import log

from edgefld import __version__
from edgefld.apps import settings
from edgefld.apps.secure_aggregation import secure_aggregation_mod
from edgefld.apps.weights import record_from, transport_dtype_of, weights_from
from edgefld.config.schema import default
from edgefld.records import BoardStatus, ClientIdentity, Refused, Trained, TrainMetrics


def clip_when_asked(msg: Message, context: Context, call_next: Any) -> Message:
    """Flower's fixedclipping_mod, for the train messages of a run with [server.dp] mode = "local".

    The mod refuses a message without a clipping norm, and a ClientApp's mods are fixed when its module
    loads; so it applies only where the server's DP wrapper put the norm in the train config."""
    from flwr.clientapp.mod import fixedclipping_mod

    from edgefld.flower_compat import DP_CLIPPING_NORM_KEY

    config = msg.content.config_records.get("config")
    if msg.metadata.message_type == MessageType.TRAIN and config is not None and DP_CLIPPING_NORM_KEY in config:
        reply: Message = fixedclipping_mod(msg, context, call_next)
        return reply
    passed: Message = call_next(msg, context)
    return passed


# Outermost first: a SecAgg+ message is unwrapped into edgefl's train message before anything else sees it.
app = ClientApp(mods=[secure_aggregation_mod, clip_when_asked])


def _process_age() -> float | None:
    """Seconds since this ClientApp process started (Linux), to tell start-up cost from training in the metrics.

    Read when a message comes, not at import: a ClientApp forked from a preloaded process
    (edgefld.client.warm) imported this module long before it started. Both clocks count from
    boot (the process's start in clock ticks, CLOCK_BOOTTIME now): /proc/stat's boot time is in
    whole seconds, too coarse for a fork that is ready in milliseconds."""
    try:
        with open("/proc/self/stat") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class RefusedMessage(Exception):
    """An expected reason to answer with an error reply instead of a result."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class NodeSettings:
    cid: int
    board: str
    family: str
    profile: str
    data_dir: str
    backend: str
    device: str
    threads: int
    batch_size_cap: int
    max_train_samples: int
    tasks: tuple[str, ...]
    status_file: str
    guards: bool
    memory_margin_mb: int
    heavy_task_min_watts: int
    board_root: str
    board_tools_path: str

    @classmethod
    def from_context(cls, context: Context) -> NodeSettings:
        node = context.node_config
        try:
            return cls(
                cid=int(node["cid"]),
                board=str(node.get("board", "")),
                family=str(node.get("family", "")),
                profile=str(node.get("profile", "")),
                data_dir=str(node.get("data-dir", "")),
                backend=str(node.get("backend", "torch")),
                device=str(node.get("device", "cpu")),
                threads=int(node.get("threads", 0)),
                batch_size_cap=int(node.get("batch-size-cap", 0)),
                max_train_samples=int(node.get("max-train-samples", 0)),
                tasks=tuple(t for t in str(node.get("tasks", "")).split(",") if t),
                status_file=str(node.get("status-file", "")),
                # A node config without them (one written by hand) gets [client]'s defaults.
                guards=_flag(node.get("guards", default("client", "guards", bool))),
                memory_margin_mb=int(node.get("memory-margin-mb", default("client", "memory_margin_mb", int))),
                heavy_task_min_watts=int(node.get("heavy-task-min-watts",
                                                  default("client", "heavy_task_min_watts", int))),
                board_root=str(node.get("board-root", "/")) or "/",
                board_tools_path=str(node.get("board-tools-path", "")),
            )
        except (KeyError, ValueError) as exc:
            raise RefusedMessage(settings.ERROR_INTERNAL, f"bad node config: {exc}") from None


def _flag(value: Any) -> bool:
    """A node-config boolean: TOML gives a bool; a hand-written --node-config may give "true"/"false"."""
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ValueError(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class RunSettings:
    task: str
    num_partitions: int
    partition_seed: int
    local_epochs: int
    batch_size: int
    server_version: str
    partitioning: str
    dirichlet_alpha: float

    @classmethod
    def from_context(cls, context: Context) -> RunSettings:
        run = {**settings.RUN_CONFIG_DEFAULTS, **context.run_config}
        try:
            return cls(
                task=str(run["task"]),
                num_partitions=int(run["num-partitions"]),
                partition_seed=int(run["partition-seed"]),
                local_epochs=int(run["local-epochs"]),
                batch_size=int(run["batch-size"]),
                server_version=str(run["server-version"]),
                partitioning=str(run["partitioning"]),
                dirichlet_alpha=float(run["dirichlet-alpha"]),
            )
        except ValueError as exc:
            raise RefusedMessage(settings.ERROR_INTERNAL, f"bad run config: {exc}") from None


def _prepare(context: Context) -> tuple[NodeSettings, RunSettings, Any, Any]:
    """Check that this board may take the task, load its backend: (node, run, task, backend)."""
    node = NodeSettings.from_context(context)
    run = RunSettings.from_context(context)
    if not settings.compatible_versions(run.server_version, __version__):
        raise RefusedMessage(
            settings.ERROR_INCOMPATIBLE,
            f"client {node.cid} runs edgefl {__version__}, the server {run.server_version}: "
            "install the same release series on both",
        )
    from edgefld.tasks import TASKS

    task = TASKS.get(run.task)
    if task is None:
        raise RefusedMessage(settings.ERROR_TASK_REFUSED,
                             f'unknown task "{run.task}"; this client knows {", ".join(TASKS)}')
    if node.tasks and run.task not in node.tasks:
        raise RefusedMessage(
            settings.ERROR_TASK_REFUSED,
            f"client {node.cid} refuses task {run.task}: its board profile allows only {', '.join(node.tasks)}",
        )
    _check_resources(node, run)
    from edgefld.backends.base import load_backend
    from edgefld.errors import EdgeflError

    try:
        backend = load_backend(node.backend, node.device, node.threads or None)
    except EdgeflError as exc:
        raise RefusedMessage(settings.ERROR_BACKEND, f"client {node.cid}: {exc}") from None
    return node, run, task, backend


def effective_batch_size(node: NodeSettings, run: RunSettings) -> int:
    return min(run.batch_size, node.batch_size_cap) if node.batch_size_cap else run.batch_size


def _check_resources(node: NodeSettings, run: RunSettings) -> None:
    """Refuse a round the board cannot afford now, before the backend's import costs memory."""
    if not node.guards:
        return
    from edgefld import guards

    facts = guards.read_live_facts(node.board_root, node.board_tools_path or None)
    policy = guards.GuardPolicy(True, node.memory_margin_mb, node.heavy_task_min_watts)
    reason = guards.check_round(run.task, node.backend, effective_batch_size(node, run), facts, policy)
    if reason is not None:
        raise RefusedMessage(settings.ERROR_RESOURCES, f"client {node.cid} refuses this round: {reason}")


def _partition(node: NodeSettings, run: RunSettings, task: Any) -> Any:
    from edgefld.data import PartitionError, load_partition
    from edgefld.errors import DataError

    try:
        return load_partition(task.dataset, node.data_dir, node.cid, run.num_partitions, run.partition_seed,
                              run.partitioning, run.dirichlet_alpha)
    except PartitionError as exc:
        raise RefusedMessage(settings.ERROR_PARTITION, f"client {node.cid}: {exc}") from None
    except DataError as exc:
        raise RefusedMessage(settings.ERROR_DATA, f"client {node.cid}: {exc}") from None


def _server_round(msg: Message) -> int:
    config = msg.content.config_records.get("config")
    value = config.get("server-round") if config is not None else None
    return int(value) if isinstance(value, (int, float, str)) else 0


def _proximal_mu(msg: Message) -> float:
    """FedProx's mu, as Flower's FedProx puts it in the train message's config (0: another strategy)."""
    config = msg.content.config_records.get("config")
    value = config.get("proximal-mu") if config is not None else None
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < float("inf"):
        raise RefusedMessage(settings.ERROR_INTERNAL, f"bad proximal-mu in the train message: {value!r}")
    return float(value)


def _write_status(node_status_file: str, phase: str, server_round: int, outcome: Trained | Refused) -> None:
    """Leave the last result where the client daemon can show it (STATUS, journal)."""
    if not node_status_file:
        return
    from edgefld.errors import StateWriteError
    from edgefld.persist import atomic_write_bytes

    status = BoardStatus(phase=phase, round=server_round, outcome=outcome, time=time.time())
    try:
        # A temporary file of its own: two ClientApps of this board may overlap (the warm runtime forks them).
        atomic_write_bytes(node_status_file, json.dumps(status.to_json()).encode(), durable=False)
    except StateWriteError as exc:
        log(ERROR, "edgefl: %s", exc)


def _refusal(msg: Message, context: Context, exc: RefusedMessage, phase: str) -> Message:
    # A WARNING: refusing is this board doing its job (guards, bad data); the server records it as a failure.
    log(WARNING, "edgefl: %s refused (%s): %s", phase, settings.ERROR_NAMES.get(exc.code, exc.code), exc.reason)
    status_file = str(context.node_config.get("status-file", ""))
    _write_status(status_file, phase, _server_round(msg), Refused(code=exc.code, reason=exc.reason))
    return Message(Error(code=exc.code, reason=exc.reason), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    handler_started_at = time.time()
    process_age = _process_age()
    try:
        node, run, task, backend = _prepare(context)
        prepare_seconds = time.time() - handler_started_at  # importing the backend dominates it
        part = _partition(node, run, task)
        images, labels = part.train_x, part.train_y
        server_round = _server_round(msg)
        if node.max_train_samples and len(labels) > node.max_train_samples:
            # A different subset each round, so capped boards still see their whole partition over time.
            pick = np.random.default_rng([run.partition_seed, node.cid, server_round]).choice(
                len(labels), node.max_train_samples, replace=False)
            pick.sort()
            images, labels = images[pick], labels[pick]
        batch_size = effective_batch_size(node, run)
        from edgefld.backends.layout import task_layout

        arrays = msg.content.array_records["arrays"]
        wire_dtype = transport_dtype_of(arrays)  # the reply travels as the instruction did
        global_weights = weights_from(arrays, [spec.shape for spec in task_layout(task)])
        validation_started_at = time.time()
        load_seconds = validation_started_at - handler_started_at
        # Federated evaluation of the global model this round starts from, in the same process:
        # Flower starts a new ClientApp process per message, so a separate evaluate message would
        # pay the interpreter and framework start-up again on every board, every round.
        validation = backend.evaluate(task, global_weights, part.val_x, part.val_y)
        val_seconds = time.time() - validation_started_at
        result = backend.train(
            task, global_weights, images, labels,
            epochs=run.local_epochs, batch_size=batch_size, seed=server_round, proximal_mu=_proximal_mu(msg),
        )
    except RefusedMessage as exc:
        return _refusal(msg, context, exc, "train")
    except Exception as exc:  # noqa: BLE001 - a bug must not take the SuperNode's round down silently
        return _refusal(msg, context, RefusedMessage(settings.ERROR_INTERNAL, f"{type(exc).__name__}: {exc}"), "train")
    log(INFO, "edgefl: client %d trained round %d: %d samples, loss %.4f, %.2f s",
        node.cid, server_round, result.num_examples, result.loss, result.seconds)
    _write_status(node.status_file, "train", server_round,
                  Trained(loss=float(result.loss), samples=int(result.num_examples), seconds=float(result.seconds),
                          val_accuracy=float(validation.accuracy)))
    metrics = TrainMetrics(
        train_loss=float(result.loss), train_seconds=float(result.seconds),
        val_loss=float(validation.loss), val_accuracy=float(validation.accuracy),
        startup_seconds=float(process_age) if process_age is not None else 0.0,
        handler_seconds=float(time.time() - handler_started_at), prepare_seconds=float(prepare_seconds),
        num_examples=int(result.num_examples), load_seconds=float(load_seconds), val_seconds=float(val_seconds),
    )
    client = ClientIdentity(edgefl_version=__version__, cid=node.cid, board=node.board, backend=backend.name,
                            device=backend.device, family=node.family or None, profile=node.profile or None)
    content = RecordDict({
        "arrays": record_from(result.weights, wire_dtype),
        "metrics": MetricRecord({**metrics.to_metrics()}),
        "client": ConfigRecord({**client.to_config()}),
    })
    return Message(content, reply_to=msg)
