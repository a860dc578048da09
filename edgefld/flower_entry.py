"""Flower's own child processes, made to die with their parent: `python -m edgefld.flower_entry NAME ARGS`.

Flower starts flower-superexec, and superexec starts flwr-clientapp and
flwr-serverapp, by name from PATH; edgefld.procs puts launchers for them first
on PATH that run this. It sets PR_SET_PDEATHSIG to SIGKILL and runs Flower's
console script of that name in this process. When the parent is gone the
child's work has nowhere to go (a ClientApp's reply, a superexec's tasks), so
it ends at once: nothing outlives its daemon, whatever killed it.
"""

from __future__ import annotations

import signal
import sys
from importlib.metadata import entry_points

from edgefld.procs import FLOWER_CHILDREN, die_with_parent


def _parent_pid(args: list[str]) -> int | None:
    """Flower passes each of these processes its parent's pid (``--parent-pid``)."""
    for flag, value in zip(args, args[1:]):
        if flag == "--parent-pid" and value.isdigit():
            return int(value)
    return None


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in FLOWER_CHILDREN:
        sys.exit(f"usage: python -m edgefld.flower_entry {{{','.join(FLOWER_CHILDREN)}}} ARGS...")
    name, args = sys.argv[1], sys.argv[2:]
    die_with_parent(signal.SIGKILL, _parent_pid(args))
    (entry,) = entry_points(group="console_scripts", name=name)
    sys.argv = [name, *args]  # Flower tells its processes apart by argv[0]
    sys.exit(entry.load()())


if __name__ == "__main__":
    main()
