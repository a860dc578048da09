"""The canonical weight layout of each model: the one list of arrays every backend reads and writes.

A PyTorch Jetson, a TensorFlow Pi 4 and a LiteRT Pi Zero train the same global
model only if they agree on what the arrays mean. The layout is PyTorch's (the
seed's models are torch models), written down as data in ``layouts/<model>.json``
so that a backend without torch can check what it sends and receives:

- order: the torch model's ``state_dict()`` order (each module's parameters, then
  its buffers, modules in registration order) without BatchNorm's
  ``num_batches_tracked`` counters;
- dtype: float32, every array;
- convolutions: OIHW (out channels, in channels per group, kernel height, kernel
  width); a depthwise convolution is (channels, 1, kh, kw);
- fully connected: (out features, in features); where a feature map is flattened
  into a fully connected layer, the flattening order is channel, row, column (NCHW);
- BatchNorm: ``weight`` (gamma), ``bias`` (beta), ``running_mean``, ``running_var``.

Backends whose framework lays weights out otherwise (Keras: HWIO kernels, (in, out)
dense kernels, NHWC flattening) convert at their boundary; nothing else ever sees
their internal layout. ``python -m edgefld.backends.layout`` (needs torch) rewrites
the JSON files from the torch models; a test checks they agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from edgefld.tasks import Task

DTYPE = np.float32


@dataclass(frozen=True)
class WeightSpec:
    name: str
    shape: tuple[int, ...]


@cache
def model_layout(model: str) -> tuple[WeightSpec, ...]:
    """The canonical weights of ``model`` (a ``Task.model`` name), in order."""
    try:
        text = resources.files("edgefld.backends").joinpath("layouts", f"{model}.json").read_text("utf-8")
    except FileNotFoundError:
        raise KeyError(f'no weight layout for model "{model}"') from None
    return tuple(WeightSpec(entry["name"], tuple(entry["shape"])) for entry in json.loads(text)["weights"])


def task_layout(task: Task) -> tuple[WeightSpec, ...]:
    return model_layout(task.model)


def check_weights(task: Task, weights: list[np.ndarray]) -> None:
    """Raise ValueError naming the first array that breaks ``task``'s layout (count, type, shape, dtype).

    Backends check before copying anything, so a mismatched sender never leaves a
    model half overwritten.
    """
    specs = task_layout(task)
    if len(weights) != len(specs):
        raise ValueError(
            f"task {task.name} (model {task.model}) has {len(specs)} weight arrays; got {len(weights)}"
        )
    for index, (spec, array) in enumerate(zip(specs, weights, strict=True)):
        if not isinstance(array, np.ndarray):
            raise ValueError(f"weight {index} ({spec.name}): expected a numpy array, got {type(array).__name__}")
        if array.shape != spec.shape:
            raise ValueError(f"weight {index} ({spec.name}): expected shape {spec.shape}, got {array.shape}")
        if array.dtype != DTYPE:
            raise ValueError(f"weight {index} ({spec.name}): expected dtype float32, got {array.dtype}")


def _write_layouts_from_torch() -> None:  # pragma: no cover - a maintainer's tool, needs torch
    from pathlib import Path

    import torch

    from edgefld.backends.torch_models import build_model, weight_tensors
    from edgefld.tasks import TASKS

    directory = Path(__file__).with_name("layouts")
    for task in {task.model: task for task in TASKS.values()}.values():
        with torch.device("meta"):
            model = build_model(task)
        weights = [{"name": name, "shape": list(tensor.shape)} for name, tensor in weight_tensors(model)]
        # One array per line: reviewable in a diff.
        lines = ",\n".join(f"  {json.dumps(weight)}" for weight in weights)
        text = (f'{{"model": "{task.model}",\n "source": "torch state_dict order without num_batches_tracked",\n'
                f' "weights": [\n{lines}\n ]}}\n')
        json.loads(text)
        path = directory / f"{task.model}.json"
        path.write_text(text, encoding="utf-8")
        print(f"{path}: {len(weights)} arrays")


if __name__ == "__main__":  # pragma: no cover
    _write_layouts_from_torch()
