"""Flower's SuperLink as a child process, bound to loopback only."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from edgefld.errors import EdgeflError
from edgefld.procs import flower_environment, free_loopback_port, spawn, stop_tree, tool_path


class SuperLink:
    """SuperLink with its state database under ``state_dir``; Control/Runtime/Fleet on 127.0.0.1:port."""

    def __init__(self, state_dir: Path, log_path: Path) -> None:
        self.state_dir = state_dir
        self.log_path = log_path
        self.port = free_loopback_port()
        self.process = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0, keepalive: Callable[[], None] = lambda: None) -> None:
        """Start and wait for /health; ``keepalive`` is called while waiting (the daemon's watchdog)."""
        argv = [
            tool_path("flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(self.port),
            "--database", str(self.state_dir / "superlink.db"), "--disable-runtime-dependency-installation",
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as output:
            self.process = spawn(argv, flower_environment(self.state_dir / "flwr"), output)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EdgeflError(f"Flower's SuperLink exited with status {self.process.returncode} at start; "
                                  f"see {self.log_path}")
            if self.healthy():
                return
            keepalive()
            time.sleep(0.1)
        raise EdgeflError(f"Flower's SuperLink did not answer within {timeout:.0f} s; see {self.log_path}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None:
            stop_tree(self.process, timeout=8.0)
