"""A whole federation on this machine: one server and N clients on 127.0.0.1, digits task.

It runs the real daemons (`edgefl server`, `edgefl client`) as processes, the
way systemd would, with a config written to a work directory, and shows their
progress lines. Nothing leaves the machine: the digits dataset ships with edgefl.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from edgefld.procs import free_loopback_port
from edgefld.records import RoundRecord
from edgefld.run_state import METRICS_FILE, read_rounds

DEMO_CONFIG = """\
# Written by `edgefl demo`: a local federation on 127.0.0.1.
[server]
listen = "127.0.0.1:{port}"
task = "digits"
num_partitions = {clients}
rounds = {rounds}
min_clients = {clients}
local_epochs = {epochs}
state_dir = "server"
data_dir = "data"

[client]
cid = 0
server = "127.0.0.1:{port}"
data_dir = "data"
state_dir = "client-0"
# The clients share this machine's CPUs: more threads than cores makes OpenMP spin.
threads = {threads}

[log]
level = "info"
"""

_SHOWN = ("edgefl.server:", "edgefl.client:", "edgefl:")


def _relay(prefix: str, stream: IO[bytes], out: IO[str], lock: threading.Lock) -> None:
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip()
        if "supernode:" in line:
            continue  # Flower's connection chatter: it is in the client logs when needed
        with lock:
            out.write(f"{prefix} {line}\n")
            out.flush()


def run_demo(workdir: str | None, clients: int, rounds: int, epochs: int, out: IO[str] = sys.stdout) -> int:
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="edgefl-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    config = work / "edgefl.toml"
    threads = max(1, (os.cpu_count() or 1) // clients)
    config.write_text(DEMO_CONFIG.format(port=port, clients=clients, rounds=rounds, epochs=epochs, threads=threads))
    edgefl = [sys.executable, "-m", "edgefld.cli.main"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    lock = threading.Lock()
    out.write(f"edgefl demo: server + {clients} clients on 127.0.0.1:{port}, task digits, {rounds} rounds "
              f"(work dir {work})\n")
    started = time.monotonic()
    processes: list[subprocess.Popen[bytes]] = []
    relays: list[threading.Thread] = []

    def start(prefix: str, argv: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(edgefl + argv, cwd=work, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        processes.append(process)
        relay = threading.Thread(target=_relay, args=(prefix, process.stdout, out, lock), daemon=True)
        relay.start()
        relays.append(relay)
        return process

    try:
        server = start("[server]  ", ["server", "--config", str(config)])
        for cid in range(clients):
            start(f"[client {cid}]", ["client", "--config", str(config), "--cid", str(cid),
                                      "--state-dir", f"client-{cid}"])
        code = server.wait()
    except KeyboardInterrupt:
        code = 130
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for relay in relays:
            relay.join(5)
    metrics = work / "server" / METRICS_FILE
    records = read_rounds(metrics)
    out.write(f"\nedgefl demo: server exited {code} after {time.monotonic() - started:.1f} s; "
              f"metrics in {metrics}\n")
    for record in records:
        out.write(_describe_round(record))
    out.write(f"edgefl demo: config, state and logs are in {work} (kept; remove it when done)\n")
    if code == 0 and len(records) < rounds:
        return 1
    return code


def _describe_round(record: RoundRecord) -> str:
    training, evaluation = record.training, record.evaluation
    if training is None:  # not a round the ServerApp recorded
        return f"  round {record.round}: no figures\n"
    return (f"  round {record.round}: {training.clients_ok} clients, "
            f"train loss {_or_nan(training.train_loss):.4f}, "
            f"eval accuracy {_or_nan(evaluation.eval_accuracy if evaluation else None):.4f}, "
            f"{training.wall_seconds or 0:.1f} s; slowest board: process start-up "
            f"{_seconds(training.client_startup_seconds_max)}, handler "
            f"{_seconds(training.client_handler_seconds_max)} (loading the backend "
            f"{_seconds(training.client_prepare_seconds_max)}), training "
            f"{_seconds(training.client_train_seconds_max)}\n")


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _seconds(value: float) -> str:
    """A duration as a reader wants it: LiteRT trains the demo's digits in milliseconds, not "0.0 s"."""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"
