"""edgefld.records: every record survives JSON, and what the previous (unversioned) format wrote still reads."""

from __future__ import annotations

import json

import pytest

from edgefld.records import (
    BoardIdentity,
    BoardStatus,
    ClientIdentity,
    Evaluation,
    Failure,
    RecordError,
    Refused,
    RoundRecord,
    RoundSplit,
    RoundTraining,
    Trained,
    TrainMetrics,
    board_name,
)


def _through_json(data: dict[str, object]) -> object:
    return json.loads(json.dumps(data, sort_keys=True))


# A metrics.jsonl line exactly as the ServerApp wrote it before records were versioned (format 0):
# a board's error reply (with "error"), a board that never answered (without), boards by node id.
FORMAT_0_FAILURES: list[dict[str, object]] = [
    {"node": 11, "cid": 0, "board": "Raspberry Pi 4 Model B Rev 1.4", "phase": "train", "code": 4006,
     "reason": "client 0 refuses this round: not enough memory", "error": "resources"},
    {"node": 13, "cid": None, "board": None, "phase": "train", "code": None,
     "reason": "did not answer within the round timeout"},
]
FORMAT_0_ROUND: dict[str, object] = {
    "round": 2, "task": "digits", "time": 1764800000.25, "start_model_sha256": "a" * 64, "model_sha256": "b" * 64,
    "clients_ok": 1, "clients_failed": 2, "failures": FORMAT_0_FAILURES,
    "train_loss": 0.5, "client_val_loss": 0.75, "client_val_accuracy": 0.625,
    "client_train_seconds_max": 1.5, "client_startup_seconds_max": 0.012, "client_handler_seconds_max": 2.0,
    "client_prepare_seconds_max": 0.25, "bytes_sent": 1000, "bytes_received": 900, "backends": {"torch": 1},
    "wall_seconds": 3.25, "boards": {"11": {"cid": 0, "board": "Raspberry Pi 4 Model B Rev 1.4"},
                                     "12": {"cid": 1, "board": None}},
    "eval_loss": 0.4, "eval_accuracy": 0.875, "eval_samples": 300,
}


def test_a_round_record_goes_through_json_unchanged():
    record = RoundRecord.from_json(FORMAT_0_ROUND)
    assert RoundRecord.from_json(_through_json(record.to_json())) == record


def test_a_format_0_round_reads_with_every_figure_and_writes_back_the_same_keys():
    record = RoundRecord.from_json(_through_json(FORMAT_0_ROUND))
    assert (record.round, record.task, record.model_sha256) == (2, "digits", "b" * 64)
    training = record.training
    assert training is not None and (training.clients_ok, training.clients_failed) == (1, 2)
    assert training.boards == {11: BoardIdentity(0, "Raspberry Pi 4 Model B Rev 1.4"), 12: BoardIdentity(1, None)}
    assert training.failures[0] == Failure(node=11, cid=0, board="Raspberry Pi 4 Model B Rev 1.4", phase="train",
                                           code=4006, error="resources",
                                           reason="client 0 refuses this round: not enough memory")
    assert training.failures[1].error is None  # format 0 named the kind of error replies only
    assert record.evaluation == Evaluation(eval_loss=0.4, eval_accuracy=0.875, eval_samples=300)
    # What the system test, bench/ and the demo read keeps its key; every failure has every key now.
    expected = dict(FORMAT_0_ROUND, format=RoundRecord.FORMAT)
    expected["failures"] = [dict(failure, error=failure.get("error")) for failure in FORMAT_0_FAILURES]
    # A key added since (a new key needs no new format): the boards that trained, with their round's
    # time split; a format 0 line names none.
    expected["trained"] = {}
    assert record.to_json() == expected


def test_a_round_without_the_boards_figures_writes_no_keys_for_them():
    # The ServerApp records a round the strategy saw nothing of (no stats) with its models only.
    record = RoundRecord(round=1, task="digits", time=1.0, start_model_sha256="a", model_sha256="b")
    assert record.to_json() == {"format": 1, "round": 1, "task": "digits", "time": 1.0, "start_model_sha256": "a",
                                "model_sha256": "b"}
    assert RoundRecord.from_json(record.to_json()) == record
    assert RoundRecord.from_json({"round": 3}) == RoundRecord(round=3)  # a line written by hand or a test


