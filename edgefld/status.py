"""`edgefl status`: what a server or a board is doing, read from its state directory only.

Nothing here talks to a daemon, Flower or the network: it reads the files the daemons leave
(edgefld.records: ServerState, FleetRecord and metrics.jsonl's RoundRecords on the server;
ClientState and BoardStatus on a board), so it answers while the daemon runs, after it stopped,
and for any user who may read the state directory (the ``edgefl`` group). A file that is missing,
unreadable or damaged is named in one line among the ``problems``; the rest is still shown.

The ``--json`` output (``SCHEMA`` 1; a key that changes meaning or goes away raises it, a new
key does not) is documented in README.md ("edgefl status --json") and pinned by tests/test_status.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from edgefld.errors import EdgeflError
from edgefld.records import (
    BoardRecord,
    BoardStatus,
    ClientState,
    FleetRecord,
    RecordError,
    Refused,
    RoundRecord,
    ServerState,
)
from edgefld.run_state import METRICS_FILE

SCHEMA = 1
MAX_STATE_BYTES = 64 << 20  # fleet.json of MAX_BOARDS boards is under 6 MB; anything far larger is not ours
ACCURACY_TREND_ROUNDS = 5
# The files the daemons leave for this (their writers take the names from here).
SERVER_STATE_FILE = "server-state.json"  # edgefld.server.fleet
FLEET_FILE = "fleet.json"  # edgefld.server.fleet
CLIENT_STATE_FILE = "client-state.json"  # edgefld.client.daemon
LAST_ROUND_FILE = "last-round.json"  # edgefld.client.daemon, for the ClientApp

T = TypeVar("T")


@dataclass
class Reading:
    """What the state files said, and a line for each one that could not be read."""

    problems: list[str] = field(default_factory=list)

    def nothing_read(self) -> None:
        """Nothing could be read: a file that exists but cannot be read (no permission, say) is the
        answer, not "no state here"."""
        if self.problems:
            raise EdgeflError(self.problems[0])

    def load(self, path: Path, parse: Callable[[object], T], what: str) -> T | None:
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.problems.append(f"cannot read {path}: {exc.strerror or exc}{_group_hint(exc)}")
            return None
        if len(data) > MAX_STATE_BYTES:
            self.problems.append(f"{path}: larger than {MAX_STATE_BYTES >> 20} MiB, not read")
            return None
        try:
            return parse(json.loads(data))
        except (ValueError, RecordError) as exc:  # JSONDecodeError and RecordError are ValueErrors
            self.problems.append(f"{path}: not a readable {what} ({_first_line(str(exc))})")
            return None

    def rounds(self, path: Path) -> list[RoundRecord]:
        """metrics.jsonl's round records; torn or foreign lines are left out, as the daemon does."""
        try:
            with open(path, "rb") as handle:
                lines = handle.read().splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            self.problems.append(f"cannot read {path}: {exc.strerror or exc}{_group_hint(exc)}")
            return []
        records: list[RoundRecord] = []
        for line in lines:
            try:
                records.append(RoundRecord.from_json(json.loads(line)))
            except (ValueError, RecordError):
                continue
        return records


def _group_hint(exc: OSError) -> str:
    return " (members of the edgefl group may read it: `adduser $USER edgefl`)" if isinstance(
        exc, PermissionError) else ""


def _first_line(text: str) -> str:
    return text.splitlines()[0][:200] if text else "empty"


def daemon_running(pid: int) -> bool:
    """Whether ``pid`` is an edgefl process now (a pid reused by another program is not)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"edgefl" in cmdline


# --- the server ---------------------------------------------------------------------------------


def server_status(state_dir: Path, now: float | None = None) -> dict[str, object] | None:
    """The server's status as ``--json`` gives it; None: no server state at all in ``state_dir``."""
    reading = Reading()
    state = reading.load(state_dir / SERVER_STATE_FILE, ServerState.from_json, "server state")
    fleet = reading.load(state_dir / FLEET_FILE, FleetRecord.from_json, "board registry")
    rounds = reading.rounds(state_dir / METRICS_FILE)
    if state is None and fleet is None and not rounds:
        reading.nothing_read()
        return None
    last = rounds[-1] if rounds else None
    accuracies = [r.evaluation.eval_accuracy for r in rounds if r.evaluation is not None]
    daemon: dict[str, object] | None = None
    if state is not None:
        running = daemon_running(state.pid)
        daemon = {"state": state.state if running or state.state in ("complete", "stopped", "failed")
                  else "not running", "recorded_state": state.state, "since": state.since, "pid": state.pid,
                  "running": running, "detail": state.detail, "listen": state.listen}
    training = last.training if last is not None else None
    return {
        "schema": SCHEMA, "role": "server", "state_dir": str(state_dir),
        "time": now if now is not None else time.time(),
        "daemon": daemon,
        "run": {
            "task": (state.task if state is not None else None) or (last.task if last is not None else None),
            "rounds_done": last.round if last is not None else 0,
            "rounds_configured": state.rounds if state is not None else None,
            "last_round_time": last.time if last is not None else None,
            "eval_accuracy": accuracies[-1] if accuracies else None,
            "eval_loss": last.evaluation.eval_loss if last is not None and last.evaluation is not None else None,
            "accuracy_trend": accuracies[-ACCURACY_TREND_ROUNDS:],
            "last_round": None if training is None else {
                "ok": training.clients_ok, "failed": training.clients_failed,
                "refused": len([f for f in training.failures if f.error == "resources"]),
                "seconds": training.wall_seconds},
        },
        "boards": [] if fleet is None else [_board_json(board) for board in fleet.boards],
        "problems": reading.problems,
    }


