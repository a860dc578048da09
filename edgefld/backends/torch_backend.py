"""The PyTorch training backend: SGD on the task's model, on the CPU or a CUDA GPU.

Images arrive as the store keeps them (uint8, N x H x W x C) and are turned
into normalised float32 N x C x H x W tensors once per call, as one
whole-array operation on the training device. Weights enter and leave as
float32 numpy arrays in the order ``torch_models.weight_names`` documents.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from edgefld.backends.base import (
    EvalResult,
    TrainResult,
    Weights,
    batch_slices,
    check_batch_size,
    check_images,
    check_labels,
    check_proximal_mu,
    check_training_call,
    shuffle_orders,
)
from edgefld.backends.torch_models import build_model, get_weights, set_weights
from edgefld.errors import BackendUnavailable
from edgefld.tasks import Task

DEVICES = ("cpu", "cuda")


def create_backend(device: str = "cpu", threads: int | None = None) -> TorchBackend:
    """The torch backend on ``device``; ``threads`` sets torch's intra-op CPU threads for the process."""
    if device not in DEVICES:
        raise BackendUnavailable(f'the torch backend has no device "{device}"; devices: {", ".join(DEVICES)}')
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(
            f"device cuda: this torch ({torch.__version__}, CUDA {torch.version.cuda or 'none'}) sees no "
            "usable CUDA GPU; use device cpu, or on a Jetson install NVIDIA's JetPack build of torch"
        )
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads is {threads}: it must be at least 1")
        torch.set_num_threads(threads)
    return TorchBackend(device)


