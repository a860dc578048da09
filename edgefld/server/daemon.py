"""The edgefl-server daemon: SuperLink, the Fleet-only door, and the training run to its end.

    config -> SuperLink on 127.0.0.1 (state database under state_dir; node authentication on its
              own loopback TLS when node_auth is on)
           -> the enrolled node keys registered with it, kept in step with [server] enrolled_keys
           -> FleetGateway on [server] listen (Fleet API only, re-originated; TLS terminates there)
           -> submit the thin FAB, follow the run, one log line per round
           -> resubmit after a failure or a restart: the ServerApp resumes from its checkpoint

It exits 0 when every configured round is done (raise `rounds` and start it
again to train on from the last checkpoint).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from edgefld import __version__
from edgefld.apps import settings
from edgefld.backends.catalog import installed_backends
from edgefld.config import Config
from edgefld.config.schema import parse_host_port
from edgefld.errors import BackendUnavailable, EdgeflError, StateWriteError
from edgefld.logs import get_logger, setup_logging
from edgefld.pki import NodeKey, enrolled_keys, fingerprint_of_pem
from edgefld.records import Failure, RoundRecord
from edgefld.run_state import METRICS_FILE, STATE_WRITE_FAILED, RunState, read_rounds, run_identity
from edgefld.server.fab import build_fab
from edgefld.server.fleet_gateway import FleetGateway, GatewayLimits
from edgefld.server.superlink import SuperLink
from edgefld.systemd import Notifier
from edgefld.tls import ServerSecurity, server_context, server_security

log = get_logger("server")

POLL_S = 0.5  # signals, the watchdog, new rounds in metrics.jsonl
# The run's state is asked of the SuperLink less often: each question costs the SuperLink a request,
# and an idle server should cost next to nothing. Once the last round is in metrics.jsonl the run
# is about to end: then it is asked every POLL_S. A run that fails is noticed within RUN_STATE_POLL_S.
RUN_STATE_POLL_S = 5.0
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
        self.state = RunState(self.state_dir, run_identity(self.run_config()))
        self.notifier = Notifier()
        self.stopping = threading.Event()
        self.security: ServerSecurity = server_security(self.server, config.source)
        self.superlink: SuperLink | None = None
        self.control: Any = None
        self.proxy: FleetGateway | None = None
        self.enrolled: dict[bytes, NodeKey] = {}  # PEM -> key, as last registered with the SuperLink
        self._enrolled_listing: object = None  # what the directory looked like at the last sync
        self.run_id: int | None = None
        self.rounds_seen: set[int] = set()
        self._metrics_seen: tuple[int, int] | None = None  # metrics.jsonl's (mtime, size) when last read
        self._reported: set[str] = set()  # problems with stored state, each logged once

    # --- what is already done ------------------------------------------------------------
    def completed_rounds(self) -> int:
        done, problems = self.state.completed_rounds()
        self._report(problems)
        return done

    def _report(self, problems: list[str]) -> None:
        for problem in problems:
            if problem not in self._reported:
                self._reported.add(problem)
                log.warning("%s; using the one before", problem)

    def run_config(self) -> dict[str, Any]:
        s = self.server
        return {
            **settings.RUN_CONFIG_DEFAULTS,
            "task": s.task, "num-rounds": s.rounds, "num-partitions": s.num_partitions,
            "local-epochs": s.local_epochs, "batch-size": s.batch_size, "sample-fraction": s.sample_fraction,
            "min-clients": s.min_clients, "round-timeout": s.round_timeout,
            "transport-dtype": s.transport_dtype,
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
        # The same resume as the ServerApp's: the daemon says what it found before any run starts.
        resume = self.state.resume()
        self._report(resume.problems)
        if resume.repair:
            log.warning("%s", resume.repair)
        done = resume.round
        self._log_existing_rounds()
        if done >= self.server.rounds:
            message = f"complete: {done}/{self.server.rounds} rounds (raise [server] rounds to train on)"
            log.info("%s", message)
            self.notifier.ready(message)
            return 0
        try:
            self._start_services()
            self.notifier.ready(f"listening on {self.server.listen}; waiting for {self.server.min_clients} clients")
            log.info("task %s: rounds %d..%d, at least %d clients, listening on %s (Fleet API only; %s)",
                     self.server.task, done + 1, self.server.rounds, self.server.min_clients, self.server.listen,
                     self.security.describe())
            return self._drive(run_config)
        finally:
            self._shutdown()

    def _check_task_data(self) -> None:
        from edgefld.data import ensure_dataset
        from edgefld.tasks import get_task

        ensure_dataset(get_task(self.server.task).dataset, self.server.data_dir)

    def _start_services(self) -> None:
        from edgefld.server.control import Control

        listener_tls = (server_context(self.server.tls_cert, self.server.tls_key, self.config.source)
                        if self.security.tls else None)
        self.superlink = SuperLink(self.state_dir, self.state_dir / "logs" / "superlink.log",
                                   node_auth=self.security.node_auth)
        self.superlink.start(keepalive=self.notifier.watchdog)
        self.control = Control(self.superlink.address, self.superlink.root_certificates)
        if self.security.node_auth:
            self._sync_enrolled()  # before the door opens: enrolled boards get in at once
            if not self.enrolled:
                log.warning("no board is enrolled yet: every board will be refused until its key is (`edgefl enrol "
                            "KEY.pub`; keys go to %s)", self.server.enrolled_keys)
        host, port = parse_host_port(self.server.listen)
        self.proxy = FleetGateway(host, port, "127.0.0.1", self.superlink.port, ssl_context=listener_tls,
                                  upstream_ssl=self.superlink.client_context(), on_node_refused=self._node_refused,
                                  limits=GatewayLimits.from_server_config(self.server))
        try:
            self.proxy.start()
        except OSError as exc:
            raise EdgeflError(f"cannot listen on {self.server.listen}: {exc.strerror or exc}") from None

    # --- node authentication ---------------------------------------------------------------------
    def _sync_enrolled(self) -> None:
        """Register new keys in [server] enrolled_keys with the SuperLink, unregister removed ones."""
        from edgefld.server.control import ControlError

        directory = Path(self.server.enrolled_keys)
        listing = _listing(directory)
        if listing == self._enrolled_listing:
            return
        keys, problems = enrolled_keys(directory)
        for problem in problems:
            log.warning("%s: not enrolled", problem)
        wanted = {key.pem: key for key in keys}
        try:
            nodes = self.control.nodes()
            active = {node.public_key: node for node in nodes if node.status != "unregistered"}
            revoked = {node.public_key for node in nodes if node.status == "unregistered"}
            for pem, key in wanted.items():
                if pem in active:
                    continue
                if pem in revoked:
                    log.error("cannot admit %s (%s) again: Flower keeps a revoked key revoked; give that board a "
                              "new key (`edgefl pki client-key --force`) and enrol that", key.name, key.fingerprint)
                    continue
                node_id = self.control.register_node(pem, key.name)
                log.info("admitted %s (%s) as node %d", key.name, key.fingerprint, node_id)
            for pem, node in active.items():
                if pem not in wanted:
                    self.control.unregister_node(node.node_id)
                    log.warning("revoked %s (%s, node %d): its key is no longer in %s", node.name or "a board",
                                fingerprint_of_pem(pem), node.node_id, directory)
        except ControlError as exc:
            log.warning("enrolled keys not synchronised with the SuperLink yet: %s", exc)
            return  # the listing stays unseen: the next poll tries again
        self.enrolled = {pem: key for pem, key in wanted.items() if pem not in revoked}
        self._enrolled_listing = listing

    def _node_refused(self, peer: str, status: int, public_key: bytes | None) -> None:
        """Called from the proxy's thread when the SuperLink turns a board away at the door."""
        if status == 401:
            log.warning("refused %s: its node-key signature is invalid or its clock is off by more than 5 minutes "
                        "(boards need NTP)", peer)
        elif public_key is None:
            log.warning("refused a board without a node key at %s: node authentication is on; the board needs "
                        "[client] key (`edgefl pki client-key`), enrolled here with `edgefl enrol`", peer)
        elif public_key in self.enrolled:
            key = self.enrolled[public_key]
            log.info("%s (%s) at %s refused while its previous session is still open; it is admitted once that "
                     "expires (within a minute)", key.name, key.fingerprint, peer)
        else:
            try:
                shown = fingerprint_of_pem(public_key)
            except ValueError:
                shown = "an unreadable key"
            log.warning("refused node key %s from %s: it is not enrolled; to admit that board run `edgefl enrol "
                        "ITS_KEY.pub` on this server", shown, peer)

    def _drive(self, run_config: dict[str, Any]) -> int:
        from edgefld.server.control import ControlError

        control = self.control
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
            self._raise_if_state_unwritable(control, self.run_id)
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

    def _raise_if_state_unwritable(self, control: Any, run_id: int) -> None:
        """A full or read-only state directory ends the run; resubmitting would only train in vain."""
        from edgefld.server.control import ControlError

        try:
            text = control.logs(run_id)
        except ControlError:
            return
        for line in text.splitlines():
            if STATE_WRITE_FAILED in line:
                raise StateWriteError(line.split(STATE_WRITE_FAILED, 1)[1].strip())

    def _follow(self, control: Any, run_id: int) -> Any:
        from edgefld.server.control import ControlError

        asked_at = 0.0
        while not self.stopping.wait(POLL_S):
            self.notifier.watchdog()
            self._log_new_rounds()
            if self.security.node_auth:
                self._sync_enrolled()
            if self.superlink is None or not self.superlink.alive():
                raise EdgeflError("Flower's SuperLink exited unexpectedly; see "
                                  f"{self.state_dir / 'logs' / 'superlink.log'}")
            ending = self.server.rounds in self.rounds_seen
            if not ending and time.monotonic() - asked_at < RUN_STATE_POLL_S:
                continue
            asked_at = time.monotonic()
            try:
                info = control.run(run_id)
            except ControlError as exc:
                log.warning("%s", exc)
                continue
            if info.finished:
                self._log_new_rounds()
                return info
        if self.superlink is not None:
            self.superlink.end_serverapps()  # first: see SuperLink.end_serverapps
        try:
            control.stop(run_id)
        except ControlError:
            pass
        return None

    def _log_existing_rounds(self) -> None:
        self.rounds_seen.update(record.round for record in read_rounds(self.state.metrics))
        if self.rounds_seen:
            log.info("resuming: rounds %s already done (metrics in %s)", _ranges(sorted(self.rounds_seen)),
                     self.state_dir / METRICS_FILE)

    def _log_new_rounds(self) -> None:
        try:
            stat = (self.state_dir / METRICS_FILE).stat()
            seen = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            seen = None
        if seen is not None and seen == self._metrics_seen:
            return  # unchanged since last read
        self._metrics_seen = seen
        for record in read_rounds(self.state.metrics):
            if record.round in self.rounds_seen:
                continue
            self.rounds_seen.add(record.round)
            line = _describe_round(record, self.server.rounds)
            log.info("%s", line)
            self.notifier.set_status(line)

    def _summary(self) -> str:
        records = read_rounds(self.state.metrics)
        evaluation = records[-1].evaluation if records else None
        return f"{len(records)}/{self.server.rounds} rounds" + (
            f", accuracy {evaluation.eval_accuracy:.4f}" if evaluation is not None else "")

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        self.notifier.stopping("stopping")
        self.stopping.set()

    def _shutdown(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        if self.superlink is not None:
            self.superlink.stop()


def _listing(directory: Path) -> object:
    """Names, sizes and times of the files in ``directory``: changes when a key is added, replaced or removed."""
    try:
        with os.scandir(directory) as entries:
            return sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries)
    except OSError as exc:
        return f"unreadable: {exc}"


def _describe_round(record: RoundRecord, total: int) -> str:
    training, evaluation = record.training, record.evaluation
    parts = [f"round {record.round}/{total}: {training.clients_ok if training is not None else '?'} clients ok"]
    if training is not None and training.clients_failed:
        parts.append(f"{training.clients_failed} failed")
    if training is not None and training.train_loss is not None:
        parts.append(f"train loss {training.train_loss:.4f}")
    if evaluation is not None:
        parts.append(f"eval loss {evaluation.eval_loss:.4f}, accuracy {evaluation.eval_accuracy:.4f}")
    if training is not None and training.wall_seconds is not None:
        parts.append(f"{training.wall_seconds:.1f} s")
    line = ", ".join(parts)
    failures: tuple[Failure, ...] = training.failures if training is not None else ()
    for failure in failures:
        line += f"; {failure.phase} failure of {failure.board_name()}: {failure.reason}"
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
