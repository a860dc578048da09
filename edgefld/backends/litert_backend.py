"""The LiteRT training backend: trains the shipped ``.tflite`` training models on the CPU.

A 512 MB board cannot afford torch or TensorFlow; LiteRT's interpreter (the
``ai-edge-litert`` wheel, ~22 MB; ``tflite-runtime`` as a fallback) is enough,
because the models in ``litert_models/`` carry their own training step: each
``.tflite`` file has ``train``/``infer``/``get_weights``/``set_weights``
signatures made of builtin ops only (``tools/litert_build.py``, a build tool that
is not shipped, builds them with TensorFlow in the checkout). This module imports
numpy and the interpreter, nothing else heavy.

Everything the Backend protocol promises is kept as the torch backend keeps it:
the canonical weight layout (checked by ``layout.check_weights``), the input
normalisation, momentum buffers fresh on every ``train`` call, and the training
order every backend shares (``base.shuffle_orders``, ``base.batch_slices``: the
same seed trains the same batches as torch and TensorFlow do). Only MobileNetV3's
dropout masks are this backend's own: drawn by numpy from a generator derived
from ``seed`` (torch's generator is not here), so the same seed gives the same
result on every LiteRT board, but not the masks torch draws.

The interpreter runs with LiteRT's default delegate, XNNPACK. Measured on a 2-core
AMD EPYC (AVX-512), batch 32, one thread (``bench/bench_litert.py --threads 1
--compare-delegates``), it trains 3x faster than LiteRT's builtin kernels (mnist 6577 vs
2184 samples/s, cifar10 1121 vs 358) for 4-8 MiB more peak RSS, and its arithmetic is as
exact: a cifar10 step differs from float64 torch's by 1.8e-7 with XNNPACK, 1.4e-7
without; with XNNPACK at most 2e-7 on x86-64 with and without AVX-512 and on the boards'
aarch64 cores (tests/backends/test_litert_cpu_kinds.py).
XNNPACK computes a few ops another way (HARD_SWISH as x * clamp(x/6 + 1/2, 0, 1), EXP
by polynomial), within a few float32 roundings; where an activation lies within such
a rounding of a kink (ReLU's 0, Hardswish's -3 and 3), the two take different branches,
as any two float32 implementations can (see tests/backends/numerics.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

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
from edgefld.backends.layout import check_weights, model_layout
from edgefld.errors import BackendUnavailable
from edgefld.tasks import Task

DEVICES = ("cpu",)
MODELS_PACKAGE = "edgefld.backends"
MODELS_DIR = "litert_models"
MANIFEST = "manifest.json"
# MobileNetV3's classifier dropout (torchvision: p=0.2); the models take its mask as an input.
DROPOUT_PROBABILITY = 0.2


def weight_key(index: int) -> str:
    """The signature name of canonical weight ``index``: torch names hold dots, which signatures avoid
    (tools/litert_build.py names the models' inputs and outputs with it)."""
    return f"w{index:03d}"


def _interpreter_class() -> tuple[type, str]:
    """LiteRT's Interpreter, from ai-edge-litert or else tflite-runtime, and which one it is."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from importlib.metadata import version

        runtime_version = version("tflite-runtime")
    except Exception:  # noqa: BLE001 - metadata missing: not installed as a distribution
        runtime_version = None
    if runtime_version is not None:
        major = int(np.__version__.split(".")[0])
        runtime_major_minor = tuple(int(part) for part in runtime_version.split(".")[:2])
        # tflite-runtime 2.14 (the last release) was built against numpy 1.x: with numpy 2 loading a
        # model fails with "SystemError: ... returned a result with an exception set".
        if major >= 2 and runtime_major_minor <= (2, 14):
            raise BackendUnavailable(
                f"the litert backend: tflite-runtime {runtime_version} was built for numpy 1.x and fails with "
                f"numpy {np.__version__}; install ai-edge-litert (edgefl-backend-litert, pip: edgefl[litert]) "
                "or numpy<2"
            )
    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError:
        raise BackendUnavailable(
            "the litert backend needs ai-edge-litert (edgefl-backend-litert, pip: edgefl[litert]) "
            "or tflite-runtime; neither is installed"
        ) from None
    return Interpreter, "tflite-runtime"


def preload() -> None:
    """The interpreter's module, imported (edgefld.backends.base.preload_backend)."""
    _interpreter_class()


def create_backend(device: str = "cpu", threads: int | None = None, *,
                   default_delegates: bool = True) -> LiteRTBackend:
    """The LiteRT backend; ``threads`` is each interpreter's thread count (default: LiteRT's).

    ``default_delegates=False`` runs LiteRT's builtin kernels without XNNPACK: for the
    benchmark and the numerics tests that compare the two; boards keep the default.
    """
    if device not in DEVICES:
        raise BackendUnavailable(f'the litert backend has no device "{device}"; devices: {", ".join(DEVICES)}')
    if threads is not None and threads < 1:
        raise ValueError(f"threads is {threads}: it must be at least 1")
    interpreter_class, runtime = _interpreter_class()
    return LiteRTBackend(device, threads, interpreter_class, runtime, default_delegates=default_delegates)


def _without_default_delegates(interpreter_class: type) -> Callable[..., Any]:
    """``interpreter_class`` made to resolve ops to the builtin kernels only (no XNNPACK)."""
    module = __import__(interpreter_class.__module__, fromlist=["OpResolverType"])
    resolver = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES

    def create(**kwargs: Any) -> Any:
        return interpreter_class(experimental_op_resolver_type=resolver, **kwargs)

    return create


@cache
def manifest() -> dict[str, Any]:
    """``litert_models/manifest.json``: per model its file, sha256, signatures and ops."""
    text = resources.files(MODELS_PACKAGE).joinpath(MODELS_DIR, MANIFEST).read_text("utf-8")
    models: dict[str, Any] = json.loads(text)
    return models


def model_bytes(model: str) -> bytes:
    info = manifest()["models"].get(model)
    if info is None:
        raise BackendUnavailable(
            f'the litert backend has no training model "{model}"; it has: {", ".join(manifest()["models"])}'
        )
    return resources.files(MODELS_PACKAGE).joinpath(MODELS_DIR, info["file"]).read_bytes()


class _TrainingModel:
    """One loaded ``.tflite`` training model and its signature runners."""

    def __init__(self, task: Task, interpreter_class: Callable[..., Any], threads: int | None) -> None:
        self.task = task
        content = model_bytes(task.model)
        self.info = manifest()["models"][task.model]
        self.interpreter = interpreter_class(model_content=content, num_threads=threads)
        self.runners: dict[str, Callable[..., dict[str, np.ndarray]]] = {
            key: self.interpreter.get_signature_runner(key) for key in ("train", "infer", "get_weights", "set_weights")
        }
        self.count = len(model_layout(task.model))
        self.dropout_features: int | None = self.info.get("dropout_features")

    def set_weights(self, weights: Weights) -> None:
        """Copy ``weights`` in and zero the momentum buffers (one signature does both)."""
        self.runners["set_weights"](**{weight_key(i): w for i, w in enumerate(weights)})

    def get_weights(self) -> Weights:
        out = self.runners["get_weights"]()
        # Copies: the arrays handed out must not change when the model trains again.
        return [np.array(out[weight_key(i)], dtype=np.float32, copy=True) for i in range(self.count)]

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float, momentum: float, proximal_mu: float,
                   dropout_rng: np.random.Generator) -> float:
        """One SGD step; ``proximal_mu``: FedProx's pull towards the weights last set (the global model)."""
        inputs: dict[str, np.ndarray] = {
            "x": x, "y": y, "lr": hyperparameter(lr), "momentum": hyperparameter(momentum),
            "mu": hyperparameter(proximal_mu),
        }
        if self.dropout_features:
            keep = dropout_rng.random((len(x), self.dropout_features)) >= DROPOUT_PROBABILITY
            inputs["dropout"] = keep.astype(np.float32) / np.float32(1.0 - DROPOUT_PROBABILITY)
        return float(self.runners["train"](**inputs)["loss"])

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.runners["infer"](x=x)["logits"]


