"""`edgefl simulate --ray-address`: a virtual fleet on an existing Ray cluster (`ray start --head`).

Ray 2.x will not stay on the loopback: it swaps 127.0.0.1 for the host's routable address
(ray._private.services.resolve_ip_for_localhost) and its GCS and raylet listen on every interface.
So the cluster runs in a network namespace of this test's own with nothing but ``lo``: there Ray's
own address is 127.0.0.1 and nothing it opens is reachable from outside. It also keeps this
cluster apart from anyone else's Ray on the machine (ports included). The cluster is stopped by
ending the processes in that namespace, by pid: never `ray stop`, which ends every Ray process of
this user on the machine, other people's simulations too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.netns import can_make_namespaces, loopback_namespace

pytest.importorskip("ray", reason="edgefl simulate needs edgefl[simulation] (Ray)")

pytestmark = [
    pytest.mark.e2e, pytest.mark.slow,
    pytest.mark.skipif(not can_make_namespaces(), reason="needs root and iproute2 (a network namespace)"),
]

RAY = Path(sys.executable).with_name("ray")
PORT = 6379  # inside the namespace: no one else's


def _ip(*args: str) -> list[str]:
    return ["ip", *args]


def _pids_in(namespace: str) -> list[int]:
    listed = subprocess.run(_ip("netns", "pids", namespace), capture_output=True, text=True, timeout=10)
    return [int(pid) for pid in listed.stdout.split()]


def _end(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap() -> None:
    # The e2e session is a subreaper: the cluster's daemons, orphaned by `ray start`, are our children.
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


@pytest.fixture
def ray_cluster() -> Iterator[tuple[str, Path]]:
    """A Ray head in a namespace of its own: (the namespace, Ray's temp dir)."""
    with loopback_namespace(f"edgefl-ray-{uuid.uuid4().hex[:8]}") as namespace:
        temp = Path(tempfile.mkdtemp(prefix="edgefl-ray-"))  # short: Ray's socket paths must fit 107 bytes
        try:
            started = subprocess.run(
                _ip("netns", "exec", namespace, str(RAY), "start", "--head", f"--port={PORT}",
                    "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
                    "--disable-usage-stats", f"--temp-dir={temp}"),
                capture_output=True, text=True, timeout=60, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
            assert started.returncode == 0, started.stdout + started.stderr
            yield namespace, temp
        finally:
            _end(_pids_in(namespace), signal.SIGTERM)
            deadline = time.monotonic() + 8  # what does not end on SIGTERM by then is killed
            while _pids_in(namespace) and time.monotonic() < deadline:
                _reap()
                time.sleep(0.5)
            _end(_pids_in(namespace), signal.SIGKILL)
            time.sleep(0.5)
            _reap()
            subprocess.run(["rm", "-rf", str(temp)], capture_output=True, timeout=30)


def test_a_virtual_fleet_runs_on_an_existing_ray_cluster(tmp_path, edgefl_exe, ray_cluster):
    namespace, _ = ray_cluster
    # Ray listens on the namespace's loopback only (there is no other interface to listen on).
    sockets = subprocess.run(_ip("netns", "exec", namespace, "ss", "-ltnH"), capture_output=True, text=True,
                             timeout=10).stdout
    listening = [line.split()[3] for line in sockets.splitlines() if line.strip()]
    assert listening and all("127.0.0.1" in address for address in listening), listening
    data, state = tmp_path / "data", tmp_path / "state"
    subprocess.run([*edgefl_exe, "data", "download", "digits", "--data-dir", str(data), "--quiet"], check=True,
                   timeout=60)
    result = subprocess.run(
        _ip("netns", "exec", namespace, *edgefl_exe, "simulate", "--fleet", "rpi-zero-2w:2,rpi-4-4gb:2",
            "--task", "digits", "--rounds", "2", "--local-epochs", "1", "--data-dir", str(data),
            "--state-dir", str(state), "--ray-address", f"127.0.0.1:{PORT}"),
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "ERROR" not in result.stderr, result.stderr
    assert "edgefl simulate: 4 virtual boards, 2 rounds" in result.stdout
    # The driver joined the cluster rather than starting a Ray of its own.
    assert f"ray 127.0.0.1:{PORT}" in result.stderr
    rounds = [json.loads(line) for line in (state / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["clients_ok"] == 4 and r["clients_failed"] == 0 for r in rounds)
