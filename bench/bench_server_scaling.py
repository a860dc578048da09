#!/usr/bin/env python3
"""What one real server carries: a real `edgefl server` with N real `edgefl client` daemons on 127.0.0.1.

    PYTHONPATH=. python bench/bench_server_scaling.py [--boards 1,2,5,10,20] [--rounds 3] [--task digits]
        [--backend litert] [--json FILE]

For each N: the federation of the e2e tests (tests/e2e/federation.py: real processes, threads = 1 per
board), the lightest backend, N partitions, all N boards sampled every round. Per round, from the
server's metrics.jsonl and /proc (bench/bench_rounds.py's sampler, every 0.2 s): the round's wall time
(the server sending the instructions to aggregating the replies), the server's CPU seconds in the round
(its whole process tree: daemon, SuperLink, Fleet gateway, ServerApp), its peak RSS (the tree's sum, at
one instant), and the bytes the weights moved. Printed as medians over the rounds after the first
(the first carries the boards' and the ServerApp's start-up).

All boards share this machine's cores with the server: the round time at large N is the boards'
training queued on two cores, not the server's; the server's CPU and RSS per round are its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rounds import KIB_PER_MIB, BenchError, Sampler, daemon_logs  # noqa: E402  (the set-up it shares)


def one_fleet(n: int, args: argparse.Namespace) -> dict[str, float]:
    from tests.e2e.federation import Federation

    with tempfile.TemporaryDirectory(prefix=f"edgefl-scaling-{n}-") as root:
        fed = Federation(Path(root), {"task": args.task, "num_partitions": n, "rounds": args.rounds,
                                      "min_clients": n, "local_epochs": 1, "batch_size": 32,
                                      "round_timeout": 600.0})
        try:
            server = fed.start_server()
            clients = [fed.start_client(cid, "--backend", args.backend) for cid in range(n)]
            sampler = Sampler({"server": (server.process.pid, "daemon")}, 0.2)
            sampler.start()
            started = time.monotonic()
            try:
                deadline = started + 120 + 60 * args.rounds + 10 * n
                while time.monotonic() < deadline and len(fed.metrics()) < args.rounds:
                    if not all(d.alive() for d in (server, *clients)):
                        break
                    time.sleep(0.5)
            finally:
                samples = sampler.stop()["server"]
            records = fed.metrics()
            if len(records) < args.rounds:
                raise BenchError(f"N={n}: {len(records)} of {args.rounds} rounds\n{daemon_logs(fed)[-4000:]}")
        finally:
            fed.teardown()
    rows = []
    for record in records:
        end, wall = float(record["time"]), float(record["wall_seconds"])
        rows.append({"wall": wall, "cpu": samples.cpu_at(end) - samples.cpu_at(end - wall),
                     "bytes": int(record["bytes_sent"]) + int(record["bytes_received"]),
                     "ok": int(record["clients_ok"]), "failed": int(record["clients_failed"])})
    later = rows[1:] or rows
    return {"boards": n, "first_round_s": rows[0]["wall"],
            "round_s": statistics.median(r["wall"] for r in later),
            "server_cpu_s": statistics.median(r["cpu"] for r in later),
            "server_rss_peak_mib": samples.rss_peak / KIB_PER_MIB,
            "bytes_per_round": statistics.median(r["bytes"] for r in later),
            "ok_min": min(r["ok"] for r in rows), "failed_max": max(r["failed"] for r in rows),
            "accuracy": float(records[-1].get("eval_accuracy") or 0.0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boards", default="1,2,5,10,20")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--task", default="digits")
    parser.add_argument("--backend", default="litert")
    parser.add_argument("--json")
    args = parser.parse_args()
    results = []
    print(f"{'boards':>6} {'round 1 s':>9} {'round s':>8} {'server CPU s':>12} {'server RSS MiB':>14} "
          f"{'bytes/round':>12} {'ok':>4} {'failed':>6} {'accuracy':>8}", flush=True)
    for n in (int(x) for x in args.boards.split(",")):
        try:
            r = one_fleet(n, args)
        except BenchError as exc:
            print(f"{n:>6} bench failed: {exc}", flush=True)
            return 2
        results.append(r)
        print(f"{n:>6} {r['first_round_s']:>9.2f} {r['round_s']:>8.2f} {r['server_cpu_s']:>12.2f} "
              f"{r['server_rss_peak_mib']:>14.0f} {r['bytes_per_round']:>12.0f} {r['ok_min']:>4.0f} "
              f"{r['failed_max']:>6.0f} {r['accuracy']:>8.3f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
