"""The workload policy: one test per row of the README table, plus the edge rules."""

from __future__ import annotations

import pytest

from edgefld.errors import BackendUnavailable
from edgefld.hardware.board import Board, JetsonInfo, PowerMode, RaspberryPiInfo
from edgefld.profile import RULES, choose_profile, memory_class

ALL = frozenset({"torch", "tensorflow", "litert"})


def pi(ram_mb: int, nominal: int, type_: str = "4B", cpus: int = 4) -> Board:
    return Board("raspberry-pi", f"Raspberry Pi {type_}", "aarch64", ram_mb, cpus, cpus,
                 raspberry_pi=RaspberryPiInfo("c03111", type_, "BCM2711", nominal, "1.1"))


MAXN = PowerMode(0, "MAXN")


def jetson(ram_mb: int = 3956, cuda: bool = True, online: int = 4, present: int = 4, mode=MAXN) -> Board:
    return Board("jetson", "NVIDIA Jetson Nano Developer Kit", "aarch64", ram_mb, online, present,
                 jetson=JetsonInfo("Jetson Nano", "p3448-0000", "tegra210", "32.6.1", "4.6", mode, cuda))


def test_rule_jetson_cuda():
    p = choose_profile(jetson(), "auto", ALL)
    assert (p.rule, p.backend, p.device, p.threads) == ("jetson-cuda", "torch", "cuda", 4)
    assert p.tasks == ("cifar10", "mnist", "digits") and p.batch_size_cap == 64 and p.max_train_samples == 20000


def test_rule_large_pi4_4gb():
    p = choose_profile(pi(3844, 4096), "auto", ALL)
    assert (p.rule, p.memory_class, p.backend, p.device) == ("large", "4GB+", "torch", "cpu")
    assert p.allows("cifar10") and p.batch_size_cap == 32 and p.max_train_samples == 5000


def test_rule_large_without_torch_prefers_tensorflow():
    assert choose_profile(pi(7800, 8192), "auto", frozenset({"tensorflow", "litert"})).backend == "tensorflow"


def test_rule_medium_pi4_2gb():
    p = choose_profile(pi(1848, 2048), "auto", ALL)
    assert (p.rule, p.memory_class, p.backend, p.batch_size_cap, p.max_train_samples) == (
        "medium", "2GB", "torch", 16, 2000)
    assert p.allows("cifar10")


def test_rule_small_pi3_1gb_prefers_litert_and_no_cifar():
    p = choose_profile(pi(926, 1024, "3B"), "auto", ALL)
    assert (p.rule, p.memory_class, p.backend) == ("small", "1GB", "litert")
    assert p.tasks == ("mnist", "digits") and not p.allows("cifar10")
    assert (p.batch_size_cap, p.max_train_samples) == (16, 1000)


def test_rule_tiny_zero2w_never_gets_cifar10():
    p = choose_profile(pi(427, 512, "Zero2W"), "auto", ALL)
    assert (p.rule, p.memory_class, p.backend) == ("tiny", "512MB", "litert")
    assert not p.allows("cifar10") and p.batch_size_cap == 8 and p.max_train_samples == 500


def test_tiny_board_with_only_torch_still_trains_and_says_why():
    p = choose_profile(pi(427, 512, "Zero2W"), "auto", frozenset({"torch"}))
    assert p.backend == "torch" and not p.allows("cifar10")


def test_tiny_board_with_only_tensorflow_falls_back_with_a_note():
    p = choose_profile(pi(427, 512, "Zero2W"), "auto", frozenset({"tensorflow"}))
    assert p.backend == "tensorflow"
    assert any("only backend installed" in n for n in p.notes)


def test_jetson_without_usable_cuda_trains_on_cpu_by_ram():
    p = choose_profile(jetson(cuda=False), "auto", ALL)
    assert (p.rule, p.backend, p.device) == ("large", "torch", "cpu")


def test_jetson_cuda_with_explicit_tensorflow_is_cpu_and_noted():
    p = choose_profile(jetson(), "tensorflow", ALL)
    assert p.backend == "tensorflow" and p.device == "cpu"
    assert any("CUDA is usable" in n for n in p.notes)


def test_power_mode_with_offline_cores_shrinks_the_work():
    full = choose_profile(jetson(online=6, present=6, ram_mb=7000), "auto", ALL)
    low = choose_profile(jetson(online=2, present=6, ram_mb=7000, mode=PowerMode(0, "MODE_15W_2CORE")), "auto", ALL)
    assert low.threads == 2 and full.threads == 6
    assert low.max_train_samples == full.max_train_samples // 3
    assert any("2 of 6 CPUs online (power mode MODE_15W_2CORE)" in n for n in low.notes)


def test_explicit_backend_not_installed_is_a_clear_error():
    with pytest.raises(BackendUnavailable) as info:
        choose_profile(pi(3844, 4096), "tensorflow", frozenset({"torch"}))
    assert str(info.value).startswith('backend "tensorflow" is configured but not installed (installed: torch)')
    assert info.value.exit_code == 69


def test_auto_with_nothing_installed_has_no_backend_and_says_what_to_install():
    p = choose_profile(pi(3844, 4096), "auto", frozenset())
    assert p.backend is None
    assert any("no training backend is installed" in n for n in p.notes)


@pytest.mark.parametrize("ram_mb, expected", [(427, "512MB"), (767, "512MB"), (768, "1GB"), (926, "1GB"),
                                              (1535, "1GB"), (1536, "2GB"), (3071, "2GB"), (3072, "4GB+"),
                                              (64000, "4GB+")])
def test_memory_class_bounds(ram_mb, expected):
    assert memory_class(ram_mb) == expected


def test_readme_policy_table_matches_the_rules():
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].startswith("`") and len(cells) == 7:
            rows[cells[0].strip("`")] = cells
    assert list(rows) == [r.id for r in RULES]
    for rule in RULES:
        _, when, preference, device, tasks, batch, samples = rows[rule.id]
        assert when == rule.when
        assert preference == ", ".join(rule.preference)
        assert device == rule.device
        assert tasks == ", ".join(rule.tasks)
        assert int(batch) == rule.batch_size_cap
        assert samples == str(rule.max_train_samples)


def test_threads_setting_overrides_the_cpu_count():
    assert choose_profile(jetson(online=4, present=4), "auto", ALL, threads_setting=1).threads == 1
    p = choose_profile(jetson(online=4, present=4), "auto", ALL, threads_setting=8)
    assert p.threads == 8 and "threads = 8 is more than the 4 CPUs online" in p.notes


def test_rules_name_only_catalogued_backends_and_known_tasks():
    from edgefld.backends.catalog import BACKENDS
    from edgefld.tasks import TASKS

    for rule in RULES:
        assert set(rule.preference) <= set(BACKENDS), rule.id
        assert rule.tasks and set(rule.tasks) <= set(TASKS), rule.id
