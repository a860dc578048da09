"""Virtual time: the cost table (edgefld/simulation/costs.json) and the round estimate's formula."""

from __future__ import annotations

import json

import pytest

from edgefld.apps.settings import RUN_CONFIG_DEFAULTS
from edgefld.backends.catalog import BACKENDS
from edgefld.data.digits import build_digits
from edgefld.data.partition import load_partition
from edgefld.hardware.boards import descriptions
from edgefld.profile import choose_profile
from edgefld.records import RoundRecord
from edgefld.simulation.costs import COSTS_FILE, CostTableError, Figure, NoFigure, load_costs
from edgefld.simulation.virtual_time import VirtualBoard, estimate_round, estimate_run, virtual_boards
from edgefld.tasks import TASKS


def test_every_board_backend_and_allowed_task_has_a_figure_or_says_why_not():
    table = load_costs()
    assert set(table.boards) == set(descriptions()), "one entry per board description, no stray entries"
    # Every backend x task is measured here (litert's cifar10 too: its model ships).
    assert set(table.measured) == {(b, t) for b in BACKENDS for t in TASKS}
    for name, description in descriptions().items():
        for backend in BACKENDS:
            profile = choose_profile(description.board, backend, frozenset({backend}))
            for task in profile.tasks:
                for runtime in ("warm", "flower"):
                    figure = table.figure(name, backend, task, profile.batch_size_cap, runtime)
                    if table.boards[name].index is None:
                        assert isinstance(figure, NoFigure) and "NO FIGURE" in figure.reason, (name, backend, task)
                    else:
                        assert isinstance(figure, Figure), (name, backend, task, figure)
                        assert figure.samples_per_s > 0 and figure.startup_s > 0
                        assert table.boards[name].source in figure.provenance


def test_every_board_figure_says_where_it_comes_from():
    table = load_costs()
    for speed in table.boards.values():
        kind = speed.source.split(":", 1)[0].split(",", 1)[0]
        assert kind in ("PUBLISHED", "DERIVED", "NO FIGURE"), speed
        assert (speed.index is None) == (kind == "NO FIGURE"), speed
        if speed.index is not None:
            assert "https://" in speed.source, speed  # a figure cites its published base
    assert table.host_source.startswith("ASSUMED")  # the host's own index is not measured: it says so


def _table(tmp_path, **changes):
    raw = {
        "host": {"cpu": "test host", "geekbench6_single": 1000, "source": "ASSUMED for the test"},
        "boards": {
            "half": {"cpu": "half as fast", "geekbench6_single": 500, "source": "PUBLISHED: test"},
            "quarter": {"cpu": "a quarter as fast", "geekbench6_single": 250, "source": "PUBLISHED: test"},
            "unknown": {"cpu": "?", "geekbench6_single": None, "source": "NO FIGURE: test"},
        },
        "measured_here": {"host": {"cpu": "test host"}, "figures": [
            {"backend": "litert", "task": "digits", "samples_per_s": {"8": 1000, "16": 2000},
             "startup_cold_s": 2.0, "startup_warm_s": 0.5}]},
    }
    raw.update(changes)
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(raw))
    load_costs.cache_clear()
    try:
        return load_costs(path)
    finally:
        load_costs.cache_clear()


def _record(trained_cids, failed_cids=(), bytes_total=4_000_000):
    nodes = {100 + cid: cid for cid in (*trained_cids, *failed_cids)}
    return RoundRecord.from_json({
        "round": 1, "clients_ok": len(trained_cids), "clients_failed": len(failed_cids),
        "bytes_sent": bytes_total // 2, "bytes_received": bytes_total // 2,
        "boards": {str(node): {"cid": cid, "board": "b"} for node, cid in nodes.items()},
        "trained": {str(100 + cid): {"startup": 0, "loading": 0, "training": 0, "transfer": 0}
                    for cid in trained_cids},
    })


