import os
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
