"""Exports made with TensorFlow: a Keras model and a float32 ``.tflite`` model for LiteRT.

Both are built from ``tf_models.build_model(task, portable=True)``: the TensorFlow backend's
model made of Keras's own layers, so the ``.keras`` file loads with plain Keras (no edgefl
code), and the ``.tflite`` file, converted from it, holds builtin ops only and its weights
as constants: LiteRT (ai-edge-litert, tflite-runtime) runs it as it is, one ``serving_default``
signature, ``images`` -> ``logits``. The shipped training models (``backends/litert_models``)
are not used: they keep their weights in variables set at run time.

Imported only when one of these formats is asked for.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgefld.backends import tf_models  # sets KERAS_BACKEND and TensorFlow's log level before importing it
from edgefld.backends.base import Weights
from edgefld.tasks import Task

INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def _model(task: Task, weights: Weights) -> tf_models.TaskModel:
    task_model = tf_models.build_model(task, portable=True)
    task_model.set_weights(weights)
    return task_model


def keras(task: Task, weights: Weights) -> bytes:
    """``model.save`` of the portable Keras model (the .keras zip: architecture and weights)."""
    task_model = _model(task, weights)
    with tempfile.TemporaryDirectory(prefix="edgefl-keras-") as scratch:
        path = Path(scratch) / "model.keras"
        task_model.model.save(path)
        return path.read_bytes()


def tflite(task: Task, weights: Weights) -> bytes:
    """The portable model in evaluation mode, converted to a float32 TFLite flatbuffer (no quantisation,
    builtin ops only), NHWC float32 input of any batch size.

    Through a SavedModel written by Keras's ExportArchive, as TensorFlow's own from_keras_model does for
    Keras 3: converting a tf.function of the model directly keeps Keras 3's weights as resource variables
    the flatbuffer never initialises (logits NaN; TensorFlow 2.21)."""
    # Here, not at the top: tf_models (imported above) sets TensorFlow's environment before its first import.
    import tensorflow as tf
    from keras import export as keras_export

    model = _model(task, weights).model
    archive = keras_export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", lambda images: {OUTPUT_NAME: model(images, training=False)},
        [tf.TensorSpec((None, *task.input_shape), tf.float32, name=INPUT_NAME)])
    with tempfile.TemporaryDirectory(prefix="edgefl-tflite-") as scratch:
        archive.write_out(scratch, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(scratch)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        flatbuffer: bytes = converter.convert()
    return flatbuffer
