"""`edgefl model info|export`: listing the server's checkpoints and what bad input gets.

The exports' numbers are tests/backends/test_export_agreement.py's; here, the command's behaviour:
what it lists, its one-line errors and exit codes, what it leaves on disk, what it imports.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefld.backends.layout import model_layout
from edgefld.records import Evaluation, RoundRecord
from edgefld.run_state import RunState
from edgefld.tasks import get_task

IDENTITY = {"task": "digits", "num-partitions": 2, "partition-seed": 0}


def digits_weights(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.1, spec.shape).astype(np.float32) for spec in model_layout(get_task("digits").model)]


@pytest.fixture
def state_dir(tmp_path) -> Path:
    """A digits run's state directory with the initial model and rounds 1 and 2 (evaluated)."""
    directory = tmp_path / "state"
    state = RunState(directory, IDENTITY)
    state.save_round(0, digits_weights(0), None)
    for round_, accuracy in ((1, 0.5), (2, 0.75)):
        state.save_round(round_, digits_weights(round_),
                         RoundRecord(round_, task="digits", evaluation=Evaluation(1.0, accuracy, 300)))
    return directory


def test_info_lists_rounds_and_accuracy(edgefl_cli, state_dir):
    code, out, err = edgefl_cli("model", "info", "--state-dir", str(state_dir))
    assert code == 0 and err == ""
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [row[:3] for row in rows] == [["0", "digits", "-"], ["1", "digits", "0.5000"], ["2", "digits", "0.7500"]]
    code, out, _ = edgefl_cli("model", "info", "--state-dir", str(state_dir), "--json")
    listed = json.loads(out)
    assert [(e["round"], e["task"], e["accuracy"], e["problem"]) for e in listed] == [
        (0, "digits", None, None), (1, "digits", 0.5, None), (2, "digits", 0.75, None)]


def test_info_names_a_corrupt_checkpoint_and_export_falls_back(edgefl_cli, state_dir, tmp_path):
    newest = state_dir / "checkpoints" / "round-000002.npz"
    newest.write_bytes(newest.read_bytes()[:-100])
    code, out, _ = edgefl_cli("model", "info", "--state-dir", str(state_dir))
    assert code == 0
    assert "UNUSABLE: unreadable" in out.splitlines()[-1]
    code, out, err = edgefl_cli("model", "export", "--state-dir", str(state_dir), "--round", "2",
                                "--format", "torch", "--out", str(tmp_path))
    assert code == 65 and err.count("\n") == 1
    assert "the checkpoint of round 2" in err and "is unusable" in err and "usable rounds: 0, 1" in err
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed: the export of the newest usable round is not tried")
    code, out, err = edgefl_cli("model", "export", "--state-dir", str(state_dir), "--format", "torch",
                                "--out", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "digits-round1.pt").is_file()
    assert json.loads((tmp_path / "digits-round1.pt.json").read_text())["accuracy"] == 0.5


@pytest.mark.parametrize(("argv", "code", "says"), [
    (["--round", "9", "--format", "torch"], 65,
     "edgefl: round 9 has no checkpoint in {state}/checkpoints (the last 3 are kept); usable rounds: 0, 1, 2"),
    (["--format", "onx"], 64, "argument --format: invalid choice: 'onx' (choose from 'torch', 'onnx', 'tflite', "
                              "'keras')"),
    (["--format", "torch", "--round", "-1"], 64, "argument --round: must be an integer 0..1000000000, got -1"),
    (["--format", "torch", "--out", ""], 64, "argument --out: an empty path"),
])
def test_export_bad_input_is_one_line(edgefl_cli, capsys, state_dir, tmp_path, argv, code, says):
    try:
        got, out, err = edgefl_cli("model", "export", "--state-dir", str(state_dir), *argv)
    except SystemExit as exit_:  # argparse's usage errors leave by sys.exit (edgefld.cli.main._Parser)
        got, (out, err) = exit_.code, capsys.readouterr()
    assert got == code and out == ""
    assert err.count("\n") == 1 and says.format(state=state_dir) in err


def test_export_without_checkpoints_exits_65(edgefl_cli, tmp_path):
    code, out, err = edgefl_cli("model", "export", "--state-dir", str(tmp_path / "none"), "--format", "keras")
    assert code == 65 and out == "" and err.count("\n") == 1
    assert err.startswith(f"edgefl: no checkpoints in {tmp_path / 'none' / 'checkpoints'}")
    code, out, err = edgefl_cli("model", "info", "--state-dir", str(tmp_path / "none"))
    assert code == 0 and out == f"no checkpoints in {tmp_path / 'none' / 'checkpoints'}\n"


def test_export_with_its_framework_missing_exits_69(edgefl_cli, state_dir, monkeypatch):
    # None in sys.modules marks a module as not importable: find_spec then reports it absent.
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    code, out, err = edgefl_cli("model", "export", "--state-dir", str(state_dir), "--format", "onnx")
    assert code == 69 and err.count("\n") == 1
    assert "--format onnx needs onnxscript, not installed here; install edgefl[torch,export]" in err


def test_an_unwritable_out_exits_73_and_keeps_what_was_there(edgefl_cli, state_dir, tmp_path):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = edgefl_cli("model", "export", "--state-dir", str(state_dir), "--format", "torch",
                              "--out", str(blocker / "model.pt"))
    assert code == 73 and err.count("\n") == 1 and "cannot write" in err
    assert blocker.read_text() == "not a directory"
    # An export over an earlier one replaces it whole; nothing else is left in the directory.
    out = tmp_path / "out"
    out.mkdir()
    for _ in range(2):
        assert edgefl_cli("model", "export", "--state-dir", str(state_dir), "--format", "torch",
                          "--out", str(out / "m.pt"))[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["m.pt", "m.pt.json"]
    # A path ending in "/" is a directory, made if missing, for the default name; not a file named so.
    assert edgefl_cli("model", "export", "--state-dir", str(state_dir), "--format", "torch",
                      "--out", f"{tmp_path / 'new'}/")[0] == 0
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["digits-round2.pt", "digits-round2.pt.json"]


def test_info_imports_no_framework(state_dir):
    # `model info` runs on the server, which may hold no framework; it must not load one if it does.
    probe = ("import sys; from edgefld.cli.main import main; code = main(['model', 'info', '--state-dir', "
             f"{str(state_dir)!r}]); "
             "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not set(done.stderr.split()) & {"torch", "tensorflow", "keras", "onnx", "ai_edge_litert", "flwr"}
