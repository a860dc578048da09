"""The Jetson image script picks a base image per L4T release (no Docker needed here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "packaging" / "jetson" / "build_jetson_edgefl_client.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=30)


@pytest.mark.parametrize(("l4t", "base"), [
    ("36.4.3", "dustynv/pytorch:2.6-r36.4.0-cu128-24.04"),
    ("36.2.0", "dustynv/pytorch:2.6-r36.4.0-cu128-24.04"),
    ("38.2.0", "nvcr.io/nvidia/pytorch:25.12-py3"),
])
def test_base_image_per_l4t(l4t, base):
    result = _run("--l4t", l4t, "--print-base")
    assert (result.returncode, result.stdout.strip()) == (0, base)


@pytest.mark.parametrize("l4t", ["32.7.1", "35.4.1", "41.0"])
def test_no_base_image_exits_69(l4t):
    result = _run("--l4t", l4t, "--print-base")
    assert result.returncode == 69 and "--base" in result.stderr


def test_detects_l4t_from_nv_tegra_release(tmp_path):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
                       "DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\n")
    result = _run("--dry-run", "--tag", "t:1", env={"PATH": "/usr/bin:/bin", "L4T_RELEASE_FILE": str(release)})
    assert result.returncode == 0, result.stderr
    assert "L4T 36.4.3" in result.stderr and "--build-arg BASE_IMAGE=dustynv/pytorch:2.6-r36.4.0" in result.stderr
    assert "--tag t:1" in result.stderr


def test_explicit_base_and_usage_errors():
    assert _run("--base", "example/img:1", "--print-base").stdout.strip() == "example/img:1"
    assert _run("--frobnicate").returncode == 64
    assert _run("--tag").returncode == 64
