"""The TensorFlow backend: weight layout, bad input, training, evaluation, determinism and imports.

Whether it computes what the torch backend computes is test_agreement.py's business.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from edgefld.backends.layout import task_layout
from edgefld.errors import BackendUnavailable
from edgefld.tasks import TASKS, Task, get_task

tf = pytest.importorskip("tensorflow")

from edgefld.backends.tf_backend import TFBackend, create_backend  # noqa: E402 - imports TensorFlow: after the skip
from edgefld.backends.tf_models import build_model, make_divisible  # noqa: E402 - likewise

DIGITS, MNIST, CIFAR10 = get_task("digits"), get_task("mnist"), get_task("cifar10")


@pytest.fixture(scope="module")
def backend() -> TFBackend:
    return create_backend("cpu")


def learnable_batch(task: Task, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images in the task's stored layout whose class is a fixed pixel pattern plus a little noise."""
    rng = np.random.default_rng(seed)
    pixel_max = int(task.pixel_max)
    templates = rng.integers(0, pixel_max + 1, size=(task.num_classes, *task.input_shape))
    labels = np.repeat(np.arange(task.num_classes), per_class)
    noise = rng.integers(-pixel_max // 8, pixel_max // 8 + 1, size=(len(labels), *task.input_shape))
    images = np.clip(templates[labels] + noise, 0, pixel_max).astype(np.uint8)
    order = rng.permutation(len(labels))
    return images[order], labels[order].astype(np.uint8)


def random_weights(task: Task, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(spec.shape).astype(np.float32) for spec in task_layout(task)]


# --- weight layout ---------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS.values(), ids=TASKS)
def test_initial_weights_follow_the_canonical_layout(backend, task):
    weights = backend.initial_weights(task, seed=0)
    assert [w.shape for w in weights] == [spec.shape for spec in task_layout(task)]
    assert all(w.dtype == np.float32 and w.flags.c_contiguous for w in weights)


@pytest.mark.parametrize("task", TASKS.values(), ids=TASKS)
def test_weights_round_trip_exactly(task):
    model = build_model(task)
    weights = random_weights(task, seed=1)
    model.set_weights(weights)
    back = model.get_weights()
    again = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(weights, back, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(back, again, strict=True))
    # The arrays handed out are the caller's own: changing the model leaves them alone.
    model.slots[0].variable.assign_add(tf.ones(model.slots[0].variable.shape))
    assert np.array_equal(back[0], weights[0])


def test_keras_kernels_hold_the_canonical_arrays_transposed():
    # Each conversion by the Keras layout it targets: conv HWIO, depthwise (kh, kw, C, 1), dense (in, out).
    model = build_model(CIFAR10)
    weights = random_weights(CIFAR10, seed=2)
    model.set_weights(weights)
    slots = {slot.name: slot.variable.numpy() for slot in model.slots}
    canonical = {spec.name: array for spec, array in zip(task_layout(CIFAR10), weights, strict=True)}
    stem = canonical["features.0.0.weight"]  # (16, 3, 3, 3) OIHW
    assert np.array_equal(slots["features.0.0.weight"][1, 2, 0, 5], stem[5, 0, 1, 2])
    depthwise = canonical["features.1.block.0.0.weight"]  # (16, 1, 3, 3)
    assert np.array_equal(slots["features.1.block.0.0.weight"][2, 0, 7, 0], depthwise[7, 0, 2, 0])
    dense = canonical["classifier.3.weight"]  # (10, 1024)
    assert np.array_equal(slots["classifier.3.weight"][100, 3], dense[3, 100])


def test_mobilenet_squeeze_channels_are_torchvisions():
    # _make_divisible(expanded // 4, 8): 16 -> 8, 96 -> 24, 240 -> 64, 120 -> 32, 144 -> 40, 288 -> 72, 576 -> 144
    assert [make_divisible(c // 4) for c in (16, 96, 240, 120, 144, 288, 576)] == [8, 24, 64, 32, 40, 72, 144]


@pytest.mark.parametrize("task", TASKS.values(), ids=TASKS)
def test_same_seed_same_initial_weights(backend, task):
    first, again, other = (backend.initial_weights(task, seed=s) for s in (5, 5, 6))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])


def test_initial_weights_are_drawn_as_torch_draws_them(backend):
    # Not the same numbers as torch (another generator), the same distributions: a federation
    # started from a TensorFlow board's weights trains like one started from a torch board's.
    specs = {spec.name: i for i, spec in enumerate(task_layout(CIFAR10))}
    weights = backend.initial_weights(CIFAR10, seed=0)
    stem = weights[specs["features.0.0.weight"]]  # kaiming normal, fan_out = 16 * 3 * 3
    assert stem.std() == pytest.approx(np.sqrt(2 / 144), rel=0.15)
    assert np.all(weights[specs["features.0.1.running_var"]] == 1) and np.all(weights[specs["features.0.1.bias"]] == 0)
    assert weights[specs["classifier.3.weight"]].std() == pytest.approx(0.01, rel=0.1)
    lenet = backend.initial_weights(MNIST, seed=0)
    assert np.abs(lenet[4]).max() <= 1 / np.sqrt(256) and np.abs(lenet[4]).max() > 0.9 / np.sqrt(256)


# --- bad weights and inputs ------------------------------------------------------------------


def test_wrong_weight_count_is_rejected(backend):
    weights = backend.initial_weights(MNIST)
    with pytest.raises(ValueError, match=r"mnist \(model lenet5\) has 10 weight arrays; got 9"):
        backend.evaluate(MNIST, weights[:-1], *learnable_batch(MNIST, 1))


def test_wrong_weight_shape_names_index_and_shapes(backend):
    weights = backend.initial_weights(MNIST)
    # fc1 in Keras's (in, out) layout: the canonical layout is (out, in).
    weights[4] = np.ascontiguousarray(weights[4].T)
    with pytest.raises(ValueError, match=r"weight 4 \(fc1\.weight\): expected shape \(120, 256\), got \(256, 120\)"):
        backend.train(MNIST, weights, *learnable_batch(MNIST, 1), epochs=1, batch_size=4)


def test_wrong_weight_dtype_is_rejected(backend):
    weights = backend.initial_weights(DIGITS)
    weights[1] = weights[1].astype(np.float64)
    with pytest.raises(ValueError, match=r"weight 1 \(fc1\.bias\): expected dtype float32, got float64"):
        backend.predict(DIGITS, weights, learnable_batch(DIGITS, 1)[0])


def test_rejected_weights_leave_the_model_untouched():
    model = build_model(DIGITS)
    good = random_weights(DIGITS, seed=3)
    model.set_weights(good)
    bad = [np.ones_like(w) for w in good]
    bad[-1] = np.ones((11,), np.float32)
    with pytest.raises(ValueError, match="weight 3"):
        model.set_weights(bad)
    assert all(np.array_equal(a, b) for a, b in zip(good, model.get_weights(), strict=True))


def test_bad_inputs_are_rejected(backend):
    weights = backend.initial_weights(DIGITS)
    images, labels = learnable_batch(DIGITS, 1)
    with pytest.raises(ValueError, match=r"uint8 images of shape N x \(8, 8, 1\); got float32"):
        backend.evaluate(DIGITS, weights, images.astype(np.float32), labels)
    with pytest.raises(ValueError, match=r"got uint8 \(10, 8, 8\)"):
        backend.predict(DIGITS, weights, images[..., 0])
    with pytest.raises(ValueError, match=r"no images given"):
        backend.predict(DIGITS, weights, images[:0])
    with pytest.raises(ValueError, match=r"classes 0\.\.9; labels range 0\.\.10"):
        backend.train(DIGITS, weights, images, np.where(labels == 9, 10, labels), epochs=1, batch_size=4)
    with pytest.raises(ValueError, match=r"expected 10 integer labels \(one per image\); got float64 \(10,\)"):
        backend.evaluate(DIGITS, weights, images, labels.astype(np.float64))
    with pytest.raises(ValueError, match=r"expected 10 integer labels"):
        backend.evaluate(DIGITS, weights, images, labels[:-1])
    with pytest.raises(ValueError, match=r"epochs \(0\) and batch_size \(4\) must be at least 1"):
        backend.train(DIGITS, weights, images, labels, epochs=0, batch_size=4)


# --- training and evaluation -----------------------------------------------------------------


@pytest.mark.parametrize("task", [DIGITS, MNIST], ids=["digits", "mnist"])
def test_training_learns_a_learnable_batch(backend, task):
    images, labels = learnable_batch(task, per_class=10)
    weights = backend.initial_weights(task, seed=3)
    before = backend.evaluate(task, weights, images, labels)
    result = backend.train(task, weights, images, labels, epochs=15, batch_size=10, seed=3)
    after = backend.evaluate(task, result.weights, images, labels)
    assert result.num_examples == len(images) and result.seconds > 0
    assert after.loss < 0.5 * before.loss
    assert after.accuracy >= 0.9


def test_training_on_the_shipped_digits(backend, tmp_path):
    from edgefld.data import load_partition, load_test

    partition = load_partition("digits", tmp_path, cid=0, num_partitions=1)
    test_images, test_labels = load_test("digits", tmp_path)
    weights = backend.initial_weights(DIGITS)
    before = backend.evaluate(DIGITS, weights, test_images, test_labels)
    result = backend.train(DIGITS, weights, partition.train_x, partition.train_y, epochs=10, batch_size=32)
    after = backend.evaluate(DIGITS, result.weights, test_images, test_labels)
    # As the torch backend: 10 epochs reach about 0.93-0.95 test accuracy.
    assert after.loss < before.loss / 4
    assert after.accuracy > 0.85 and after.num_examples == len(test_labels)


def test_mobilenet_trains_on_four_images_and_a_lone_trailing_one(backend):
    images, labels = learnable_batch(CIFAR10, per_class=1)
    weights = backend.initial_weights(CIFAR10)
    # 5 images in batches of 4: the fifth joins the first batch, as in the torch backend.
    result = backend.train(CIFAR10, weights, images[:5], labels[:5], epochs=2, batch_size=4)
    assert np.isfinite(result.loss) and result.num_examples == 5
    names = [spec.name for spec in task_layout(CIFAR10)]
    changed = {name for name, a, b in zip(names, result.weights, weights, strict=True) if not np.array_equal(a, b)}
    # Trainable weights and BatchNorm running statistics all move.
    assert {"features.0.0.weight", "features.0.1.running_mean", "features.0.1.running_var",
            "classifier.3.weight"} <= changed
    evaluation = backend.evaluate(CIFAR10, result.weights, images[:4], labels[:4])
    assert 0.0 <= evaluation.accuracy <= 1.0 and np.isfinite(evaluation.loss)


def test_evaluate_and_predict_match_a_hand_computation(backend):
    # mean/std away from 0/1, so the normalisation is part of what is checked; the backend
    # has already compiled DIGITS' model, whose normalisation must not be reused.
    backend.evaluate(DIGITS, backend.initial_weights(DIGITS), *learnable_batch(DIGITS, 1))
    task = dataclasses.replace(DIGITS, mean=(0.25,), std=(0.5,))
    rng = np.random.default_rng(7)
    weights = random_weights(task, seed=7)
    images = rng.integers(0, 17, size=(5, 8, 8, 1)).astype(np.uint8)
    labels = np.array([0, 3, 3, 9, 1])
    w1, b1, w2, b2 = (w.astype(np.float64) for w in weights)
    x = (images.reshape(5, 64) / 16.0 - 0.25) / 0.5
    logits = np.maximum(x @ w1.T + b1, 0) @ w2.T + b2
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected_loss = -log_softmax[np.arange(5), labels].mean()
    expected_accuracy = (logits.argmax(axis=1) == labels).mean()

    result = backend.evaluate(task, weights, images, labels, batch_size=2)
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)
    assert result.accuracy == expected_accuracy and result.num_examples == 5
    predicted = backend.predict(task, weights, images, batch_size=2)
    assert predicted.dtype == np.float32 and predicted.shape == (5, 10)
    np.testing.assert_allclose(predicted, logits, rtol=1e-4, atol=1e-4)


