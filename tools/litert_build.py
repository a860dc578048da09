#!/usr/bin/env python3
"""Build the LiteRT training models (``edgefld/backends/litert_models/<model>.tflite``): a developer's tool.

Needs TensorFlow, which no board ever installs, so it is no part of the ``edgefld`` package
(nor of its wheel and .deb): ``make litert-models`` (or ``python tools/litert_build.py``, with
edgefld importable) writes the ``.tflite`` files and ``litert_models/manifest.json`` into the
checkout, which commits them; the LiteRT backend (``edgefld/backends/litert_backend.py``) only
reads them. Where they live, their manifest's name and the signature names of the weights are
the backend's (this tool imports them from it).

Why the backward pass is written by hand: a Keras/GradientTape training step
converts to TensorFlow's gradient kernels (ReluGrad, MaxPoolGrad,
Conv2DBackpropFilter, DepthwiseConv2dNativeBackprop*, RsqrtGrad,
BroadcastGradientArgs for a dynamic batch ...), none of which is a TFLite
builtin; they would need the Flex delegate, which neither ai-edge-litert nor
tflite-runtime ships. So every layer here has an explicit ``forward`` and
``backward`` made of builtin ops only (matmul, conv, depthwise conv, pad,
strided slice, concatenation, reduce, elementwise), no autodiff is used, and
the conversion allows ``TFLITE_BUILTINS`` alone: an op that is not a builtin
fails the build.

Each model is a ``tf.Module`` whose variables hold the weights in the canonical
layout (``layout.py``: torch order and shapes, OIHW convolutions, (out, in)
linear, NCHW flattening, BatchNorm running statistics), so getting and setting
weights are plain copies. Signatures:

- ``train(x, y, lr, momentum, mu[, dropout])`` -> ``loss`` (lr, momentum, mu: 1-element vectors): one SGD step
  with momentum exactly as ``torch_backend.MomentumSGD`` (v = momentum * v + g; p -= lr * v), where g
  includes FedProx's proximal gradient mu * (p - p_global) (mu 0: none), BatchNorm in training mode
  (batch statistics, biased variance; running statistics updated with torch's momentum and the
  unbiased variance). ``x``: normalised float32 N x H x W x C (NHWC), any N; ``y``: int32 labels.
  ``dropout`` (models with dropout only): the N x features multiplier of the dropout layer
  (0 or 1 / (1 - p)), drawn by the caller: random ops are not needed in the model, and the
  caller's seed decides the mask.
- ``infer(x)`` -> ``logits``: evaluation mode (running statistics, no dropout).
- ``get_weights()`` -> ``w000`` ... : the canonical arrays, in order.
- ``set_weights(w000, ...)`` -> ``ok``: replaces every weight, zeroes the momentum buffers
  (torch's backend starts every ``train`` call with fresh buffers) and keeps the trainable weights
  as the global model FedProx's term pulls towards (every ``train`` call starts from the global model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from edgefld.backends.layout import model_layout
from edgefld.backends.litert_backend import MANIFEST, MODELS_DIR, weight_key
from edgefld.tasks import TASKS

# The checkout's models, which the edgefld package ships (its package data).
SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "edgefld" / "backends" / MODELS_DIR
# torchvision's MobileNetV3 BatchNorm: eps 1e-3, momentum 0.01.
MOBILENET_BN_EPS, MOBILENET_BN_MOMENTUM = 1e-3, 0.01


# --- layers: explicit forward and backward in builtin ops ---------------------------------------------


class Layer:
    """``forward`` returns (output, cache); ``backward`` takes the output gradient and the cache,
    stores parameter gradients in ``grads`` (by canonical name) and returns the input gradient."""

    def forward(self, x, training, ctx):
        raise NotImplementedError

    def backward(self, dy, cache, grads):
        raise NotImplementedError


class Linear(Layer):
    """y = x W^T + b; W (out, in) -- or a 1x1 convolution's (out, in, 1, 1) applied to N x C vectors."""

    def __init__(self, model, prefix):
        self.w, self.b = model.var(prefix + ".weight"), model.var(prefix + ".bias")
        self.out_features, self.in_features = self.w.shape[0], self.w.shape[1]

    def _matrix(self):
        return tf.reshape(self.w, [self.out_features, self.in_features])

    def forward(self, x, training, ctx):
        return tf.matmul(x, self._matrix(), transpose_b=True) + self.b, x

    def backward(self, dy, x, grads):
        grads[self.w.name_] = tf.reshape(tf.matmul(dy, x, transpose_a=True), self.w.shape)
        grads[self.b.name_] = tf.reduce_sum(dy, axis=0)
        return tf.matmul(dy, self._matrix())


