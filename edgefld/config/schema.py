"""Every configuration key edgefl knows: its table, type, range, default and meaning.

This module is the single source of truth. The loader validates against it,
the CLI builds its override flags from it, and the shipped etc/edgefl.toml is
generated from it (``edgefl default-config``; a test keeps the two equal).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edgefld import tasks as task_catalog
from edgefld.backends import catalog as backend_catalog

T = TypeVar("T")

REQUIRED: Any = object()  # sentinel default: the key must be set for the role that uses it


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    name = kind.get(type(value), type(value).__name__)
    shown = repr(value) if not isinstance(value, (list, dict)) else ""
    if isinstance(value, bool):
        shown = "true" if value else "false"
    if isinstance(value, str):
        shown = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{name} {shown}".strip()


def shorten(text: str, limit: int = 40) -> str:
    """A value as a message quotes it: a runaway string (a 900 KB line, 5000 digits) is cut, not echoed, and a
    control character (a newline in a flag's value) is shown escaped, so the message stays one line."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit * 4])
    return text if len(text) <= limit else text[: limit - 3] + "..."


_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def is_host_name(text: str) -> bool:
    return len(text) <= 253 and all(_HOSTNAME_LABEL.match(label) for label in text.split("."))


def parse_host_port(text: str) -> tuple[str, int]:
    """Split "host:port" / "[v6]:port"; raise ValueError with a reason a person can act on."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise ValueError('an IPv6 address needs the form "[addr]:port"')
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f'"{shorten(host)}" is not an IPv6 address') from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError("the port is missing")
        if ":" in host:
            raise ValueError('an IPv6 address needs the form "[addr]:port"')
        if not host:
            raise ValueError("the host is missing")
        is_ipv4_like = all(part.isdigit() for part in host.split("."))
        if is_ipv4_like:
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f'"{shorten(host)}" is not an IPv4 address') from None
        elif not is_host_name(host):
            raise ValueError(f'"{shorten(host)}" is not a valid host name')
    if not port_text.isdigit():
        raise ValueError(f'port "{shorten(port_text)}" is not a number')
    if len(port_text) > 5:
        raise ValueError(f"port {shorten(port_text)} is outside 1..65535")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1..65535")
    return host, port


@dataclass(frozen=True)
class Key:
    table: str
    name: str
    kind: str  # "int" | "float" | "str" | "choice" | "host_port" | "path" | "bool" | "switch" (a bool or "auto")
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    minimum_exclusive: bool = False
    maximum_exclusive: bool = False
    choices: tuple[str, ...] = ()
    example: Any = None  # shown in the shipped file for required keys
    flag: str | None = None  # command-line override, e.g. "--cid"
    extra_check: Callable[[Any], str | None] | None = field(default=None, compare=False)

    @property
    def dotted(self) -> str:
        return f"[{self.table}] {self.name}"

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def optional(self) -> bool:
        """Unset (None) unless the file or a flag sets it."""
        return self.default is None

    def allowed(self) -> str:
        """What is allowed, in words, for error messages."""
        if self.kind == "choice":
            return "one of " + ", ".join(f'"{c}"' for c in self.choices)
        if self.kind == "host_port":
            return 'a string "host:port" (IPv4, host name, or "[IPv6]:port"; port 1..65535)'
        if self.kind == "path":
            return "a string holding a file system path"
        if self.kind == "switch":
            return 'true, false or "auto"'
        if self.kind == "bool":
            return "true or false"
        noun = {"int": "an integer", "float": "a number", "str": "a string"}[self.kind]
        low = "" if self.minimum is None else f"{'>' if self.minimum_exclusive else '>='} {_fmt(self.minimum)}"
        high = "" if self.maximum is None else f"{'<' if self.maximum_exclusive else '<='} {_fmt(self.maximum)}"
        if low and high:
            return f"{noun} {low} and {high}"
        return f"{noun} {low or high}".strip()

    def validate(self, value: Any) -> Any:
        """Return the value in its canonical Python type, or raise ValueError(problem)."""
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"must be {self.allowed()}, got {_describe(value)}")
        elif self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"must be {self.allowed()}, got {_describe(value)}")
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"must be {self.allowed()}, got {value}")
            value = float(value)
        elif self.kind == "switch":
            if not isinstance(value, bool) and value != "auto":
                raise ValueError(f"must be {self.allowed()}, got {_describe(value)}")
        elif self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"must be {self.allowed()}, got {_describe(value)}")
        elif not isinstance(value, str):
            raise ValueError(f"must be {self.allowed()}, got {_describe(value)}")
        if self.kind in ("int", "float"):
            too_low = self.minimum is not None and (
                value <= self.minimum if self.minimum_exclusive else value < self.minimum
            )
            too_high = self.maximum is not None and (
                value >= self.maximum if self.maximum_exclusive else value > self.maximum
            )
            if too_low or too_high:
                raise ValueError(f"must be {self.allowed()}, got {_fmt(value)}")
        elif self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f'must be {self.allowed()}, got "{shorten(value)}"')
        elif self.kind == "host_port":
            try:
                parse_host_port(value)
            except ValueError as exc:
                raise ValueError(
                    f'"{shorten(value)}" is not a valid address: {exc}; expected {self.allowed()}') from None
        elif self.kind == "path":
            if not value or "\x00" in value:
                raise ValueError(f"must be {self.allowed()}, got {_describe(value)}")
        if self.extra_check is not None:
            problem = self.extra_check(value)
            if problem:
                raise ValueError(problem)
        return value

    def parse_flag(self, text: str) -> Any:
        """Turn a command-line string into the key's type (validation happens after)."""
        if self.kind == "int":
            try:
                return int(text, 10)
            except ValueError:
                raise ValueError(f"must be {self.allowed()}, got \"{shorten(text)}\"") from None
        if self.kind == "float":
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"must be {self.allowed()}, got \"{shorten(text)}\"") from None
        if self.kind in ("switch", "bool"):
            words: dict[str, Any] = {"true": True, "false": False}
            if self.kind == "switch":
                words["auto"] = "auto"
            switch = words.get(text)
            if switch is None:
                raise ValueError(f"must be {self.allowed()}, got \"{shorten(text)}\"")
            return switch
        return text


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() and abs(number) < 1e15 else repr(number)


