"""The LiteRT backend: the shipped training models, agreement with the torch backend, training, errors.

The agreement tests need torch (the reference); the rest needs only ai-edge-litert.
Agreement is measured as the largest absolute difference over every array and
printed (pytest -s shows it). LiteRT and torch compute the same float32
arithmetic in different orders (their matmul/convolution kernels sum in other
orders, BatchNorm's statistics are reduced differently), so results agree to a
few float32 roundings, not bit for bit: the tolerances below are about 10-100x
the differences observed, far below what any real error (a wrong gradient term,
a transposed weight, a missing running-statistics update) produces (>1e-3).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

# None of these imports ai_edge_litert: litert_backend loads its interpreter when a model is first run.
from edgefld.backends import litert_backend
from edgefld.backends.base import batch_slices, load_backend, shuffle_orders
from edgefld.backends.layout import model_layout
from edgefld.errors import BackendUnavailable
from edgefld.tasks import TASKS, get_task
from tests.backends import numerics
from tests.backends.numerics import learnable_batch, perturbed_weights

pytest.importorskip("ai_edge_litert")

DIGITS, MNIST, CIFAR10 = get_task("digits"), get_task("mnist"), get_task("cifar10")

# Tolerances, from the figures measured on every kind of CPU the product runs on (x86-64 with AVX-512
# natively, x86-64 with AVX2 and aarch64 NEON under qemu-user: tests/backends/test_litert_cpu_kinds.py
# prints them): about 10x the largest of them, far below what a real error (a wrong gradient term, a
# transposed weight, a missing running-statistics update) produces (>1e-3).
# Eval-mode logits: one forward pass (measured <= 1.1e-6 on every kind, MobileNet's 52 layers the most).
LOGITS_ATOL = 1e-5
# Weights (BatchNorm statistics included) after one SGD step (lr 0.01) from the same state as float64
# torch, momentum carried: the gradient's rounding times lr (measured <= 2.2e-7 on every kind, in a
# BatchNorm running variance of order 1), once what an activation within a rounding of a kink does is
# accounted for (numerics.compare_lockstep; why steps are compared in lockstep: numerics' docstring).
ONE_STEP_ATOL = 2e-6
MULTI_STEPS = 5

# Builtin operators a training model may use; anything else (CUSTOM: Flex or custom ops) needs a
# delegate or kernel LiteRT does not ship.
NOT_BUILTIN_PREFIXES = ("CUSTOM", "DELEGATE", "UNKNOWN")
# The models' builder: a build tool in the checkout, not part of the edgefld package.
LITERT_BUILD = Path(__file__).resolve().parents[2] / "tools" / "litert_build.py"


@pytest.fixture(scope="module")
def backend():
    return load_backend("litert")


def max_abs_diff(first: list[np.ndarray], second: list[np.ndarray]) -> float:
    assert [a.shape for a in first] == [b.shape for b in second]
    return max(float(np.abs(a.astype(np.float64) - b).max()) for a, b in zip(first, second, strict=True))


# --- the shipped models ------------------------------------------------------------------------------


MODELS = sorted({t.model for t in TASKS.values()})


def _shipped_bytes(model: str) -> bytes:
    info = litert_backend.manifest()["models"][model]
    return resources.files("edgefld.backends").joinpath("litert_models", info["file"]).read_bytes()


@pytest.fixture(scope="module")
def operators_in_files() -> dict[str, list[str]] | None:
    """Each shipped file's operators, read from the flatbuffer with TensorFlow's schema (None without
    TensorFlow); in a child process, because importing tensorflow before torchvision's triton in one
    process crashes it, and other tests here import torch."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        return None
    code = (f"import json, sys\nsys.path.insert(0, {str(LITERT_BUILD.parent)!r})\n"
            "from litert_build import operator_names\n"
            "pairs = zip(sys.argv[1::2], sys.argv[2::2])\n"
            "print(json.dumps({m: operator_names(open(p, 'rb').read()) for m, p in pairs}))")
    args = []
    for model in MODELS:
        info = litert_backend.manifest()["models"][model]
        args += [model, str(resources.files("edgefld.backends").joinpath("litert_models", info["file"]))]
    completed = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", MODELS)