@pytest.mark.parametrize("line, message", [
    ({"task": "digits"}, '"round" must be an integer, got nothing'),
    ({"round": "3"}, '"round" must be an integer, got str'),
    ({"round": True}, '"round" must be an integer, got bool'),
    ({"round": 1, "format": 2}, "a round record of format 2: this edgefl reads formats up to 1"),
    ([1, 2], "a round record must be a JSON object, got list"),
])
def test_what_is_not_a_round_record_is_refused_with_its_reason(line, message):
    with pytest.raises(RecordError) as info:
        RoundRecord.from_json(line)
    assert str(info.value).startswith(message)


def test_one_odd_value_leaves_the_rest_of_a_round_readable():
    line = dict(FORMAT_0_ROUND, train_loss="nan?", eval_accuracy=None, boards={"x": {}, "12": {"cid": "1"},
                                                                               "11": {"cid": 0}})
    record = RoundRecord.from_json(line)
    assert record.training is not None and record.training.train_loss is None
    assert record.training.boards == {11: BoardIdentity(0, None)}
    assert record.evaluation is None and record.training.clients_ok == 1


def test_the_boards_figures_round_trip_with_integer_node_ids():
    training = RoundTraining(
        clients_ok=2, clients_failed=1,
        failures=(Failure(node=None, cid=None, board=None, phase="train", code=None, error="timeout",
                          reason="1 client(s) did not answer within the round timeout"),),
        train_loss=None, client_val_loss=None, client_val_accuracy=None, client_train_seconds_max=0.0,
        client_startup_seconds_max=0.0, client_handler_seconds_max=0.0, client_prepare_seconds_max=0.0,
        bytes_sent=0, bytes_received=0, backends={}, wall_seconds=0.5, boards={-5: BoardIdentity(3, "")})
    record = RoundRecord(round=1, training=training)
    assert record.to_json()["boards"] == {"-5": {"cid": 3, "board": ""}}
    assert RoundRecord.from_json(_through_json(record.to_json())) == record


def test_boards_are_named_one_way():
    assert board_name(12, 1, "NVIDIA Jetson Orin Nano") == "node 12 (cid 1, board NVIDIA Jetson Orin Nano)"
    assert board_name(13, None, None) == "node 13 (cid ?, board unknown)"
    assert board_name(None, None, None) == "unnamed boards"
    assert Failure.from_json({"node": 4, "cid": 0, "board": ""}).board_name() == "node 4 (cid 0, board unknown)"


# --- last-round.json ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [
    BoardStatus(phase="train", round=4, outcome=Trained(loss=0.25, samples=30, seconds=1.5, val_accuracy=0.5),
                time=1764800000.5),
    BoardStatus(phase="train", round=0, outcome=Refused(code=4006, reason="client 3 refuses this round: hot"),
                time=1.0),
])
def test_a_board_status_goes_through_json_unchanged(status):
    assert BoardStatus.from_json(_through_json(status.to_json())) == status


def test_the_status_files_of_the_previous_format_still_read():
    # Exactly what the ClientApp wrote before the status was versioned.
    trained = {"phase": "train", "round": 4, "loss": 0.25, "samples": 30, "seconds": 1.5, "val_accuracy": 0.5,
               "time": 1764800000.5}
    refused = {"phase": "train", "round": 4, "error": "client 3 refuses this round: hot", "code": 4006,
               "time": 1764800000.5}
    assert BoardStatus.from_json(trained).outcome == Trained(loss=0.25, samples=30, seconds=1.5, val_accuracy=0.5)
    assert BoardStatus.from_json(refused) == BoardStatus(phase="train", round=4, time=1764800000.5,
                                                         outcome=Refused(4006, "client 3 refuses this round: hot"))
    assert BoardStatus.from_json(trained).to_json() == dict(trained, format=BoardStatus.FORMAT)
    assert BoardStatus.from_json(refused).to_json() == dict(refused, format=BoardStatus.FORMAT)


@pytest.mark.parametrize("data, message", [
    ({"phase": "train", "round": 1, "error": "x"}, '"code" must be an integer'),
    ({"phase": "train", "round": 1, "loss": 0.1}, '"samples" must be an integer'),
    ({"phase": "train", "error": "x", "code": 1}, '"round" must be an integer'),
    ({"format": 7, "phase": "train", "round": 1, "error": "x", "code": 1}, "a board status of format 7"),
    ("train", "a board status must be a JSON object"),
])
def test_a_damaged_status_file_is_refused_with_its_reason(data, message):
    with pytest.raises(RecordError) as info:
        BoardStatus.from_json(data)
    assert str(info.value).startswith(message)


