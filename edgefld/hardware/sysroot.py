"""Reading files below a filesystem root.

Every detector reads through these helpers with a root argument, so tests can
point detection at a fixture tree instead of the real ``/``. A file that is
missing, unreadable or a directory reads as ``None``: detection works with what
a board happens to expose and never fails on what it does not.
"""

from __future__ import annotations

from pathlib import Path

# /proc/device-tree is a symlink to this directory; some containers and chroots
# only have one of the two.
DEVICE_TREE_DIRS = ("proc/device-tree", "sys/firmware/devicetree/base")


def is_host_root(root: str) -> bool:
    """True when ``root`` is the running system's ``/``, where host-only probes make sense."""
    try:
        return Path(root).resolve() == Path("/")
    except (OSError, RuntimeError):
        return False


def path_below(root: str, relative: str) -> Path:
    return Path(root) / relative.lstrip("/")


def read_bytes(root: str, relative: str) -> bytes | None:
    try:
        return path_below(root, relative).read_bytes()
    except (OSError, ValueError):
        return None


def read_text(root: str, relative: str) -> str | None:
    data = read_bytes(root, relative)
    return None if data is None else data.decode("utf-8", errors="replace")


def exists(root: str, relative: str) -> bool:
    try:
        return path_below(root, relative).exists()
    except (OSError, ValueError):
        return False


def read_device_tree_bytes(root: str, name: str) -> bytes | None:
    """A device-tree property, e.g. ``model`` or ``system/linux,revision``."""
    for directory in DEVICE_TREE_DIRS:
        data = read_bytes(root, f"{directory}/{name}")
        if data is not None:
            return data
    return None


def read_device_tree_string(root: str, name: str) -> str | None:
    """A string property without its NUL terminator; ``None`` when absent or empty."""
    data = read_device_tree_bytes(root, name)
    if data is None:
        return None
    text = data.rstrip(b"\0").decode("utf-8", errors="replace").strip()
    return text or None


def read_device_tree_strings(root: str, name: str) -> list[str] | None:
    """A string-list property such as ``compatible`` (entries separated and ended by NUL)."""
    data = read_device_tree_bytes(root, name)
    if data is None:
        return None
    entries = (entry.decode("utf-8", errors="replace").strip() for entry in data.split(b"\0"))
    return [entry for entry in entries if entry]


def count_cpu_list(cpu_list: str) -> int | None:
    """Number of CPUs in a kernel CPU list such as ``0-3`` or ``0-1,4-5``; ``None`` if malformed."""
    total = 0
    text = cpu_list.strip()
    if not text:
        return None
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            return None
        if low < 0 or high < low:
            return None
        total += high - low + 1
    return total
