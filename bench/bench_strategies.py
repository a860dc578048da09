#!/usr/bin/env python3
"""Strategies side by side: final accuracy of each [server.strategy] on the same partitions, and non-IID splits.

Every case is a real federation on 127.0.0.1 (a real `edgefl server` and --clients real `edgefl client`
daemons, threads = 1 each, torch, the warm client), the same rounds on the same partitions
([server] partitioning, seed 42), so the only thing that differs between rows is the strategy. Figures
come from the server's metrics.jsonl: the centralised evaluation of the global model after each round
(the task's whole test set) and the round's wall time.

Printed:

1. the table strategy x task: final eval accuracy after --rounds rounds (IID partitions), and the mean
   round wall time;
2. --kill-resume: per stateful strategy (fedavgm, fedadam, fedyogi, fedadagrad), the run again with the
   server SIGKILLed once round 2 is in the metrics and restarted: the final model's digest must equal the
   uninterrupted run's (exit status 1 if not);
3. --dp: fedavg on digits without DP and with [server.dp] mode "central" and "local": accuracy per round
   and the mean round wall time;
4. --dirichlet ALPHA: the label histograms of the partitions for each alpha (0.1, 0.5, 100 by default), and
   fedavg vs fedprox per round on the first alpha's split.

mnist takes the MNIST files (--mnist-idx DIR with the four IDX files, as `edgefl data import` takes them);
without them it runs on a synthetic MNIST-format set (tests/data/real_format_files.learnable_mnist, a bright
block per class in noise: easy by design) and says so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.federation import Federation, become_subreaper  # noqa: E402

STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedmedian", "fedtrimmedavg",
              "krum")
STATEFUL = ("fedavgm", "fedadam", "fedyogi", "fedadagrad")


def run_federation(root: Path, args: argparse.Namespace, task: str, strategy: dict[str, Any],
                   mnist_idx: Path | None, kill_after: int | None = None, dp: dict[str, Any] | None = None,
                   **server: Any) -> list[dict[str, Any]]:
    root.mkdir(parents=True)
    fed = Federation(root, {"task": task, "num_partitions": args.clients, "rounds": args.rounds,
                            "min_clients": args.clients, "local_epochs": args.local_epochs,
                            "batch_size": args.batch_size, **server},
                     strategy_config=strategy, dp_config=dp or {})
    try:
        if task == "mnist":
            assert mnist_idx is not None
            subprocess.run([sys.executable, "-m", "edgefld.cli.main", "data", "import", str(mnist_idx), "--data-dir",
                            str(fed.data_dir)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        daemon = fed.start_server("server")
        for cid in range(args.clients):
            fed.start_client(cid)
        if kill_after is not None:
            fed.wait_for(f"round {kill_after}", lambda: len(fed.metrics()) >= kill_after, timeout=args.timeout)
            daemon.process.kill()
            daemon.process.wait(10)
            daemon = fed.start_server("server-restarted")
        fed.wait_for("the run to end", lambda: not daemon.alive(), timeout=args.timeout)
        if daemon.process.returncode != 0:
            raise RuntimeError(f"{task} {strategy}: the server exited {daemon.process.returncode}:\n"
                               + daemon.log()[-3000:])
        return fed.metrics()
    finally:
        fed.teardown()


def accuracy_table(args: argparse.Namespace, tmp: Path, tasks: list[str], mnist_idx: Path | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for task in tasks:
        for name in args.strategies:
            print(f"bench_strategies: {task}, {name} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            records = run_federation(tmp / f"{task}-{name}", args, task, {"name": name}, mnist_idx)
            results[f"{task}/{name}"] = {
                "accuracy": [r["eval_accuracy"] for r in records],
                "round_wall_s": sum(r["wall_seconds"] for r in records) / len(records),
                "run_s": time.monotonic() - started, "model_sha256": records[-1]["model_sha256"],
            }
    print(f"\nFinal eval accuracy after {args.rounds} rounds, {args.clients} boards, IID partitions, "
          f"{args.local_epochs} local epoch(s), batch {args.batch_size} (mean round wall time)")
    print(f"{'strategy':<14}" + "".join(f"{task:>22}" for task in tasks))
    for name in args.strategies:
        cells = []
        for task in tasks:
            r = results.get(f"{task}/{name}")
            cells.append(f"{r['accuracy'][-1]:.4f} ({r['round_wall_s']:.1f} s)" if r else "-")
        print(f"{name:<14}" + "".join(f"{cell:>22}" for cell in cells))
    return results


def kill_resume(args: argparse.Namespace, tmp: Path, table: dict[str, Any]) -> bool:
    print(f"\nKill and resume (digits): server SIGKILLed after round 2 of {args.rounds}, restarted")
    ok = True
    for name in STATEFUL:
        straight = table.get(f"digits/{name}")
        if straight is None:
            straight_records = run_federation(tmp / f"straight-{name}", args, "digits", {"name": name}, None)
            straight = {"model_sha256": straight_records[-1]["model_sha256"]}
        resumed = run_federation(tmp / f"resumed-{name}", args, "digits", {"name": name}, None, kill_after=2)
        equal = resumed[-1]["model_sha256"] == straight["model_sha256"]
        ok &= equal
        print(f"{name:<14} final model {straight['model_sha256'][:16]} uninterrupted, "
              f"{resumed[-1]['model_sha256'][:16]} resumed: {'EQUAL' if equal else 'DIFFERENT'}")
    return ok


def dirichlet(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from edgefld.data import download_dataset, partition_summaries

    data_dir = tmp / "dirichlet-data"
    download_dataset("digits", data_dir, quiet=True)
    for alpha in args.dirichlet:
        print(f"\ndigits, Dirichlet({alpha:g}), {args.clients} partitions: training samples per label")
        print(f"{'cid':>4} {'size':>6}  " + " ".join(f"{label:>4}" for label in range(10)))
        for s in partition_summaries("digits", data_dir, args.clients, 42, "dirichlet", alpha):
            print(f"{s.cid:>4} {s.size:>6}  " + " ".join(f"{n:>4}" for n in s.label_counts))
    alpha = args.dirichlet[0]
    results: dict[str, Any] = {}
    for strategy in ({"name": "fedavg"}, {"name": "fedprox", "proximal_mu": args.proximal_mu}):
        print(f"bench_strategies: dirichlet {alpha:g}, {strategy['name']} ...", file=sys.stderr, flush=True)
        records = run_federation(tmp / f"dirichlet-{strategy['name']}", args, "digits", strategy, None,
                                 partitioning="dirichlet", dirichlet_alpha=alpha)
        results[strategy["name"]] = [r["eval_accuracy"] for r in records]
    print(f"\ndigits on the Dirichlet({alpha:g}) split: eval accuracy per round "
          f"(fedprox mu {args.proximal_mu:g})")
    print(f"{'round':>5} " + " ".join(f"{name:>8}" for name in results))
    for index in range(args.rounds):
        print(f"{index + 1:>5} " + " ".join(f"{acc[index]:>8.4f}" for acc in results.values()))
    return results


def privacy(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """fedavg on digits without DP, with central and with local clipping: accuracy per round, round time."""
    results: dict[str, Any] = {}
    for mode in ("off", "central", "local"):
        print(f"bench_strategies: dp {mode} ...", file=sys.stderr, flush=True)
        dp = {"mode": mode, "clipping_norm": args.clipping_norm, "noise_multiplier": args.noise_multiplier}
        records = run_federation(tmp / f"dp-{mode}", args, "digits", {"name": "fedavg"}, None, dp=dp)
        results[mode] = {"accuracy": [r["eval_accuracy"] for r in records],
                         "round_wall_s": sum(r["wall_seconds"] for r in records) / len(records)}
    print(f"\ndigits, fedavg, {args.clients} boards: eval accuracy per round without DP and with DP (clipping norm "
          f"{args.clipping_norm:g}, noise multiplier {args.noise_multiplier:g}: noise std "
          f"{args.noise_multiplier * args.clipping_norm / args.clients:g} per weight)")
    print(f"{'round':>5} " + " ".join(f"{mode:>8}" for mode in results))
    for index in range(args.rounds):
        print(f"{index + 1:>5} " + " ".join(f"{r['accuracy'][index]:>8.4f}" for r in results.values()))
    print("round wall time (mean): " + ", ".join(f"{mode} {r['round_wall_s']:.2f} s" for mode, r in results.items()))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits,mnist")
    parser.add_argument("--mnist-idx", type=Path, help="directory with MNIST's four IDX files (for the mnist rows)")
    parser.add_argument("--mnist-train", type=int, default=4000,
                        help="without --mnist-idx: training images of the synthetic MNIST-format set")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one run may take")
    parser.add_argument("--kill-resume", action="store_true")
    parser.add_argument("--dirichlet", default="", help="alphas, e.g. 0.1,0.5,100 (fedavg vs fedprox on the first)")
    parser.add_argument("--proximal-mu", type=float, default=0.1)
    parser.add_argument("--dp", action="store_true", help="fedavg without DP, with central and local clipping")
    parser.add_argument("--clipping-norm", type=float, default=1.0)
    parser.add_argument("--noise-multiplier", type=float, default=0.1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    args.strategies = [s for s in args.strategies.split(",") if s]
    args.dirichlet = [float(a) for a in args.dirichlet.split(",") if a]
    tasks = [t for t in args.tasks.split(",") if t]
    become_subreaper()
    figures: dict[str, Any] = {}
    ok = True
    with tempfile.TemporaryDirectory(prefix="edgefl-bench-strategies-") as tmp:
        if "mnist" in tasks and args.mnist_idx is None:
            from tests.data.real_format_files import learnable_mnist, write_mnist

            print(f"bench_strategies: no --mnist-idx: mnist is SYNTHETIC here ({args.mnist_train} MNIST-format "
                  "images of tests/data/real_format_files.learnable_mnist, easy by design)", file=sys.stderr)
            args.mnist_idx = Path(tmp) / "mnist-idx"
            write_mnist(args.mnist_idx, learnable_mnist(args.mnist_train, 1000), gz=False)
        if tasks and args.strategies:
            figures["table"] = accuracy_table(args, Path(tmp), tasks, args.mnist_idx)
        if args.kill_resume:
            ok = kill_resume(args, Path(tmp), figures.get("table", {}))
        if args.dirichlet:
            figures["dirichlet"] = dirichlet(args, Path(tmp))
        if args.dp:
            figures["dp"] = privacy(args, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