def test_lenet_flattens_channel_first_as_torch():
    # One fc1 input active at a time: canonical column c*16 + h*4 + w must read channel c, row h, column w.
    model = build_model(MNIST)
    keras_model = model.model
    import keras

    flatten_input = keras_model.get_layer("fc1.nchw").input
    probe = keras.Model(flatten_input, keras_model.get_layer("fc1.flatten").output)
    feature_map = np.zeros((1, 4, 4, 16), np.float32)  # NHWC
    feature_map[0, 2, 3, 5] = 1.0  # row 2, column 3, channel 5
    flat = probe(feature_map).numpy()[0]
    assert np.flatnonzero(flat).tolist() == [5 * 16 + 2 * 4 + 3]


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("task", [DIGITS, CIFAR10], ids=["digits", "cifar10"])
def test_same_seed_same_training(backend, task):
    # cifar10 includes dropout, whose masks follow the seed too.
    weights = backend.initial_weights(task, seed=5)
    images, labels = learnable_batch(task, per_class=1)
    runs = [backend.train(task, weights, images, labels, epochs=1, batch_size=4, seed=s) for s in (11, 11, 12)]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0].weights, runs[1].weights, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0].weights, runs[2].weights, strict=True))


# --- construction ----------------------------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess:
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr
    return completed


