"""What every part of the build shares: the checkout's paths, the one error type, commands,
and the names and metadata of Python distributions."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from debbuild.target import Arch

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


class BuildError(Exception):
    """The build cannot go on; the message says why in one line (build_deb.py prints it and exits 1)."""


def log(message: str) -> None:
    print(f"build_deb: {message}", flush=True)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("check", True)
    try:
        return subprocess.run(cmd, **kwargs)
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"command failed ({exc.returncode}): {' '.join(map(str, cmd))[:400]}") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Paths:
    """Where one architecture's build keeps its files."""

    def __init__(self, arch: Arch, dist: Path):
        self.cache = REPO / "build" / "wheels" / arch.deb  # fetched and built wheels, kept across builds
        self.work = REPO / "build" / "deb" / arch.deb      # edgefl's wheel, the stages, nfpm configs
        self.dist = dist                                   # the .debs


def normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_metadata(text: str) -> email.message.Message:
    # policy.default decodes RFC 2047 words (=?utf-8?q?Sebasti=C3=A1n...?=) in author fields.
    return email.parser.HeaderParser(policy=email.policy.default).parsestr(text)
