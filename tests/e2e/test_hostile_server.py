"""A hostile server against a real board: what the network answers neither grows, hangs nor stops the client.

A real `edgefl client` on 127.0.0.1 meets, on its server's address, a server the test runs that
answers (a) its probe with bytes that are not HTTP, then its SuperNode's requests with (b) a
1 GiB announced body, (c) an endless chunked body, (d) one byte a second, (e) bytes that are not
HTTP. After each: the client still runs, and its process tree (daemon, SuperNode, whatever they
start), sampled from /proc, never grew past what it holds in an honest round. Then a real
`edgefl server` takes the address and the same client process registers and trains a round.
The client's log has no Traceback or ERROR line. Every loop is bounded in count and time.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from edgefld.procs import names_of
from tests.e2e.federation import descendants

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_REPLY_MB = 16
READ_GRACE_S = 2.0  # [client] read_grace: how long the drip holds the board before it is dropped
GARBAGE = b"\x16\x03\x01\x02\x00SSH-2.0-OpenSSH_9.2\r\n" + bytes(range(256)) * 4


# Run-to-run spread of a sampled peak RSS of the client's process tree (see the assertion that uses it).
RSS_NOISE_MIB = 32


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeSampler:
    """Peak RSS of a process and all its descendants (found afresh each time), sampled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kib, self._stop = pid, 0, threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            total = sum(_status_kib(pid, "VmRSS") for pid in [self.pid, *descendants(self.pid)])
            with self._lock:
                self.peak_kib = max(self.peak_kib, total)

    def take(self) -> int:
        """The peak (MiB) since the last take."""
        with self._lock:
            peak, self.peak_kib = self.peak_kib, 0
        return peak // 1024

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class HostileServer:
    """Listens on 127.0.0.1:port and answers every connection as ``mode`` says, until the client drops it.

    ``dropped[(mode, who)]`` counts connections the client closed on it: who is "probe" (the client
    daemon's GET /health) or "supernode" (Flower's Fleet requests).
    """

    def __init__(self, port: int, mode: str) -> None:
        self.mode, self.dropped, self._stop = mode, Counter(), threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self._threads: list[threading.Thread] = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def count(self, mode: str, who: str = "supernode") -> int:
        with self._lock:
            return self.dropped[(mode, who)]

    def _accept(self) -> None:
        while not self._stop.is_set() and len(self._threads) < 200:  # bounded: 200 connections at most
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn, self.mode), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, mode: str) -> None:
        deadline = time.monotonic() + 30  # every answer ends on its own, whatever the client does
        who = "supernode"
        with conn:
            conn.settimeout(1.0)
            try:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536 and time.monotonic() < deadline:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                who = "probe" if head.startswith(b"GET /health") else "supernode"
                if mode == "huge":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/protobuf\r\n"
                                 b"Content-Length: 1073741824\r\n\r\n")
                    for _ in range(1024 * 1024 * 1024 // 65536):
                        if self._stop.is_set() or time.monotonic() > deadline:
                            return
                        conn.sendall(b"\0" * 65536)
                    return
                if mode == "endless":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/protobuf\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
                    while not self._stop.is_set() and time.monotonic() < deadline:
                        conn.sendall(b"10000\r\n" + b"\0" * 65536 + b"\r\n")
                    return
                if mode == "drip":
                    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000:
                        if self._stop.wait(1.0) or time.monotonic() > deadline:
                            return
                        conn.sendall(bytes([byte]))
                    return
                conn.sendall(GARBAGE)
                while not self._stop.is_set() and time.monotonic() < deadline:
                    try:
                        if conn.recv(65536) == b"":
                            raise ConnectionResetError
                    except TimeoutError:
                        continue
            except (BrokenPipeError, ConnectionResetError):
                with self._lock:
                    self.dropped[(mode, who)] += 1
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


def test_a_hostile_server_neither_grows_hangs_nor_stops_a_board_which_then_rejoins_a_real_one(federation):
    fed = federation(task="digits", num_partitions=2, rounds=1, min_clients=1, local_epochs=1,
                     client_config={"max_reply_mb": MAX_REPLY_MB, "read_grace": READ_GRACE_S})
    hostile = HostileServer(fed.port, "garbage")
    figures: dict[str, str] = {}
    try:
        client = fed.start_client(0)
        sampler = TreeSampler(client.process.pid)
        started = time.monotonic()
        # (a) Its probe answered with bytes that are not HTTP: named in one line, retried, never fatal.
        fed.wait_for("the probe's refusal", lambda: "does not answer plain HTTP" in client.log(), timeout=60)
        assert client.alive(), client.log()
        figures["garbage to the probe"] = f"{sampler.take()} MiB, {time.monotonic() - started:.1f} s"
        for mode, line in (("huge", f"larger than {MAX_REPLY_MB * 1024 * 1024} bytes"),
                           ("endless", f"larger than {MAX_REPLY_MB * 1024 * 1024} bytes"),
                           ("drip", "slower than 1024 bytes/s"),
                           ("garbage", None)):
            hostile.mode, started = mode, time.monotonic()
            fed.wait_for(f"the SuperNode to drop a {mode} answer", lambda mode=mode: hostile.count(mode) >= 1,
                         timeout=60)
            if line is not None:
                fed.wait_for(f"the client to name the {mode} answer",
                             lambda line=line: "dropped an answer from the server after" in client.log()
                             and line in client.log(), timeout=10)
            assert client.alive(), client.log()
            figures[f"{mode} to the SuperNode"] = (f"{sampler.take()} MiB, dropped after "
                                                   f"{time.monotonic() - started:.1f} s")
        tree = {pid: names_of(pid) for pid in descendants(client.process.pid)}
        supernodes = [pid for pid, names in tree.items()
                      if names.startswith(b"flower-supernod\0") or b"edgefld.client.supernode" in names]
        assert len(supernodes) == 1, tree
        # Its peak, between samples too. A SuperNode forked from the warm runtime shares the
        # runtime's resident pages (Flower, the backend), and counts those of them it touches.
        warm = [pid for pid, names in tree.items() if names.startswith(b"edgefl-warm\0")]
        inherited = _status_kib(warm[0], "VmRSS") // 1024 if warm else 0
        supernode_hwm = _status_kib(supernodes[0], "VmHWM") // 1024
        figures["SuperNode VmHWM over all hostile cases"] = (f"{supernode_hwm} MiB (forked from a {inherited} MiB "
                                                             "runtime)" if warm else f"{supernode_hwm} MiB")
    finally:
        hostile.close()

    # The real server takes the address; the same client process rejoins and trains a round.
    freed = time.monotonic()
    server = fed.start_server()
    fed.wait_for("the server to listen", lambda: "Fleet API only" in server.log(), timeout=120)
    listening = time.monotonic()
    fed.wait_for("the client to register", lambda: "registered with" in client.log(), timeout=120)
    registered = time.monotonic()
    fed.wait_for("the round", lambda: not server.alive(), timeout=240)
    figures["normal round"] = f"{sampler.take()} MiB"
    sampler.stop()
    figures["rejoin"] = (f"registered {registered - listening:.1f} s after the server listened "
                         f"({registered - freed:.1f} s after the hostile server left)")
    print("\nclient tree peak RSS per case:", *(f"  {k}: {v}" for k, v in figures.items()), sep="\n")

    assert server.process.returncode == 0, server.log()
    assert [(r["round"], r["clients_ok"]) for r in fed.metrics()] == [(1, 1)]
    assert "round 1 train:" in client.log(), client.log()
    assert client.alive(), client.log()
    normal = int(figures["normal round"].split()[0])
    for case, figure in figures.items():
        if case.endswith("to the SuperNode") or case == "garbage to the probe":
            # Sampled peaks of the same tree differ by a few MiB from run to run (seen: a hostile case 7 MiB
            # above the normal round); a read that followed what the server sends would add up to the 1 GiB
            # it sends.
            assert int(figure.split()[0]) <= normal + RSS_NOISE_MIB, figures
    assert supernode_hwm <= normal, figures
    # The SuperNode itself (the process that reads the answers) never came near the 1 GiB it was offered.
    assert supernode_hwm < inherited + 512, figures
    log = client.log()
    assert "Traceback" not in log and "ERROR" not in log, log
    assert log.count("dropped an answer from the server") <= 8, log  # one line per drop, not one per read
