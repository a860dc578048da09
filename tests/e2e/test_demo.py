"""`make demo` runs `edgefl demo`: a whole local federation on the shipped digits data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_runs_a_local_federation(tmp_path):
    done = subprocess.run([sys.executable, "-m", "edgefld.cli.main", "demo", "--rounds", "2", "--workdir",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "edgefl demo: server + 2 clients on 127.0.0.1" in out
    assert "round 1/2: 2 clients ok" in out and "round 2/2: 2 clients ok" in out
    assert "[client 0]" in out and "[client 1]" in out
    assert "Traceback" not in out + done.stderr
    records = [json.loads(line) for line in (tmp_path / "server" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2]
    assert records[-1]["eval_accuracy"] > records[0]["eval_accuracy"] > 0.5
