"""The edgefl-client daemon: keep this board in the federation, whatever happens to the server.

    config -> detect the board -> choose the profile -> node config -> warm runtime (child)
                                                                          -> SuperNode, ClientApps (forks)

Flower's SuperNode exits with status 0 when a restarted server no longer knows
it, and otherwise retries on its own; this daemon restarts it with a backoff,
forever, so a board needs no manual restart after the server or the network
comes back. It tells systemd when it is registered (READY), what the last
round did (STATUS) and that it is alive (WATCHDOG).

Before each start it probes the server (edgefld.tls): a CA that does not sign
the server's certificate, a name mismatch, or TLS on one side only, is named in
one line and retried with a growing backoff (capped at [client] refusal_backoff_max),
so a server fixed later is rejoined without touching the board. Nothing the
network answers ends the daemon: whoever can answer in the server's place
could otherwise disable boards that systemd would never restart. Status 78
stays for local configuration errors (found before any connection). A key the
server has not enrolled is named too, and retried. The SuperNode is
edgefld.client.supernode: Flower's, with a FAB check and bounded reads; it tells this
daemon its node id, or the code of the server's refusal, over a pipe
(edgefld.client.node_events), and its output is relayed to the log. By default
([client] clientapp_runtime = "warm") it runs forked from edgefld.client.warm, which
has Flower, edgefld's apps and the backend imported once and forks every round's
ClientApp; with "flower", Flower's own SuperExec starts a fresh interpreter per message.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgefld.backends.catalog import installed_backends
from edgefld.client.node_events import (
    GRACE_ENV,
    MAX_REPLY_ENV,
    MIN_RATE_ENV,
    NODE_ACTIVATION_FAILED,
    NODE_EVENTS_FD_ENV,
    REGISTRATION_DISABLED,
    NodeRefused,
    NodeRegistered,
    read_events,
)
from edgefld.config import Config
from edgefld.config.schema import toml_literal
from edgefld.errors import BackendUnavailable, ConfigError, StateWriteError
from edgefld.hardware import detect_board
from edgefld.logs import get_logger, setup_logging
from edgefld.persist import atomic_write_bytes
from edgefld.procs import flower_environment, free_loopback_port, spawn, stop_tree
from edgefld.profile import Profile, choose_profile
from edgefld.records import BoardStatus, ClientState, Refused
from edgefld.status import CLIENT_STATE_FILE, LAST_ROUND_FILE
from edgefld.systemd import Notifier
from edgefld.tls import check_client_files, client_tls, probe_server

log = get_logger("client")

POLL_S = 0.5
READY_POLL_S = 0.05
BACKOFF_S = (1, 2, 5, 10, 20, 30)  # between SuperNode restarts; reset once it registers
# After the server's answer turned this board away (wrong CA, name mismatch, TLS on one side): a
# fix takes a person, so retry ever more slowly (doubling, up to [client] refusal_backoff_max), but
# never give up for good.
REFUSAL_BACKOFF_FIRST_S = 5
EVENTS_AFTER_EXIT_S = 1.0  # for the SuperNode's last event (a refusal) to be read once it has exited
_RETRYING = re.compile(r"Connection attempt failed|retrying in", re.IGNORECASE)


@dataclass(frozen=True)
class Refusal:
    """Why the server turned this board away; ``fatal``: only a change (here or on the server) can fix it."""

    message: str
    fatal: bool


def node_config(config: Config, profile: Profile, status_file: Path, board_root: str = "/",
                board: str = "", family: str = "") -> dict[str, Any]:
    """What the ClientApp reads from context.node_config (see edgefld.apps.settings)."""
    c = config.client
    return {
        "cid": c.cid,
        "board": board,
        "family": family,  # with the profile's rule: what the server's `edgefl status` shows of this board
        "profile": profile.rule,
        "data-dir": c.data_dir,
        "backend": profile.backend,
        "device": profile.device,
        "threads": profile.threads,
        "batch-size-cap": profile.batch_size_cap,
        "max-train-samples": profile.max_train_samples or 0,
        "tasks": ",".join(profile.tasks),
        "status-file": str(status_file),
        "guards": c.guards,
        "memory-margin-mb": c.memory_margin_mb,
        "heavy-task-min-watts": c.heavy_task_min_watts,
        "board-root": board_root,  # the ClientApp reads the board's live state (edgefld.guards) there
        "board-tools-path": "",
    }


class ClientDaemon:
    def __init__(self, config: Config, sysroot: str = "/") -> None:
        self.config = config
        self.sysroot = sysroot
        self.client = config.client
        self.state_dir = Path(self.client.state_dir)
        self.status_file = self.state_dir / LAST_ROUND_FILE
        self.state_file = self.state_dir / CLIENT_STATE_FILE  # what this daemon does now: `edgefl status` reads it
        self.state: ClientState | None = None  # once the board and profile are known
        self._state_lock = threading.Lock()  # the SuperNode's events change it from their own thread
        self.notifier = Notifier()
        self.stopping = threading.Event()
        self.supernode: subprocess.Popen[bytes] | None = None
        self.refusal: Refusal | None = None  # the SuperNode's last report of the server's refusal
        self._events: threading.Thread | None = None  # reads what the running SuperNode reports
        self.tls = client_tls(self.client)
        self.key_path = self.client.key.replace("{cid}", str(self.client.cid)) if self.client.key else None
        check_client_files(self.client, self.key_path, config.source)
        self.key_fingerprint = _key_fingerprint(self.key_path, config) if self.key_path else None
        self.registered = threading.Event()
        self.node_id: str | None = None
        try:  # the last round a previous instance of this daemon reported is not news
            self._status_mtime = self.status_file.stat().st_mtime
        except OSError:
            self._status_mtime = 0.0
        self._ready_sent = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        board = detect_board(self.sysroot)
        profile = choose_profile(board, self.client.backend, installed_backends(), self.client.threads)
        if profile.backend is None:
            raise BackendUnavailable("; ".join(profile.notes))
        log.info("board: %s (%s, %d MB, %d/%d CPUs); profile %s: %s on %s, %d threads, tasks %s",
                 board.model or "unknown model", board.family, board.ram_mb, board.cpus_online,
                 board.cpus_present, profile.rule, profile.backend, profile.device, profile.threads,
                 ",".join(profile.tasks))
        for note in profile.notes:
            log.info("profile note: %s", note)
        config_path = self._write_node_config(profile, board.model or board.family, board.family)
        c = self.client
        self.state = ClientState(state="starting", since=time.time(), pid=os.getpid(), server=c.server, cid=c.cid,
                                 node_id=None, reason="", board=board.model or "", family=board.family,
                                 profile=profile.rule, backend=profile.backend, device=profile.device,
                                 threads=profile.threads, tasks=tuple(profile.tasks), guards=c.guards,
                                 memory_margin_mb=c.memory_margin_mb, heavy_task_min_watts=c.heavy_task_min_watts)
        self._set_state("starting")
        log.info("connecting to %s with %s", self.client.server, self._describe_security())
        attempt = refusals = 0
        started_at = time.monotonic()
        while not self.stopping.is_set():
            refusal = self._probe()
            if refusal is None:
                self._start_supernode(config_path, profile)
                code = self._supervise(started_at)
                if self.stopping.is_set():
                    break
                refusal = self.refusal
            if self.registered.is_set():
                attempt = 0
            refusals = refusals + 1 if refusal is not None and refusal.fatal else 0
            if refusals:
                delay = min(REFUSAL_BACKOFF_FIRST_S << min(refusals - 1, 20), self.client.refusal_backoff_max)
            else:
                delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                attempt += 1
            if refusal is not None:
                log.warning("%s; trying again in %d s", refusal.message, delay)
                self.notifier.set_status(f"{refusal.message}; trying again in {delay} s")
                self._set_state("refused", refusal.message)
            else:
                reason = ("the server no longer knows this node (it restarted)" if code == 0
                          else f"status {code}")
                log.warning("SuperNode exited (%s); rejoining in %d s", reason, delay)
                self.notifier.set_status(f"rejoining {self.client.server} in {delay} s ({reason})")
                self._set_state("rejoining", f"SuperNode exited: {reason}")
            self._wait(delay)
        self.notifier.stopping("stopping")
        self._set_state("stopped", "stopped by a signal")
        return 0

    def _set_state(self, state: str, reason: str = "", node_id: int | None = None) -> None:
        """Leave what this daemon does now for `edgefl status` (lost on a power cut: rewritten at the next change)."""
        with self._state_lock:
            if self.state is None:
                return
            same = state == self.state.state and reason == self.state.reason
            self.state = replace(self.state, state=state, reason=reason,
                                 since=self.state.since if same else time.time(),
                                 node_id=node_id if state == "connected" else self.state.node_id)
            try:
                atomic_write_bytes(self.state_file, json.dumps(self.state.to_json()).encode(), durable=False)
            except StateWriteError as exc:
                log.warning("%s (`edgefl status` shows an older state)", exc)

    def _describe_security(self) -> str:
        if not self.tls:
            return "plain HTTP (TLS off)"
        trust = f"CA {self.client.ca}" if self.client.ca else "the system's CAs"
        key = f"node key {self.key_path} ({self.key_fingerprint})" if self.key_path else "no node key"
        return f"TLS ({trust}), {key}"

    def _probe(self) -> Refusal | None:
        """Check that TLS (or plain HTTP) matches the server's; an unreachable server is the SuperNode's to wait for."""
        probe = probe_server(self.client.server, self.tls, self.client.ca)
        if probe.outcome == "mismatch":
            return Refusal(probe.message, fatal=True)
        if probe.outcome == "unreachable":
            log.debug("probe: %s", probe.message)
        return None

    def _refusal_of(self, code: int) -> Refusal | None:
        """Flower names the server's refusals only by code; say what they mean here (None: no refusal of ours)."""
        if code == NODE_ACTIVATION_FAILED:
            public = Path(self.key_path).with_suffix(".pub").name if self.key_path else "KEY.pub"
            return Refusal(f"the server refused this node's key ({self.key_fingerprint}): it is not enrolled there "
                           f"(run `edgefl enrol {public}` on the server), or, right after a restart, the server "
                           "still holds this node's previous session (it expires within a minute)", fatal=False)
        if code == REGISTRATION_DISABLED:
            return Refusal("the server admits only enrolled boards and this board has no node key: create one with "
                           f"`edgefl pki client-key --cid {self.client.cid}`, set [client] key, and enrol its .pub "
                           "on the server", fatal=True)
        return None

    def _write_node_config(self, profile: Profile, board: str, family: str) -> Path:
        path = self.state_dir / "node-config.toml"
        values = node_config(self.config, profile, self.status_file, self.sysroot, board, family)
        text = "".join(f'"{k}" = {toml_literal(v)}\n' for k, v in values.items())
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise StateWriteError(f"cannot write {path}: {exc.strerror}") from None
        return path

    def _start_supernode(self, config_path: Path, profile: Profile) -> None:
        runtime_port = self.client.runtime_port or free_loopback_port()
        if self.tls:
            security = ["--root-certificates", self.client.ca] if self.client.ca else []
        else:
            security = ["--insecure"]
        if self.key_path:
            security += ["--auth-supernode-private-key", self.key_path]
        supernode_args = [*security, "--superlink", self.client.server, "--node-config", str(config_path)]
        if self.client.clientapp_runtime == "warm":
            argv = [sys.executable, "-m", "edgefld.client.warm", "--backend", str(profile.backend),
                    "--runtime-port", str(runtime_port), "--", *supernode_args]
        else:
            argv = [sys.executable, "-m", "edgefld.client.supernode", *supernode_args, "--port", str(runtime_port)]
        threads = str(profile.threads)
        env = flower_environment(self.state_dir / "flwr", {
            # Reaches every ClientApp process: a backend must not spawn more threads than the profile allows.
            "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TF_NUM_INTRAOP_THREADS": threads,
            MAX_REPLY_ENV: str(self.client.max_reply_mb * 1024 * 1024), MIN_RATE_ENV: str(self.client.min_read_rate),
            GRACE_ENV: str(self.client.read_grace),
        })
        self.registered.clear()
        self.refusal = None
        events_r, events_w = os.pipe()
        env[NODE_EVENTS_FD_ENV] = str(events_w)
        try:
            self.supernode = spawn(argv, env, subprocess.PIPE, pass_fds=(events_w,))
        except BaseException:
            os.close(events_r)
            raise
        finally:
            os.close(events_w)  # the SuperNode's end now: the pipe ends when it does
        threading.Thread(target=self._read_output, args=(self.supernode,), daemon=True).start()
        self._events = threading.Thread(target=self._read_events, args=(events_r,), daemon=True)
        self._events.start()
        log.info("connecting to %s as client %d (%s pid %d)", self.client.server, self.client.cid,
                 "warm runtime" if self.client.clientapp_runtime == "warm" else "SuperNode", self.supernode.pid)
        self.notifier.set_status(f"connecting to {self.client.server}")
        self._set_state("connecting")

    def _read_output(self, process: subprocess.Popen[bytes]) -> None:
        """Relay the SuperNode's output to the log: what says something is wrong at INFO, the rest at DEBUG."""
        assert process.stdout is not None
        for raw in process.stdout:
            text = re.sub(r"\x1b\[[0-9;]*m", "", raw.decode("utf-8", "replace").rstrip())
            if "ERROR" in text or "WARNING" in text or _RETRYING.search(text):
                log.info("supernode: %s", text.strip())
            else:
                log.debug("supernode: %s", text.strip())

    def _read_events(self, events_fd: int) -> None:
        """What the SuperNode reports (edgefld.client.node_events): its node id once admitted, or a refusal."""
        for event in read_events(events_fd):
            if isinstance(event, NodeRegistered):
                self.node_id = str(event.node_id)
                self.registered.set()
                log.info("registered with %s as node %s", self.client.server, self.node_id)
                self._set_state("connected", node_id=int(event.node_id))
            elif isinstance(event, NodeRefused):
                refusal = self._refusal_of(event.code)
                if refusal is not None:
                    self.refusal = refusal
                    self._set_state("refused", refusal.message)
                log.debug("supernode: refused with code %d", event.code)

    def _supervise(self, started_at: float) -> int | None:
        assert self.supernode is not None
        # Until READY, look often: `systemctl start` waits for it.
        while not self.stopping.wait(POLL_S if self._ready_sent else READY_POLL_S):
            self.notifier.watchdog()
            if self.registered.is_set() and not self._ready_sent:
                self._ready(f"registered with {self.client.server} as node {self.node_id}; waiting for a round")
            elif not self._ready_sent and time.monotonic() - started_at > self.client.ready_timeout:
                if self.refusal is not None:  # the server answers but turns this board away: say that instead
                    self._ready(f"not admitted by {self.client.server} yet, retrying")
                else:
                    log.warning("server %s not reachable after %.0f s; still trying", self.client.server,
                                self.client.ready_timeout)
                    self._set_state("unreachable", f"server {self.client.server} not reachable after "
                                                   f"{self.client.ready_timeout:.0f} s; still trying")
                    self._ready(f"waiting for server {self.client.server} (unreachable, retrying)")
            self._report_last_round()
            code = self.supernode.poll()
            if code is not None:
                if self._events is not None:  # its pipe ends with it: a refusal it reported last is read by now
                    self._events.join(EVENTS_AFTER_EXIT_S)
                return code
        stop_tree(self.supernode, timeout=5.0)
        return None

    def _ready(self, status: str) -> None:
        self._ready_sent = True
        self.notifier.ready(status)

    def _report_last_round(self) -> None:
        try:
            mtime = self.status_file.stat().st_mtime
        except OSError:
            return
        if mtime <= self._status_mtime:
            return
        self._status_mtime = mtime
        try:
            status = BoardStatus.from_json(json.loads(self.status_file.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:  # RecordError is a ValueError
            log.debug("%s: not reported: %s", self.status_file, exc)
            return
        line = _describe(status)
        (log.warning if isinstance(status.outcome, Refused) else log.info)("%s", line)
        self.notifier.set_status(line)

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and time.monotonic() < deadline:
            self.notifier.watchdog()
            self.stopping.wait(min(POLL_S, max(0.0, deadline - time.monotonic())))

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        self.stopping.set()


def _describe(status: BoardStatus) -> str:
    where = f"round {status.round} {status.phase}"
    outcome = status.outcome
    if isinstance(outcome, Refused):
        return f"{where} refused: {outcome.reason}"
    return (f"{where}: {outcome.samples} samples, loss {outcome.loss:.4f}, {outcome.seconds:.1f} s; "
            f"global model's validation accuracy {outcome.val_accuracy:.4f}")


def _key_fingerprint(key_path: str, config: Config) -> str:
    """The node key's fingerprint, for the journal; the cryptography library is loaded only for a board
    with a key (the daemon stays small on the boards without)."""
    from edgefld.pki import PkiError, node_key_fingerprint

    try:
        return node_key_fingerprint(Path(key_path))
    except PkiError as exc:
        raise ConfigError(str(exc), source=config.source, key="[client] key") from None


def run_client(config: Config, sysroot: str = "/") -> int:
    setup_logging(config.log.level)
    return ClientDaemon(config, sysroot).run()
