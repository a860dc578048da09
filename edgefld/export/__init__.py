"""The global model out of the server's state directory, in the format a user deploys for inference.

    edgefl model info                                  # the checkpoints: round, task, accuracy
    edgefl model export --format onnx [--round N] [--out PATH]

An export is the checkpoint's global model in evaluation mode (BatchNorm's running statistics,
no dropout): float32 inputs, normalised as the task says, in, logits (no softmax) out. Next to it
``PATH.json`` says what it is: task, round, the server's accuracy for that round, the input's shape,
layout and normalisation, and the class names. Both are written atomically (edgefld.persist): a
crash leaves the previous files or none, never half of one.

This module is framework-free (the CLI's ``model info`` imports it); each format's exporter,
and with it torch or TensorFlow, is imported only when that format is asked for.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgefld import __version__
from edgefld.data.sources import DATASETS
from edgefld.errors import BackendUnavailable
from edgefld.persist import atomic_write_bytes
from edgefld.run_state import CheckpointError, StoredCheckpoint, stored_checkpoint
from edgefld.tasks import TASKS, Task

if TYPE_CHECKING:  # numpy and the layouts load when a model is exported, not for `edgefl --help`
    from edgefld.backends.base import Weights

METADATA_FORMAT = 1
METADATA_SUFFIX = ".json"


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str  # of the default file name
    exporter: str  # "module:function", ``function(task, weights) -> bytes``; imported only when chosen
    needs: tuple[str, ...]  # top-level modules that must all be installed
    install: str  # how to get them, for the message when one is missing
    layout: str  # the input's axes: "NCHW" (torch's) or "NHWC" (TensorFlow's)
    what: str  # one line for --help and the metadata
    usage: str  # how a user runs it, for the metadata


FORMATS: dict[str, ExportFormat] = {
    spec.name: spec
    for spec in (
        ExportFormat(
            "torch", ".pt", "edgefld.export.torch_formats:state_dict", ("torch",),
            "edgefl[torch]", "NCHW",
            "PyTorch state_dict of the task's model",
            "model.load_state_dict(torch.load(PATH, weights_only=True)); model.eval(); logits = model(x), "
            "model being the task's torch model (see model_description)"),
        ExportFormat(
            "onnx", ".onnx", "edgefld.export.torch_formats:onnx", ("torch", "onnx", "onnxscript"),
            "edgefl[torch,export]", "NCHW",
            "ONNX graph with its weights (exported from the torch model)",
            "onnxruntime.InferenceSession(PATH).run(None, {'images': x})[0]"),
        ExportFormat(
            "tflite", ".tflite", "edgefld.export.tensorflow_formats:tflite", ("tensorflow",),
            "edgefl[tensorflow]", "NHWC",
            "float32 TFLite model for LiteRT (builtin ops, weights as constants)",
            "ai_edge_litert.interpreter.Interpreter(model_path=PATH).get_signature_runner()(images=x)['logits']"),
        ExportFormat(
            "keras", ".keras", "edgefld.export.tensorflow_formats:keras", ("tensorflow",),
            "edgefl[tensorflow]", "NHWC",
            "Keras 3 model of Keras's own layers (loads without edgefl)",
            "keras.saving.load_model(PATH)(x, training=False)"),
    )
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_installed(spec: ExportFormat) -> None:
    """BackendUnavailable if a module the format needs is not installed (asked of the file system: nothing
    is imported)."""
    missing = [module for module in spec.needs if not _installed(module)]
    if missing:
        raise BackendUnavailable(f"--format {spec.name} needs {', '.join(missing)}, not installed here; "
                                 f"install {spec.install}")


def exporter(spec: ExportFormat) -> Callable[[Task, Weights], bytes]:
    """The format's export function, its framework imported; BackendUnavailable if one is missing."""
    check_installed(spec)
    module_name, _, function = spec.exporter.partition(":")
    export: Callable[[Task, Weights], bytes] = getattr(importlib.import_module(module_name), function)
    return export


def task_of(entry: StoredCheckpoint) -> Task:
    """The task a checkpoint's model is of (its run identity names it)."""
    name = entry.task
    if name is None or name not in TASKS:
        raise CheckpointError(f"the checkpoint {entry.path} names no task edgefl knows ({name!r}); "
                              f"tasks: {', '.join(TASKS)}")
    return TASKS[name]