def _board_json(board: BoardRecord) -> dict[str, object]:
    identity = board.identity
    return {
        "node": board.node, "cid": identity.cid if identity else None, "board": identity.board if identity else None,
        "family": identity.family if identity else None, "backend": identity.backend if identity else None,
        "profile": identity.profile if identity else None, "first_round": board.first_round,
        "last_round": board.last_round, "last_trained": board.last_trained, "last_seen": board.last_seen,
        "rounds_ok": board.rounds_ok, "rounds_failed": board.rounds_failed, "rounds_refused": board.rounds_refused,
        "last_failure": None if board.last_failure is None else board.last_failure.to_json(),
        "last_split": None if board.last_split is None else board.last_split.to_json(),
    }


# --- a board ------------------------------------------------------------------------------------


def client_status(state_dir: Path, now: float | None = None) -> dict[str, object] | None:
    """The board's status as ``--json`` gives it; None: no client state at all in ``state_dir``."""
    reading = Reading()
    state = reading.load(state_dir / CLIENT_STATE_FILE, ClientState.from_json, "client state")
    last = reading.load(state_dir / LAST_ROUND_FILE, BoardStatus.from_json, "last round")
    if state is None and last is None:
        reading.nothing_read()
        return None
    running = state is not None and daemon_running(state.pid)
    last_round: dict[str, object] | None = None
    if last is not None:
        outcome = last.outcome
        last_round = {"round": last.round, "phase": last.phase, "time": last.time,
                      "outcome": "refused" if isinstance(outcome, Refused) else "trained"}
        if isinstance(outcome, Refused):
            last_round.update(code=outcome.code, reason=outcome.reason)
        else:
            last_round.update(loss=outcome.loss, samples=outcome.samples, seconds=outcome.seconds,
                              val_accuracy=outcome.val_accuracy)
    return {
        "schema": SCHEMA, "role": "client", "state_dir": str(state_dir),
        "time": now if now is not None else time.time(),
        "daemon": None if state is None else {
            "state": state.state if running or state.state == "stopped" else "not running",
            "recorded_state": state.state, "since": state.since, "pid": state.pid, "running": running,
            "reason": state.reason},
        "connected": running and state is not None and state.state == "connected",
        "server": state.server if state else None, "cid": state.cid if state else None,
        "node_id": state.node_id if state else None,
        "board": state.board if state else None, "family": state.family if state else None,
        "profile": None if state is None else {"rule": state.profile, "backend": state.backend,
                                               "device": state.device, "threads": state.threads,
                                               "tasks": list(state.tasks)},
        "guards": None if state is None else {"enabled": state.guards, "memory_margin_mb": state.memory_margin_mb,
                                              "heavy_task_min_watts": state.heavy_task_min_watts},
        "last_round": last_round,
        "problems": reading.problems,
    }


# --- as text ------------------------------------------------------------------------------------


def _when(timestamp: object, now: float) -> str:
    if not isinstance(timestamp, (int, float)):
        return "-"
    ago = max(0.0, now - float(timestamp))
    if ago < 90:
        rel = f"{ago:.0f} s ago"
    elif ago < 5400:
        rel = f"{ago / 60:.0f} min ago"
    elif ago < 2 * 86400:
        rel = f"{ago / 3600:.1f} h ago"
    else:
        rel = f"{ago / 86400:.0f} d ago"
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(timestamp)))} ({rel})"


