"""The shipped weight layouts are the torch models' own, and every backend is held to them."""

from __future__ import annotations

import numpy as np
import pytest

from edgefld.backends.layout import check_weights, model_layout, task_layout
from edgefld.tasks import TASKS, get_task

torch = pytest.importorskip("torch")
from edgefld.backends.torch_models import build_model, weight_tensors  # noqa: E402 - imports torch: after the skip


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_shipped_layout_is_the_torch_models(task_name):
    task = get_task(task_name)
    with torch.device("meta"):
        model = build_model(task)
    from_torch = [(name, tuple(tensor.shape)) for name, tensor in weight_tensors(model)]
    assert [(spec.name, spec.shape) for spec in task_layout(task)] == from_torch


def test_layouts_name_their_conventions():
    # MobileNetV3-small: the stem conv is OIHW, the first depthwise conv (C, 1, kh, kw),
    # the classifier's linear layers (out, in); BatchNorm carries its running statistics.
    specs = {spec.name: spec.shape for spec in model_layout("mobilenet_v3_small")}
    assert specs["features.0.0.weight"] == (16, 3, 3, 3)
    assert specs["features.1.block.0.0.weight"] == (16, 1, 3, 3)
    assert specs["classifier.3.weight"] == (10, 1024)
    assert specs["features.0.1.running_var"] == (16,)
    assert not any(name.endswith("num_batches_tracked") for name in specs)


def test_check_weights_names_the_first_wrong_array():
    task = get_task("digits")
    good = [np.zeros(spec.shape, np.float32) for spec in task_layout(task)]
    check_weights(task, good)
    with pytest.raises(ValueError, match=r"has 4 weight arrays; got 3"):
        check_weights(task, good[:3])
    bad = list(good)
    bad[2] = np.zeros((64, 10), np.float32)
    with pytest.raises(ValueError, match=r"weight 2 \(fc2\.weight\): expected shape \(10, 64\), got \(64, 10\)"):
        check_weights(task, bad)
    bad[2] = good[2].astype(np.float64)
    with pytest.raises(ValueError, match=r"weight 2 \(fc2\.weight\): expected dtype float32, got float64"):
        check_weights(task, bad)


def test_unknown_model_is_a_key_error():
    with pytest.raises(KeyError, match="no weight layout for model"):
        model_layout("resnet152")
