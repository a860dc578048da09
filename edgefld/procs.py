"""Child processes of the daemons: started so they cannot outlive us, stopped by pid, in order.

Flower's SuperLink and SuperNode start children of their own (flower-superexec,
which starts flwr-serverapp and flwr-clientapp processes, the SuperLink's in a
session of its own). Every process of that tree dies with its parent, however
the parent died (SIGKILL and the OOM killer included), so nothing outlives a
daemon by more than about a second:

- each child we start leads a new process group and gets PR_SET_PDEATHSIG
  (``spawn``); the SuperNode turns it into an orderly leave
  (edgefld.client.supernode), the SuperLink simply dies (its state is in
  its memory: nothing on disk to leave half-written);
- the warm runtime (edgefld.client.warm) forks the SuperNode and the ClientApps
  itself, each with a parent-death signal, and stops them in order;
- Flower starts its own children by name from PATH: ``flower_environment``
  puts first on PATH small launchers for them (edgefld.flower_entry) that set
  PR_SET_PDEATHSIG to SIGKILL before Flower's code runs (Flower's own
  ``--parent-pid`` watch only asks them to exit gracefully, which took 9-30 s
  for a ClientApp trying to report to a SuperNode that is gone).
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
# Flower's processes that Flower itself starts by name; each gets a launcher (edgefld.flower_entry).
FLOWER_CHILDREN = ("flower-superexec", "flwr-clientapp", "flwr-serverapp")
LAUNCHER_DIR = "bin"  # under FLWR_HOME


def die_with_parent(sig: int, parent_pid: int | None = None) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies.

    ``parent_pid``: the parent it was started by. If that one died before this call, the
    signal would never come (we already have a new parent): this process gets it now.
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))
    except OSError:
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)


def _preexec(sig: int, parent_pid: int) -> Callable[[], None]:
    def run() -> None:  # in the child between fork and exec
        die_with_parent(sig, parent_pid)
    return run


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
    env["PATH"] = str(write_launchers(Path(flwr_home) / LAUNCHER_DIR)) + os.pathsep + env["PATH"]
    return env


def write_launchers(directory: Path) -> Path:
    """The launchers Flower finds first on PATH for FLOWER_CHILDREN; rewritten only when they differ."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in FLOWER_CHILDREN:
        text = (f"#!/bin/sh\n# edgefl: Flower's {name}, dying with its parent (edgefld/procs.py)\n"
                f"exec {shlex.quote(sys.executable)} -m edgefld.flower_entry {name} \"$@\"\n")
        path = directory / name
        try:
            if path.read_text() == text and os.access(path, os.X_OK):
                continue
        except OSError:
            pass
        staging = directory / f".{name}.{os.getpid()}.tmp"
        staging.write_text(text)
        staging.chmod(0o755)
        os.replace(staging, path)  # another daemon sharing FLWR_HOME may be starting one right now
    return directory


def spawn(argv: Sequence[str], env: Mapping[str, str], output: IO[bytes] | int | None,
          parent_death: int = signal.SIGTERM, pass_fds: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    """Start ``argv`` leading a process group of its own; it gets ``parent_death`` when we die.
    Of our open files it inherits ``pass_fds`` only."""
    env = dict(env, EDGEFL_PARENT_PID=str(os.getpid()))
    return subprocess.Popen(
        list(argv), env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=_preexec(parent_death, os.getpid()), close_fds=True,
        pass_fds=tuple(pass_fds),
    )


def stop_tree(process: subprocess.Popen[bytes], timeout: float = 5.0) -> int | None:
    """SIGTERM the child, then SIGKILL its process group and its other descendants if anything is
    left after ``timeout`` (one deadline for all); reap the child.

    The child alone gets the SIGTERM: it stops its own children in the order they need (the
    SuperNode ends its ClientApp before it leaves, edgefld.client.supernode), and those die
    with it (``die_with_parent``). A second signal would cut that short: Flower restores the
    default action on the first. Descendants are collected before the first signal: Flower
    starts some of its processes in sessions of their own, outside the group, and once their
    parent has exited they are reparented and no longer recognisable as ours.
    """
    deadline = time.monotonic() + timeout
    strays = [pid for pid in descendants(process.pid) if _pgid(pid) != process.pid]
    _signal_pid(process.pid, signal.SIGTERM)
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


def names_of(pid: int) -> bytes:
    """The command name (/proc/PID/comm) and command line of ``pid``, NUL-separated; b"" once it is gone.

    A process forked without exec (edgefld.client.warm's SuperNode and ClientApps) keeps its
    parent's command line and is told apart by its command name."""
    try:
        proc = Path("/proc") / str(pid)
        return (proc / "comm").read_bytes().rstrip(b"\n") + b"\0" + (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def kill_descendants_named(root: int, name: bytes, timeout: float = 2.0) -> list[int]:
    """SIGKILL ``root``'s descendants whose command name or line holds ``name``; wait (bounded) until they are gone."""
    found = [pid for pid in descendants(root) if name in names_of(pid)]
    for pid in found:
        _signal_pid(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(_pid_alive(pid) for pid in found) and time.monotonic() < deadline:
        time.sleep(0.01)
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


def _stat(pid: int | str, proc: Path = Path("/proc")) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...); None once reaped."""
    try:
        # The command name, in parentheses, may itself hold spaces and parentheses.
        return (proc / str(pid) / "stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    """Running, not a zombie: a zombie of ours reparented to a subreaper is done, whoever reaps it."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(entry.name)
            if fields is not None and fields[2] == str(pgid) and fields[0] != "Z":
                return True
    return False


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
