"""The edgefl-server daemon: SuperLink, the Fleet-only door, and the training run to its end.

    config -> SuperLink on 127.0.0.1 (state database under state_dir)
           -> FleetProxy on [server] listen (Fleet API only)
           -> submit the thin FAB, follow the run, one log line per round
           -> resubmit after a failure or a restart: the ServerApp resumes from its checkpoint

It exits 0 when every configured round is done (raise `rounds` and start it
again to train on from the last checkpoint).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

from edgefld import __version__
from edgefld.apps import settings
from edgefld.apps.server_app import CHECKPOINT_DIR, METRICS_FILE, run_identity
from edgefld.backends.catalog import installed_backends
from edgefld.config import Config
from edgefld.config.schema import parse_host_port
from edgefld.errors import BackendUnavailable, EdgeflError, StateWriteError
from edgefld.logs import get_logger, setup_logging
from edgefld.persist import load_latest_checkpoint, read_jsonl
from edgefld.server.fab import build_fab
from edgefld.server.fleet_proxy import FleetProxy
from edgefld.server.superlink import SuperLink
from edgefld.systemd import Notifier

log = get_logger("server")

POLL_S = 0.5
MAX_FAILED_SUBMISSIONS = 3  # runs that failed in a row without completing a round


def eval_backend_for_server() -> str:
    """The server evaluates the global model itself: any installed backend will do."""
    installed = installed_backends()
    for name in ("torch", "tensorflow", "litert"):
        if name in installed:
            return name
    raise BackendUnavailable("the server needs a training backend for centralised evaluation and the "
                             "initial model; install edgefl[torch]")


class ServerDaemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.server = config.server
        self.state_dir = Path(self.server.state_dir)
        self.notifier = Notifier()
        self.stopping = threading.Event()
        self.superlink: SuperLink | None = None
        self.proxy: FleetProxy | None = None
        self.run_id: int | None = None
        self.rounds_seen: set[int] = set()

    # --- what is already done ------------------------------------------------------------
    def completed_rounds(self) -> int:
        checkpoint, problems = load_latest_checkpoint(self.state_dir / CHECKPOINT_DIR)
        for problem in problems:
            log.warning("%s; using the one before", problem)
        if checkpoint is None:
            return 0
        identity = run_identity(self.run_config())
        if checkpoint.meta.get("identity") != identity:
            raise EdgeflError(
                f"{self.state_dir} holds the state of another run ({checkpoint.meta.get('identity')}); "
                f"this config asks for {identity}: set another [server] state_dir or remove that one")
        return checkpoint.round

    def run_config(self) -> dict[str, Any]:
        s = self.server
        return {
            **settings.RUN_CONFIG_DEFAULTS,
            "task": s.task, "num-rounds": s.rounds, "num-partitions": s.num_partitions,
            "local-epochs": s.local_epochs, "batch-size": s.batch_size, "sample-fraction": s.sample_fraction,
            "min-clients": s.min_clients, "round-timeout": s.round_timeout,
            "state-dir": str(self.state_dir), "data-dir": s.data_dir, "server-version": __version__,
        }

    # --- lifecycle ---------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateWriteError(f"cannot create state_dir {self.state_dir}: {exc.strerror}") from None
        self._check_task_data()
        run_config = dict(self.run_config(), **{"eval-backend": eval_backend_for_server()})
        done = self.completed_rounds()
        self._log_existing_rounds()
        if done >= self.server.rounds:
            message = f"complete: {done}/{self.server.rounds} rounds (raise [server] rounds to train on)"
            log.info("%s", message)
            self.notifier.ready(message)
            return 0
        try:
            self._start_services()
            self.notifier.ready(f"listening on {self.server.listen}; waiting for {self.server.min_clients} clients")
            log.info("task %s: rounds %d..%d, at least %d clients, listening on %s (Fleet API only)",
                     self.server.task, done + 1, self.server.rounds, self.server.min_clients, self.server.listen)
            return self._drive(run_config)
        finally:
            self._shutdown()

    def _check_task_data(self) -> None:
        from edgefld.data import ensure_dataset
        from edgefld.tasks import get_task

        ensure_dataset(get_task(self.server.task).dataset, self.server.data_dir)

    def _start_services(self) -> None:
        self.superlink = SuperLink(self.state_dir, self.state_dir / "logs" / "superlink.log")
        self.superlink.start(keepalive=self.notifier.watchdog)
        host, port = parse_host_port(self.server.listen)
        self.proxy = FleetProxy(host, port, "127.0.0.1", self.superlink.port)
        try:
            self.proxy.start()
        except OSError as exc:
            raise EdgeflError(f"cannot listen on {self.server.listen}: {exc.strerror or exc}") from None

    def _drive(self, run_config: dict[str, Any]) -> int:
        from edgefld.server.control import Control, ControlError

        assert self.superlink is not None
        control = Control(self.superlink.address)
        # A run left over from before a restart has no ServerApp any more: stop it, so the
        # boards take only the new one.
        for stale in control.runs():
            if not stale.finished:
                log.info("stopping run %d left over from before a restart", stale.run_id)
                control.stop(stale.run_id)
        fab = build_fab()
        failures_without_progress = 0
        while not self.stopping.is_set():
            progress_before = self.completed_rounds()
            if progress_before >= self.server.rounds:
                break
            try:
                self.run_id = control.submit(fab, run_config)
            except ControlError as exc:
                raise EdgeflError(f"the SuperLink refused the run: {exc}") from None
            log.info("submitted run %d", self.run_id)
            info = self._follow(control, self.run_id)
            if info is None:  # stopping
                break
            if info.status == "finished:completed" and self.completed_rounds() >= self.server.rounds:
                break
            detail = info.details or info.status
            made_progress = self.completed_rounds() > progress_before
            failures_without_progress = 0 if made_progress else failures_without_progress + 1
            log.warning("run %d ended %s (%s); %s", self.run_id, info.status, detail,
                        "resubmitting" if failures_without_progress < MAX_FAILED_SUBMISSIONS else "giving up")
            if failures_without_progress >= MAX_FAILED_SUBMISSIONS:
                tail = control.logs(self.run_id).strip().splitlines()[-5:]
                for line in tail:
                    log.error("serverapp: %s", line)
                raise EdgeflError(f"run {self.run_id} failed {MAX_FAILED_SUBMISSIONS} times without completing a "
                                  f"round: {detail}")
            self.stopping.wait(2.0)
        if self.stopping.is_set():
            return 0
        final = self._summary()
        log.info("run complete: %s", final)
        self.notifier.set_status(f"complete: {final}")
        return 0

    def _follow(self, control: Any, run_id: int) -> Any:
        from edgefld.server.control import ControlError

        while not self.stopping.wait(POLL_S):
            self.notifier.watchdog()
            self._log_new_rounds()
            if self.superlink is None or not self.superlink.alive():
                raise EdgeflError("Flower's SuperLink exited unexpectedly; see "
                                  f"{self.state_dir / 'logs' / 'superlink.log'}")
            try:
                info = control.run(run_id)
            except ControlError as exc:
                log.warning("%s", exc)
                continue
            if info.finished:
                self._log_new_rounds()
                return info
        try:
            control.stop(run_id)
        except ControlError:
            pass
        return None

    def _log_existing_rounds(self) -> None:
        records, _ = read_jsonl(self.state_dir / METRICS_FILE)
        for record in records:
            if isinstance(record.get("round"), int):
                self.rounds_seen.add(record["round"])
        if self.rounds_seen:
            log.info("resuming: rounds %s already done (metrics in %s)", _ranges(sorted(self.rounds_seen)),
                     self.state_dir / METRICS_FILE)

    def _log_new_rounds(self) -> None:
        records, _ = read_jsonl(self.state_dir / METRICS_FILE)
        for record in records:
            number = record.get("round")
            if not isinstance(number, int) or number in self.rounds_seen:
                continue
            self.rounds_seen.add(number)
            line = _describe_round(record, self.server.rounds)
            log.info("%s", line)
            self.notifier.set_status(line)

    def _summary(self) -> str:
        records, _ = read_jsonl(self.state_dir / METRICS_FILE)
        last = records[-1] if records else {}
        accuracy = last.get("eval_accuracy")
        return f"{len(records)}/{self.server.rounds} rounds" + (
            f", accuracy {accuracy:.4f}" if isinstance(accuracy, float) else "")

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        self.notifier.stopping("stopping")
        self.stopping.set()

    def _shutdown(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        if self.superlink is not None:
            self.superlink.stop()


def _describe_round(record: dict[str, Any], total: int) -> str:
    parts = [f"round {record['round']}/{total}: {record.get('clients_ok', '?')} clients ok"]
    if record.get("clients_failed"):
        parts.append(f"{record['clients_failed']} failed")
    if isinstance(record.get("train_loss"), float):
        parts.append(f"train loss {record['train_loss']:.4f}")
    if isinstance(record.get("eval_accuracy"), float):
        parts.append(f"eval loss {record['eval_loss']:.4f}, accuracy {record['eval_accuracy']:.4f}")
    if isinstance(record.get("wall_seconds"), float):
        parts.append(f"{record['wall_seconds']:.1f} s")
    line = ", ".join(parts)
    for failure in record.get("failures") or []:
        line += f"; {failure.get('phase')} failure: {failure.get('reason')}"
    return line


def _ranges(numbers: list[int]) -> str:
    if not numbers:
        return ""
    spans, start, prev = [], numbers[0], numbers[0]
    for n in numbers[1:] + [None]:  # type: ignore[list-item]
        if n is not None and n == prev + 1:
            prev = n
            continue
        spans.append(f"{start}" if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(spans)


def run_server(config: Config) -> int:
    setup_logging(config.log.level)
    return ServerDaemon(config).run()
