"""Flower's SuperNode, refusing every FAB but edgefl's thin one: `python -m edgefld.client.supernode ARGS`.

Open-source Flower 1.42 runs whatever FAB a run carries: its files go first on
sys.path of the ClientApp process, so a FAB with an `edgefld/` package of its
own, or components naming its own module, runs its code on every board. FAB
signatures (`--trusted-entities`) need a licensed SuperLink. So the board
checks each run's FAB where the SuperNode first fetches it, before storing it
for a ClientApp: a foreign one gets Flower's own "FAB could not be verified"
error reply, as an unsigned FAB would with trusted entities, and nothing of
it is installed or imported. Every answer the SuperNode reads is bounded in
size and rate (edgefld.client.bounded_reads). Its polls and waits are those of
edgefld.flower_compat: fast while a federation is busy. It tells the daemon
its node id once admitted, or the code of the server's refusal, over a pipe
(edgefld.client.node_events). Where each of these goes in Flower is
edgefld.flower_compat's (one hook each, pinned); this module holds the policy.

It also stops in order. On SIGTERM from the daemon, Flower would stop its
Runtime API first, and a ClientApp still training then fails to report
("Failed to push task output: Connection refused", at ERROR). An exit handler
that Flower runs first ends the ClientApps (SIGKILL: see end_children_first),
then superexec; then Flower's own exit
deactivates the node, so the server's round counts this board out at once
instead of after two missed heartbeats, and the process ends there (Flower's
threads would hold it up to 5 s more).

A server that restarted has forgotten every node (the SuperLink keeps its
state in memory): the first call it answers with 401 makes the SuperNode leave
as on a stop, exit status 0, and the daemon starts it again to register afresh
(_forgotten). Flower would leave too, but a 401 met while a reply is pushed
(when a stop is deferred) ended as a failed push at ERROR first.

When the daemon dies (SIGKILL, OOM) the kernel sends PARENT_DEATH_SIGNAL: its
output pipe is gone, so output goes to /dev/null, and the same orderly exit
runs within EXIT_BOUND_S: the daemon's tree goes with it within a second.
A stop never cuts a reply being pushed in half (_Push): the SuperLink would
hold a message whose objects never all arrive and the server's round would
wait for it; a push in flight gets up to PUSH_GRACE_S, on SIGTERM as on the
daemon's death (a push can wait for ever for objects of a ClientApp that died).
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable
from logging import WARNING
from pathlib import Path
from types import FrameType

from flwr.common.logger import log
from flwr.supernode.cli import flower_supernode

from edgefld import flower_compat
from edgefld.client.bounded_reads import bound, bounds_from_environment
from edgefld.client.node_events import TASK_NOTICE_FD_ENV, EventWriter
from edgefld.procs import descendants, die_with_parent
from edgefld.server.fab import foreign_fab_problem

EXIT_BOUND_S = 0.9  # from the daemon's death to this process gone, its children first
PUSH_GRACE_S = 5.0  # ... unless it is pushing a reply: a reply cut in half would stall the server's round
PARENT_DEATH_SIGNAL = signal.SIGUSR1
CLIENTAPP_GONE_S = 0.5  # for the kernel to end a SIGKILLed ClientApp


def fab_refusal(content: bytes, run_id: int) -> str | None:
    """Why this board refuses a run's FAB (any but edgefl's thin one), or None."""
    problem = foreign_fab_problem(content)
    if problem is None:
        return None
    return (f"refused run {run_id}: its FAB is not edgefl's ({problem}); this board runs only "
            "the installed edgefld apps")


def task_notifier_from_environment() -> Callable[[], None] | None:
    """One byte down the warm runtime's pipe (its write end named by TASK_NOTICE_FD_ENV) each time a
    ClientApp task is created: the runtime claims it at once instead of at its next poll."""
    fd_text = os.environ.pop(TASK_NOTICE_FD_ENV, "")
    if not fd_text.isdigit():
        return None
    fd = int(fd_text)
    os.set_blocking(fd, False)

    def notify() -> None:
        try:
            os.write(fd, b"t")
        except OSError:  # full: notices already wait to be read; closed: the runtime is stopping
            pass

    return notify


def _bound_replies(max_reply_bytes: int, min_rate: int, grace: float) -> None:
    """Every Fleet client the SuperNode makes reads at most max_reply_bytes per answer, at min_rate or faster
    once grace seconds have passed."""
    flower_compat.on_protobuf_clients(lambda client: bound(client, max_reply_bytes, min_rate, grace))


class _Push:
    """A reply being pushed to the SuperLink, from its first byte to its confirmation.

    A stop signal in the middle would leave the SuperLink a message whose objects never all
    arrive, and the server's round waiting for it (past its own timeout): a stop is deferred
    until the push is over, then handled.
    """

    active = False
    # Flower's push waits (0.5 s sleeps) for an object its ClientApp has announced but not yet
    # uploaded. A stop ends the ClientApps first, so such a push can never finish: it does not
    # hold up the stop.
    awaiting_clientapp = False
    deferred: list[int] = []


def _push_started() -> None:
    _Push.active = True


def _push_awaiting_clientapp(awaiting: bool) -> None:
    _Push.awaiting_clientapp = awaiting


def _push_ended() -> None:
    _Push.active = False
    _Push.awaiting_clientapp = False
    if _Push.deferred:
        signal.raise_signal(_Push.deferred.pop(0))


def _deferring(handler: flower_compat.SignalHandler) -> flower_compat.SignalHandler:
    def run(signum: int, frame: FrameType | None) -> None:
        if _Push.active and not _Push.awaiting_clientapp:
            if not _Push.deferred:
                threading.Thread(target=_end_push_after, args=(PUSH_GRACE_S,), daemon=True).start()
            _Push.deferred.append(signum)
            return
        handler(signum, frame)
    return run


def _end_push_after(seconds: float) -> None:
    """A push that outlasts its grace (its ClientApp died while uploading: the objects it waits for never
    come) no longer holds up the stop: the stop goes on, and the node is deactivated as it leaves."""
    time.sleep(seconds)
    if _Push.active and _Push.deferred:
        _Push.active = False
        signal.raise_signal(_Push.deferred.pop(0))


def _exit_soon() -> None:
    """Within EXIT_BOUND_S, or PUSH_GRACE_S while a reply is being pushed, this process is gone."""
    started = time.monotonic()
    while True:
        waited = time.monotonic() - started
        pushing = _Push.active and not _Push.awaiting_clientapp
        if waited >= PUSH_GRACE_S or (waited >= EXIT_BOUND_S and not pushing):
            os._exit(1)
        time.sleep(0.02)


def _command(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _forgotten() -> None:
    """The server answered 401: leave as Flower does on a 401 (SIGINT, exit status 0), the reply in
    flight, if any, dropped (a stop waits for a push: _deferring; this one has ended)."""
    log(WARNING, "the server no longer knows this node (it restarted, or it rejects this board's signed "
                 "requests: is the board's clock right?): leaving, to register again")
    os.kill(os.getpid(), signal.SIGINT)


def end_children_first() -> None:
    """Flower's exit handler that runs first: the ClientApps, then everything else under this SuperNode.

    The ClientApps get SIGKILL, not SIGTERM: a SIGTERMed ClientApp reports its task as stopped,
    which revokes its token at once while its other threads still pull the message's objects, and
    this SuperNode then logs each of those pulls at ERROR ("Runtime task-token authentication
    failed"). The report would serve nothing: this SuperNode's task state ends with it.
    """
    apps = [pid for pid in descendants(os.getpid()) if b"flwr-clientapp" in _command(pid)]
    _signal(apps, signal.SIGKILL)
    deadline = time.monotonic() + CLIENTAPP_GONE_S
    while time.monotonic() < deadline and not all(map(_gone, apps)):
        time.sleep(0.02)
    _signal([pid for pid in descendants(os.getpid()) if pid not in apps], signal.SIGTERM)


_parent_died = threading.Event()


def _on_parent_death(signum: int, frame: FrameType | None) -> None:
    """The daemon died: nobody reads our output or waits for a status; leave as on SIGTERM, but quickly."""
    # The kernel sends the signal again each time we are reparented (the daemon's threads exit one
    # by one), and a second SIGTERM would meet the default action Flower restores after the first.
    if _parent_died.is_set():
        return
    _parent_died.set()
    threading.Thread(target=_exit_soon, daemon=True).start()
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        if stat.S_ISFIFO(os.fstat(fd).st_mode):  # the pipe to the daemon is broken: writes would fail (EPIPE)
            os.dup2(devnull, fd)
    signal.raise_signal(signal.SIGTERM)  # Flower's graceful exit: end_children_first, then deactivate the node


def main() -> None:
    flower_compat.refuse_fabs(fab_refusal)
    bounds = bounds_from_environment()
    if bounds is not None:
        _bound_replies(*bounds)
    flower_compat.on_reply_pushes(_push_started, _push_awaiting_clientapp, _push_ended)
    flower_compat.wrap_stop_handlers(_deferring)
    # Wraps the FAB-checking pull and the watched push above.
    flower_compat.adaptive_supernode_polls(on_task=task_notifier_from_environment())
    flower_compat.bound_object_pulls(local=False)
    events = EventWriter.from_environment()
    if events is not None:
        flower_compat.report_admission(events.registered, events.refused)
    flower_compat.on_exit(end_children_first)
    flower_compat.leave_when_forgotten(_forgotten)
    signal.signal(PARENT_DEATH_SIGNAL, _on_parent_death)
    parent = os.environ.get("EDGEFL_PARENT_PID", "")
    die_with_parent(PARENT_DEATH_SIGNAL, int(parent) if parent.isdigit() else None)
    sys.argv[0] = "flower-supernode"
    try:
        flower_supernode()
        code = 0
    except SystemExit as exc:  # Flower's exit, the node already deactivated
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    # Flower leaves non-daemon threads behind that would keep this process up to its 5 s forced exit.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


if __name__ == "__main__":
    main()
