"""Per-op float32 error of LiteRT's kernels, with XNNPACK (as shipped) and without, against float64 numpy.

    python bench/litert_op_errors.py      # needs TensorFlow (to build one-op models) and ai-edge-litert

Each op of the training graphs is built alone as a .tflite model (shapes from MobileNetV3-small's
training step on 20 CIFAR images), run by LiteRT with its default delegate (XNNPACK) and with its
builtin kernels only, and compared with the same computation in float64. Errors are in units of
float32's spacing at the exact result (floored at 1e-3 of the output's scale, so that sums that
cancel to ~0 do not report huge figures). What it showed on x86-64 AVX-512 (2026-12-04): XNNPACK
computes HARD_SWISH as x * clamp(x/6 + 1/2, 0, 1) (48 ulp near -3 against the builtin's 2) and EXP
by a polynomial (2.6 ulp against 0.5); FULLY_CONNECTED and BATCH_MATMUL sum in another order (same
error size); CONV_2D, DEPTHWISE_CONV_2D, MEAN, SUM and DIV give identical results either way (their
filters are variables, which XNNPACK does not take). No op loses precision the way a reduced-precision
(bf16, fp16) path would (~1e5 ulp). Why the training steps still part: tests/backends/numerics.py.
"""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _convert(fn, shapes):
    import tensorflow as tf

    function = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32) for shape in shapes])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def _run(model: bytes, args, xnnpack: bool) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=model, experimental_op_resolver_type=resolver, num_threads=1)
    inputs = interpreter.get_input_details()
    for detail, array in zip(inputs, args, strict=True):
        interpreter.resize_tensor_input(detail["index"], array.shape)
    interpreter.allocate_tensors()
    for detail, array in zip(inputs, args, strict=True):
        interpreter.set_tensor(detail["index"], array)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _ulps(got: np.ndarray, exact: np.ndarray) -> float:
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    floor = np.spacing(np.float32(np.abs(exact).max() * 1e-3))
    return float((np.abs(got - exact) / np.maximum(spacing, floor)).max())


def cases(rng: np.random.Generator):
    import tensorflow as tf

    x = rng.normal(size=(20, 16, 16, 72)).astype(np.float32)
    variance = (np.abs(rng.normal(size=(72,))) + 1e-3).astype(np.float32)
    logits = (rng.normal(size=(20, 10)) * 3).astype(np.float32)
    padded = rng.normal(size=(20, 18, 18, 72)).astype(np.float32)
    depthwise = rng.normal(size=(3, 3, 72, 1)).astype(np.float32)
    conv = rng.normal(size=(3, 3, 72, 24)).astype(np.float32)
    patches, grads = rng.normal(size=(5120, 72)).astype(np.float32), rng.normal(size=(5120, 24)).astype(np.float32)
    features, weight = rng.normal(size=(20, 1024)).astype(np.float32), rng.normal(size=(1024, 576)).astype(np.float32)
    def f64(a):
        return a.astype(np.float64)

    def windows(a, k, out):
        a = f64(a)
        return sum(a[:, i:i + 16, j:j + 16, :] @ f64(k[i, j]) if out else a[:, i:i + 16, j:j + 16, :] * k[i, j, :, 0]
                   for i in range(3) for j in range(3))

    return [
        ("RSQRT", tf.math.rsqrt, [variance], lambda a: 1 / np.sqrt(f64(a))),
        ("HARD_SWISH", lambda a: a * tf.nn.relu6(a + 3.0) / 6.0, [x * 3],
         lambda a: f64(a) * np.clip(f64(a) + 3, 0, 6) / 6),
        ("MEAN", lambda a: tf.reduce_mean(a, axis=[0, 1, 2]), [x], lambda a: f64(a).mean(axis=(0, 1, 2))),
        ("SUM", lambda a: tf.reduce_sum(a, axis=[0, 1, 2]), [x], lambda a: f64(a).sum(axis=(0, 1, 2))),
        ("EXP", tf.exp, [x[:2]], lambda a: np.exp(f64(a))),
        ("LOG_SOFTMAX", tf.nn.log_softmax, [logits], lambda a: f64(a) - np.log(np.exp(f64(a)).sum(1, keepdims=True))),
        ("DIV", lambda a, b: a / b, [x[:2], x[:2] + 5], lambda a, b: f64(a) / b),
        ("DEPTHWISE_CONV_2D", lambda a, k: tf.nn.depthwise_conv2d(a, k, [1, 1, 1, 1], "VALID"), [padded, depthwise],
         lambda a, k: windows(a, k, False)),
        ("CONV_2D", lambda a, k: tf.nn.conv2d(a, k, [1, 1, 1, 1], "VALID"), [padded, conv],
         lambda a, k: windows(a, k, True)),
        ("BATCH_MATMUL (a 1x1 conv's filter gradient)", lambda a, b: tf.matmul(a, b, transpose_a=True),
         [patches, grads], lambda a, b: f64(a).T @ b),
        ("FULLY_CONNECTED", tf.matmul, [features, weight], lambda a, b: f64(a) @ b),
    ]


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'op':44} {'XNNPACK':>12} {'builtin':>12} {'max |XNNPACK - builtin|':>24}")
    for name, fn, args, exact in cases(rng):
        model = _convert(fn, [a.shape for a in args])
        reference = exact(*args)
        with_xnnpack, builtin = _run(model, args, True), _run(model, args, False)
        print(f"{name:44} {_ulps(with_xnnpack, reference):8.2f} ulp {_ulps(builtin, reference):8.2f} ulp "
              f"{float(np.abs(with_xnnpack - builtin).max()):24.3g}")


if __name__ == "__main__":
    main()
