"""A daemon killed mid-round (SIGKILL: power cut, OOM killer) and started again, as systemd would."""

from __future__ import annotations

import re
import time

import pytest

from tests.faults.conftest import say
from tests.faults.helpers import (
    alive,
    assert_model_chain,
    checkpoint_of,
    children_running,
    kill_tree,
    latest_checkpoint,
    rounds,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.slow]


def _wait_mid_round(clients, timeout: float = 30.0) -> bool:
    """Until some board runs its ClientApp (it is training): the round is under way."""
    return wait_until(lambda: any(children_running(c, b"flwr-clientapp") for c in clients), timeout, 0.1) is not None


def test_server_sigkilled_mid_round(federation, fault_row):
    fault_row.injected = "SIGKILL to edgefl server (and its SuperLink) mid-round, then restart"
    fed = federation(task="digits", num_partitions=2, rounds=2, min_clients=2, local_epochs=1)
    server = fed.start_server("server-first")
    clients = [fed.start_client(0), fed.start_client(1)]
    fed.wait_for("round 1 in the metrics", lambda: rounds(fed) == [1], timeout=180)
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
    fault_row.happened = (f"resumed from checkpoint {before.round} ({before.meta['sha256'][:8]}); "
                          "rounds 1-2 once each; "
                          f"final model = checkpoint 2 = metrics round 2 ({final.meta['sha256'][:8]})")
    fault_row.rounds_lost = "0"
    fault_row.recover_s = f"{recover_s:.1f} (restart -> next round done)"


def test_client_sigkilled_mid_round(federation, fault_row):
    fault_row.injected = "SIGKILL to edgefl client 1 (and its SuperNode, ClientApp) mid-round, then restart"
    fed = federation(task="digits", num_partitions=2, rounds=3, min_clients=2, local_epochs=1, round_timeout=30.0)
    server = fed.start_server()
    clients = [fed.start_client(0), fed.start_client(1)]
    fed.wait_for("round 1 in the metrics", lambda: rounds(fed) == [1], timeout=180)
    training = _wait_mid_round([clients[1]])
    assert training, "client 1 never started training round 2"
    killed_node = re.search(r"registered with \S+ as node (\d+)", clients[1].log()).group(1)
    pids = kill_tree(clients[1])
    say(f"client 1 (node {killed_node}) killed while training round 2 (pids {pids})")
    offset = len(clients[1].log())
    restarted = fed.start_client(1)
    restarted_at = time.monotonic()
    fed.wait_for("the restarted client to register",
                 lambda: "registered with" in restarted.log()[offset:], timeout=60)
    registered_s = time.monotonic() - restarted_at
    say(f"client 1 restarted and registered again after {registered_s:.1f} s")
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=240)
    assert server.process.returncode == 0, server.log()

    records = fed.metrics()
    for r in records:
        say(f"round {r['round']}: {r['clients_ok']} ok, {r['clients_failed']} failed "
            f"{[(f['node'], f['reason'][:60]) for f in r['failures']]}")
    assert rounds(fed) == [1, 2, 3]
    assert_model_chain(records)
    killed_round, next_round = records[1], records[2]

    def about_the_killed_node(failure) -> bool:
        # A reply that never came (the round timeout), or Flower's "Node Unavailable" error reply for a
        # node without heartbeats (that reply comes from the SuperLink, so it names node 1, not the
        # dead one; with both live boards' replies counted ok, the dead node is the only candidate).
        return ((failure["node"] is None and "did not answer" in failure["reason"])
                or "Node Unavailable" in failure["reason"] or str(failure["node"]) == killed_node)

    assert (killed_round["clients_ok"], killed_round["clients_failed"]) == (1, 1), killed_round
    assert killed_round["failures"][0]["phase"] == "train" and about_the_killed_node(killed_round["failures"][0])
    # The restarted board is back in the next round. It came back as a new node (no node auth: no
    # identity to keep), and the SuperLink still lists the killed one until its heartbeat expires
    # (Flower: 2 x 30 s), so that ghost may be sampled once more: a failure, but not of a board.
    assert next_round["clients_ok"] == 2, next_round
    assert next_round["clients_failed"] <= 1 and all(map(about_the_killed_node, next_round["failures"])), next_round
    assert "round 3 train: " in restarted.log()[offset:]
    ghost = " + 1 failure of the killed node's stale id" if next_round["clients_failed"] else ""
    fault_row.happened = (f"round 2: 1 ok + 1 failure ({killed_round['failures'][0]['reason'][:48]}); "
                          f"restarted client (new node id) trained round 3: 2 ok{ghost}")
    fault_row.rounds_lost = "0"
    fault_row.recover_s = f"{registered_s:.1f} (restart -> registered)"