def _trend(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    change = values[-1] - values[0]
    word = "rising" if change > 0.005 else "falling" if change < -0.005 else "flat"
    return " (" + " -> ".join(f"{v:.3f}" for v in values) + f", {word})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]


def describe_server(status: dict[str, object]) -> str:
    now = float(status["time"])  # type: ignore[arg-type]
    daemon = status["daemon"]
    run = status["run"]
    assert isinstance(run, dict)
    lines = []
    if isinstance(daemon, dict):
        state = daemon["state"]
        if state == "not running":
            state = f"not running (pid {daemon['pid']} gone; it last said \"{daemon['recorded_state']}\")"
        lines.append(f"edgefl server: {state} since {_when(daemon['since'], now)}"
                     + (f", pid {daemon['pid']}" if daemon["running"] else ""))
        if daemon["detail"]:
            lines.append(f"  {daemon['detail']}")
    else:
        lines.append("edgefl server: no daemon state (it has not run with this edgefl); rounds from metrics.jsonl")
    configured = run["rounds_configured"]
    line = f"run: task {run['task'] or '?'}, round {run['rounds_done']} of {configured or '?'}"
    if run["eval_accuracy"] is not None:
        line += f", accuracy {run['eval_accuracy']:.4f}{_trend(run['accuracy_trend'])}"
    if run["eval_loss"] is not None:
        line += f", loss {run['eval_loss']:.4f}"
    lines.append(line)
    last = run["last_round"]
    if isinstance(last, dict):
        seconds = f" in {last['seconds']:.1f} s" if isinstance(last["seconds"], (int, float)) else ""
        lines.append(f"last round: {_when(run['last_round_time'], now)}{seconds}: {last['ok']} boards ok, "
                     f"{last['failed'] - last['refused']} failed, {last['refused']} refused by guards")
    boards = status["boards"]
    assert isinstance(boards, list)
    if boards:
        rows = []
        for b in sorted(boards, key=lambda b: (b["cid"] is None, b["cid"] or 0, b["node"])):
            failure = b["last_failure"]
            split = b["last_split"]
            rows.append([
                "?" if b["cid"] is None else str(b["cid"]), str(b["node"]), b["board"] or "unknown",
                b["family"] or "-", b["backend"] or "-", b["profile"] or "-",
                "-" if b["last_trained"] is None else str(b["last_trained"]),
                _when(b["last_seen"], now).split(" (")[-1].rstrip(")") if b["last_seen"] else "never",
                f"{b['rounds_ok']}/{b['rounds_failed']}",
                "-" if failure is None else f"round {failure['round']}: {failure['code'] or '-'} "
                                            f"{failure['error'] or ''}: {failure['reason'][:60]}",
                "-" if split is None else "/".join(
                    "?" if split[k] is None else f"{split[k]:.2f}" for k in ("startup", "loading", "training",
                                                                             "transfer")),
            ])
        lines.append("")
        lines += _table(["CID", "NODE", "BOARD", "FAMILY", "BACKEND", "PROFILE", "TRAINED", "SEEN", "OK/FAILED",
                         "LAST FAILURE", "LAST ROUND s (start-up/loading/training/transfer)"], rows)
    else:
        lines.append("boards: none has taken part in a round yet")
    return "\n".join(lines + _problems(status))


def describe_client(status: dict[str, object]) -> str:
    now = float(status["time"])  # type: ignore[arg-type]
    daemon = status["daemon"]
    lines = []
    if isinstance(daemon, dict):
        if daemon["state"] == "not running":
            head = f"not running (pid {daemon['pid']} gone; it last said \"{daemon['recorded_state']}\")"
        elif status["connected"]:
            head = f"connected to {status['server']} as node {status['node_id']}"
        else:
            head = f"{daemon['state']} ({status['server']})"
        lines.append(f"edgefl client {status['cid']}: {head} since {_when(daemon['since'], now)}"
                     + (f", pid {daemon['pid']}" if daemon["running"] else ""))
        if daemon["reason"]:
            lines.append(f"  why: {daemon['reason']}")
        profile, guards = status["profile"], status["guards"]
        assert isinstance(profile, dict) and isinstance(guards, dict)
        lines.append(f"board: {status['board'] or 'unknown model'} ({status['family']}); node id "
                     f"{status['node_id'] if status['node_id'] is not None else '- (not registered)'}")
        lines.append(f"profile: {profile['rule']}: {profile['backend']} on {profile['device']}, {profile['threads']} "
                     f"threads, tasks {','.join(profile['tasks'])}")
        lines.append("guards: " + (f"on (memory margin {guards['memory_margin_mb']} MB, heavy tasks from "
                                   f"{guards['heavy_task_min_watts']} W)" if guards["enabled"] else "off"))
    else:
        lines.append("edgefl client: no daemon state (it has not run with this edgefl)")
    last = status["last_round"]
    if isinstance(last, dict):
        where = f"last round: {last['round']} {last['phase']}, {_when(last['time'], now)}: "
        if last["outcome"] == "refused":
            lines.append(where + f"refused ({last['code']}): {last['reason']}")
        else:
            lines.append(where + f"{last['samples']} samples, loss {last['loss']:.4f}, {last['seconds']:.1f} s, "
                                 f"validation accuracy {last['val_accuracy']:.4f}")
    else:
        lines.append("last round: none yet")
    return "\n".join(lines + _problems(status))


def _problems(status: dict[str, object]) -> list[str]:
    problems = status["problems"]
    assert isinstance(problems, list)
    return [f"warning: {problem}" for problem in problems]
