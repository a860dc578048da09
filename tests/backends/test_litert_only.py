"""The LiteRT backend where a small board has it: a virtualenv with ai-edge-litert and NO torch or TensorFlow.

The environment is built once with pip (PyPI) and cached: under $EDGEFL_CACHE
when set, else in pytest's cache directory (.pytest_cache/d/litert-only-venv-*);
delete it to rebuild. edgefld comes
from this checkout (PYTHONPATH), not from a wheel.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# What edgefl's base install and the litert extra bring to a board (pyproject.toml), pinned.
REQUIREMENTS = ("flwr==1.42.0", "sdnotify", "numpy", "ai-edge-litert==2.3.0")
READY = ".edgefl-ready"


@pytest.fixture(scope="module")
def litert_python(request, tmp_path_factory) -> Path:
    name = "litert-only-venv-" + hashlib.sha256(" ".join(REQUIREMENTS).encode()).hexdigest()[:12]
    cache = os.environ.get("EDGEFL_CACHE")
    if cache:
        venv = Path(cache) / name
    elif getattr(request.config, "cache", None) is not None:
        venv = Path(request.config.cache.mkdir(name))
    else:  # -p no:cacheprovider: built afresh for this run
        venv = tmp_path_factory.mktemp(name)
    python = venv / "bin" / "python"
    if not (venv / READY).exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS],
            capture_output=True, text=True, timeout=1200,
        )
        if pip.returncode != 0:
            pytest.skip(f"cannot build the LiteRT-only environment (PyPI unreachable?): {pip.stderr[-500:]}")
        (venv / READY).write_text(" ".join(REQUIREMENTS) + "\n")
    return python


def run(python: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


TRAIN_WITHOUT_FRAMEWORKS = """
import importlib.util, sys
import numpy as np
from edgefld.backends.base import load_backend
from edgefld.data import load_partition, load_test
from edgefld.tasks import get_task

for name in ("torch", "tensorflow", "torchvision", "keras"):
    assert importlib.util.find_spec(name) is None, name + " is importable in the LiteRT-only environment"
backend = load_backend("litert")
assert backend.runtime == "ai-edge-litert", backend.runtime

digits = get_task("digits")
part = load_partition("digits", sys.argv[1], cid=0, num_partitions=1)
test_x, test_y = load_test("digits", sys.argv[1])
weights = backend.initial_weights(digits)
before = backend.evaluate(digits, weights, test_x, test_y)
result = backend.train(digits, weights, part.train_x, part.train_y, epochs=1, batch_size=16)
after = backend.evaluate(digits, result.weights, test_x, test_y)
assert after.loss < before.loss and after.accuracy > 0.5, (before, after)

# MNIST-shaped images whose class is a pixel pattern (MNIST itself is a download).
mnist = get_task("mnist")
rng = np.random.default_rng(0)
templates = rng.integers(0, 256, size=(10, 28, 28, 1))
labels = rng.integers(0, 10, size=600)
images = np.clip(templates[labels] + rng.integers(-30, 31, size=(600, 28, 28, 1)), 0, 255).astype(np.uint8)
weights = backend.initial_weights(mnist)
before = backend.evaluate(mnist, weights, images, labels)
result = backend.train(mnist, weights, images, labels, epochs=1, batch_size=16)
after = backend.evaluate(mnist, result.weights, images, labels)
assert after.loss < before.loss, (before, after)

heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow", "torchvision", "keras"))
assert not heavy, heavy
print("digits", after.accuracy, "ok")
"""


def test_litert_trains_without_torch_or_tensorflow(litert_python, tmp_path):
    completed = run(litert_python, "-c", TRAIN_WITHOUT_FRAMEWORKS, str(tmp_path))
    assert completed.returncode == 0, completed.stdout + completed.stderr[-3000:]
    assert "ok" in completed.stdout


def test_detect_chooses_litert_when_it_is_the_only_backend(litert_python):
    completed = run(litert_python, "-m", "edgefld.cli.main", "detect", "--json", "--no-cuda-probe")
    assert completed.returncode == 0, completed.stderr
    profile = json.loads(completed.stdout)["profile"]
    assert profile["backend"] == "litert", profile


def test_bench_runs_without_frameworks(litert_python):
    """bench/bench_litert.py in the board-like environment; the figures are printed (pytest -s)."""
    completed = run(litert_python, "bench/bench_litert.py", "--tasks", "mnist", "--samples", "1500", "--json")
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    print(f"\nLiteRT-only environment, MNIST epoch: {figures}")
    assert figures["heavy_modules"] == [] and figures["samples_per_second"] > 0
