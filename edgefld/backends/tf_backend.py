"""The TensorFlow training backend: the torch backend's training, step for step, in Keras models.

It computes what ``torch_backend`` computes, so boards running either train the
same global model: the same input normalisation, SGD with momentum in torch's
form (v = m v + g; p -= lr v) with fresh zero velocities on every train() call,
mean cross-entropy per batch, BatchNorm with torch's running statistics
(``tf_models.TorchBatchNorm``), the same shuffle order (``shuffle_orders``) and
the same merging of a lone trailing sample into the batch before it.

Images stay uint8 (N x H x W x C, as stored) until a batch is gathered inside
the compiled step, where it is normalised: a quarter of the memory float32
inputs would take, which a Raspberry Pi 4 feels. Weights enter and leave only in
the canonical layout (``layout.py``); ``tf_models`` converts.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf  # noqa: E402  (after tf_models, see above)

from edgefld.backends import tf_models  # sets KERAS_BACKEND and TensorFlow's log level before importing it
from edgefld.backends.base import (
    EvalResult,
    TrainResult,
    Weights,
    batch_slices,
    check_batch_size,
    check_images,
    check_inputs,
    check_proximal_mu,
    check_training_call,
    shuffle_orders,
)
from edgefld.errors import BackendUnavailable
from edgefld.tasks import Task

# Device names as the rest of edgefl spells them ([client] device): "cuda" is an NVIDIA GPU.
DEVICES = ("cpu", "cuda")
_TF_DEVICES = {"cpu": "/CPU:0", "cuda": "/GPU:0"}


def create_backend(device: str = "cpu", threads: int | None = None) -> TFBackend:
    """The TensorFlow backend on ``device``; ``threads`` sets TensorFlow's CPU thread pools.

    TensorFlow fixes its thread pools when it first runs an op, so ``threads`` takes
    effect only in a process that has not used TensorFlow yet (a client's training
    process creates one backend, first); asking a running TensorFlow for other
    thread counts is a RuntimeError rather than a setting silently ignored.
    """
    if device not in DEVICES:
        raise BackendUnavailable(f'the tensorflow backend has no device "{device}"; devices: {", ".join(DEVICES)}')
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads is {threads}: it must be at least 1")
        _set_threads(threads)
    if device == "cuda" and not tf.config.list_physical_devices("GPU"):
        raise BackendUnavailable(
            f"device cuda: this TensorFlow ({tf.__version__}, built with CUDA: "
            f"{'yes' if tf.test.is_built_with_cuda() else 'no'}) sees no GPU; use device cpu, "
            "or on a Jetson install NVIDIA's l4t TensorFlow for its JetPack"
        )
    return TFBackend(device)


def _set_threads(threads: int) -> None:
    # intra-op: the threads one op (a convolution, a matmul) splits over. inter-op: how
    # many independent ops run at once; a small sequential model has little of that,
    # and the two pools together must not use more cores than the board allows.
    config = tf.config.threading
    wanted = (threads, 1)
    if (config.get_intra_op_parallelism_threads(), config.get_inter_op_parallelism_threads()) == wanted:
        return
    try:
        config.set_intra_op_parallelism_threads(wanted[0])
        config.set_inter_op_parallelism_threads(wanted[1])
    except RuntimeError:
        raise RuntimeError(
            f"threads = {threads}: TensorFlow has already started in this process with "
            f"{config.get_intra_op_parallelism_threads() or 'its default'} threads; "
            "its thread pools are set once, before its first operation"
        ) from None


class TFBackend:
    name = "tensorflow"

    def __init__(self, device: str) -> None:
        self.device = device
        self._tf_device = _TF_DEVICES[device]
        # One compiled model per task, reused across rounds: every call overwrites all
        # of its weights, so construction and tracing are paid once. Keyed by the whole
        # task, not its model name: the compiled steps hold its normalisation and SGD settings.
        self._models: dict[Task, _CompiledModel] = {}

    def initial_weights(self, task: Task, seed: int = 0) -> Weights:
        # Drawn by numpy on the host, as torch draws them: the same on every device.
        return self._model(task).task_model.initial_weights(seed)

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
        compiled = self._model(task)
        compiled.task_model.set_weights(weights)
        check_inputs(task, images, labels)
        num_examples = len(images)
        start = time.perf_counter()
        with tf.device(self._tf_device):
            pixels, targets = tf.constant(images), tf.constant(labels.astype(np.int32))
            compiled.reset_for_training(seed, proximal_mu)
            loss_sum = tf.zeros((), tf.float64)
            for order in shuffle_orders(num_examples, epochs, seed):
                # Summed on the device: reading each batch's loss would stall a GPU every step.
                loss_sum = tf.zeros((), tf.float64)
                for batch in batch_slices(num_examples, batch_size):
                    indices = tf.constant(order[batch].astype(np.int32))
                    batch_loss = compiled.train_step(pixels, targets, indices)
                    loss_sum += tf.cast(batch_loss, tf.float64) * (batch.stop - batch.start)
            last_epoch_loss = float(loss_sum.numpy()) / num_examples
        seconds = time.perf_counter() - start
        return TrainResult(compiled.task_model.get_weights(), last_epoch_loss, num_examples, seconds)

    def evaluate(
        self, task: Task, weights: Weights, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 256
    ) -> EvalResult:
        check_batch_size(batch_size)
        compiled = self._model(task)
        compiled.task_model.set_weights(weights)
        check_inputs(task, images, labels)
        start = time.perf_counter()
        with tf.device(self._tf_device):
            loss_sum = tf.zeros((), tf.float64)
            correct = tf.zeros((), tf.int64)
            for first in range(0, len(images), batch_size):
                batch_loss, batch_correct = compiled.eval_step(
                    tf.constant(images[first : first + batch_size]),
                    tf.constant(labels[first : first + batch_size].astype(np.int32)),
                )
                loss_sum += batch_loss
                correct += batch_correct
            num_examples = len(images)
            loss, accuracy = float(loss_sum.numpy()) / num_examples, int(correct.numpy()) / num_examples
        seconds = time.perf_counter() - start
        return EvalResult(loss, accuracy, num_examples, seconds)

    def predict(self, task: Task, weights: Weights, images: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
        check_batch_size(batch_size)
        compiled = self._model(task)
        compiled.task_model.set_weights(weights)
        check_images(task, images)
        with tf.device(self._tf_device):
            logits = [
                compiled.logits(tf.constant(images[first : first + batch_size])).numpy()
                for first in range(0, len(images), batch_size)
            ]
        return np.concatenate(logits)

    def _model(self, task: Task) -> _CompiledModel:
        compiled = self._models.get(task)
        if compiled is None:
            with tf.device(self._tf_device):
                compiled = _CompiledModel(task)
            self._models[task] = compiled
        return compiled


class _CompiledModel:
    """A task's Keras model with its momentum buffers and compiled (tf.function) steps.

    Each step takes whole batches of uint8 images; the batch dimension is left open
    in the signatures, so the shorter last batch does not trace a second graph.
    """

    def __init__(self, task: Task) -> None:
        self.task = task
        self.task_model = tf_models.build_model(task)
        model = self.task_model.model
        self._parameters = model.trainable_variables
        self._velocities = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in self._parameters]
        # FedProx: the round's global parameters and mu (0: plain SGD); variables, so one graph serves every round.
        self._anchors = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in self._parameters]
        self._proximal_mu = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        self._learning_rate = task.learning_rate
        self._momentum = task.momentum
        self._scale = tf.constant(task.pixel_max, tf.float32)
        self._mean = tf.constant(task.mean, tf.float32)
        self._std = tf.constant(task.std, tf.float32)
        image_spec = tf.TensorSpec((None, *task.input_shape), tf.uint8)
        label_spec = tf.TensorSpec((None,), tf.int32)
        self.train_step = tf.function(
            self._train_step, input_signature=[image_spec, label_spec, tf.TensorSpec((None,), tf.int32)]
        )
        self.eval_step = tf.function(self._eval_step, input_signature=[image_spec, label_spec])
        self.logits = tf.function(self._logits, input_signature=[image_spec])

    def reset_for_training(self, seed: int, proximal_mu: float = 0.0) -> None:
        # Fresh zero momentum on every train() call, as the torch backend (and the seed) do.
        for velocity in self._velocities:
            velocity.assign(tf.zeros_like(velocity))
        for anchor, parameter in zip(self._anchors, self._parameters, strict=True):
            anchor.assign(parameter)
        self._proximal_mu.assign(proximal_mu)
        for dropout in self.task_model.dropouts:
            dropout.reseed(seed)

    def _normalised(self, images: tf.Tensor) -> tf.Tensor:
        # As torch_backend.model_inputs: / pixel_max, - mean, / std, in float32, per channel (last axis).
        return (tf.cast(images, tf.float32) / self._scale - self._mean) / self._std

    def _train_step(self, images: tf.Tensor, labels: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
        inputs = self._normalised(tf.gather(images, indices))
        targets = tf.gather(labels, indices)
        with tf.GradientTape() as tape:
            logits = self.task_model.model(inputs, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
        gradients = tape.gradient(loss, self._parameters)
        for parameter, velocity, gradient, anchor in zip(self._parameters, self._velocities, gradients,
                                                         self._anchors, strict=True):
            # FedProx's term mu/2 * ||w - w_global||^2 adds mu * (w - w_global) to the gradient (0 when mu is).
            gradient = gradient + self._proximal_mu * (parameter - anchor)
            # torch.optim.SGD(momentum, no dampening): v = m * v + g; p -= lr * v.
            velocity.assign(velocity * self._momentum + gradient)
            parameter.assign_sub(velocity * self._learning_rate)
        return loss

    def _eval_step(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        logits = self._logits(images)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        correct = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels)
        return tf.reduce_sum(tf.cast(losses, tf.float64)), tf.reduce_sum(tf.cast(correct, tf.int64))

    def _logits(self, images: tf.Tensor) -> tf.Tensor:
        return self.task_model.model(self._normalised(images), training=False)