def _pad_hw(x, top, bottom, left, right):
    if top == bottom == left == right == 0:
        return x
    return tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])


def _window_slices(xp, kernel, stride, out_h, out_w):
    """The kernel*kernel strided views of the padded input xp, one per kernel tap (row-major)."""
    views = []
    for i in range(kernel):
        for j in range(kernel):
            views.append(xp[:, i : i + stride * (out_h - 1) + 1 : stride, j : j + stride * (out_w - 1) + 1 : stride, :])
    return views


def _dilate(dy, stride):
    """Insert stride-1 zeros between the rows and columns of dy (N x h x w x C): the gradient of a
    strided convolution seen as a stride-1 one. Done one axis at a time in 4-D tensors."""
    if stride == 1:
        return dy
    _, h, w, c = dy.shape
    cols = tf.reshape(dy, [-1, w, 1, c])
    cols = tf.pad(cols, [[0, 0], [0, 0], [0, stride - 1], [0, 0]])
    cols = tf.reshape(cols, [-1, h, w * stride, c])[:, :, : (w - 1) * stride + 1, :]
    wide = (w - 1) * stride + 1
    rows = tf.reshape(cols, [-1, h, 1, wide * c])
    rows = tf.pad(rows, [[0, 0], [0, 0], [0, stride - 1], [0, 0]])
    return tf.reshape(rows, [-1, h * stride, wide, c])[:, : (h - 1) * stride + 1, :, :]


