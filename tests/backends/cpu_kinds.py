"""The kinds of CPU the product runs on, on this one machine: natively, and under qemu-user.

LiteRT's XNNPACK picks its kernels from the CPU it finds (AVX-512, AVX2/FMA3, NEON, and
per ARM core), so a numerics figure measured on one machine says nothing of another
kind. qemu-user (Debian's qemu-user-static) runs a program for another CPU, and reports
that CPU's features to it: ``-cpu Haswell-v4`` is an x86-64 with AVX2 and FMA3 but no
AVX-512; ``-cpu cortex-a53`` (Pi 3, Pi Zero 2 W), ``cortex-a72`` (Pi 4; Jetson Nano's A57
is the same ARMv8.0 NEON) and ``cortex-a76`` (Pi 5; ARMv8.2 with fp16 and dot product, as
the Jetson Orins' A78AE) are aarch64 cores. qemu computes each instruction's IEEE result
exactly, so the arithmetic is the kernels' own, not qemu's.

XNNPACK's CPU detection (the cpuinfo library) reads /proc/cpuinfo, which qemu-user 7.2
leaves as the host's: an x86 cpuinfo makes LiteRT crash (SIGSEGV) when an interpreter
is created. So each aarch64 kind runs in a mount namespace of its own with the real
/proc/cpuinfo of the board it stands for (tests/fixtures/boards, captured from those
boards) bound over it: XNNPACK then also picks the kernels it tunes for that core.

aarch64 needs an aarch64 Python: Debian 12's python3 (the boards' own Python on
Raspberry Pi OS 12), its packages fetched by ``debootstrap --foreign`` and unpacked
with dpkg-deb (nothing of the target runs to install it), plus the wheels the arm64
.deb bundles for LiteRT, at the versions and hashes of packaging/locks/arm64.json.
Built once and cached under $EDGEFL_CACHE (default /var/cache/edgefl-test), as the
system test's rootfs is. Needs root (debootstrap) and the network to Debian's mirror
and PyPI the first time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests.system.nspawn import MIRROR, SUITE, cache_dir

REPO = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO / "packaging"))
from debbuild import target  # noqa: E402 - packaging/ holds the build scripts and their package

STEPS_SCRIPT = REPO / "tests/backends/litert_steps.py"
HOST_PACKAGES = {"qemu-x86_64-static": "qemu-user-static", "qemu-aarch64-static": "qemu-user-static",
                 "debootstrap": "debootstrap", "dpkg-deb": "dpkg", "unshare": "util-linux"}
# Bump when ensure_aarch64_python() changes what it builds (it is part of the cache key).
RECIPE = 1


@dataclass(frozen=True)
class CpuKind:
    name: str
    stands_for: str
    machine: str  # the Python platform.machine() it runs
    qemu_cpu: str | None = None  # None: natively
    board: str | None = None  # the fixture board (tests/fixtures/boards) whose /proc/cpuinfo it sees

    def argv(self, script_args: list[str]) -> list[str]:
        """How to run litert_steps.py on this kind."""
        if self.qemu_cpu is None:
            return [sys.executable, str(STEPS_SCRIPT), *script_args]
        if self.machine == "x86_64":
            return ["qemu-x86_64-static", "-cpu", self.qemu_cpu, sys.executable, str(STEPS_SCRIPT), *script_args]
        root = ensure_aarch64_python()
        cpuinfo = REPO / "tests/fixtures/boards" / str(self.board) / "proc/cpuinfo"
        # unshare -m: the bind mount is this process tree's alone and goes away with it.
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /proc/cpuinfo && exec "$@"', str(cpuinfo),
                "qemu-aarch64-static", "-cpu", self.qemu_cpu, "-L", str(root),
                str(root / "usr/bin/python3.11"), str(STEPS_SCRIPT), *script_args]

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
        if self.machine == "aarch64":
            env["PYTHONPATH"] = str(ensure_aarch64_python() / "opt/edgefl-site")
            env["PYTHONNOUSERSITE"] = "1"
        return env


NATIVE = CpuKind("this machine", "the developer's or CI's CPU", platform.machine())
KINDS = [
    NATIVE,
    CpuKind("x86-64 AVX2, no AVX-512 (qemu Haswell-v4)", "servers and desktops without AVX-512", "x86_64",
            "Haswell-v4"),
    CpuKind("aarch64 Cortex-A53 (qemu)", "Raspberry Pi 3, Zero 2 W", "aarch64", "cortex-a53", "rpi3b-aarch64"),
    CpuKind("aarch64 Cortex-A72 (qemu)", "Raspberry Pi 4, Jetson Nano (A57)", "aarch64", "cortex-a72", "rpi4-8gb"),
    CpuKind("aarch64 Cortex-A76 (qemu)", "Raspberry Pi 5, Jetson Orin (A78AE)", "aarch64", "cortex-a76", "pi5-16gb"),
]


def unavailable() -> str | None:
    """Why the emulated kinds cannot run here, or None."""
    if platform.machine() != "x86_64":
        return f"the emulated kinds are set up for an x86_64 host; this is {platform.machine()}"
    if os.geteuid() != 0:
        return "needs root (debootstrap, and a mount namespace for each aarch64 kind's /proc/cpuinfo)"
    missing = sorted({pkg for tool, pkg in HOST_PACKAGES.items() if shutil.which(tool) is None})
    if not missing:
        return None
    if shutil.which("apt-get") is None:
        return f"needs {' '.join(missing)} (apt-get install {' '.join(missing)}; as root it is installed)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(["apt-get", "install", "-y", "-q", *missing], env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], env=env, capture_output=True, check=True)
    return None


def litert_wheels() -> list[dict]:
    """ai-edge-litert and what it needs, from the arm64 lock: the backend package's wheels, and those of
    edgefl's own that ai-edge-litert's metadata requires (numpy, protobuf, ...)."""
    lock = json.loads((REPO / "packaging/locks/arm64.json").read_text())
    packages = lock["packages"]
    wanted = list(packages["edgefl-backend-litert"])
    return wanted + [item for item in packages["edgefl"] if _normalise(item["name"]) in _litert_requires(wanted)]


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _litert_requires(backend_items: list[dict]) -> set[str]:
    """Names ai-edge-litert's Requires-Dist lists, read from its wheel's METADATA (downloaded if need be)."""
    litert = next(item for item in backend_items if _normalise(item["name"]) == "ai-edge-litert")
    wheel = _download([litert], cache_dir() / "wheels-arm64")[0]
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    requires = set()
    for line in lines:
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            requirement = line.split(":", 1)[1].strip()
            name = requirement.replace(" ", "").split(";")[0]
            for stop in "<>=!~[(":
                name = name.split(stop)[0]
            requires.add(_normalise(name))
    return requires


def _download(items: list[dict], into: Path) -> list[Path]:
    """The lock's wheels for ``items`` (hash-checked by pip), cached in ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    paths = [into / item["filename"] for item in items]
    missing = [item for item, path in zip(items, paths, strict=True) if not path.exists()]
    if missing:
        requirements = into / "requirements.txt"
        requirements.write_text("".join(f"{i['name']}=={i['version']} --hash=sha256:{i['sha256']}\n" for i in missing))
        platforms = [arg for tag in target.platform_tags(target.ARCHES["arm64"]) for arg in ("--platform", tag)]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--only-binary=:all:", *platforms, "--python-version", target.PYTHON_VERSION,
             "--implementation", "cp", "--require-hashes", "-r", str(requirements), "-d", str(into)],
            check=True, timeout=600)
    return paths