# --- a train reply -----------------------------------------------------------------------------


def test_train_metrics_go_through_a_metric_record_unchanged():
    metrics = TrainMetrics(train_loss=0.5, train_seconds=1.25, val_loss=0.75, val_accuracy=0.625,
                           startup_seconds=0.01, handler_seconds=2.0, prepare_seconds=0.5, num_examples=30,
                           load_seconds=0.625, val_seconds=0.125)
    values = metrics.to_metrics()
    # FedAvg weights the replies by this key: it is Flower's, not ours to rename.
    assert values["num-examples"] == 30 and isinstance(values["num-examples"], int)
    assert set(values) == {"train_loss", "train_seconds", "val_loss", "val_accuracy", "startup_seconds",
                           "handler_seconds", "prepare_seconds", "load_seconds", "val_seconds", "num-examples"}
    assert TrainMetrics.from_metrics(values) == metrics


def test_train_metrics_of_a_board_without_the_load_and_validation_figures_still_read():
    values = dict(TrainMetrics(0.5, 1.0, 0.5, 0.5, 0.25, 2.0, 0.5, 3).to_metrics())
    del values["load_seconds"], values["val_seconds"]
    metrics = TrainMetrics.from_metrics(values)
    assert (metrics.load_seconds, metrics.val_seconds) == (0.0, 0.0)
    # The split falls back to preparing as the loading, the rest of the handler as training.
    assert metrics.split(3.0) == RoundSplit(startup=0.25, loading=0.5, training=1.5, transfer=0.75)


def test_a_round_split_adds_up_to_the_round_trip_and_never_shows_negative_transfer():
    metrics = TrainMetrics(0.5, train_seconds=1.0, val_loss=0.5, val_accuracy=0.5, startup_seconds=0.25,
                           handler_seconds=2.0, prepare_seconds=0.5, num_examples=3, load_seconds=0.75,
                           val_seconds=0.25)
    split = metrics.split(round_trip=3.5)
    assert split == RoundSplit(startup=0.25, loading=0.75, training=1.25, transfer=1.25)
    assert metrics.split(round_trip=1.0).transfer == 0.0  # the board's clock ahead of the server's
    assert metrics.split(round_trip=None).transfer is None
    assert RoundSplit.from_json(_through_json(split.to_json())) == split


def test_train_metrics_missing_a_figure_are_refused_by_name():
    values = dict(TrainMetrics(0.5, 1.0, 0.5, 0.5, 0.0, 1.0, 0.1, 3).to_metrics())
    del values["handler_seconds"]
    with pytest.raises(RecordError, match=r'^metrics: "handler_seconds" must be a number, got nothing$'):
        TrainMetrics.from_metrics(values)


def test_a_client_identity_goes_through_a_config_record_unchanged():
    client = ClientIdentity(edgefl_version="0.1.0", cid=3, board="Raspberry Pi 5", backend="litert", device="cpu",
                            family="raspberry-pi", profile="pi5")
    config = client.to_config()
    assert config == {"edgefl-version": "0.1.0", "cid": 3, "board": "Raspberry Pi 5", "backend": "litert",
                      "device": "cpu", "family": "raspberry-pi", "profile": "pi5"}
    assert ClientIdentity.from_config(config) == client
    assert client.board_identity() == BoardIdentity(3, "Raspberry Pi 5", "raspberry-pi", "litert", "pi5")
    # A board that does not say its family and profile (an older patch release) is still read.
    del config["family"], config["profile"]
    assert ClientIdentity.from_config(config).board_identity() == BoardIdentity(3, "Raspberry Pi 5", backend="litert")


def test_the_version_of_any_reply_is_readable():
    assert ClientIdentity.version_in({"edgefl-version": "9.9.0"}) == "9.9.0"
    assert ClientIdentity.version_in({}) == ClientIdentity.version_in(None) == "unknown"
    with pytest.raises(RecordError, match='^client: "cid" must be an integer'):
        ClientIdentity.from_config({"edgefl-version": "9.9.0"})
    with pytest.raises(RecordError, match='^client: the reply has no "client" record$'):
        ClientIdentity.from_config(None)
