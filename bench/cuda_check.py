#!/usr/bin/env python3
"""The torch backend on a CUDA GPU against the same backend on the CPU: `python bench/cuda_check.py`.

For each task: the same seed's weights trained for one epoch on cuda and on cpu (the training
order and dropout masks are the backend's, so both see the same batches), the largest weight
difference relative to the weights' scale, validation on each device, and the time of each.
Exits 1 when cuda is not available or a task's weights differ by more than TOLERANCE (cuDNN and
TF32 are left at torch's defaults, as on a Jetson: the figure is what a board gets).
"""

from __future__ import annotations

import sys
import time

import numpy as np

TOLERANCE = 1e-2  # relative to the largest weight; float32 on two devices, one epoch of SGD


def main() -> int:
    import torch

    from edgefld.backends.torch_backend import create_backend
    from edgefld.tasks import TASKS

    if not torch.cuda.is_available() and "--cpu-only" not in sys.argv:
        print("cuda_check: torch sees no CUDA GPU", file=sys.stderr)
        return 1
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (--cpu-only)"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {gpu}")
    # --cpu-only: the script's own check on a machine without a GPU (the "cuda" side runs on the CPU too).
    other = "cpu" if "--cpu-only" in sys.argv else "cuda"
    worst = 0.0
    for name, samples in (("digits", 512), ("mnist", 512), ("cifar10", 128)):
        task = TASKS[name]
        rng = np.random.default_rng(0)
        shape = (samples, *task.input_shape)
        images = rng.integers(0, 256, size=shape, dtype=np.uint8)  # as stored: H, W, C uint8
        labels = rng.integers(0, task.num_classes, size=samples).astype(np.int64)
        results = {}
        for key, device in (("cpu", "cpu"), ("cuda", other)):
            backend = create_backend(device)
            weights = backend.initial_weights(task, seed=1)
            backend.train(task, weights, images[:64], labels[:64], epochs=1, batch_size=32, seed=3)  # warm-up
            started = time.perf_counter()
            trained = backend.train(task, weights, images, labels, epochs=1, batch_size=32, seed=7)
            seconds = time.perf_counter() - started
            validation = backend.evaluate(task, trained.weights, images, labels)
            results[key] = (trained, seconds, validation)
        cpu, cuda = results["cpu"][0], results["cuda"][0]
        scale = max(float(np.max(np.abs(w))) for w in cpu.weights)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(cpu.weights, cuda.weights, strict=True))
        worst = max(worst, diff / scale)
        print(f"{name}: {samples} samples, 1 epoch: cpu {results['cpu'][1]:.3f} s, cuda {results['cuda'][1]:.3f} s; "
              f"loss cpu {cpu.loss:.5f} cuda {cuda.loss:.5f}; max weight diff {diff:.2e} "
              f"({diff / scale:.2e} of the largest weight); accuracy cpu {results['cpu'][2].accuracy:.4f} "
              f"cuda {results['cuda'][2].accuracy:.4f}")
    print(f"worst relative difference {worst:.2e} (tolerance {TOLERANCE:g})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
