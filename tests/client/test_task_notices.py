"""The SuperNode's notice of each new ClientApp task to the warm runtime (a pipe), from both ends."""

from __future__ import annotations

import os
import select
import time

from edgefld.client.node_events import TASK_NOTICE_FD_ENV
from edgefld.client.supernode import task_notifier_from_environment
from edgefld.client.warm import WarmRuntime


def test_a_notice_wakes_the_warm_runtime_at_once_and_the_supernodes_exit_ends_them(monkeypatch):
    runtime = WarmRuntime(runtime_port=9, supernode_args=[])
    monkeypatch.setenv(TASK_NOTICE_FD_ENV, str(runtime._task_w))
    notify = task_notifier_from_environment()  # as the forked SuperNode does
    assert notify is not None and TASK_NOTICE_FD_ENV not in os.environ  # its children do not inherit it

    started = time.monotonic()
    notify()
    runtime._sleep(30.0)
    assert time.monotonic() - started < 10.0  # woken by the notice, not the 30 s timeout
    assert runtime._task_r is not None

    for _ in range(100_000):  # a full pipe (nobody reading): the SuperNode neither blocks nor fails
        notify()
    runtime._sleep(30.0)  # one read takes them all
    assert not select.select([runtime._task_r], [], [], 0)[0]

    os.close(runtime._task_w)  # the SuperNode exited
    started = time.monotonic()
    runtime._sleep(30.0)  # reads the end of the pipe
    assert runtime._task_r is None
    runtime._sleep(0.01)  # and no longer watches it
    assert time.monotonic() - started < 10.0


def test_without_the_warm_runtime_there_is_no_notifier(monkeypatch):
    monkeypatch.delenv(TASK_NOTICE_FD_ENV, raising=False)
    assert task_notifier_from_environment() is None