class TorchBackend:
    name = "torch"

    def __init__(self, device: str) -> None:
        self.device = device
        self._device = torch.device(device)
        # One model per task model, reused across rounds: every call overwrites all
        # of its weights, so only the (costly, for MobileNet) construction is saved.
        self._models: dict[str, nn.Module] = {}

    def initial_weights(self, task: Task, seed: int = 0) -> Weights:
        # Built on the CPU, so the same seed gives the same weights on every device.
        with _seeded(seed, torch.device("cpu")):
            model = build_model(task)
        return get_weights(model)

    def train(
        self,
        task: Task,
        weights: Weights,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        epochs: int,
        batch_size: int,
        seed: int = 0,
        proximal_mu: float = 0.0,
    ) -> TrainResult:
        check_training_call(epochs, batch_size)
        check_proximal_mu(proximal_mu)
        model = self._model_with(task, weights)
        # FedProx: the global model this round started from, which the proximal term pulls towards.
        anchors = [p.detach().clone() for p in model.parameters()] if proximal_mu else []
        inputs = model_inputs(task, images, self._device)
        targets = model_targets(task, labels, len(images), self._device)
        num_examples = len(images)
        optimizer = MomentumSGD(model.parameters(), lr=task.learning_rate, momentum=task.momentum)
        model.train()
        start = time.perf_counter()
        with _seeded(seed, self._device):  # dropout (MobileNetV3's classifier) draws from it
            # The order every backend trains in (base.shuffle_orders): drawn by numpy on
            # the host, so it is the same whatever the device or framework.
            for epoch_order in shuffle_orders(num_examples, epochs, seed):
                order = torch.from_numpy(epoch_order).to(self._device)
                # Summed on the device: reading each batch's loss would stall a GPU every step.
                loss_sum = torch.zeros((), dtype=torch.float64, device=self._device)
                for batch in (order[bounds] for bounds in batch_slices(num_examples, batch_size)):
                    model.zero_grad(set_to_none=True)
                    loss = functional.cross_entropy(model(inputs[batch]), targets[batch])
                    torch.autograd.backward(loss)  # typed, unlike Tensor.backward; the same call
                    if anchors:
                        add_proximal_gradient(model, anchors, proximal_mu)
                    optimizer.step()
                    loss_sum += loss.detach() * len(batch)
            last_epoch_loss = loss_sum.item() / num_examples  # .item() also waits for the GPU to finish
        seconds = time.perf_counter() - start
        return TrainResult(get_weights(model), last_epoch_loss, num_examples, seconds)

    def evaluate(
        self, task: Task, weights: Weights, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 256
    ) -> EvalResult:
        check_batch_size(batch_size)
        model = self._model_with(task, weights)
        model.eval()
        with torch.inference_mode():
            inputs = model_inputs(task, images, self._device)
            targets = model_targets(task, labels, len(images), self._device)
            start = time.perf_counter()
            loss_sum = torch.zeros((), dtype=torch.float64, device=self._device)
            correct = torch.zeros((), dtype=torch.int64, device=self._device)
            for first in range(0, len(inputs), batch_size):
                logits = model(inputs[first : first + batch_size])
                batch_targets = targets[first : first + batch_size]
                loss_sum += functional.cross_entropy(logits, batch_targets, reduction="sum")
                correct += (logits.argmax(dim=1) == batch_targets).sum()
            num_examples = len(images)
            loss, accuracy = loss_sum.item() / num_examples, correct.item() / num_examples
            seconds = time.perf_counter() - start
        return EvalResult(loss, accuracy, num_examples, seconds)

    def predict(self, task: Task, weights: Weights, images: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
        check_batch_size(batch_size)
        model = self._model_with(task, weights)
        model.eval()
        with torch.inference_mode():
            inputs = model_inputs(task, images, self._device)
            logits = [model(inputs[first : first + batch_size]) for first in range(0, len(inputs), batch_size)]
            return torch.cat(logits).cpu().numpy()

    def _model_with(self, task: Task, weights: Weights) -> nn.Module:
        """The task's model on this device, holding ``weights``."""
        model = self._models.get(task.model)
        if model is None:
            model = build_model(task).to(self._device)
            self._models[task.model] = model
        set_weights(task, model, weights)
        return model


def add_proximal_gradient(model: torch.nn.Module, anchors: list[torch.Tensor], proximal_mu: float) -> None:
    """FedProx: the gradient of mu/2 * ||w - w_global||^2, mu * (w - w_global), as every backend adds it."""
    with torch.no_grad():
        for parameter, anchor in zip(model.parameters(), anchors, strict=True):
            if parameter.grad is not None:
                parameter.grad.add_(parameter - anchor, alpha=proximal_mu)


class MomentumSGD:
    """SGD with momentum, computed exactly as ``torch.optim.SGD(params, lr, momentum)`` does
    (no dampening, Nesterov or weight decay): v = momentum * v + grad; p -= lr * v.

    Not torch.optim.SGD itself because constructing any torch.optim optimizer imports
    torch._dynamo: about 900 modules, 150 MiB of RSS and seconds of start-up (torch
    2.14, x86), which a 512 MB Raspberry Pi cannot spare for a two-line update.
    """

    def __init__(self, parameters: Iterable[nn.Parameter], lr: float, momentum: float) -> None:
        self._parameters: list[torch.Tensor] = [parameter for parameter in parameters if parameter.requires_grad]
        self._velocities = [torch.zeros_like(parameter) for parameter in self._parameters]
        self._lr = lr
        self._momentum = momentum

    @torch.no_grad()
    def step(self) -> None:
        # The _foreach_ ops are what torch.optim uses too: one kernel per step on a GPU,
        # not one per parameter tensor.
        # Every trainable parameter of edgefl's models takes part in the loss: backward() gave each one a gradient.
        gradients = cast(list[torch.Tensor], [parameter.grad for parameter in self._parameters])
        torch._foreach_mul_(self._velocities, self._momentum)
        torch._foreach_add_(self._velocities, gradients)
        torch._foreach_add_(self._parameters, self._velocities, alpha=-self._lr)


def model_inputs(task: Task, images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 N x H x W x C -> float32 N x C x H x W on ``device``, scaled to 0..1 and normalised per channel."""
    check_images(task, images)
    # Moved as uint8 (a quarter of float32's bytes), converted on the device.
    pixels = torch.as_tensor(images).to(device)
    inputs = pixels.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
    mean = torch.tensor(task.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(task.std, device=device).view(1, -1, 1, 1)
    return inputs.div_(task.pixel_max).sub_(mean).div_(std)


def model_targets(task: Task, labels: np.ndarray, num_images: int, device: torch.device) -> torch.Tensor:
    """Integer class labels -> int64 tensor on ``device``, as cross-entropy takes them."""
    check_labels(task, labels, num_images)
    return torch.as_tensor(labels.astype(np.int64)).to(device)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators for the block, then restore them: a library call
    must not reseed its caller's randomness."""
    cuda_devices: list[int] = []
    if device.type == "cuda":
        cuda_devices = [torch.cuda.current_device() if device.index is None else device.index]
    with torch.random.fork_rng(devices=cuda_devices):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        yield
