"""Stopping a child's whole tree, as the daemons stop Flower's SuperLink and SuperNode."""

from __future__ import annotations

import os
import signal
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


# A stand-in daemon: starts a child with spawn() (which starts a grandchild through the launcher
# Flower would find on PATH for flower-superexec), prints both pids, then waits to be killed.
DAEMON = r"""
import os, subprocess, sys, time
from edgefld.procs import flower_environment, spawn
env = flower_environment(sys.argv[1])
child = spawn([sys.executable, "-c", "import subprocess, sys, time; "
               "p = subprocess.Popen(['flower-superexec', '--insecure', '--runtime-api-address', '127.0.0.1:9']); "
               "print(p.pid, flush=True); time.sleep(600)"], env, subprocess.PIPE)
grandchild = child.stdout.readline().strip().decode()
print(child.pid, grandchild, flush=True)
time.sleep(600)
"""


def test_a_sigkilled_daemon_takes_its_children_and_flowers_along(tmp_path):
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON, str(tmp_path / "flwr")], stdout=subprocess.PIPE)
    child = grandchild = None
    try:
        child, grandchild = map(int, daemon.stdout.readline().split())
        # The grandchild is Flower's superexec, started by name as Flower starts it, without Flower's
        # own --parent-pid watch: only the launcher's parent-death signal can end it. Let it start.
        time.sleep(3)
        assert _alive(grandchild)
        launcher = (tmp_path / "flwr" / "bin" / "flower-superexec").read_text()
        assert "edgefld.flower_entry flower-superexec" in launcher
        daemon.kill()
        daemon.wait()
        deadline = time.monotonic() + 1.0
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.01)
        while _alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _alive(child), "the child outlived its SIGKILLed daemon by more than 1 s"
        assert not _alive(grandchild), "Flower's superexec outlived the daemon by more than 1 s"
    finally:
        if daemon.poll() is None:
            daemon.kill()
        for pid in (child, grandchild):  # what a failure leaves behind
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_flower_child_whose_parent_is_already_gone_ends_at_once():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "edgefld.flower_entry", "flwr-clientapp", "--parent-pid",
                           str(gone.pid)], capture_output=True, timeout=30)
    assert done.returncode == -9, done  # SIGKILL before any of Flower's code ran
    assert time.monotonic() - started < 5


def test_kill_descendants_named_ends_only_the_named_grandchildren():
    """SuperLink.end_serverapps: the ServerApp processes under the SuperLink go before their run is stopped."""
    from edgefld.procs import kill_descendants_named

    code = ("import subprocess, sys, time\n"
            "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', name])"
            " for name in ('flwr-serverapp', 'flower-superexec')]\n"
            "print(' '.join(str(k.pid) for k in kids), flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        app, other = (int(pid) for pid in parent.stdout.readline().split())
        assert kill_descendants_named(parent.pid, b"flwr-serverapp") == [app]
        assert not _alive(app)
        assert _alive(other) and parent.poll() is None
    finally:
        for pid in descendants(parent.pid):
            os.kill(pid, signal.SIGKILL)
        parent.kill()
        parent.wait()
