"""`edgefl simulate` end to end: a small virtual fleet on Flower's simulation engine (a local Ray)."""

from __future__ import annotations

import json
import subprocess

import pytest

pytest.importorskip("ray", reason="edgefl simulate needs edgefl[simulation] (Ray)")

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_four_virtual_boards_train_two_rounds_and_leave_a_server_state(tmp_path, edgefl_exe):
    data, state = tmp_path / "data", tmp_path / "state"
    subprocess.run([*edgefl_exe, "data", "download", "digits", "--data-dir", str(data), "--quiet"], check=True)
    result = subprocess.run(
        [*edgefl_exe, "simulate", "--fleet", "rpi-zero-2w:2,rpi-4-4gb:1,jetson-orin-nano:1", "--task", "digits",
         "--rounds", "2", "--local-epochs", "1", "--data-dir", str(data), "--state-dir", str(state)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "ERROR" not in result.stderr, result.stderr
    assert "edgefl simulate: 4 virtual boards, 2 rounds, wall time" in result.stdout
    # Virtual time: each round's estimate on the real boards, printed and kept beside metrics.jsonl.
    assert "virtual time" in result.stdout.splitlines()[0]
    assert all("virtual time ~" in line for line in result.stdout.splitlines() if line.startswith("  round "))
    virtual = json.loads((state / "virtual-time.json").read_text())
    assert [r["round"] for r in virtual["rounds"]] == [1, 2]
    assert all(r["seconds"] > 0 and r["boards_estimated"] == 4 and not r["boards_without_figure"]
               for r in virtual["rounds"])
    assert virtual["total_seconds"] == pytest.approx(sum(r["seconds"] for r in virtual["rounds"]), abs=0.01)
    # The slowest board of this fleet is a Pi Zero 2 W (the slowest core), and its figure names its source.
    assert {r["slowest_board"] for r in virtual["rounds"]} == {"pi-zero2w"}
    assert "geerlingguy/sbc-reviews" in virtual["figures"]["pi-zero2w"]["provenance"]
    rounds = [json.loads(line) for line in (state / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["clients_ok"] == 4 and r["clients_failed"] == 0 for r in rounds)
    assert rounds[-1]["eval_accuracy"] > 0.5  # digits learns within two rounds
    status = subprocess.run([*edgefl_exe, "status", "--state-dir", str(state), "--json"], capture_output=True,
                            text=True, timeout=60, check=True)
    shown = json.loads(status.stdout)
    assert shown["daemon"]["recorded_state"] == "complete"
    assert sorted(b["profile"] for b in shown["boards"]) == ["large", "large", "tiny", "tiny"]
