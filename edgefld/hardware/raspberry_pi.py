"""Raspberry Pi: identification, revision-code decoding and throttling.

Revision codes are decoded as the Raspberry Pi documentation describes them
(computers/raspberry-pi/revision-codes.adoc). Only the bit fields are used for
new-style codes, so a board revision that post-dates these tables still
decodes; a field value the documentation does not name decodes to ``None``.
"""

from __future__ import annotations

import re

from edgefld.hardware import common, sysroot
from edgefld.hardware.board import RaspberryPiInfo, Throttling

NEW_STYLE_FLAG = 1 << 23

# Bits 20-22; 7 means "other" (size in a firmware parameter), so it is left out.
MEMORY_MB = {0: 256, 1: 512, 2: 1024, 3: 2048, 4: 4096, 5: 8192, 6: 16384}

# Bits 12-15.
PROCESSORS = {0: "BCM2835", 1: "BCM2836", 2: "BCM2837", 3: "BCM2711", 4: "BCM2712"}

# Bits 4-11. 0x0f and 0x16 are "internal use only" and 0x07, 0x0b are not
# assigned: none of them names a board.
BOARD_TYPES = {
    0x00: "A",
    0x01: "B",
    0x02: "A+",
    0x03: "B+",
    0x04: "2B",
    0x05: "Alpha",
    0x06: "CM1",
    0x08: "3B",
    0x09: "Zero",
    0x0A: "CM3",
    0x0C: "ZeroW",
    0x0D: "3B+",
    0x0E: "3A+",
    0x10: "CM3+",
    0x11: "4B",
    0x12: "Zero2W",
    0x13: "400",
    0x14: "CM4",
    0x15: "CM4S",
    0x17: "5",
    0x18: "CM5",
    0x19: "500",
    0x1A: "CM5Lite",
    0x1B: "CM0",
}


# Old-style codes: (type, PCB revision, RAM in MB). All of them are BCM2835 boards.
# 0x0015 shipped with 256 MB or 512 MB, so its RAM is not known from the code.
OLD_STYLE_CODES: dict[int, tuple[str, str, int | None]] = {
    0x0002: ("B", "1.0", 256),
    0x0003: ("B", "1.0", 256),
    0x0004: ("B", "2.0", 256),
    0x0005: ("B", "2.0", 256),
    0x0006: ("B", "2.0", 256),
    0x0007: ("A", "2.0", 256),
    0x0008: ("A", "2.0", 256),
    0x0009: ("A", "2.0", 256),
    0x000D: ("B", "2.0", 512),
    0x000E: ("B", "2.0", 512),
    0x000F: ("B", "2.0", 512),
    0x0010: ("B+", "1.2", 512),
    0x0011: ("CM1", "1.0", 512),
    0x0012: ("A+", "1.1", 256),
    0x0013: ("B+", "1.2", 512),
    0x0014: ("CM1", "1.0", 512),
    0x0015: ("A+", "1.1", None),
}

_THROTTLED = re.compile(r"^\s*throttled=0x([0-9a-fA-F]+)\s*$")


def is_raspberry_pi(root: str) -> bool:
    model = sysroot.read_device_tree_string(root, "model") or ""
    if model.startswith("Raspberry Pi"):
        return True
    compatible = sysroot.read_device_tree_strings(root, "compatible") or []
    if any(entry.startswith("raspberrypi,") for entry in compatible):
        return True
    cpuinfo = sysroot.read_text(root, "proc/cpuinfo") or ""
    return (common.cpuinfo_value(cpuinfo, "Model") or "").startswith("Raspberry Pi")


def revision_code(root: str) -> int | None:
    """The raw revision code: device tree first (distribution-independent), else /proc/cpuinfo."""
    data = sysroot.read_device_tree_bytes(root, "system/linux,revision")
    if data is not None and len(data) == 4:
        return int.from_bytes(data, "big")
    cpuinfo = sysroot.read_text(root, "proc/cpuinfo") or ""
    value = common.cpuinfo_value(cpuinfo, "Revision")
    try:
        return int(value, 16) if value else None
    except ValueError:
        return None


def decode_revision(code: int) -> RaspberryPiInfo:
    if code & NEW_STYLE_FLAG:
        # Bits 24-31 are flags (warranty voided, overvoltage, OTP), not board identity.
        code &= 0xFFFFFF
        return RaspberryPiInfo(
            revision=f"{code:06x}",
            type=BOARD_TYPES.get(code >> 4 & 0xFF),
            soc=PROCESSORS.get(code >> 12 & 0xF),
            ram_mb_nominal=MEMORY_MB.get(code >> 20 & 0x7),
            pcb_revision=f"1.{code & 0xF}",
        )
    # An overvolted old board reports e.g. 1000002: the "1000" prefix is the
    # warranty bit (24), not part of the code.
    code &= 0xFFFF
    known = OLD_STYLE_CODES.get(code)
    if known is None:
        return RaspberryPiInfo(f"{code:04x}", None, None, None, None)
    board_type, pcb_revision, ram = known
    return RaspberryPiInfo(f"{code:04x}", board_type, "BCM2835", ram, pcb_revision)


def info(root: str) -> RaspberryPiInfo | None:
    code = revision_code(root)
    return decode_revision(code) if code is not None else None


def parse_throttled(output: str) -> Throttling | None:
    """``throttled=0x50005`` as printed by ``vcgencmd get_throttled``; ``None`` for anything else."""
    match = _THROTTLED.match(output)
    return Throttling.from_raw(int(match.group(1), 16)) if match else None


def throttling(path: str | None) -> Throttling | None:
    output = common.run_tool("vcgencmd", ["get_throttled"], path)
    return parse_throttled(output) if output is not None else None
