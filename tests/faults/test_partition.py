"""A board cut off from the server for a minute (its link down), then back: it rejoins on its own.

Client 1 runs in a network namespace of our own, joined to the host by a veth pair, and
reaches the server at the host's end of it; client 0 stays on 127.0.0.1. The cable is
"pulled" by setting the host's end down for PARTITION_S, mid-round.
"""

from __future__ import annotations

import time

import pytest
from flwr.common.constant import MAX_RETRY_DELAY

from edgefld.client.daemon import BACKOFF_S
from tests.e2e.netns import board_namespace, can_make_namespaces
from tests.faults.conftest import say
from tests.faults.helpers import assert_model_chain, children_running, cpu_seconds, rounds, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.slow]

PARTITION_S = 60.0  # issue 6: a one-minute partition
HOST_IP, BOARD_IP = "10.213.78.1", "10.213.78.2"
# After the link returns, the board's SuperNode tries again within Flower's longest retry delay;
# should it have exited instead (the server dropped the node), the client daemon restarts it within
# its longest backoff. Plus the SuperNode's own start on two busy cores.
PROCESS_START_S = 15.0
REJOIN_BOUND_S = MAX_RETRY_DELAY + max(BACKOFF_S) + PROCESS_START_S


def test_partition_of_one_board_for_a_minute(federation, fault_row):
    if not can_make_namespaces():
        pytest.skip("needs root and iproute2 (a network namespace and a veth pair)")
    fault_row.injected = f"client 1's link (veth, own netns) down {PARTITION_S:.0f} s mid-round"
    with board_namespace("edgefl-fault-part", HOST_IP, BOARD_IP) as link:
        # 100 epochs of digits: seconds of training per round, so the link goes down while client 1 trains
        # round 2 (a round of 1 epoch is over in a fraction of a second with the warm client).
        fed = federation(listen_host="0.0.0.0", task="digits", num_partitions=2, rounds=3, min_clients=2,
                         local_epochs=100, tls=False)
        server = fed.start_server()
        clients = [fed.start_client(0, "--server", f"127.0.0.1:{fed.port}"),
                   fed.start_client(1, "--server", f"{HOST_IP}:{fed.port}", "--tls", "false", "--log-level", "debug",
                                    prefix=link.exec_argv([]))]
        pids = [server.process.pid] + [c.process.pid for c in clients]
        fed.wait_for("round 1 in the metrics", lambda: rounds(fed) == [1], timeout=180)
        assert "registered with" in clients[1].log()
        # Round 2 under way: client 1's ClientApp has trained 0.3 CPU-s (a fork is ready within a few
        # hundredths; CPU time does not depend on the load).
        assert wait_until(lambda: any(cpu_seconds(pid) >= 0.3
                                      for pid in children_running(clients[1], b"flwr-clientapp")),
                          60, 0.02) is not None, clients[1].log()
        offset = len(clients[1].log())
        link.set_link(up=False)
        say(f"link {link.host_if} down: client 1 ({BOARD_IP}) cut off for {PARTITION_S:.0f} s during round 2")
        time.sleep(PARTITION_S)
        link.set_link(up=True)
        up_at = time.monotonic()
        cut_off = clients[1].log()[offset:]
        example = next((line for line in cut_off.splitlines() if "retry" in line.lower() or "fail" in line.lower()),
                       "-")
        say(f"link up again; while cut off, client 1 logged {len(cut_off.splitlines())} lines, e.g. {example!r}")

        def rejoined() -> bool:
            text = clients[1].log()[offset:]
            return "registered with" in text or "Connection successful after" in text

        rejoin_s = wait_until(rejoined, REJOIN_BOUND_S + 30)
        assert rejoin_s is not None, clients[1].log()[offset:][-3000:]
        how = "registered again" if "registered with" in clients[1].log()[offset:] else "reconnected"
        say(f"client 1 {how} {rejoin_s:.1f} s after the link came back (bound {REJOIN_BOUND_S:.0f} s = Flower's "
            f"retry cap {MAX_RETRY_DELAY} s + client backoff cap {max(BACKOFF_S)} s + {PROCESS_START_S:.0f} s start)")
        fed.wait_for("the server to finish", lambda: not server.alive(), timeout=240)
        trained_s = time.monotonic() - up_at
        assert server.process.returncode == 0, server.log()

        records = fed.metrics()
        for r in records:
            say(f"round {r['round']}: {r['clients_ok']} ok, {r['clients_failed']} failed, {r['wall_seconds']:.0f} s "
                f"{[f['reason'][:70] for f in r['failures']]}")
        assert rounds(fed) == [1, 2, 3]
        assert_model_chain(records)
        assert rejoin_s <= REJOIN_BOUND_S, rejoin_s
        # The board is back for the last round, and nobody restarted a daemon by hand.
        assert records[-1]["clients_ok"] == 2, records[-1]
        assert "round 3 train: " in clients[1].log()[offset:]
        assert all(c.alive() for c in clients)
        assert [server.process.pid] + [c.process.pid for c in clients] == pids
        round2 = records[1]
        fault_row.happened = (f"round 2: {round2['clients_ok']} ok, {round2['clients_failed']} failed "
                              f"(node unavailable); client 1 {how} (no manual restart) and trained round 3 (2 ok); "
                              "run done "
                              f"{trained_s:.0f} s after link up")
        fault_row.rounds_lost = "0"
        fault_row.recover_s = f"{rejoin_s:.1f} (link up -> rejoined; bound {REJOIN_BOUND_S:.0f})"