# The choices of [client] backend and [server] task: the catalogues' names, nothing typed twice.
BACKENDS = ("auto", *backend_catalog.BACKENDS)
TASKS = tuple(task_catalog.TASKS)
LOG_LEVELS = ("debug", "info", "warning", "error")
# [server.strategy] name: Flower's Message-API strategies that fit weight-only updates.
STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedmedian", "fedtrimmedavg",
              "krum")
# Which [server.strategy] keys each strategy reads; setting another one is an error (it would do nothing).
STRATEGY_KEYS: dict[str, tuple[str, ...]] = {
    "fedavg": (), "fedavgm": ("server_learning_rate", "server_momentum"), "fedprox": ("proximal_mu",),
    "fedadam": ("eta", "beta_1", "beta_2", "tau"), "fedyogi": ("eta", "beta_1", "beta_2", "tau"),
    "fedadagrad": ("eta", "tau"), "fedmedian": (), "fedtrimmedavg": ("trim_beta",), "krum": ("num_malicious_nodes",),
}



# Strategies whose rule needs each board's update (a median, a trimmed mean, Krum's distances): secure
# aggregation gives the server only the weighted sum, which the FedAvg family is built on.
SUM_STRATEGIES = tuple(name for name in STRATEGIES if name not in ("fedmedian", "fedtrimmedavg", "krum"))


def _in_words(items: list[str]) -> str:
    """"a", "a or b", "a, b or c"."""
    return " or ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)


# Flower's SuperLink and SuperNode defaults moved between releases; these are edgefl's own.
DEFAULT_FLEET_PORT = 9092

