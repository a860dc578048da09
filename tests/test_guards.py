"""Resource guards: a board refuses, with a reason the server records, a round it cannot afford now."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

from edgefld import guards
from edgefld.apps import client_app, settings
from edgefld.hardware.board import PowerMode, Throttling

BOARDS = Path(__file__).resolve().parent / "fixtures" / "boards"
POLICY = guards.GuardPolicy()


def board_copy(tmp_path: Path, name: str, mem_available_kb: int | None = None) -> Path:
    """A fixture board of our own, with MemAvailable set to ``mem_available_kb``."""
    root = tmp_path / name
    shutil.copytree(BOARDS / name, root, symlinks=True)
    if mem_available_kb is not None:
        meminfo = root / "proc" / "meminfo"
        lines = [line for line in meminfo.read_text().splitlines() if not line.startswith("MemAvailable:")]
        meminfo.write_text("\n".join(lines + [f"MemAvailable:   {mem_available_kb} kB"]) + "\n")
    return root


def facts_of(root: Path) -> guards.LiveFacts:
    return guards.read_live_facts(str(root), str(root / "bin"))


# --- reading the live facts of fixture boards --------------------------------------------------


def test_a_pi_reports_memory_and_its_throttling_now():
    facts = facts_of(BOARDS / "rpi4-4gb")  # get_throttled 0x50005: under-voltage and throttled now
    assert facts.throttling is not None and facts.throttling.raw == 0x50005 and facts.throttling.active
    assert facts.power_mode is None and facts.mem_available_mb is not None


def test_a_jetson_reports_its_power_mode():
    facts = facts_of(BOARDS / "jetson-nano-5w")
    assert facts.power_mode == PowerMode(1, "5W") and facts.throttling is None


def test_a_board_without_memavailable_reports_none(tmp_path):
    root = tmp_path / "old-kernel"
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "meminfo").write_text("MemTotal: 948304 kB\nMemFree: 500000 kB\n")
    assert guards.read_live_facts(str(root), "").mem_available_mb is None


# --- the decisions ---------------------------------------------------------------------------


def test_a_pi_throttled_now_refuses_any_task():
    reason = guards.check_round("digits", "torch", 16, facts_of(BOARDS / "rpi4-4gb"), POLICY)
    assert reason == ("the board is throttled now (get_throttled 0x50005: under-voltage, throttled); fix its power "
                      "supply or cooling, or set [client] guards = false")


def test_throttling_only_since_boot_does_not_refuse():
    sticky = guards.LiveFacts(4000, Throttling.from_raw(0x50000), None)
    assert guards.check_round("cifar10", "torch", 16, sticky, POLICY) is None


def test_a_2gb_pi_with_its_memory_available_takes_cifar10(tmp_path):
    assert guards.check_round("cifar10", "torch", 16, facts_of(BOARDS / "rpi4-2gb"), POLICY) is None


def test_a_2gb_pi_short_of_memory_refuses_cifar10_but_takes_mnist(tmp_path):
    root = board_copy(tmp_path, "rpi4-2gb", mem_available_kb=1000 * 1024)
    facts = facts_of(root)
    assert facts.mem_available_mb == 1000 and not facts.throttling.active
    reason = guards.check_round("cifar10", "torch", 16, facts, POLICY)
    assert reason == ("task cifar10 on torch with batch size 16 needs about 1118 MB (990 MB estimated + 128 MB "
                      "margin) and only 1000 MB is available; free memory, lower the server's batch_size, "
                      "or lower [client] memory_margin_mb")
    assert guards.check_round("mnist", "torch", 16, facts, POLICY) is None


def test_the_memory_estimate_grows_with_the_batch():
    small, large = (guards.memory_estimate_mib("torch", "cifar10", b) for b in (8, 64))
    assert small is not None and large is not None and large > small
    facts = guards.LiveFacts(1120, None, None)  # b8: 1114 MB with the margin, b64: 1141
    assert guards.check_round("cifar10", "torch", 8, facts, POLICY) is None
    assert guards.check_round("cifar10", "torch", 64, facts, POLICY) is not None


def test_the_margin_is_configurable():
    facts = guards.LiveFacts(1000, None, None)
    assert guards.check_round("cifar10", "torch", 16, facts, POLICY) is not None
    assert guards.check_round("cifar10", "torch", 16, facts, guards.GuardPolicy(memory_margin_mb=0)) is None


def test_every_backend_and_task_has_memory_figures():
    from edgefld.backends.base import BACKEND_MODULES
    from edgefld.tasks import TASKS

    assert {(backend, task) for backend in BACKEND_MODULES for task in TASKS} <= set(guards.MEMORY_FIGURES)


def test_an_unmeasured_pair_is_not_refused_for_memory():
    # A backend or task added without a bench run: refusing every round of a board on a guess would be worse.
    assert guards.memory_estimate_mib("onnx", "mnist", 16) is None
    assert guards.check_round("mnist", "onnx", 16, guards.LiveFacts(100, None, None), POLICY) is None


def test_tensorflow_is_checked_for_memory():
    # 594 + 31 + 0.15 * 16 = 627 MB estimated for mnist: a 512 MB board refuses it, a 1 GB one takes it.
    assert guards.memory_estimate_mib("tensorflow", "mnist", 16) == pytest.approx(627.4)
    reason = guards.check_round("mnist", "tensorflow", 16, guards.LiveFacts(400, None, None), POLICY)
    assert reason is not None and reason.startswith("task mnist on tensorflow with batch size 16 needs about 755 MB")
    assert guards.check_round("mnist", "tensorflow", 16, guards.LiveFacts(800, None, None), POLICY) is None


def test_litert_fits_a_pi_zero_where_torch_does_not():
    # A Pi Zero 2 W (512 MB) with ~300 MB available: litert takes mnist, torch would be OOM-killed.
    facts = guards.LiveFacts(300, None, None)
    assert guards.check_round("mnist", "litert", 8, facts, POLICY) is None
    assert guards.check_round("mnist", "torch", 8, facts, POLICY) is not None


def test_a_nano_in_5w_mode_refuses_cifar10_but_takes_mnist():
    facts = facts_of(BOARDS / "jetson-nano-5w")
    reason = guards.check_round("cifar10", "torch", 16, facts, POLICY)
    assert reason == ("task cifar10 needs a power mode of at least 15 W and the board runs 5W (mode 1); switch it "
                      "with `sudo nvpmodel -m ID`, or lower [client] heavy_task_min_watts")
    assert guards.check_round("mnist", "torch", 16, facts, POLICY) is None
    assert guards.check_round("cifar10", "torch", 16, facts, guards.GuardPolicy(heavy_task_min_watts=0)) is None
    assert guards.check_round("cifar10", "torch", 16, facts, guards.GuardPolicy(heavy_task_min_watts=5)) is None


def test_a_nano_in_maxn_takes_cifar10():
    facts = facts_of(BOARDS / "jetson-nano")
    assert facts.power_mode is not None and facts.power_mode.name == "MAXN"
    assert guards.check_round("cifar10", "torch", 16, facts, POLICY) is None


@pytest.mark.parametrize("name, watts", [("5W", 5), ("MODE_10W", 10), ("MODE_15W_2CORE", 15), ("MODE_20W_6CORE", 20),
                                         ("25W", 25), ("MAXN", None), ("MAXN_SUPER", None), ("", None)])
def test_power_mode_watts_come_from_the_name(name, watts):
    assert guards.power_mode_watts(name) == watts


def test_guards_off_take_everything():
    facts = guards.LiveFacts(10, Throttling.from_raw(0x5), PowerMode(1, "5W"))
    assert guards.check_round("cifar10", "torch", 64, facts, POLICY) is not None
    assert guards.check_round("cifar10", "torch", 64, facts, guards.GuardPolicy(enabled=False)) is None


def test_the_daemon_passes_the_guard_settings_to_the_app(tmp_path):
    from edgefld.client.daemon import node_config
    from edgefld.config import load_config
    from edgefld.hardware import detect_board
    from edgefld.profile import choose_profile

    path = tmp_path / "edgefl.toml"
    path.write_text('[client]\ncid = 1\nserver = "127.0.0.1:9092"\nguards = false\nmemory_margin_mb = 64\n'
                    "heavy_task_min_watts = 10\n")
    config = load_config(path)
    profile = choose_profile(detect_board(str(BOARDS / "rpi4-2gb"), path="", probe_cuda=False), "torch",
                             frozenset({"torch"}))
    node = node_config(config, profile, tmp_path / "status.json")
    assert set(node) == set(settings.NODE_CONFIG_KEYS)
    assert (node["guards"], node["memory-margin-mb"], node["heavy-task-min-watts"]) == (False, 64, 10)


# --- through the real ClientApp ----------------------------------------------------------------


def _train_message(server_round: int) -> Message:
    metadata = Metadata(run_id=1, message_id="instruction-1", src_node_id=0, dst_node_id=7, reply_to_message_id="",
                        group_id=str(server_round), created_at=time.time(), ttl=600.0, message_type="train")
    content = RecordDict({"arrays": ArrayRecord(), "config": ConfigRecord({"server-round": server_round})})
    return Message(content, metadata=metadata)


def _context(tmp_path: Path, board: Path, **node) -> Context:
    node_config = {"cid": 3, "data-dir": str(tmp_path / "data"), "backend": "torch", "device": "cpu", "threads": 1,
                   "batch-size-cap": 16, "max-train-samples": 0, "tasks": "mnist,digits",
                   "status-file": str(tmp_path / "last-round.json"), "board-root": str(board),
                   "board-tools-path": str(board / "bin"), **node}
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(),
                   run_config=dict(settings.RUN_CONFIG_DEFAULTS, task="digits"))


def test_a_throttled_board_answers_the_round_with_a_resources_refusal(tmp_path):
    import json

    reply = client_app.app(_train_message(4), _context(tmp_path, BOARDS / "rpi4-4gb"))
    assert reply.has_error()
    assert reply.error.code == settings.ERROR_RESOURCES == 4006
    assert settings.ERROR_NAMES[reply.error.code] == "resources"
    assert reply.error.reason.startswith("client 3 refuses this round: the board is throttled now (get_throttled "
                                         "0x50005: under-voltage, throttled)")
    assert reply.metadata.reply_to_message_id == "instruction-1"
    status = json.loads((tmp_path / "last-round.json").read_text())
    assert (status["round"], status["code"], status["error"]) == (4, 4006, reply.error.reason)


def test_the_same_board_with_guards_off_goes_on_to_train(tmp_path):
    # Past the guard, it fails for the next reason (no global model sent here): proof the guard let it through.
    reply = client_app.app(_train_message(4), _context(tmp_path, BOARDS / "rpi4-4gb", guards=False))
    assert reply.has_error() and reply.error.code != settings.ERROR_RESOURCES


def test_a_bad_guards_value_in_the_node_config_is_a_refusal_not_a_crash(tmp_path):
    reply = client_app.app(_train_message(1), _context(tmp_path, BOARDS / "rpi4-2gb", guards="maybe"))
    assert reply.has_error() and reply.error.code == settings.ERROR_INTERNAL
    assert "bad node config" in reply.error.reason


def test_the_guard_defaults_are_the_schemas_in_the_policy_and_the_clientapp(tmp_path):
    from edgefld.config.schema import key

    schema = tuple(key("client", name).default for name in ("guards", "memory_margin_mb", "heavy_task_min_watts"))
    assert schema == (True, 128, 15)
    policy = guards.GuardPolicy()
    assert (policy.enabled, policy.memory_margin_mb, policy.heavy_task_min_watts) == schema
    # A node config that leaves them out (one written by hand) gets the same.
    node = client_app.NodeSettings.from_context(_context(tmp_path, BOARDS / "rpi4-2gb"))
    assert (node.guards, node.memory_margin_mb, node.heavy_task_min_watts) == schema
    # The README says it in words; heavy tasks are the task list's.
    readme = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8").split())
    assert f"`[client] heavy_task_min_watts` (default {schema[2]} W" in readme
    assert "a Jetson takes " + ", ".join(sorted(guards.HEAVY_TASKS)) + " only in a power mode" in readme
