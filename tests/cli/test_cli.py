"""The `edgefl` command as a user meets it: exit codes, one-line errors, `detect` output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgefld import __version__
from edgefld.config.schema import KEYS_BY_TABLE
from edgefld.exit_codes import EXIT_CODE_HELP, ExitCode

BOARDS = Path(__file__).resolve().parents[1] / "fixtures" / "boards"
FIXTURES = sorted(p for p in BOARDS.iterdir() if (p / "expected.json").is_file())

# What the profile must say for each fixture board (torch installed, as in the test venv).
EXPECTED_PROFILE = {
    "rpi4-4gb": ("large", True), "rpi4-8gb": ("large", True), "rpi4-2gb": ("medium", True),
    "rpi3b-armv7l": ("small", False), "rpi3b-aarch64": ("small", False), "pi-zero2w": ("tiny", False),
    "pi5-16gb": ("large", True), "jetson-nano": ("large", True), "jetson-nano-5w": ("large", True),
    "jetson-xavier-nx": ("large", True), "jetson-xavier-nx-2core": ("large", True),
    "jetson-agx-xavier": ("large", True), "jetson-agx-orin-jp6": ("large", True),
    "jetson-orin-nano-dpkg": ("large", True), "generic-x86": ("large", True),
}


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_detect_json_on_every_fixture(fixture, edgefl_exe):
    env = dict(os.environ, PATH=f"{fixture / 'bin'}:{os.environ['PATH']}")
    done = subprocess.run([*edgefl_exe, "detect", "--json", "--no-cuda-probe", "--sysroot", str(fixture)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["board"] == json.loads((fixture / "expected.json").read_text())
    rule, cifar = EXPECTED_PROFILE[fixture.name]
    assert out["profile"]["rule"] == rule
    assert ("cifar10" in out["profile"]["tasks"]) is cifar
    assert out["profile"]["threads"] == out["board"]["cpus_online"]


def test_detect_on_this_machine_is_generic(edgefl_exe):
    done = subprocess.run([*edgefl_exe, "detect", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    board = json.loads(done.stdout)["board"]
    assert board["family"] == "generic"
    assert board["raspberry_pi"] is None and board["jetson"] is None
    assert board["ram_mb"] > 0 and board["cpus_online"] == os.cpu_count()


def test_detect_table_is_short_and_readable(edgefl_cli):
    code, out, err = edgefl_cli("detect", "--sysroot", str(BOARDS / "pi-zero2w"), "--no-cuda-probe")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split(None, 1) == ["Board", "Raspberry Pi Zero 2 W Rev 1.0 (raspberry-pi, aarch64)"]
    assert any(line.startswith("Tasks") and line.endswith("mnist, digits") for line in lines)
    assert len(lines) <= 14


def test_detect_with_an_uninstalled_backend_configured_exits_69(tmp_path, edgefl_cli, monkeypatch):
    # None in sys.modules is how Python itself marks a module as not importable: to
    # find_spec, tensorflow is then absent even where the test venv has it.
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    config = tmp_path / "edgefl.toml"
    config.write_text('[client]\ncid = 0\nserver = "a:1"\nbackend = "tensorflow"\n')
    code, out, err = edgefl_cli("detect", "--json", "--config", str(config), "--sysroot", str(BOARDS / "rpi4-4gb"))
    assert code == 69
    assert json.loads(out)["profile"]["error"].startswith('backend "tensorflow" is configured but not installed')
    assert err.count("\n") == 1


def test_detect_with_a_bad_config_exits_78(tmp_path, edgefl_cli):
    config = tmp_path / "edgefl.toml"
    config.write_text('[client]\nbackend = 3\n')
    code, out, err = edgefl_cli("detect", "--config", str(config))
    assert code == 78 and out == "" and "[client] backend" in err


def test_version(edgefl_exe):
    done = subprocess.run([*edgefl_exe, "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == f"edgefl {__version__}"


@pytest.mark.parametrize("argv", [["frobnicate"], [], ["client", "--cid"], ["detect", "--sysroot"]])
def test_usage_errors_exit_64_with_one_line(edgefl_exe, argv):
    done = subprocess.run([*edgefl_exe, *argv], capture_output=True, text=True, timeout=30)
    assert done.returncode == ExitCode.USAGE
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_exit_codes_lists_the_registry(edgefl_cli):
    code, out, _ = edgefl_cli("exit-codes")
    assert code == 0
    assert len(out.splitlines()) == len(EXIT_CODE_HELP)
    assert any(line.split()[:2] == ["78", "config"] for line in out.splitlines())


def test_check_config_real_process_exit_status(tmp_path, edgefl_exe):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text('[client]\ncid = 1\nserver = "127.0.0.1:9092"\n')
    bad.write_text('[client]\ncid = 1\nserver = "127.0.0.1:9092"\nbakend = "torch"\n')
    ok = subprocess.run([*edgefl_exe, "check-config", str(good)], capture_output=True, text=True, timeout=30)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, f"{good}: OK\n", "")
    ko = subprocess.run([*edgefl_exe, "check-config", str(bad)], capture_output=True, text=True, timeout=30)
    assert ko.returncode == 78
    assert ko.stderr == (f'edgefl: {bad}:4: [client] bakend: unknown key (did you mean "backend"?); '
                         f"keys allowed in [client]: {', '.join(KEYS_BY_TABLE['client'])}\n")
    assert "cid, server, backend," in ko.stderr  # in the schema's order


HEAVY = {"cryptography", "flwr", "grpc", "torch", "tensorflow", "keras", "ai_edge_litert", "numpy", "httpx", "rich"}


def _loaded_by(statement: str) -> set[str]:
    probe = f"import sys; {statement}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    return set(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              check=True).stdout.split())


def test_building_the_parser_imports_no_heavy_package():
    # Every `edgefl` command builds the whole parser first (so does the man page build,
    # in an environment without Flower): it must stay cheap on a Pi Zero.
    assert not _loaded_by("from edgefld.cli.main import build_parser; build_parser()") & HEAVY


def test_the_client_daemon_process_imports_no_heavy_package():
    # The daemon lives as long as the board runs, beside the SuperNode and the ClientApps: numpy,
    # httpx and cryptography were 30 MiB of its memory (the SuperNode and the ClientApps load what
    # they need themselves). A board with a node key loads cryptography when it reads the key.
    assert not _loaded_by("import edgefld.cli.main, edgefld.cli.client, edgefld.client.daemon") & HEAVY