def ensure_aarch64_python() -> Path:
    """The cached aarch64 tree: Debian's python3 and, in opt/edgefl-site, LiteRT's wheels unpacked."""
    wheels = litert_wheels()
    key = hashlib.sha256(
        f"{RECIPE} {SUITE} {MIRROR} {' '.join(sorted(w['sha256'] for w in wheels))}".encode()).hexdigest()[:12]
    base = cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    root = base / f"python-{SUITE}-arm64-{key}"
    with open(base / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / ".complete").exists():
            return root
        started = time.monotonic()
        tmp = root.with_name(root.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        # --foreign: download and unpack, run nothing of the target's; the rest of the packages are
        # unpacked below, which is all a Python interpreter needs (no maintainer scripts).
        subprocess.run(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", "--include=python3",
                        SUITE, str(tmp), MIRROR], check=True, capture_output=True, timeout=900)
        for deb in sorted((tmp / "var/cache/apt/archives").glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
            deb.unlink()
        site = tmp / "opt/edgefl-site"
        site.mkdir(parents=True)
        for wheel in _download(wheels, base / "wheels-arm64"):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
        (tmp / ".complete").write_text(f"{SUITE} arm64 python3 + {len(wheels)} wheels\n")
        tmp.rename(root)
        print(f"cpu kinds: aarch64 Python built in {time.monotonic() - started:.0f} s: {root}", flush=True)
        return root


def run_steps_on(kind: CpuKind, case_path: Path, out_path: Path, *, builtin_kernels: bool = False,
                 timeout: float = 600) -> subprocess.CompletedProcess[str]:
    args = [str(case_path), str(out_path), "--threads", "1"] + (["--builtin-kernels"] if builtin_kernels else [])
    return subprocess.run(kind.argv(args), env=kind.env(), capture_output=True, text=True, timeout=timeout)
