"""edgefld.server.run_driver: submit, follow, resubmit, give up, without starting Flower.

``SuperLinkRuns`` stands in for the SuperLink's runs as edgefld.server.control.Control reports
them (the real one is driven in tests/e2e); each submitted run ends as scripted and completes
the rounds it is scripted to, which is what the checkpoints would say.
"""

from __future__ import annotations

import logging
import threading

import pytest

from edgefld.errors import EdgeflError, StateWriteError
from edgefld.run_state import STATE_WRITE_FAILED
from edgefld.server.control import ControlError, RunInfo
from edgefld.server.progress import ProgressReporter
from edgefld.server.run_driver import MAX_FAILED_SUBMISSIONS, RunConfig, RunDriver


class SuperLinkRuns:
    def __init__(self, outcomes: list[tuple[str, int]], log: str = "") -> None:
        self.outcomes = outcomes  # per submitted run: its final status, the rounds it completes
        self.log = log
        self.infos: dict[int, RunInfo] = {}
        self.done = 0  # rounds completed, as the checkpoints would say
        self.submitted: list[RunConfig] = []
        self.stopped: list[int] = []
        self.unreachable_once = True

    def run(self, run_id: int) -> RunInfo:
        if self.unreachable_once:  # a SuperLink that does not answer once is waited for, not fatal
            self.unreachable_once = False
            raise ControlError("ListRuns failed: SuperLink unreachable")
        info = self.infos[run_id]
        if not info.finished:
            status, rounds = self.outcomes[len(self.submitted) - 1]
            self.done += rounds
            info = self.infos[run_id] = RunInfo(run_id, status, "", 0, 0)
        return info

    def submit(self, fab: bytes, overrides: RunConfig) -> int:
        self.submitted.append(overrides)
        run_id = 100 + len(self.submitted)
        self.infos[run_id] = RunInfo(run_id, "running", "", 0, 0)
        return run_id

    def stop(self, run_id: int) -> None:
        self.stopped.append(run_id)
        self.infos[run_id] = RunInfo(run_id, "finished:stopped", "", 0, 0)

    def logs(self, run_id: int) -> str:
        return self.log


def _driver(tmp_path, runs: SuperLinkRuns, total: int = 3, stopping: threading.Event | None = None,
            on_poll=lambda: None) -> tuple[RunDriver, list[str]]:
    events: list[str] = []
    progress = ProgressReporter(tmp_path / "metrics.jsonl", total, events.append)
    driver = RunDriver(runs, progress, lambda: runs.done, total, stopping or threading.Event(), on_poll=on_poll,
                       on_stop=lambda: events.append("serverapps ended"), poll_s=0.001, run_state_poll_s=0.0,
                       resubmit_pause_s=0.0)
    return driver, events


def test_a_failed_run_is_resubmitted_until_every_round_is_done(tmp_path, caplog):
    runs = SuperLinkRuns([("finished:failed", 1), ("finished:completed", 2)])
    driver, _ = _driver(tmp_path, runs)
    with caplog.at_level(logging.INFO, logger="edgefl.server"):
        assert driver.drive(b"fab", {"num-rounds": 3}) is True
    assert runs.submitted == [{"num-rounds": 3}] * 2 and runs.done == 3
    assert [r.getMessage() for r in caplog.records] == [
        "submitted run 101",
        "ListRuns failed: SuperLink unreachable", "run 101 ended finished:failed (finished:failed); resubmitting",
        "submitted run 102"]


def test_runs_failing_without_progress_end_the_daemon_with_the_serverapps_last_lines(tmp_path, caplog):
    runs = SuperLinkRuns([("finished:failed", 0)] * MAX_FAILED_SUBMISSIONS, log="one\ntwo\n")
    driver, _ = _driver(tmp_path, runs)
    with pytest.raises(EdgeflError) as info:
        driver.drive(b"fab", {})
    assert str(info.value) == "run 103 failed 3 times without completing a round: finished:failed"
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == ["serverapp: one",
                                                                                     "serverapp: two"]


def test_an_unwritable_state_dir_ends_the_daemon_at_once(tmp_path):
    runs = SuperLinkRuns([("finished:failed", 0)],
                         log=f"INFO : starting\nERROR : {STATE_WRITE_FAILED}cannot append to m: No space left\n")
    driver, _ = _driver(tmp_path, runs)
    with pytest.raises(StateWriteError, match="^cannot append to m: No space left$"):
        driver.drive(b"fab", {})
    assert len(runs.submitted) == 1


def test_stopping_stops_the_run_after_ending_its_serverapp(tmp_path):
    stopping = threading.Event()
    runs = SuperLinkRuns([("running", 1)])  # still running when the stop comes
    runs.unreachable_once = True
    driver, events = _driver(tmp_path, runs, stopping=stopping, on_poll=stopping.set)
    stop = runs.stop
    runs.stop = lambda run_id: (events.append(f"run {run_id} stopped"), stop(run_id))[-1]  # type: ignore[method-assign]
    assert driver.drive(b"fab", {}) is False
    # on_stop first: it ends the ServerApp and shuts the boards out (ServerDaemon._before_run_stop).
    assert events == ["serverapps ended", "run 101 stopped"] and runs.stopped == [101]


def test_nothing_is_submitted_when_every_round_is_done(tmp_path):
    runs = SuperLinkRuns([])
    runs.done = 3
    driver, _ = _driver(tmp_path, runs)
    assert driver.drive(b"fab", {}) is True and runs.submitted == []


def test_a_run_that_finished_as_the_stop_came_is_not_stopped_again(tmp_path):
    """Its ServerApp completed it between two polls: StopRun would make the SuperLink log an ERROR
    ("Cannot stop run ... already finished") for a planned stop."""
    stopping = threading.Event()
    runs = SuperLinkRuns([("finished:completed", 3)])
    driver, events = _driver(tmp_path, runs, stopping=stopping, on_poll=stopping.set)
    assert driver.drive(b"fab", {}) is False
    assert events == ["serverapps ended"] and runs.stopped == []
