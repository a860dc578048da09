"""What edgefl's processes tell each other and leave on disk: one typed record, one JSON shape each.

Writer and reader of each structure share its class here, so they cannot drift apart:

- ``RoundRecord``: one line of the server's ``metrics.jsonl`` per round (ServerApp -> server
  daemon, ``edgefl demo``, bench/, an operator's tools), also kept in the round's checkpoint so
  that a line lost in a crash comes back. Its failures are ``Failure`` records, its boards
  ``BoardIdentity`` records.
- ``BoardStatus``: a board's ``last-round.json`` (ClientApp -> client daemon: STATUS, journal).
- ``TrainMetrics`` and ``ClientIdentity``: what a board's train reply carries (ClientApp ->
  strategy), as Flower's MetricRecord and ConfigRecord of the ``metrics`` and ``client`` keys.
- ``FleetRecord``: the server's ``fleet.json``, one ``BoardRecord`` per board that ever took part,
  folded from the round records (server daemon -> ``edgefl status``, the Prometheus textfile).
- ``ServerState`` and ``ClientState``: what each daemon is doing now, its ``server-state.json`` and
  ``client-state.json`` (daemon -> ``edgefl status``).

This module is framework-free (the standard library only): the Flower apps and the daemons
both import it. The apps wrap the plain dicts in Flower's records themselves. (The model's
weights travel in Flower's ArrayRecord, packed: edgefld.apps.weights.)

Stored records (``RoundRecord``, ``BoardStatus``) carry a ``"format"`` number. It goes up when a
key changes meaning or goes away (a new key does not need one); records written before it
existed have none and read as format 0, whose keys are the same. A reader refuses a format newer
than it knows rather than misread it. Replies are not versioned: a server and a board of
different release series do not talk (edgefld.apps.settings.compatible_versions), and a reply
that does not parse is refused, named, as any bad reply is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, TypeGuard, TypeVar

# What a parsed JSON object or a Flower record looks like to a reader: keys to anything.
JsonObject = Mapping[str, object]
T = TypeVar("T")


class RecordError(ValueError):
    """A stored or received record that this code cannot read: what is wrong, in one line."""


# --- reading values of an untrusted mapping -----------------------------------------------------
# Stored files may be old, hand-edited or damaged, and replies come over the network: every value is
# checked for its type. Required values raise RecordError; optional ones read as None when absent or
# of another type, so that one odd value does not hide the rest of a record.


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON's true is not 1


def _is_number(value: object) -> TypeGuard[int | float]:
    return _is_int(value) or isinstance(value, float)


def _required_int(data: JsonObject, key: str) -> int:
    value = data.get(key)
    if not _is_int(value):
        raise RecordError(f'"{key}" must be an integer, got {_shown(value)}')
    return value


def _required_float(data: JsonObject, key: str) -> float:
    value = data.get(key)
    if not _is_number(value):
        raise RecordError(f'"{key}" must be a number, got {_shown(value)}')
    return float(value)


def _required_str(data: JsonObject, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise RecordError(f'"{key}" must be a string, got {_shown(value)}')
    return value


def _optional_int(data: JsonObject, key: str) -> int | None:
    value = data.get(key)
    return value if _is_int(value) else None


def _optional_float(data: JsonObject, key: str) -> float | None:
    value = data.get(key)
    return float(value) if _is_number(value) else None


def _optional_str(data: JsonObject, key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _shown(value: object) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"


def _object(value: object, what: str) -> JsonObject:
    if not isinstance(value, Mapping):
        raise RecordError(f"{what} must be a JSON object, got {_shown(value)}")
    return value


def _check_format(data: JsonObject, known: int, what: str) -> None:
    """Refuse a format newer than ``known`` (no "format": 0, written before records were versioned)."""
    value = data.get("format", 0)
    if not _is_int(value):
        raise RecordError(f'{what}: "format" must be an integer, got {_shown(value)}')
    if value > known:
        raise RecordError(f"{what} of format {value}: this edgefl reads formats up to {known}")


def board_name(node: int | None, cid: int | None, board: str | None) -> str:
    """How logs name a board: by Flower's node id, the board's cid and its model as detected."""
    if node is None:
        return "unnamed boards"  # instructions the grid never sent: no node to name
    return f"node {node} (cid {'?' if cid is None else cid}, board {board or 'unknown'})"


# --- the round record (metrics.jsonl) ----------------------------------------------------------


@dataclass(frozen=True)
class BoardIdentity:
    """A board as its replies named it: its data partition and its model (None: it did not say).

    ``family`` (edgefld.hardware's: "raspberry-pi", "jetson", "generic"), ``backend`` and ``profile``
    (edgefld.profile's rule) came later: records written before them read None."""

    cid: int
    board: str | None
    family: str | None = None
    backend: str | None = None
    profile: str | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"cid": self.cid, "board": self.board}
        data.update((key, value) for key, value in (("family", self.family), ("backend", self.backend),
                                                     ("profile", self.profile)) if value is not None)
        return data

    @classmethod
    def from_json(cls, value: object) -> BoardIdentity:
        data = _object(value, "a board")
        return cls(cid=_required_int(data, "cid"), board=_optional_str(data, "board"),
                   family=_optional_str(data, "family"), backend=_optional_str(data, "backend"),
                   profile=_optional_str(data, "profile"))


@dataclass(frozen=True)
class RoundSplit:
    """Where one board's round went, in seconds: what `edgefl status` and the report stack.

    startup: the ClientApp process's start (interpreter, imports; milliseconds when forked warm);
    loading: the backend, the data partition and the global model made ready; training: validating
    the global model and training it; transfer: the rest of the time from the server's instruction to
    the board's reply (the instruction waiting to be pulled and its download; the board's clock
    against the server's enters it, so it is shown as measured, never below 0)."""

    startup: float
    loading: float
    training: float
    transfer: float | None  # None: not measurable (a reply without a creation time)

    def to_json(self) -> dict[str, object]:
        return {"startup": self.startup, "loading": self.loading, "training": self.training,
                "transfer": self.transfer}

    @classmethod
    def from_json(cls, value: object) -> RoundSplit:
        data = _object(value, "a round split")
        return cls(startup=_required_float(data, "startup"), loading=_required_float(data, "loading"),
                   training=_required_float(data, "training"), transfer=_optional_float(data, "transfer"))


@dataclass(frozen=True)
class Failure:
    """One board's failure in a round; every kind of failure has this one shape."""

    node: int | None  # Flower's node id; None: instructions the grid never sent (no board to name)
    cid: int | None  # None: the board never said (it vanished before its first reply)
    board: str | None
    phase: str  # "train": the boards evaluate inside the train message; "aggregate": the round's, no board's
    code: int | None  # edgefl's code (4001-4099), Flower's error code, or None: no answer
    error: str | None  # the kind: an edgefl error name, "flower" or "timeout" (None: format 0, not an error reply)
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"node": self.node, "cid": self.cid, "board": self.board, "phase": self.phase, "code": self.code,
                "error": self.error, "reason": self.reason}

    @classmethod
    def from_json(cls, value: object) -> Failure:
        data = _object(value, "a failure")
        return cls(node=_optional_int(data, "node"), cid=_optional_int(data, "cid"),
                   board=_optional_str(data, "board"), phase=_optional_str(data, "phase") or "train",
                   code=_optional_int(data, "code"), error=_optional_str(data, "error"),
                   reason=_optional_str(data, "reason") or "")

    def board_name(self) -> str:
        return board_name(self.node, self.cid, self.board)