class Conv2d(Layer):
    """A convolution with symmetric zero padding as torch's (explicit PAD, then VALID).

    ``depthwise``: groups == channels (filter C x 1 x k x k). ``input_grad`` False for a layer
    fed by the data, whose input gradient nobody needs.
    """

    def __init__(self, model, prefix, stride, padding, *, depthwise=False, bias=False, input_grad=True):
        self.w = model.var(prefix + ".weight")
        self.b = model.var(prefix + ".bias") if bias else None
        self.stride, self.padding, self.depthwise, self.input_grad = stride, padding, depthwise, input_grad
        self.out_channels, self.in_channels, self.kernel, _ = self.w.shape

    def _filter(self, flipped=False):
        w = tf.reverse(self.w, axis=[2, 3]) if flipped else self.w
        if self.depthwise:  # C x 1 x kh x kw -> kh x kw x C x 1
            return tf.transpose(w, [2, 3, 0, 1])
        if flipped:  # the transposed convolution: O x I x kh x kw -> kh x kw x O x I
            return tf.transpose(w, [2, 3, 0, 1])
        return tf.transpose(w, [2, 3, 1, 0])  # -> kh x kw x I x O (HWIO)

    def _conv(self, x, filters, stride):
        strides = [1, stride, stride, 1]
        if self.depthwise:
            return tf.nn.depthwise_conv2d(x, filters, strides, "VALID")
        return tf.nn.conv2d(x, filters, strides, "VALID")

    def forward(self, x, training, ctx):
        p = self.padding
        xp = _pad_hw(x, p, p, p, p)
        y = self._conv(xp, self._filter(), self.stride)
        if self.b is not None:
            y = y + self.b
        return y, (x, xp)

    def backward(self, dy, cache, grads):
        x, xp = cache
        _, out_h, out_w, _ = dy.shape
        k, s = self.kernel, self.stride
        if self.b is not None:
            grads[self.b.name_] = tf.reduce_sum(dy, axis=[0, 1, 2])
        pointwise = k == 1 and s == 1 and self.padding == 0 and not self.depthwise
        if pointwise:
            x2 = tf.reshape(x, [-1, self.in_channels])
            dy2 = tf.reshape(dy, [-1, self.out_channels])
            grads[self.w.name_] = tf.reshape(tf.matmul(dy2, x2, transpose_a=True), self.w.shape)
            if not self.input_grad:
                return None
            dx = tf.matmul(dy2, tf.reshape(self.w, [self.out_channels, self.in_channels]))
            return tf.reshape(dx, [-1, *x.shape[1:]])
        views = _window_slices(xp, k, s, out_h, out_w)
        if self.depthwise:
            taps = [tf.reduce_sum(view * dy, axis=[0, 1, 2]) for view in views]  # each (C,)
            grad = tf.transpose(tf.reshape(tf.stack(taps), [k, k, self.out_channels]), [2, 0, 1])
            grads[self.w.name_] = tf.reshape(grad, self.w.shape)
        else:
            patches = tf.reshape(tf.concat(views, axis=3), [-1, k * k * self.in_channels])
            dy2 = tf.reshape(dy, [-1, self.out_channels])
            grad = tf.reshape(tf.matmul(patches, dy2, transpose_a=True), [k, k, self.in_channels, self.out_channels])
            grads[self.w.name_] = tf.transpose(grad, [3, 2, 0, 1])
        if not self.input_grad:
            return None
        # dx = full correlation of the (dilated) output gradient with the flipped filter.
        dilated = _dilate(dy, s)
        height, width = x.shape[1], x.shape[2]
        top = k - 1 - self.padding
        bottom = height + k - 1 - dilated.shape[1] - top
        left = k - 1 - self.padding
        right = width + k - 1 - dilated.shape[2] - left
        if min(top, bottom, left, right) < 0:
            raise ValueError(f"unsupported convolution geometry (kernel {k}, padding {self.padding})")
        return self._conv(_pad_hw(dilated, top, bottom, left, right), self._filter(flipped=True), 1)


class BatchNorm(Layer):
    """BatchNorm2d over NHWC: torch's training and evaluation semantics."""

    def __init__(self, model, prefix, eps, momentum):
        self.gamma, self.beta = model.var(prefix + ".weight"), model.var(prefix + ".bias")
        self.mean, self.var = model.var(prefix + ".running_mean"), model.var(prefix + ".running_var")
        self.eps, self.momentum = eps, momentum

    def forward(self, x, training, ctx):
        if not training:
            return (x - self.mean) * tf.math.rsqrt(self.var + self.eps) * self.gamma + self.beta, None
        mean = tf.reduce_mean(x, axis=[0, 1, 2])
        centred = x - mean
        var = tf.reduce_mean(centred * centred, axis=[0, 1, 2])
        inv_std = tf.math.rsqrt(var + self.eps)
        xhat = centred * inv_std
        count = tf.cast(tf.shape(x)[0] * x.shape[1] * x.shape[2], tf.float32)
        m = self.momentum
        ctx.updates.append((self.mean, (1.0 - m) * self.mean + m * mean))
        ctx.updates.append((self.var, (1.0 - m) * self.var + m * var * count / (count - 1.0)))
        return xhat * self.gamma + self.beta, (xhat, inv_std)

    def backward(self, dy, cache, grads):
        xhat, inv_std = cache
        grads[self.gamma.name_] = tf.reduce_sum(dy * xhat, axis=[0, 1, 2])
        grads[self.beta.name_] = tf.reduce_sum(dy, axis=[0, 1, 2])
        dxhat = dy * self.gamma
        return inv_std * (
            dxhat - tf.reduce_mean(dxhat, axis=[0, 1, 2]) - xhat * tf.reduce_mean(dxhat * xhat, axis=[0, 1, 2])
        )


