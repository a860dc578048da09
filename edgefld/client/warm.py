"""A board's warm ClientApp runtime.

    python -m edgefld.client.warm --backend NAME --runtime-port PORT -- SUPERNODE-ARGS


Flower's SuperExec starts a fresh `flwr-clientapp` interpreter for every message: per round
and board ~2.5 s of interpreter start-up and 2-4 s of `import torch`, for a tenth of a second
of training (tens of seconds on a Pi 3's core). This process imports Flower once, and then

- forks the SuperNode (edgefld.client.supernode, FAB check and all; it registers while the
  ClientApp's code and the backend's framework are imported here) in Flower's
  `--isolation process` mode: it starts no SuperExec, and its Runtime API hands out tasks
  (AcquireTask) only to a caller holding the secret this process makes at start and gives it
  through a pipe. Nothing is written to disk; no other local process can claim a task;
- imports Flower's ClientApp runtime, edgefld's ClientApp and the board's backend framework
  (torch, TensorFlow or LiteRT), creating nothing;
- claims the SuperNode's ClientApp tasks itself, as soon as the SuperNode creates each one (it writes
  a byte down a pipe this process made; a poll every FAST_CLAIM_S is the fallback), while the
  SuperNode still downloads the message's objects, and runs each one in a fork of itself, with
  Flower's own ``run_clientapp``: every task still gets a process of its own, so a crash, a
  leak or a hang in one round cannot reach the next, and children may overlap (one stuck on a
  dead run does not hold up the next round's). A fork is ready in milliseconds, its imports
  done and shared with its siblings until written to.

Before each fork every object of this process is moved out of the garbage collector's sight
(gc.freeze): a fork's collections then never walk, and so never copy, the pages it shares with
this process and its siblings. Forking is safe only from a single-threaded process: this one
starts no thread, creates no model and runs no framework computation; numpy's OpenBLAS would start its thread pool at
import, so it is kept to one thread here (training runs in the framework's own threads,
sized by the profile). The SuperNode and the ClientApps are named by their command name
(/proc/PID/comm, what ps, top and journald show): ``flower-supernod`` (the kernel keeps 15
bytes), ``flwr-clientapp``; this process is ``edgefl-warm``.

Stopping keeps the order of Flower's own processes: on SIGTERM the ClientApps end first
(SIGKILL: a stopped task's report would only make the SuperNode log its revoked token at
ERROR), then the SuperNode (it deactivates the node); if the SuperNode exits on its own, its
ClientApps have nobody to report to and are killed, and this process exits with the SuperNode's
status for the daemon to act on. When the daemon dies, the kernel's parent-death signal starts the same orderly stop.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import select
import signal
import stat
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgefld.client.node_events import NODE_EVENTS_FD_ENV, TASK_NOTICE_FD_ENV
from edgefld.procs import die_with_parent

if TYPE_CHECKING:
    from edgefld.flower_compat import ClientAppTasks

PROCESS_NAME = b"edgefl-warm"
CLIENTAPP_NAME = b"flwr-clientapp"
SUPERNODE_NAME = b"flower-supernode"  # the kernel keeps its first 15 bytes
_PR_SET_NAME = 15

# Claiming tasks: the SuperNode wakes this process as it creates one (TASK_NOTICE_FD_ENV). Besides, as
# a fallback, it asks every FAST_CLAIM_S while a federation is busy (CLAIM_WINDOW_S after the last
# task), slowing by doubling to IDLE_CLAIM_S (Flower's SuperExec polls every 1 s): a local request.
FAST_CLAIM_S = 0.25
CLAIM_WINDOW_S = 30.0
IDLE_CLAIM_S = 1.0
PARENT_DEATH_SIGNAL = signal.SIGUSR1
PIPE_BYTES = 65536  # a Linux pipe's default capacity: one read takes every notice and wake-up waiting
SUPERNODE_GRACE_S = 6.0  # the SuperNode's own bound is 5 s while it pushes a reply (edgefld.client.supernode)


def set_process_name(name: bytes) -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_NAME, ctypes.c_char_p(name[:15]), 0, 0, 0)
    except OSError:
        pass


def claim_interval(since_task_s: float, previous_s: float) -> float:
    if since_task_s < CLAIM_WINDOW_S:
        return FAST_CLAIM_S
    return min(IDLE_CLAIM_S, max(FAST_CLAIM_S, previous_s) * 2)


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def preload_supernode() -> None:
    """Import the SuperNode's code (Flower's), before forking it: it registers the sooner."""
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy: no thread pool in a process that forks
    import edgefld.client.supernode  # noqa: F401


def preload_clientapp() -> None:
    """Import Flower's ClientApp runtime and edgefld's ClientApp with what its handlers import."""
    from edgefld.flower_compat import preload_clientapp_runtime

    preload_clientapp_runtime()
    import edgefld.apps.client_app  # noqa: F401  (the ClientApp the thin FAB names)

    # What the ClientApp's handlers import when a message comes (edgefld.apps.client_app).
    import edgefld.backends.layout  # noqa: F401
    import edgefld.data.partition  # noqa: F401  (load_partition and what it reads with)
    import edgefld.guards  # noqa: F401
    import edgefld.tasks  # noqa: F401
    from edgefld.flower_compat import bound_object_pulls

    # A fork pulls its message's objects as a fresh flwr-clientapp does (edgefld.flower_entry): a missing
    # one (the SuperNode still downloading it) is asked for again after 0.02 s, not Flower's 1 s.
    bound_object_pulls(local=True)


def preload_backend(backend: str) -> str | None:
    """Import the backend's framework; why it could not be (each ClientApp then loads it, and refuses with the code)."""
    from edgefld.backends.base import preload_backend as preload
    from edgefld.errors import EdgeflError

    try:
        preload(backend)
    except (EdgeflError, ImportError) as exc:
        return str(exc)
    return None


