"""NVIDIA Jetson: module, SoC, L4T/JetPack release, power mode, CUDA.

The module is identified by the P-number tokens of the device-tree
``compatible`` list (``nvidia,<carrier>+<module>``), because the ``model``
string changed wording between L4T releases.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading

from edgefld.hardware import common, sysroot
from edgefld.hardware.board import JetsonInfo, PowerMode

UNKNOWN_MODULE = "Jetson (unknown module)"

# Module P-number -> module name when the SKU is not in MODULE_SKUS.
MODULE_NAMES = {
    "p3448": "Jetson Nano",
    "p3668": "Jetson Xavier NX",
    "p2888": "Jetson AGX Xavier",
    # The AGX Xavier developer kit's own number (p2822 carrier + p2888 module),
    # which the mainline kernel device tree lists instead of p2888.
    "p2972": "Jetson AGX Xavier",
    "p3767": "Jetson Orin NX / Orin Nano",
    "p3701": "Jetson AGX Orin",
}

# SKUs that tell the RAM (and, for p3767, NX from Nano): part number -> (name, RAM).
MODULE_SKUS = {
    "p3448-0003": ("Jetson Nano", "2GB"),
    "p3668-0003": ("Jetson Xavier NX", "16GB"),
    "p2888-0001": ("Jetson AGX Xavier", "16GB"),
    "p2888-0004": ("Jetson AGX Xavier", "32GB"),
    "p2888-0005": ("Jetson AGX Xavier", "64GB"),
    "p2888-0006": ("Jetson AGX Xavier", "8GB"),
    "p3767-0000": ("Jetson Orin NX", "16GB"),
    "p3767-0001": ("Jetson Orin NX", "8GB"),
    "p3767-0003": ("Jetson Orin Nano", "8GB"),
    "p3767-0004": ("Jetson Orin Nano", "4GB"),
    "p3767-0005": ("Jetson Orin Nano", "8GB"),
    "p3701-0004": ("Jetson AGX Orin", "32GB"),
    "p3701-0005": ("Jetson AGX Orin", "64GB"),
}

# L4T release -> JetPack release, from NVIDIA's JetPack archive. A release that
# is not listed maps to None rather than to a guessed neighbour.
JETPACK_BY_L4T = {
    "32.1.0": "4.2",
    "32.2.1": "4.2.2",
    "32.3.1": "4.3",
    "32.4.3": "4.4",
    "32.4.4": "4.4.1",
    "32.5.0": "4.5",
    "32.5.1": "4.5.1",
    "32.6.1": "4.6",
    "32.7.1": "4.6.1",
    "32.7.2": "4.6.2",
    "32.7.3": "4.6.3",
    "32.7.4": "4.6.4",
    "32.7.5": "4.6.5",
    "32.7.6": "4.6.6",
    "35.1.0": "5.0.2",
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "35.6.1": "5.1.5",
    "36.2.0": "6.0 DP",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
    "38.2.0": "7.0",
    "38.2.1": "7.0",
    "38.4.0": "7.1",
    "39.2.0": "7.2",
}

JTOP_SOCKET = "/run/jtop.sock"
JTOP_TIMEOUT_S = 5.0
CUDA_PROBE_TIMEOUT_S = 60.0

_PART = re.compile(r"^(p\d{4})-(\d{4})(?:-([0-9a-z]+))?$")
_SOC = re.compile(r"^nvidia,(tegra\d+)$")
_RELEASE_LINE = re.compile(r"^#\s*R(\d+)\s*\([^)]*\),\s*REVISION:\s*(\d+(?:\.\d+)*)")
_DPKG_VERSION = re.compile(r"^(?:\d+:)?(\d+(?:\.\d+)*)")
_POWER_MODE_NAME = re.compile(r"NV Power Mode:\s*(\S(?:.*\S)?)\s*$")

# Run by a separate interpreter: importing torch here would cost hundreds of
# MB and seconds on a small board and pin CUDA state in the daemon. The -P flag
# keeps a `torch` directory in the current directory from being picked up.
_CUDA_PROBE = """
import importlib.util
if importlib.util.find_spec("torch") is None:
    print(0)
else:
    import torch
    print(1 if torch.cuda.is_available() else 0)
