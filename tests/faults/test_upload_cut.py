"""A board killed half-way through uploading its reply: the round ends without it, within about a minute.

The SuperLink takes a reply as soon as its message arrives and the server's grid then pulls the
reply's objects as they come; a board killed in between never sends the rest. Flower's grid
retries those objects for minutes (500 tries, or the 180 s object-push session): the round, and
the federation, waited all that time. edgefl's grid gives the upload up once the node is no
longer online (edgefld.flower_compat.abandon_uploads_of_nodes_that_left).

Client 1 runs in a network namespace of our own whose uplink is throttled (tc tbf), so that its
reply takes seconds to upload and the kill lands inside the upload, not before or after it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

import pytest

from tests.e2e.netns import board_namespace, can_make_namespaces
from tests.faults.conftest import say
from tests.faults.helpers import assert_model_chain, error_lines, rounds, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.slow]

HOST_IP, BOARD_IP = "10.213.79.1", "10.213.79.2"
# digits' reply is about 20 KB: 16 kbit/s makes its upload last about ten seconds (the server is told to
# accept transfers that slow: min_transfer_rate).
UPLINK = ["rate", "16kbit", "burst", "4kb", "limit", "256kb"]
# A node is offline once its heartbeats stop for Flower's heartbeat patience (about a minute here);
# Flower's own wait for the cut-off upload was 180 s or more.
ROUND_BOUND_S = 100.0
ABANDONED = "left before it finished uploading its reply"


def serverapp_log(fed) -> str:
    """What the ServerApp logged (edgefld.flower_entry keeps its output in the server's logs)."""
    return (fed.root / "server" / "logs" / "serverapp.log").read_text(errors="replace")


def test_board_killed_while_uploading_its_reply(federation, fault_row):
    if not can_make_namespaces() or shutil.which("tc") is None:
        pytest.skip("needs root, iproute2 and tc (a network namespace with a throttled uplink)")
    fault_row.injected = "client 1 (uplink 16 kbit/s) SIGKILLed while it uploads its round-2 reply; restarted"
    with board_namespace("edgefl-fault-upl", HOST_IP, BOARD_IP) as link:
        subprocess.run(link.exec_argv(["tc", "qdisc", "add", "dev", "board0", "root", "tbf", *UPLINK]), check=True)
        fed = federation(listen_host="0.0.0.0", task="digits", num_partitions=2, rounds=3, min_clients=2,
                         local_epochs=1, tls=False, min_transfer_rate=256)
        server = fed.start_server()
        board_args = ("--server", f"{HOST_IP}:{fed.port}", "--tls", "false")
        clients = [fed.start_client(0, "--server", f"127.0.0.1:{fed.port}"),
                   fed.start_client(1, *board_args, prefix=link.exec_argv([]))]
        fed.wait_for("round 1 in the metrics", lambda: rounds(fed) == [1], timeout=240)
        # The SuperLink has the board's round-2 reply message (it logs each PushMessages at INFO) and its
        # objects now trickle in at 2 KB/s: kill the board then.
        node = re.findall(r"registered with \S+ as node (\d+)", clients[1].log())[-1]
        superlink_log = fed.root / "server" / "logs" / "superlink.log"

        def pushes() -> int:
            return superlink_log.read_text(errors="replace").count(f"Push replies from node_id={node}")

        assert wait_until(lambda: pushes() >= 2, 120, 0.05) is not None, clients[1].log()
        os.kill(clients[1].process.pid, signal.SIGKILL)
        clients[1].process.wait(10)
        say(f"client 1 (node {node}) SIGKILLed as the SuperLink took its round-2 reply, before its objects")
        ended = wait_until(lambda: len(rounds(fed)) >= 2, ROUND_BOUND_S + 60)
        assert ended is not None, f"round 2 did not end within {ROUND_BOUND_S + 60:.0f} s of the kill"
        say(f"round 2 ended {ended:.1f} s after the kill")
        clients[1] = fed.start_client(1, *board_args, prefix=link.exec_argv([]))
        fed.wait_for("the server to finish", lambda: not server.alive(), timeout=240)
        assert server.process.returncode == 0, server.log()
        records = fed.metrics()
        for r in records:
            say(f"round {r['round']}: {r['clients_ok']} ok, {r['clients_failed']} failed, {r['wall_seconds']:.0f} s "
                f"{[f['reason'][:90] for f in r['failures']]}")
        assert rounds(fed) == [1, 2, 3]
        assert_model_chain(records)
        assert ended <= ROUND_BOUND_S, ended
        # The kill landed inside the upload, and the grid gave that upload up (not a node that never
        # began its reply, which Flower itself answers for).
        abandoned = [line for line in serverapp_log(fed).splitlines() if ABANDONED in line]
        assert abandoned, "the kill did not land inside the upload (nothing was given up)"
        say(f"ServerApp: {abandoned[0].strip()[-110:]}")
        round2 = records[1]
        assert (round2["clients_ok"], round2["clients_failed"]) == (1, 1), round2
        assert "not complete when it left" in round2["failures"][0]["reason"], round2["failures"]
        assert records[2]["clients_ok"] == 2, records[2]  # the restarted board is back
        errors = error_lines(fed.root)
        assert not errors, "\n".join(errors)
    fault_row.happened = (f"round 2 ended {ended:.0f} s after the kill: 1 ok + 1 failed (node left mid-upload, "
                          "its upload given up); round 3: 2 ok (restarted board back); ERROR lines: 0")
    fault_row.rounds_lost = "0"
    fault_row.recover_s = f"{ended:.0f} (kill -> round 2 ended; bound {ROUND_BOUND_S:.0f})"
