"""A daemon killed mid-round (SIGKILL: power cut, OOM killer) and started again, as systemd would."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from edgefld.procs import names_of
from tests.faults.conftest import say
from tests.faults.helpers import (
    alive,
    assert_model_chain,
    checkpoint_of,
    children_running,
    cpu_seconds,
    error_lines,
    kill_tree,
    latest_checkpoint,
    processes_named,
    rounds,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.slow]


def _wait_mid_round(clients, timeout: float = 30.0, training_cpu_s: float = 0.0,
                    at_most_cpu_s: float = float("inf")) -> bool:
    """Until some board runs its ClientApp (with ``training_cpu_s``: has trained that long, so it is
    training, not starting or replying: a warm ClientApp is ready within a few hundredths of a CPU
    second, and CPU time does not depend on the load): the round is under way. ``at_most_cpu_s``
    leaves out a ClientApp that trained longer: one of a round already over, still exiting."""
    return wait_until(lambda: any(training_cpu_s <= cpu_seconds(pid) <= at_most_cpu_s for c in clients
                                  for pid in children_running(c, b"flwr-clientapp")), timeout, 0.02) is not None


def test_server_sigkilled_mid_round(federation, fault_row):
    fault_row.injected = "SIGKILL to edgefl server (and its SuperLink) mid-round, then restart"
    # 100 epochs of digits: seconds of training in round 2, so that round is still under way when the
    # poll below sees round 1 (a warm client's 1-epoch rounds take a fraction of a second).
    fed = federation(task="digits", num_partitions=2, rounds=2, min_clients=2, local_epochs=100)
    server = fed.start_server("server-first")
    clients = [fed.start_client(0), fed.start_client(1)]
    fed.wait_for("round 1 in the metrics", lambda: len(rounds(fed)) >= 1, timeout=180)
    assert rounds(fed) == [1], "round 2 was done before the server could be killed in it"
    assert _wait_mid_round(clients), "no board started training round 2"
    before = latest_checkpoint(fed)
    pids = kill_tree(server)
    killed_at = time.monotonic()
    say(f"server killed (pids {pids}) while the boards trained round 2; "
        f"last checkpoint: round {before.round}, sha256 {before.meta['sha256'][:12]}")
    # All of them are gone (the SuperLink too: no stale server keeps the port), not just signalled.
    assert wait_until(lambda: not any(alive(pid) for pid in pids), 20) is not None, [p for p in pids if alive(p)]

    restarted = fed.start_server("server-second")
    restarted_at = time.monotonic()
    fed.wait_for("a round after the restart", lambda: len(rounds(fed)) > before.round, timeout=180)
    recover_s = time.monotonic() - restarted_at
    say(f"restarted server finished round {before.round + 1} {recover_s:.1f} s after its start "
        f"({time.monotonic() - killed_at:.1f} s after the kill)")
    fed.wait_for("the restarted server to finish", lambda: not restarted.alive(), timeout=240)
    assert restarted.process.returncode == 0, restarted.log()

    records = fed.metrics()
    say("metrics: " + ", ".join(f"round {r['round']} from {r['start_model_sha256'][:8]} -> {r['model_sha256'][:8]} "
                                f"({r['clients_ok']} ok)" for r in records))
    assert rounds(fed) == [1, 2], records  # none repeated, none missing
    assert_model_chain(records)
    # The first round after the restart started from the last checkpoint written before the kill.
    assert records[before.round]["start_model_sha256"] == before.meta["sha256"]
    # The final model is the last checkpoint, and its digest is the one the metrics give for the last round.
    final = latest_checkpoint(fed)
    assert final.round == 2 and checkpoint_of(fed, 2).meta["sha256"] == final.meta["sha256"]
    assert final.meta["sha256"] == records[-1]["model_sha256"]
    assert f"task digits: rounds {before.round + 1}..2" in restarted.log()
    assert all(c.alive() for c in clients)  # the boards needed no restart
    errors = error_lines(fed.root)  # the old run retired, the boards' late replies refused: all at INFO
    assert not errors, "\n".join(errors)
    fault_row.happened = (f"resumed from checkpoint {before.round} ({before.meta['sha256'][:8]}); "
                          "rounds 1-2 once each; "
                          f"final model = checkpoint 2 = metrics round 2 ({final.meta['sha256'][:8]})")
    fault_row.rounds_lost = "0"
    fault_row.recover_s = f"{recover_s:.1f} (restart -> next round done)"


def _death_times(pids: list[int], timeout: float) -> dict[int, float]:
    """Seconds from now until each pid is gone (not running; a zombie counts as gone)."""
    started, dead = time.monotonic(), {}
    while len(dead) < len(pids) and time.monotonic() - started < timeout:
        for pid in pids:
            if pid not in dead and not alive(pid):
                dead[pid] = time.monotonic() - started
        time.sleep(0.005)
    return dead


# Command names of the processes the warm runtime forks (edgefld.client.warm): they keep its command line.
_FORKED = {b"flwr-clientapp": "flwr-clientapp", b"flower-supernod": "supernode", b"edgefl-warm": "warm runtime"}


def _named(pids: list[int]) -> dict[int, str]:
    names = {}
    for pid in pids:
        comm, _, cmdline = names_of(pid).partition(b"\0")
        if not comm:
            continue
        argv = cmdline.split(b"\0")
        name = next((a.decode() for a in argv if a.startswith((b"flwr-", b"flower-", b"edgefld.client"))),
                    argv[0].decode())
        names[pid] = _FORKED.get(comm, "supernode" if name == "edgefld.client.supernode" else name)
    return names


def test_client_stopped_and_sigkilled_mid_round(federation, fault_row):
    fault_row.injected = ("client 1 mid-round: SIGTERM to its daemon (round 2), then SIGKILL to its daemon alone "
                          "(round 4); restarted each time")
    # 300 epochs of digits: about 4 s of training per round, so a signal lands while the board trains
    # (a round of 1 epoch is over in a fraction of a second with the warm client), even when this test's
    # poll runs a second or two late on a busy machine.
    fed = federation(task="digits", num_partitions=2, rounds=5, min_clients=2, local_epochs=300, round_timeout=60.0)
    server = fed.start_server()
    clients = [fed.start_client(0), fed.start_client(1)]
    fed.wait_for("round 1 in the metrics", lambda: rounds(fed) == [1], timeout=180)
    figures = {}
    offset = 0  # where the running client 1's part of its log begins
    for round_, how in ((2, signal.SIGTERM), (4, signal.SIGKILL)):
        daemon = clients[1]
        fed.wait_for(f"round {round_ - 1} in the metrics", lambda round_=round_: len(rounds(fed)) >= round_ - 1,
                     timeout=120)
        # Early in the round's ~4 s of training: not the last round's ClientApp on its way out.
        assert _wait_mid_round([daemon], training_cpu_s=0.3, at_most_cpu_s=1.5), \
            f"client 1 never started training round {round_}"
        node = re.findall(r"registered with \S+ as node (-?\d+)", daemon.log())[-1]
        tree = processes_named(daemon.process.pid, b"")
        names = _named(tree)
        os.kill(daemon.process.pid, how)
        dead = _death_times(tree + [daemon.process.pid], timeout=10)
        killed_at = time.monotonic()
        daemon.process.wait(10)
        # The signal came while client 1 trained, as meant: not after it had trained (and maybe replied).
        assert f"round {round_} train:" not in daemon.log()[offset:], \
            f"the {how.name} came after client 1 had trained round {round_}: {daemon.log()[offset:][-2000:]}"
        order = sorted(dead, key=dead.get)
        say(f"{how.name} to client 1's daemon (node {node}) in round {round_}: "
            + ", ".join(f"{names.get(pid, 'daemon')} gone at {dead[pid]:.2f} s" for pid in order))
        assert set(dead) == set(tree) | {daemon.process.pid}, f"outlived their daemon: {set(tree) - set(dead)}"
        last_child = max(dead[pid] for pid in tree)
        figures[how.name] = last_child
        if how == signal.SIGTERM:
            assert daemon.process.returncode == 0, daemon.log()
            apps = [pid for pid in tree if names[pid] == "flwr-clientapp"]
            supernode = [pid for pid in tree if names[pid] == "supernode"]
            assert apps and supernode, names
            # In order: the ClientApp ends (SIGKILL), then the SuperNode, which deactivates its node.
            assert max(dead[pid] for pid in apps) <= dead[supernode[0]], (names, dead)
        else:
            # The kernel's parent-death signal: the whole tree within about a second of its daemon.
            assert last_child <= 1.5, f"the last child went {last_child:.2f} s after its daemon's SIGKILL"
        offset = len(daemon.log())
        clients[1] = fed.start_client(1)
        # The round the board left counts it out, by name: its node id, never the SuperLink's id, and its cid
        # once the server has heard from that node (it trained the round before).
        fed.wait_for(f"round {round_} in the metrics", lambda round_=round_: round_ in rounds(fed), timeout=120)
        failures = {r["round"]: r for r in fed.metrics()}[round_]["failures"]
        assert [(f["node"], f["cid"]) for f in failures] == [(int(node), 1)], failures
        fed.wait_for(f"the restarted client to train round {round_ + 1}",
                     lambda round_=round_, offset=offset:
                     f"round {round_ + 1} train: " in clients[1].log()[offset:], timeout=120)
        figures[f"{how.name} -> next trained round"] = time.monotonic() - killed_at
        # The restarted daemon reports its own rounds only, not its predecessor's last one again.
        assert f"round {round_ - 1} train:" not in clients[1].log()[offset:], clients[1].log()[offset:]
        say(f"client 1 restarted; trained round {round_ + 1} {figures[f'{how.name} -> next trained round']:.1f} s "
            "after the signal")
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=240)
    assert server.process.returncode == 0, server.log()
    records = fed.metrics()
    for r in records:
        say(f"round {r['round']}: {r['clients_ok']} ok, {r['clients_failed']} failed "
            f"{[(f['node'], f['cid'], f['board'], f['reason'][:50]) for f in r['failures']]}")
    assert rounds(fed) == [1, 2, 3, 4, 5]
    assert_model_chain(records)
    # The restarted board is back in the very next round, and no ghost of its old node is sampled: it left.
    outcomes = [(r["clients_ok"], r["clients_failed"]) for r in records]
    assert outcomes == [(2, 0), (1, 1), (2, 0), (1, 1), (2, 0)], records
    errors = error_lines(fed.root)
    assert not errors, "\n".join(errors)
    fault_row.happened = (f"SIGTERM: ClientApp ended before the SuperNode; SIGKILL: last child gone "
                          f"{figures['SIGKILL']:.2f} s after the daemon; rounds 2, 4: 1 ok + 1 failure naming the "
                          "board (node, cid 1); rounds 3, 5: 2 ok (restarted board back); ERROR lines: 0")
    fault_row.rounds_lost = "0"
    fault_row.recover_s = (f"{figures['SIGTERM -> next trained round']:.1f} / "
                           f"{figures['SIGKILL -> next trained round']:.1f} (signal -> next trained round)")
