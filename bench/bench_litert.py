"""Training throughput and peak memory of the LiteRT backend, one epoch per task.

    python bench/bench_litert.py                      # digits, mnist, cifar10
    python bench/bench_litert.py --samples 2000 --tasks mnist --threads 1
    python bench/bench_litert.py --threads 1 --compare-delegates  # XNNPACK (as shipped) vs builtin kernels

Meant to run where a board would: in an environment with ai-edge-litert and
no torch or TensorFlow (tests/backends/test_litert_only.py builds one), since
the point of this backend is the memory it does not use. Each task runs in a
process of its own, so its peak RSS is that task's alone (the interpreter, the
model, the data and training). The images are random: throughput does not
depend on what they show.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

# Runnable from a checkout without installing edgefl.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgefld.tasks import TASKS, get_task  # noqa: E402 - importable once sys.path holds the repository (above)

# Small enough for a 2-core machine to finish each task in seconds.
DEFAULT_SAMPLES = {"digits": 2000, "mnist": 2000, "cifar10": 256}


def measure(task_name: str, samples: int, batch_size: int, device: str, threads: int | None,
            default_delegates: bool = True) -> dict[str, object]:
    """Train one epoch of ``task_name`` in this process; return the figures as a dict."""
    from edgefld.backends.litert_backend import create_backend

    # ru_maxrss is in KiB on Linux.
    import_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    task = get_task(task_name)
    backend = create_backend(device=device, threads=threads, default_delegates=default_delegates)
    rng = np.random.default_rng(0)
    images = rng.integers(0, int(task.pixel_max) + 1, size=(samples, *task.input_shape), dtype=np.uint8)
    labels = rng.integers(0, task.num_classes, size=samples)
    weights = backend.initial_weights(task)
    # One untimed batch first: the first step pays one-off set-up (kernel selection,
    # allocator growth) that a board pays once per process, not once per epoch.
    backend.train(task, weights, images[:batch_size], labels[:batch_size], epochs=1, batch_size=batch_size)
    result = backend.train(task, weights, images, labels, epochs=1, batch_size=batch_size)
    peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "task": task_name,
        "model": task.model,
        "samples": samples,
        "batch_size": batch_size,
        "device": device,
        "threads": threads or "default",
        "kernels": "xnnpack" if default_delegates else "builtin",
        "runtime": backend.runtime,
        "heavy_modules": sorted(m for m in ("torch", "tensorflow") if m in sys.modules),
        "seconds": round(result.seconds, 3),
        "samples_per_second": round(samples / result.seconds, 1),
        "peak_rss_mib": round(peak_rss_kib / 1024, 1),
        "rss_after_import_mib": round(import_rss_kib / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(DEFAULT_SAMPLES))
    parser.add_argument("--samples", type=int, help=f"training samples per task (default: {DEFAULT_SAMPLES})")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", choices=("cpu",), default="cpu")
    parser.add_argument("--threads", type=int, help="interpreter threads (default: LiteRT's own choice)")
    parser.add_argument("--builtin-kernels", action="store_true",
                        help="LiteRT's builtin kernels without XNNPACK (boards train with XNNPACK)")
    parser.add_argument("--compare-delegates", action="store_true",
                        help="each task twice: with XNNPACK (as shipped) and with the builtin kernels")
    parser.add_argument("--json", action="store_true", help="one JSON object per task instead of a table")
    parser.add_argument("--in-process", metavar="TASK", help=argparse.SUPPRESS)  # the per-task child
    args = parser.parse_args()

    if args.in_process:
        samples = args.samples or DEFAULT_SAMPLES[args.in_process]
        print(json.dumps(measure(args.in_process, samples, args.batch_size, args.device, args.threads,
                                 default_delegates=not args.builtin_kernels)))
        return

    if not args.json:
        print(f"{'task':8} {'model':19} {'kernels':8} {'samples':>7} {'batch':>5} {'threads':>7} {'seconds':>8} "
              f"{'samples/s':>10} {'peak RSS MiB':>12} {'after import':>12}")
    variants = [False, True] if args.compare_delegates else [args.builtin_kernels]
    for task_name, builtin in ((task, builtin) for task in args.tasks for builtin in variants):
        child = [sys.executable, __file__, "--in-process", task_name, "--batch-size", str(args.batch_size),
                 "--device", args.device]
        if args.samples:
            child += ["--samples", str(args.samples)]
        if args.threads:
            child += ["--threads", str(args.threads)]
        if builtin:
            child += ["--builtin-kernels"]
        # stderr passes through, so a failing child's traceback is seen.
        figures = json.loads(subprocess.run(child, check=True, stdout=subprocess.PIPE, text=True).stdout)
        if args.json:
            print(json.dumps(figures))
        else:
            print(f"{figures['task']:8} {figures['model']:19} {figures['kernels']:8} {figures['samples']:>7} "
                  f"{figures['batch_size']:>5} "
                  f"{str(figures['threads']):>7} {figures['seconds']:>8.2f} {figures['samples_per_second']:>10.1f} "
                  f"{figures['peak_rss_mib']:>12.1f} {figures['rss_after_import_mib']:>12.1f}")


if __name__ == "__main__":
    main()