@dataclass(frozen=True)
class RoundTraining:
    """What the boards did in a round, as the strategy saw it. The field names are the JSON keys."""

    clients_ok: int
    clients_failed: int
    failures: tuple[Failure, ...]
    train_loss: float | None  # FedAvg's weighted mean of the boards' reports; None: no board trained
    client_val_loss: float | None  # the boards' validation of the model the round started from
    client_val_accuracy: float | None
    client_train_seconds_max: float
    client_startup_seconds_max: float
    client_handler_seconds_max: float
    client_prepare_seconds_max: float
    bytes_sent: int
    bytes_received: int
    backends: dict[str, int]  # backend -> boards whose reply was aggregated
    wall_seconds: float | None  # from sending the instructions to this record; None: not recorded
    boards: dict[int, BoardIdentity]  # every board seen so far, by node id: names later failures
    # The boards whose reply was aggregated, by node id, with where their round's time went
    # (records before it: empty; the boards that trained are then unknown).
    trained: dict[int, RoundSplit] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "clients_ok": self.clients_ok, "clients_failed": self.clients_failed,
            "failures": [failure.to_json() for failure in self.failures], "train_loss": self.train_loss,
            "client_val_loss": self.client_val_loss, "client_val_accuracy": self.client_val_accuracy,
            "client_train_seconds_max": self.client_train_seconds_max,
            "client_startup_seconds_max": self.client_startup_seconds_max,
            "client_handler_seconds_max": self.client_handler_seconds_max,
            "client_prepare_seconds_max": self.client_prepare_seconds_max,
            "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received, "backends": dict(self.backends),
            "wall_seconds": self.wall_seconds,
            "boards": {str(node): board.to_json() for node, board in sorted(self.boards.items())},
            "trained": {str(node): split.to_json() for node, split in sorted(self.trained.items())},
        }

    @classmethod
    def from_json(cls, data: JsonObject) -> RoundTraining:
        failures = data.get("failures")
        backends = data.get("backends")
        return cls(
            clients_ok=_required_int(data, "clients_ok"),
            clients_failed=_optional_int(data, "clients_failed") or 0,
            failures=(tuple(Failure.from_json(f) for f in failures if isinstance(f, Mapping))
                      if isinstance(failures, list) else ()),
            train_loss=_optional_float(data, "train_loss"),
            client_val_loss=_optional_float(data, "client_val_loss"),
            client_val_accuracy=_optional_float(data, "client_val_accuracy"),
            client_train_seconds_max=_optional_float(data, "client_train_seconds_max") or 0.0,
            client_startup_seconds_max=_optional_float(data, "client_startup_seconds_max") or 0.0,
            client_handler_seconds_max=_optional_float(data, "client_handler_seconds_max") or 0.0,
            client_prepare_seconds_max=_optional_float(data, "client_prepare_seconds_max") or 0.0,
            bytes_sent=_optional_int(data, "bytes_sent") or 0,
            bytes_received=_optional_int(data, "bytes_received") or 0,
            backends=({str(k): v for k, v in backends.items() if _is_int(v)}
                      if isinstance(backends, Mapping) else {}),
            wall_seconds=_optional_float(data, "wall_seconds"),
            boards=_by_node(data.get("boards"), BoardIdentity.from_json),
            trained=_by_node(data.get("trained"), RoundSplit.from_json),
        )


