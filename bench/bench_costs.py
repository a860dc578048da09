"""The "measured here" column of edgefl simulate's cost table (edgefld/simulation/costs.json).

    PYTHONPATH=. python bench/bench_costs.py                 # print the figures
    PYTHONPATH=. python bench/bench_costs.py --write         # and store them in costs.json's "measured"
    PYTHONPATH=. python bench/bench_costs.py --readme-table  # README's table of the board figures

For each installed backend x task (cifar10 only where the backend has its model), one process of its
own, on ONE thread (--threads 1: edgefl's models are small, so the estimate takes one core's
throughput for a board and does not assume that its other cores help):

- ``samples_per_s`` at each batch size a profile uses (8: tiny, 16: the others at [server] batch_size
  16, 32: large at batch_size 32), one epoch of random images after one untimed batch (the first
  step's one-off set-up is start-up, not throughput);
- ``startup_cold_s``: from spawning the interpreter to ready to train (Flower's ClientApp runtime,
  edgefl's ClientApp, the backend's framework imported, the backend created, the first batch done):
  what [client] clientapp_runtime = "flower" pays every round;
- ``startup_warm_s``: the part of that after the framework import (the backend created, the first
  batch's set-up): what a fork of the warm runtime, which has the framework imported, pays every round.

The machine is named in the output (CPU model, cores, load average at the start and end): figures
taken while other work ran are slower than the machine is; rerun when it is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable from a checkout without installing edgefl

COSTS_FILE = ROOT / "edgefld" / "simulation" / "costs.json"
BATCH_SIZES = (8, 16, 32)
SAMPLES = {"digits": 1000, "mnist": 1000, "cifar10": 96}


def child(backend_name: str, task_name: str, spawned_at: float) -> dict[str, object]:
    import importlib

    import flwr.clientapp  # noqa: F401 - what a ClientApp process imports before edgefl's app

    import edgefld.apps.client_app  # noqa: F401
    from edgefld.backends.base import BACKEND_MODULES
    from edgefld.tasks import get_task

    module = importlib.import_module(BACKEND_MODULES[backend_name])  # the framework's import
    imported_at = time.time()
    backend = module.create_backend(device="cpu", threads=1)
    task = get_task(task_name)
    rng = np.random.default_rng(0)
    samples = SAMPLES[task_name]
    images = rng.integers(0, int(task.pixel_max) + 1, size=(samples, *task.input_shape), dtype=np.uint8)
    labels = rng.integers(0, task.num_classes, size=samples)
    weights = backend.initial_weights(task)
    first = BATCH_SIZES[0]
    backend.train(task, weights, images[:first], labels[:first], epochs=1, batch_size=first)
    ready_at = time.time()
    throughput: dict[str, float] = {}
    for batch_size in BATCH_SIZES:
        backend.train(task, weights, images[:batch_size], labels[:batch_size], epochs=1, batch_size=batch_size)
        result = backend.train(task, weights, images, labels, epochs=1, batch_size=batch_size)
        throughput[str(batch_size)] = round(samples / result.seconds, 1)
    return {"backend": backend_name, "task": task_name, "samples": samples,
            "samples_per_s": throughput, "startup_cold_s": round(ready_at - spawned_at, 2),
            "startup_warm_s": round(ready_at - imported_at, 2)}


def measure_in_child(backend_name: str, task_name: str) -> dict[str, object] | None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
           "TF_NUM_INTRAOP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    # stderr passes through, so a failing child's traceback is seen.
    completed = subprocess.run([sys.executable, __file__, "--child", backend_name, task_name, repr(time.time())],
                               stdout=subprocess.PIPE, text=True, env=env)
    if completed.returncode != 0:
        print(f"{backend_name} {task_name}: exit status {completed.returncode}", file=sys.stderr)
        return None
    row: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return row


def fastest(runs: list[dict[str, object]]) -> dict[str, object]:
    """Each figure at its best over the runs: other work on the machine only ever slows a run down."""
    best = dict(runs[0])
    best["samples_per_s"] = {size: max(float(run["samples_per_s"][size]) for run in runs)  # type: ignore[index]
                             for size in runs[0]["samples_per_s"]}  # type: ignore[union-attr]
    for key in ("startup_cold_s", "startup_warm_s"):
        best[key] = min(float(run[key]) for run in runs)  # type: ignore[arg-type]
    best["runs"] = len(runs)
    return best


def has_model(backend_name: str, task_name: str) -> bool:
    if backend_name != "litert":
        return True
    from edgefld.tasks import get_task

    return (ROOT / "edgefld" / "backends" / "litert_models" / f"{get_task(task_name).model}.tflite").exists()


def host() -> dict[str, object]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d", time.gmtime()), "load_average_start": round(os.getloadavg()[0], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="torch,tensorflow,litert")
    parser.add_argument("--tasks", default="digits,mnist,cifar10")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each pair; the fastest figures are kept (the least disturbed by other work)")
    parser.add_argument("--write", action="store_true", help=f"store the figures in {COSTS_FILE.relative_to(ROOT)}")
    parser.add_argument("--readme-table", action="store_true",
                        help="print README's table of the board figures from costs.json, and nothing else")
    parser.add_argument("--child", nargs=3, metavar=("BACKEND", "TASK", "SPAWNED_AT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        print(json.dumps(child(args.child[0], args.child[1], float(args.child[2]))))
        return 0

    if args.readme_table:
        from edgefld.simulation.costs import load_costs, markdown_table

        print(markdown_table(load_costs()), end="")
        return 0
    from edgefld.backends.catalog import installed_backends

    installed = installed_backends()
    machine = host()
    print(f"# {machine['cpu']}, {machine['cores']} cores, load average {machine['load_average_start']} at start")
    print(f"{'backend':10} {'task':8} {'samples/s b8':>12} {'b16':>8} {'b32':>8} "
          f"{'cold start s':>12} {'warm start s':>12}")
    rows: list[dict[str, object]] = []
    for backend_name in (b.strip() for b in args.backends.split(",")):
        if backend_name not in installed:
            print(f"{backend_name:10} not installed: no figures", flush=True)
            continue
        for task_name in (t.strip() for t in args.tasks.split(",")):
            if not has_model(backend_name, task_name):
                print(f"{backend_name:10} {task_name:8} no model: no figures", flush=True)
                continue
            runs = [run for run in (measure_in_child(backend_name, task_name) for _ in range(max(1, args.repeat)))
                    if run is not None]
            if not runs:
                print(f"{backend_name:10} {task_name:8} failed", flush=True)
                continue
            row = fastest(runs)
            rows.append(row)
            sps = row["samples_per_s"]
            print(f"{backend_name:10} {task_name:8} {sps['8']:>12} {sps['16']:>8} {sps['32']:>8} "
                  f"{row['startup_cold_s']:>12} {row['startup_warm_s']:>12}", flush=True)
    machine["load_average_end"] = round(os.getloadavg()[0], 2)
    print(f"# load average {machine['load_average_end']} at end")
    if args.write:
        table = json.loads(COSTS_FILE.read_text(encoding="utf-8"))
        table["measured_here"] = {"host": machine, "threads": 1, "figures": rows}
        temporary = COSTS_FILE.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, COSTS_FILE)
        print(f"wrote {COSTS_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