def test_a_round_takes_the_slowest_board_of_start_up_training_and_transfer(tmp_path):
    table = _table(tmp_path)
    boards = [VirtualBoard("half", "litert", 16, samples=100, epochs=2),      # cid 0
              VirtualBoard("quarter", "litert", 8, samples=100, epochs=2),    # cid 1
              VirtualBoard("unknown", "litert", 8, samples=100, epochs=2),    # cid 2
              VirtualBoard("quarter", "litert", 8, samples=10_000, epochs=2)]  # cid 3: failed, so not counted
    record = _record([0, 1, 2], failed_cids=[3])  # 4 MB over 4 boards instructed: 1 MB each, 8 Mbit/s: 1 s
    # half: 0.5 s / 0.5 + 200 / (2000 x 0.5) + 1 = 1 + 0.2 + 1 = 2.2 s
    # quarter: 0.5 s / 0.25 + 200 / (1000 x 0.25) + 1 = 2 + 0.8 + 1 = 3.8 s
    estimate = estimate_round(record, boards, table, "digits", "warm", link_mbps=8)
    assert estimate.seconds == pytest.approx(3.8)
    assert (estimate.slowest, estimate.boards_estimated, estimate.without_figure) == ("quarter", 2, ("unknown",))
    assert (estimate.startup_s, estimate.training_s, estimate.transfer_s) == pytest.approx((2.0, 0.8, 1.0))
    # Flower's own runtime starts an interpreter each round: the cold start-up, 2 s / 0.25 = 8 s.
    assert estimate_round(record, boards, table, "digits", "flower", 8).seconds == pytest.approx(9.8)
    # A faster link shrinks only the transfer.
    assert estimate_round(record, boards, table, "digits", "warm", 80).seconds == pytest.approx(2.9)


def test_a_round_whose_boards_have_no_figure_has_no_estimate_and_says_so(tmp_path):
    table = _table(tmp_path)
    boards = [VirtualBoard("unknown", "litert", 8, 100, 1), VirtualBoard("half", "torch", 8, 100, 1)]
    estimate = estimate_round(_record([0, 1]), boards, table, "digits", "warm", 10)
    assert estimate.seconds is None and estimate.without_figure == ("half", "unknown")
    run = estimate_run([_record([0, 1])], boards, table, "digits", "warm", 10)
    assert run.total_seconds is None
    assert "not measured here" in str(run.figures["half"]["no_figure"])


@pytest.mark.parametrize("changes, words", [
    ({"host": {"cpu": "h", "geekbench6_single": 0, "source": "x"}}, "host index must be a positive number"),
    ({"boards": {"b": {"cpu": "c", "geekbench6_single": 5, "source": ""}}}, "a figure without a source"),
    ({"boards": {"b": {"cpu": "c", "source": "s"}}}, "geekbench6_single"),
])
def test_a_malformed_cost_table_is_one_line_naming_the_problem(tmp_path, changes, words):
    with pytest.raises(CostTableError) as caught:
        _table(tmp_path, **changes)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_virtual_board_trains_its_partitions_training_part_capped_by_its_profile(tmp_path):
    build_digits(tmp_path)
    nodes = [{"backend": "litert", "max-train-samples": 0, "batch-size-cap": 8},
             {"backend": "litert", "max-train-samples": 100, "batch-size-cap": 32}] * 2
    boards = virtual_boards(["a", "b", "c", "d"], nodes, {"task": "digits", "batch-size": 16, "local-epochs": 3},
                            str(tmp_path))
    # What the ClientApp trains on: its partition's training part (edgefld.data.load_partition), capped.
    loaded = [len(load_partition("digits", tmp_path, cid, 4, RUN_CONFIG_DEFAULTS["partition-seed"]).train_y)
              for cid in range(4)]
    assert loaded[0] > 100 and loaded[2] > 100
    assert [(b.samples, b.batch_size, b.epochs) for b in boards] == [
        (loaded[0], 8, 3), (100, 16, 3), (loaded[2], 8, 3), (100, 16, 3)]


def test_the_shipped_table_is_package_data():
    assert COSTS_FILE.name == "costs.json" and COSTS_FILE.parent.name == "simulation"


def test_readmes_table_of_board_figures_is_the_cost_tables():
    from edgefld.simulation.costs import markdown_table
    from tests.conftest import REPO

    assert markdown_table(load_costs()) in (REPO / "README.md").read_text(), \
        "README's table is stale: paste `python bench/bench_costs.py --readme-table` over it"
