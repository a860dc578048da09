"""The edgefl-server daemon: SuperLink, the Fleet-only door, and the training run to its end.

    config -> SuperLink on 127.0.0.1 (its state in memory; node authentication on its own loopback
              TLS when node_auth is on)
           -> the enrolled node keys registered with it, kept in step with [server] enrolled_keys
              (edgefld.server.enrolment)
           -> FleetGateway on [server] listen (Fleet API only, re-originated; TLS terminates there)
           -> submit the thin FAB, follow the run (edgefld.server.run_driver), one log line per
              round (edgefld.server.progress)
           -> resubmit after a failure or a restart: the ServerApp resumes from its checkpoint

It exits 0 when every configured round is done (raise `rounds` and start it
again to train on from the last checkpoint).
"""

from __future__ import annotations

import faulthandler
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from edgefld import __version__
from edgefld.apps import settings
from edgefld.backends.catalog import first_installed
from edgefld.config import Config
from edgefld.config.schema import parse_host_port
from edgefld.errors import BackendUnavailable, EdgeflError, StateWriteError
from edgefld.logs import get_logger, setup_logging
from edgefld.records import RoundRecord
from edgefld.run_state import RunState, run_identity
from edgefld.server.enrolment import EnrolmentSync
from edgefld.server.fab import build_fab
from edgefld.server.fleet import FleetRegistry
from edgefld.server.fleet_gateway import FleetGateway, GatewayLimits
from edgefld.server.progress import ProgressReporter
from edgefld.server.run_driver import RunDriver
from edgefld.server.superlink import SuperLink
from edgefld.systemd import Notifier
from edgefld.tls import ServerSecurity, server_context, server_security

if TYPE_CHECKING:
    from edgefld.server.control import Control

log = get_logger("server")

# A stop (SIGTERM) ends the run, the Fleet gateway and the SuperLink within STOP_BUDGET_S, inside the
# unit's TimeoutStopSec=15 (systemd/edgefl-server.service); the gateway takes at most GATEWAY_STOP_S of it.
STOP_BUDGET_S = 12.0
GATEWAY_STOP_S = 4.0


def eval_backend_for_server() -> str:
    """The server evaluates the global model itself: any installed backend will do."""
    name = first_installed()
    if name is not None:
        return name
    raise BackendUnavailable("the server needs a training backend for centralised evaluation and the "
                             "initial model; install edgefl[torch]")


