"""The server killed at a sweep of instants, during its start-up and across a round: every restart starts and
continues the run, no round lost or repeated, no ERROR line anywhere.

Start-up: each point begins from a fresh state dir (the case that once left Flower's SQLite migrations half
done, so that no later start could succeed; the SuperLink's state is in memory now), kills the server after a
delay from its start, then starts it again on what was left and waits until it is ready. Delays cover the
daemon's start, the SuperLink's start and the first seconds after ready. Kills rotate through SIGKILL of the
daemon alone (its children die with it), SIGKILL of the daemon and its SuperLink at once, and SIGTERM to both.

Across a round: boards train; the server is killed at fractions of a round's measured length after the
previous round ended (while the boards fetch, train, while the server aggregates, evaluates and checkpoints)
and restarted at once; each time the next round must be the one after the last checkpoint.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from tests.faults.conftest import say
from tests.faults.helpers import alive, assert_model_chain, error_lines, processes_named, rounds, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.slow]

KILLS = ("SIGKILL daemon", "SIGKILL daemon+SuperLink", "SIGTERM daemon+SuperLink")
START_DELAYS_S = (0.3, 0.8, 1.3, 1.7, 2.0, 2.3, 2.6, 2.9, 3.2, 3.6, 4.2, 5.0)
ROUND_FRACTIONS = (0.15, 0.5, 0.85)
READY = "listening on"


def _kill(server, how: str) -> list[int]:
    """Kill as ``how`` says; the pids that must all be gone afterwards (the daemon's whole tree)."""
    tree = [server.process.pid, *processes_named(server.process.pid, b"")]
    superlinks = processes_named(server.process.pid, b"flower-superlink")
    sig = signal.SIGTERM if how.startswith("SIGTERM") else signal.SIGKILL
    for pid in [server.process.pid, *(superlinks if "SuperLink" in how else [])]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    server.process.wait(20)
    return tree


def _phase(fed, server) -> str:
    """Where the start-up was when killed, from what it left (for the table)."""
    if READY in server.log():
        return "ready"
    if processes_named(server.process.pid, b"flower-superlink"):
        return "SuperLink starting"
    return "before the SuperLink"


def test_server_killed_at_a_sweep_of_instants(federation, fault_row):
    fault_row.injected = (f"{len(START_DELAYS_S)} kills in the first {START_DELAYS_S[-1]:.0f} s of a start on a fresh "
                          f"state dir + {len(ROUND_FRACTIONS)} across rounds; {', '.join(KILLS)} in turn")
    fed = federation(task="digits", num_partitions=1, rounds=len(ROUND_FRACTIONS) + 2, min_clients=1,
                     local_epochs=1, round_timeout=60.0)
    state = fed.root / "server"
    phases: dict[str, int] = {}
    restarts_ok = 0
    for n, delay in enumerate(START_DELAYS_S):
        shutil.rmtree(state, ignore_errors=True)
        how = KILLS[n % len(KILLS)]
        server = fed.start_server(f"startup-{n}")
        time.sleep(delay)
        assert server.alive(), f"the start killed at {delay} s had already exited:\n{server.log()}"
        phase = _phase(fed, server)
        tree = _kill(server, how)
        assert wait_until(lambda tree=tree: not any(alive(pid) for pid in tree), 2.0, 0.02) is not None, \
            f"{how} at {delay} s: {[pid for pid in tree if alive(pid)]} outlived the server"
        phases[phase] = phases.get(phase, 0) + 1
        restart = fed.start_server(f"startup-{n}-restart")
        fed.wait_for(f"the restart after {how} at {delay} s ({phase}) to be ready",
                     lambda restart=restart: READY in restart.log() or not restart.alive(), timeout=90)
        assert restart.alive(), f"the restart after {how} at {delay} s ({phase}) exited:\n{restart.log()}"
        code, _ = fed.stop(restart)
        assert code == 0, restart.log()
        restarts_ok += 1
        say(f"killed ({how}) {delay:.1f} s into a fresh start ({phase}); restart ready")
    assert not error_lines(fed.root), "\n".join(error_lines(fed.root))
    say("start-up kills by phase: " + ", ".join(f"{k}: {v}" for k, v in phases.items()))

    # Across rounds: from a fresh state, boards training.
    shutil.rmtree(state, ignore_errors=True)
    server = fed.start_server("rounds-0")
    fed.start_client(0)
    fed.wait_for("round 1", lambda: len(rounds(fed)) >= 1, timeout=180)  # the kills below count from there
    started = fed.metrics()[0]
    round_s = max(3.0, started.get("wall_seconds") or 10.0)
    for n, fraction in enumerate(ROUND_FRACTIONS, start=1):
        done = len(rounds(fed))
        time.sleep(fraction * round_s)
        how = KILLS[n % len(KILLS)]
        tree = _kill(server, how)
        assert wait_until(lambda tree=tree: not any(alive(pid) for pid in tree), 2.0, 0.02) is not None
        killed_after = rounds(fed)
        say(f"killed ({how}) {fraction:.0%} of a round ({fraction * round_s:.1f} s) after round {done}; "
            f"rounds done: {killed_after}")
        server = fed.start_server(f"rounds-{n}")
        restarts_ok += 1
        fed.wait_for(f"the round after round {len(killed_after)}",
                     lambda killed_after=killed_after, server=server: len(rounds(fed)) > len(killed_after)
                     or not server.alive(), timeout=180)
        assert server.alive() or server.process.returncode == 0, server.log()
    fed.wait_for("the run to complete", lambda: not server.alive(), timeout=240)
    assert server.process.returncode == 0, server.log()
    records = fed.metrics()
    assert rounds(fed) == list(range(1, len(ROUND_FRACTIONS) + 3)), records  # none lost, none repeated
    assert_model_chain(records)
    errors = error_lines(fed.root)
    assert not errors, "\n".join(errors)
    fault_row.happened = (f"start-up kills by phase: {phases}; every restart ready; rounds "
                          f"{rounds(fed)} once each across {len(ROUND_FRACTIONS)} mid-round kills; ERROR lines: 0")
    fault_row.rounds_lost = "0"
    fault_row.recover_s = f"{restarts_ok}/{len(START_DELAYS_S) + len(ROUND_FRACTIONS)} restarts ok"
