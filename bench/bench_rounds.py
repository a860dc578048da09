#!/usr/bin/env python3
"""Rounds side by side: edgefl with Flower's stock executor, with the warm client, and plain Flower.

One invocation runs, per backend (torch as its CPU-only wheel, TensorFlow, LiteRT) and per client
runtime ([client] clientapp_runtime: "flower" = Flower's SuperExec starting a fresh flwr-clientapp
process per message; "warm" = the preloaded process forking each ClientApp), the same real
federation on 127.0.0.1: a real `edgefl server` and two real `edgefl client` daemons (two boards,
threads = 1 each, as in the e2e tests), in two phases:

1. lifecycle: the server waits for a third board that never comes, so the two boards sit registered
   and idle. Measured: each daemon's start to its sd_notify READY=1 (= registered; the bench is the
   NOTIFY_SOCKET, as systemd is for `systemctl start edgefl-client`; one board started at a time),
   the idle CPU of each board's whole process tree and of the server's over --idle-seconds (after
   start-up has settled, and after the boards' fast polling once registered,
   edgefld.flower_compat.FAST_WINDOW_S), the idle whole-client PSS, and SIGTERM to every process of a board gone.
2. rounds: --rounds rounds of --task. Per round, from the server's metrics.jsonl: wall (the server
   sending the round's instructions to aggregating the replies), train max (the slowest board's own
   training time), overhead (wall - train max), period (round end to round end), bytes (arrays
   sent + received); and from /proc, sampled every --sample-ms: each board's CPU seconds in that
   round (all its processes, exited ones included through their parents' cutime), and its
   whole-client PSS (/proc/PID/smaps_rollup, summed over the daemon's process tree at one instant),
   by process role: daemon, supernode, superexec (stock only), warm (the preloaded parent, comm
   "edgefl-warm"), clientapp (comm or command line "flwr-clientapp"). The server runs one round
   more, and board 0 gets SIGTERM as soon as that round's ClientApp runs: SIGTERM to every process
   of the board gone, mid-round.

Then the plain-Flower anchor: a stock Flower 1.42 app (bench/plain_flower_app: numpy toy, train +
evaluate each round) on a stock flower-superlink and two flower-supernodes, submitted with
`flwr run`, measured the same way (round period from the ServerApp's per-round log lines; its idle
phase after the run, when the SuperLink has no run).

The targets of issue 12 are checked on the client's default runtime (the schema's default for
[client] clientapp_runtime; "flower" where the key does not exist yet); other runtimes are shown for
comparison. The exit status is 1 when a target is missed (2: the bench could not run).

The boards' Python: a board runs torch's CPU-only build, and the CUDA build PyPI gives x86_64
costs ~530 MiB RSS on import alone, so the bench refuses to measure torch with a CUDA build. It runs
itself, and every daemon, under --python (default .venv-bench/bin/python when it exists), built by
`make bench-venv` from bench/board-requirements.txt (torch==2.13.0+cpu, ai-edge-litert, tensorflow-
cpu, edgefl from this tree). `make bench-rounds` builds it once and runs this.

    make bench-rounds [BENCH_ARGS='--task digits --rounds 2']
    .venv-bench/bin/python bench/bench_rounds.py [--task mnist|digits] [--rounds 5]
        [--backends torch,tensorflow,litert] [--runtimes flower,warm] [--no-plain]
        [--idle-seconds 20] [--train-samples 6000] [--batch-size 32] [--json FILE]

Numbers are for this machine: boards, server and bench share its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BACKENDS = ("torch", "tensorflow", "litert")
RUNTIMES = ("flower", "warm")
ROLES = ("daemon", "supernode", "superexec", "warm", "clientapp", "other")
CLK_TCK = os.sysconf("SC_CLK_TCK")
KIB_PER_MIB = 1024
PLAIN_APP = Path(__file__).resolve().parent / "plain_flower_app"

# Issue 12's targets (2-core machine, 2 boards, mnist, >= 5 rounds), checked on the default runtime.
TARGET_OVERHEAD_MEDIAN_S = {"torch": 0.75, "litert": 0.75}
TARGET_FIRST_ROUND_S = 2.0
TARGET_PSS_PEAK_MIB = {"torch": 380, "litert": 240}
TARGET_BOARD_IDLE_PCT = 1.5  # of one core
TARGET_SERVER_IDLE_PCT_PER_BOARD = 1.0
TARGET_READY_S = 3.0
TARGET_STOP_S = 2.0


class BenchError(Exception):
    """The bench cannot run here (one line: what is wrong and what to do)."""


# --- /proc ------------------------------------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return None


def parents() -> dict[int, int]:
    """pid -> ppid of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            if stat is not None:
                table[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return table


def tree(root: int, table: dict[int, int]) -> list[int]:
    """``root`` and its living descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in table.items():
        children.setdefault(ppid, []).append(pid)
    found, queue = [root], [root]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def cpu_seconds(pid: int) -> tuple[float, str]:
    """(utime + stime + cutime + cstime, state) of a process: its CPU and its reaped descendants'.

    Summed over a living tree this counts every process that ran in it, exited ones included, once:
    an exited process is either still listed (a zombie) or in its reaper's cutime/cstime."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return 0.0, "X"
    rest = stat.rsplit(")", 1)[1].split()
    return sum(int(v) for v in rest[11:15]) / CLK_TCK, rest[0]


def tree_cpu(root: int, table: dict[int, int] | None = None) -> float:
    return sum(cpu_seconds(pid)[0] for pid in tree(root, table if table is not None else parents()))


def memory_kib(pid: int) -> tuple[int, int, int]:
    """(Pss, VmRSS, VmHWM) in KiB; zeros when the process is gone."""
    rollup, status = _read(f"/proc/{pid}/smaps_rollup"), _read(f"/proc/{pid}/status")
    if rollup is None or status is None:
        return 0, 0, 0
    fields = {}
    for line in (rollup + status).splitlines():
        name, _, value = line.partition(":")
        if name in ("Pss", "VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields.get("Pss", 0), fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def role_of(comm: str, cmdline: str) -> str:
    """A board's process by what it is: comm first (the warm client names its processes), then the
    command line (Flower's console scripts and edgefl's launchers carry the name there)."""
    if comm == "flwr-clientapp":
        return "clientapp"
    if comm == "edgefl-warm":
        return "warm"
    if comm == "flower-supernod":  # forked by the warm runtime: its command name, 15 bytes
        return "supernode"
    for marker, role in (("flwr-clientapp", "clientapp"), ("superexec", "superexec"), ("supernode", "supernode")):
        if marker in cmdline:
            return role
    return "other"  # between fork and exec, or exiting (its cmdline already empty)


@dataclass
class BoardSamples:
    """What the sampler saw of one board's process tree."""

    root_role: str
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (time.time(), tree CPU seconds)
    pss_peak: int = 0
    pss_roles_at_peak: dict[str, int] = field(default_factory=dict)
    role_peaks: dict[str, int] = field(default_factory=lambda: {role: 0 for role in ROLES})
    rss_peak: int = 0
    clientapp_hwm: int = 0
    clientapps: set[int] = field(default_factory=set)
    roles: dict[int, str] = field(default_factory=dict)  # a process keeps its role while it exits

    def cpu_at(self, when: float) -> float:
        """Tree CPU seconds at ``when`` (the last sample at or before it)."""
        value = self.timeline[0][1] if self.timeline else 0.0
        for t, cpu in self.timeline:
            if t > when:
                break
            value = cpu
        return value


class Sampler(threading.Thread):
    """Every ``interval`` s: each root's tree CPU and (``memory``) PSS by role, at one instant."""

    def __init__(self, roots: dict[str, tuple[int, str]], interval: float, memory: bool = True) -> None:
        super().__init__(daemon=True)
        self.roots, self.interval, self.memory = roots, interval, memory
        self.boards = {name: BoardSamples(role) for name, (_, role) in roots.items()}
        self.done = threading.Event()

    def sample(self) -> None:
        table = parents()
        now = time.time()
        for name, (root, root_role) in self.roots.items():
            board = self.boards[name]
            cpu = 0.0
            by_role = {role: 0 for role in ROLES}
            rss_total = 0
            for pid in tree(root, table):
                cpu += cpu_seconds(pid)[0]
                if not self.memory:
                    continue
                pss, rss, hwm = memory_kib(pid)
                if pid == root:
                    role = root_role
                else:
                    comm = (_read(f"/proc/{pid}/comm") or "").strip()
                    cmdline = (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ")
                    role = role_of(comm, cmdline)
                    # What a process is now (a fork names itself after it starts); what it was, while it
                    # exits and its command line is already empty.
                    if role != "other":
                        board.roles[pid] = role
                    else:
                        role = board.roles.get(pid, role)
                by_role[role] += pss
                rss_total += rss
                if role == "clientapp":
                    board.clientapps.add(pid)
                    board.clientapp_hwm = max(board.clientapp_hwm, hwm)
            board.timeline.append((now, cpu))
            if self.memory:
                total = sum(by_role.values())
                if total > board.pss_peak:
                    board.pss_peak, board.pss_roles_at_peak = total, {r: v for r, v in by_role.items() if v}
                for role, value in by_role.items():
                    board.role_peaks[role] = max(board.role_peaks[role], value)
                board.rss_peak = max(board.rss_peak, rss_total)

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(self.interval)

    def stop(self) -> dict[str, BoardSamples]:
        """The last sample (the only one, for a sampler never started as a thread)."""
        self.done.set()
        if self.ident is not None:
            self.join()
        self.sample()
        return self.boards


def gone(pids: Iterable[int]) -> bool:
    """No process of ``pids`` is running (exited: missing, or a zombie waiting for its reaper)."""
    return all(cpu_seconds(pid)[1] in ("X", "Z") for pid in pids)


def stop_and_time(process: subprocess.Popen[bytes], timeout: float = 20.0) -> float:
    """SIGTERM ``process``; seconds until it and every process of its tree (at the signal) are gone."""
    pids = tree(process.pid, parents())
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    while time.monotonic() - started < timeout:
        process.poll()
        if process.returncode is not None and gone(pids):
            return time.monotonic() - started
        time.sleep(0.01)
    return float("inf")


# --- sd_notify: the bench plays systemd --------------------------------------------------------------

class NotifySocket:
    """A NOTIFY_SOCKET for one daemon; records when READY=1 arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.ready_at: float | None = None
        self.closed = threading.Event()
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        while not self.closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if self.ready_at is None and b"READY=1" in data.split(b"\n"):
                self.ready_at = time.monotonic()

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path)}

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


def wait_until(what: str, predicate: Callable[[], bool], timeout: float, logs: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs()}")


def settle(root: int, max_seconds: float = 40.0, window: float = 1.0, below: float = 0.05) -> None:
    """Wait until a tree's CPU over ``window`` s stays under ``below`` of a core (start-up done)."""
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        before = tree_cpu(root)
        time.sleep(window)
        if tree_cpu(root) - before < below * window:
            return


# --- the edgefl federation -------------------------------------------------------------------------

def runtime_key() -> tuple[tuple[str, ...], str] | None:
    """([client] clientapp_runtime's choices, its default), or None where this tree has no such key."""
    from edgefld.config.schema import KEYS_BY_TABLE

    key = KEYS_BY_TABLE["client"].get("clientapp_runtime")
    return None if key is None else (tuple(key.choices or ()), str(key.default))


@dataclass
class CaseResult:
    name: str
    backend: str
    runtime: str
    checked: bool = False  # the client's default runtime: its targets decide the exit status
    ready_s: list[float] = field(default_factory=list)
    stop_s: list[float] = field(default_factory=list)  # idle
    stop_mid_round_s: float | None = None  # a ClientApp running
    board_idle_pct: list[float] = field(default_factory=list)
    server_idle_pct: float = float("nan")
    idle_pss_mib: list[float] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    pss_peak_mib: float = float("nan")
    pss_roles_at_peak_mib: dict[str, float] = field(default_factory=dict)
    role_peaks_mib: dict[str, float] = field(default_factory=dict)
    rss_peak_mib: float = float("nan")
    clientapp_hwm_mib: float = float("nan")
    clientapp_processes: int = 0
    accuracy: float | None = None
    note: str = ""

    def column(self, key: str) -> list[float]:
        return [r[key] for r in self.rounds if r.get(key) is not None]

    def median(self, key: str) -> float:
        values = self.column(key)  # a round without the figure (round 1's period) is left out
        return statistics.median(values) if values else float("nan")

    @property
    def first_overhead(self) -> float:
        return self.rounds[0]["overhead"] if self.rounds else float("nan")

    def summary(self) -> dict[str, Any]:
        return {"overhead_median_s": self.median("overhead"), "first_round_overhead_s": self.first_overhead,
                "period_median_s": self.median("period"),
                "client_cpu_s_per_round": self.median("client_cpu"), "bytes_per_round": self.median("bytes"),
                "pss_peak_mib": self.pss_peak_mib, "board_idle_pct_max": max(self.board_idle_pct, default=float("nan")),
                "server_idle_pct": self.server_idle_pct, "ready_s_max": max(self.ready_s, default=float("nan")),
                "stop_s_max": max(self.stop_s, default=float("nan")), "stop_mid_round_s": self.stop_mid_round_s}


def import_mnist(fed: Any, train_samples: int) -> None:
    from tests.data.real_format_files import learnable_mnist, write_mnist

    idx = fed.root / "mnist-idx"
    idx.mkdir(exist_ok=True)
    write_mnist(idx, learnable_mnist(train_samples, 500), gz=False)
    subprocess.run([sys.executable, "-m", "edgefld.cli.main", "data", "import", str(idx), "--data-dir",
                    str(fed.data_dir)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def daemon_logs(fed: Any) -> str:
    return "\n".join(f"--- {d.name} ---\n{d.log()[-2500:]}" for d in fed.daemons)


def lifecycle_phase(root: Path, result: CaseResult, args: argparse.Namespace, client_config: dict[str, Any]) -> None:
    """Boards registered and idle (the server waits for a third); READY, idle CPU, SIGTERM to gone."""
    from tests.e2e.federation import Federation

    fed = Federation(root, {"task": args.task, "num_partitions": 3, "rounds": 1, "min_clients": 3,
                            "local_epochs": 1, "batch_size": args.batch_size}, client_config=dict(client_config))
    if args.task == "mnist":
        import_mnist(fed, args.train_samples)
    sockets = {name: NotifySocket(root / f"notify-{name}.sock") for name in ("server", "client-0", "client-1")}
    try:
        server = fed.start_server(env=sockets["server"].env())
        wait_until("the server's READY", lambda: sockets["server"].ready_at is not None or not server.alive(), 120,
                   lambda: daemon_logs(fed))
        if not server.alive():
            raise BenchError(f"the server exited with status {server.process.returncode}\n{daemon_logs(fed)}")
        clients, started = [], {}
        # One board at a time, as each board starts on its own machine: two boards starting at once on
        # this 2-core machine would measure how they share its cores, not how fast one starts.
        for cid in (0, 1):
            started[cid] = time.monotonic()
            client = fed.start_client(cid, "--backend", result.backend, env=sockets[f"client-{cid}"].env())
            clients.append(client)
            notify = sockets[f"client-{cid}"]
            wait_until(f"client {cid}'s READY",
                       lambda notify=notify, client=client: notify.ready_at is not None or not client.alive(), 120,
                       lambda: daemon_logs(fed))
            if notify.ready_at is None:
                raise BenchError(f"client {cid} exited with status {client.process.returncode}\n{daemon_logs(fed)}")
            result.ready_s.append(notify.ready_at - started[cid])
        for daemon in (server, *clients):  # the ServerApp's and ClientApps' start-up, if any, is not idling
            settle(daemon.process.pid)
        if args.idle_seconds > 0:
            # A node that has just registered polls fast for a while (it is about to be asked); idle is
            # what follows, for as long as the fleet has nothing to do.
            from edgefld.flower_compat import FAST_WINDOW_S

            time.sleep(max(0.0, FAST_WINDOW_S + 1.0 - (time.monotonic() - started[1])))
            roots = {"server": (server.process.pid, "daemon")}
            roots.update({f"client-{cid}": (c.process.pid, "daemon") for cid, c in enumerate(clients)})
            sampler = Sampler(roots, 1.0, memory=False)
            sampler.sample()
            time.sleep(args.idle_seconds)
            boards = sampler.stop()
            pct = {name: 100 * (b.timeline[-1][1] - b.timeline[0][1]) / (b.timeline[-1][0] - b.timeline[0][0])
                   for name, b in boards.items()}
            result.server_idle_pct = pct["server"]
            result.board_idle_pct = [pct["client-0"], pct["client-1"]]
            idle_memory = Sampler({f"client-{cid}": (c.process.pid, "daemon") for cid, c in enumerate(clients)}, 1.0)
            result.idle_pss_mib = [b.pss_peak / KIB_PER_MIB for b in idle_memory.stop().values()]
        for client in clients:
            result.stop_s.append(stop_and_time(client.process))
    finally:
        fed.teardown()
        for notify in sockets.values():
            notify.close()


def rounds_phase(root: Path, result: CaseResult, args: argparse.Namespace, client_config: dict[str, Any]) -> None:
    from tests.e2e.federation import Federation

    # One round more than measured: SIGTERM reaches board 0 while that round's ClientApp runs.
    server_config: dict[str, Any] = {"task": args.task, "num_partitions": 2, "rounds": args.rounds + 1,
                                     "min_clients": 2, "local_epochs": 1, "batch_size": args.batch_size}
    if args.transport_dtype:
        server_config["transport_dtype"] = args.transport_dtype
    fed = Federation(root, server_config, client_config=dict(client_config))
    if args.task == "mnist":
        import_mnist(fed, args.train_samples)
    try:
        server = fed.start_server()
        clients = [fed.start_client(cid, "--backend", result.backend) for cid in (0, 1)]
        sampler = Sampler({f"client-{cid}": (c.process.pid, "daemon") for cid, c in enumerate(clients)},
                          args.sample_ms / 1000)
        sampler.start()
        try:
            wait_until(f"round {args.rounds} to end",
                       lambda: len(fed.metrics()) >= args.rounds or not all(d.alive() for d in (server, *clients)),
                       120 + 120 * args.rounds, lambda: daemon_logs(fed))
        finally:
            boards = sampler.stop()
        records = fed.metrics()[:args.rounds]
        if len(records) < args.rounds:
            raise BenchError(f"the federation ended after {len(records)} rounds\n{daemon_logs(fed)}")
        result.stop_mid_round_s = stop_mid_clientapp(clients[0].process)
    finally:
        fed.teardown()
    if len(records) != args.rounds:
        raise BenchError(f"{len(records)} rounds in metrics.jsonl, {args.rounds} expected")
    previous_end: float | None = None
    for record in records:
        end, wall = float(record["time"]), float(record["wall_seconds"])
        start = end - wall
        since = previous_end if previous_end is not None else start
        cpu = [b.cpu_at(end) - b.cpu_at(since) for b in boards.values()]
        result.rounds.append({
            "round": record["round"], "wall": wall, "train_max": float(record["client_train_seconds_max"]),
            "overhead": wall - float(record["client_train_seconds_max"]),
            "startup_max": float(record.get("client_startup_seconds_max", 0.0)),
            # The handler's work besides training: its set-up and the global model's validation.
            "handler_extra_max": max(0.0, float(record.get("client_handler_seconds_max", 0.0))
                                     - float(record["client_train_seconds_max"])),
            "period": None if previous_end is None else end - previous_end,
            "client_cpu": statistics.mean(cpu), "bytes": int(record["bytes_sent"]) + int(record["bytes_received"]),
            "failed": record.get("clients_failed", 0), "accuracy": record.get("eval_accuracy"),
        })
        previous_end = end
    result.accuracy = records[-1].get("eval_accuracy")
    peak = max(boards.values(), key=lambda b: b.pss_peak)
    result.pss_peak_mib = peak.pss_peak / KIB_PER_MIB
    result.pss_roles_at_peak_mib = {r: v / KIB_PER_MIB for r, v in peak.pss_roles_at_peak.items()}
    result.role_peaks_mib = {r: max(b.role_peaks[r] for b in boards.values()) / KIB_PER_MIB for r in ROLES
                             if any(b.role_peaks[r] for b in boards.values())}
    result.rss_peak_mib = max(b.rss_peak for b in boards.values()) / KIB_PER_MIB
    result.clientapp_hwm_mib = max(b.clientapp_hwm for b in boards.values()) / KIB_PER_MIB
    result.clientapp_processes = sum(len(b.clientapps) for b in boards.values())


def stop_mid_clientapp(daemon: subprocess.Popen[bytes], timeout: float = 60.0) -> float | None:
    """SIGTERM a board as soon as a ClientApp runs in its tree; seconds until all of it is gone (None: no
    ClientApp was seen within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and daemon.poll() is None:
        for pid in tree(daemon.pid, parents())[1:]:
            comm = (_read(f"/proc/{pid}/comm") or "").strip()
            if role_of(comm, (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ")) == "clientapp":
                return stop_and_time(daemon)
        time.sleep(0.005)
    return None


def run_case(backend: str, runtime: str, key: tuple[tuple[str, ...], str] | None, args: argparse.Namespace,
             tmp: Path) -> CaseResult:
    name = {"flower": "edgefl stock", "warm": "edgefl warm"}[runtime]
    default = key[1] if key is not None else "flower"
    result = CaseResult(name, backend, runtime, checked=runtime == default)
    if key is None:
        if runtime != "flower":
            result.note = "[client] clientapp_runtime does not exist in this tree: not measured"
            return result
        client_config: dict[str, Any] = {}  # this tree has only Flower's executor
    elif runtime not in key[0]:
        result.note = f"[client] clientapp_runtime has no {runtime!r} here (allowed: {', '.join(key[0])})"
        return result
    else:
        client_config = {"clientapp_runtime": runtime}
    case_dir = tmp / f"{backend}-{runtime}"
    print(f"bench_rounds: {name}, {backend}: lifecycle and idle ...", file=sys.stderr, flush=True)
    (case_dir / "lifecycle").mkdir(parents=True)
    lifecycle_phase(case_dir / "lifecycle", result, args, client_config)
    print(f"bench_rounds: {name}, {backend}: {args.rounds} rounds of {args.task} ...", file=sys.stderr, flush=True)
    (case_dir / "rounds").mkdir(parents=True)
    rounds_phase(case_dir / "rounds", result, args, client_config)
    return result


# --- the plain-Flower anchor -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def plain_flower(args: argparse.Namespace, tmp: Path) -> CaseResult:
    """A stock Flower app on a stock SuperLink and two SuperNodes; nothing of edgefl runs."""
    from edgefld.server.control import Control

    result = CaseResult("plain Flower", "numpy", "flower")
    root = tmp / "plain"
    home = root / "flwr-home"
    home.mkdir(parents=True)
    app = root / "app"
    shutil.copytree(PLAIN_APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, FLWR_HOME=str(home), FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1",
               PYTHONUNBUFFERED="1", PATH=bin_dir + os.pathsep + os.environ.get("PATH", os.defpath))
    env.pop("PYTHONPATH", None)  # stock Flower: nothing of this tree on its path
    processes: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log_path = root / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen([str(Path(bin_dir) / argv[0]), *argv[1:]], cwd=root, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        processes.append((name, process, log_path))
        return process

    def logs() -> str:
        return "\n".join(f"--- {n} ---\n{p.read_text(errors='replace')[-2500:]}" for n, _, p in processes)

    try:
        superlink = start("superlink", ["flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(port),
                                        "--disable-runtime-dependency-installation"])
        control = Control(f"127.0.0.1:{port}")

        def superlink_up() -> bool:
            try:
                control.runs()
                return True
            except Exception:  # not listening yet
                return False

        wait_until("the SuperLink", superlink_up, 60, logs)
        nodes, started = [], {}
        for cid in (0, 1):
            started[cid] = time.monotonic()
            nodes.append(start(f"supernode-{cid}", [
                "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{port}", "--port", str(free_port()),
                "--node-config", f"partition-id={cid} num-partitions=2"]))
        for cid in (0, 1):
            log_path = root / f"supernode-{cid}.log"
            wait_until(f"SuperNode {cid} to register",
                       lambda log_path=log_path: "SuperNode ID:" in log_path.read_text(errors="replace"), 60, logs)
            result.ready_s.append(time.monotonic() - started[cid])  # to the line seen (polled every 20 ms)
        sampler = Sampler({f"supernode-{cid}": (n.pid, "supernode") for cid, n in enumerate(nodes)},
                          args.sample_ms / 1000)
        sampler.start()
        submitted = subprocess.run([str(Path(bin_dir) / "flwr"), "run", str(app), "bench", "--format", "json",
                                    "--run-config", f"num-server-rounds={args.rounds}"], cwd=root, env=env,
                                   capture_output=True, text=True, timeout=120)
        try:
            run_id = int(json.loads(submitted.stdout)["run-id"])
        except (ValueError, KeyError, TypeError):
            raise BenchError(f"flwr run failed: {submitted.stdout[-1000:]} {submitted.stderr[-1000:]}") from None
        try:
            wait_until("the plain Flower run to finish", lambda: control.run(run_id).finished,
                       120 + 120 * args.rounds, logs)
        finally:
            boards = sampler.stop()
        status = control.run(run_id).status
        run_log = control.logs(run_id)
        if status != "finished:completed":
            raise BenchError(f"the plain Flower run ended {status}\n{run_log[-2000:]}")
        ends: dict[int, float] = {}
        for line in run_log.splitlines():
            if "plainflower: round" in line:
                words = line.split("plainflower: round", 1)[1].split()
                ends[int(words[0])] = float(words[3])
        if sorted(ends) != list(range(args.rounds + 1)):
            raise BenchError(f"plain Flower's log names rounds {sorted(ends)}\n{run_log[-2000:]}")
        for n in range(1, args.rounds + 1):
            period = ends[n] - ends[n - 1]  # train + evaluate; the numpy toy trains in microseconds
            cpu = [b.cpu_at(ends[n]) - b.cpu_at(ends[n - 1]) for b in boards.values()]
            result.rounds.append({"round": n, "wall": period, "train_max": 0.0, "overhead": period,
                                  "period": period if n > 1 else None, "client_cpu": statistics.mean(cpu),
                                  "bytes": None})
        peak = max(boards.values(), key=lambda b: b.pss_peak)
        result.pss_peak_mib = peak.pss_peak / KIB_PER_MIB
        result.pss_roles_at_peak_mib = {r: v / KIB_PER_MIB for r, v in peak.pss_roles_at_peak.items()}
        result.role_peaks_mib = {r: max(b.role_peaks[r] for b in boards.values()) / KIB_PER_MIB for r in ROLES
                                 if any(b.role_peaks[r] for b in boards.values())}
        result.rss_peak_mib = max(b.rss_peak for b in boards.values()) / KIB_PER_MIB
        result.clientapp_hwm_mib = max(b.clientapp_hwm for b in boards.values()) / KIB_PER_MIB
        result.clientapp_processes = sum(len(b.clientapps) for b in boards.values())
        # Idle: the run is over, the SuperNodes stay registered and poll.
        for process in (superlink, *nodes):
            settle(process.pid)
        if args.idle_seconds > 0:
            roots = {"server": (superlink.pid, "superlink")}
            roots.update({f"supernode-{cid}": (n.pid, "supernode") for cid, n in enumerate(nodes)})
            idle = Sampler(roots, 1.0, memory=False)
            idle.sample()
            time.sleep(args.idle_seconds)
            samples = idle.stop()
            pct = {name: 100 * (b.timeline[-1][1] - b.timeline[0][1]) / (b.timeline[-1][0] - b.timeline[0][0])
                   for name, b in samples.items()}
            result.server_idle_pct = pct["server"]
            result.board_idle_pct = [pct["supernode-0"], pct["supernode-1"]]
            idle_memory = Sampler({f"supernode-{cid}": (n.pid, "supernode") for cid, n in enumerate(nodes)}, 1.0)
            result.idle_pss_mib = [b.pss_peak / KIB_PER_MIB for b in idle_memory.stop().values()]
        for node in nodes:
            result.stop_s.append(stop_and_time(node))
    finally:
        for _, process, _ in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process, _ in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        end_leftovers()
    return result


def end_leftovers() -> None:
    """Flower processes whose parents are gone were reparented to us (subreaper): end them by pid, reap them."""
    for pid in tree(os.getpid(), parents())[1:]:
        cmdline = _read(f"/proc/{pid}/cmdline") or ""
        if ("flwr" in cmdline or "flower" in cmdline) and cpu_seconds(pid)[1] != "Z":
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for _ in range(100):
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                break
        except ChildProcessError:
            break


# --- report ----------------------------------------------------------------------------------------

def fmt(value: Any, spec: str = ".2f", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if value == float("inf"):
        return "never"
    return f"{value:{spec}}{unit}"


def targets(result: CaseResult) -> list[tuple[str, str, bool]]:
    """(what, measured, met) for each target that applies to this backend."""
    failed = sum(1 for r in result.rounds if r.get("failed"))
    checks: list[tuple[str, str, bool]] = [("every round with both boards' replies", f"{failed} rounds short",
                                            failed == 0)]
    if result.backend in TARGET_OVERHEAD_MEDIAN_S:
        limit = TARGET_OVERHEAD_MEDIAN_S[result.backend]
        value = result.median("overhead")
        checks.append((f"round overhead median <= {limit} s", fmt(value, ".2f", " s"), value <= limit))
        checks.append((f"first round overhead <= {TARGET_FIRST_ROUND_S} s", fmt(result.first_overhead, ".2f", " s"),
                       result.first_overhead <= TARGET_FIRST_ROUND_S))
    if result.backend in TARGET_PSS_PEAK_MIB:
        limit = TARGET_PSS_PEAK_MIB[result.backend]
        checks.append((f"whole-client PSS peak <= {limit} MiB", fmt(result.pss_peak_mib, ".0f", " MiB"),
                       result.pss_peak_mib <= limit))
    if result.board_idle_pct:
        worst = max(result.board_idle_pct)
        checks.append((f"board idle <= {TARGET_BOARD_IDLE_PCT}% of a core", fmt(worst, ".2f", "%"),
                       worst <= TARGET_BOARD_IDLE_PCT))
        per_board = result.server_idle_pct / 2
        checks.append((f"server idle <= {TARGET_SERVER_IDLE_PCT_PER_BOARD}% of a core per board",
                       fmt(per_board, ".2f", "% per board"), per_board <= TARGET_SERVER_IDLE_PCT_PER_BOARD))
    if result.ready_s:
        worst = max(result.ready_s)
        checks.append((f"start to READY (registered) <= {TARGET_READY_S} s", fmt(worst, ".2f", " s"),
                       worst <= TARGET_READY_S))
    stops = result.stop_s + ([result.stop_mid_round_s] if result.stop_mid_round_s is not None else [])
    if stops:
        worst = max(stops)
        checks.append((f"SIGTERM to every process gone <= {TARGET_STOP_S} s", fmt(worst, ".2f", " s"),
                       worst <= TARGET_STOP_S))
    return checks


def report(results: list[CaseResult], args: argparse.Namespace, python: str) -> int:
    measured = [r for r in results if r.rounds]
    samples = f", {args.train_samples // 2} training images per board" if args.task == "mnist" else ""
    print(f"\n{args.task}, {args.rounds} rounds, 2 boards (threads 1 each), batch {args.batch_size}{samples}; "
          f"python {python}; "
          f"torch {torch_version() or 'not installed'}; {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f} at the end")
    print("\nPer round (medians over the rounds; period from round 2; overhead = wall - slowest board's training):")
    header = (f"{'setup':<14}{'backend':<11}{'overhead':>9}{'1st round':>10}{'period':>8}{'train':>7}"
              f"{'CPU s/rnd':>10}{'bytes/rnd':>11}{'PSS peak':>9}{'idle PSS':>9}{'idle board':>11}"
              f"{'idle srv':>9}{'READY':>7}{'stop':>6}{'stop mid':>9}")
    print(header)
    print("-" * len(header))
    for r in measured:
        print(f"{r.name:<14}{r.backend:<11}{fmt(r.median('overhead')):>9}{fmt(r.first_overhead):>10}"
              f"{fmt(r.median('period')):>8}{fmt(r.median('train_max')):>7}"
              f"{fmt(r.median('client_cpu')):>10}{fmt(r.median('bytes') if r.column('bytes') else None, '.0f'):>11}"
              f"{fmt(r.pss_peak_mib, '.0f'):>9}{fmt(max(r.idle_pss_mib, default=None), '.0f'):>9}"
              f"{fmt(max(r.board_idle_pct, default=None), '.2f', '%'):>11}{fmt(r.server_idle_pct, '.2f', '%'):>9}"
              f"{fmt(max(r.ready_s, default=None)):>7}{fmt(max(r.stop_s, default=None)):>6}"
              f"{fmt(r.stop_mid_round_s):>9}")
    for r in results:
        if not r.rounds and r.note:
            print(f"{r.name:<14}{r.backend:<11}{r.note}")
    print("\nWhere the overhead goes (medians; the slowest board's, from metrics.jsonl): ClientApp start-up "
          "(fork or interpreter to handler), the handler besides training (set-up, validation of the global "
          "model), the rest (polls, transfers, the server's aggregation and evaluation):")
    for r in measured:
        if r.column("handler_extra_max"):
            startup, extra = r.median("startup_max"), r.median("handler_extra_max")
            print(f"  {r.name:<14}{r.backend:<11}overhead {fmt(r.median('overhead'))}: start-up {fmt(startup)}, "
                  f"handler besides training {fmt(extra)}, the rest {fmt(r.median('overhead') - startup - extra)}")
    print("\nUnits: seconds, except bytes, PSS (MiB, whole client: every process of a board at one instant, "
          "worst board), idle CPU (% of one core over "
          f"{args.idle_seconds:.0f} s; server: all of it, for 2 boards), READY and stop (SIGTERM to every process "
          "gone) of an idle board (worst of 2), stop mid: a board while its ClientApp runs.")
    print("\nWhole-client PSS (MiB) by process role at the peak, and each role's own peak:")
    for r in measured:
        at_peak = ", ".join(f"{role} {v:.0f}" for role, v in r.pss_roles_at_peak_mib.items())
        peaks = ", ".join(f"{role} {v:.0f}" for role, v in r.role_peaks_mib.items())
        print(f"  {r.name:<14}{r.backend:<11}at peak: {at_peak}; role peaks: {peaks}; ClientApp VmHWM "
              f"{fmt(r.clientapp_hwm_mib, '.0f')}, whole-client RSS {fmt(r.rss_peak_mib, '.0f')}, "
              f"{r.clientapp_processes} ClientApp processes")
    if args.verbose:
        print("\nRounds:")
        for r in measured:
            for row in r.rounds:
                print(f"  {r.name:<14}{r.backend:<11}round {row['round']}: wall {row['wall']:.2f}, train "
                      f"{row['train_max']:.2f}, overhead {row['overhead']:.2f}, period {fmt(row['period'])}, "
                      f"ClientApp start-up {fmt(row.get('startup_max'))}, client CPU {row['client_cpu']:.2f} s, "
                      f"bytes {fmt(row['bytes'], 'd')}, failed {row.get('failed', 0)}, "
                      f"accuracy {fmt(row.get('accuracy'), '.4f')}")
    missed = 0
    print("\nTargets (issue 12), checked on the client's default runtime; others shown for comparison:")
    for r in measured:
        if r.name == "plain Flower":
            continue
        for what, value, met in targets(r):
            if r.checked and not met:
                missed += 1
            verdict = ("ok" if met else "MISSED") if r.checked else ("(met)" if met else "(missed)")
            print(f"  {r.name:<14}{r.backend:<11}{what:<52}{value:>18}  {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps([{**r.__dict__, "summary": r.summary()} for r in results], indent=1,
                                              default=str))
    if missed:
        print(f"\nbench_rounds: {missed} target(s) missed")
        return 1
    return 0


# --- entry ------------------------------------------------------------------------------------------

def torch_version() -> str | None:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def boards_python(requested: str | None) -> str:
    if requested:
        return requested
    bench_venv = REPO / ".venv-bench" / "bin" / "python"
    return str(bench_venv) if bench_venv.exists() else sys.executable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist", choices=("mnist", "digits"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: torch,tensorflow,litert")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES),
                        help="comma-separated [client] clientapp_runtime values: flower (stock), warm")
    parser.add_argument("--no-plain", action="store_true", help="leave out the plain-Flower anchor")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--train-samples", type=int, default=6000, help="mnist training images, both boards")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--transport-dtype", default=None, help="[server] transport_dtype (default: the schema's)")
    parser.add_argument("--sample-ms", type=float, default=50.0, help="/proc sampling interval during rounds")
    parser.add_argument("--python", default=None,
                        help="the boards' interpreter (default: .venv-bench/bin/python if built, else this one)")
    parser.add_argument("--allow-cuda-torch", action="store_true",
                        help="measure torch even with a CUDA build (not what a board has)")
    parser.add_argument("--verbose", action="store_true", help="print every round")
    parser.add_argument("--json", default=None, help="write every figure to this file")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    runtimes = [r for r in args.runtimes.split(",") if r]
    for value, allowed, what in ((backends, BACKENDS, "--backends"), (runtimes, RUNTIMES, "--runtimes")):
        unknown = [v for v in value if v not in allowed]
        if unknown or not value:
            parser.error(f"{what}: {', '.join(unknown) or 'empty'}; allowed: {', '.join(allowed)}")
    if args.rounds < 2:
        parser.error("--rounds: at least 2 (the period is measured from round 2)")

    python = boards_python(args.python)
    if Path(python).absolute() != Path(sys.executable).absolute() and not os.environ.get("EDGEFL_BENCH_REEXEC"):
        if not Path(python).exists():
            print(f"bench_rounds: --python {python} does not exist (make bench-venv builds .venv-bench)",
                  file=sys.stderr)
            return 2
        # Everything (server, boards, Flower's processes) runs under the boards' interpreter.
        env = dict(os.environ, EDGEFL_BENCH_REEXEC="1", PYTHONPATH=str(REPO))
        os.execve(python, [python, str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:])], env)
    version = torch_version()
    if "torch" in backends and version and "+cpu" not in version and not args.allow_cuda_torch:
        print(f"bench_rounds: {sys.executable} has torch {version}, not the CPU-only build a board runs "
              "(its CUDA libraries alone take ~530 MiB RSS): run `make bench-venv`, or --python a venv with "
              "torch==2.13.0+cpu, or leave torch out with --backends", file=sys.stderr)
        return 2
    import edgefld

    if Path(edgefld.__file__).resolve().parent.parent != REPO:
        print(f"bench_rounds: edgefld comes from {edgefld.__file__}, not this tree ({REPO}): set PYTHONPATH={REPO}",
              file=sys.stderr)
        return 2
    from tests.e2e.federation import become_subreaper

    become_subreaper()  # processes a stopped daemon leaves behind are ours to reap and to end
    key = runtime_key()
    results: list[CaseResult] = []
    try:
        with tempfile.TemporaryDirectory(prefix="edgefl-bench-rounds-") as tmp:
            for backend in backends:
                for runtime in runtimes:
                    results.append(run_case(backend, runtime, key, args, Path(tmp)))
            if not args.no_plain:
                print("bench_rounds: plain Flower ...", file=sys.stderr, flush=True)
                results.append(plain_flower(args, Path(tmp)))
    except BenchError as exc:
        print(f"bench_rounds: {exc}", file=sys.stderr)
        return 2
    return report(results, args, sys.executable)


if __name__ == "__main__":
    sys.exit(main())