def server_run_config(config: Config, state_dir: Path) -> dict[str, Any]:
    """The run config of the ServerApp and ClientApps from [server], [server.strategy], [server.dp] and [server.secagg]
    (edgefld.apps.settings): the daemon's and `edgefl simulate`'s."""
    s = config.server
    return {
        **settings.RUN_CONFIG_DEFAULTS,
        "task": s.task, "num-rounds": s.rounds, "num-partitions": s.num_partitions,
        "local-epochs": s.local_epochs, "batch-size": s.batch_size, "sample-fraction": s.sample_fraction,
        "min-clients": s.min_clients, "round-timeout": s.round_timeout,
        "transport-dtype": s.transport_dtype,
        "state-dir": str(state_dir), "data-dir": s.data_dir, "server-version": __version__,
        "partitioning": s.partitioning, "dirichlet-alpha": s.dirichlet_alpha,
        "strategy": config.strategy.name,
        **{name.replace("_", "-"): value for name, value in config.strategy.values.items() if name != "name"},
        "dp-mode": config.dp.mode, "dp-clipping-norm": config.dp.clipping_norm,
        "dp-noise-multiplier": config.dp.noise_multiplier,
        "secure-aggregation": s.secure_aggregation,
        **{f"secagg-{name.replace('_', '-')}": value for name, value in config.secagg.values.items()},
    }


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
        self.control: Control | None = None
        self.enrolment: EnrolmentSync | None = None  # once the SuperLink is up
        self.proxy: FleetGateway | None = None
        self.fleet = FleetRegistry(self.state_dir, self.server.task)
        self.progress = ProgressReporter(self.state.metrics, self.server.rounds, self.notifier.set_status,
                                         on_rounds=self._on_rounds)
        self._reported: set[str] = set()  # problems with stored state, each logged once
        self._stop_deadline: float | None = None  # set by the stop signal

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
        return server_run_config(self.config, self.state_dir)

    # --- what `edgefl status` and Prometheus read -------------------------------------------------
    def _set_state(self, state: str, detail: str = "") -> None:
        self.fleet.set_state(state, task=self.server.task, rounds=self.server.rounds, listen=self.server.listen,
                             detail=detail)
        self._export()

    def _on_rounds(self, records: list[RoundRecord]) -> None:
        self.fleet.add_rounds(records)
        self._export()

    def _export(self) -> None:
        """The Prometheus textfile, when configured; a failure to write it is logged, never fatal."""
        path = self.server.prometheus_textfile
        if not path:
            return
        from edgefld.server.prometheus import render, write_textfile

        rounds = self.state.rounds()
        try:
            write_textfile(path, render(self.fleet.state, self.fleet.fleet, rounds[-1] if rounds else None))
        except StateWriteError as exc:
            if "prometheus" not in self._reported:
                self._reported.add("prometheus")
                log.warning("[server] prometheus_textfile: %s", exc)

    # --- lifecycle ---------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateWriteError(f"cannot create state_dir {self.state_dir}: {exc.strerror}") from None
        self._set_state("starting")
        try:
            code = self._run()
        except EdgeflError as exc:
            self._set_state_quietly("failed", str(exc))
            raise
        except BaseException as exc:
            self._set_state_quietly("failed", f"{type(exc).__name__}: {exc}")
            raise
        return code

    def _set_state_quietly(self, state: str, detail: str) -> None:
        """On the way out with an error: the state is worth trying for, not worth a second error."""
        try:
            self._set_state(state, detail)
        except EdgeflError:
            pass

    def _run(self) -> int:
        self._check_task_data()
        run_config = dict(self.run_config(), **{"eval-backend": eval_backend_for_server()})
        # The same resume as the ServerApp's: the daemon says what it found before any run starts.
        resume = self.state.resume()
        self._report(resume.problems)
        if resume.repair:
            log.warning("%s", resume.repair)
        done = resume.round
        self.progress.log_existing_rounds()
        self.fleet.rebuild(self.state.rounds())
        if done >= self.server.rounds:
            message = f"complete: {done}/{self.server.rounds} rounds (raise [server] rounds to train on)"
            log.info("%s", message)
            self._set_state("complete", message)
            self.notifier.ready(message)
            return 0
        try:
            control = self._start_services()
            self.notifier.ready(f"listening on {self.server.listen}; waiting for {self.server.min_clients} clients")
            log.info("task %s: rounds %d..%d, at least %d clients, listening on %s (Fleet API only; %s)",
                     self.server.task, done + 1, self.server.rounds, self.server.min_clients, self.server.listen,
                     self.security.describe())
            driver = RunDriver(control, self.progress, self.completed_rounds, self.server.rounds, self.stopping,
                               on_poll=self._on_poll, on_stop=self._before_run_stop)
            # Said once, true for as long as the state lasts (the rounds themselves are in metrics.jsonl).
            self._set_state("training", f"rounds {done + 1}..{self.server.rounds}, each with at least "
                            f"{self.server.min_clients} boards" + (f" (resumed after round {done})" if done else ""))
            if driver.drive(build_fab(), run_config):
                final = self.progress.summary()
                log.info("run complete: %s", final)
                self.notifier.set_status(f"complete: {final}")
                self._set_state("complete", final)
            else:
                self._set_state("stopped", f"stopped by a signal after {self.progress.summary()}")
            return 0
        finally:
            self._shutdown()

    def _check_task_data(self) -> None:
        from edgefld.data import ensure_dataset
        from edgefld.tasks import get_task

        ensure_dataset(get_task(self.server.task).dataset, self.server.data_dir)

    def _start_services(self) -> Control:
        from edgefld.server.control import Control

        listener_tls = (server_context(self.server.tls_cert, self.server.tls_key, self.config.source)
                        if self.security.tls else None)
        self.superlink = SuperLink(self.state_dir, self.state_dir / "logs" / "superlink.log",
                                   node_auth=self.security.node_auth)
        self.superlink.start(keepalive=self.notifier.watchdog)
        self.control = control = Control(self.superlink.address, self.superlink.root_certificates)
        self.enrolment = EnrolmentSync(Path(self.server.enrolled_keys), control)
        if self.security.node_auth:
            self.enrolment.sync()  # before the door opens: enrolled boards get in at once
            if not self.enrolment.enrolled:
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
        return control

    def _node_refused(self, peer: str, status: int, public_key: bytes | None) -> None:
        if self.enrolment is not None:
            self.enrolment.node_refused(peer, status, public_key)

    def _on_poll(self) -> None:
        """While a run goes on: the watchdog, the enrolled keys, and the SuperLink still there."""
        self.notifier.watchdog()
        if self.security.node_auth and self.enrolment is not None:
            self.enrolment.sync()
        if self.superlink is None or not self.superlink.alive():
            raise EdgeflError("Flower's SuperLink exited unexpectedly; see "
                              f"{self.state_dir / 'logs' / 'superlink.log'}")

    def _before_run_stop(self) -> None:
        """The ServerApps end (see SuperLink.end_serverapps), then the door closes, then the run is stopped.

        A board's reply being pushed while its run is stopped can race Flower's checks: the run
        still running when the SuperLink looks, its push session gone when it stores the object,
        and the board logs "Failed to send message" at ERROR for a planned stop. With the gateway
        closed first (its requests in flight answered), no board request meets the run half-stopped.
        """
        if self.superlink is not None:
            self.superlink.end_serverapps()
        self._stop_gateway()

    def _stop_by(self) -> float:
        """When the stop under way must be over: STOP_BUDGET_S from its signal, or from now (no signal)."""
        return self._stop_deadline or time.monotonic() + STOP_BUDGET_S

    def _stop_gateway(self) -> None:
        if self.proxy is not None:
            self.proxy.stop(timeout=min(GATEWAY_STOP_S, max(0.5, self._stop_by() - time.monotonic() - 2.0)))

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + STOP_BUDGET_S
            # Should the stop overrun its budget anyway, every thread's stack goes to the journal before
            # systemd's SIGKILL (TimeoutStopSec): what it waited for, not a bare "timeout".
            faulthandler.dump_traceback_later(STOP_BUDGET_S + 1.0, exit=False)
        self.notifier.stopping("stopping")
        self.stopping.set()

    def _shutdown(self) -> None:
        deadline = self._stop_by()
        self._stop_gateway()  # already stopped when a run was: then at once
        if self.superlink is not None:
            # The SuperLink gets what is left, and at least a second for its orderly exit.
            self.superlink.stop(timeout=max(1.0, deadline - time.monotonic()))
        faulthandler.cancel_dump_traceback_later()


def run_server(config: Config) -> int:
    setup_logging(config.log.level)
    return ServerDaemon(config).run()
