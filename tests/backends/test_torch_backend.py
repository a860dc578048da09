"""The PyTorch backend: weight layout, training, evaluation, determinism and import hygiene."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from edgefld.backends.base import load_backend
from edgefld.errors import BackendUnavailable
from edgefld.tasks import TASKS, Task, get_task

torch = pytest.importorskip("torch")

# These import torch: after the skip.
from edgefld.backends.torch_backend import MomentumSGD, TorchBackend, create_backend, model_inputs  # noqa: E402
from edgefld.backends.torch_models import build_model, get_weights, set_weights, weight_names  # noqa: E402

DIGITS, MNIST, CIFAR10 = get_task("digits"), get_task("mnist"), get_task("cifar10")

# The layouts other backends must reproduce, name and shape, in order.
EXPECTED_LAYOUT = {
    "digits": [
        ("fc1.weight", (64, 64)), ("fc1.bias", (64,)),
        ("fc2.weight", (10, 64)), ("fc2.bias", (10,)),
    ],
    "mnist": [
        ("conv1.weight", (6, 1, 5, 5)), ("conv1.bias", (6,)),
        ("conv2.weight", (16, 6, 5, 5)), ("conv2.bias", (16,)),
        ("fc1.weight", (120, 256)), ("fc1.bias", (120,)),
        ("fc2.weight", (84, 120)), ("fc2.bias", (84,)),
        ("fc3.weight", (10, 84)), ("fc3.bias", (10,)),
    ],
}
MOBILENET_WEIGHT_COUNT = 210  # 244 state_dict entries less 34 num_batches_tracked


@pytest.fixture(scope="module")
def backend() -> TorchBackend:
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


# --- weight layout ---------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS.values(), ids=TASKS)
def test_weights_follow_state_dict_order_without_batch_counters(backend, task):
    names = weight_names(task)
    weights = backend.initial_weights(task, seed=0)
    model = build_model(task)
    state = {name: tensor for name, tensor in model.state_dict().items() if not name.endswith("num_batches_tracked")}
    assert names == list(state) == weight_names(task)
    assert [w.shape for w in weights] == [tuple(state[name].shape) for name in names]
    assert all(w.dtype == np.float32 for w in weights)


@pytest.mark.parametrize("task_name", EXPECTED_LAYOUT)
def test_small_model_layouts(backend, task_name):
    task = get_task(task_name)
    weights = backend.initial_weights(task)
    assert list(zip(weight_names(task), (w.shape for w in weights), strict=True)) == EXPECTED_LAYOUT[task_name]


def test_mobilenet_layout():
    names = weight_names(CIFAR10)
    assert len(names) == MOBILENET_WEIGHT_COUNT
    assert names[:5] == [
        "features.0.0.weight", "features.0.1.weight", "features.0.1.bias",
        "features.0.1.running_mean", "features.0.1.running_var",
    ]
    assert names[-4:] == ["classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias"]


@pytest.mark.parametrize("task", TASKS.values(), ids=TASKS)
def test_weights_round_trip_exactly(task):
    rng = np.random.default_rng(1)
    model = build_model(task)
    weights = [rng.standard_normal(w.shape).astype(np.float32) for w in get_weights(model)]
    set_weights(task, model, weights)
    back = get_weights(model)
    assert all(np.array_equal(a, b) for a, b in zip(weights, back, strict=True))
    # The arrays handed out are the caller's own: changing the model leaves them alone.
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert np.array_equal(back[0], weights[0])


def test_trained_weights_are_not_changed_by_later_training(backend):
    images, labels = learnable_batch(DIGITS, per_class=2)
    first = backend.train(DIGITS, backend.initial_weights(DIGITS), images, labels, epochs=1, batch_size=8)
    snapshot = [w.copy() for w in first.weights]
    backend.train(DIGITS, first.weights, images, labels, epochs=1, batch_size=8)
    assert all(np.array_equal(a, b) for a, b in zip(first.weights, snapshot, strict=True))


# --- bad weights -----------------------------------------------------------------------------


def test_wrong_weight_count_is_rejected(backend):
    weights = backend.initial_weights(MNIST)
    with pytest.raises(ValueError, match=r"mnist \(model lenet5\) has 10 weight arrays; got 9"):
        backend.evaluate(MNIST, weights[:-1], *learnable_batch(MNIST, 1))


def test_wrong_weight_shape_names_index_and_shapes(backend):
    weights = backend.initial_weights(MNIST)
    weights[4] = np.zeros((120, 400), np.float32)
    with pytest.raises(ValueError, match=r"weight 4 \(fc1\.weight\): expected shape \(120, 256\), got \(120, 400\)"):
        backend.train(MNIST, weights, *learnable_batch(MNIST, 1), epochs=1, batch_size=4)


def test_wrong_weight_dtype_is_rejected(backend):
    weights = backend.initial_weights(DIGITS)
    weights[1] = weights[1].astype(np.float64)
    with pytest.raises(ValueError, match=r"weight 1 \(fc1\.bias\): expected dtype float32, got float64"):
        backend.evaluate(DIGITS, weights, *learnable_batch(DIGITS, 1))


def test_rejected_weights_leave_the_model_untouched():
    model = build_model(DIGITS)
    before = get_weights(model)
    bad = [np.ones_like(w) for w in before]
    bad[-1] = np.ones((11,), np.float32)
    with pytest.raises(ValueError, match="weight 3"):
        set_weights(DIGITS, model, bad)
    assert all(np.array_equal(a, b) for a, b in zip(before, get_weights(model), strict=True))


def test_bad_inputs_are_rejected(backend):
    weights = backend.initial_weights(DIGITS)
    images, labels = learnable_batch(DIGITS, 1)
    with pytest.raises(ValueError, match=r"uint8 images of shape N x \(8, 8, 1\); got float32"):
        backend.evaluate(DIGITS, weights, images.astype(np.float32), labels)
    with pytest.raises(ValueError, match=r"got uint8 \(10, 8, 8\)"):
        backend.evaluate(DIGITS, weights, images[..., 0], labels)
    with pytest.raises(ValueError, match=r"classes 0\.\.9; labels range 0\.\.10"):
        backend.train(DIGITS, weights, images, np.where(labels == 9, 10, labels), epochs=1, batch_size=4)


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


def test_training_lowers_mobilenet_training_loss(backend):
    images, labels = learnable_batch(CIFAR10, per_class=2)
    weights = backend.initial_weights(CIFAR10)
    first = backend.train(CIFAR10, weights, images, labels, epochs=1, batch_size=10)
    later = backend.train(CIFAR10, first.weights, images, labels, epochs=4, batch_size=10)
    assert later.loss < first.loss


def test_mobilenet_trains_on_four_images_and_a_lone_trailing_one(backend):
    images, labels = learnable_batch(CIFAR10, per_class=1)
    weights = backend.initial_weights(CIFAR10)
    # 5 images in batches of 4: the fifth alone would make BatchNorm fail on its 1x1 maps.
    result = backend.train(CIFAR10, weights, images[:5], labels[:5], epochs=1, batch_size=4)
    assert np.isfinite(result.loss) and result.num_examples == 5
    assert not np.array_equal(result.weights[0], weights[0])
    assert [w.shape for w in result.weights] == [w.shape for w in weights]
    evaluation = backend.evaluate(CIFAR10, result.weights, images[:4], labels[:4])
    assert 0.0 <= evaluation.accuracy <= 1.0 and np.isfinite(evaluation.loss)


def test_training_on_the_shipped_digits(backend, tmp_path):
    from edgefld.data import load_partition, load_test

    partition = load_partition("digits", tmp_path, cid=0, num_partitions=1)
    test_images, test_labels = load_test("digits", tmp_path)
    weights = backend.initial_weights(DIGITS)
    before = backend.evaluate(DIGITS, weights, test_images, test_labels)
    result = backend.train(DIGITS, weights, partition.train_x, partition.train_y, epochs=10, batch_size=32)
    after = backend.evaluate(DIGITS, result.weights, test_images, test_labels)
    # 10 epochs reach about 0.93-0.95 test accuracy whatever the seed.
    assert after.loss < before.loss / 4
    assert after.accuracy > 0.85 and after.num_examples == len(test_labels)


def test_evaluate_matches_a_hand_computation(backend):
    # mean/std away from 0/1, so the normalisation is part of what is checked.
    task = dataclasses.replace(DIGITS, mean=(0.25,), std=(0.5,))
    rng = np.random.default_rng(7)
    weights = [rng.standard_normal(w.shape).astype(np.float32) for w in backend.initial_weights(task)]
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


def test_inputs_are_channel_first_and_normalised_per_channel():
    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3)).astype(np.uint8)
    inputs = model_inputs(CIFAR10, images, torch.device("cpu"))
    expected = (images / 255.0 - np.array(CIFAR10.mean)) / np.array(CIFAR10.std)
    assert inputs.dtype == torch.float32 and inputs.shape == (2, 3, 32, 32) and inputs.is_contiguous()
    np.testing.assert_allclose(inputs.numpy(), expected.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)


def test_momentum_sgd_matches_torch_optim_sgd():
    torch.manual_seed(0)
    ours, reference = build_model(MNIST), build_model(MNIST)
    reference.load_state_dict(ours.state_dict())
    our_optimizer = MomentumSGD(ours.parameters(), lr=0.01, momentum=0.9)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):
        inputs, targets = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
        for model, optimizer in ((ours, our_optimizer), (reference, reference_optimizer)):
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    for ours_weight, reference_weight in zip(get_weights(ours), get_weights(reference), strict=True):
        np.testing.assert_array_equal(ours_weight, reference_weight)


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS.values(), ids=TASKS)
def test_same_seed_same_weights(backend, task):
    first, again, other = (backend.initial_weights(task, seed=s) for s in (5, 5, 6))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    images, labels = learnable_batch(task, per_class=1)
    runs = [backend.train(task, first, images, labels, epochs=1, batch_size=4, seed=s) for s in (11, 11, 12)]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0].weights, runs[1].weights, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0].weights, runs[2].weights, strict=True))


def test_backend_leaves_global_random_state_alone(backend):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    weights = backend.initial_weights(DIGITS, seed=1)
    backend.train(DIGITS, weights, *learnable_batch(DIGITS, 1), epochs=1, batch_size=4, seed=1)
    assert torch.equal(torch.get_rng_state(), state)


# --- construction ----------------------------------------------------------------------------


def test_threads_setting_is_applied():
    original = torch.get_num_threads()
    try:
        created = load_backend("torch", device="cpu", threads=1)
        assert (created.name, created.device) == ("torch", "cpu")
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads is 0"):
            create_backend(threads=0)
    finally:
        torch.set_num_threads(original)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_unavailable():
    with pytest.raises(BackendUnavailable, match="device cuda: .* sees no usable CUDA GPU; use device cpu"):
        create_backend("cuda")


def test_unknown_device_is_unavailable():
    with pytest.raises(BackendUnavailable, match='no device "tpu"; devices: cpu, cuda'):
        create_backend("tpu")


def test_unknown_model_is_unavailable():
    with pytest.raises(BackendUnavailable, match='cannot build model "resnet9" of task "mnist"'):
        build_model(dataclasses.replace(MNIST, model="resnet9"))


# --- imports ---------------------------------------------------------------------------------


def run_python(code: str) -> None:
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr


def test_backend_protocol_does_not_import_torch():
    run_python("import sys, edgefld.backends.base; assert 'torch' not in sys.modules, 'torch imported'")


def test_small_models_train_without_torchvision_or_dynamo():
    # torch._dynamo is what torch.optim would pull in (see MomentumSGD): ~150 MiB on a Pi.
    run_python(
        "import sys\n"
        "import numpy as np\n"
        "from edgefld.backends.base import load_backend\n"
        "from edgefld.tasks import get_task\n"
        "backend = load_backend('torch')\n"
        "for name in ('mnist', 'digits'):\n"
        "    task = get_task(name)\n"
        "    images = np.zeros((4, *task.input_shape), np.uint8)\n"
        "    labels = np.arange(4)\n"
        "    result = backend.train(task, backend.initial_weights(task), images, labels, epochs=1, batch_size=2)\n"
        "    backend.evaluate(task, result.weights, images, labels)\n"
        "assert 'torchvision' not in sys.modules, 'torchvision imported'\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo imported'\n"
    )
