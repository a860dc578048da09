#!/usr/bin/env python3
"""Peak memory and training speed of a real client per backend, during MNIST rounds.

bench_backends.py measures a backend alone in one process. A board runs more: the
`edgefl client` daemon, its Flower SuperNode and SuperExec, and one ClientApp process per
round message (Flower 1.42 starts a process per message), which imports Flower, the
backend and the task and trains. This bench runs that: a real `edgefl server` and one real
`edgefl client --backend NAME` per backend on 127.0.0.1 (MNIST-format files generated in
the real IDX format, one partition per client), and samples /proc every 50 ms:

- ClientApp peak: the largest VmHWM (the kernel's peak resident set) of any ClientApp
  process of that client: what a round costs on top of the idle daemons;
- client total peak: the largest sum over the client's whole process tree (daemon,
  SuperNode, SuperExec, ClientApp) seen at one instant, of VmRSS (counts shared pages once
  per process) and of Pss (each shared page divided among its users: what the board holds);
- peak per process: VmHWM of the daemon, SuperNode, SuperExec and ClientApp;
- samples/s: training samples / training seconds, as the ClientApp reports them (the
  status file of each round; the ClientApp's own clock, after its imports).

    .venv/bin/python bench/bench_client_round.py [--backends torch,tensorflow,litert]
        [--rounds 3] [--train-samples 6000] [--batch-size 32]

Numbers are for this machine and these sizes; all clients share its cores (threads = 1
each, as on a loaded board).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.data.real_format_files import learnable_mnist, write_mnist  # noqa: E402
from tests.e2e.federation import Federation, become_subreaper, descendants  # noqa: E402


def proc_memory(pid: int) -> tuple[int, int, int, str]:
    """(VmRSS, VmHWM, Pss) in KiB and the command line; zeros when the process is gone.

    Pss shares each shared page (libpython, numpy's libraries) among the processes that map
    it: summed over a tree, it is what the tree really holds, where a sum of RSS counts
    shared pages once per process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return 0, 0, 0, ""
    fields = {line.split(":")[0]: line.split(":")[1] for line in (status + rollup).splitlines() if ":" in line}
    kib = lambda key: int(fields.get(key, "0 kB").split()[0])  # noqa: E731
    return kib("VmRSS"), kib("VmHWM"), kib("Pss"), cmdline


ROLES = ("daemon", "supernode", "superexec", "clientapp", "other")


def role_of(cmdline: str) -> str:
    for marker, role in (("flwr-clientapp", "clientapp"), ("superexec", "superexec"), ("supernode", "supernode")):
        if marker in cmdline:
            return role
    # A process caught between fork and exec, or while exiting (its cmdline already empty).
    return "other"


class Sampler(threading.Thread):
    def __init__(self, roots: dict[str, int], interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.roots, self.interval = roots, interval
        self.clientapp_hwm = {name: 0 for name in roots}
        self.total_peak = {name: 0 for name in roots}
        self.total_pss_peak = {name: 0 for name in roots}
        self.clientapps = {name: set() for name in roots}
        self.role_hwm = {name: {role: 0 for role in ROLES} for name in roots}
        self.roles: dict[int, str] = {}  # a process keeps its role while it exits (cmdline empty)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for name, root in self.roots.items():
                total = total_pss = 0
                for pid in [root, *descendants(root)]:
                    rss, hwm, pss, cmdline = proc_memory(pid)
                    total += rss
                    total_pss += pss
                    role = "daemon" if pid == root else role_of(cmdline)
                    if role == "other":
                        role = self.roles.get(pid, role)
                    else:
                        self.roles[pid] = role
                    self.role_hwm[name][role] = max(self.role_hwm[name][role], hwm)
                    if role == "clientapp":
                        self.clientapps[name].add(pid)
                        self.clientapp_hwm[name] = max(self.clientapp_hwm[name], hwm)
                self.total_peak[name] = max(self.total_peak[name], total)
                self.total_pss_peak[name] = max(self.total_pss_peak[name], total_pss)
            time.sleep(self.interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="torch,tensorflow,litert")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-samples", type=int, default=6000, help="MNIST training images, all partitions")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="one JSON object per backend")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    become_subreaper()  # ClientApp processes re-parented to us are still found and ended

    with tempfile.TemporaryDirectory(prefix="edgefl-bench-round-") as tmp:
        root = Path(tmp)
        mnist = root / "mnist-idx"
        mnist.mkdir()
        write_mnist(mnist, learnable_mnist(args.train_samples, 500), gz=False)
        fed = Federation(root, {"task": "mnist", "num_partitions": len(backends), "rounds": args.rounds,
                                "min_clients": len(backends), "local_epochs": 1, "batch_size": args.batch_size})
        subprocess.run([sys.executable, "-m", "edgefld.cli.main", "data", "import", str(mnist),
                        "--data-dir", str(fed.data_dir)], check=True, stdout=subprocess.DEVNULL)
        try:
            server = fed.start_server()
            clients = {name: fed.start_client(cid, "--backend", name) for cid, name in enumerate(backends)}
            sampler = Sampler({name: d.process.pid for name, d in clients.items()})
            sampler.start()
            speeds: dict[str, list[float]] = {name: [] for name in backends}
            seen: dict[str, int] = {name: 0 for name in backends}
            deadline = time.monotonic() + 120 + 120 * args.rounds
            while server.alive() and time.monotonic() < deadline:
                for cid, name in enumerate(backends):
                    try:
                        record = json.loads((root / f"client-{cid}" / "last-round.json").read_text())
                    except (OSError, ValueError):
                        continue
                    if record.get("phase") == "train" and record.get("round", 0) > seen[name]:
                        seen[name] = record["round"]
                        speeds[name].append(record["samples"] / max(record["seconds"], 1e-9))
                time.sleep(0.2)
            sampler.done.set()
            sampler.join()
            if server.alive() or server.process.returncode != 0:
                print(f"bench_client_round: the federation did not finish\n{server.log()[-2000:]}", file=sys.stderr)
                return 1
            rounds = fed.metrics()
        finally:
            fed.teardown()

    mib = 1 / 1024
    if not args.json:
        print(f"MNIST, {args.rounds} rounds, {len(backends)} clients (one per backend, threads 1), "
              f"batch {args.batch_size}, {args.train_samples // len(backends)} training samples per client")
        print(f"{'backend':<11}{'ClientApp peak MiB':>20}{'client total RSS MiB':>22}{'total PSS MiB':>15}"
              f"{'samples/s (median)':>20}{'ClientApps':>12}")
    for name in backends:
        ordered = sorted(speeds[name])
        median = ordered[len(ordered) // 2] if ordered else float("nan")
        row = {"backend": name, "clientapp_peak_mib": round(sampler.clientapp_hwm[name] * mib, 1),
               "client_total_peak_mib": round(sampler.total_peak[name] * mib, 1),
               "client_total_pss_peak_mib": round(sampler.total_pss_peak[name] * mib, 1),
               "samples_per_second_median": round(median, 1), "clientapp_processes": len(sampler.clientapps[name]),
               "peak_mib_by_process": {role: round(kib * mib, 1) for role, kib in sampler.role_hwm[name].items()}}
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{name:<11}{row['clientapp_peak_mib']:>20.1f}{row['client_total_peak_mib']:>22.1f}"
                  f"{row['client_total_pss_peak_mib']:>15.1f}"
                  f"{row['samples_per_second_median']:>20.1f}{row['clientapp_processes']:>12}")
            print(" " * 11 + "peak per process: " + ", ".join(f"{role} {v:.0f}" for role, v in
                                                           row["peak_mib_by_process"].items()))
    if not args.json:
        print("global model: " + ", ".join(f"round {r['round']} accuracy {r['eval_accuracy']:.4f}" for r in rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