def test_shipped_model_matches_its_manifest_and_uses_builtin_ops_only(model, operators_in_files):
    info = litert_backend.manifest()["models"][model]
    data = _shipped_bytes(model)
    assert hashlib.sha256(data).hexdigest() == info["sha256"] and len(data) == info["bytes"]
    assert set(info["signatures"]) == {"train", "infer", "get_weights", "set_weights"}
    count = len(model_layout(model))
    assert info["signatures"]["get_weights"]["outputs"] == [litert_backend.weight_key(i) for i in range(count)]
    assert info["signatures"]["set_weights"]["inputs"] == [litert_backend.weight_key(i) for i in range(count)]
    assert not [op for op in info["ops"] if op.startswith(NOT_BUILTIN_PREFIXES)]
    if operators_in_files is not None:  # the manifest's op list is the file's
        assert operators_in_files[model] == info["ops"]


def _tensorflow_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


@pytest.mark.slow
def test_rebuilt_models_are_byte_identical_to_the_shipped_ones(tmp_path):
    """The .tflite conversion is deterministic (same TensorFlow): a rebuild reproduces the shipped bytes."""
    if not _tensorflow_importable():
        pytest.skip("rebuilding the LiteRT models needs TensorFlow")
    shipped = litert_backend.manifest()
    completed = subprocess.run(
        [sys.executable, str(LITERT_BUILD), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rebuilt = json.loads((tmp_path / "manifest.json").read_text())
    if rebuilt["models"] != shipped["models"]:
        versions = {info["tensorflow"] for info in shipped["models"].values()}
        pytest.fail(f"rebuilt models differ from the shipped ones (shipped built with TensorFlow {versions}); "
                    "run make litert-models and commit the result")
    for info in shipped["models"].values():
        assert (tmp_path / info["file"]).read_bytes() == _shipped_bytes(info["model"])


# --- agreement with the torch backend ---------------------------------------------------------------------

ALL_TASKS = [DIGITS, MNIST, CIFAR10]


@pytest.fixture(scope="module")
def torch_backend():
    pytest.importorskip("torch")
    return load_backend("torch")


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.name)
def test_same_weights_give_the_same_logits(backend, torch_backend, task):
    import torch

    from edgefld.backends.torch_backend import model_inputs

    weights = perturbed_weights(task)
    images, _ = learnable_batch(task, per_class=2)
    logits = backend.predict(task, weights, images, batch_size=7)  # 20 images: batches of 7, 7 and 6
    model = torch_backend._model_with(task, weights)
    model.eval()
    with torch.no_grad():
        expected = model(model_inputs(task, images, torch.device("cpu"))).numpy()
    diff = float(np.abs(logits - expected).max())
    print(f"\n{task.name}: eval logits max abs diff litert vs torch {diff:.3g}")
    assert logits.shape == (len(images), task.num_classes) and logits.dtype == np.float32
    assert diff <= LOGITS_ATOL
    assert np.abs(expected).max() > 0.1  # the comparison is not of near-zero outputs


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.name)
def test_sgd_steps_agree_with_float64_torch_step_by_step(backend, task):
    """Weights and BatchNorm running statistics after each of several momentum-SGD steps on one batch,
    the signatures driven directly (tests/backends/litert_steps.py, as on the other CPU kinds) so both
    sides see the same batch and dropout mask; each step compared with float64 torch's step from
    LiteRT's own state before it (numerics.compare_lockstep)."""
    from tests.backends.litert_steps import run_steps

    case = numerics.make_case(task, perturbed_weights(task), *learnable_batch(task, per_class=2), steps=MULTI_STEPS)
    out = run_steps(case)
    start, trajectory = numerics.case_weights(case), numerics.trajectory_of(out, MULTI_STEPS)
    masks = numerics.case_masks(case)
    comparisons = numerics.compare_lockstep(task, start, trajectory, case["x"], case["y"], masks, ONE_STEP_ATOL)
    references = numerics.lockstep(task, start, trajectory, case["x"], case["y"], masks)
    print(f"\n{task.name}, litert ({out['kind']}) vs float64 torch, step by step:")
    for comparison in comparisons:
        print("  ", comparison)
    assert all(comparison.unexplained <= ONE_STEP_ATOL for comparison in comparisons)
    np.testing.assert_allclose(out["losses"], [reference.loss for reference in references], rtol=1e-5)
    # Nothing is silently frozen: what torch changes, LiteRT changes (the tolerance alone would let a
    # frozen array of small updates pass). Some BatchNorm biases have an exactly zero gradient: the next
    # BatchNorm cancels any per-channel shift, so torch moves them by rounding noise only.
    for spec, before, after, reference in zip(model_layout(task.model), start, trajectory[-1], references[-1].weights,
                                              strict=True):
        if np.abs(reference - before).max() > 1e-5:
            assert np.abs(after - before).max() > 1e-5, f"{spec.name} did not change"
    running = [i for i, spec in enumerate(model_layout(task.model)) if spec.name.endswith("running_var")]
    assert all(not np.array_equal(start[i], trajectory[0][i]) for i in running)