class ReLU(Layer):
    def forward(self, x, training, ctx):
        return tf.nn.relu(x), x

    def backward(self, dy, x, grads):
        return tf.where(x > 0.0, dy, tf.zeros_like(dy))


class Hardswish(Layer):
    """x * relu6(x + 3) / 6; gradient as torch's: 0 below -3, x / 3 + 1/2 up to 3, 1 above."""

    def forward(self, x, training, ctx):
        return x * tf.nn.relu6(x + 3.0) / 6.0, x

    def backward(self, dy, x, grads):
        slope = tf.where(x < -3.0, tf.zeros_like(x), tf.where(x <= 3.0, x / 3.0 + 0.5, tf.ones_like(x)))
        return dy * slope


class Hardsigmoid(Layer):
    """relu6(x + 3) / 6; gradient 1/6 strictly between -3 and 3, as torch's."""

    def forward(self, x, training, ctx):
        return tf.nn.relu6(x + 3.0) / 6.0, x

    def backward(self, dy, x, grads):
        inside = tf.logical_and(x > -3.0, x < 3.0)
        return tf.where(inside, dy / 6.0, tf.zeros_like(dy))


class MaxPool2(Layer):
    """2x2 max pooling, stride 2 (even sizes). The gradient goes to the first maximum of each window
    in row-major order, as torch's (an equality mask alone would duplicate it on ties, which
    ReLU's zeros make common)."""

    def forward(self, x, training, ctx):
        quads = [x[:, i::2, j::2, :] for i in (0, 1) for j in (0, 1)]
        y = tf.maximum(tf.maximum(quads[0], quads[1]), tf.maximum(quads[2], quads[3]))
        return y, (quads, y)

    def backward(self, dy, cache, grads):
        quads, y = cache
        taken = tf.zeros_like(dy)
        parts = []
        for quad in quads:
            first = tf.cast(quad == y, tf.float32) * (1.0 - taken)
            taken = taken + first
            parts.append(dy * first)
        _, h, w, c = dy.shape
        row0 = tf.reshape(tf.stack(parts[0:2], axis=3), [-1, h, 2 * w, c])
        row1 = tf.reshape(tf.stack(parts[2:4], axis=3), [-1, h, 2 * w, c])
        return tf.reshape(tf.stack([row0, row1], axis=2), [-1, 2 * h, 2 * w, c])


class FlattenNCHW(Layer):
    """N x H x W x C -> N x (C*H*W) in torch's (channel, row, column) order."""

    def forward(self, x, training, ctx):
        _, h, w, c = x.shape
        return tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [-1, c * h * w]), x.shape

    def backward(self, dy, shape, grads):
        _, h, w, c = shape
        return tf.transpose(tf.reshape(dy, [-1, c, h, w]), [0, 2, 3, 1])


class GlobalAvgPool(Layer):
    """N x H x W x C -> N x C (adaptive average pooling to 1x1, then flatten)."""

    def forward(self, x, training, ctx):
        return tf.reduce_mean(x, axis=[1, 2]), x.shape

    def backward(self, dy, shape, grads):
        _, h, w, c = shape
        return tf.reshape(dy, [-1, 1, 1, c]) * tf.fill([1, h, w, 1], 1.0 / (h * w))


class Dropout(Layer):
    """Training: multiplies by the caller's mask (the ``dropout`` input); evaluation: identity."""

    def forward(self, x, training, ctx):
        if not training:
            return x, None
        return x * ctx.dropout, ctx.dropout

    def backward(self, dy, mask, grads):
        return dy * mask