def _by_node(value: object, parse: Callable[[object], T]) -> dict[int, T]:
    """A record's entries by node id; entries that do not parse are left out, not fatal."""
    if not isinstance(value, Mapping):
        return {}
    entries: dict[int, T] = {}
    for node, entry in value.items():
        if isinstance(node, str) and node.lstrip("-").isdigit():
            try:
                entries[int(node)] = parse(entry)
            except RecordError:
                continue
    return entries


@dataclass(frozen=True)
class Evaluation:
    """The server's centralised evaluation of the round's global model. The field names are the JSON keys."""

    eval_loss: float
    eval_accuracy: float
    eval_samples: int

    def to_json(self) -> dict[str, object]:
        return {"eval_loss": self.eval_loss, "eval_accuracy": self.eval_accuracy, "eval_samples": self.eval_samples}

    @classmethod
    def from_json(cls, data: JsonObject) -> Evaluation:
        return cls(eval_loss=_required_float(data, "eval_loss"), eval_accuracy=_required_float(data, "eval_accuracy"),
                   eval_samples=_required_int(data, "eval_samples"))


@dataclass(frozen=True)
class RoundRecord:
    """One line of metrics.jsonl: a round, the global models it started from and produced, and its figures.

    JSON: ``{"format": 1, "round", "task", "time", "start_model_sha256", "model_sha256"}``, then
    RoundTraining's keys when the strategy saw the round, Evaluation's when the server evaluated it,
    all in one flat object (the shape of format 0, which the system test and bench/ read).
    """

    FORMAT: ClassVar[int] = 1

    round: int
    task: str | None = None  # None (like every field below): absent, as in lines written by hand or by tests
    time: float | None = None  # when the round was recorded (Unix time)
    start_model_sha256: str | None = None  # edgefld.persist.weights_digest: a chain across restarts
    model_sha256: str | None = None
    training: RoundTraining | None = None
    evaluation: Evaluation | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"format": self.FORMAT, "round": self.round}
        for key, value in (("task", self.task), ("time", self.time), ("start_model_sha256", self.start_model_sha256),
                           ("model_sha256", self.model_sha256)):
            if value is not None:
                data[key] = value
        if self.training is not None:
            data.update(self.training.to_json())
        if self.evaluation is not None:
            data.update(self.evaluation.to_json())
        return data

    @classmethod
    def from_json(cls, value: object) -> RoundRecord:
        data = _object(value, "a round record")
        _check_format(data, cls.FORMAT, "a round record")
        try:
            evaluation: Evaluation | None = Evaluation.from_json(data) if "eval_loss" in data else None
        except RecordError:
            evaluation = None  # a damaged evaluation leaves the round's other figures readable
        return cls(
            round=_required_int(data, "round"),
            task=_optional_str(data, "task"),
            time=_optional_float(data, "time"),
            start_model_sha256=_optional_str(data, "start_model_sha256"),
            model_sha256=_optional_str(data, "model_sha256"),
            training=RoundTraining.from_json(data) if _is_int(data.get("clients_ok")) else None,
            evaluation=evaluation,
        )


