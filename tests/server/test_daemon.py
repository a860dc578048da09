"""edgefld.server.daemon: what it does with the state it finds before any Flower process starts."""

from __future__ import annotations

import logging
import signal
import socket

import numpy as np
import pytest

from edgefld.config import load_config
from edgefld.records import RoundRecord
from edgefld.run_state import RunState, RunStateError, run_identity
from edgefld.server.daemon import ServerDaemon
from tests.e2e.federation import free_port


@pytest.fixture(autouse=True)
def _signal_handlers():
    # ServerDaemon.run installs its own: this test process keeps pytest's.
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _daemon(tmp_path, num_partitions: int = 2, port: int = 9092) -> ServerDaemon:
    path = tmp_path / "edgefl.toml"
    path.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\nstate_dir = "{tmp_path / "server"}"\n'
                    f'data_dir = "{tmp_path / "data"}"\ntask = "digits"\nrounds = 2\n'
                    f"num_partitions = {num_partitions}\n")
    return ServerDaemon(load_config(path))


def _two_rounds_done(daemon: ServerDaemon) -> None:
    state = RunState(daemon.state_dir, run_identity(daemon.run_config()))
    state.save_round(0, [np.zeros(2, np.float32)], None)
    for round_ in (1, 2):
        state.save_round(round_, [np.full(2, round_, np.float32)], RoundRecord(round=round_, task="digits"))


def test_a_run_already_complete_is_said_and_nothing_is_started(tmp_path, caplog):
    daemon = _daemon(tmp_path)
    _two_rounds_done(daemon)
    (daemon.state_dir / "metrics.jsonl").write_text('{"round": 1}\n')  # round 2's line lost in a crash
    with caplog.at_level(logging.INFO, logger="edgefl.server"):
        assert daemon.run() == 0
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [f"{daemon.state_dir / 'metrics.jsonl'}: round 2 restored from its checkpoint",
                        f"resuming: rounds 1-2 already done (metrics in {daemon.state_dir / 'metrics.jsonl'})",
                        "complete: 2/2 rounds (raise [server] rounds to train on)"]
    assert daemon.superlink is None and daemon.proxy is None


def test_another_runs_state_ends_the_daemon_in_one_line_touching_nothing(tmp_path):
    _two_rounds_done(_daemon(tmp_path))
    before = (tmp_path / "server" / "metrics.jsonl").read_bytes()
    with pytest.raises(RunStateError, match=r"holds the state of another run .*'num-partitions': 2.*this config "
                                            r"asks for .*'num-partitions': 3"):
        _daemon(tmp_path, num_partitions=3).run()
    assert (tmp_path / "server" / "metrics.jsonl").read_bytes() == before


def test_the_fleet_door_is_shut_before_a_stopped_run_is_stopped(tmp_path):
    """RunDriver calls on_stop before it stops the run on the SuperLink: by then no board may reach the run.

    A board's push in flight while its run is stopped can meet the run still running and its push
    session already gone: "Failed to send message" at ERROR on the board (seen in the system test's
    upgrade, where the server and the boards restart together).
    """
    port = free_port()
    daemon = _daemon(tmp_path, port=port)
    daemon._start_services()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # open while the run goes on
        daemon._before_run_stop()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        assert daemon.superlink is not None and daemon.superlink.alive()  # the run is still the SuperLink's to stop
    finally:
        daemon._shutdown()
