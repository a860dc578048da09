"""The contract every training backend fulfils, in framework-free terms.

Weights travel as a list of numpy arrays in one canonical order per task (the
order of the model's parameters and buffers as defined by the task's model),
so the Flower apps, checkpoints and other backends never see a framework type.
Backends know nothing of Flower.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgefld.backends.catalog import BACKENDS
from edgefld.tasks import Task

Weights = list[np.ndarray]


@dataclass(frozen=True)
class TrainResult:
    weights: Weights
    loss: float  # mean training loss over the last epoch
    num_examples: int  # samples trained on per epoch
    seconds: float  # wall time of the training loop alone


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    num_examples: int
    seconds: float


class Backend(Protocol):
    name: str
    device: str

    def initial_weights(self, task: Task, seed: int = 0) -> Weights: ...

    def train(
        self,
        task: Task,
        weights: Weights,
        images: np.ndarray,  # uint8, N x H x W x C as stored
        labels: np.ndarray,
        *,
        epochs: int,
        batch_size: int,
        seed: int = 0,
        proximal_mu: float = 0.0,  # FedProx: adds mu/2 * ||w - weights||^2 to the loss (its gradient, exactly)
    ) -> TrainResult: ...

    def evaluate(
        self, task: Task, weights: Weights, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 256
    ) -> EvalResult: ...

    def predict(self, task: Task, weights: Weights, images: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
        """The model's logits (float32, N x classes) in evaluation mode: what backends compare."""
        ...


# What every backend checks before it computes, with the same messages whatever the framework:
# a bad call fails alike on every board, before any model or device is touched.


def check_training_call(epochs: int, batch_size: int) -> None:
    """train()'s counts: at least one epoch, batches of at least one sample."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs ({epochs}) and batch_size ({batch_size}) must be at least 1")


def check_proximal_mu(proximal_mu: float) -> None:
    """FedProx's mu: a finite number >= 0 (0: no proximal term)."""
    if not 0.0 <= proximal_mu < float("inf"):
        raise ValueError(f"proximal_mu ({proximal_mu}) must be a finite number >= 0")


def check_batch_size(batch_size: int) -> None:
    """evaluate()'s and predict()'s batch size."""
    if batch_size < 1:
        raise ValueError(f"batch_size ({batch_size}) must be at least 1")


def check_images(task: Task, images: np.ndarray) -> None:
    """Images as the store keeps them: a non-empty uint8 array, N x the task's input shape."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape[1:] != task.input_shape:
        raise ValueError(
            f"task {task.name} takes uint8 images of shape N x {task.input_shape}; "
            f"got {getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        )
    if len(images) == 0:
        raise ValueError(f"task {task.name}: no images given")


def check_labels(task: Task, labels: np.ndarray, num_images: int) -> None:
    """One integer class label per image, each one of the task's classes.

    Checked on the host: on a GPU an out-of-range label is a device-side assert (torch) or a
    NaN loss (TensorFlow's sparse_softmax_cross_entropy_with_logits), not an exception."""
    if labels.shape != (num_images,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"expected {num_images} integer labels (one per image); got {labels.dtype} {labels.shape}"
        )
    if labels.min() < 0 or labels.max() >= task.num_classes:
        raise ValueError(
            f"task {task.name} has classes 0..{task.num_classes - 1}; "
            f"labels range {labels.min()}..{labels.max()}"
        )


def check_inputs(task: Task, images: np.ndarray, labels: np.ndarray) -> None:
    """check_images, then check_labels."""
    check_images(task, images)
    check_labels(task, labels, len(images))


# Training order, shared by every backend so that the same seed trains the same
# batches everywhere: backends then agree over whole epochs, not only single steps.


def shuffle_orders(num_examples: int, epochs: int, seed: int) -> Iterator[np.ndarray]:
    """The sample order of each epoch of one train() call: a permutation per epoch from ``seed``."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        yield rng.permutation(num_examples)


def batch_slices(num_examples: int, batch_size: int) -> list[slice]:
    """Consecutive batches of an epoch's order; a lone trailing sample joins the batch before it.

    BatchNorm cannot train on a single sample whose feature map is 1x1 (MobileNetV3's
    last layers on 32x32 images), so no backend ever trains on a batch of one
    unless the whole epoch is one sample.
    """
    starts = list(range(0, num_examples, batch_size))
    if len(starts) > 1 and num_examples - starts[-1] == 1:
        starts.pop()
    return [slice(start, stop) for start, stop in zip(starts, [*starts[1:], num_examples], strict=True)]


# name -> module holding ``create_backend(device, threads) -> Backend``; imported only when chosen.
BACKEND_MODULES: dict[str, str] = {name: spec.module for name, spec in BACKENDS.items()}


def preload_backend(name: str) -> None:
    """Import the backend's module and its framework, creating nothing (no threads, no model).

    For a process that forks its ClientApps (edgefld.client.warm): each fork then starts with
    the framework already in memory, shared with its siblings until written to."""
    module = importlib.import_module(BACKEND_MODULES[name])
    preload = getattr(module, "preload", None)
    if preload is not None:
        preload()


def load_backend(name: str, device: str = "cpu", threads: int | None = None) -> Backend:
    module_name = BACKEND_MODULES.get(name)
    if module_name is None:
        from edgefld.errors import BackendUnavailable

        raise BackendUnavailable(f'backend "{name}" is not available in this build; available: '
                                 + ", ".join(BACKEND_MODULES))
    module = importlib.import_module(module_name)
    backend: Backend = module.create_backend(device=device, threads=threads)
    return backend
