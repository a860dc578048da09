"""Run training steps of a shipped LiteRT model on a saved case; write every step's weights.

    python tests/backends/litert_steps.py CASE.npz OUT.npz [--builtin-kernels] [--threads N]

Needs only numpy, ai-edge-litert and edgefld's pure-Python modules: it is what the
numerics tests run on another kind of CPU (tests/backends/cpu_kinds.py: under
qemu-user, x86-64 without AVX-512 and aarch64), with the torch float64 reference
computed back on the host (tests/backends/numerics.py). The signatures are driven
directly, as the backend drives them, so both sides see the same batch and dropout
mask.

CASE.npz: ``task`` (name), ``x`` (normalised NHWC float32), ``y`` (int32), ``masks``
(steps x N x features float32 dropout multipliers, or steps x 0 for a model without
dropout), ``w000``...: the starting weights. OUT.npz: ``s{step}_w{index}`` (weights
after each step, from 0), ``losses`` and ``logits`` (evaluation-mode logits of the
starting weights on ``x``), and ``kind``, what the CPU reported.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

# Runnable from a checkout (or a copy of it under qemu) without installing edgefl.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgefld.backends import litert_backend  # noqa: E402 - importable once sys.path holds the repository (above)
from edgefld.tasks import get_task  # noqa: E402 - likewise


def weights_of(arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [arrays[key] for key in sorted(key for key in arrays if key.startswith("w") and key[1:].isdigit())]


def run_steps(case: dict[str, np.ndarray], *, default_delegates: bool = True,
              threads: int | None = None) -> dict[str, np.ndarray]:
    """The LiteRT side of a case: every step's weights and loss, and the starting logits."""
    task = get_task(str(case["task"]))
    backend = litert_backend.create_backend("cpu", threads, default_delegates=default_delegates)
    start = weights_of(case)
    model = backend._model_with(task, start)
    logits = model.logits(case["x"]).copy()
    model.set_weights(start)
    out: dict[str, np.ndarray] = {"logits": logits}
    losses = []
    for step, mask in enumerate(case["masks"]):
        inputs = {"x": case["x"], "y": case["y"], "lr": litert_backend.hyperparameter(task.learning_rate),
                  "momentum": litert_backend.hyperparameter(task.momentum), "mu": litert_backend.hyperparameter(0.0)}
        if mask.size:
            inputs["dropout"] = mask
        losses.append(float(model.runners["train"](**inputs)["loss"]))
        for index, array in enumerate(model.get_weights()):
            out[f"s{step}_w{index:03d}"] = array
    out["losses"] = np.asarray(losses)
    out["kind"] = np.asarray(cpu_kind())
    return out


def cpu_kind() -> str:
    """The machine and the SIMD extensions numpy found: which kernels XNNPACK could choose."""
    features = ""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as found  # numpy 2

        wanted = ("AVX512F", "AVX512_SPR", "AVX2", "FMA3", "ASIMD", "ASIMDHP", "ASIMDDP", "SVE")
        features = " ".join(name for name in wanted if found.get(name))
    except ImportError:
        pass
    return f"{platform.machine()} {features}".strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("case", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--builtin-kernels", action="store_true", help="LiteRT's builtin kernels, without XNNPACK")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    with np.load(args.case) as loaded:
        case = dict(loaded)
    result = run_steps(case, default_delegates=not args.builtin_kernels, threads=args.threads)
    np.savez(args.out, **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