class LiteRTBackend:
    name = "litert"

    def __init__(self, device: str, threads: int | None, interpreter_class: type, runtime: str, *,
                 default_delegates: bool = True) -> None:
        self.device = device
        self.runtime = runtime  # "ai-edge-litert" or "tflite-runtime"
        self.default_delegates = default_delegates
        self._threads = threads
        self._interpreter_class: Callable[..., Any] = (
            interpreter_class if default_delegates else _without_default_delegates(interpreter_class))
        # One interpreter per model, reused across rounds: every call overwrites all its weights.
        self._models: dict[str, _TrainingModel] = {}

    def initial_weights(self, task: Task, seed: int = 0) -> Weights:
        """Freshly initialised weights, drawn as torch initialises the model (same distributions; not
        torch's random numbers: torch is not here). In a federation the server's weights replace them."""
        return initial_weights(task, seed)

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
        inputs = model_inputs(task, images)
        targets = model_targets(task, labels, len(images))
        num_examples = len(images)
        if min(batch_size, num_examples) == 1 and _has_batchnorm(task):
            # torch refuses too ("Expected more than 1 value per channel"); here the unbiased running
            # variance would silently become inf (n - 1 = 0) and poison the model.
            raise ValueError(
                f"task {task.name}: BatchNorm cannot train on batches of one image; "
                f"got {num_examples} image(s) in batches of {batch_size}: use at least 2 of each"
            )
        model = self._model_with(task, weights)
        dropout_rng = dropout_generator(seed)
        start = time.perf_counter()
        loss_sum = 0.0
        for order in shuffle_orders(num_examples, epochs, seed):
            loss_sum = 0.0
            for batch in (order[bounds] for bounds in batch_slices(num_examples, batch_size)):
                loss = model.train_step(inputs[batch], targets[batch], task.learning_rate, task.momentum,
                                        proximal_mu, dropout_rng)
                loss_sum += loss * len(batch)
        seconds = time.perf_counter() - start
        return TrainResult(model.get_weights(), loss_sum / num_examples, num_examples, seconds)

    def evaluate(
        self, task: Task, weights: Weights, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 256
    ) -> EvalResult:
        check_batch_size(batch_size)
        inputs = model_inputs(task, images)
        targets = model_targets(task, labels, len(images))
        model = self._model_with(task, weights)
        start = time.perf_counter()
        loss_sum, correct = 0.0, 0
        for first in range(0, len(inputs), batch_size):
            logits = model.logits(inputs[first : first + batch_size]).astype(np.float64)
            batch_targets = targets[first : first + batch_size]
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            loss_sum -= float(log_probs[np.arange(len(batch_targets)), batch_targets].sum())
            correct += int((logits.argmax(axis=1) == batch_targets).sum())
        num_examples = len(images)
        seconds = time.perf_counter() - start
        return EvalResult(loss_sum / num_examples, correct / num_examples, num_examples, seconds)

    def predict(self, task: Task, weights: Weights, images: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
        """Logits (float32, N x classes) of the model in evaluation mode."""
        check_batch_size(batch_size)
        inputs = model_inputs(task, images)
        model = self._model_with(task, weights)
        return np.concatenate(
            [model.logits(inputs[first : first + batch_size]) for first in range(0, len(inputs), batch_size)]
        ).astype(np.float32, copy=False)

    def _model_with(self, task: Task, weights: Weights) -> _TrainingModel:
        check_weights(task, weights)  # before anything is copied: a bad sender leaves the model as it was
        model = self._models.get(task.model)
        if model is None:
            model = _TrainingModel(task, self._interpreter_class, self._threads)
            self._models[task.model] = model
        model.set_weights(weights)
        return model


def hyperparameter(value: float) -> np.ndarray:
    """A training signature's lr or momentum: a 1-element float32 vector (tools/litert_build.py says why
    not a scalar)."""
    return np.full((1,), value, np.float32)


def _has_batchnorm(task: Task) -> bool:
    return any(spec.name.endswith(".running_var") for spec in model_layout(task.model))


def model_inputs(task: Task, images: np.ndarray) -> np.ndarray:
    """uint8 N x H x W x C -> float32 N x H x W x C (the models' NHWC), scaled to 0..1 and normalised
    per channel with the same float32 operations as the torch backend."""
    check_images(task, images)
    mean = np.asarray(task.mean, np.float32)
    std = np.asarray(task.std, np.float32)
    inputs = images.astype(np.float32)
    inputs /= np.float32(task.pixel_max)
    inputs -= mean
    inputs /= std
    return inputs


def model_targets(task: Task, labels: np.ndarray, num_images: int) -> np.ndarray:
    check_labels(task, labels, num_images)
    return labels.astype(np.int32)


def dropout_generator(seed: int) -> np.random.Generator:
    """The generator of one train() call's dropout masks: a child of ``seed``'s SeedSequence, so
    its draws are independent of ``shuffle_orders``' generator (seeded with ``seed`` itself), and
    dropout on or off leaves the training order as every other backend draws it."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


# --- initial weights without torch ----------------------------------------------------------------------


def initial_weights(task: Task, seed: int = 0) -> Weights:
    """The distributions torch uses for the model: torch's defaults (Linear, Conv2d:
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases) or, for torchvision's
    MobileNetV3, its own init (conv: kaiming normal, fan_out; linear: N(0, 0.01); biases 0;
    BatchNorm: weight 1, bias 0, running mean 0, running variance 1)."""
    rng = np.random.default_rng(seed)
    torchvision_init = task.model == "mobilenet_v3_small"
    specs = model_layout(task.model)
    weights: Weights = []
    fan_in = 1
    for spec in specs:
        kind = spec.name.rpartition(".")[2]
        shape = spec.shape
        if kind == "running_mean" or (kind == "bias" and torchvision_init):
            array = np.zeros(shape)
        elif kind == "running_var":
            array = np.ones(shape)
        elif kind == "weight" and len(shape) == 1:  # BatchNorm gamma
            array = np.ones(shape)
        elif kind == "weight":
            fan_in = int(np.prod(shape[1:]))
            if torchvision_init and len(shape) == 4:
                fan_out = shape[0] * int(np.prod(shape[2:]))
                array = rng.normal(0.0, np.sqrt(2.0 / fan_out), shape)
            elif torchvision_init:
                array = rng.normal(0.0, 0.01, shape)
            else:
                bound = 1.0 / np.sqrt(fan_in)
                array = rng.uniform(-bound, bound, shape)
        else:  # a bias after its weight: torch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1.0 / np.sqrt(fan_in)
            array = rng.uniform(-bound, bound, shape)
        weights.append(array.astype(np.float32))
    return weights