KEYS: tuple[Key, ...] = (
    # --- [client]: one board in the federation -------------------------------------------
    Key("client", "cid", "int", REQUIRED, minimum=0, maximum=1_000_000, example=0, flag="--cid",
        doc="This board's client id. It picks data partition `cid` of the server's `num_partitions`, "
            "so give every board in the fleet a different one (0, 1, 2, ...)."),
    Key("client", "server", "host_port", REQUIRED, example="192.168.1.10:9092", flag="--server",
        doc="Address of the edgefl server's Fleet API, \"host:port\" (host name, IPv4, or \"[IPv6]:port\")."),
    Key("client", "backend", "choice", "auto", choices=BACKENDS, flag="--backend",
        doc="Training framework. \"auto\" lets edgefl choose from the board and what is installed "
            "(see `edgefl detect`); naming one that is not installed is an error."),
    Key("client", "threads", "int", 0, minimum=0, maximum=1024, flag="--threads",
        doc="CPU threads for training. 0 = the CPUs online (the profile's choice); set it lower when "
            "the board also does other work or runs several clients."),
    Key("client", "data_dir", "path", "/var/lib/edgefl/data", flag="--data-dir",
        doc="Where datasets are stored once, preprocessed (`edgefl data download|import`)."),
    Key("client", "state_dir", "path", "/var/lib/edgefl/client", flag="--state-dir",
        doc="The client's own state (Flower's node files, last round's result)."),
    Key("client", "runtime_port", "int", 0, minimum=0, maximum=65535, flag="--runtime-port",
        doc="Port of Flower's SuperNode runtime API on 127.0.0.1 (local only). 0 picks a free port at "
            "every start, so several clients run on one host without further settings.",
        extra_check=lambda port: "must be 0 (pick a free port) or 1024..65535" if 0 < port < 1024 else None),
    Key("client", "clientapp_runtime", "choice", "warm", choices=("warm", "flower"), flag="--clientapp-runtime",
        doc="How each round's ClientApp process starts. \"warm\": forked from one process that has Flower, "
            "edgefl and the backend already imported (ready in milliseconds; each round still gets a "
            "process of its own). \"flower\": Flower's own SuperExec starts a fresh interpreter per "
            "message (seconds of start-up and imports every round)."),
    Key("client", "tls", "switch", "auto", flag="--tls",
        doc="TLS to the server's Fleet API. \"auto\": on unless `server` is a loopback address "
            "(127.0.0.1, ::1, localhost), like the server's own \"auto\"; both sides must agree."),
    Key("client", "ca", "path", None, example="/var/lib/edgefl/pki/ca.crt", flag="--ca",
        doc="The fleet's CA certificate (ca.crt from `edgefl pki init-ca`) that the server's certificate "
            "must be signed by. Not set: the system's trusted CAs."),
    Key("client", "key", "path", None, example="/var/lib/edgefl/pki/client-{cid}.key", flag="--key",
        doc="This board's node key (`edgefl pki client-key`; 0600, owned by the service user), for a "
            "server with node_auth on; its .pub must be enrolled there (`edgefl enrol`). \"{cid}\" in the "
            "path stands for the client id, so edgefl-client@ instances share one [client] table."),
    Key("client", "ready_timeout", "float", 60.0, minimum=0.0, maximum=86_400.0,
        doc="Seconds to wait for the server before telling systemd the client is up anyway (it keeps "
            "retrying; `systemctl status` then says it is waiting), so `systemctl start` does not hang."),
    Key("client", "guards", "bool", True, flag="--guards",
        doc="Resource guards: before each round the board refuses it (and tells the server why) when it "
            "cannot afford it: too little MemAvailable for the round's estimated peak, a Raspberry Pi "
            "throttled or under-voltage now, or a heavy task in a low Jetson power mode. false: train "
            "whatever is asked."),
    Key("client", "memory_margin_mb", "int", 128, minimum=0, maximum=65_536,
        doc="MB that must stay available beyond a round's estimated peak memory (the page cache, the "
            "SuperNode and whatever else the board runs); a round that would eat into it is refused."),
    Key("client", "heavy_task_min_watts", "int", 15, minimum=0, maximum=1000,
        doc="Lowest Jetson power mode, in watts as its name states (5W, MODE_10W, MODE_15W_6CORE), in which "
            "the board takes a heavy task (cifar10); MAXN always does. 0: no power-mode check."),
    Key("client", "max_reply_mb", "int", 16, minimum=6, maximum=4096,
        doc="Largest answer from the server in MiB (Flower moves models in pieces of at most 5 MiB); a larger "
            "or endless one is dropped and retried, so a hostile server cannot exhaust the board's memory."),
    Key("client", "min_read_rate", "int", 1024, minimum=1, maximum=1_000_000_000,
        doc="Bytes per second an answer from the server must average once read_grace has passed; a slower "
            "one (a server dripping bytes) is dropped and retried instead of hanging the board."),
    Key("client", "read_grace", "float", 30.0, minimum=1.0, maximum=600.0,
        doc="Seconds an answer from the server may take before min_read_rate applies: 30 is Flower's own "
            "per-request timeout, and a loaded server may think that long before it answers. Lower only "
            "where the server always answers at once (it bounds how long a drip holds the board)."),
    Key("client", "refusal_backoff_max", "int", 300, minimum=5, maximum=86_400,
        doc="Longest wait in seconds between tries after the server's answer turned this board away (a CA "
            "that does not sign its certificate, a name mismatch, TLS on one side only): the wait doubles "
            "from 5 s up to this, so a server fixed later is rejoined within this long, without touching "
            "the board."),
    # --- [server]: the federation's coordinator ------------------------------------------
    Key("server", "listen", "host_port", f"0.0.0.0:{DEFAULT_FLEET_PORT}", flag="--listen",
        doc="Address the Fleet API listens on for boards. Only the Fleet API is served here; "
            "Flower's Control and Runtime APIs stay on loopback."),
    Key("server", "tls", "switch", "auto", flag="--tls",
        doc="TLS on the Fleet API. \"auto\": on unless `listen` is a loopback address, so a server "
            "reachable from the network never speaks plain HTTP. Needs tls_cert and tls_key "
            "(`edgefl pki server-cert`)."),
    Key("server", "tls_cert", "path", "/var/lib/edgefl/pki/server.crt",
        doc="The server's TLS certificate (PEM), signed by the fleet's CA and naming every address boards use."),
    Key("server", "tls_key", "path", "/var/lib/edgefl/pki/server.key",
        doc="The private key of tls_cert (PEM; 0600, owned by the service user)."),
    Key("server", "node_auth", "switch", "auto", flag="--node-auth",
        doc="Admit only boards whose node key is enrolled (Flower's SuperNode authentication). \"auto\": "
            "on whenever TLS is on; it needs TLS (a key's signature could be replayed over plain HTTP)."),
    Key("server", "enrolled_keys", "path", "/var/lib/edgefl/pki/enrolled",
        doc="Directory of the enrolled boards' public keys, one NAME.pub each (`edgefl enrol` puts them "
            "here). The running server admits a new file and revokes a removed one within seconds."),
    Key("server", "task", "choice", "digits", choices=TASKS, flag="--task",
        doc="What the federation trains: " + _in_words(
            [f'"{task.name}" ({task.summary})' for task in task_catalog.TASKS.values()]) + "."),
    Key("server", "num_partitions", "int", 50, minimum=1, maximum=100_000, flag="--num-partitions",
        doc="Into how many partitions the training set is split (see partitioning); a board takes "
            "partition `cid`."),
    Key("server", "rounds", "int", 3, minimum=1, maximum=1_000_000, flag="--rounds",
        doc="Number of federated rounds."),
    Key("server", "min_clients", "int", 2, minimum=1, maximum=100_000, flag="--min-clients",
        doc="A round starts only when at least this many boards are connected and it trains with no fewer."),
    Key("server", "sample_fraction", "float", 1.0, minimum=0.0, minimum_exclusive=True, maximum=1.0,
        flag="--sample-fraction",
        doc="Fraction of connected boards asked to train in each round (0 < f <= 1)."),
    Key("server", "local_epochs", "int", 3, minimum=1, maximum=10_000, flag="--local-epochs",
        doc="Epochs each board trains on its partition per round."),
    Key("server", "batch_size", "int", 16, minimum=1, maximum=65_536, flag="--batch-size",
        doc="Training batch size (a board with little memory may use a smaller one: see `edgefl detect`)."),
    Key("server", "data_dir", "path", "/var/lib/edgefl/data",
        doc="Where the server keeps the test split for centralised evaluation."),
    Key("server", "state_dir", "path", "/var/lib/edgefl/server", flag="--state-dir",
        doc="Server state: the checkpointed global model, metrics.jsonl, logs."),
    Key("server", "round_timeout", "float", 600.0, minimum=1.0, maximum=86_400.0,
        doc="Seconds a round waits for the boards' replies; a board that has not answered by then "
            "counts as failed for that round."),
    Key("server", "transport_dtype", "choice", "float32", choices=("float32", "float16"),
        doc="How the model's weights travel to and from the boards. \"float16\" halves the bytes of a round; "
            "boards train and the server aggregates in float32 either way (measured on mnist, 5 rounds: "
            "see tests/apps/test_transport_dtype.py for the accuracy it costs)."),
    Key("server", "max_connections", "int", 4096, minimum=16, maximum=1_000_000,
        doc="Connections the Fleet gateway holds at once; one more is closed at once (each board keeps one or "
            "two). Kept within the process's file descriptors (the unit sets LimitNOFILE=65536)."),
    Key("server", "head_timeout", "float", 10.0, minimum=0.1, maximum=3600.0,
        doc="Seconds a connection has to finish its TLS handshake and each request head; a connection that "
            "sends nothing, or a head byte by byte, is closed then."),
    Key("server", "idle_timeout", "float", 15.0, minimum=1.0, maximum=3600.0,
        doc="Seconds an idle keep-alive connection stays open between requests."),
    Key("server", "min_transfer_rate", "int", 8192, minimum=1, maximum=1_000_000_000,
        doc="Bytes per second a request body (and a client reading an answer) must average once "
            "transfer_grace has passed; a slower one is dropped."),
    Key("server", "transfer_grace", "float", 10.0, minimum=0.1, maximum=3600.0,
        doc="Seconds any body or answer may take before min_transfer_rate applies."),
    Key("server", "max_object_mb", "int", 8, minimum=1, maximum=1024,
        doc="Largest push-object body in MiB: Flower sends models in chunks of at most 5 MiB, so 8 covers any "
            "model; a larger announced body is refused before it is read."),
    Key("server", "max_request_kb", "int", 1024, minimum=16, maximum=1_048_576,
        doc="Largest body in KiB of every other Fleet request (they carry ids and metadata, not models)."),
    Key("server", "upstream_connections", "int", 16, minimum=1, maximum=4096,
        doc="Requests forwarded to the SuperLink at once; more wait their turn. The SuperLink reads each "
            "body whole, so this times max_object_mb bounds the bodies it holds (16 x 8 MiB = 128 MiB). "
            "A connection stays taken while its answer streams to the board, so too few let slow boards "
            "hold up the rest: under 40 concurrent 8 MiB bodies an honest round took 17 s at 8, 14 s at "
            "16 and 22 s at 32, with every body answered (bench/bench_gateway.py --flood-rounds)."),
    Key("server", "prometheus_textfile", "path", None, example="/var/lib/prometheus/node-exporter/edgefl.prom",
        doc="Where to write the run's figures for Prometheus after every round (round, accuracy, loss, boards "
            "ok, failed and refused, round seconds, each board's last reply), atomically, in the format of "
            "node_exporter's textfile collector: put it in that collector's directory. Not set: none written.",
        extra_check=lambda path: None if path.endswith(".prom") else
        f'must end in ".prom" (node_exporter\'s textfile collector reads only those), got "{shorten(path)}"'),
    Key("server", "partitioning", "choice", "iid", choices=("iid", "dirichlet"), flag="--partitioning",
        doc="How the training set is split among the num_partitions boards. \"iid\": equal shares of one "
            "shuffle. \"dirichlet\": each class is spread over the partitions in proportions drawn from "
            "Dirichlet(dirichlet_alpha), the usual model of non-IID fleets (sizes and label mixes differ); "
            "`edgefl data status --partitions` shows them. Both are fixed by the run's seed, so every board "
            "computes the same split and reads only its own rows."),
    Key("server", "dirichlet_alpha", "float", 0.5, minimum=0.0, minimum_exclusive=True, maximum=1e6,
        flag="--dirichlet-alpha",
        doc="Concentration of the \"dirichlet\" partitioning: 0.1 gives most boards one or two classes, "
            "0.5 a skewed mix, 100 nearly IID. Unused by \"iid\"."),
    Key("server", "secure_aggregation", "bool", False, flag="--secure-aggregation",
        doc="Flower's SecAgg+: each board masks its update so that the server learns only the weighted sum of "
            "the round's updates, never one board's (what it protects and what not: README \"Secure "
            "aggregation\"). Its parameters are in [server.secagg]. Works with the FedAvg family of strategies "
            "(fedavg, fedavgm, fedprox, fedadam, fedyogi, fedadagrad), with [server.dp] mode \"off\" or \"local\" "
            "(not \"central\"), and needs min_clients >= 2 (3 or more to survive a board dropping out)."),
    # --- [server.strategy]: how the boards' updates become the next global model -----------
    Key("server.strategy", "name", "choice", "fedavg", choices=STRATEGIES, flag="--strategy",
        doc="Aggregation strategy, Flower's own implementation: \"fedavg\" (weighted mean), \"fedavgm\" "
            "(with server momentum), \"fedprox\" (boards add a proximal term, proximal_mu), \"fedadam\", "
            "\"fedyogi\", \"fedadagrad\" (server-side adaptive optimisers), \"fedmedian\" (coordinate-wise "
            "median), \"fedtrimmedavg\" (mean without the extremes, trim_beta), \"krum\" (the update "
            "closest to the others, num_malicious_nodes). The server's optimiser state (moments, momentum) "
            "is checkpointed with the model, so a restarted server continues it."),
    Key("server.strategy", "proximal_mu", "float", 0.01, minimum=0.0, maximum=1e4,
        doc="fedprox: weight of the proximal term mu/2 * ||w - w_global||^2 each board adds to its loss "
            "(every backend: torch, TensorFlow, LiteRT)."),
    Key("server.strategy", "server_learning_rate", "float", 1.0, minimum=0.0, minimum_exclusive=True,
        maximum=1e4, doc="fedavgm: server learning rate applied to the averaged update."),
    Key("server.strategy", "server_momentum", "float", 0.9, minimum=0.0, maximum=1.0,
        doc="fedavgm: server momentum (0: plain FedAvg)."),
    Key("server.strategy", "eta", "float", 0.01, minimum=0.0, minimum_exclusive=True, maximum=1e4,
        doc="fedadam, fedyogi, fedadagrad: server learning rate, the step along the averaged update's "
            "adaptive direction (Flower's own defaults: 0.1 for fedadam and fedadagrad, 0.01 for fedyogi)."),
    Key("server.strategy", "beta_1", "float", 0.9, minimum=0.0, maximum=1.0, maximum_exclusive=True,
        doc="fedadam, fedyogi: first-moment (momentum) decay."),
    Key("server.strategy", "beta_2", "float", 0.99, minimum=0.0, maximum=1.0, maximum_exclusive=True,
        doc="fedadam, fedyogi: second-moment decay."),
    Key("server.strategy", "tau", "float", 0.001, minimum=0.0, minimum_exclusive=True, maximum=1.0,
        doc="fedadam, fedyogi, fedadagrad: adaptivity, added to the root of the second moment."),
    Key("server.strategy", "trim_beta", "float", 0.2, minimum=0.0, maximum=0.5, maximum_exclusive=True,
        doc="fedtrimmedavg: fraction of the values cut at each end, per coordinate (0 <= beta < 0.5)."),
    Key("server.strategy", "num_malicious_nodes", "int", 0, minimum=0, maximum=100_000,
        doc="krum: boards assumed byzantine; Krum needs at least 2 * this + 3 boards in a round."),
    # --- [server.dp]: differential privacy of the boards' updates (Flower's DP wrappers and mod) --
    Key("server.dp", "mode", "choice", "off", choices=("off", "central", "local"), flag="--dp",
        doc="Differential privacy with fixed clipping and Gaussian noise, Flower's implementation. \"central\": "
            "the server clips each board's update (its change to the global model) to clipping_norm, then "
            "adds noise to the aggregate (it sees the unclipped updates). \"local\": each board clips its own "
            "update before sending it (Flower's client-side clipping mod); the server adds the noise. Noise "
            "standard deviation: noise_multiplier * clipping_norm / min_clients. No privacy budget (epsilon) "
            "is computed: see README \"Differential privacy\" for what this does and does not guarantee."),
    Key("server.dp", "clipping_norm", "float", 1.0, minimum=0.0, minimum_exclusive=True, maximum=1e6,
        doc="Largest L2 norm of one board's update (all weights together) that reaches the aggregate."),
    Key("server.dp", "noise_multiplier", "float", 1.0, minimum=0.0, maximum=1e3,
        doc="Gaussian noise added to the aggregate, in units of clipping_norm / min_clients (0: clipping only)."),
    # --- [server.secagg]: Flower's SecAgg+ parameters (with [server] secure_aggregation = true) --------
    Key("server.secagg", "num_shares", "int", 0, minimum=0, maximum=100_000,
        extra_check=lambda n: None if n == 0 or n >= 3 else f"must be 0 (every board of the round) or at least 3, "
                                                             f"got {n}",
        doc="Boards each board's secrets are shared with (itself included), Shamir's secret sharing: 0 = every "
            "board of the round. Fewer (odd, >= 3) costs less on a large fleet and tolerates less collusion."),
    Key("server.secagg", "reconstruction_threshold", "float", 0.67, minimum=0.0, minimum_exclusive=True,
        maximum=1.0,
        doc="Fraction of num_shares needed to rebuild a secret (at least 2 shares): a round completes while "
            "every board still has this many of its share holders answering, and fails (the global model "
            "unchanged, one WARNING naming the stage) below it. Higher: more boards must collude to unmask one "
            "board; fewer may drop out."),
    Key("server.secagg", "max_weight", "float", 10_000.0, minimum=1.0, maximum=1e9,
        doc="Largest weight (a board's training samples in the round) SecAgg+ can carry: each board's update is "
            "scaled by samples / max_weight before it is quantised, so keep it near the largest partition (a "
            "larger value costs precision); a board with more samples refuses the round with a line saying so."),
    Key("server.secagg", "clipping_range", "float", 0.0, minimum=0.0, maximum=1e6,
        doc="Each value of a board's update (its change to the global model) is clipped to +-clipping_range "
            "before quantisation. 0 = set every round from the model's weights: the largest absolute weight of "
            "the global model the round starts from (a board counts the values it clipped; they show in its log)."),
    Key("server.secagg", "quantization_range", "int", 4_194_304, minimum=256, maximum=268_435_456,
        doc="Integer levels over [-clipping_range, clipping_range] (Flower's default 2^22). Masks are taken mod "
            "2^32, so boards in a round x quantization_range must stay below 2^32 (1024 boards at 2^22)."),
    # --- [simulate]: the fleet before it exists (`edgefl simulate`) -------------------------------
    Key("simulate", "fleet", "str", "rpi-zero-2w:20,rpi-4-4gb:20,jetson-orin-nano:10", flag="--fleet",
        doc="The virtual fleet, \"BOARD:COUNT,...\": each virtual board gets the profile `edgefl detect` gives "
            "that board (edgefld/hardware/boards.json: the boards edgefl knows; an unknown name is answered with "
            "their names). The run takes [server] task, rounds, local_epochs, batch_size and sample_fraction.",
        extra_check=lambda spec: _fleet_problem(spec)),
    Key("simulate", "backend", "choice", "litert", choices=BACKENDS, flag="--backend",
        doc="The backend every virtual board trains with on this host (as [client] backend would set it "
            "on the board); the board's profile still sets its batch size cap, samples per round and tasks."),
    Key("simulate", "parallel", "int", 2, minimum=1, maximum=4096, flag="--parallel",
        doc="Virtual boards that train at once on this host (Flower's Ray actors, one CPU each); the rest "
            "wait their turn, so a fleet of any size fits in this host's memory. With ray_address, the "
            "cluster's CPUs set it."),
    Key("simulate", "ray_address", "str", None, example="127.0.0.1:6379", flag="--ray-address",
        doc="An existing Ray cluster to run on (`ray start --head` prints its address). Not set: a Ray "
            "instance of this run's own on this host, stopped at its end."),
    Key("simulate", "link_mbps", "float", 10.0, minimum=0, minimum_exclusive=True, maximum=100_000,
        flag="--link-mbps",
        doc="The virtual time's assumed link of every board, in Mbit/s each way (10: a modest Wi-Fi or LTE "
            "link): a round's model download and update upload take bytes x 8 / this. The virtual time is "
            "an estimate of each round's duration on the real boards from edgefld/simulation/costs.json "
            "(an order of magnitude: README, \"Virtual time\")."),
    Key("simulate", "data_dir", "path", "/var/lib/edgefl/data", flag="--data-dir",
        doc="Datasets for every virtual board and the centralised evaluation (`edgefl data`)."),
    Key("simulate", "state_dir", "path", "/var/lib/edgefl/simulation", flag="--state-dir",
        doc="Where the simulated run keeps what a server's state directory holds (metrics.jsonl, checkpoints, "
            "the board registry: `edgefl status` and `edgefl report` read it) and the virtual boards' files."),
    # --- [log] ------------------------------------------------------------------------------
    Key("log", "level", "choice", "info", choices=LOG_LEVELS, flag="--log-level",
        doc="Log verbosity (logs go to stderr, which systemd sends to the journal)."),
)

