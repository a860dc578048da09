"""The virtual fleet: plans, board descriptions, and what a virtual board's guards read."""

from __future__ import annotations

import json
import sys

import pytest

from edgefld import guards
from edgefld.config import load_config
from edgefld.hardware.boards import DESCRIPTIONS_FILE, lookup
from edgefld.simulation.fleet import FleetError, parse_fleet, virtual_node_configs, write_board_root
from tests.conftest import REPO


def test_the_shipped_descriptions_are_what_detection_finds_in_the_board_fixtures():
    sys.path.insert(0, str(REPO / "tests" / "fixtures" / "boards"))
    import make_fixtures

    assert DESCRIPTIONS_FILE.read_text() == make_fixtures.board_descriptions(make_fixtures.HERE)


def test_a_fleet_plan_names_boards_by_alias_or_fixture_name():
    entries = parse_fleet("rpi-zero-2w:20, rpi-4-4gb:20,jetson-orin-nano-dpkg:10")
    assert [(e.name, e.count, e.description.board.ram_mb) for e in entries] == [
        ("rpi-zero-2w", 20, 423), ("rpi-4-4gb", 20, 3791), ("jetson-orin-nano-dpkg", 10, 7619)]


@pytest.mark.parametrize("spec, words", [
    ("rpi-zero-2w", "is not BOARD:COUNT"),
    ("rpi-zero-2w:0", "a count of at least 1"),
    ("banana:3", 'unknown board "banana"; known boards: rpi-zero-2w'),
    ("rpi-4-4gb:99999,rpi-zero-2w:99999", "at most 100000"),
])
def test_a_bad_plan_is_named(spec, words):
    with pytest.raises(FleetError, match=words):
        parse_fleet(spec)


@pytest.mark.parametrize("args", [["--fleet", "banana:3"], ["--fleet", "rpi-4-4gb:two"], ["--fleet", ""]])
def test_a_bad_fleet_flag_is_one_line_and_exit_78(edgefl_cli, tmp_path, args):
    code, out, err = edgefl_cli("simulate", *args, "--state-dir", str(tmp_path / "s"))
    assert code == 78
    assert err.startswith("edgefl: --fleet: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_each_virtual_board_gets_its_boards_profile_as_its_daemon_writes_it(tmp_path):
    config = load_config(None, {})
    configs = virtual_node_configs(parse_fleet("rpi-zero-2w:2,rpi-4-4gb:1,jetson-nano-5w:1"), config, "litert",
                                   str(tmp_path / "data"), tmp_path / "boards")
    assert [c["cid"] for c in configs] == [0, 1, 2, 3]
    assert [(c["profile"], c["batch-size-cap"], c["max-train-samples"], c["threads"]) for c in configs] == [
        ("tiny", 8, 500, 4), ("tiny", 8, 500, 4), ("large", 32, 5000, 4),
        ("large", 32, 2500, 2)]  # the 5 W mode has 2 of 4 cores online: half the samples
    assert configs[0]["tasks"] == "mnist,digits" and "cifar10" in configs[2]["tasks"]
    assert {c["backend"] for c in configs} == {"litert"}
    assert all(c["data-dir"] == str(tmp_path / "data") for c in configs)


def test_a_virtual_boards_guards_read_its_idle_memory_and_healthy_tools(tmp_path):
    policy = guards.GuardPolicy(True, 128, 15)
    for name, task, backend, refused in [
        ("rpi-zero-2w", "digits", "litert", None),  # 344 MB available: a LiteRT round fits
        ("rpi-zero-2w", "digits", "torch", "needs about"),  # torch's ~900 MB does not
        ("jetson-nano-5w", "cifar10", "litert", "power mode of at least 15 W"),
        ("jetson-nano", "cifar10", "litert", None),  # MAXN
    ]:
        description = lookup(name)
        assert description is not None
        root = tmp_path / name
        tools = write_board_root(description, root)
        facts = guards.read_live_facts(str(root), tools)
        assert facts.mem_available_mb == description.mem_available_mb
        if description.board.family == "raspberry-pi":
            assert facts.throttling is not None and not facts.throttling.active
        reason = guards.check_round(task, backend, 8, facts, policy)
        assert (reason is None) if refused is None else (refused in (reason or "")), (name, task, backend, reason)


def test_boards_json_is_valid_json_with_every_board_family():
    data = json.loads(DESCRIPTIONS_FILE.read_text())
    assert {entry["board"]["family"] for entry in data.values()} == {"raspberry-pi", "jetson"}
