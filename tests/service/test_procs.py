"""Stopping a child's whole tree, as the daemons stop Flower's SuperLink and SuperNode."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from edgefld.procs import descendants, spawn, stop_tree

# A child that ignores SIGTERM and starts a grandchild in a session of its own (as
# Flower's superexec starts flwr-serverapp), which ignores SIGTERM too, then prints
# the grandchild's pid.
STUBBORN_TREE = r"""
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen(
    [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"],
    start_new_session=True)
print(grandchild.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_stop_tree_kills_a_descendant_outside_the_group_within_one_deadline():
    child = spawn([sys.executable, "-c", STUBBORN_TREE], os.environ, subprocess.PIPE)
    try:
        grandchild = int(child.stdout.readline())
        assert grandchild in descendants(child.pid)
        assert os.getpgid(grandchild) != child.pid  # outside the group a killpg reaches
        started = time.monotonic()
        stop_tree(child, timeout=1.0)
        took = time.monotonic() - started
        deadline = time.monotonic() + 5
        while _alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(grandchild), "the grandchild in its own session survived"
        assert child.poll() is not None
        # One deadline for the child and its tree, not one each.
        assert took < 1.0 + 0.5, f"stop_tree took {took:.2f} s for a 1 s timeout"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