def test_backend_train_matches_float64_torch_over_epochs(backend):
    """Through the Backend protocol: normalisation, labels, fresh momentum per call, and the shared training
    order (30 images in batches of 8, 8, 8 and 6, a new order each epoch), against float64 torch's free-running
    steps in that order. On digits, whose activations stay far from any kink along the whole trajectory (the
    condition a free-running comparison needs; numerics' docstring): asserted, not assumed."""
    task = DIGITS
    weights = perturbed_weights(task)
    images, labels = learnable_batch(task, per_class=3)
    ours = backend.train(task, weights, images, labels, epochs=3, batch_size=8, seed=2)
    x, y = litert_backend.model_inputs(task, images), labels.astype(np.int32)
    batches = [order[bounds] for order in shuffle_orders(len(x), 3, 2) for bounds in batch_slices(len(x), 8)]
    reference = numerics.free_running(task, weights, [x[b] for b in batches], [y[b] for b in batches],
                                      [None] * len(batches))
    margin = min(step.kinks.distance for step in reference)
    diff = max_abs_diff(ours.weights, reference[-1].weights)
    print(f"\n{task.name}: backend.train (3 epochs x 4 batches) max abs diff litert vs float64 torch {diff:.3g}; "
          f"kink margin {margin:.2g}")
    assert margin > numerics.KINK_MARGIN
    assert diff <= ONE_STEP_ATOL
    last_epoch = batches[-4:]
    expected_loss = sum(step.loss * len(b) for step, b in zip(reference[-4:], last_epoch, strict=True)) / len(x)
    assert ours.loss == pytest.approx(expected_loss, rel=1e-5)
    again = backend.train(task, weights, images, labels, epochs=3, batch_size=8, seed=2)
    assert max_abs_diff(again.weights, ours.weights) == 0.0  # momentum starts from zero on every call


# --- training and evaluation through the protocol ------------------------------------------------------------


def test_training_on_the_shipped_digits(backend, tmp_path):
    from edgefld.data import load_partition, load_test

    partition = load_partition("digits", tmp_path, cid=0, num_partitions=1)
    test_images, test_labels = load_test("digits", tmp_path)
    weights = backend.initial_weights(DIGITS)
    before = backend.evaluate(DIGITS, weights, test_images, test_labels)
    result = backend.train(DIGITS, weights, partition.train_x, partition.train_y, epochs=10, batch_size=32)
    after = backend.evaluate(DIGITS, result.weights, test_images, test_labels)
    assert after.loss < before.loss / 4
    assert after.accuracy > 0.85 and after.num_examples == len(test_labels)
    assert result.num_examples == len(partition.train_y) and result.seconds > 0


def test_mnist_learns_a_learnable_batch(backend):
    images, labels = learnable_batch(MNIST, per_class=10)
    weights = backend.initial_weights(MNIST, seed=3)
    before = backend.evaluate(MNIST, weights, images, labels)
    result = backend.train(MNIST, weights, images, labels, epochs=15, batch_size=10, seed=3)
    after = backend.evaluate(MNIST, result.weights, images, labels)
    assert after.loss < 0.5 * before.loss and after.accuracy >= 0.9


def test_mobilenet_trains_on_four_images_and_a_lone_trailing_one(backend):
    images, labels = learnable_batch(CIFAR10, per_class=1)
    weights = backend.initial_weights(CIFAR10)
    result = backend.train(CIFAR10, weights, images[:5], labels[:5], epochs=1, batch_size=4)
    assert np.isfinite(result.loss) and result.num_examples == 5
    assert all(np.isfinite(w).all() for w in result.weights)
    assert not np.array_equal(result.weights[0], weights[0])
    later = backend.train(CIFAR10, result.weights, images, labels, epochs=4, batch_size=10)
    assert later.loss < result.loss
    evaluation = backend.evaluate(CIFAR10, later.weights, images[:4], labels[:4])
    assert 0.0 <= evaluation.accuracy <= 1.0 and np.isfinite(evaluation.loss)


