"""The facts the packaging repeats outside Python agree with their one home in edgefld: the backend
catalogue (edgefld.backends.catalog) and the task list (edgefld.tasks).

packaging/backends.toml, pyproject.toml's extras and the Makefile cannot import edgefld, so they name
backends and tasks again; a backend or task added, renamed or dropped in edgefld fails here until
they follow."""

from __future__ import annotations

import re
import tomllib

import pytest
from debbuild import product
from debbuild.base import PACKAGING, REPO

from edgefld.backends.catalog import BACKENDS
from edgefld.tasks import TASKS

BACKENDS_TOML: dict[str, dict[str, dict]] = tomllib.loads((PACKAGING / "backends.toml").read_text(encoding="utf-8"))
ENTRIES = [(name, arch, entry) for name, per_arch in BACKENDS_TOML.items() for arch, entry in per_arch.items()]


def test_every_backend_package_is_a_catalogued_backend_whose_install_hint_names_it():
    assert BACKENDS_TOML, "packaging/backends.toml packages no backend"
    for name in BACKENDS_TOML:
        assert name in BACKENDS, f"packaging/backends.toml packages {name}, which edgefld.backends.catalog lacks"
        assert product.BACKEND_PACKAGE_PREFIX + name in BACKENDS[name].extra, BACKENDS[name].extra
    for name, spec in BACKENDS.items():
        if name not in BACKENDS_TOML:  # no .deb of its own: its install hint must not promise one
            assert product.BACKEND_PACKAGE_PREFIX not in spec.extra, spec.extra


@pytest.mark.parametrize("name,arch,entry", ENTRIES, ids=[f"{name}.{arch}" for name, arch, _ in ENTRIES])
def test_a_backend_package_lists_known_tasks_in_order_and_says_why_it_lacks_one(name, arch, entry):
    tasks = entry["tasks"]
    assert tasks == [task for task in TASKS if task in tasks], (
        f"[{name}.{arch}] tasks {tasks}: each must be one of edgefld.tasks.TASKS, in its order {list(TASKS)}")
    for missing in [task for task in TASKS if task not in tasks]:
        assert re.search(rf"\b{missing}\b", entry.get("note", "")), (
            f"[{name}.{arch}] leaves out task {missing} and its note does not say why")


def test_every_backend_is_a_pip_extra_and_in_the_development_venv():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    venv_extras = re.search(r"^EXTRAS \?= (\S+)$", makefile, re.M)
    assert venv_extras is not None
    for name, spec in BACKENDS.items():
        assert name in extras, f"pyproject.toml has no extra {name}"
        assert f"edgefl[{name}]" in spec.extra, spec.extra
        assert name in venv_extras.group(1).split(","), f"the Makefile's EXTRAS leave out {name}"
