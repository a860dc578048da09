"""The task list (edgefld.tasks) is the one home of what a federation can train."""

from __future__ import annotations

from edgefld import guards, profile
from edgefld.config.schema import key
from edgefld.data import DATASETS
from edgefld.tasks import TASKS, get_task
from tests.conftest import REPO


def test_every_task_has_its_dataset_and_is_a_choice_of_the_config():
    assert all(task.dataset in DATASETS for task in TASKS.values())
    assert key("server", "task").choices == tuple(TASKS)
    assert all(f'"{name}" ({task.summary})' in key("server", "task").doc for name, task in TASKS.items())
    assert get_task("mnist") is TASKS["mnist"]


def test_heavy_tasks_are_kept_from_small_boards_and_low_power_modes():
    heavy = {name for name, task in TASKS.items() if task.heavy}
    assert heavy == {"cifar10"}
    assert set(guards.HEAVY_TASKS) == heavy
    assert set(profile.SMALL_TASKS) == set(TASKS) - heavy and profile.ALL_TASKS == tuple(TASKS)


def test_readme_task_table_names_every_task():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    header = readme.index("| task | dataset | model (PyTorch) |")
    rows = readme[header:].split("\n\n", 1)[0].splitlines()[2:]
    assert [row.split("|")[1].strip().strip("`") for row in rows] == list(TASKS)