"""


def _compatible(root: str) -> list[str]:
    return sysroot.read_device_tree_strings(root, "compatible") or []


def is_jetson(root: str) -> bool:
    for entry in _compatible(root):
        vendor, _, board = entry.partition(",")
        if vendor == "nvidia" and (re.match(r"p\d{4}", board) or board.startswith("tegra")):
            return True
    return sysroot.exists(root, "etc/nv_tegra_release")


def _part_tokens(compatible: list[str]) -> list[re.Match[str]]:
    """P-number tokens in order, e.g. ``p3449-0000-b00`` then ``p3448-0000-b00`` (carrier, module)."""
    tokens: list[re.Match[str]] = []
    for entry in compatible:
        vendor, _, board = entry.partition(",")
        if vendor == "nvidia":
            tokens.extend(match for token in board.split("+") if (match := _PART.match(token)))
    return tokens


def module(compatible: list[str]) -> tuple[str, str | None]:
    """(module name, part number such as ``p3767-0005``) from a ``compatible`` list."""
    for token in _part_tokens(compatible):
        number, sku, suffix = token.groups()
        if number not in MODULE_NAMES:
            continue
        part_number = f"{number}-{sku}"
        name, ram = MODULE_SKUS.get(part_number, (MODULE_NAMES[number], None))
        if suffix == "super":
            name += " Super"
        return (f"{name} ({ram})" if ram else name), part_number
    # By NVIDIA's convention the module is the last token of "carrier+module":
    # keep its number for a module this table does not know yet.
    first_board = next((entry for entry in compatible if "+" in entry), None)
    if first_board is not None:
        last = _PART.match(first_board.rsplit("+", 1)[1])
        if last is not None:
            return UNKNOWN_MODULE, f"{last.group(1)}-{last.group(2)}"
    return UNKNOWN_MODULE, None


def soc(compatible: list[str]) -> str | None:
    for entry in compatible:
        match = _SOC.match(entry)
        if match:
            return match.group(1)
    return None


def _normalise_release(parts: list[str]) -> str:
    """Three components, as NVIDIA names releases: 32.1 -> 32.1.0."""
    return ".".join(parts + ["0"] * (3 - len(parts)))


def parse_l4t_release(nv_tegra_release: str) -> str | None:
    """L4T release from the first line of /etc/nv_tegra_release, e.g. ``32.6.1``."""
    match = _RELEASE_LINE.match(nv_tegra_release.partition("\n")[0].strip())
    if match is None:
        return None
    return _normalise_release([match.group(1), *match.group(2).split(".")])


def parse_dpkg_l4t_release(dpkg_status: str) -> str | None:
    """L4T release from the installed ``nvidia-l4t-core`` package in /var/lib/dpkg/status."""
    for stanza in re.split(r"\n\s*\n", dpkg_status):
        # Continuation lines (of Description, Conffiles) start with a blank: not fields.
        fields = {
            key: value.strip()
            for key, sep, value in (line.partition(":") for line in stanza.splitlines())
            if sep and not key.startswith((" ", "\t"))
        }
        if fields.get("Package") != "nvidia-l4t-core":
            continue
        if not fields.get("Status", "install ok installed").endswith(" installed"):
            continue
        match = _DPKG_VERSION.match(fields.get("Version", ""))
        if match:
            return _normalise_release(match.group(1).split("."))
    return None


def l4t_release(root: str) -> str | None:
    release_file = sysroot.read_text(root, "etc/nv_tegra_release")
    release = parse_l4t_release(release_file) if release_file is not None else None
    if release is None:
        dpkg_status = sysroot.read_text(root, "var/lib/dpkg/status")
        release = parse_dpkg_l4t_release(dpkg_status) if dpkg_status is not None else None
    return release


def jetpack_release(l4t: str | None) -> str | None:
    return JETPACK_BY_L4T.get(l4t) if l4t is not None else None


def parse_nvpmodel_query(output: str) -> PowerMode | None:
    """``nvpmodel -q`` output: optional warnings, ``NV Power Mode: NAME``, then the id alone."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        match = _POWER_MODE_NAME.search(line)
        if match is None:
            continue
        following = lines[index + 1].strip() if index + 1 < len(lines) else ""
        if not following.isdigit():
            return None
        return PowerMode(id=int(following), name=match.group(1))
    return None


def _power_mode_from_jtop(timeout_s: float) -> PowerMode | None:
    """Ask the jtop service; any failure or a reply slower than ``timeout_s`` gives ``None``."""
    result: list[PowerMode] = []

    def query() -> None:
        try:
            from jtop import jtop  # optional, AGPL: used at run time only when installed

            with jtop() as stats:
                mode = stats.nvpmodel
                result.append(PowerMode(id=int(mode.id), name=str(mode.name)))
        except Exception:  # a broken optional helper must not break detection
            return

    # A daemon thread, since jtop has no timeout of its own and can block on its socket.
    worker = threading.Thread(target=query, name="edgefl-jtop", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return result[0] if result else None


def power_mode(root: str, path: str | None) -> PowerMode | None:
    if (
        sysroot.is_host_root(root)
        and os.path.exists(JTOP_SOCKET)
        and importlib.util.find_spec("jtop") is not None
    ):
        mode = _power_mode_from_jtop(JTOP_TIMEOUT_S)
        if mode is not None:
            return mode
    output = common.run_tool("nvpmodel", ["-q"], path)
    return parse_nvpmodel_query(output) if output is not None else None


def cuda_usable(timeout_s: float = CUDA_PROBE_TIMEOUT_S) -> bool:
    """Whether an importable torch reports a CUDA device, asked of a child interpreter."""
    try:
        result = subprocess.run(
            [sys.executable, "-P", "-c", _CUDA_PROBE],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    lines = result.stdout.decode("utf-8", errors="replace").split()
    return result.returncode == 0 and bool(lines) and lines[-1] == "1"


def info(root: str, path: str | None, *, probe_cuda: bool = True) -> JetsonInfo:
    compatible = _compatible(root)
    module_name, part_number = module(compatible)
    l4t = l4t_release(root)
    return JetsonInfo(
        module=module_name,
        part_number=part_number,
        soc=soc(compatible),
        l4t=l4t,
        jetpack=jetpack_release(l4t),
        power_mode=power_mode(root, path),
        cuda=cuda_usable() if probe_cuda else False,
    )
