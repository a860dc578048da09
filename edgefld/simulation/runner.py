"""Run a virtual fleet: edgefl's ServerApp and ClientApp, unchanged, on Flower's simulation engine.

The ServerApp gets the run config a real server submits ([server] task, rounds ...: one data
partition and one sampled node per virtual board) and writes what a real server's state
directory holds: checkpoints, metrics.jsonl, and the board registry and server state that
`edgefl status` and `edgefl report` read. Each virtual board's ClientApp gets the node config its
client daemon would write (edgefld.simulation.fleet). Ray runs the ClientApps: ``parallel`` at a
time on this host (one CPU each), or as many as an existing cluster's CPUs allow. After the run,
each round's virtual time, its estimated duration on the real boards (edgefld.simulation.virtual_time),
goes to the output and to virtual-time.json beside metrics.jsonl.
"""

from __future__ import annotations

import importlib.util
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from edgefld.config import Config
from edgefld.errors import BackendUnavailable, EdgeflError
from edgefld.exit_codes import ExitCode
from edgefld.logs import get_logger, setup_logging
from edgefld.records import RoundRecord
from edgefld.simulation.virtual_time import VirtualTime

log = get_logger("simulate")


class SimulationFailed(EdgeflError):
    exit_code = ExitCode.FAILURE


@dataclass(frozen=True)
class SimulationResult:
    boards: int
    rounds_done: int
    wall_seconds: float
    accuracies: tuple[float | None, ...]  # centralised evaluation after each round
    boards_ok: tuple[int, ...]  # boards whose update each round aggregated
    boards_failed: tuple[int, ...]  # boards that refused or failed in each round (edgefl status names why)
    peak_rss_mib: float  # this process (the ServerApp, the engine's driver) and its waited-for children
    virtual: VirtualTime | None = None  # each round's estimated duration on the real boards; None: no estimate


def simulate(config: Config) -> SimulationResult:
    from edgefld.simulation.fleet import parse_fleet, virtual_node_configs

    setup_logging(config.log.level)
    sim, server = config.simulate, config.server
    if importlib.util.find_spec("ray") is None:
        raise BackendUnavailable("edgefl simulate needs Flower's simulation engine (Ray): install edgefl[simulation]")
    from edgefld.backends.catalog import installed_backends

    if sim.backend not in installed_backends():
        raise BackendUnavailable(f'[simulate] backend "{sim.backend}" is not installed (installed: '
                                 f'{", ".join(sorted(installed_backends())) or "none"})')
    from edgefld.data import ensure_dataset
    from edgefld.tasks import get_task

    ensure_dataset(get_task(server.task).dataset, sim.data_dir)
    state_dir = Path(sim.state_dir)
    boards_dir = state_dir / "virtual-boards"
    app_dir = state_dir / "app"
    boards_dir.mkdir(parents=True, exist_ok=True)
    app_dir.mkdir(parents=True, exist_ok=True)
    from edgefld.server.fab import pyproject_text

    (app_dir / "pyproject.toml").write_text(pyproject_text(), encoding="utf-8")

    entries = parse_fleet(sim.fleet)
    node_configs = virtual_node_configs(entries, config, sim.backend, sim.data_dir, boards_dir)
    boards = len(node_configs)
    from edgefld.server.daemon import server_run_config

    run_config = {**server_run_config(config, state_dir), "num-partitions": boards, "min-clients": boards,
                  "data-dir": sim.data_dir, "eval-backend": sim.backend}
    backend_config = _ray_backend_config(sim.ray_address, sim.parallel)

    from edgefld.run_state import RunState, run_identity
    from edgefld.server.fleet import FleetRegistry

    state = RunState(state_dir, run_identity(run_config))
    fleet = FleetRegistry(state_dir, server.task)
    where = f"ray {sim.ray_address}" if sim.ray_address else f"simulation, {sim.parallel} at a time"
    fleet.set_state("running", task=server.task, rounds=server.rounds, listen=where,
                    detail=f"{boards} virtual boards: {sim.fleet}")
    log.info("simulating %d virtual boards (%s) on %s: task %s, %d rounds, backend %s",
             boards, sim.fleet, where, server.task, server.rounds, sim.backend)
    for entry in entries:
        first = next(c for c in node_configs if c["board"] == (entry.description.board.model
                                                                or entry.description.board.family))
        log.info("  %d x %s: profile %s, batch size cap %d, %d samples per round, tasks %s", entry.count,
                 entry.name, first["profile"], first["batch-size-cap"], first["max-train-samples"], first["tasks"])

    from edgefld.apps.client_app import app as client_app
    from edgefld.apps.server_app import app as server_app
    from edgefld.flower_compat import run_simulation

    started = time.monotonic()
    try:
        run_simulation(server_app, client_app, node_configs, run_config, str(app_dir), backend_config)
    except Exception as exc:  # Flower ends a failed run with its own RuntimeError: one line of it
        fleet.set_state("failed", task=server.task, rounds=server.rounds, listen=where, detail=str(exc))
        raise SimulationFailed(f"the simulation failed: {exc}") from None
    finally:
        if not sim.ray_address:
            _shutdown_ray()
    wall = time.monotonic() - started
    records = state.rounds()
    fleet.rebuild(records)
    done = records[-1].round if records else 0
    fleet.set_state("complete" if done >= server.rounds else "failed", task=server.task, rounds=server.rounds,
                    listen=where, detail=f"{boards} virtual boards, {wall:.1f} s of wall time")
    descriptions = [entry.description.name for entry in entries for _ in range(entry.count)]
    virtual = _virtual_time(config, records, descriptions, node_configs, run_config, state_dir)
    return SimulationResult(
        boards=boards, rounds_done=done, wall_seconds=wall,
        accuracies=tuple(r.evaluation.eval_accuracy if r.evaluation else None for r in records),
        boards_ok=tuple(r.training.clients_ok if r.training else 0 for r in records),
        boards_failed=tuple(r.training.clients_failed if r.training else 0 for r in records),
        peak_rss_mib=max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                         resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024,
        virtual=virtual)


