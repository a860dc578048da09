"""Exports made with torch: the model's state_dict, and ONNX.

Imported only when one of these formats is asked for (``edgefld.export.FORMATS``): the CLI that
lists checkpoints never loads torch. The model is the torch backend's own (``torch_models``), so
an export computes exactly what the torch backend evaluates.

TorchScript is not offered: torch 2.14 deprecates ``torch.jit.script``, ``trace`` and ``save``
(FutureWarning: "switch to torch.compile or torch.export"); ONNX is the self-contained graph.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from edgefld.backends.base import Weights
from edgefld.backends.torch_models import build_model, set_weights
from edgefld.tasks import Task

# The names an ONNX export gives its input and output (edgefld.export's metadata repeats them).
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def _model(task: Task, weights: Weights) -> nn.Module:
    """The task's torch model holding ``weights``, in evaluation mode, on the CPU."""
    model = build_model(task)
    set_weights(task, model, weights)
    return model.eval()


def state_dict(task: Task, weights: Weights) -> bytes:
    """``torch.save`` of the model's state_dict, ``num_batches_tracked`` included (as 0: the counters
    never travel), so that ``load_state_dict`` of a fresh model of the task's architecture is strict."""
    buffer = io.BytesIO()
    torch.save(_model(task, weights).state_dict(), buffer)
    return buffer.getvalue()


def onnx(task: Task, weights: Weights) -> bytes:
    """The model in evaluation mode as an ONNX graph (torch's torch.export-based exporter, which needs
    the onnx and onnxscript packages), NCHW float32 input of any batch size, weights inside the file."""
    model = _model(task, weights)
    height, width, channels = task.input_shape
    example = torch.zeros(2, channels, height, width)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="edgefl-onnx-") as scratch:
        # The exporter warns about its own internals (a deprecated torch.export API it calls).
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        program = torch.onnx.export(model, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
        if program is None:  # pragma: no cover - only when given a file to write
            raise RuntimeError("torch.onnx.export returned no program")
        path = Path(scratch) / "model.onnx"
        program.save(path, external_data=False)
        return path.read_bytes()
