"""Driving the training run to its end: submit it, follow it, resubmit it after a failure.

A resubmitted run resumes from its checkpoint (the ServerApp, edgefld.run_state), so a
failed run costs at most the round it was in. A run that fails MAX_FAILED_SUBMISSIONS times
in a row without completing a round ends the daemon, and so does a state directory that
cannot be written (no resubmission fixes a full disk).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from edgefld.errors import EdgeflError, StateWriteError
from edgefld.logs import get_logger
from edgefld.run_state import STATE_WRITE_FAILED
from edgefld.server.progress import ProgressReporter

if TYPE_CHECKING:
    from edgefld.server.control import RunInfo

log = get_logger("server")

POLL_S = 0.5  # signals, the watchdog, new rounds in metrics.jsonl
# The run's state is asked of the SuperLink less often: each question costs the SuperLink a request,
# and an idle server should cost next to nothing. Once the last round is in metrics.jsonl the run
# is about to end: then it is asked every POLL_S. A run that fails is noticed within RUN_STATE_POLL_S.
RUN_STATE_POLL_S = 5.0
MAX_FAILED_SUBMISSIONS = 3  # runs that failed in a row without completing a round
RESUBMIT_PAUSE_S = 2.0

# The run config as submitted: Flower's UserConfig values.
RunConfig = dict[str, bool | float | int | str]


class RunControl(Protocol):
    """Runs on the SuperLink (edgefld.server.control.Control); ControlError when it cannot answer."""

    def run(self, run_id: int) -> RunInfo: ...

    def submit(self, fab: bytes, overrides: RunConfig) -> int: ...

    def stop(self, run_id: int) -> None: ...

    def logs(self, run_id: int) -> str: ...


class RunDriver:
    def __init__(self, control: RunControl, progress: ProgressReporter, completed_rounds: Callable[[], int],
                 total_rounds: int, stopping: threading.Event, *, on_poll: Callable[[], None],
                 on_stop: Callable[[], None], poll_s: float = POLL_S, run_state_poll_s: float = RUN_STATE_POLL_S,
                 resubmit_pause_s: float = RESUBMIT_PAUSE_S) -> None:
        self.control = control
        self.progress = progress
        self.completed_rounds = completed_rounds  # from the checkpoints
        self.total_rounds = total_rounds
        self.stopping = stopping
        self.on_poll = on_poll  # the daemon's duties while a run goes on (watchdog, enrolment, SuperLink alive)
        # Before a stopped run is stopped on the SuperLink: ends its ServerApp and shuts the boards out.
        self.on_stop = on_stop
        self.poll_s = poll_s
        self.run_state_poll_s = run_state_poll_s
        self.resubmit_pause_s = resubmit_pause_s
        self.run_id: int | None = None

    def drive(self, fab: bytes, run_config: RunConfig) -> bool:
        """Run until every round is done (True) or the daemon is stopping (False)."""
        from edgefld.server.control import ControlError

        failures_without_progress = 0
        while not self.stopping.is_set():
            progress_before = self.completed_rounds()
            if progress_before >= self.total_rounds:
                break
            try:
                self.run_id = self.control.submit(fab, run_config)
            except ControlError as exc:
                raise EdgeflError(f"the SuperLink refused the run: {exc}") from None
            log.info("submitted run %d", self.run_id)
            info = self.follow(self.run_id)
            if info is None:  # stopping
                break
            if info.status == "finished:completed" and self.completed_rounds() >= self.total_rounds:
                break
            detail = info.details or info.status
            self.raise_if_state_unwritable(self.run_id)
            made_progress = self.completed_rounds() > progress_before
            failures_without_progress = 0 if made_progress else failures_without_progress + 1
            log.warning("run %d ended %s (%s); %s", self.run_id, info.status, detail,
                        "resubmitting" if failures_without_progress < MAX_FAILED_SUBMISSIONS else "giving up")
            if failures_without_progress >= MAX_FAILED_SUBMISSIONS:
                tail = self.control.logs(self.run_id).strip().splitlines()[-5:]
                for line in tail:
                    log.error("serverapp: %s", line)
                raise EdgeflError(f"run {self.run_id} failed {MAX_FAILED_SUBMISSIONS} times without completing a "
                                  f"round: {detail}")
            self.stopping.wait(self.resubmit_pause_s)
        return not self.stopping.is_set()

    def follow(self, run_id: int) -> RunInfo | None:
        """The run's end as the SuperLink reports it; None when the daemon is stopping (the run is stopped)."""
        from edgefld.server.control import ControlError

        asked_at = 0.0
        while not self.stopping.wait(self.poll_s):
            self.on_poll()
            self.progress.log_new_rounds()
            if not self.progress.last_round_seen and time.monotonic() - asked_at < self.run_state_poll_s:
                continue
            asked_at = time.monotonic()
            try:
                info = self.control.run(run_id)
            except ControlError as exc:
                log.warning("%s", exc)
                continue
            if info.finished:
                self.progress.log_new_rounds()
                return info
        self.on_stop()  # first: see SuperLink.end_serverapps
        try:
            # A run its ServerApp finished just before the stop (before on_stop ended the ServerApp;
            # this loop asks only every poll_s) is left as it ended: StopRun on a finished run makes
            # the SuperLink log "Cannot stop run ... already finished" at ERROR. With its ServerApp
            # gone, nothing else can finish it between this question and the stop.
            if not self.control.run(run_id).finished:
                self.control.stop(run_id)
        except ControlError:
            pass
        return None

    def raise_if_state_unwritable(self, run_id: int) -> None:
        """A full or read-only state directory ends the run; resubmitting would only train in vain."""
        from edgefld.server.control import ControlError

        try:
            text = self.control.logs(run_id)
        except ControlError:
            return
        for line in text.splitlines():
            if STATE_WRITE_FAILED in line:
                raise StateWriteError(line.split(STATE_WRITE_FAILED, 1)[1].strip())