def test_threads_setting_is_applied_before_tensorflow_starts():
    run_python(
        "import tensorflow as tf\n"
        "from edgefld.backends.base import load_backend\n"
        "backend = load_backend('tensorflow', device='cpu', threads=2)\n"
        "assert (backend.name, backend.device) == ('tensorflow', 'cpu')\n"
        "assert tf.config.threading.get_intra_op_parallelism_threads() == 2\n"
        "assert tf.config.threading.get_inter_op_parallelism_threads() == 1\n"
        "load_backend('tensorflow', threads=2)  # the same setting again is fine\n"
        "tf.constant(1.0) + 1.0  # TensorFlow has started: its pools are fixed\n"
        "try:\n"
        "    load_backend('tensorflow', threads=1)\n"
        "except RuntimeError as exc:\n"
        "    assert 'already started in this process with 2 threads' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('changing threads after start-up was accepted')\n"
    )


def test_zero_threads_is_rejected():
    with pytest.raises(ValueError, match="threads is 0"):
        create_backend(threads=0)


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="this TensorFlow sees a GPU")
def test_cuda_without_a_gpu_is_unavailable():
    with pytest.raises(BackendUnavailable, match="device cuda: this TensorFlow .* sees no GPU; use device cpu"):
        create_backend("cuda")


def test_unknown_device_is_unavailable():
    with pytest.raises(BackendUnavailable, match='no device "tpu"; devices: cpu, cuda'):
        create_backend("tpu")


def test_unknown_model_is_unavailable():
    with pytest.raises(BackendUnavailable, match='tensorflow backend cannot build model "resnet9" of task "mnist"'):
        build_model(dataclasses.replace(MNIST, model="resnet9"))


def test_registered_and_imported_only_when_loaded():
    run_python(
        "import sys\n"
        "from edgefld.backends.base import BACKEND_MODULES, load_backend\n"
        "assert BACKEND_MODULES['tensorflow'] == 'edgefld.backends.tf_backend'\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
        "import edgefld.apps.client_app, edgefld.profile, edgefld.backends.catalog\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported before a backend was loaded'\n"
        "assert load_backend('tensorflow').name == 'tensorflow'\n"
        "assert 'torch' not in sys.modules, 'the tensorflow backend imported torch'\n"
    )