VIRTUAL_TIME_FILE = "virtual-time.json"


def _virtual_time(config: Config, records: list[RoundRecord], descriptions: list[str],
                  node_configs: list[dict[str, object]], run_config: dict[str, object],
                  state_dir: Path) -> VirtualTime | None:
    """Each round's estimated duration on the real boards, also written to the state directory's
    virtual-time.json; None (with a warning) when the cost table cannot be read: the run itself stands."""
    from edgefld.simulation.costs import CostTableError, load_costs
    from edgefld.simulation.virtual_time import estimate_run, virtual_boards, write

    try:
        table = load_costs()
    except CostTableError as exc:
        log.warning("no virtual time: %s", exc)
        return None
    boards = virtual_boards(descriptions, node_configs, run_config, config.simulate.data_dir)
    virtual = estimate_run(records, boards, table, config.server.task, config.client.clientapp_runtime,
                           config.simulate.link_mbps)
    write(virtual, state_dir / VIRTUAL_TIME_FILE)
    return virtual


def _ray_backend_config(address: str | None, parallel: int) -> dict[str, object]:
    # One CPU per ClientApp: the profile's threads are the board's, not this host's. A local instance gets
    # `parallel` CPUs, so that many actors exist; a cluster's own CPUs decide there.
    init_args: dict[str, object] = {"address": address} if address else {"num_cpus": parallel, "num_gpus": 0}
    # Ray's workers inherit this environment: no telemetry, offline, as edgefl's Flower processes run.
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    return {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": init_args}


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def describe(result: SimulationResult) -> str:
    virtual = result.virtual
    total = virtual.total_seconds if virtual else None
    lines = [f"edgefl simulate: {result.boards} virtual boards, {result.rounds_done} rounds, "
             f"wall time {result.wall_seconds:.1f} s, peak RSS {result.peak_rss_mib:.0f} MiB (this process); "
             f"virtual time {'n/a' if total is None else _duration(total)} "
             f"(estimated on the real boards: an order of magnitude)"]
    estimates = {r.round: r for r in virtual.rounds} if virtual else {}
    for index, (accuracy, ok, failed) in enumerate(zip(result.accuracies, result.boards_ok, result.boards_failed,
                                                       strict=True), 1):
        line = (f"  round {index}: {ok} boards ok, {failed} failed, "
                f"eval accuracy {'n/a' if accuracy is None else f'{accuracy:.4f}'}")
        estimate = estimates.get(index)
        if estimate is not None and estimate.seconds is not None:
            line += (f", virtual time ~{_duration(estimate.seconds)} (slowest: {estimate.slowest}, start-up "
                     f"{estimate.startup_s:.2g} s + training {estimate.training_s:.2g} s + transfer "
                     f"{estimate.transfer_s:.2g} s)")
        elif estimate is not None:
            line += ", virtual time n/a"
        if estimate is not None and estimate.without_figure:
            line += f"; no figure for {', '.join(estimate.without_figure)}"
        lines.append(line)
    if virtual:
        lines.append(f"  virtual time: link {virtual.link_mbps:g} Mbit/s ([simulate] link_mbps), "
                     f"{virtual.runtime} ClientApp start-up; figures and their sources in {VIRTUAL_TIME_FILE}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    # Two significant figures: the estimate is worth no more.
    if seconds >= 90:
        return f"{float(f'{seconds / 60:.2g}'):g} min"
    return f"{float(f'{seconds:.2g}'):g} s"
