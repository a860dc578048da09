"""The SuperLink process: its state in memory, an earlier build's database removed, the ServerApps' output kept."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from edgefld.flower_compat import SUPERLINK_STATE_IN_MEMORY
from edgefld.flower_entry import SERVERAPP_LOG_ENV
from edgefld.server.superlink import SuperLink


def test_the_superlink_keeps_its_state_in_memory_and_an_earlier_builds_database_is_removed(tmp_path, caplog):
    state = tmp_path / "server"
    state.mkdir()
    earlier = ["superlink.db", "superlink.db-wal", "superlink.db-shm", "superlink.db.new"]
    for name in earlier:
        (state / name).write_bytes(b"SQLite format 3\0")
    kept = state / "superlink.db.unusable-20261201T120000"  # set aside for a person by an earlier build
    kept.write_bytes(b"damaged")
    superlink = SuperLink(state, state / "logs" / "superlink.log")
    try:
        with caplog.at_level(logging.INFO, logger="edgefl.server"):
            superlink.start()
        assert superlink.process is not None
        argv = open(f"/proc/{superlink.process.pid}/cmdline", "rb").read().split(b"\0")
        assert argv[argv.index(b"--database") + 1] == SUPERLINK_STATE_IN_MEMORY.encode()
        assert superlink.healthy()
        assert sorted(p.name for p in state.iterdir()) == ["flwr", "logs", kept.name]  # nothing of SQLite's
        assert kept.read_bytes() == b"damaged"
        assert [r.getMessage() for r in caplog.records] == [
            f"removed {', '.join(earlier)} from {state}: the SuperLink keeps its state in memory"]
    finally:
        superlink.stop()


def test_a_serverapps_output_goes_to_the_file_the_superlink_names(tmp_path):
    """Flower's SuperExec starts a ServerApp with its output thrown away; the launcher keeps it."""
    log = tmp_path / "serverapp.log"
    log.write_text("earlier\n")
    done = subprocess.run([sys.executable, "-m", "edgefld.flower_entry", "flwr-serverapp", "--help"],
                          env={**os.environ, SERVERAPP_LOG_ENV: str(log)}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout == b""
    text = log.read_text()
    assert text.startswith("earlier\nusage: flwr-serverapp"), text  # appended, not overwritten