def test_batchnorm_models_refuse_batches_of_one(backend):
    images, labels = learnable_batch(CIFAR10, per_class=1)
    weights = backend.initial_weights(CIFAR10)
    with pytest.raises(ValueError, match=r"cifar10: BatchNorm cannot train on batches of one image; got 1 image"):
        backend.train(CIFAR10, weights, images[:1], labels[:1], epochs=1, batch_size=4)
    with pytest.raises(ValueError, match=r"got 10 image\(s\) in batches of 1"):
        backend.train(CIFAR10, weights, images, labels, epochs=1, batch_size=1)
    # Without BatchNorm a single image is a valid batch.
    result = backend.train(MNIST, backend.initial_weights(MNIST), *learnable_batch(MNIST, 1), epochs=1, batch_size=1)
    assert all(np.isfinite(w).all() for w in result.weights)


@pytest.mark.parametrize("task", [DIGITS, CIFAR10], ids=lambda t: t.name)
def test_train_follows_the_shared_training_order(backend, task):
    """train() steps through base.shuffle_orders in base.batch_slices (9 images in batches of 4: 4 then 5,
    the lone trailing image joined to the batch before it), as the torch and TensorFlow backends do, with
    dropout masks from litert_backend.dropout_generator: the signatures driven by hand in that order give
    the same weights, bit for bit."""
    images, labels = learnable_batch(task, per_class=1)
    images, labels = images[:9], labels[:9]
    weights = backend.initial_weights(task, seed=8)
    result = backend.train(task, weights, images, labels, epochs=2, batch_size=4, seed=9)
    model = backend._model_with(task, weights)
    x, y = litert_backend.model_inputs(task, images), labels.astype(np.int32)
    dropout_rng = litert_backend.dropout_generator(9)
    for order in shuffle_orders(9, 2, seed=9):
        for bounds in batch_slices(9, 4):
            batch = order[bounds]
            model.train_step(x[batch], y[batch], task.learning_rate, task.momentum, 0.0, dropout_rng)
    assert [s.stop - s.start for s in batch_slices(9, 4)] == [4, 5]
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), result.weights, strict=True))
    # Another order (same masks) trains to other weights: the comparison above can fail.
    model = backend._model_with(task, weights)
    dropout_rng = litert_backend.dropout_generator(9)
    for order in shuffle_orders(9, 2, seed=10):
        for bounds in batch_slices(9, 4):
            batch = order[bounds]
            model.train_step(x[batch], y[batch], task.learning_rate, task.momentum, 0.0, dropout_rng)
    assert not all(np.array_equal(a, b) for a, b in zip(model.get_weights(), result.weights, strict=True))


def test_evaluate_matches_a_hand_computation(backend):
    rng = np.random.default_rng(7)
    weights = [rng.standard_normal(w.shape).astype(np.float32) for w in backend.initial_weights(DIGITS)]
    images = rng.integers(0, 17, size=(5, 8, 8, 1)).astype(np.uint8)
    labels = np.array([0, 3, 3, 9, 1])
    w1, b1, w2, b2 = (w.astype(np.float64) for w in weights)
    logits = np.maximum(images.reshape(5, 64) / 16.0 @ w1.T + b1, 0) @ w2.T + b2
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    result = backend.evaluate(DIGITS, weights, images, labels, batch_size=2)
    assert result.loss == pytest.approx(-log_softmax[np.arange(5), labels].mean(), rel=1e-5)
    assert result.accuracy == (logits.argmax(axis=1) == labels).mean() and result.num_examples == 5


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.name)
def test_same_seed_same_result(backend, task):
    first, again, other = (backend.initial_weights(task, seed=s) for s in (5, 5, 6))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    assert [(w.shape, w.dtype) for w in first] == [(s.shape, np.float32) for s in model_layout(task.model)]
    images, labels = learnable_batch(task, per_class=1)
    runs = [backend.train(task, first, images, labels, epochs=1, batch_size=4, seed=s) for s in (11, 11, 12)]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0].weights, runs[1].weights, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0].weights, runs[2].weights, strict=True))


def test_trained_weights_are_not_changed_by_later_training(backend):
    images, labels = learnable_batch(DIGITS, per_class=2)
    first = backend.train(DIGITS, backend.initial_weights(DIGITS), images, labels, epochs=1, batch_size=8)
    snapshot = [w.copy() for w in first.weights]
    backend.train(DIGITS, first.weights, images, labels, epochs=1, batch_size=8)
    assert all(np.array_equal(a, b) for a, b in zip(first.weights, snapshot, strict=True))


