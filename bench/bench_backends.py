"""Training throughput and memory of each training backend, one epoch per task and backend.

    python bench/bench_backends.py                                  # torch and tensorflow, digits and mnist
    python bench/bench_backends.py --backends torch,tensorflow --tasks mnist --samples 2000 --threads 1
    python bench/bench_backends.py --tasks cifar10 --samples 256    # MobileNetV3-small: slow on 2 cores

Each task x backend runs in a process of its own, so its figures are that pair's
alone: "after import" is the RSS once the backend's framework is imported and the
backend created (what a board pays before any data), "peak" the most RSS the
process used (framework, model, data and training). The images are random:
throughput does not depend on what they show. A backend that is not installed
is reported as such and skipped.

The resource guard's memory table (MEMORY_FIGURES in edgefld/guards.py) is the
peak and after-import RSS of this script at --batch-size 8 and 64 (--threads 1);
rerun it on a new board or framework release and update the table.
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

from edgefld.backends.base import BACKEND_MODULES  # noqa: E402 - importable once sys.path holds the repository (above)
from edgefld.tasks import TASKS, get_task  # noqa: E402 - likewise

DEFAULT_BACKENDS = ("torch", "tensorflow")
DEFAULT_TASKS = ("digits", "mnist")
# Small enough for a 2-core machine to finish each pair in seconds.
DEFAULT_SAMPLES = {"digits": 2000, "mnist": 2000, "cifar10": 256}


def measure(backend_name: str, task_name: str, samples: int, batch_size: int, device: str,
            threads: int | None) -> dict[str, object]:
    """Train one epoch of ``task_name`` with ``backend_name`` in this process; return the figures."""
    from edgefld.backends.base import load_backend

    backend = load_backend(backend_name, device=device, threads=threads)
    # ru_maxrss is in KiB on Linux. The framework's own share: a CUDA build of torch maps far more than a CPU-only one.
    import_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    task = get_task(task_name)
    rng = np.random.default_rng(0)
    images = rng.integers(0, int(task.pixel_max) + 1, size=(samples, *task.input_shape), dtype=np.uint8)
    labels = rng.integers(0, task.num_classes, size=samples)
    weights = backend.initial_weights(task)
    # One untimed batch first: the first step pays one-off set-up (graph tracing, kernel
    # selection, allocator growth) that a board pays once per process, not once per epoch.
    backend.train(task, weights, images[:batch_size], labels[:batch_size], epochs=1, batch_size=batch_size)
    result = backend.train(task, weights, images, labels, epochs=1, batch_size=batch_size)
    peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "backend": backend_name,
        "task": task_name,
        "model": task.model,
        "samples": samples,
        "batch_size": batch_size,
        "device": device,
        "threads": threads or "auto",
        "seconds": round(result.seconds, 3),
        "samples_per_second": round(samples / result.seconds, 1),
        "peak_rss_mib": round(peak_rss_kib / 1024, 1),
        "rss_after_import_mib": round(import_rss_kib / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                        help=f"comma-separated, of {', '.join(BACKEND_MODULES)} (default: %(default)s)")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(DEFAULT_TASKS))
    parser.add_argument("--samples", type=int, help=f"training samples per task (default: {DEFAULT_SAMPLES})")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, help="CPU threads (default: each framework's own choice)")
    parser.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")
    parser.add_argument("--in-process", nargs=2, metavar=("BACKEND", "TASK"), help=argparse.SUPPRESS)  # a child
    args = parser.parse_args()

    if args.in_process:
        backend_name, task_name = args.in_process
        samples = args.samples or DEFAULT_SAMPLES[task_name]
        print(json.dumps(measure(backend_name, task_name, samples, args.batch_size, args.device, args.threads)))
        return

    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = [name for name in backends if name not in BACKEND_MODULES]
    if unknown:
        parser.error(f"unknown backend {', '.join(unknown)}; backends: {', '.join(BACKEND_MODULES)}")
    from edgefld.backends.catalog import installed_backends

    installed = installed_backends()
    if not args.json:
        print(f"{'backend':10} {'task':8} {'samples':>7} {'batch':>5} {'threads':>7} {'seconds':>8} "
              f"{'samples/s':>10} {'peak RSS MiB':>12} {'RSS after import':>16}")
    for backend_name in backends:
        if backend_name not in installed:
            print(f"{backend_name:10} not installed", file=sys.stderr)
            continue
        for task_name in args.tasks:
            child = [sys.executable, __file__, "--in-process", backend_name, task_name,
                     "--batch-size", str(args.batch_size), "--device", args.device]
            if args.samples:
                child += ["--samples", str(args.samples)]
            if args.threads:
                child += ["--threads", str(args.threads)]
            # stderr passes through, so a failing child's traceback is seen.
            completed = subprocess.run(child, stdout=subprocess.PIPE, text=True)
            if completed.returncode != 0:
                print(f"{backend_name:10} {task_name:8} failed (exit status {completed.returncode})", file=sys.stderr)
                continue
            figures = json.loads(completed.stdout.strip().splitlines()[-1])
            if args.json:
                print(json.dumps(figures))
            else:
                print(f"{figures['backend']:10} {figures['task']:8} {figures['samples']:>7} "
                      f"{figures['batch_size']:>5} {figures['threads']:>7} {figures['seconds']:>8.2f} "
                      f"{figures['samples_per_second']:>10.1f} {figures['peak_rss_mib']:>12.1f} "
                      f"{figures['rss_after_import_mib']:>16.1f}", flush=True)


if __name__ == "__main__":
    main()