class Sequential(Layer):
    def __init__(self, layers, residual=False):
        self.layers, self.residual = layers, residual

    def forward(self, x, training, ctx):
        caches = []
        y = x
        for layer in self.layers:
            y, cache = layer.forward(y, training, ctx)
            caches.append(cache)
        return (y + x if self.residual else y), caches

    def backward(self, dy, caches, grads):
        d = dy
        for layer, cache in zip(reversed(self.layers), reversed(caches), strict=True):
            d = layer.backward(d, cache, grads)
        return d + dy if self.residual else d


class SqueezeExcitation(Layer):
    """torchvision's: scale = hardsigmoid(fc2(relu(fc1(avgpool(x))))); y = x * scale."""

    def __init__(self, model, prefix):
        self.pool = GlobalAvgPool()
        self.branch = Sequential(
            [Linear(model, prefix + ".fc1"), ReLU(), Linear(model, prefix + ".fc2"), Hardsigmoid()]
        )

    def forward(self, x, training, ctx):
        pooled, pool_cache = self.pool.forward(x, training, ctx)
        scale, branch_cache = self.branch.forward(pooled, training, ctx)
        scale4 = tf.reshape(scale, [-1, 1, 1, x.shape[3]])
        return x * scale4, (x, scale4, pool_cache, branch_cache)

    def backward(self, dy, cache, grads):
        x, scale4, pool_cache, branch_cache = cache
        dscale = tf.reduce_sum(dy * x, axis=[1, 2])
        dpooled = self.branch.backward(dscale, branch_cache, grads)
        return dy * scale4 + self.pool.backward(dpooled, pool_cache, grads)


# --- the task models ---------------------------------------------------------------------------------------


def _digits_mlp(model):
    return Sequential([FlattenNCHW(), Linear(model, "fc1"), ReLU(), Linear(model, "fc2")])


def _lenet5(model):
    return Sequential([
        Conv2d(model, "conv1", 1, 0, bias=True, input_grad=False), ReLU(), MaxPool2(),
        Conv2d(model, "conv2", 1, 0, bias=True), ReLU(), MaxPool2(),
        FlattenNCHW(),
        Linear(model, "fc1"), ReLU(), Linear(model, "fc2"), ReLU(), Linear(model, "fc3"),
    ])


# torchvision mobilenet_v3_small: (kernel, expanded, out, squeeze-excite, activation, stride) per block.
MOBILENET_V3_SMALL_BLOCKS = (
    (3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1),
)