# --- bad input ---------------------------------------------------------------------------------------------


def test_bad_weights_are_rejected_and_leave_the_model_untouched(backend):
    images, labels = learnable_batch(MNIST, 1)
    weights = backend.initial_weights(MNIST)
    reference = backend.predict(MNIST, weights, images)
    with pytest.raises(ValueError, match=r"mnist \(model lenet5\) has 10 weight arrays; got 9"):
        backend.evaluate(MNIST, weights[:-1], images, labels)
    bad = [np.ones_like(w) for w in weights]
    bad[4] = np.zeros((120, 400), np.float32)
    with pytest.raises(ValueError, match=r"weight 4 \(fc1\.weight\): expected shape \(120, 256\), got \(120, 400\)"):
        backend.train(MNIST, bad, images, labels, epochs=1, batch_size=4)
    bad[4] = weights[4].astype(np.float64)
    with pytest.raises(ValueError, match=r"weight 4 \(fc1\.weight\): expected dtype float32, got float64"):
        backend.train(MNIST, bad, images, labels, epochs=1, batch_size=4)
    loaded = backend._models["lenet5"].get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(loaded, weights, strict=True))
    np.testing.assert_array_equal(backend.predict(MNIST, weights, images), reference)


def test_bad_inputs_are_rejected(backend):
    weights = backend.initial_weights(DIGITS)
    images, labels = learnable_batch(DIGITS, 1)
    with pytest.raises(ValueError, match=r"uint8 images of shape N x \(8, 8, 1\); got float32"):
        backend.evaluate(DIGITS, weights, images.astype(np.float32), labels)
    with pytest.raises(ValueError, match=r"got uint8 \(10, 8, 8\)"):
        backend.predict(DIGITS, weights, images[..., 0])
    with pytest.raises(ValueError, match=r"classes 0\.\.9; labels range 0\.\.10"):
        backend.train(DIGITS, weights, images, np.where(labels == 9, 10, labels), epochs=1, batch_size=4)
    with pytest.raises(ValueError, match=r"epochs \(0\) and batch_size \(4\) must be at least 1"):
        backend.train(DIGITS, weights, images, labels, epochs=0, batch_size=4)


def test_construction_errors():
    assert (litert_backend.create_backend("cpu", threads=1).name, "litert") == ("litert", "litert")
    with pytest.raises(BackendUnavailable, match='no device "cuda"; devices: cpu'):
        load_backend("litert", device="cuda")
    with pytest.raises(ValueError, match="threads is 0"):
        litert_backend.create_backend(threads=0)


def test_without_any_runtime_the_error_names_the_package(monkeypatch):
    # None in sys.modules makes an import fail as if the package were absent.
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr("importlib.metadata.version", _no_distribution)
    expected = r"needs ai-edge-litert \(edgefl-backend-litert, pip: edgefl\[litert\]\)"
    with pytest.raises(BackendUnavailable, match=expected):
        litert_backend.create_backend()


def test_tflite_runtime_2_14_with_numpy_2_is_refused_by_name(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setattr("importlib.metadata.version", lambda name: "2.14.0")
    monkeypatch.setattr(np, "__version__", "2.4.0")
    with pytest.raises(BackendUnavailable, match=r"tflite-runtime 2\.14\.0 was built for numpy 1\.x and fails "
                                                 r"with numpy 2\.4\.0; install ai-edge-litert"):
        litert_backend.create_backend()


def _no_distribution(name):
    from importlib.metadata import PackageNotFoundError

    raise PackageNotFoundError(name)


def test_litert_backend_imports_neither_torch_nor_tensorflow():
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from edgefld.backends.base import load_backend\n"
        "from edgefld.tasks import get_task\n"
        "backend = load_backend('litert')\n"
        "for name in ('mnist', 'digits', 'cifar10'):\n"
        "    task = get_task(name)\n"
        "    images = np.zeros((4, *task.input_shape), np.uint8)\n"
        "    labels = np.arange(4)\n"
        "    result = backend.train(task, backend.initial_weights(task), images, labels, epochs=1, batch_size=2)\n"
        "    backend.evaluate(task, result.weights, images, labels)\n"
        "heavy = sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