TABLES: dict[str, str] = {
    "client": "One board in the federation (used by `edgefl client`, unit edgefl-client).",
    "server": "The federation's coordinator (used by `edgefl server`, unit edgefl-server).",
    "server.strategy": "The server's aggregation strategy and its hyperparameters (Flower's strategies).",
    "server.dp": "Differential privacy of the boards' updates (Flower's fixed-clipping DP).",
    "server.secagg": "Secure aggregation (Flower's SecAgg+), on with [server] secure_aggregation = true.",
    "simulate": "A virtual fleet on Flower's simulation engine (used by `edgefl simulate`).",
    "log": "Logging, for both roles.",
}

KEYS_BY_TABLE: dict[str, dict[str, Key]] = {t: {k.name: k for k in KEYS if k.table == t} for t in TABLES}


def _fleet_problem(spec: str) -> str | None:
    from edgefld.simulation.fleet import fleet_problem  # the board descriptions: read on first use

    return fleet_problem(spec)


def key(table: str, name: str) -> Key:
    return KEYS_BY_TABLE[table][name]


def default(table: str, name: str, kind: type[T]) -> T:
    """A key's default as the type its user works with: code that needs one (a node config without
    the key, say) reads it here instead of writing the number again."""
    value = key(table, name).default
    if not isinstance(value, kind):
        raise TypeError(f"{key(table, name).dotted} has no default of type {kind.__name__}: {value!r}")
    return value