# --- a board's status file (last-round.json) ----------------------------------------------------


@dataclass(frozen=True)
class Trained:
    """A round this board trained: its loss, and its validation of the global model it started from."""

    loss: float
    samples: int
    seconds: float
    val_accuracy: float


@dataclass(frozen=True)
class Refused:
    """A round this board refused (or failed), with the edgefl code its error reply carried."""

    code: int
    reason: str


@dataclass(frozen=True)
class BoardStatus:
    """A board's last round, left by the ClientApp for the client daemon to report.

    JSON: ``{"format": 1, "phase", "round", "time"}`` and either ``"loss", "samples", "seconds",
    "val_accuracy"`` (trained) or ``"error", "code"`` (refused).
    """

    FORMAT: ClassVar[int] = 1

    phase: str
    round: int  # 0: the instruction did not say
    outcome: Trained | Refused
    time: float  # when it was written (Unix time)

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"format": self.FORMAT, "phase": self.phase, "round": self.round,
                                   "time": self.time}
        if isinstance(self.outcome, Refused):
            data.update({"error": self.outcome.reason, "code": self.outcome.code})
        else:
            data.update({"loss": self.outcome.loss, "samples": self.outcome.samples,
                         "seconds": self.outcome.seconds, "val_accuracy": self.outcome.val_accuracy})
        return data

    @classmethod
    def from_json(cls, value: object) -> BoardStatus:
        data = _object(value, "a board status")
        _check_format(data, cls.FORMAT, "a board status")
        outcome: Trained | Refused
        if "error" in data:
            outcome = Refused(code=_required_int(data, "code"), reason=_required_str(data, "error"))
        else:
            outcome = Trained(loss=_required_float(data, "loss"), samples=_required_int(data, "samples"),
                              seconds=_required_float(data, "seconds"),
                              val_accuracy=_required_float(data, "val_accuracy"))
        return cls(phase=_required_str(data, "phase"), round=_required_int(data, "round"), outcome=outcome,
                   time=_optional_float(data, "time") or 0.0)


# --- a board's train reply ----------------------------------------------------------------------


