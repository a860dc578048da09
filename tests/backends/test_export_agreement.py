"""Each export format, fed the same images as the backends that train the model: the same logits.

A checkpoint is stored as the server stores one (RunState.save_round, with its round's record), then
exported with `edgefl model export`, and the export is run by the runtime a user deploys it with
(torch for the state_dict, onnxruntime for ONNX, LiteRT's interpreter for .tflite, plain Keras for
.keras, none of them given edgefl's code). Its logits are compared with every installed backend's
predict() on the same weights and images: torch, TensorFlow and LiteRT each compute the model the
federation trains, so an export that is right agrees with all three.

`pytest -s` prints each case's figures (the README's table of agreement and sizes comes from them).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from edgefld.backends.base import Backend, Weights, load_backend
from edgefld.backends.catalog import installed_backends
from edgefld.backends.litert_backend import model_inputs
from edgefld.errors import BackendUnavailable
from edgefld.export import FORMATS
from edgefld.records import Evaluation, RoundRecord
from edgefld.run_state import RunState
from edgefld.tasks import Task, get_task
from tests.backends.test_agreement import LOGITS_RELATIVE_TOLERANCE, lively_weights, task_batch

# The tolerance, relative to the largest logit (about 1.5-3 with lively_weights): the one the backends
# are held to against each other (test_agreement.LOGITS_RELATIVE_TOLERANCE, 2e-5, about 170 float32
# epsilons of 1.19e-7): an export computes the same model in float32 by yet another framework's
# kernels (onnxruntime's, or TFLite's with BatchNorm folded into the convolutions' weights by the
# converter). Measured on x86-64 with AVX-512 (torch 2.14, onnxruntime 1.32, tensorflow-cpu 2.21,
# ai-edge-litert 2.3 with XNNPACK): up to 4.3e-7 relative (digits, 4 float32 epsilons), 8.5e-7
# (mnist, 7), 1.9e-6 (cifar10: MobileNetV3, 52 layers deep, 16): the bound is 10x the largest, and
# like the backends' own differences these grow with depth, not with the CPU kind (1.4e-6 for
# cifar10 between backends on AVX2 and aarch64, test_litert_cpu_kinds.py). A real mismatch (a
# transposed kernel, the wrong normalisation or layout, BatchNorm in training mode, dropout
# left on) is of the order of the logits themselves.
EXPORT_LOGITS_RELATIVE_TOLERANCE = LOGITS_RELATIVE_TOLERANCE
TASK_NAMES = ["digits", "mnist", "cifar10"]
ROUND = 7
ACCURACY = 0.8125
IMAGES = 16

# What each format's runtime needs (to run the export, not to make it).
RUNTIMES = {"torch": "torch", "onnx": "onnxruntime", "tflite": "ai_edge_litert", "keras": "keras"}


def _cases() -> list[object]:
    cases = []
    for task_name in TASK_NAMES:
        for format_name in FORMATS:
            marks = [pytest.mark.slow] if task_name == "cifar10" else []
            cases.append(pytest.param(task_name, format_name, marks=marks, id=f"{task_name}-{format_name}"))
    return cases


@cache
def _backend(name: str) -> Backend:
    return load_backend(name)


def reference_backends() -> list[str]:
    usable = []
    for name in ("torch", "tensorflow", "litert"):
        if name not in installed_backends():
            continue
        try:
            _backend(name)
        except (BackendUnavailable, ImportError):
            continue
        usable.append(name)
    return usable


@cache
def _state(task_name: str, root: Path) -> tuple[Path, Weights, np.ndarray]:
    """A state directory holding round ROUND's checkpoint, its weights and the images to feed."""
    task = get_task(task_name)
    if "torch" not in installed_backends():
        pytest.skip("the weights are drawn by the torch backend (its initial weights, made lively)")
    weights = lively_weights(task, _backend("torch"), seed=3)
    directory = root / task_name
    state = RunState(directory, {"task": task_name, "num-partitions": 4, "partition-seed": 0})
    state.save_round(ROUND, weights, RoundRecord(ROUND, task=task_name,
                                                 evaluation=Evaluation(0.6, ACCURACY, 300)))
    images, _ = task_batch(task, IMAGES, seed=5)
    return directory, weights, images


