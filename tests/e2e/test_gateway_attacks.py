"""Hostile but cheap traffic against a real server: the gateway holds, and an honest board keeps training.

One real federation (`edgefl server` + one `edgefl client` on 127.0.0.1); each attack runs
while the test waits for the next round of the honest board to complete. After each: both
daemons still run, the server's log has no Traceback or ERROR, and the SuperLink never
saw anything but Fleet requests (its runs and nodes are unchanged by the attacker).
Request loops are bounded in count and time.
"""

from __future__ import annotations

import re
import resource
import socket
import threading
import time
from pathlib import Path

import pytest

from edgefld.server.control import Control, ControlError
from tests.e2e.federation import descendants
from tests.e2e.test_server_fab import foreign_fabs
from tests.service.test_fleet_gateway import SMUGGLING

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROUND_TIMEOUT = 120.0


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler:
    """Peak RSS of a set of processes, sampled every 0.2 s."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.peak_kib, self._stop = pids, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_kib = max(self.peak_kib, sum(_rss_kib(pid) for pid in self.pids))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def running(federation):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    fed = federation(task="digits", num_partitions=2, rounds=200, min_clients=1, local_epochs=1,
                     head_timeout=3.0, transfer_grace=3.0)
    server = fed.start_server()
    fed.wait_for("the server to listen", lambda: "Fleet API only" in server.log(), timeout=120)
    client = fed.start_client(0)
    fed.wait_for("a first round", lambda: len(fed.metrics()) >= 1, timeout=240)
    yield fed, server, client
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _superlink_pid_and_port(server_pid: int) -> tuple[int, int]:
    for pid in descendants(server_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"flower-superlink" in argv:
            return pid, int(argv[argv.index(b"--port") + 1])
    raise AssertionError("no SuperLink below the server daemon")


def _during(fed, attack, what: str) -> float:
    """Run ``attack(stop)`` in a thread until the honest board completes one more round; its wall time."""
    stop = threading.Event()
    before = len(fed.metrics())
    thread = threading.Thread(target=attack, args=(stop,), daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        fed.wait_for(f"a round during {what}", lambda: len(fed.metrics()) > before, timeout=ROUND_TIMEOUT)
    finally:
        stop.set()
        thread.join(60)
    return time.monotonic() - started


def _connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return None


def test_attacks_on_the_gateway_leave_an_honest_round_running(running):
    fed, server, client = running
    link_pid, link_port = _superlink_pid_and_port(server.process.pid)
    control = Control(f"127.0.0.1:{link_port}")
    runs_before = {run.run_id for run in control.runs()}
    nodes_before = {node.node_id for node in control.nodes()}
    figures: dict[str, str] = {}

    def smuggle(stop):
        for _ in range(3):
            for payload in SMUGGLING.values():
                if stop.is_set():
                    return
                sock = _connect(fed.port)
                if sock is None:
                    continue
                with sock:
                    sock.settimeout(2)
                    try:
                        sock.sendall(payload)
                        while sock.recv(65536):
                            pass
                    except OSError:
                        pass

    figures["smuggling"] = f"{_during(fed, smuggle, 'request smuggling'):.1f} s"

    def slowloris(stop):
        held = []
        for number in range(200):
            sock = _connect(fed.port)
            if sock is None:
                continue
            held.append(sock)
            try:  # half send a head byte by byte, half a head announcing a body that never comes
                sock.sendall(b"POST /v1/fleet/push-object HTTP/1.1\r\n" if number % 2 else
                             b"POST /v1/fleet/push-object HTTP/1.1\r\nHost: x\r\nContent-Length: 8000000\r\n\r\nab")
            except OSError:
                pass
        while not stop.wait(1.0):
            for sock in held:
                try:
                    sock.send(b"X")
                except OSError:
                    pass
        for sock in held:
            sock.close()

    figures["slowloris"] = f"{_during(fed, slowloris, 'slowloris'):.1f} s"

    def idle(stop):
        held = []
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            while len(held) < 2000 and not stop.is_set():  # keep 2,000 open: reopen what the gateway closed
                sock = _connect(fed.port)
                if sock is None:
                    break
                held.append(sock)
            stop.wait(0.5)
            alive = []
            for sock in held:
                try:
                    sock.setblocking(False)
                    closed = sock.recv(1) == b""
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                (sock.close() if closed else alive.append(sock))
            held = alive
        for sock in held:
            sock.close()

    figures["2000 idle"] = f"{_during(fed, idle, '2,000 idle connections'):.1f} s"

    body = b"\x0a" * (8 * 1024 * 1024)  # [server] max_object_mb of garbage protobuf

    def big_bodies(stop):
        def one():
            sock = _connect(fed.port)
            if sock is None:
                return
            with sock:
                sock.settimeout(60)
                try:
                    sock.sendall(b"POST /v1/fleet/push-object HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                 b"application/protobuf\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                    sock.recv(65536)
                except OSError:
                    pass
        while not stop.is_set():
            workers = [threading.Thread(target=one) for _ in range(40)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(90)

    with Sampler([server.process.pid, link_pid]) as sampler:
        figures["40 x 8 MiB bodies"] = f"{_during(fed, big_bodies, '40 concurrent maximum-size bodies'):.1f} s"
    figures["peak RSS server+SuperLink (40 bodies)"] = f"{sampler.peak_kib // 1024} MiB"
    assert sampler.peak_kib < 1200 * 1024, figures

    def foreign_fab(stop):
        for fab in foreign_fabs(fed.root).values():
            with pytest.raises(ControlError):
                control.submit(fab, {})

    figures["foreign FAB on loopback"] = f"{_during(fed, foreign_fab, 'foreign FABs'):.1f} s"
    print("\n".join(f"{k}: {v}" for k, v in figures.items()))

    assert server.alive() and client.alive()
    log = server.log()
    assert "Traceback" not in log and not re.search(r"\bERROR\b", log), log[-3000:]
    assert "refused 127.0.0.1" in log  # refusals summed up, not one line each
    assert len([line for line in log.splitlines() if "refused" in line]) < 40, log[-3000:]
    superlink_log = (fed.root / "server" / "logs" / "superlink.log").read_text()
    assert "Traceback" not in superlink_log
    # The attacker reached neither the Control API nor the node registry.
    assert {run.run_id for run in control.runs()} - runs_before == set()
    assert {node.node_id for node in control.nodes()} == nodes_before
