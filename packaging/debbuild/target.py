"""The one target, Debian 12 bookworm / Raspberry Pi OS bookworm: its Python, its glibc, its
architectures, the venv's place, and which wheels fit it (pure functions of their arguments)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

PYTHON_VERSION = "3.11"            # /usr/bin/python3.11
PYTHON_TAG = "cp311"
TARGET_GLIBC = (2, 36)             # bookworm's libc6 2.36
VENV = "/opt/edgefl/venv"
SITE_PACKAGES = f"{VENV}/lib/python{PYTHON_VERSION}/site-packages"
SCRIPT_SHEBANG = f"#!{VENV}/bin/python3"


@dataclass(frozen=True)
class Arch:
    deb: str        # Debian architecture name
    machine: str    # uname -m, wheel platform suffix
    e_machine: int  # ELF header e_machine


ARCHES = {
    "amd64": Arch("amd64", "x86_64", 62),
    "arm64": Arch("arm64", "aarch64", 183),
}

# Legacy manylinux aliases (PEP 600).
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def python_depends() -> list[str]:
    """The interpreter the venv's cp311 wheels need: /usr/bin/python3.11, as python3."""
    minor = int(PYTHON_VERSION.split(".")[1])
    return [f"python3 (>= {PYTHON_VERSION})", f"python3 (<< 3.{minor + 1})", f"python{PYTHON_VERSION}"]


def pyvenv_cfg() -> str:
    # home: where the base interpreter lives; the venv's own site-packages come first on
    # sys.path, then the system ones (an NVIDIA-built torch in the system Python is found).
    return f"home = /usr/bin\ninclude-system-site-packages = true\nversion = {PYTHON_VERSION}\n"


def target_environment(arch: Arch) -> dict[str, str]:
    """PEP 508 marker variables on the target (pip evaluates markers for the build host)."""
    full = PYTHON_VERSION + ".2"  # bookworm's 3.11.2; only the minor version matters to markers seen
    return {
        "implementation_name": "cpython", "implementation_version": full, "os_name": "posix",
        "platform_machine": arch.machine, "platform_python_implementation": "CPython",
        "platform_release": "", "platform_system": "Linux", "platform_version": "",
        "python_full_version": full, "python_version": PYTHON_VERSION, "sys_platform": "linux",
    }


# ----------------------------------------------------------------------- wheel tags

def platform_tags(arch: Arch, glibc: tuple[int, int] = TARGET_GLIBC) -> list[str]:
    """Every platform tag a wheel for this target may carry, newest first.

    pip matches --platform values literally (it does not widen manylinux_2_28
    to the older tags), so the full list goes on its command line.
    """
    tags = [f"manylinux_{glibc[0]}_{minor}_{arch.machine}" for minor in range(glibc[1], 16, -1)]
    tags.append(f"manylinux2014_{arch.machine}")
    return tags


def pip_target_args(arch: Arch) -> list[str]:
    """pip's options that make it pick the target's wheels, whatever the build host is."""
    args = ["--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", PYTHON_TAG,
            "--only-binary=:all:"]
    for tag in platform_tags(arch):
        args += ["--platform", tag]
    return args


def glibc_of_platform(platform: str, arch: Arch) -> tuple[int, int] | None:
    """(2, 28) for manylinux_2_28_<machine>; (0, 0) for 'any'; None if the tag is not for this target."""
    if platform == "any":
        return (0, 0)
    suffix = "_" + arch.machine
    if not platform.endswith(suffix):
        return None
    base = platform[: -len(suffix)]
    if base in _LEGACY_MANYLINUX:
        return _LEGACY_MANYLINUX[base]
    match = re.fullmatch(r"manylinux_(\d+)_(\d+)", base)
    if match:
        return int(match.group(1)), int(match.group(2))
    return None


def expand_tag(tag: str) -> list[tuple[str, str, str]]:
    """A (compressed) wheel tag 'py2.py3-none-any' -> its (python, abi, platform) triples."""
    parts = tag.strip().split("-")
    if len(parts) != 3:
        raise ValueError(f"not a wheel tag: {tag!r}")
    pythons, abis, platforms = (p.split(".") for p in parts)
    return [(py, abi, plat) for py in pythons for abi in abis for plat in platforms]


def _python_ok(python: str, abi: str) -> bool:
    if abi == PYTHON_TAG:
        return python == PYTHON_TAG
    if abi == "abi3":
        match = re.fullmatch(r"cp3(\d+)", python)
        return bool(match) and int(match.group(1)) <= int(PYTHON_TAG[3:])
    if abi == "none":
        return python in ("py3", PYTHON_TAG, "py" + PYTHON_TAG[2:])
    return False


def tag_compatible(tag: str, arch: Arch, glibc: tuple[int, int] = TARGET_GLIBC) -> bool:
    """Whether one (possibly compressed) tag fits CPython 3.11 on this arch with this glibc."""
    for python, abi, platform in expand_tag(tag):
        needed = glibc_of_platform(platform, arch)
        if needed is not None and needed <= glibc and _python_ok(python, abi):
            return True
    return False


def wheel_tags(wheel_file_text: str) -> list[str]:
    """The Tag: lines of a dist-info/WHEEL file."""
    return [line.split(":", 1)[1].strip() for line in wheel_file_text.splitlines() if line.startswith("Tag:")]


def wheel_glibc(tags: Iterable[str], arch: Arch) -> tuple[int, int]:
    """The lowest glibc any compatible tag of the wheel asks for ((0, 0) for pure Python)."""
    found = [
        needed
        for tag in tags
        for python, abi, platform in expand_tag(tag)
        if _python_ok(python, abi) and (needed := glibc_of_platform(platform, arch)) is not None
    ]
    return min(found) if found else (0, 0)
