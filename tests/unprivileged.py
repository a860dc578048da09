"""Run a function as an unprivileged user, so file modes apply even though tests run as root."""

from __future__ import annotations

import os
from collections.abc import Callable

NOBODY = 65534


def run_as_nobody(function: Callable[[], str], gid: int = NOBODY) -> str:
    """Call ``function`` in a forked child that dropped to uid 65534 and group ``gid`` alone; return the text it
    returned.

    An exception escaping ``function`` comes back as "TypeName:message".
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(NOBODY)
            try:
                result = function()
            except BaseException as exc:  # reported to the parent
                result = f"{type(exc).__name__}:{exc}"
            os.write(write_end, result.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        result = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return result
