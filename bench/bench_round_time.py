#!/usr/bin/env python3
"""Per-round wall time of a real 2-board federation, and where it goes.

A real `edgefl server` and two real `edgefl client` daemons on 127.0.0.1 (torch, one
thread each), a task's rounds, then per round from the server's metrics.jsonl:

- wall: from the server sending the round's instructions to aggregating the replies;
- train max: the slowest board's own training time (its ClientApp's clock);
- overhead: wall minus train max, what edgefl and Flower add around the training;
- startup max: the slowest ClientApp's process start-up (interpreter and imports);
- bytes: the arrays sent to and received from the boards.

    python bench/bench_round_time.py [--task mnist|digits] [--rounds 5] [--transport-dtype float32|float16]

Numbers are for this machine; both boards and the server share its cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.data.real_format_files import learnable_mnist, write_mnist  # noqa: E402
from tests.e2e.federation import Federation, become_subreaper  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist", choices=("mnist", "digits"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--transport-dtype", default=None, help="[server] transport_dtype (default: the schema's)")
    parser.add_argument("--json", action="store_true", help="print the per-round records as JSON too")
    args = parser.parse_args(argv)
    become_subreaper()
    from edgefld.cli.main import main as edgefl_main

    with tempfile.TemporaryDirectory(prefix="edgefl-bench-round-") as tmp:
        root = Path(tmp)
        server_config = {"task": args.task, "num_partitions": 2, "rounds": args.rounds, "min_clients": 2,
                         "local_epochs": 1}
        if args.transport_dtype:
            server_config["transport_dtype"] = args.transport_dtype
        fed = Federation(root, server_config)
        if args.task == "mnist":
            idx = root / "mnist-idx"
            idx.mkdir()
            write_mnist(idx, learnable_mnist(1200, 200), gz=False)
            if edgefl_main(["data", "import", str(idx), "--data-dir", str(fed.data_dir)]) != 0:
                return 1
        started = time.monotonic()
        try:
            server = fed.start_server()
            fed.start_client(0)
            fed.start_client(1)
            fed.wait_for("the server to finish", lambda: not server.alive(), timeout=120 + 60 * args.rounds)
            total = time.monotonic() - started
            if server.process.returncode != 0:
                print(server.log()[-3000:])
                return 1
        finally:
            fed.teardown()
        records = fed.metrics()
        print(f"{args.task}, 2 boards (torch), {len(records)} rounds, transport {args.transport_dtype or 'default'}")
        print(f"{'round':>5} {'wall s':>7} {'train max s':>11} {'overhead s':>10} {'startup max s':>13} "
              f"{'bytes sent':>11} {'bytes recv':>11} {'eval acc':>8}")
        for r in records:
            print(f"{r['round']:>5} {r['wall_seconds']:>7.2f} {r['client_train_seconds_max']:>11.2f} "
                  f"{r['wall_seconds'] - r['client_train_seconds_max']:>10.2f} {r['client_startup_seconds_max']:>13.2f} "
                  f"{r['bytes_sent']:>11} {r['bytes_received']:>11} {r.get('eval_accuracy', float('nan')):>8.4f}")
        walls = [r["wall_seconds"] for r in records]
        overheads = [r["wall_seconds"] - r["client_train_seconds_max"] for r in records]
        print(f"median wall {statistics.median(walls):.2f} s, median overhead {statistics.median(overheads):.2f} s, "
              f"server start to finish {total:.1f} s")
        if args.json:
            print(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