def check_tables(values: dict[str, dict[str, Any]], present: set[tuple[str, str]]) -> tuple[str, str] | None:
    """Checks across keys, after each key is valid alone: (the dotted key at fault, the problem), or None.

    A hyperparameter set for a strategy that does not read it would silently do nothing (set to its
    default it does no harm: the shipped file uncommented names them all)."""
    strategy = values["server.strategy"]["name"]
    used = STRATEGY_KEYS[strategy]
    for name, key_ in KEYS_BY_TABLE["server.strategy"].items():
        set_here = ("server.strategy", name) in present and values["server.strategy"][name] != key_.default
        if name != "name" and set_here and name not in used:
            readers = _in_words(['"' + s + '"' for s, keys in STRATEGY_KEYS.items() if name in keys])
            return (key("server.strategy", name).dotted,
                    f'is read only by {readers}, not by name = "{strategy}"; remove it or choose one of those')
    return _secure_aggregation_problem(values, present)


def _secure_aggregation_problem(values: dict[str, dict[str, Any]],
                                present: set[tuple[str, str]]) -> tuple[str, str] | None:
    """What secure aggregation cannot go with: the server sees only the sum of the round's updates."""
    if not values["server"]["secure_aggregation"]:
        for name, key_ in KEYS_BY_TABLE["server.secagg"].items():
            if ("server.secagg", name) in present and values["server.secagg"][name] != key_.default:
                return key_.dotted, "is read only with [server] secure_aggregation = true; remove it or set that"
        return None
    strategy = values["server.strategy"]["name"]
    if strategy not in SUM_STRATEGIES:
        allowed = _in_words(['"' + s + '"' for s in SUM_STRATEGIES])
        return (key("server.strategy", "name").dotted,
                f'"{strategy}" needs each board\'s update, which secure aggregation hides from the server; with '
                f"[server] secure_aggregation = true use {allowed}")
    if values["server.dp"]["mode"] == "central":
        return (key("server.dp", "mode").dotted,
                '"central" clips each board\'s update on the server, which secure aggregation hides from it; with '
                '[server] secure_aggregation = true use "local" (the boards clip, the server noises the sum) or "off"')
    if values["server"]["min_clients"] < 2:
        return (key("server", "min_clients").dotted,
                "secure aggregation needs at least 2 boards in a round (3 or more to survive one dropping out)")
    return None


def toml_literal(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)
