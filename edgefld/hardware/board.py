"""What edgefl knows about the board it runs on.

Plain data, filled by the per-family detectors in this package and read by
``edgefld.profile``. ``to_json()`` is the shape ``edgefl detect --json`` prints
(its keys are a public interface: scripts and the server rely on them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Family = Literal["raspberry-pi", "jetson", "generic"]


@dataclass(frozen=True)
class RaspberryPiInfo:
    revision: str  # e.g. "c03111", lower-case hex without the overvoltage prefix
    type: str | None  # e.g. "4B", "Zero2W", "5"
    soc: str | None  # e.g. "BCM2711"
    ram_mb_nominal: int | None  # from the revision code: 512 ... 16384
    pcb_revision: str | None  # e.g. "1.1"


@dataclass(frozen=True)
class PowerMode:
    id: int
    name: str


@dataclass(frozen=True)
class JetsonInfo:
    module: str  # e.g. "Jetson Nano", "Jetson Xavier NX (16GB)"
    part_number: str | None  # e.g. "p3448-0000"
    soc: str | None  # e.g. "tegra210"
    l4t: str | None  # e.g. "32.6.1"
    jetpack: str | None  # e.g. "4.6"; None when the L4T release maps to no known JetPack
    power_mode: PowerMode | None
    cuda: bool  # an NVIDIA-built torch is importable and reports a CUDA device


@dataclass(frozen=True)
class Throttling:
    raw: int  # the value of `vcgencmd get_throttled`
    under_voltage: bool
    freq_capped: bool
    throttled: bool
    soft_temp_limit: bool
    under_voltage_occurred: bool
    freq_capped_occurred: bool
    throttled_occurred: bool
    soft_temp_limit_occurred: bool

    @classmethod
    def from_raw(cls, raw: int) -> Throttling:
        def bit(n: int) -> bool:
            return bool(raw >> n & 1)

        return cls(raw, bit(0), bit(1), bit(2), bit(3), bit(16), bit(17), bit(18), bit(19))

    @property
    def active(self) -> bool:
        """Throttled or capped right now (bits 0-3), as opposed to at some time since boot."""
        return bool(self.raw & 0xF)


@dataclass(frozen=True)
class Board:
    family: Family
    model: str | None
    arch: str
    ram_mb: int  # usable RAM, from MemTotal
    cpus_online: int
    cpus_present: int
    cpu_temp_c: float | None = None
    throttling: Throttling | None = None
    raspberry_pi: RaspberryPiInfo | None = None
    jetson: JetsonInfo | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.throttling is not None:
            data["throttling"]["raw"] = f"0x{self.throttling.raw:x}"
            data["throttling"]["active"] = self.throttling.active
        return data
