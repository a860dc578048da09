"""The warm ClientApp runtime (edgefld.client.warm) in a real federation, and Flower's stock one beside it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from flwr.proto.runtime_pb2 import AcquireTaskRequest
from flwr.supercore.runtime import RuntimeHttpClient

from edgefld.cli.main import main as edgefl_main
from edgefld.procs import names_of
from tests.e2e.federation import descendants
from tests.faults.helpers import cpu_seconds

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _named(root: int, name: bytes) -> list[int]:
    return [pid for pid in descendants(root) if names_of(pid).startswith(name + b"\0")]


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:  # gone meanwhile
        return None


def _runtime_port(warm_pid: int) -> int:
    argv = Path(f"/proc/{warm_pid}/cmdline").read_bytes().split(b"\0")
    return int(argv[argv.index(b"--runtime-port") + 1])


def test_each_round_runs_in_a_fresh_fork_of_one_preloaded_process_that_alone_can_claim_tasks(federation):
    fed = federation(task="digits", num_partitions=2, rounds=3, min_clients=2, local_epochs=1)
    server = fed.start_server()
    clients = [fed.start_client(0), fed.start_client(1)]
    fed.wait_for("both boards to register", lambda: all("registered with" in c.log() for c in clients), timeout=120)
    (warm,) = _named(clients[0].process.pid, b"edgefl-warm")
    assert _ppid(warm) == clients[0].process.pid
    # Forking needs a single-threaded parent: the runtime starts no thread, even with torch imported.
    assert len(os.listdir(f"/proc/{warm}/task")) == 1
    (supernode,) = _named(clients[0].process.pid, b"flower-supernod")
    assert _ppid(supernode) == warm

    # The SuperNode's Runtime API hands out tasks only to the runtime that holds its secret: any
    # other local process (here: this test, with Flower's own request) is turned away.
    runtime = RuntimeHttpClient.from_server_address(f"127.0.0.1:{_runtime_port(warm)}", insecure=True,
                                                    root_certificates=None, interceptors=[])
    with pytest.raises(httpx.HTTPStatusError) as refused:
        runtime.AcquireTask(AcquireTaskRequest(supported_task_types=["flwr-clientapp"]))
    assert refused.value.response.status_code in (401, 403), refused.value.response
    runtime.close()

    seen: dict[int, float] = {}  # ClientApp pid -> when first seen
    deadline = time.monotonic() + 240
    while server.alive() and time.monotonic() < deadline:
        named = _named(clients[0].process.pid, b"flwr-clientapp")
        for pid in named:
            parent = _ppid(pid)
            if parent is None:
                continue
            # A fork of the runtime; or a child a ClientApp starts (a library's subprocess, named
            # like its parent until it execs).
            assert parent == warm or parent in named or parent in seen, (pid, parent, warm)
            if parent == warm and pid not in seen:
                seen[pid] = time.monotonic()
        time.sleep(0.02)
    assert server.process.wait(10) == 0, server.log()
    assert [(r["round"], r["clients_ok"]) for r in fed.metrics()] == [(1, 2), (2, 2), (3, 2)]
    # Three rounds, a train and an evaluate message each: one fork per message (some may be too
    # short-lived for a 20 ms look), never one process reused.
    assert len(seen) >= 3, seen
    print("ClientApp forks seen:", len(seen), "; slowest ClientApp start-up per round (s):",
          [r["client_startup_seconds_max"] for r in fed.metrics()])
    # The refused claim is on record, at ERROR (Flower's line); nothing else is.
    assert "SuperExec authentication failed" in clients[0].log()
    for daemon in clients:
        log = "\n".join(line for line in daemon.log().splitlines() if "SuperExec authentication failed" not in line)
        assert "Traceback" not in log and "ERROR" not in log, log


def test_a_clientapp_stuck_in_one_round_does_not_hold_up_the_next(federation, mnist_files):
    """A fork frozen while it trains (SIGSTOP: as if hung on a dead run) costs that round, not the next.

    Flower's SuperNode would wait for its reply before taking the next message (until the task's
    token expired, 60 s after its last heartbeat)."""
    fed = federation(task="mnist", num_partitions=2, rounds=2, min_clients=2, local_epochs=10, round_timeout=30.0)
    assert edgefl_main(["data", "import", str(mnist_files), "--data-dir", str(fed.data_dir)]) == 0
    server = fed.start_server()
    clients = [fed.start_client(0), fed.start_client(1)]
    deadline, stuck = time.monotonic() + 180, None
    while stuck is None and time.monotonic() < deadline:
        # A fork is ready with a few hundredths of a CPU second: at 0.3 it has its message and trains
        # (ten epochs take seconds). CPU time, unlike wall time, does not depend on the load.
        stuck = next((pid for pid in _named(clients[0].process.pid, b"flwr-clientapp")
                      if cpu_seconds(pid) >= 0.3), None)
        time.sleep(0.005)
    assert stuck is not None, clients[0].log()
    os.kill(stuck, signal.SIGSTOP)
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=240)
    assert server.process.returncode == 0, server.log()
    records = fed.metrics()
    assert [r["round"] for r in records] == [1, 2]
    assert records[0]["clients_ok"] == 1, records[0]  # the frozen board's reply never came
    assert records[1]["clients_ok"] == 2, records[1]  # ... and it trained the next round beside it
    assert stuck in _named(clients[0].process.pid, b"flwr-clientapp")  # still there, still frozen
    code, seconds = fed.stop(clients[0])
    assert code == 0 and names_of(stuck) == b"", (code, names_of(stuck))
    print(f"stopped with a frozen ClientApp in {seconds:.2f} s")


def test_flowers_stock_runtime_still_serves_a_round(federation):
    """[client] clientapp_runtime = "flower": Flower's SuperExec and a fresh flwr-clientapp per message."""
    fed = federation(task="digits", num_partitions=2, rounds=1, min_clients=2, local_epochs=1,
                     client_config={"clientapp_runtime": "flower"})
    server = fed.start_server()
    clients = [fed.start_client(0), fed.start_client(1)]
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=240)
    assert server.process.returncode == 0, server.log()
    assert [(r["round"], r["clients_ok"]) for r in fed.metrics()] == [(1, 2)]
    tree = [names_of(pid) for pid in descendants(clients[0].process.pid)]
    assert any(b"edgefld.client.supernode" in names for names in tree), tree
    assert not any(names.startswith(b"edgefl-warm\0") for names in tree), tree
