#!/usr/bin/env python3
"""The Fleet gateway under load: its memory under maximum-size bodies, and honest rounds under idle connections.

1. Gateway alone: a real FleetGateway (in its own process, as in the server daemon's thread) in front of a
   real SuperLink (edgefld.server.link) on 127.0.0.1; 40 clients at once each send a push-object body of
   [server] max_object_mb (8 MiB), three waves. Printed: peak RSS (VmHWM) of the gateway process and of the
   SuperLink, the gateway's idle RSS, and how many of the 120 requests got an answer.
2. A real federation (`edgefl server` + one `edgefl client`, digits, one local epoch): the median wall time
   of an honest round without and then with 2,000 idle connections held open on the gateway (reopened as
   the gateway closes them), and the server daemon's CPU seconds per round (gateway included).

    PYTHONPATH=. .venv/bin/python bench/bench_gateway.py [--rounds 4] [--skip-federation]
        [--upstream-connections 8 16 32 [--flood-rounds]]

3. With --flood-rounds, for each [server] upstream_connections N: a real federation's honest rounds while
   waves of 40 maximum-size bodies arrive, the bodies answered, and the peak RSS of the server daemon
   (gateway included) and of its SuperLink.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GATEWAY_CHILD = """
import sys, time
from edgefld.server.fleet_gateway import FleetGateway, GatewayLimits
gateway = FleetGateway("127.0.0.1", int(sys.argv[1]), "127.0.0.1", int(sys.argv[2]),
                       limits=GatewayLimits(upstream_connections=int(sys.argv[3])))
