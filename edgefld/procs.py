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
    """SIGTERM the child's process group and its descendants, SIGKILL what is left after
    ``timeout`` (one deadline for all); reap the child.

    Descendants are collected before the first signal: Flower starts some of its processes
    (flwr-serverapp, flwr-clientapp) in sessions of their own, outside the group, and once
    their parent has exited they are reparented and no longer recognisable as ours.
    """
    deadline = time.monotonic() + timeout
    strays = [pid for pid in descendants(process.pid) if _pgid(pid) != process.pid]
    _signal_group(process.pid, signal.SIGTERM)
    for pid in strays:
        _signal_pid(pid, signal.SIGTERM)
    try:
        process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    while time.monotonic() < deadline and (
        _group_alive(process.pid) or any(_pid_alive(pid) for pid in strays)
    ):
        time.sleep(0.05)
    _signal_group(process.pid, signal.SIGKILL)
    for pid in strays:
        _signal_pid(pid, signal.SIGKILL)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def descendants(root: int, proc: Path = Path("/proc")) -> list[int]:
    """The pids of ``root``'s children, their children, ... as /proc shows them now."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name, in parentheses, may itself hold spaces and parentheses.
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # exited meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _signal_pid(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


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