class WarmRuntime:
    def __init__(self, runtime_port: int, supernode_args: Sequence[str]) -> None:
        self.runtime_address = f"127.0.0.1:{runtime_port}"
        self.supernode_args = [*supernode_args, "--isolation", "process", "--port", str(runtime_port)]
        self.secret = os.urandom(32)
        self.supernode_pid: int | None = None
        self.supernode_status: int | None = None
        self.clientapps: set[int] = set()
        self.stopping = False
        self.last_task = time.monotonic()
        self.refused = False
        self._wake_r, self._wake_w = os.pipe()
        # The SuperNode's notices of new tasks; None once it closed its end (it exited).
        self._task_r: int | None
        self._task_r, self._task_w = os.pipe()

    # -- processes ---------------------------------------------------------------------------------

    def start_supernode(self) -> None:
        secret_r, secret_w = os.pipe()
        os.write(secret_w, self.secret)  # 32 bytes: far below a pipe's buffer
        os.close(secret_w)
        parent = os.getpid()
        _flush()
        gc.freeze()  # see the module's docstring
        pid = os.fork()
        if pid == 0:
            self._in_child()
            set_process_name(SUPERNODE_NAME)
            os.environ["EDGEFL_PARENT_PID"] = str(parent)
            os.environ[TASK_NOTICE_FD_ENV] = str(self._task_w)
            sys.argv = ["flower-supernode", *self.supernode_args,
                        "--superexec-auth-secret-file", f"/dev/fd/{secret_r}"]
            from edgefld.client import supernode

            supernode.main()  # exits the process
            os._exit(70)
        os.close(secret_r)
        os.close(self._task_w)  # the SuperNode's alone: its exit ends the notices
        self.supernode_pid = pid
        _leave_node_events_to_supernode()

    def start_clientapp(self, token: str) -> None:
        parent = os.getpid()
        _flush()  # a fork would write out again whatever this process still buffers
        gc.freeze()  # see the module's docstring
        pid = os.fork()
        if pid == 0:
            self._in_child()
            set_process_name(CLIENTAPP_NAME)
            die_with_parent(signal.SIGKILL, parent)  # without this process nobody can take its reply
            sys.argv = ["flwr-clientapp"]
            code = 1
            try:
                from edgefld.flower_compat import run_clientapp

                run_clientapp(self.runtime_address, token)
                code = 0
            except SystemExit as exc:  # flwr_exit, after reporting the task
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            finally:
                _flush()
                os._exit(code)  # Flower's leftover threads would hold the process up to 5 s
        self.clientapps.add(pid)
        self.last_task = time.monotonic()

    def _in_child(self) -> None:
        """A fork starts as a process of its own: default signal handling, none of this loop's files."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, PARENT_DEATH_SIGNAL):
            signal.signal(sig, signal.SIG_DFL)
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._task_r is not None:
            os.close(self._task_r)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.clientapps.discard(pid)
            if pid == self.supernode_pid:
                self.supernode_status = os.waitstatus_to_exitcode(status)

    def _wait_gone(self, pids: set[int], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.reap()
            if not pids & (self.clientapps | ({self.supernode_pid} if self.supernode_status is None else set())):
                return
            time.sleep(0.01)

    def stop(self) -> int:
        """End the ClientApps, then the SuperNode; return the status to exit with."""
        self.reap()
        apps = set(self.clientapps)
        # SIGKILL, not SIGTERM: see edgefld.client.supernode.end_children_first.
        _signal(apps, signal.SIGKILL)
        self._wait_gone(apps, 1.0)
        if self.supernode_pid is not None and self.supernode_status is None:
            _signal({self.supernode_pid}, signal.SIGTERM)
            self._wait_gone({self.supernode_pid}, SUPERNODE_GRACE_S)
            if self.supernode_status is None:
                _signal({self.supernode_pid}, signal.SIGKILL)
                self._wait_gone({self.supernode_pid}, 1.0)
        if self.stopping:
            return 0
        return self.supernode_status if self.supernode_status is not None else 1

    # -- claiming tasks ----------------------------------------------------------------------------

    def claim(self, tasks: ClientAppTasks) -> str | None:
        """One AcquireTask: a ClientApp task's token, or None (none waiting, or the SuperNode not serving yet)."""
        import httpx

        try:
            token = tasks.claim()
        except httpx.HTTPStatusError as exc:  # the SuperNode answers but refuses: say it once, keep trying
            if not self.refused:
                self.refused = True
                from logging import WARNING

                from flwr.common.logger import log

                log(WARNING, "warm runtime: the SuperNode refused to hand out a task (HTTP %d)",
                    exc.response.status_code)
            return None
        except (httpx.HTTPError, ValueError):  # not serving yet (starting, stopping), or a broken answer
            return None
        self.refused = False
        return token

    def _sleep(self, seconds: float) -> None:
        """Sleep, woken early by any signal (SIGTERM, a child's exit) or a task's notice."""
        watched = [self._wake_r] if self._task_r is None else [self._wake_r, self._task_r]
        try:
            ready, _, _ = select.select(watched, [], [], seconds)
        except InterruptedError:
            return
        for fd in ready:
            if not os.read(fd, PIPE_BYTES) and fd == self._task_r:  # the SuperNode exited: reap() will see it
                os.close(fd)
                self._task_r = None

    def run(self, backend: str) -> int:
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(PARENT_DEATH_SIGNAL, self._on_parent_death)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # only to wake the loop
        # The SuperNode first: it registers (the daemon's READY) while the ClientApp's code and the
        # framework load here, and it needs none of their pages.
        self.start_supernode()
        preload_clientapp()
        self._preload(backend)
        from edgefld.flower_compat import ClientAppTasks

        tasks = ClientAppTasks(self.runtime_address, self.secret)
        interval = FAST_CLAIM_S
        while not self.stopping:  # a parent-death signal during preloading already set it
            self.reap()
            if self.supernode_status is not None:
                break
            token = self.claim(tasks)
            if token is not None:
                self.start_clientapp(token)
                interval = FAST_CLAIM_S
                continue
            interval = claim_interval(time.monotonic() - self.last_task, interval)
            self._sleep(interval)
        tasks.close()
        return self.stop()

    def _preload(self, backend: str) -> None:
        from logging import INFO, WARNING

        from flwr.common.logger import log

        problem = preload_backend(backend) if backend else None
        if problem is not None:
            log(WARNING, "warm runtime: %s not preloaded (each ClientApp loads it): %s", backend, problem)
        threads = thread_count()
        if threads != 1:  # a fork would inherit locks held by threads that do not exist in it
            log(WARNING, "warm runtime: %d threads after preloading; forking ClientApps anyway", threads)
        log(INFO, "warm runtime: %s preloaded, forking ClientApps (pid %d)", backend or "no backend", os.getpid())
        sys.stdout.flush()

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _on_parent_death(self, signum: int, frame: object) -> None:
        """The daemon died: nobody reads our output; stop as on SIGTERM."""
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            if stat.S_ISFIFO(os.fstat(fd).st_mode):  # the pipe to the daemon is broken: writes would fail
                os.dup2(devnull, fd)
        self.stopping = True


def _leave_node_events_to_supernode() -> None:
    """The daemon's pipe for the SuperNode's node events (edgefld.client.node_events) is the forked
    SuperNode's alone: closed here, the daemon sees it end with the SuperNode, and no ClientApp inherits it."""
    fd = os.environ.pop(NODE_EVENTS_FD_ENV, "")
    if fd.isdigit():
        try:
            os.close(int(fd))
        except OSError:
            pass


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the daemon's end of the pipe is gone
            pass


def _signal(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edgefld.client.warm")
    parser.add_argument("--backend", default="")
    parser.add_argument("--runtime-port", type=int, required=True)
    parser.add_argument("supernode_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    supernode_args = args.supernode_args[1:] if args.supernode_args[:1] == ["--"] else args.supernode_args
    set_process_name(PROCESS_NAME)
    parent = os.environ.get("EDGEFL_PARENT_PID", "")
    runtime = WarmRuntime(args.runtime_port, supernode_args)
    signal.signal(PARENT_DEATH_SIGNAL, runtime._on_parent_death)
    die_with_parent(PARENT_DEATH_SIGNAL, int(parent) if parent.isdigit() else None)  # the daemon died: stop in order
    preload_supernode()
    code = runtime.run(args.backend)
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
