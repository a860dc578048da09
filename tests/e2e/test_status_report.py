"""`edgefl status`, `edgefl report` and the Prometheus textfile on a real 3-board run in which one board fails.

Three real `edgefl client` daemons and a real `edgefl server` on 127.0.0.1. Board 2 reads a Raspberry
Pi 4's /proc and /sys (a fixture tree) and a stand-in `vcgencmd` whose answer the test switches: it
is throttled in round 1 (its guards refuse the round, code 4006), then no longer, and trains the
rest. With EDGEFL_CAPTURE_DIR set, the outputs are kept there (README quotes them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.status_tools import chromium_screenshot, promtool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PI_FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "boards" / "rpi4-4gb"


def _switchable_pi(root: Path) -> tuple[Path, Path]:
    """A copy of the Pi 4 fixture whose vcgencmd prints what the returned file holds."""
    tree = root / "pi4"
    shutil.copytree(PI_FIXTURE, tree)
    answer = tree / "bin" / "get_throttled.txt"
    answer.write_text("throttled=0x50005\n")
    script = tree / "bin" / "vcgencmd"
    script.write_text('#!/bin/sh\n[ "$1" = "get_throttled" ] || exit 2\nexec cat "$(dirname "$0")/get_throttled.txt"\n')
    script.chmod(0o755)
    return tree, answer


def _edgefl(fed, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefld.cli.main", *args, "--config", str(fed.config_path)],
                          cwd=fed.root, capture_output=True, text=True, timeout=60)


def test_status_report_and_prometheus_of_a_three_board_run_with_a_failing_board(federation, tmp_path):
    textfile = tmp_path / "node-exporter" / "edgefl.prom"
    fed = federation(task="digits", num_partitions=3, rounds=3, min_clients=3, local_epochs=1,
                     prometheus_textfile=str(textfile))
    pi, throttled = _switchable_pi(tmp_path)
    server = fed.start_server()
    fed.start_client(0)
    fed.start_client(1)
    board = fed.start_client(2, "--sysroot", str(pi), env={"PATH": f"{pi / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    fed.wait_for("round 1", lambda: [r["round"] for r in fed.metrics()] == [1], timeout=300)
    throttled.write_text("throttled=0x0\n")  # from now on the board affords its rounds
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=300)
    assert server.process.returncode == 0, server.log()

    # --- the server's status, after the daemon stopped ---------------------------------------
    shown = _edgefl(fed, "status")
    assert shown.returncode == 0 and not shown.stderr, shown
    as_json = _edgefl(fed, "status", "--json")
    assert as_json.returncode == 0, as_json
    status = json.loads(as_json.stdout)
    assert status["schema"] == 1 and status["role"] == "server" and status["problems"] == []
    assert status["daemon"]["state"] == "complete" and not status["daemon"]["running"]
    run = status["run"]
    assert (run["task"], run["rounds_done"], run["rounds_configured"]) == ("digits", 3, 3)
    assert len(run["accuracy_trend"]) == 3 and run["eval_accuracy"] == run["accuracy_trend"][-1]
    boards = {b["cid"]: b for b in status["boards"]}
    assert set(boards) == {0, 1, 2}, status["boards"]
    for cid in (0, 1):
        assert (boards[cid]["rounds_ok"], boards[cid]["rounds_failed"], boards[cid]["last_trained"]) == (3, 0, 3)
        assert boards[cid]["family"] == "generic" and boards[cid]["last_failure"] is None
    pi_board = boards[2]
    assert (pi_board["board"], pi_board["family"]) == ("Raspberry Pi 4 Model B Rev 1.1", "raspberry-pi")
    assert pi_board["rounds_failed"] >= 1 and pi_board["rounds_refused"] == pi_board["rounds_failed"]
    assert pi_board["rounds_ok"] == 3 - pi_board["rounds_failed"] and pi_board["last_trained"] == 3
    failure = pi_board["last_failure"]
    assert (failure["code"], failure["error"]) == (4006, "resources") and "throttled" in failure["reason"]
    for b in status["boards"]:
        split = b["last_split"]
        assert all(isinstance(split[k], float) and split[k] >= 0 for k in ("startup", "loading", "training",
                                                                           "transfer")), b
        assert split["training"] > 0 and b["backend"] and b["profile"] and b["last_seen"]
    assert "edgefl server: complete since" in shown.stdout and "round 3 of 3" in shown.stdout
    assert re.search(r"^2 +\d+ +Raspberry Pi 4 Model B Rev 1\.1 +raspberry-pi ", shown.stdout, re.M), shown.stdout
    assert "4006 resources: client 2 refuses this round" in shown.stdout

    # --- the board's status: while its daemon runs, then after it stopped ---------------------
    live = _edgefl(fed, "status", "--role", "client", "--state-dir", "client-2")
    live_json = json.loads(_edgefl(fed, "status", "--role", "client", "--state-dir", "client-2", "--json").stdout)
    assert live.returncode == 0 and live_json["connected"] is True and live_json["node_id"] == pi_board["node"]
    assert live_json["guards"] == {"enabled": True, "memory_margin_mb": 128, "heavy_task_min_watts": 15}
    assert live_json["last_round"]["round"] == 3 and live_json["last_round"]["outcome"] == "trained"
    assert f"connected to 127.0.0.1:{fed.port} as node {pi_board['node']}" in live.stdout
    fed.stop(board)
    stopped = json.loads(_edgefl(fed, "status", "--role", "client", "--state-dir", "client-2", "--json").stdout)
    assert stopped["daemon"]["state"] == "stopped" and stopped["connected"] is False

    # --- Prometheus ---------------------------------------------------------------------------
    metrics = textfile.read_text()
    assert re.search(r'^edgefl_round\{task="digits"\} 3$', metrics, re.M), metrics
    assert re.search(r'^edgefl_round_boards\{task="digits",outcome="ok"\} 3$', metrics, re.M), metrics
    assert 'edgefl_server_info{task="digits",state="complete"} 1' in metrics
    checked = promtool(textfile)

    # --- the report, shown in a real browser --------------------------------------------------
    out = tmp_path / "report"
    made = _edgefl(fed, "report", "--out", str(out))
    assert made.returncode == 0, made
    assert sorted(p.name for p in out.iterdir()) == ["accuracy-loss.png", "bytes.png", "participation.png",
                                                     "report.html", "round-time.png"]
    screenshot, text = chromium_screenshot(out / "report.html", tmp_path / "screenshot.png")
    assert "edgefl run: task digits, 3 rounds, 3 boards" in text
    assert "refused 4006" in text and "cid 2 (Raspberry Pi 4 Model B Rev 1.1)" in text

    capture = os.environ.get("EDGEFL_CAPTURE_DIR")
    if capture:
        keep = Path(capture)
        keep.mkdir(parents=True, exist_ok=True)
        for name, content in (("server-status.txt", shown.stdout), ("server-status.json", as_json.stdout),
                              ("client-status.txt", live.stdout),
                              ("client-status.json", json.dumps(live_json, indent=2)),
                              ("client-status-stopped.json", json.dumps(stopped, indent=2)),
                              ("edgefl.prom", metrics), ("promtool.txt", checked)):
            (keep / name).write_text(content)
        shutil.copytree(out, keep / "report", dirs_exist_ok=True)
        shutil.copy(screenshot, keep / "report-screenshot.png")
        shutil.copytree(fed.root / "server", keep / "server-state", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("checkpoints", "flwr*", "*.db*", "logs"))
