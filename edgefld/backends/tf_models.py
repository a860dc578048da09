"""The Keras model each task names, computing what the torch model of that name computes,
and the conversion between Keras's weight layout and the canonical one (``layout.py``).

Each model is built as a Keras functional model on NHWC float32 inputs. While it is
built, every weight is recorded as a ``Slot``: its canonical name, the Keras
variable holding it and how to convert between the two layouts. The slots are
then checked against the shipped layout (``layouts/<model>.json``), so a model
that drifts from torch's order or shapes fails when it is built, not when a
federation averages mismatched arrays.

The layouts, canonical <-> Keras:

- convolution: OIHW <-> HWIO (kh, kw, in, out);
- depthwise convolution: (C, 1, kh, kw) <-> (kh, kw, C, 1);
- fully connected: (out, in) <-> (in, out);
- BatchNorm and biases: the same vectors.

Where torch flattens a feature map into a fully connected layer (LeNet5's fc1) it
reads channel, row, column; the Keras model transposes its NHWC map to NCHW
before flattening, so fc1 is converted like every other dense kernel. The
alternative, permuting fc1's columns at the boundary, saves a 256-value
transpose per sample but makes one weight's conversion depend on the shape of
the map before it: a rule that goes silently wrong when a model changes.

What the Keras layers do not compute as torch does is written here as small
layers: BatchNorm (torch updates the running variance with the unbiased batch
variance, Keras with the biased one; at MobileNetV3's 1x1 maps in a batch of 4
that is a third apart), padding (Keras's "same" pads a stride-2 convolution at
the bottom and right only, torch on every side) and dropout (seeded per call, so
the same seed trains to the same weights).

``build_model(task, portable=True)`` builds the same model from Keras's own layers only
(BatchNormalization, Dropout, the "relu", "hard_silu" and "hard_sigmoid" activations), the same
in evaluation mode: a ``.keras`` file of it loads with plain Keras, without edgefl
(``edgefld.export``). It does not train as torch does, and is never trained.

Imported only by the TensorFlow backend and the Keras and TFLite exporters: nothing else in
edgefl imports TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefld.backends.base import Weights
from edgefld.backends.layout import DTYPE, check_weights, model_layout
from edgefld.errors import BackendUnavailable
from edgefld.tasks import Task

# Before the first TensorFlow import: Keras 3 runs on whichever backend this names,
# and TensorFlow's C++ INFO lines (CUDA probing, CPU features) would fill the journal.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import keras  # noqa: E402 - after the environment above, which Keras and TensorFlow read at import
import tensorflow as tf  # noqa: E402 - likewise

if keras.backend.backend() != "tensorflow":  # pragma: no cover - a KERAS_BACKEND set elsewhere
    raise BackendUnavailable(
        f'the tensorflow backend needs Keras on TensorFlow; KERAS_BACKEND is "{keras.backend.backend()}"'
    )

# torchvision's MobileNetV3 BatchNorm: nn.BatchNorm2d(eps=0.001, momentum=0.01). In
# torch's terms: running = (1 - momentum) * running + momentum * batch statistic.
MOBILENET_BN_EPS = 0.001
MOBILENET_BN_MOMENTUM = 0.01
MOBILENET_DROPOUT = 0.2

Array = np.ndarray
Conversion = Callable[[Array], Array]
Initializer = Callable[[np.random.Generator, tuple[int, ...]], Array]


def _identity(array: Array) -> Array:
    return array


def _oihw_to_hwio(array: Array) -> Array:
    return array.transpose(2, 3, 1, 0)


def _hwio_to_oihw(array: Array) -> Array:
    return array.transpose(3, 2, 0, 1)


def _swap_depthwise(array: Array) -> Array:
    # (C, 1, kh, kw) <-> (kh, kw, C, 1): the same permutation both ways.
    return array.transpose(2, 3, 0, 1)


def _transpose(array: Array) -> Array:
    return array.T


@dataclass(frozen=True)
class Slot:
    """One canonical weight and the Keras variable that holds it."""

    name: str  # canonical (torch) name
    variable: Any  # keras.Variable
    to_keras: Conversion
    to_canonical: Conversion
    initializer: Initializer  # draws the canonical array, as torch initialises it


# --- initialisation, as torch's modules do it (on the canonical, torch-shaped array) --------


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _torch_default_weight(rng: np.random.Generator, shape: tuple[int, ...]) -> Array:
    # nn.Linear / nn.Conv2d reset_parameters: kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
    bound = 1.0 / np.sqrt(_fans(shape)[0])
    return rng.uniform(-bound, bound, shape)


def _torch_default_bias(fan_in: int) -> Initializer:
    bound = 1.0 / np.sqrt(fan_in)
    return lambda rng, shape: rng.uniform(-bound, bound, shape)


def _kaiming_normal_fan_out(rng: np.random.Generator, shape: tuple[int, ...]) -> Array:
    return rng.normal(0.0, np.sqrt(2.0 / _fans(shape)[1]), shape)


def _normal_001(rng: np.random.Generator, shape: tuple[int, ...]) -> Array:
    return rng.normal(0.0, 0.01, shape)


def _zeros(rng: np.random.Generator, shape: tuple[int, ...]) -> Array:
    return np.zeros(shape)


def _ones(rng: np.random.Generator, shape: tuple[int, ...]) -> Array:
    return np.ones(shape)


# --- layers Keras does not compute as torch does ----------------------------------------------


class TorchBatchNorm(keras.layers.Layer):
    """nn.BatchNorm2d over the last (channel) axis, with torch's statistics.

    Training normalises with the batch's biased variance and moves the running
    variance towards the unbiased one (n / (n - 1) times larger), as torch does;
    ``momentum`` is torch's (the weight of the new batch), not Keras's.
    """

    def __init__(self, channels: int, eps: float, momentum: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eps = eps
        self.momentum = momentum
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")
        self.running_mean = self.add_weight(shape=(channels,), initializer="zeros", name="running_mean",
                                            trainable=False)
        self.running_var = self.add_weight(shape=(channels,), initializer="ones", name="running_var",
                                           trainable=False)
        self.built = True

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        if training:
            mean, variance = tf.nn.moments(inputs, axes=[0, 1, 2])
            count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], inputs.dtype)
            unbiased = variance * count / (count - 1.0)
            keep = 1.0 - self.momentum
            self.running_mean.assign(self.running_mean * keep + mean * self.momentum)
            self.running_var.assign(self.running_var * keep + unbiased * self.momentum)
        else:
            mean, variance = self.running_mean, self.running_var
        inverse_std = tf.math.rsqrt(variance + self.eps)
        return (inputs - mean) * (inverse_std * self.gamma) + self.beta


class SeededDropout(keras.layers.Layer):
    """Inverted dropout whose masks follow a seed set per training call (``reseed``).

    Keras's Dropout draws from a generator seeded once, at construction; torch's
    backend seeds dropout from each train() call's seed, and so does this one.
    """

    def __init__(self, rate: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate = rate
        # (seed, step): stateless masks, one step per training batch.
        self.seed_state = self.add_weight(shape=(2,), dtype="int64", initializer="zeros", name="seed_state",
                                          trainable=False)
        self.built = True

    def reseed(self, seed: int) -> None:
        self.seed_state.assign(np.array([seed, 0], np.int64))

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        if not training or self.rate == 0.0:
            return inputs
        uniform = tf.random.stateless_uniform(tf.shape(inputs), seed=tf.convert_to_tensor(self.seed_state))
        self.seed_state.assign_add(np.array([0, 1], np.int64))
        return tf.where(uniform >= self.rate, inputs / (1.0 - self.rate), tf.zeros_like(inputs))


def hardswish(x: tf.Tensor) -> tf.Tensor:
    # nn.Hardswish: x * relu6(x + 3) / 6, in that order.
    return x * tf.nn.relu6(x + 3.0) / 6.0


def hardsigmoid(x: tf.Tensor) -> tf.Tensor:
    # nn.Hardsigmoid: relu6(x + 3) / 6 (Keras 2's hard_sigmoid was 0.2 x + 0.5).
    return tf.nn.relu6(x + 3.0) / 6.0


# --- building ---------------------------------------------------------------------------------


# The portable model's activations: Keras's own, by name, computing what edgefl's do (Keras 3 on
# TensorFlow: hard_sigmoid is relu6(x + 3) / 6, hard_silu x * hard_sigmoid(x): the same operations,
# only hard_silu's multiplication and division in another order, a float32 rounding apart).
PORTABLE_ACTIVATIONS: dict[Callable[[tf.Tensor], tf.Tensor], str] = {
    hardswish: "hard_silu",
    hardsigmoid: "hard_sigmoid",
    tf.nn.relu: "relu",
}


class _Builder:
    """Applies layers to a functional-API tensor and records each weight's slot as it goes.

    ``portable``: Keras's own layers where edgefl's training layers stand (see the module docstring)."""

    def __init__(self, portable: bool = False) -> None:
        self.slots: list[Slot] = []
        self.portable = portable

    def _record(self, name: str, variable: Any, to_keras: Conversion, to_canonical: Conversion,
                initializer: Initializer) -> None:
        self.slots.append(Slot(name, variable, to_keras, to_canonical, initializer))

    def conv(self, name: str, x: Any, filters: int, kernel: int, *, stride: int = 1, padding: int = 0,
             groups: int = 1, bias: bool = True, weight_init: Initializer = _torch_default_weight,
             bias_init: Initializer | None = None) -> Any:
        """nn.Conv2d(in, filters, kernel, stride, padding, groups, bias), padding as torch pads: every side."""
        channels = x.shape[-1]
        if padding not in (0, (kernel - 1) // 2):
            raise ValueError(f"{name}: only no padding or (kernel - 1) // 2 is built")
        if padding and stride > 1:
            # "same" would pad a stride-2 convolution asymmetrically; torch pads every side.
            x = keras.layers.ZeroPadding2D(padding, name=f"{name}.pad")(x)
            mode = "valid"
        else:
            # Stride 1, odd kernel: "same" pads (k - 1) / 2 on every side, as torch.
            mode = "same" if padding else "valid"
        if groups == 1:
            layer = keras.layers.Conv2D(filters, kernel, strides=stride, padding=mode, use_bias=bias, name=name)
            x = layer(x)
            self._record(f"{name}.weight", layer.kernel, _oihw_to_hwio, _hwio_to_oihw, weight_init)
        else:
            if not groups == channels == filters:
                raise ValueError(f"{name}: only depthwise grouped convolutions are built")
            layer = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding=mode, use_bias=bias, name=name)
            x = layer(x)
            self._record(f"{name}.weight", layer.kernel, _swap_depthwise, _swap_depthwise, weight_init)
        if bias:
            fan_in = (channels // groups) * kernel * kernel
            self._record(f"{name}.bias", layer.bias, _identity, _identity,
                         bias_init or _torch_default_bias(fan_in))
        return x

    def dense(self, name: str, x: Any, units: int, *, weight_init: Initializer = _torch_default_weight,
              bias_init: Initializer | None = None) -> Any:
        fan_in = x.shape[-1]
        layer = keras.layers.Dense(units, name=name)
        x = layer(x)
        self._record(f"{name}.weight", layer.kernel, _transpose, _transpose, weight_init)
        self._record(f"{name}.bias", layer.bias, _identity, _identity, bias_init or _torch_default_bias(fan_in))
        return x

    def batch_norm(self, name: str, x: Any, *, eps: float, momentum: float) -> Any:
        layer: Any
        if self.portable:
            # Keras's momentum is the weight of the running statistic, torch's that of the batch's.
            layer = keras.layers.BatchNormalization(epsilon=eps, momentum=1.0 - momentum, name=name)
            x = layer(x)
            variables = (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)
        else:
            layer = TorchBatchNorm(x.shape[-1], eps, momentum, name=name)
            x = layer(x)
            variables = (layer.gamma, layer.beta, layer.running_mean, layer.running_var)
        for suffix, variable, initializer in zip(("weight", "bias", "running_mean", "running_var"), variables,
                                                 (_ones, _zeros, _zeros, _ones), strict=True):
            self._record(f"{name}.{suffix}", variable, _identity, _identity, initializer)
        return x

    def activation(self, fn: Callable[[tf.Tensor], tf.Tensor], name: str, x: Any) -> Any:
        layer = keras.layers.Activation(PORTABLE_ACTIVATIONS[fn] if self.portable else fn, name=name)
        return layer(x)

    def dropout(self, rate: float, name: str, x: Any) -> Any:
        layer = keras.layers.Dropout(rate, name=name) if self.portable else SeededDropout(rate, name=name)
        return layer(x)


def _flatten_chw(x: Any, name: str) -> Any:
    """torch.flatten(x, 1) of an NCHW map: NHWC -> NCHW, then flatten (see the module docstring)."""
    return keras.layers.Flatten(name=f"{name}.flatten")(keras.layers.Permute((3, 1, 2), name=f"{name}.nchw")(x))


def _digits_mlp(task: Task, builder: _Builder, inputs: Any) -> Any:
    x = _flatten_chw(inputs, "input")
    x = keras.layers.ReLU(name="relu1")(builder.dense("fc1", x, 64))
    return builder.dense("fc2", x, task.num_classes)


def _lenet5(task: Task, builder: _Builder, inputs: Any) -> Any:
    x = inputs
    for index, filters in ((1, 6), (2, 16)):
        x = keras.layers.ReLU(name=f"relu{index}")(builder.conv(f"conv{index}", x, filters, 5))
        x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = _flatten_chw(x, "fc1")
    x = keras.layers.ReLU(name="relu3")(builder.dense("fc1", x, 120))
    x = keras.layers.ReLU(name="relu4")(builder.dense("fc2", x, 84))
    return builder.dense("fc3", x, task.num_classes)


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: the nearest multiple of ``divisor``, never 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


# torchvision mobilenet_v3_small, width 1.0: (in, kernel, expanded, out, squeeze-excite,
# hardswish (else ReLU), stride), blocks features.1 .. features.11.
MOBILENET_V3_SMALL_BLOCKS = (
    (16, 3, 16, 16, True, False, 2),
    (16, 3, 72, 24, False, False, 2),
    (24, 3, 88, 24, False, False, 1),
    (24, 5, 96, 40, True, True, 2),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 120, 48, True, True, 1),
    (48, 5, 144, 48, True, True, 1),
    (48, 5, 288, 96, True, True, 2),
    (96, 5, 576, 96, True, True, 1),
    (96, 5, 576, 96, True, True, 1),
)
MOBILENET_V3_SMALL_LAST_CHANNEL = 1024


def _mobilenet_v3_small(task: Task, builder: _Builder, inputs: Any, dropout: float = MOBILENET_DROPOUT) -> Any:
    def conv_bn(name: str, x: Any, filters: int, kernel: int, activation: Callable[[tf.Tensor], tf.Tensor] | None,
                *, stride: int = 1, groups: int = 1) -> Any:
        # torchvision's Conv2dNormActivation: conv (no bias) - BN - activation, as modules 0, 1 (2).
        x = builder.conv(f"{name}.0", x, filters, kernel, stride=stride, padding=(kernel - 1) // 2, groups=groups,
                         bias=False,
                         weight_init=_kaiming_normal_fan_out)
        x = builder.batch_norm(f"{name}.1", x, eps=MOBILENET_BN_EPS, momentum=MOBILENET_BN_MOMENTUM)
        return builder.activation(activation, f"{name}.2", x) if activation else x

    def squeeze_excite(name: str, x: Any, squeeze: int) -> Any:
        # torchvision's SqueezeExcitation: avgpool - fc1 (1x1 conv) - ReLU - fc2 - hardsigmoid, times x.
        scale = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}.avgpool")(x)
        scale = builder.conv(f"{name}.fc1", scale, squeeze, 1, weight_init=_kaiming_normal_fan_out,
                             bias_init=_zeros)
        scale = keras.layers.ReLU(name=f"{name}.activation")(scale)
        scale = builder.conv(f"{name}.fc2", scale, x.shape[-1], 1, weight_init=_kaiming_normal_fan_out,
                             bias_init=_zeros)
        scale = builder.activation(hardsigmoid, f"{name}.scale_activation", scale)
        return keras.layers.Multiply(name=f"{name}.multiply")([x, scale])

    x = conv_bn("features.0", inputs, 16, 3, hardswish, stride=2)
    for index, (channels_in, kernel, expanded, channels_out, use_se, use_hs, stride) in enumerate(
        MOBILENET_V3_SMALL_BLOCKS, start=1
    ):
        activation = hardswish if use_hs else tf.nn.relu
        block = f"features.{index}.block"
        y, module = x, 0
        if expanded != channels_in:
            y = conv_bn(f"{block}.{module}", y, expanded, 1, activation)
            module += 1
        y = conv_bn(f"{block}.{module}", y, expanded, kernel, activation, stride=stride, groups=expanded)
        module += 1
        if use_se:
            y = squeeze_excite(f"{block}.{module}", y, make_divisible(expanded // 4))
            module += 1
        y = conv_bn(f"{block}.{module}", y, channels_out, 1, None)
        if stride == 1 and channels_in == channels_out:  # torchvision's use_res_connect
            y = keras.layers.Add(name=f"features.{index}.residual")([y, x])
        x = y
    last_conv = 6 * MOBILENET_V3_SMALL_BLOCKS[-1][3]
    x = conv_bn(f"features.{len(MOBILENET_V3_SMALL_BLOCKS) + 1}", x, last_conv, 1, hardswish)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    x = builder.dense("classifier.0", x, MOBILENET_V3_SMALL_LAST_CHANNEL, weight_init=_normal_001, bias_init=_zeros)
    x = builder.activation(hardswish, "classifier.1", x)
    x = builder.dropout(dropout, "classifier.2", x)
    return builder.dense("classifier.3", x, task.num_classes, weight_init=_normal_001, bias_init=_zeros)


ModelBuilder = Callable[[Task, _Builder, Any], Any]

# Task.model -> builder. Adding a model is adding a row here (and its layout file).
MODEL_BUILDERS: dict[str, ModelBuilder] = {
    "mobilenet_v3_small": _mobilenet_v3_small,
    "lenet5": _lenet5,
    "digits_mlp": _digits_mlp,
}


class TaskModel:
    """A Keras model for a task, with its weights' canonical slots."""

    def __init__(self, task: Task, model: keras.Model, slots: list[Slot]) -> None:
        self.task = task
        self.model = model
        self.slots = slots
        self.dropouts = [layer for layer in model.layers if isinstance(layer, SeededDropout)]

    def get_weights(self) -> Weights:
        """The weights in canonical order and layout, as float32 numpy arrays of their own."""
        # The conversions are transposes (views): ascontiguousarray copies, so later
        # training never changes arrays already handed out.
        return [np.ascontiguousarray(slot.to_canonical(slot.variable.numpy()), dtype=DTYPE) for slot in self.slots]

    def set_weights(self, weights: Weights) -> None:
        """Copy canonical ``weights`` into the model; all are checked before any is copied."""
        check_weights(self.task, weights)
        for slot, array in zip(self.slots, weights, strict=True):
            slot.variable.assign(slot.to_keras(array))

    def initial_weights(self, seed: int) -> Weights:
        """Fresh weights drawn as torch initialises the same model, from ``seed``."""
        rng = np.random.default_rng(seed)
        return [
            slot.initializer(rng, spec.shape).astype(DTYPE)
            for slot, spec in zip(self.slots, model_layout(self.task.model), strict=True)
        ]