def _mobilenet_v3_small(model):
    eps, momentum = MOBILENET_BN_EPS, MOBILENET_BN_MOMENTUM

    def conv_bn(prefix, stride, padding, activation, depthwise=False, input_grad=True):
        layers = [Conv2d(model, prefix + ".0", stride, padding, depthwise=depthwise, input_grad=input_grad),
                  BatchNorm(model, prefix + ".1", eps, momentum)]
        if activation is not None:
            layers.append(Hardswish() if activation == "HS" else ReLU())
        return layers

    layers = conv_bn("features.0", 2, 1, "HS", input_grad=False)
    channels = 16
    for index, (kernel, expanded, out, squeeze, activation, stride) in enumerate(MOBILENET_V3_SMALL_BLOCKS, 1):
        prefix, block, part = f"features.{index}.block", [], 0
        if expanded != channels:
            block += conv_bn(f"{prefix}.{part}", 1, 0, activation)
            part += 1
        block += conv_bn(f"{prefix}.{part}", stride, (kernel - 1) // 2, activation, depthwise=True)
        part += 1
        if squeeze:
            block.append(SqueezeExcitation(model, f"{prefix}.{part}"))
            part += 1
        block += conv_bn(f"{prefix}.{part}", 1, 0, None)
        layers.append(Sequential(block, residual=stride == 1 and channels == out))
        channels = out
    layers += conv_bn("features.12", 1, 0, "HS")
    layers += [GlobalAvgPool(), Linear(model, "classifier.0"), Hardswish(), Dropout(), Linear(model, "classifier.3")]
    return Sequential(layers)


NETWORKS = {"digits_mlp": _digits_mlp, "lenet5": _lenet5, "mobilenet_v3_small": _mobilenet_v3_small}
DROPOUT_FEATURES = {"mobilenet_v3_small": 1024}  # width of the layer before the classifier's dropout
BUFFER_SUFFIXES = (".running_mean", ".running_var")


class _StepContext:
    def __init__(self, dropout=None):
        self.updates = []
        self.dropout = dropout


class TrainingModel(tf.Module):
    def __init__(self, model_name: str):
        super().__init__(name=model_name)
        self.model_name = model_name
        self.specs = model_layout(model_name)
        # Zeros: every use starts with set_weights; zero-filled constants also compress away.
        self.weights = [tf.Variable(tf.zeros(spec.shape, tf.float32), name=weight_key(i))
                        for i, spec in enumerate(self.specs)]
        self._by_name = {}
        for spec, variable in zip(self.specs, self.weights, strict=True):
            variable.name_ = spec.name  # canonical name, for gradient bookkeeping
            self._by_name[spec.name] = variable
        self.trainable = [v for v in self.weights if not v.name_.endswith(BUFFER_SUFFIXES)]
        self.velocities = [tf.Variable(tf.zeros(v.shape, tf.float32), name=f"v_{v.name_}") for v in self.trainable]
        self.anchors = [tf.Variable(tf.zeros(v.shape, tf.float32), name=f"g_{v.name_}") for v in self.trainable]
        self._used = set()
        self.network = NETWORKS[model_name](self)
        unused = set(self._by_name) - self._used
        if unused:
            raise AssertionError(f"{model_name}: layout weights the network does not use: {sorted(unused)}")
        task = next(t for t in TASKS.values() if t.model == model_name)
        self.input_shape = task.input_shape
        self.num_classes = task.num_classes
        self.dropout_features = DROPOUT_FEATURES.get(model_name)

    def var(self, name):
        self._used.add(name)
        return self._by_name[name]

    def _step(self, x, y, lr, momentum, mu, dropout):
        ctx = _StepContext(dropout)
        logits, caches = self.network.forward(x, True, ctx)
        log_probs = tf.nn.log_softmax(logits)
        onehot = tf.one_hot(y, self.num_classes, dtype=tf.float32)
        count = tf.cast(tf.shape(x)[0], tf.float32)
        loss = -tf.reduce_sum(onehot * log_probs) / count
        dlogits = (tf.exp(log_probs) - onehot) / count
        grads = {}
        self.network.backward(dlogits, caches, grads)
        for param, velocity, anchor in zip(self.trainable, self.velocities, self.anchors, strict=True):
            # FedProx: mu/2 * ||p - p_global||^2 adds mu * (p - p_global) to the gradient.
            new_velocity = momentum * velocity + grads[param.name_] + mu * (param - anchor)
            velocity.assign(new_velocity)
            param.assign_sub(lr * new_velocity)
        for variable, value in ctx.updates:
            variable.assign(value)
        return {"loss": loss}

    def signatures(self):
        h, w, c = self.input_shape
        x_spec = tf.TensorSpec([None, h, w, c], tf.float32, name="x")
        y_spec = tf.TensorSpec([None], tf.int32, name="y")
        # lr and momentum are 1-element vectors, not scalars: the signature runner resizes every input
        # before each call, and resizing a 0-d input (empty dims) crashes ai-edge-litert 2.3's aarch64
        # wheel (SIGSEGV in InterpreterWrapper::ResizeInputTensor, seen under qemu-user; the x86-64
        # wheel does not), which is every Raspberry Pi and Jetson (tests/backends/test_litert_cpu_kinds.py).
        def hyper(name):
            return tf.TensorSpec([1], tf.float32, name=name)

        if self.dropout_features:
            @tf.function(input_signature=[x_spec, y_spec, hyper("lr"), hyper("momentum"), hyper("mu"),
                                          tf.TensorSpec([None, self.dropout_features], tf.float32, name="dropout")])
            def train(x, y, lr, momentum, mu, dropout):
                return self._step(x, y, lr[0], momentum[0], mu[0], dropout)
        else:
            @tf.function(input_signature=[x_spec, y_spec, hyper("lr"), hyper("momentum"), hyper("mu")])
            def train(x, y, lr, momentum, mu):
                return self._step(x, y, lr[0], momentum[0], mu[0], None)

        @tf.function(input_signature=[x_spec])
        def infer(x):
            logits, _ = self.network.forward(x, False, _StepContext())
            return {"logits": logits}

        @tf.function(input_signature=[])
        def get_weights():
            return {weight_key(i): tf.identity(v) for i, v in enumerate(self.weights)}

        @tf.function(input_signature=[tf.TensorSpec(spec.shape, tf.float32, name=weight_key(i))
                                      for i, spec in enumerate(self.specs)])
        def set_weights(*arrays):
            for variable, array in zip(self.weights, arrays, strict=True):
                variable.assign(array)
            for velocity in self.velocities:
                velocity.assign(tf.zeros(velocity.shape, tf.float32))
            for anchor, param in zip(self.anchors, self.trainable, strict=True):
                anchor.assign(param)
            return {"ok": tf.constant(1, tf.int32)}

        return {"train": train, "infer": infer, "get_weights": get_weights, "set_weights": set_weights}


# --- conversion ----------------------------------------------------------------------------------------------

# A model that uses any of these is not builtin-only (CUSTOM carries Flex and custom ops).
NOT_BUILTIN = ("CUSTOM", "DELEGATE")


def operator_names(tflite: bytes) -> list[str]:
    """The sorted operator names of every subgraph of a .tflite flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(tflite, 0)
    codes = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    names = set()
    for code in model.operatorCodes:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = codes.get(builtin, f"UNKNOWN_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{code.customCode.decode() if code.customCode else '?'}"
        names.add(name)
    return sorted(names)


def convert(model_name: str) -> tuple[bytes, dict]:
    module = TrainingModel(model_name)
    signatures = module.signatures()
    with tempfile.TemporaryDirectory() as directory:
        tf.saved_model.save(module, directory, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory, signature_keys=list(signatures))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True
        tflite = converter.convert()
    ops = operator_names(tflite)
    bad = [op for op in ops if op.startswith(NOT_BUILTIN)]
    if bad:
        raise RuntimeError(f"{model_name}: the converted model uses non-builtin ops {bad}")
    described = {}
    for key, function in signatures.items():
        concrete = function.get_concrete_function()
        described[key] = {
            "inputs": [spec.name for spec in concrete.structured_input_signature[0]],
            "outputs": sorted(concrete.structured_outputs),
        }
    info = {
        "model": model_name,
        "file": f"{model_name}.tflite",
        "bytes": len(tflite),
        "sha256": hashlib.sha256(tflite).hexdigest(),
        "tensorflow": tf.__version__,
        "input_layout": "NHWC float32, normalised as the task says; batch dimension dynamic",
        "dropout_features": module.dropout_features,
        "signatures": described,
        "ops": ops,
    }
    return tflite, info


def build(directory: Path, models: list[str]) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {"format": 1, "models": {}}
    for name in models:
        tflite, info = convert(name)
        (directory / info["file"]).write_bytes(tflite)
        manifest["models"][name] = info
        print(f"{directory / info['file']}: {len(tflite)} bytes, {len(info['ops'])} op kinds, "
              f"sha256 {info['sha256'][:16]}")
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SHIPPED_MODELS, help="directory to write (default: %(default)s)")
    parser.add_argument("models", nargs="*", default=list(NETWORKS), help="models to build (default: all)")
    args = parser.parse_args(argv)
    tf.config.experimental.enable_op_determinism()
    np.random.seed(0)
    build(args.out, args.models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
