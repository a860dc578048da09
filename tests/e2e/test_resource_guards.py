"""A board that cannot afford a round refuses it, the server records why, and the round goes on."""

from __future__ import annotations

import os
import re
from pathlib import Path

THROTTLED_PI = Path(__file__).resolve().parent.parent / "fixtures" / "boards" / "rpi4-4gb"  # get_throttled 0x50005


def test_a_throttled_board_refuses_every_round_and_the_federation_goes_on(federation):
    fed = federation(task="digits", num_partitions=2, rounds=2, min_clients=2, local_epochs=1)
    server = fed.start_server()
    good = fed.start_client(0)
    # A real daemon, SuperNode and ClientApp, reading a Pi's /proc and /sys from the fixture tree and
    # its stand-in vcgencmd from PATH.
    throttled = fed.start_client(1, "--sysroot", str(THROTTLED_PI),
                                 env={"PATH": f"{THROTTLED_PI / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=300)
    assert server.process.returncode == 0, server.log()
    records = fed.metrics()
    assert [r["round"] for r in records] == [1, 2], records
    reason_start = ("client 1 refuses this round: the board is throttled now (get_throttled 0x50005: "
                    "under-voltage, throttled)")
    for record in records:
        assert (record["clients_ok"], record["clients_failed"]) == (1, 1), record
        (failure,) = record["failures"]
        assert (failure["code"], failure["error"]) == (4006, "resources"), failure
        assert failure["reason"].startswith(reason_start), failure
        assert isinstance(record["eval_accuracy"], float)  # the round was aggregated from the other board
    # Named by node id: a board that only ever refused has not told the server its cid.
    assert re.search(r"train failure of node \d+ \(cid \?, board unknown\): " + re.escape(reason_start),
                     server.log()), server.log()
    fed.wait_for("the board to report it", lambda: f"refused: {reason_start}" in throttled.log(), timeout=30)
    assert "board: Raspberry Pi 4 Model B" in throttled.log()
    assert "round 2 train:" in good.log()
    assert throttled.alive(), "refusing a round is not a crash"
    for log in (throttled.log(), good.log(), server.log()):  # refusing is normal operation, not an error
        assert not re.search(r"\bERROR\b|Traceback", log), log
