"""What the fault scenarios share: killing a daemon's whole tree, reading back what the server stored."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path
from typing import Any

from edgefld.persist import Checkpoint, load_latest_checkpoint, read_checkpoint
from edgefld.procs import names_of
from tests.e2e.federation import Daemon, Federation, descendants


def kill_tree(daemon: Daemon) -> list[int]:
    """SIGKILL a daemon and everything under it at once, as the kernel (OOM) or systemd's cgroup kill would."""
    pids = [daemon.process.pid, *descendants(daemon.process.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    daemon.process.wait(10)
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def children_running(daemon: Daemon, marker: bytes) -> list[int]:
    """The daemon's descendants whose command name or line holds ``marker`` (a forked ClientApp has only its name)."""
    return processes_named(daemon.process.pid, marker)


def rounds(fed: Federation) -> list[int]:
    return [record["round"] for record in fed.metrics()]


def checkpoints_dir(fed: Federation) -> Path:
    return fed.root / "server" / "checkpoints"


def latest_checkpoint(fed: Federation) -> Checkpoint:
    checkpoint, problems = load_latest_checkpoint(checkpoints_dir(fed))
    assert checkpoint is not None and not problems, problems
    return checkpoint


def checkpoint_of(fed: Federation, round_: int) -> Checkpoint:
    return read_checkpoint(checkpoints_dir(fed) / f"round-{round_:06d}.npz")


def assert_model_chain(records: list[dict[str, Any]]) -> None:
    """Every round started from the model the round before it produced: nothing lost or redone twice."""
    for before, after in itertools.pairwise(records):
        assert after["start_model_sha256"] == before["model_sha256"], (before["round"], after["round"])


def wait_until(predicate, timeout: float, step: float = 0.2) -> float | None:
    """Seconds until ``predicate()`` held, or None after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(step)
    return None


ERROR_MARKERS = ("ERROR", "Traceback", "CRITICAL")


def error_lines(root: Path) -> list[str]:
    """Every line at ERROR (or a traceback) in any log under ``root``: edgefl's daemons and Flower's processes."""
    found = []
    for log in sorted(root.rglob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if any(marker in line for marker in ERROR_MARKERS):
                found.append(f"{log.relative_to(root)}: {line.strip()}")
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time ``pid`` has used (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes_named(root_pid: int, marker: bytes) -> list[int]:
    return [pid for pid in descendants(root_pid) if marker in names_of(pid)]