@dataclass(frozen=True)
class TrainMetrics:
    """The ``metrics`` MetricRecord of a train reply. Flower's FedAvg weights the replies by
    ``num-examples`` and averages the other keys: the round record's train loss and validation."""

    train_loss: float
    train_seconds: float  # the backend's training, without start-up
    val_loss: float  # the global model this round started from, on the board's validation split
    val_accuracy: float
    # Where a round's time goes on the board: process start-up (interpreter, imports), then the
    # handler (data, backend, validation, training); preparing (importing the backend) dominates it.
    startup_seconds: float
    handler_seconds: float
    prepare_seconds: float
    num_examples: int
    # Within the handler: making the backend, the partition and the global model ready (preparing
    # included), then validating the global model. A board of the same release series that does not
    # send them (an older patch release) reads 0.0 for both.
    load_seconds: float = 0.0
    val_seconds: float = 0.0

    KEYS: ClassVar[tuple[str, ...]] = ("train_loss", "train_seconds", "val_loss", "val_accuracy", "startup_seconds",
                                       "handler_seconds", "prepare_seconds")
    OPTIONAL_KEYS: ClassVar[tuple[str, ...]] = ("load_seconds", "val_seconds")
    NUM_EXAMPLES: ClassVar[str] = "num-examples"  # FedAvg's default weighted_by_key

    def to_metrics(self) -> dict[str, float | int]:
        values: dict[str, float | int] = {key: float(getattr(self, key)) for key in self.KEYS + self.OPTIONAL_KEYS}
        values[self.NUM_EXAMPLES] = int(self.num_examples)
        return values

    @classmethod
    def from_metrics(cls, metrics: JsonObject) -> TrainMetrics:
        try:
            values = {key: _required_float(metrics, key) for key in cls.KEYS}
            optional = {key: _optional_float(metrics, key) or 0.0 for key in cls.OPTIONAL_KEYS}
            return cls(**values, **optional, num_examples=_required_int(metrics, cls.NUM_EXAMPLES))
        except RecordError as exc:
            raise RecordError(f"metrics: {exc}") from None

    def split(self, round_trip: float | None) -> RoundSplit:
        """Where this board's round went; ``round_trip``: from the instruction's creation to the reply's."""
        loading = self.load_seconds or self.prepare_seconds
        training = self.val_seconds + self.train_seconds if self.load_seconds else self.handler_seconds - loading
        transfer = None if round_trip is None else round(max(0.0, round_trip - self.startup_seconds
                                                                  - self.handler_seconds), 3)
        return RoundSplit(startup=round(self.startup_seconds, 3), loading=round(loading, 3),
                          training=round(max(0.0, training), 3), transfer=transfer)


@dataclass(frozen=True)
class ClientIdentity:
    """The ``client`` ConfigRecord of a train reply: which board answered, with what."""

    edgefl_version: str
    cid: int
    board: str | None  # the model as the board detected it ("": unknown; None: the reply did not say)
    backend: str
    device: str | None
    family: str | None = None  # edgefld.hardware's family ("raspberry-pi", "jetson", "generic")
    profile: str | None = None  # the rule of edgefld.profile that chose the backend and limits

    VERSION_KEY: ClassVar[str] = "edgefl-version"

    def to_config(self) -> dict[str, str | int]:
        config: dict[str, str | int] = {self.VERSION_KEY: self.edgefl_version, "cid": self.cid,
                                        "backend": self.backend}
        for key, value in (("board", self.board), ("device", self.device), ("family", self.family),
                           ("profile", self.profile)):
            if value is not None:
                config[key] = value
        return config

    @classmethod
    def version_in(cls, config: JsonObject | None) -> str:
        """The edgefl version a reply names, readable whatever else its record holds ("unknown": none)."""
        value = config.get(cls.VERSION_KEY) if config is not None else None
        return str(value) if value is not None else "unknown"

    @classmethod
    def from_config(cls, config: JsonObject | None) -> ClientIdentity:
        if config is None:
            raise RecordError('client: the reply has no "client" record')
        try:
            return cls(edgefl_version=_required_str(config, cls.VERSION_KEY), cid=_required_int(config, "cid"),
                       board=_optional_str(config, "board"), backend=_required_str(config, "backend"),
                       device=_optional_str(config, "device"), family=_optional_str(config, "family"),
                       profile=_optional_str(config, "profile"))
        except RecordError as exc:
            raise RecordError(f"client: {exc}") from None

    def board_identity(self) -> BoardIdentity:
        return BoardIdentity(cid=self.cid, board=self.board, family=self.family or None, backend=self.backend,
                             profile=self.profile or None)


