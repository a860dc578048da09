"""Flower's SuperLink as a child process, bound to loopback only, running edgefl's thin FAB only.

The FAB is edgefld.server.link.
"""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from edgefld.errors import EdgeflError
from edgefld.flower_compat import SUPERLINK_STATE_IN_MEMORY
from edgefld.flower_entry import SERVERAPP_LOG_ENV
from edgefld.logs import get_logger
from edgefld.pki import create_ca, issue_server_cert, write_private, write_public
from edgefld.procs import flower_environment, free_loopback_port, kill_descendants_named, spawn, stop_tree

log = get_logger("server")

LOOPBACK_TLS_DIR = "loopback-tls"


# Where earlier builds of edgefl had the SuperLink keep its state (SQLite), and the files SQLite and
# edgefl's migration left beside it.
EARLIER_DATABASE = "superlink.db"
EARLIER_DATABASE_SIDECARS = ("-wal", "-shm", "-journal", ".new")


def remove_earlier_database(state_dir: Path) -> None:
    """Remove the SuperLink database an earlier edgefl kept: nothing reads it any more. It held Flower's
    runs, node registrations and messages in flight, none of which edgefl resumes from (see SuperLink)."""
    removed = []
    for name in (EARLIER_DATABASE, *(EARLIER_DATABASE + suffix for suffix in EARLIER_DATABASE_SIDECARS)):
        try:
            (state_dir / name).unlink()
            removed.append(name)
        except FileNotFoundError:
            pass
    if removed:
        log.info("removed %s from %s: the SuperLink keeps its state in memory", ", ".join(removed), state_dir)


class SuperLink:
    """Flower's SuperLink, its state in its memory; Control/Runtime/Fleet on 127.0.0.1:port.

    In memory, not in a database: with Flower's SQLite state (SQLAlchemy) every Fleet request took the
    SuperLink 10-70 ms, about half a warm round's overhead (README, "Where a round's time goes"), and a
    database is something a kill can leave half-migrated. Nothing edgefl needs lives there: a run is
    resumed from edgefl's own checkpoint, never from Flower's, and the enrolled keys are registered again
    at every start. A restart forgets the boards' node ids; each board's SuperNode leaves at the first
    401 and registers again (edgefld.client.supernode).

    With ``node_auth`` it checks node keys (``--enable-supernode-auth``), which Flower refuses to do
    without TLS. Boards never see this TLS (edgefl's Fleet proxy terminates theirs): it is a
    loopback-only CA and certificate made afresh at every start, which only this daemon, its
    proxy and Flower's own ServerApp processes trust.
    """

    def __init__(self, state_dir: Path, log_path: Path, node_auth: bool = False) -> None:
        self.state_dir = state_dir
        self.log_path = log_path
        self.node_auth = node_auth
        self.port = free_loopback_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.root_certificates: bytes | None = None  # the loopback CA (PEM) when node_auth is on

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_context(self) -> ssl.SSLContext | None:
        """How this daemon's own connections check the SuperLink (None: plain HTTP)."""
        if self.root_certificates is None:
            return None
        return ssl.create_default_context(cadata=self.root_certificates.decode("ascii"))

    def _loopback_tls_args(self) -> list[str]:
        directory = self.state_dir / LOOPBACK_TLS_DIR
        ca_key, ca_cert = create_ca("edgefl SuperLink loopback CA", days=3650)
        key, cert = issue_server_cert(ca_key, ca_cert, ["127.0.0.1"], days=3650)
        write_public(directory / "ca.crt", ca_cert)
        write_public(directory / "superlink.crt", cert)
        write_private(directory / "superlink.key", key, service_owned=False)
        self.root_certificates = ca_cert
        return ["--ssl-ca-certfile", str(directory / "ca.crt"), "--ssl-certfile", str(directory / "superlink.crt"),
                "--ssl-keyfile", str(directory / "superlink.key"), "--enable-supernode-auth"]

    def command(self) -> list[str]:
        """How the SuperLink is started: Flower's, dying with its daemon and with edgefl's FAB check
        (edgefld.flower_entry installs edgefld.server.link's)."""
        return [sys.executable, "-m", "edgefld.flower_entry", "flower-superlink"]

    def start(self, timeout: float = 60.0, keepalive: Callable[[], None] = lambda: None) -> None:
        """Start and wait for /health; ``keepalive`` is called while waiting (the daemon's watchdog)."""
        remove_earlier_database(self.state_dir)
        security = self._loopback_tls_args() if self.node_auth else ["--insecure"]
        argv = [
            *self.command(), *security, "--host", "127.0.0.1", "--port", str(self.port),
            "--database", SUPERLINK_STATE_IN_MEMORY, "--disable-runtime-dependency-installation",
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as output:
            # Killed outright if this daemon dies: its state is in its memory, and its superexec and
            # ServerApp go with it (edgefld.procs).
            self.process = spawn(argv, flower_environment(self.state_dir / "flwr", {
                # The SuperLink's SuperExec looks for a ServerApp to start: once per run (the daemon's
                # start or restart), so a start within 4 s is soon enough; every poll costs the
                # SuperLink a request for as long as the server runs, idle or not.
                "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "4",
                # The ServerApps' output, which Flower's SuperExec would throw away (edgefld.flower_entry).
                SERVERAPP_LOG_ENV: str(self.log_path.with_name("serverapp.log"))}), output,
                                 parent_death=signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EdgeflError(f"Flower's SuperLink exited with status {self.process.returncode} at start; "
                                  f"see {self.log_path}")
            if self.healthy():
                return
            keepalive()
            time.sleep(0.1)
        raise EdgeflError(f"Flower's SuperLink did not answer within {timeout:.0f} s; see {self.log_path}")

    def healthy(self) -> bool:
        scheme = "https" if self.root_certificates is not None else "http"
        try:
            with urllib.request.urlopen(f"{scheme}://{self.address}/health", timeout=2,
                                        context=self.client_context()) as response:
                status: int = response.status
                return status == 200
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 8.0) -> None:
        if self.process is not None:
            stop_tree(self.process, timeout=timeout)

    def end_serverapps(self) -> list[int]:
        """End the ServerApp processes before their run is stopped: a ServerApp polling its run after
        StopRun revoked its token makes the SuperLink log an ERROR ("[ApiError:1008] Runtime task-token
        authentication failed") for what is a planned stop. SIGKILL, not SIGTERM: nothing in a ServerApp
        needs flushing (checkpoints and metrics are written whole or not at all), and Flower's own exit
        would talk to the SuperLink on its way out."""
        if self.process is None:
            return []
        return kill_descendants_named(self.process.pid, b"flwr-serverapp")
