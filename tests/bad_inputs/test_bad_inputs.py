"""Every case of the corpus (cases.py) as a real `edgefl` process: its exit code, one line, no traceback,
and nothing under the case's directory changed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgefld.status import CLIENT_STATE_FILE, FLEET_FILE, SERVER_STATE_FILE
from tests.bad_inputs import conftest
from tests.bad_inputs.cases import BASE_CONFIG, CASES, MNIST, Case

TIMEOUT_S = 120  # a case that hangs (a FIFO read, a daemon that starts) fails instead of blocking the run


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    """What every case starts from: the config, a digits and an mnist store, an empty server state_dir."""
    from edgefld.data.digits import build_digits
    from edgefld.data.store import write_store

    base = tmp_path_factory.mktemp("bad-inputs-base")
    (base / "edgefl.toml").write_text(BASE_CONFIG)
    build_digits(base / "data")
    write_store(base / "data", "mnist", {"train_x": [MNIST.train_x], "train_y": [MNIST.train_y],
                                         "test_x": [MNIST.test_x], "test_y": [MNIST.test_y]}, {"made": "by a test"})
    (base / "server").mkdir()
    return base


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and link under ``root``: its path -> sha256 of its content (or its target)."""
    found: dict[str, str] = {}
    for directory, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
            path = Path(directory) / name
            relative = str(path.relative_to(root))
            if path.is_symlink():
                found[relative] = "-> " + os.readlink(path)
            elif path.is_file():
                found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[relative] = "special"
    return found


def run_case(case: Case, d: Path, exe: list[str]) -> tuple[int, str, str]:
    argv = [arg.replace("{d}", str(d)) for arg in case.argv]
    env = dict(os.environ, EDGEFL_CONFIG=str(d / "edgefl.toml"), PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    result = subprocess.run(exe + argv, cwd=d, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=TIMEOUT_S)
    return result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, base_dir, tmp_path, edgefl_exe):
    d = tmp_path / "case"
    shutil.copytree(base_dir, d, symlinks=True)
    if case.make is not None:
        case.make(d)
    before = tree_digest(d)
    original_metrics = (d / "server/metrics.jsonl").read_bytes() if (d / "server/metrics.jsonl").exists() else b""
    conftest.TALLY["tried"] += 1
    code, out, err = run_case(case, d, edgefl_exe)
    if "Traceback" in out + err:
        conftest.TALLY["tracebacks"] += 1
    assert "Traceback" not in out + err, err[-3000:]
    if case.one_line:
        lines = err.splitlines()
        assert len(lines) == (0 if case.code == 0 else 1), err[-3000:]
        assert re.search(case.stderr, lines[0] if lines else ""), (case.stderr, err[:2000])
        if case.code != 0:
            assert lines[0].startswith("edgefl"), lines[0]
            assert len(lines[0]) < 1000, f"{len(lines[0])} characters"
    else:
        assert re.search(case.stderr, err, re.DOTALL), (case.stderr, err[-3000:])
    assert code == case.code, err[-3000:]
    after = tree_digest(d)
    metrics, rejected = "server/metrics.jsonl", "server/metrics.jsonl.rejected"
    if rejected in after and rejected not in before:
        # The server reconciles metrics.jsonl with the checkpoint it resumes from: unreadable
        # lines are moved aside byte for byte, never deleted. Every original line must remain.
        kept = (d / metrics).read_bytes().splitlines() + (d / rejected).read_bytes().splitlines()
        assert all(line in kept for line in original_metrics.splitlines()), "a metrics line was lost"
        after.pop(rejected)
        after[metrics] = before[metrics]
    # What a daemon says it is doing (for `edgefl status`) is written on its way out, "failed" with the
    # reason: meant to change, and read back here as what it is. So is fleet.json, which the server
    # folds from metrics.jsonl at every start (derived, never the only copy of anything).
    for fleet in [name for name in after if Path(name).name == FLEET_FILE]:
        json.loads((d / fleet).read_text())
        after.pop(fleet)
        before.pop(fleet, None)
    for state in [name for name in after if Path(name).name in (SERVER_STATE_FILE, CLIENT_STATE_FILE)]:
        if after[state] != before.get(state):
            assert json.loads((d / state).read_text())["state"] in ("failed", "stopped", "starting", "complete"), state
            after.pop(state)
            before.pop(state, None)
    assert after == before, "a failed command changed what was stored"
    assert not Path("/tmp/edgefl-pwned-by-pickle").exists(), "a pickle ran code"
    conftest.TALLY["as expected"] += 1


def test_the_corpus_is_large_and_distinct():
    assert len({c.id for c in CASES}) == len(CASES) >= 100
    kinds = {c.id.split("-")[0] for c in CASES}
    assert {"toml", "enc", "cli", "idx", "pickle", "tar", "store", "checkpoint", "pki"} <= kinds