# --- the server's board registry (fleet.json) -------------------------------------------------


@dataclass(frozen=True)
class LastFailure:
    """A board's most recent failed round: the round, edgefl's or Flower's code (None: no answer) and why."""

    round: int
    code: int | None
    error: str | None
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"round": self.round, "code": self.code, "error": self.error, "reason": self.reason}

    @classmethod
    def from_json(cls, value: object) -> LastFailure:
        data = _object(value, "a last failure")
        return cls(round=_required_int(data, "round"), code=_optional_int(data, "code"),
                   error=_optional_str(data, "error"), reason=_optional_str(data, "reason") or "")


@dataclass(frozen=True)
class BoardRecord:
    """One board that ever took part in the run, as the server's rounds saw it (the node id is its key)."""

    node: int
    identity: BoardIdentity | None  # None: it never sent a reply that named it (it only ever failed)
    first_round: int
    last_round: int  # the last round it was asked to train
    last_trained: int | None  # the last round whose reply was aggregated
    last_seen: float | None  # Unix time of its last reply, ok or refused (a timeout is not one)
    rounds_ok: int
    rounds_failed: int  # every failed round, the refused ones included
    rounds_refused: int  # of those, refused by the board's resource guards (code 4006)
    last_failure: LastFailure | None
    last_split: RoundSplit | None  # its last trained round's time, by part

    def to_json(self) -> dict[str, object]:
        return {"node": self.node, "identity": None if self.identity is None else self.identity.to_json(),
                "first_round": self.first_round, "last_round": self.last_round, "last_trained": self.last_trained,
                "last_seen": self.last_seen, "rounds_ok": self.rounds_ok, "rounds_failed": self.rounds_failed,
                "rounds_refused": self.rounds_refused,
                "last_failure": None if self.last_failure is None else self.last_failure.to_json(),
                "last_split": None if self.last_split is None else self.last_split.to_json()}

    @classmethod
    def from_json(cls, value: object) -> BoardRecord:
        data = _object(value, "a board record")
        identity, failure, split = data.get("identity"), data.get("last_failure"), data.get("last_split")
        return cls(node=_required_int(data, "node"),
                   identity=None if identity is None else BoardIdentity.from_json(identity),
                   first_round=_required_int(data, "first_round"), last_round=_required_int(data, "last_round"),
                   last_trained=_optional_int(data, "last_trained"), last_seen=_optional_float(data, "last_seen"),
                   rounds_ok=_required_int(data, "rounds_ok"), rounds_failed=_required_int(data, "rounds_failed"),
                   rounds_refused=_optional_int(data, "rounds_refused") or 0,
                   last_failure=None if failure is None else LastFailure.from_json(failure),
                   last_split=None if split is None else RoundSplit.from_json(split))


@dataclass(frozen=True)
class FleetRecord:
    """The server's fleet.json: every board of the run, folded from metrics.jsonl up to ``last_round``.

    JSON: ``{"format": 1, "task", "last_round", "boards": [BoardRecord, ...]}``, the boards by node id."""

    FORMAT: ClassVar[int] = 1

    task: str | None
    last_round: int  # the last round record folded in
    boards: tuple[BoardRecord, ...]

    def to_json(self) -> dict[str, object]:
        return {"format": self.FORMAT, "task": self.task, "last_round": self.last_round,
                "boards": [board.to_json() for board in self.boards]}

    @classmethod
    def from_json(cls, value: object) -> FleetRecord:
        data = _object(value, "a fleet record")
        _check_format(data, cls.FORMAT, "a fleet record")
        boards = data.get("boards")
        if not isinstance(boards, list):
            raise RecordError(f'"boards" must be a list, got {_shown(boards)}')
        return cls(task=_optional_str(data, "task"), last_round=_required_int(data, "last_round"),
                   boards=tuple(BoardRecord.from_json(board) for board in boards))


# --- what each daemon is doing now (server-state.json, client-state.json) -----------------------