@pytest.fixture(scope="module")
def state_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("state")


def run_export(task: Task, format_name: str, path: Path, images: np.ndarray) -> np.ndarray:
    """The export's logits for ``images`` (uint8, as stored), normalised as its metadata says."""
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    pixels = images.astype(np.float32)
    mean, std = np.float32(meta["input"]["mean"]), np.float32(meta["input"]["std"])
    inputs = (pixels / np.float32(meta["input"]["pixel_max"]) - mean) / std  # NHWC, per channel
    np.testing.assert_array_equal(inputs, model_inputs(task, images))  # the backends' own normalisation
    if meta["input"]["layout"] == "NCHW":
        inputs = np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))
    assert [None, *inputs.shape[1:]] == meta["input"]["shape"]
    if format_name == "torch":
        import torch

        from edgefld.backends.torch_models import build_model

        model = build_model(task)  # the task's architecture (torchvision's MobileNetV3 for cifar10)
        model.load_state_dict(torch.load(path, weights_only=True))  # strict: every key, no other
        with torch.inference_mode():
            return model.eval()(torch.from_numpy(inputs)).numpy()
    if format_name == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {"images": inputs})[0])
    if format_name == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=str(path)).get_signature_runner()
        return np.asarray(runner(images=inputs)["logits"])
    if format_name == "keras":
        import keras

        # safe_mode (the default) and no custom_objects: it must load from Keras's own layers alone.
        model = keras.saving.load_model(path)
        return np.asarray(model(inputs, training=False))
    raise AssertionError(f"no runtime for {format_name}")


@pytest.mark.parametrize(("task_name", "format_name"), _cases())
def test_export_agrees_with_backends(edgefl_cli, state_root, tmp_path, task_name, format_name):
    spec = FORMATS[format_name]
    missing = [m for m in (*spec.needs, RUNTIMES[format_name]) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"--format {format_name} needs {', '.join(missing)} to export or run (pip install it)")
    task = get_task(task_name)
    directory, weights, images = _state(task_name, state_root)
    out = tmp_path / f"model{spec.suffix}"
    code, stdout, stderr = edgefl_cli("model", "export", "--state-dir", str(directory), "--format", format_name,
                                      "--out", str(out))
    assert code == 0, stderr
    assert f"{task_name} round {ROUND}" in stdout and "Traceback" not in stderr

    meta = json.loads((tmp_path / f"model{spec.suffix}.json").read_text())
    data = out.read_bytes()
    assert meta["sha256"] == hashlib.sha256(data).hexdigest() and meta["bytes"] == len(data)
    assert (meta["task"], meta["round"], meta["accuracy"], meta["format"]) == (task_name, ROUND, ACCURACY, format_name)
    assert len(meta["class_names"]) == task.num_classes == len(set(meta["class_names"]))
    assert meta["output"]["shape"] == [None, task.num_classes]

    got = run_export(task, format_name, out, images)
    assert got.shape == (IMAGES, task.num_classes) and got.dtype == np.float32
    references = reference_backends()
    assert references
    figures = []
    for name in references:
        expected = _backend(name).predict(task, weights, images)
        scale = float(np.abs(expected).max())
        difference = float(np.abs(got - expected).max())
        figures.append(f"{name} {difference:.2g} (relative {difference / scale:.2g})")
        assert 1.0 < scale < 10.0  # lively_weights gave logits next to which a difference means something
        assert difference <= EXPORT_LOGITS_RELATIVE_TOLERANCE * scale, (name, difference, scale)
        # Predictions: the same class for every image (none of these lies within the tolerance of a tie).
        top2 = np.sort(expected, axis=1)[:, -2:]
        assert (top2[:, 1] - top2[:, 0] > EXPORT_LOGITS_RELATIVE_TOLERANCE * scale).all()
        np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    print(f"\n{task_name} {format_name}: {len(data)} bytes; max abs logit difference vs " + ", ".join(figures)
          + "; argmax equal")
