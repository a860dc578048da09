#!/usr/bin/env python3
"""Secure aggregation (Flower's SecAgg+) beside plain FedAvg: accuracy per round, round time, traffic, dropouts.

Every case is a real federation on 127.0.0.1 (a real `edgefl server` and --clients real `edgefl client`
daemons, threads = 1 each, --backend, the warm client) on the same partitions (IID, seed 42): the only
difference between the two columns is [server] secure_aggregation. Figures come from the server's
metrics.jsonl: the centralised evaluation of the global model after each round (the task's whole test
set), the round's wall time (instructions built to round recorded) and its bytes.

Printed:

1. digits, fedavg: eval accuracy per round without and with secure aggregation, the mean round wall time
   and the bytes a round sends to and receives from the boards;
2. the dropout case: --clients boards, the last one's daemon SIGKILLed while it trains round 2 (between
   the key exchange and its masked vector), with reconstruction_threshold 0.67 (the round completes
   without it) and 1.0 (the round fails, the model unchanged): each round's outcome as the server
   reports it;
3. kill-resume (--cases): the server SIGKILLed once round 2 is in the metrics and restarted: the run continues
   from the checkpoint (the final model is not bit-equal to an uninterrupted run's: SecAgg+ quantises
   with stochastic rounding, unseeded).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.federation import Federation, become_subreaper  # noqa: E402
from tests.faults.helpers import children_running, cpu_seconds, wait_until  # noqa: E402


def _federation(root: Path, args: argparse.Namespace, secure: bool, **server: Any) -> Federation:
    root.mkdir(parents=True)
    settings = {"task": "digits", "num_partitions": args.clients, "rounds": args.rounds, "min_clients": args.clients,
                "local_epochs": args.local_epochs, "batch_size": args.batch_size, "secure_aggregation": secure,
                **server}
    return Federation(root, settings, client_config={"backend": args.backend})


def run(root: Path, args: argparse.Namespace, secure: bool, kill_server_after: int | None = None,
        secagg: dict[str, Any] | None = None, kill_board_in: int | None = None,
        **server: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """(the round records, the server daemon's round lines)."""
    fed = _federation(root, args, secure, **server)
    fed.secagg_config = secagg or {}
    fed.write_config()
    try:
        daemon = fed.start_server("server")
        boards = [fed.start_client(cid) for cid in range(args.clients)]
        if kill_server_after is not None:
            fed.wait_for(f"round {kill_server_after}", lambda: len(fed.metrics()) >= kill_server_after,
                         timeout=args.timeout)
            daemon.process.kill()
            daemon.process.wait(10)
            daemon = fed.start_server("server-restarted")
        if kill_board_in is not None:
            fed.wait_for(f"round {kill_board_in - 1}", lambda: len(fed.metrics()) >= kill_board_in - 1,
                         timeout=args.timeout)
            victim = boards[-1]
            training = wait_until(lambda: any(cpu_seconds(pid) >= 0.3
                                              for pid in children_running(victim, b"flwr-clientapp")), 120, 0.02)
            if training is None or len(fed.metrics()) >= kill_board_in:
                raise RuntimeError(f"board {args.clients - 1} was not caught training round {kill_board_in}")
            os.kill(victim.process.pid, signal.SIGKILL)
        fed.wait_for("the run to end", lambda: not daemon.alive(), timeout=args.timeout)
        if daemon.process.returncode != 0:
            raise RuntimeError(f"the server exited {daemon.process.returncode}:\n" + daemon.log()[-3000:])
        lines = [line.split("edgefl.server: ", 1)[1] for d in fed.daemons if d.name.startswith("server")
                 for line in d.log().splitlines() if "edgefl.server: round " in line]
        return fed.metrics(), lines
    finally:
        fed.teardown()


def side_by_side(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, secure in (("fedavg", False), ("secagg+", True)):
        print(f"bench_secagg: {name} ...", file=sys.stderr, flush=True)
        records, _ = run(tmp / name, args, secure)
        results[name] = {
            "accuracy": [r["eval_accuracy"] for r in records],
            "round_wall_s": [r["wall_seconds"] for r in records],
            "bytes_sent": sum(r["bytes_sent"] for r in records) / len(records),
            "bytes_received": sum(r["bytes_received"] for r in records) / len(records),
        }
    print(f"\ndigits, fedavg, {args.clients} boards ({args.backend}), IID partitions, {args.local_epochs} local "
          f"epoch(s): eval accuracy per round, without and with secure aggregation")
    print(f"{'round':>5} " + " ".join(f"{name:>9}" for name in results))
    for index in range(args.rounds):
        print(f"{index + 1:>5} " + " ".join(f"{r['accuracy'][index]:>9.4f}" for r in results.values()))
    for name, r in results.items():
        # Round 1 includes the boards' first ClientApp start-up; the mean of the later rounds is the steady state.
        later = r["round_wall_s"][1:] or r["round_wall_s"]
        print(f"{name:<8} round wall time: round 1 {r['round_wall_s'][0]:.2f} s, rounds 2+ mean "
              f"{sum(later) / len(later):.2f} s; per round {r['bytes_sent'] / 1024:.0f} KiB sent, "
              f"{r['bytes_received'] / 1024:.0f} KiB received")
    return results


def dropout(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for threshold in (0.67, 1.0):
        print(f"bench_secagg: dropout, threshold {threshold} ...", file=sys.stderr, flush=True)
        records, lines = run(tmp / f"dropout-{threshold}", args, True, secagg={"reconstruction_threshold": threshold},
                             kill_board_in=2, local_epochs=args.dropout_epochs, round_timeout=120.0, rounds=2)
        results[str(threshold)] = {"rounds": [{k: r[k] for k in ("round", "clients_ok", "clients_failed",
                                                                 "eval_accuracy", "wall_seconds")}
                                              | {"model_changed": r["model_sha256"] != r["start_model_sha256"]}
                                              for r in records], "lines": lines}
        shares = args.clients
        needed = max(round(threshold * shares), 2)
        print(f"\nDropout: {args.clients} boards, board {args.clients - 1} SIGKILLed while training round 2; "
              f"reconstruction_threshold {threshold} ({needed} of {shares} shares)")
        for line in lines:
            print(f"  {line}")
    return results


def kill_resume(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    print("bench_secagg: kill and resume ...", file=sys.stderr, flush=True)
    records, lines = run(tmp / "resume", args, True, kill_server_after=2)
    print(f"\nKill and resume: the server SIGKILLed once round 2 was in the metrics, restarted; rounds in "
          f"metrics.jsonl {[r['round'] for r in records]}, eval accuracy per round "
          f"{[round(r['eval_accuracy'], 4) for r in records]}; the server's round lines:")
    for line in lines:
        print(f"  {line}")
    return {"rounds": [r["round"] for r in records], "accuracy": [r["eval_accuracy"] for r in records]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--backend", default="torch", choices=("torch", "tensorflow", "litert"))
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--dropout-epochs", type=int, default=100,
                        help="local epochs of the dropout runs: seconds of training, so the kill lands in it")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one run may take")
    parser.add_argument("--cases", default="side-by-side,dropout",
                        help="any of side-by-side, dropout, kill-resume (comma-separated)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    become_subreaper()
    figures: dict[str, Any] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgefl-bench-secagg-") as tmp:
        cases = set(args.cases.split(","))
        if "side-by-side" in cases:
            figures["side_by_side"] = side_by_side(args, Path(tmp))
        if "dropout" in cases:
            figures["dropout"] = dropout(args, Path(tmp))
        if "kill-resume" in cases:
            figures["kill_resume"] = kill_resume(args, Path(tmp))
    print(f"\nbench_secagg: {time.monotonic() - started:.0f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