def build_model(task: Task, *, portable: bool = False) -> TaskModel:
    """The task's Keras model (weights not yet meaningful: set them, or draw ``initial_weights``).

    ``portable``: of Keras's own layers only, for inference (see the module docstring)."""
    builder_fn = MODEL_BUILDERS.get(task.model)
    if builder_fn is None:
        raise BackendUnavailable(
            f'the tensorflow backend cannot build model "{task.model}" of task "{task.name}"; '
            f"it builds: {', '.join(MODEL_BUILDERS)}"
        )
    builder = _Builder(portable)
    inputs = keras.Input(shape=task.input_shape, dtype="float32", name="images")
    outputs = builder_fn(task, builder, inputs)
    model = keras.Model(inputs, outputs, name=task.model)
    _check_slots(task, builder.slots)
    return TaskModel(task, model, builder.slots)


def _check_slots(task: Task, slots: list[Slot]) -> None:
    """The slots must be the shipped layout, name by name and shape by shape."""
    specs = model_layout(task.model)
    built = [(slot.name, slot.to_canonical(np.empty(tuple(slot.variable.shape))).shape) for slot in slots]
    expected = [(spec.name, spec.shape) for spec in specs]
    if built != expected:
        # The two may differ in length: past the shorter one, the first difference is where it ends.
        pairs = zip(built, expected, strict=False)
        first = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(built), len(expected)))
        raise RuntimeError(
            f"the Keras {task.model} does not match its canonical layout at weight {first}: "
            f"built {built[first] if first < len(built) else 'nothing'}, "
            f"layout {expected[first] if first < len(expected) else 'nothing'}"
        )
