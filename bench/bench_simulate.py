"""`edgefl simulate` at fleet sizes: wall time, peak memory of the whole run, accuracy per round.

    PYTHONPATH=. python bench/bench_simulate.py --data-dir DIR [--task digits] [--rounds 3] [--boards 10,50,200]

Each run is `edgefl simulate` with the mixed fleet of issue 17 (2 Pi Zero 2 W : 2 Pi 4 4 GB :
1 Jetson Orin Nano) scaled to N boards, on a local Ray with --parallel CPUs. Peak memory is the
largest sum of RSS over the run's whole process tree (driver, Ray's raylet and GCS, its workers),
sampled every 0.5 s: shared pages are counted once per process, so it errs high.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tree_rss_mib(root: int) -> float:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/statm") as statm:
                rss[int(entry)] = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / (1 << 20)


def fleet_of(n: int) -> str:
    jetsons = max(1, n // 5)
    pi4 = (n - jetsons) // 2
    return f"rpi-zero-2w:{n - jetsons - pi4},rpi-4-4gb:{pi4},jetson-orin-nano:{jetsons}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--task", default="digits")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--boards", default="10,50,200")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--ray-address", default="")
    args = parser.parse_args()
    rows = []
    for n in (int(x) for x in args.boards.split(",")):
        with tempfile.TemporaryDirectory(prefix="edgefl-bench-sim-") as state:
            argv = [sys.executable, "-m", "edgefld.cli.main", "simulate", "--fleet", fleet_of(n), "--task", args.task,
                    "--rounds", str(args.rounds), "--local-epochs", str(args.local_epochs), "--data-dir",
                    args.data_dir, "--state-dir", state, "--parallel", str(args.parallel)]
            if args.ray_address:
                argv += ["--ray-address", args.ray_address]
            started = time.monotonic()
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            peak = 0.0
            while process.poll() is None:
                peak = max(peak, tree_rss_mib(process.pid))
                time.sleep(0.5)
            wall = time.monotonic() - started
            out = process.stdout.read() if process.stdout else ""
            metrics = Path(state, "metrics.jsonl")
            records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
            virtual_file = Path(state, "virtual-time.json")
            virtual = json.loads(virtual_file.read_text()) if virtual_file.exists() else {"rounds": []}
            estimates = {r["round"]: r["seconds"] for r in virtual["rounds"]}
            for record in records:
                record["virtual_seconds"] = estimates.get(record["round"])
        rows.append((n, process.returncode, wall, peak, records))
        print(out.strip().splitlines()[0] if out.strip() else f"N={n}: exit {process.returncode}", flush=True)
    print(f"\n{'boards':>6} {'exit':>4} {'wall s':>7} {'peak RSS MiB':>12}  "
          "round: s, virtual s (estimated on the real boards), ok/failed, accuracy")
    for n, code, wall, peak, records in rows:
        per_round = "; ".join(
            f"{r['round']}: {r.get('wall_seconds') or 0:.1f} s, "
            f"{'n/a' if r.get('virtual_seconds') is None else format(r['virtual_seconds'], '.2g')} s, "
            f"{r['clients_ok']}/{r['clients_failed']}, "
            f"{r.get('eval_accuracy') or 0:.3f}" for r in records)
        print(f"{n:>6} {code:>4} {wall:>7.1f} {peak:>12.0f}  {per_round}")
    return 0 if all(code == 0 for _, code, *_ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
