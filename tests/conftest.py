import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def edgefl_cli(capsys):
    """Run `edgefl ARGS...` in this process; return (exit code, stdout, stderr)."""
    from edgefld.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def edgefl_exe() -> list[str]:
    """The real console entry point as a subprocess argv prefix."""
    exe = Path(sys.executable).with_name("edgefl")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "edgefld.cli.main"]


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch):
    # A developer's EDGEFL_CONFIG must not leak into tests.
    monkeypatch.delenv("EDGEFL_CONFIG", raising=False)


def pytest_addoption(parser):
    # Settings for checking that the backend tests do not depend on the CPU's thread count or kernel
    # choice (tests/backends/conftest.py applies them), e.g. `pytest tests/backends --backend-threads 1`.
    group = parser.getgroup("edgefl", "edgefl backend settings")
    group.addoption("--backend-threads", type=int, metavar="N",
                    help="train torch, TensorFlow and LiteRT with N threads (default: each framework's own)")
    group.addoption("--litert-builtin-kernels", action="store_true",
                    help="run LiteRT with its builtin kernels only, without XNNPACK (boards use XNNPACK)")
