"""The PyTorch model each task names, and the canonical order its weights travel in.

Weights leave and enter a model as a list of float32 numpy arrays in the
model's ``state_dict()`` order (each module's parameters, then its buffers,
modules in registration order) with BatchNorm's ``num_batches_tracked``
counters left out; ``weight_names`` lists that order by name, and other
backends mirror it so that any backend can read another's weights.

torchvision is imported only when a model from it is built: a board training
mnist or digits never pays for importing it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional

from edgefld.backends.base import Weights
from edgefld.backends.layout import check_weights
from edgefld.errors import BackendUnavailable
from edgefld.tasks import Task

# BatchNorm's step counter: an integer that averaging across clients would turn
# into nonsense, and which nothing reads while the layer has a fixed momentum
# (every BatchNorm here does), so it never travels with the weights.
NUM_BATCHES_TRACKED = "num_batches_tracked"


class LeNet5(nn.Module):
    """The seed's MNIST CNN (Flower's embedded-devices example), for 28x28 inputs.

    The attribute names are the seed's, so its weight names (``conv1.weight``,
    ... ``fc3.bias``) and order are unchanged.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)  # 28 -conv-> 24 -pool-> 12 -conv-> 8 -pool-> 4
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(functional.relu(self.conv1(x)))
        x = self.pool(functional.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = functional.relu(self.fc1(x))
        x = functional.relu(self.fc2(x))
        logits: torch.Tensor = self.fc3(x)
        return logits


class DigitsMLP(nn.Module):
    """8x8 digits: the 64 pixels -> 64 hidden units (ReLU) -> class logits."""

    def __init__(self, num_pixels: int, num_classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(num_pixels, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.fc2(functional.relu(self.fc1(torch.flatten(x, 1))))
        return logits


def _mobilenet_v3_small(task: Task) -> nn.Module:
    # Imported here, not at the top of the module: see the module docstring.
    from torchvision.models import mobilenet_v3_small

    # No weights argument: randomly initialised, nothing downloaded. Used on
    # 32x32 CIFAR images as they are, as the seed did.
    model: nn.Module = mobilenet_v3_small(num_classes=task.num_classes)
    return model


def _lenet5(task: Task) -> nn.Module:
    return LeNet5(in_channels=task.input_shape[2], num_classes=task.num_classes)


def _digits_mlp(task: Task) -> nn.Module:
    height, width, channels = task.input_shape
    return DigitsMLP(num_pixels=height * width * channels, num_classes=task.num_classes)


# Task.model -> builder. Adding a model is adding a row here.
MODEL_BUILDERS: dict[str, Callable[[Task], nn.Module]] = {
    "mobilenet_v3_small": _mobilenet_v3_small,
    "lenet5": _lenet5,
    "digits_mlp": _digits_mlp,
}


def build_model(task: Task) -> nn.Module:
    """A new, randomly initialised model for ``task`` (from torch's global generator)."""
    builder = MODEL_BUILDERS.get(task.model)
    if builder is None:
        raise BackendUnavailable(
            f'the torch backend cannot build model "{task.model}" of task "{task.name}"; '
            f"it builds: {', '.join(MODEL_BUILDERS)}"
        )
    return builder(task)


def weight_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The model's weights in canonical order, as (name, tensor sharing the model's storage)."""
    return [
        (name, tensor)
        for name, tensor in model.state_dict().items()
        if name.rpartition(".")[2] != NUM_BATCHES_TRACKED
    ]


def weight_names(task: Task) -> list[str]:
    """The canonical order of ``task``'s weights: ``state_dict()`` order without ``num_batches_tracked``.

    For example digits: ``fc1.weight`` (64, 64), ``fc1.bias`` (64,),
    ``fc2.weight`` (10, 64), ``fc2.bias`` (10,).
    """
    # On the meta device: only names and shapes are wanted, so no memory is
    # allocated and no random numbers are drawn.
    with torch.device("meta"):
        model = build_model(task)
    return [name for name, _ in weight_tensors(model)]


def get_weights(model: nn.Module) -> Weights:
    """The model's weights in canonical order, as float32 numpy arrays of their own."""
    # copy=True: on the CPU .numpy() would otherwise share the model's storage, and
    # the model's next training would change arrays already handed out.
    return [tensor.detach().to("cpu", copy=True).numpy() for _, tensor in weight_tensors(model)]


def set_weights(task: Task, model: nn.Module, weights: Weights) -> None:
    """Copy ``weights`` (canonical order) into ``model``; all are checked before any is copied.

    A wrong count, shape or dtype is a ValueError naming the first offending weight,
    so a mismatched sender never leaves the model half overwritten.
    """
    check_weights(task, weights)
    targets = weight_tensors(model)
    with torch.no_grad():
        for (_, target), array in zip(targets, weights, strict=True):
            target.copy_(torch.as_tensor(array))