gateway.start()
print("ready", flush=True)
sys.stdin.read()
gateway.stop()
"""


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bench_bodies(upstream: int, waves: int = 3, concurrent: int = 40,
                 size: int = 8 * 1024 * 1024) -> dict[str, object]:
    from edgefld.server.superlink import SuperLink

    with tempfile.TemporaryDirectory() as tmp:
        superlink = SuperLink(Path(tmp) / "link", Path(tmp) / "superlink.log")
        superlink.start(timeout=120)
        port = _free_port()
        gateway = subprocess.Popen([sys.executable, "-c", GATEWAY_CHILD, str(port), str(superlink.port),
                                    str(upstream)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ))
        try:
            assert gateway.stdout is not None and gateway.stdout.readline().strip() == b"ready"
            idle_kib = _status(gateway.pid, "VmRSS")
            body = b"\x0a" * size
            answered = [0]
            lock = threading.Lock()

            def one() -> None:
                with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
                    sock.sendall(b"POST /v1/fleet/push-object HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                 b"application/protobuf\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                    if sock.recv(65536).startswith(b"HTTP/1.1 "):
                        with lock:
                            answered[0] += 1

            started = time.monotonic()
            for _ in range(waves):
                workers = [threading.Thread(target=one) for _ in range(concurrent)]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join(180)
            elapsed = time.monotonic() - started
            return {"upstream_connections": upstream, "gateway idle RSS MiB": idle_kib // 1024,
                    "gateway peak RSS MiB (40 x 8 MiB bodies)": _status(gateway.pid, "VmHWM") // 1024,
                    "SuperLink peak RSS MiB": _status(superlink.process.pid, "VmHWM") // 1024,
                    "answered": f"{answered[0]}/{waves * concurrent} in {elapsed:.1f} s"}
        finally:
            gateway.communicate(b"", timeout=30)
            superlink.stop()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_rounds(rounds: int) -> dict[str, object]:
    from tests.e2e.federation import Federation, become_subreaper

    become_subreaper()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    with tempfile.TemporaryDirectory() as tmp:
        fed = Federation(Path(tmp), {"task": "digits", "num_partitions": 2, "rounds": 1000, "min_clients": 1,
                                     "local_epochs": 1})
        try:
            server = fed.start_server()
            fed.wait_for("the server", lambda: "Fleet API only" in server.log(), 120)
            fed.start_client(0)
            fed.wait_for("a first round", lambda: len(fed.metrics()) >= 1, 240)

            def measure() -> tuple[float, float]:
                start, cpu = len(fed.metrics()), _cpu_s(server.process.pid)
                fed.wait_for("rounds", lambda: len(fed.metrics()) >= start + rounds, 120 * rounds)
                times = [r["wall_seconds"] for r in fed.metrics()[start:start + rounds]]
                return statistics.median(times), (_cpu_s(server.process.pid) - cpu) / rounds

            quiet = measure()
            stop, held = threading.Event(), []

            def hold() -> None:
                while not stop.is_set():
                    while len(held) < 2000:
                        try:
                            held.append(socket.create_connection(("127.0.0.1", fed.port), timeout=5))
                        except OSError:
                            break
                    stop.wait(0.5)
                    for sock in list(held):
                        sock.setblocking(False)
                        try:
                            if sock.recv(1) == b"":
                                held.remove(sock)
                                sock.close()
                        except BlockingIOError:
                            pass
                        except OSError:
                            held.remove(sock)
                            sock.close()

            holder = threading.Thread(target=hold, daemon=True)
            holder.start()
            loaded = measure()
            stop.set()
            holder.join(10)
            for sock in held:
                sock.close()
            return {"honest round median s (quiet)": round(quiet[0], 2),
                    "honest round median s (2,000 idle connections)": round(loaded[0], 2),
                    "server daemon CPU s per round (quiet)": round(quiet[1], 3),
                    "server daemon CPU s per round (2,000 idle)": round(loaded[1], 3)}
        finally:
            fed.teardown()


def _flood(port: int, stop: threading.Event, counts: list[int], concurrent: int = 40,
           size: int = 8 * 1024 * 1024) -> None:
    """Waves of ``concurrent`` maximum-size push-object bodies until ``stop``; counts: [sent, answered]."""
    body = b"\x0a" * size
    lock = threading.Lock()

    def one() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
                sock.sendall(b"POST /v1/fleet/push-object HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             b"application/protobuf\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                answered = sock.recv(65536).startswith(b"HTTP/1.1 ")
        except OSError:
            answered = False
        with lock:
            counts[0] += 1
            counts[1] += answered

    for _ in range(20):  # bounded: at most 20 waves
        if stop.is_set():
            return
        workers = [threading.Thread(target=one) for _ in range(concurrent)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(180)


def bench_flood_round(upstream: int, rounds: int = 2) -> dict[str, object]:
    """An honest round in a real federation while 40 maximum-size bodies arrive at once, wave after wave."""
    from tests.e2e.federation import Federation, become_subreaper, descendants

    become_subreaper()
    with tempfile.TemporaryDirectory() as tmp:
        fed = Federation(Path(tmp), {"task": "digits", "num_partitions": 2, "rounds": 1000, "min_clients": 1,
                                     "local_epochs": 1, "upstream_connections": upstream})
        try:
            server = fed.start_server()
            fed.wait_for("the server", lambda: "Fleet API only" in server.log(), 120)
            fed.start_client(0)
            fed.wait_for("a first round", lambda: len(fed.metrics()) >= 1, 240)
            link = next(pid for pid in descendants(server.process.pid)
                        if b"edgefld.server.link" in Path(f"/proc/{pid}/cmdline").read_bytes())
            start = len(fed.metrics())
            fed.wait_for("quiet rounds", lambda: len(fed.metrics()) >= start + rounds, 120 * rounds)
            quiet = statistics.median(r["wall_seconds"] for r in fed.metrics()[start:start + rounds])
            link_before = _status(link, "VmHWM")
            stop, counts = threading.Event(), [0, 0]
            flooder = threading.Thread(target=_flood, args=(fed.port, stop, counts), daemon=True)
            start = len(fed.metrics())
            flooder.start()
            try:
                fed.wait_for("rounds under the flood", lambda: len(fed.metrics()) >= start + rounds, 180 * rounds)
                flooded = statistics.median(r["wall_seconds"] for r in fed.metrics()[start:start + rounds])
            finally:
                stop.set()
                flooder.join(240)
            return {"upstream_connections": upstream,
                    "honest round median s (quiet)": round(quiet, 2),
                    "honest round median s (40 x 8 MiB bodies, wave after wave)": round(flooded, 2),
                    "bodies answered": f"{counts[1]}/{counts[0]}",
                    "server daemon (gateway) peak RSS MiB": _status(server.process.pid, "VmHWM") // 1024,
                    "SuperLink peak RSS MiB (before flood)": link_before // 1024,
                    "SuperLink peak RSS MiB": _status(link, "VmHWM") // 1024}
        finally:
            fed.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--skip-federation", action="store_true")
    parser.add_argument("--upstream-connections", type=int, nargs="+", default=None, metavar="N",
                        help="[server] upstream_connections to compare (default: the schema's)")
    parser.add_argument("--flood-rounds", action="store_true",
                        help="for each N, also honest rounds in a real federation under the body flood")
    args = parser.parse_args()
    from edgefld.config.schema import key
    default = key("server", "upstream_connections").default
    for upstream in args.upstream_connections or [default]:
        print(json.dumps(bench_bodies(upstream), indent=1), flush=True)
        if args.flood_rounds:
            print(json.dumps(bench_flood_round(upstream), indent=1), flush=True)
    if not args.skip_federation:
        print(json.dumps(bench_rounds(args.rounds), indent=1), flush=True)


if __name__ == "__main__":
    main()
