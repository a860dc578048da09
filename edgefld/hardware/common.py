"""Facts every board has: architecture, RAM, CPUs, CPU temperature; and running board tools.

Counts that cannot be read below a foreign root are 0 ("unknown"); the host's
own values (``os.uname``, ``os.cpu_count``) are only used when the root is the
running system, so a fixture tree never picks up facts of the machine that
reads it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess

from edgefld.hardware import sysroot

TOOL_TIMEOUT_S = 5.0

_THERMAL_ZONE = re.compile(r"thermal_zone(\d+)")
# Raspberry Pi: cpu-thermal; Jetson L4T 32: CPU-therm; some vendor kernels: cpu_thermal.
_CPU_ZONE_TYPE = re.compile(r"cpu[-_]therm", re.IGNORECASE)
_EABI = re.compile(r"EABI:\s*(\w+)")


def cpuinfo_value(cpuinfo: str, key: str) -> str | None:
    """First ``key : value`` of /proc/cpuinfo (tabs or spaces around the colon)."""
    match = re.search(rf"^{re.escape(key)}[ \t]*:[ \t]*(.*?)[ \t]*$", cpuinfo, re.MULTILINE)
    return match.group(1) if match else None


def arch(root: str) -> str:
    if sysroot.is_host_root(root):
        return os.uname().machine
    release = sysroot.read_text(root, "etc/nv_tegra_release")
    if release is not None:
        match = _EABI.search(release.partition("\n")[0])
        if match:
            return match.group(1)
    cpuinfo = sysroot.read_text(root, "proc/cpuinfo") or ""
    arm_architecture = cpuinfo_value(cpuinfo, "CPU architecture")
    if arm_architecture == "8":
        return "aarch64"
    if arm_architecture == "7":
        return "armv7l"
    if cpuinfo_value(cpuinfo, "flags") is not None:
        return "x86_64"
    return os.uname().machine


def ram_mb(root: str) -> int:
    """Usable RAM (MemTotal) in MB; 0 when /proc/meminfo cannot be read."""
    meminfo = sysroot.read_text(root, "proc/meminfo") or ""
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", meminfo, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else 0


def mem_available_mb(root: str) -> int | None:
    """Memory available for a new workload (MemAvailable) in MB, read now; None when not reported.

    Unlike MemTotal this changes from minute to minute, so it is not part of the
    ``Board`` detected once at start: the resource guard reads it before each round.
    """
    meminfo = sysroot.read_text(root, "proc/meminfo") or ""
    match = re.search(r"^MemAvailable:\s*(\d+)\s*kB", meminfo, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else None


def _cpuinfo_processor_count(root: str) -> int | None:
    cpuinfo = sysroot.read_text(root, "proc/cpuinfo")
    if cpuinfo is None:
        return None
    count = len(re.findall(r"^processor[ \t]*:", cpuinfo, re.MULTILINE))
    return count or None


def _cpu_count(root: str, sysfs_file: str) -> int:
    cpu_list = sysroot.read_text(root, f"sys/devices/system/cpu/{sysfs_file}")
    count = sysroot.count_cpu_list(cpu_list) if cpu_list is not None else None
    if count is None:
        # /proc/cpuinfo lists online CPUs only, so both counts fall back to it.
        count = _cpuinfo_processor_count(root)
    if count is None and sysroot.is_host_root(root):
        count = os.cpu_count()
    return count or 0


def cpus_online(root: str) -> int:
    return _cpu_count(root, "online")


def cpus_present(root: str) -> int:
    """CPUs in the silicon, including those a Jetson power mode took offline."""
    return _cpu_count(root, "present")


def _zone_temp_c(root: str, zone: str) -> float | None:
    text = sysroot.read_text(root, f"sys/class/thermal/{zone}/temp")
    try:
        return int(text.strip()) / 1000 if text is not None else None
    except ValueError:
        return None


def cpu_temp_c(root: str) -> float | None:
    """CPU temperature in degrees C: the zone typed as the CPU's, else thermal_zone0."""
    try:
        names = os.listdir(sysroot.path_below(root, "sys/class/thermal"))
    except (OSError, ValueError):
        return None
    zones = sorted(
        (name for name in names if _THERMAL_ZONE.fullmatch(name)),
        key=lambda name: int(name.removeprefix("thermal_zone")),
    )
    for zone in zones:
        zone_type = sysroot.read_text(root, f"sys/class/thermal/{zone}/type") or ""
        if _CPU_ZONE_TYPE.match(zone_type.strip()):
            temp = _zone_temp_c(root, zone)
            if temp is not None:
                return temp
    return _zone_temp_c(root, "thermal_zone0")


def run_tool(name: str, args: list[str], path: str | None, timeout_s: float = TOOL_TIMEOUT_S) -> str | None:
    """Stdout of a board tool looked up on ``path``; ``None`` if missing, failing or slow."""
    executable = shutil.which(name, path=path)
    if executable is None:
        return None
    try:
        # A session of its own, so a hung tool is killed with any children it started.
        process = subprocess.Popen(
            [executable, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except (OSError, ValueError):
        return None
    try:
        stdout, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None
    if process.returncode != 0:
        return None
    return stdout.decode("utf-8", errors="replace")
