"""A real federation for tests: `edgefl server` and `edgefl client` processes on 127.0.0.1.

Nothing is mocked: the daemons start Flower's SuperLink and SuperNodes as they
do under systemd. This process becomes a child subreaper, so processes that a
killed daemon leaves behind are reparented to us and ended by pid at teardown.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """All living descendants of ``pid`` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


@dataclass
class Daemon:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Federation:
    root: Path
    server_config: dict[str, Any]
    listen_host: str = "127.0.0.1"
    client_config: dict[str, Any] = field(default_factory=dict)
    strategy_config: dict[str, Any] = field(default_factory=dict)  # [server.strategy]
    dp_config: dict[str, Any] = field(default_factory=dict)  # [server.dp]
    secagg_config: dict[str, Any] = field(default_factory=dict)  # [server.secagg]
    port: int = field(default_factory=free_port)
    daemons: list[Daemon] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.config_path = self.root / "edgefl.toml"
        self.write_config()

    def write_config(self) -> None:
        """(Re)write the TOML file from server_config and client_config: a daemon started later reads it."""
        lines = ["[server]", f'listen = "{self.listen_host}:{self.port}"', 'state_dir = "server"', 'data_dir = "data"']
        lines += [f"{k} = {json.dumps(v)}" for k, v in self.server_config.items()]
        for table, values in (("server.strategy", self.strategy_config), ("server.dp", self.dp_config),
                              ("server.secagg", self.secagg_config)):
            if values:
                lines += ["", f"[{table}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
        lines += ["", "[client]", "cid = 0", f'server = "{self.listen_host}:{self.port}"', 'data_dir = "data"',
                  "ready_timeout = 5.0", "threads = 1"]  # several clients share two cores
        lines += [f"{k} = {json.dumps(v)}" for k, v in self.client_config.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def metrics_path(self) -> Path:
        return self.root / "server" / "metrics.jsonl"

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
               prefix: list[str] | None = None) -> Daemon:
        log_path = self.root / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [*(prefix or []), sys.executable, "-m", "edgefld.cli.main", *argv, "--config", str(self.config_path)],
                cwd=self.root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
            )
        daemon = Daemon(name, process, log_path)
        self.daemons.append(daemon)
        return daemon

    def start_server(self, name: str = "server", *extra: str, env: dict[str, str] | None = None) -> Daemon:
        return self._start(name, ["server", *extra], env)

    def start_client(self, cid: int, *extra: str, env: dict[str, str] | None = None,
                     prefix: list[str] | None = None) -> Daemon:
        """``prefix``: what the command runs under (``ip netns exec NS``: a board on its own link)."""
        # No --runtime-port: the default (0) picks a free local port, as several units on one host rely on.
        return self._start(f"client-{cid}", ["client", "--cid", str(cid), "--state-dir", f"client-{cid}", *extra],
                           env, prefix)

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.5)
        logs = "\n".join(f"--- {d.name} ---\n{d.log()[-3000:]}" for d in self.daemons)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")

    def stop(self, daemon: Daemon, timeout: float = 15.0) -> tuple[int, float]:
        """SIGTERM and wait: (exit status, seconds it took)."""
        started = time.monotonic()
        if daemon.alive():
            daemon.process.send_signal(signal.SIGTERM)
        code = daemon.process.wait(timeout)
        return code, time.monotonic() - started

    def teardown(self) -> None:
        for daemon in self.daemons:
            if daemon.alive():
                daemon.process.send_signal(signal.SIGTERM)
        for daemon in self.daemons:
            try:
                daemon.process.wait(15)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait()
        # Whatever a killed daemon left behind was reparented to us (subreaper): end it by pid.
        for pid in descendants(os.getpid()):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"flwr" in cmdline or b"flower" in cmdline or b"edgefld" in cmdline:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in descendants(os.getpid()):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
