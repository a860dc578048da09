"""The ClientApp's refusals: what a board answers instead of training, with which code."""

from __future__ import annotations

import pytest
from flwr.app import Context, RecordDict

from edgefld import __version__
from edgefld.apps import client_app, settings


def context(tmp_path, node=None, run=None) -> Context:
    node_config = {"cid": 0, "data-dir": str(tmp_path / "data"), "backend": "torch", "device": "cpu",
                   "threads": 1, "batch-size-cap": 8, "max-train-samples": 0, "tasks": "mnist,digits",
                   "status-file": ""}
    node_config.update(node or {})
    run_config = dict(settings.RUN_CONFIG_DEFAULTS, **(run or {}))
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=run_config)


def refusal(ctx) -> client_app.RefusedMessage:
    with pytest.raises(client_app.RefusedMessage) as info:
        node, run, task, backend = client_app._prepare(ctx)
        client_app._partition(node, run, task)
    return info.value


def test_a_board_prepares_for_an_allowed_task(tmp_path):
    node, run, task, backend = client_app._prepare(context(tmp_path, run={"task": "digits"}))
    assert (node.cid, run.task, task.name, backend.name) == (0, "digits", "digits", "torch")
    part = client_app._partition(node, run, task)
    assert len(part.train_y) + len(part.val_y) == 30  # 1497 digits training samples / 50 partitions


def test_other_release_series_is_refused(tmp_path):
    exc = refusal(context(tmp_path, run={"server-version": "9.9.0"}))
    assert exc.code == settings.ERROR_INCOMPATIBLE
    assert exc.reason == (f"client 0 runs edgefl {__version__}, the server 9.9.0: install the same release series "
                          "on both")


def test_task_outside_the_profile_is_refused(tmp_path):
    exc = refusal(context(tmp_path, run={"task": "cifar10"}))
    assert exc.code == settings.ERROR_TASK_REFUSED
    assert exc.reason == "client 0 refuses task cifar10: its board profile allows only mnist, digits"


def test_missing_backend_is_refused(tmp_path):
    exc = refusal(context(tmp_path, node={"backend": "jax"}, run={"task": "digits"}))
    assert exc.code == settings.ERROR_BACKEND and 'backend "jax" is not available' in exc.reason


def test_missing_dataset_says_how_to_get_it(tmp_path):
    exc = refusal(context(tmp_path, run={"task": "mnist"}))
    assert exc.code == settings.ERROR_DATA
    assert "edgefl data download mnist" in exc.reason and "edgefl data import" in exc.reason


def test_cid_out_of_range_is_refused(tmp_path):
    exc = refusal(context(tmp_path, node={"cid": 50}, run={"task": "digits"}))
    assert exc.code == settings.ERROR_PARTITION
    assert exc.reason == "client 50: cid 50 is out of range: with num_partitions 50, cid must be 0..49"


@pytest.mark.parametrize("server, client, ok", [("0.1.0", "0.1.7", True), ("0.1.0", "0.2.0", False),
                                                 ("1.0.0", "0.1.0", False), ("0.1", "0.1.0", True)])
def test_compatible_versions(server, client, ok):
    assert settings.compatible_versions(server, client) is ok


def test_the_status_file_goes_through_a_temporary_file_of_its_own(tmp_path):
    import json
    import threading

    from edgefld.records import BoardStatus, Refused, Trained

    status_file = tmp_path / "last-round.json"
    (tmp_path / "last-round.json.tmp").mkdir()  # a fixed temporary name, taken: two writers would clash on it
    client_app._write_status(str(status_file), "train", 4, Refused(4006, "hot"))
    assert BoardStatus.from_json(json.loads(status_file.read_text())).outcome == Refused(4006, "hot")

    # Two ClientApps of one board that overlap (the warm runtime forks them) both write it.
    def write(round_: int) -> None:
        for _ in range(50):
            client_app._write_status(str(status_file), "train", round_, Trained(0.5, 30, 1.0, 0.75))

    writers = [threading.Thread(target=write, args=(round_,)) for round_ in (5, 6)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert BoardStatus.from_json(json.loads(status_file.read_text())).round in (5, 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last-round.json", "last-round.json.tmp"]