def input_description(task: Task, layout: str) -> dict[str, Any]:
    """What the export takes: the shape (batch first, any size), layout, dtype and normalisation."""
    height, width, channels = task.input_shape
    shape = [None, channels, height, width] if layout == "NCHW" else [None, height, width, channels]
    return {
        "name": "images", "shape": shape, "layout": layout, "dtype": "float32",
        "normalisation": f"x = (pixel / {task.pixel_max:g} - mean[c]) / std[c] for channel c; pixels as stored, "
                         f"0..{task.pixel_max:g}, height x width x channels {list(task.input_shape)}",
        "pixel_max": task.pixel_max, "mean": list(task.mean), "std": list(task.std),
    }


def metadata(spec: ExportFormat, entry: StoredCheckpoint, task: Task, model_file: Path,
             model_bytes: bytes) -> dict[str, Any]:
    record = entry.record
    evaluation = record.evaluation if record is not None else None
    checkpoint_meta = entry.checkpoint.meta if entry.checkpoint is not None else {}
    return {
        "metadata_format": METADATA_FORMAT,
        "edgefl_version": __version__,
        "format": spec.name,
        "what": spec.what,
        "usage": spec.usage.replace("PATH", repr(model_file.name)),
        "file": model_file.name,
        "bytes": len(model_bytes),
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "task": task.name,
        "model": task.model,
        "model_description": task.description,
        "round": entry.round,
        # The server's centralised evaluation of this round's global model (null: not evaluated, or round 0).
        "accuracy": evaluation.eval_accuracy if evaluation is not None else None,
        "eval_loss": evaluation.eval_loss if evaluation is not None else None,
        "eval_samples": evaluation.eval_samples if evaluation is not None else None,
        "weights_sha256": checkpoint_meta.get("sha256"),  # edgefld.persist.weights_digest of the checkpoint
        "input": input_description(task, spec.layout),
        "output": {"name": "logits", "shape": [None, task.num_classes], "dtype": "float32",
                   "softmax": False, "argmax": "the predicted class: class_names[argmax]"},
        "class_names": list(DATASETS[task.dataset].class_names),
    }


@dataclass(frozen=True)
class ExportResult:
    path: Path
    metadata_path: Path
    metadata: dict[str, Any]


def default_name(task: Task, round_: int, spec: ExportFormat) -> str:
    return f"{task.name}-round{round_}{spec.suffix}"


def export_checkpoint(state_dir: Path, format_name: str, *, round_: int | None = None,
                      out: str | Path | None = None) -> ExportResult:
    """Write round ``round_``'s global model (None: the newest) in ``format_name`` to ``out``, and its metadata.

    ``out``: a file, or a directory to write the default name (``<task>-round<N><suffix>``) into: one
    that exists, or a path ending in "/" (made if missing); None: that name in the current directory."""
    spec = FORMATS.get(format_name)
    if spec is None:
        raise ValueError(f'no export format "{format_name}"; formats: {", ".join(FORMATS)}')
    check_installed(spec)  # a missing framework is said first; importing it waits for a good checkpoint
    from edgefld.backends.layout import check_weights

    entry = stored_checkpoint(state_dir, round_)
    task = task_of(entry)
    weights = entry.checkpoint.weights if entry.checkpoint is not None else []
    try:
        check_weights(task, weights)
    except ValueError as exc:
        raise CheckpointError(f"the checkpoint {entry.path} is not a {task.name} model: {exc}") from None
    # A str keeps the trailing "/" that says "a directory" (Path drops it).
    if out is None or str(out).endswith(os.sep) or Path(out).is_dir():
        path = Path(out or ".") / default_name(task, entry.round, spec)
    else:
        path = Path(out)
    model_bytes = exporter(spec)(task, weights)
    metadata_path = path.with_name(path.name + METADATA_SUFFIX)
    data = metadata(spec, entry, task, path, model_bytes)
    atomic_write_bytes(path, model_bytes)
    # After the model: a metadata file never describes a model that is not there.
    atomic_write_bytes(metadata_path, (json.dumps(data, indent=1) + "\n").encode())
    return ExportResult(path, metadata_path, data)