@dataclass(frozen=True)
class ServerState:
    """The server daemon's state now, rewritten at each change: read by `edgefl status`.

    ``state``: "starting", "training" (the run is submitted: rounds go on, or wait for boards),
    "complete", "stopped" (SIGTERM), "failed" (``detail`` says why). A ``pid`` that no longer runs
    means the daemon ended without saying so (killed)."""

    FORMAT: ClassVar[int] = 1
    STATES: ClassVar[tuple[str, ...]] = ("starting", "training", "complete", "stopped", "failed")

    state: str
    since: float  # Unix time of the change to this state
    pid: int
    task: str
    rounds: int  # the configured number of rounds
    listen: str
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return {"format": self.FORMAT, "state": self.state, "since": self.since, "pid": self.pid, "task": self.task,
                "rounds": self.rounds, "listen": self.listen, "detail": self.detail}

    @classmethod
    def from_json(cls, value: object) -> ServerState:
        data = _object(value, "a server state")
        _check_format(data, cls.FORMAT, "a server state")
        return cls(state=_required_str(data, "state"), since=_required_float(data, "since"),
                   pid=_required_int(data, "pid"), task=_required_str(data, "task"),
                   rounds=_required_int(data, "rounds"), listen=_required_str(data, "listen"),
                   detail=_optional_str(data, "detail") or "")


@dataclass(frozen=True)
class ClientState:
    """The client daemon's state now, rewritten at each change: read by `edgefl status` on the board.

    ``state``: "starting", "connecting", "connected" (registered: ``node_id`` set), "refused" (the
    server's answer turned it away: ``reason``), "unreachable", "rejoining" (the SuperNode exited;
    ``reason``), "stopped". A ``pid`` that no longer runs means the daemon ended without saying so."""

    FORMAT: ClassVar[int] = 1
    STATES: ClassVar[tuple[str, ...]] = ("starting", "connecting", "connected", "refused", "unreachable",
                                         "rejoining", "stopped")

    state: str
    since: float
    pid: int
    server: str
    cid: int
    node_id: int | None
    reason: str
    board: str  # the model as detected ("": unknown)
    family: str
    profile: str  # edgefld.profile's rule
    backend: str
    device: str
    threads: int
    tasks: tuple[str, ...]
    guards: bool
    memory_margin_mb: int
    heavy_task_min_watts: int

    def to_json(self) -> dict[str, object]:
        return {"format": self.FORMAT, "state": self.state, "since": self.since, "pid": self.pid,
                "server": self.server, "cid": self.cid, "node_id": self.node_id, "reason": self.reason,
                "board": self.board, "family": self.family, "profile": self.profile, "backend": self.backend,
                "device": self.device, "threads": self.threads, "tasks": list(self.tasks), "guards": self.guards,
                "memory_margin_mb": self.memory_margin_mb, "heavy_task_min_watts": self.heavy_task_min_watts}

    @classmethod
    def from_json(cls, value: object) -> ClientState:
        data = _object(value, "a client state")
        _check_format(data, cls.FORMAT, "a client state")
        tasks = data.get("tasks")
        guards = data.get("guards")
        if not isinstance(guards, bool):
            raise RecordError(f'"guards" must be true or false, got {_shown(guards)}')
        return cls(state=_required_str(data, "state"), since=_required_float(data, "since"),
                   pid=_required_int(data, "pid"), server=_required_str(data, "server"),
                   cid=_required_int(data, "cid"), node_id=_optional_int(data, "node_id"),
                   reason=_optional_str(data, "reason") or "", board=_optional_str(data, "board") or "",
                   family=_optional_str(data, "family") or "", profile=_optional_str(data, "profile") or "",
                   backend=_required_str(data, "backend"), device=_optional_str(data, "device") or "",
                   threads=_optional_int(data, "threads") or 0,
                   tasks=tuple(t for t in tasks if isinstance(t, str)) if isinstance(tasks, list) else (),
                   guards=guards, memory_margin_mb=_optional_int(data, "memory_margin_mb") or 0,
                   heavy_task_min_watts=_optional_int(data, "heavy_task_min_watts") or 0)
