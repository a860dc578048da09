"""Flower's own child processes, made to die with their parent: `python -m edgefld.flower_entry NAME ARGS`.

Flower starts flower-superexec, and superexec starts flwr-clientapp and
flwr-serverapp, by name from PATH; edgefld.procs puts launchers for them first
on PATH that run this. It sets PR_SET_PDEATHSIG to SIGKILL and runs Flower's
console script of that name in this process. When the parent is gone the
child's work has nowhere to go (a ClientApp's reply, a superexec's tasks), so
it ends at once: nothing outlives its daemon, whatever killed it.

The SuperLink runs through here too (edgefld.server.superlink), with the checks
that refuse every FAB but edgefl's (edgefld.server.link), and for one more
reason: Flower logs every API error at ERROR, including one that is part of
normal operation for edgefl. A board still training for a run that has
ended (its last round went on without the board) then pushes a reply the
SuperLink refuses ("[ApiError:2007] ... Run is finished"): the board is told,
the reply is dropped, nothing is wrong. And a Fleet request
whose client left before its body was read ("[UnexpectedError:ClientDisconnect]"):
the SuperLink's only Fleet client is the server daemon's own gateway, which
sends a body whole (edgefld.server.fleet_gateway), so that happens only when
the daemon itself is killed or stopping, the instant before the SuperLink goes
too. Those lines are logged at INFO; every other error stays an ERROR.

A ServerApp's output goes to the file SERVERAPP_LOG_ENV names (the server's
logs/serverapp.log): Flower's SuperExec starts it with its output thrown away,
and keeps its log only in the SuperLink, whose state is in memory.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
from importlib.metadata import entry_points

from edgefld.flower_compat import bound_object_pulls, expected_errors_at_info, heartbeat_ends_before_task_output
from edgefld.procs import FLOWER_CHILDREN, die_with_parent

SUPERLINK = "flower-superlink"
SERVERAPP = "flwr-serverapp"
SERVERAPP_LOG_ENV = "EDGEFL_SERVERAPP_LOG"
# (path prefix, Flower's error tag) of errors that are expected: see above.
EXPECTED_API_ERRORS = (("[/v1/fleet/", "[ApiError:2007]"), ("[/v1/fleet/", "[UnexpectedError:ClientDisconnect]"))


def expected_superlink_error(text: str) -> bool:
    """An error line of the SuperLink's that is expected (see above)."""
    return any(text.startswith(path) and tag in text for path, tag in EXPECTED_API_ERRORS)


def _parent_pid(args: list[str]) -> int | None:
    """Flower passes each of these processes its parent's pid (``--parent-pid``)."""
    for flag, value in itertools.pairwise(args):
        if flag == "--parent-pid" and value.isdigit():
            return int(value)
    return None


def _output_to(path: str) -> None:
    """This process's stdout and stderr, appended to ``path`` from here on."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main() -> None:
    names = (*FLOWER_CHILDREN, SUPERLINK)
    if len(sys.argv) < 2 or sys.argv[1] not in names:
        sys.exit(f"usage: python -m edgefld.flower_entry {{{','.join(names)}}} ARGS...")
    name, args = sys.argv[1], sys.argv[2:]
    die_with_parent(signal.SIGKILL, _parent_pid(args))
    if name == SERVERAPP and os.environ.get(SERVERAPP_LOG_ENV):
        _output_to(os.environ[SERVERAPP_LOG_ENV])
    if name == SUPERLINK:
        from edgefld.server import link

        link.install()  # patches Flower's functions: it holds after the edgefld modules leave sys.modules below
        expected_errors_at_info(expected_superlink_error)
    # A ClientApp or ServerApp pulls objects from its own machine's runtime: retried within 0.02 s, not 1 s.
    bound_object_pulls(local=True)
    if name == "flwr-clientapp":
        heartbeat_ends_before_task_output()  # as the warm runtime's ClientApps (edgefld.flower_compat)
    (entry,) = entry_points(group="console_scripts", name=name)
    sys.argv = [name, *args]  # Flower tells its processes apart by argv[0]
    # Flower's process must import as it would without us: a ServerApp or ClientApp resolves
    # `edgefld` through sys.path as Flower arranges it (tests/e2e/test_fab_isolation.py), not
    # through the copy this launcher imported.
    for module in [m for m in sys.modules if m == "edgefld" or m.startswith("edgefld.")]:
        del sys.modules[module]
    sys.exit(entry.load()())


if __name__ == "__main__":
    main()
