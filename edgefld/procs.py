"""Child processes of the daemons: started so they cannot outlive us, stopped by pid.

Flower's SuperLink and SuperNode start children of their own (superexec,
ServerApp and ClientApp processes). Each child we start leads a new process
group, so stopping it stops its whole tree; and it gets PR_SET_PDEATHSIG, so
a daemon killed with SIGKILL does not leave an orphaned SuperLink behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Mapping, Sequence

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def tool_path(name: str) -> str:
    """A console script of this installation (flower-superlink, ...), next to our interpreter."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def flower_environment(flwr_home: str | os.PathLike[str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower processes: offline, no telemetry, its own FLWR_HOME."""
    env = dict(os.environ)
    # Flower starts flower-superexec, flwr-serverapp and flwr-clientapp by name: they must be
    # found next to our interpreter even when edgefl was started by its full path.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", os.defpath)
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        PYTHONUNBUFFERED="1",
    )
    # Flower's superexec polls for work every second by default; a shorter poll
    # trims the per-message latency that dominates small rounds.
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.5")
    if extra:
        env.update(extra)
    Path(flwr_home).mkdir(parents=True, exist_ok=True)
    return env


def spawn(argv: Sequence[str], env: Mapping[str, str], output: IO[bytes] | int | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(argv), env=dict(env), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=_die_with_parent, close_fds=True,
    )


def stop_tree(process: subprocess.Popen[bytes], timeout: float = 5.0) -> int | None:
    """SIGTERM the child's process group, SIGKILL what is left after ``timeout``; reap the child."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(process.pid):
        time.sleep(0.05)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
