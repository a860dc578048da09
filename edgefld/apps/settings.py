"""The keys the apps read from Flower's run config and node config, with defaults.

The run config's defaults become ``[tool.flwr.app.config]`` of the thin FAB
(Flower accepts only overrides of keys declared there); the node config is
what the client daemon passes to its SuperNode.
"""

from __future__ import annotations

from typing import Any

from edgefld import __version__
from edgefld.config.schema import KEYS_BY_TABLE, key

STRATEGY_PARAMETERS = tuple(name for name in KEYS_BY_TABLE["server.strategy"] if name != "name")


def _server_default(name: str) -> Any:
    return key("server", name).default


# [tool.flwr.app.config]: the run, as the server daemon submits it. Flower does not
# type-check overrides, so the apps convert every value they read. What a [server] key
# sets has that key's default (the schema's); the order is the FAB's, and so its hash.
RUN_CONFIG_DEFAULTS: dict[str, Any] = {
    "task": _server_default("task"),
    "num-rounds": _server_default("rounds"),
    "num-partitions": _server_default("num_partitions"),
    "partition-seed": 42,
    "local-epochs": _server_default("local_epochs"),
    "batch-size": _server_default("batch_size"),
    "sample-fraction": _server_default("sample_fraction"),
    "min-clients": _server_default("min_clients"),
    "round-timeout": _server_default("round_timeout"),  # seconds a round waits for replies
    "grid-poll": 0.05,  # seconds between the ServerApp's reply polls (Flower's own is 3 s); loopback, in a round only
    "transport-dtype": _server_default("transport_dtype"),  # how the weights travel (edgefld.apps.weights)
    "state-dir": "",  # where checkpoints and metrics.jsonl go; "" = no persistence (simulation)
    "data-dir": "",  # the server's datasets, for centralised evaluation
    "eval-backend": "",  # backend for centralised evaluation; "" = none
    "server-version": __version__,
    # The training split: "iid" | "dirichlet" ([server] partitioning), with its concentration.
    "partitioning": _server_default("partitioning"),
    "dirichlet-alpha": _server_default("dirichlet_alpha"),
    # [server.strategy]: the name, and every hyperparameter (each strategy reads its own; see
    # edgefld.apps.strategy). The boards read "proximal-mu" from the train message, as Flower's FedProx sends it.
    "strategy": key("server.strategy", "name").default,
    **{name.replace("_", "-"): key("server.strategy", name).default for name in STRATEGY_PARAMETERS},
    # [server.dp]
    "dp-mode": key("server.dp", "mode").default,
    "dp-clipping-norm": key("server.dp", "clipping_norm").default,
    "dp-noise-multiplier": key("server.dp", "noise_multiplier").default,
    # [server] secure_aggregation and [server.secagg] (edgefld.apps.secure_aggregation)
    "secure-aggregation": _server_default("secure_aggregation"),
    **{f"secagg-{name.replace('_', '-')}": spec.default for name, spec in KEYS_BY_TABLE["server.secagg"].items()},
}

# --node-config of each SuperNode, from the client daemon's config and profile.
NODE_CONFIG_KEYS = (
    "cid",  # int: the data partition
    "board",  # str: the board's model as detected ("" = unknown); the server names failures with it
    "family",  # str: the board's family as detected (edgefld.hardware); shown by the server's `edgefl status`
    "profile",  # str: the rule of edgefld.profile that chose backend and limits; shown there too
    "data-dir",  # str
    "backend",  # str: a name of edgefld.backends.catalog.BACKENDS
    "device",  # str: cpu | cuda
    "threads",  # int
    "batch-size-cap",  # int
    "max-train-samples",  # int, 0 = no cap
    "tasks",  # str: comma-separated tasks this board may take
    "status-file",  # str: where the ClientApp records its last result ("" = nowhere)
    "guards",  # bool: refuse rounds the board cannot afford now (edgefld.guards)
    "memory-margin-mb",  # int
    "heavy-task-min-watts",  # int, 0 = no power-mode check
    "board-root",  # str: where the board's /proc and /sys are read ("/"; a fixture tree in tests)
    "board-tools-path",  # str: search path of vcgencmd / nvpmodel ("" = the process's PATH)
)

# Error codes a ClientApp puts in its error reply (Flower's own codes are small numbers).
ERROR_DATA = 4001  # dataset missing or corrupt on the board
ERROR_PARTITION = 4002  # cid out of range for num-partitions
ERROR_TASK_REFUSED = 4003  # the board's profile does not allow this task
ERROR_BACKEND = 4004  # the backend is not installed / not usable
ERROR_INCOMPATIBLE = 4005  # server and client edgefl versions do not match
ERROR_RESOURCES = 4006  # the board cannot afford the round now (memory, throttling, power mode)
ERROR_SECURE_AGGREGATION = 4007  # the board cannot take part in this round's SecAgg+ (weight, protocol state)
ERROR_INTERNAL = 4099

ERROR_NAMES = {
    ERROR_DATA: "data",
    ERROR_PARTITION: "partition",
    ERROR_TASK_REFUSED: "task-refused",
    ERROR_BACKEND: "backend",
    ERROR_INCOMPATIBLE: "incompatible-version",
    ERROR_RESOURCES: "resources",
    ERROR_SECURE_AGGREGATION: "secure-aggregation",
    ERROR_INTERNAL: "internal",
}


def compatible_versions(server: str, client: str) -> bool:
    """Same release series: major.minor equal (the weight layouts and message keys may change between them)."""
    return server.split(".")[:2] == client.split(".")[:2]
