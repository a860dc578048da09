"""The server's checkpoint directory fills up, or turns read-only, while it checkpoints.

A small tmpfs of our own is mounted over [server] state_dir/checkpoints (the only place
the server writes each round's model). After round 1 it is filled, or remounted read-only:
the round 2 checkpoint cannot be written. The server must say so in one line and stop
(exit 73, not a traceback and three futile resubmissions), leave the round 1 checkpoint
intact and loadable, and carry on from it once the disk has room and it is started again.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from edgefld.exit_codes import ExitCode
from edgefld.persist import load_latest_checkpoint
from tests.faults.conftest import say
from tests.faults.helpers import assert_model_chain, checkpoints_dir, rounds

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.slow]

TMPFS_SIZE = "1m"


def _fill(directory) -> int:
    """Write a filler file until the filesystem says ENOSPC; its size."""
    written = 0
    with open(directory / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
                os.fsync(handle.fileno())
                written += 65536
        except OSError:
            pass
    return written


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_state_dir_unwritable_while_checkpointing(federation, fault_row, fault):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    fault_row.injected = (f"tmpfs ({TMPFS_SIZE}) under state_dir/checkpoints "
                          + ("filled to ENOSPC" if fault == "full" else "remounted read-only") + " after round 1")
    # 150 epochs of digits: seconds of training in round 2, so the fault lands between round 1's checkpoint
    # and round 2's (with 1 epoch, a warm client's two rounds take under a second and the poll below can
    # see both done at once).
    fed = federation(task="digits", num_partitions=2, rounds=2, min_clients=1, local_epochs=150)
    directory = checkpoints_dir(fed)
    directory.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "edgefl-fault-tmpfs",
                    str(directory)], check=True)
    try:
        server = fed.start_server("server-first")
        client = fed.start_client(0)
        fed.wait_for("round 1 in the metrics", lambda: len(rounds(fed)) >= 1, timeout=180)
        assert rounds(fed) == [1], "round 2 was done before the fault could be injected"
        if fault == "full":
            say(f"filled {directory} with {_fill(directory)} bytes")
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)
            say(f"remounted {directory} read-only")
        fed.wait_for("the server to stop", lambda: not server.alive(), timeout=180)
        log = server.log()
        last = log.strip().splitlines()[-1]
        say(f"server exited {server.process.returncode}: {last!r}")
        assert server.process.returncode == ExitCode.CANT_CREATE, log
        reason = "No space left on device" if fault == "full" else "Read-only file system"
        assert last.startswith(f"edgefl: cannot write {directory / 'round-000002.npz'}"), last
        assert reason in last
        assert "Traceback" not in log and "resubmitting" not in log, log
        # The round 1 checkpoint is whole, and it is the model the metrics give for round 1.
        checkpoint, problems = load_latest_checkpoint(directory)
        assert checkpoint is not None and checkpoint.round == 1 and problems == [], problems
        assert checkpoint.meta["sha256"] == fed.metrics()[0]["model_sha256"]
        assert rounds(fed) == [1]
        assert not [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]
        assert client.alive()

        if fault == "read-only":
            recovered = "n/a (an operator remounts it; restart as in [full])"
        else:  # the operator frees the disk, and systemd starts the server again
            (directory / "filler").unlink()
            restarted = fed.start_server("server-second")
            restarted_at = time.monotonic()
            fed.wait_for("round 2 after the restart", lambda: rounds(fed) == [1, 2], timeout=180)
            recovered = f"{time.monotonic() - restarted_at:.1f} (restart after freeing space -> round 2 done)"
            fed.wait_for("the restarted server to finish", lambda: not restarted.alive(), timeout=180)
            assert restarted.process.returncode == 0, restarted.log()
            records = fed.metrics()
            assert rounds(fed) == [1, 2]
            assert_model_chain(records)
            assert records[1]["start_model_sha256"] == checkpoint.meta["sha256"]
            say(f"after freeing space the restarted server did round 2 from checkpoint 1 "
                f"({checkpoint.meta['sha256'][:8]})")
    finally:
        fed.teardown()
        subprocess.run(["umount", str(directory)], capture_output=True)
    fault_row.happened = (f"server exit 73, one line: {reason!r}, no traceback, no resubmission; checkpoint 1 intact "
                          "and loadable" + ("; after freeing space + restart: round 2 from it (trained twice)"
                                            if fault == "full" else ""))
    fault_row.rounds_lost = "0"
    fault_row.recover_s = recovered
