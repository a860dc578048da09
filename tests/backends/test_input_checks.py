"""One input check for every backend (edgefld.backends.base): the same bad call fails alike everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from edgefld.backends import base
from edgefld.backends.catalog import BACKENDS, installed_backends
from edgefld.tasks import TASKS

DIGITS = TASKS["digits"]


def _images(count: int = 4) -> np.ndarray:
    return np.zeros((count, *DIGITS.input_shape), np.uint8)


def _labels(count: int = 4) -> np.ndarray:
    return np.arange(count, dtype=np.int64) % DIGITS.num_classes


def _message(call) -> str:
    with pytest.raises(ValueError) as caught:
        call()
    return str(caught.value)


def test_input_checks_name_what_is_wrong_and_what_is_allowed():
    assert _message(lambda: base.check_images(DIGITS, _images().astype(np.float32))) == (
        "task digits takes uint8 images of shape N x (8, 8, 1); got float32 (4, 8, 8, 1)")
    assert _message(lambda: base.check_images(DIGITS, [[0]])) == (
        "task digits takes uint8 images of shape N x (8, 8, 1); got list ")
    assert _message(lambda: base.check_images(DIGITS, _images(0))) == "task digits: no images given"
    assert _message(lambda: base.check_labels(DIGITS, _labels().astype(np.float64), 4)) == (
        "expected 4 integer labels (one per image); got float64 (4,)")
    assert _message(lambda: base.check_labels(DIGITS, _labels(3), 4)) == (
        "expected 4 integer labels (one per image); got int64 (3,)")
    assert _message(lambda: base.check_labels(DIGITS, _labels() + 7, 4)) == (
        "task digits has classes 0..9; labels range 7..10")
    assert _message(lambda: base.check_labels(DIGITS, _labels() - 1, 4)) == (
        "task digits has classes 0..9; labels range -1..2")


def test_batch_and_epoch_counts_must_be_at_least_one():
    assert _message(lambda: base.check_training_call(0, 4)) == "epochs (0) and batch_size (4) must be at least 1"
    assert _message(lambda: base.check_training_call(1, 0)) == "epochs (1) and batch_size (0) must be at least 1"
    assert _message(lambda: base.check_batch_size(0)) == "batch_size (0) must be at least 1"
    base.check_training_call(1, 1)
    base.check_batch_size(1)
    base.check_inputs(DIGITS, _images(), _labels())


def _bad_calls(backend: base.Backend) -> dict[str, tuple]:
    """Each bad call of the Backend protocol, and the base check that must refuse it alike."""
    weights = backend.initial_weights(DIGITS)
    images, labels = _images(), _labels()
    floats = images.astype(np.float32)
    return {
        "float images to evaluate": (
            lambda: backend.evaluate(DIGITS, weights, floats, labels), lambda: base.check_images(DIGITS, floats)),
        "no images to predict": (
            lambda: backend.predict(DIGITS, weights, images[:0]), lambda: base.check_images(DIGITS, images[:0])),
        "float labels to train": (
            lambda: backend.train(DIGITS, weights, images, labels.astype(np.float64), epochs=1, batch_size=2),
            lambda: base.check_labels(DIGITS, labels.astype(np.float64), 4)),
        "a label out of range to evaluate": (
            lambda: backend.evaluate(DIGITS, weights, images, labels + 7),
            lambda: base.check_labels(DIGITS, labels + 7, 4)),
        "no epochs": (
            lambda: backend.train(DIGITS, weights, images, labels, epochs=0, batch_size=2),
            lambda: base.check_training_call(0, 2)),
        "batch size 0 to predict": (
            lambda: backend.predict(DIGITS, weights, images, batch_size=0), lambda: base.check_batch_size(0)),
    }


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_refuses_bad_input_with_the_base_checks_message(name):
    if name not in installed_backends():
        pytest.skip(f"{name} is not installed")
    backend = base.load_backend(name)
    for what, (call, check) in _bad_calls(backend).items():
        assert _message(call) == _message(check), what
