"""Board detection against fixture sysroots built from captured board outputs.

The fixture trees live in tests/fixtures/boards (see PROVENANCE.md there);
stand-in ``vcgencmd``/``nvpmodel`` scripts sit in each fixture's ``bin/`` and
are found through the ``path`` argument, exactly as the real tools would be.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgefld.hardware import common, jetson, raspberry_pi, sysroot
from edgefld.hardware.board import PowerMode, RaspberryPiInfo, Throttling
from edgefld.hardware.detect import detect_board

REPO_ROOT = Path(__file__).resolve().parents[2]
BOARDS = REPO_ROOT / "tests" / "fixtures" / "boards"
SAMPLES = BOARDS / "samples"
FIXTURE_DIRS = sorted(path for path in BOARDS.iterdir() if (path / "expected.json").is_file())


def write_tool(bin_dir: Path, name: str, body: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / name
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return script


def write_tree(root: Path, files: dict[str, bytes | str]) -> Path:
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


# --- fixtures ------------------------------------------------------------------


def test_every_required_fixture_exists() -> None:
    assert {path.name for path in FIXTURE_DIRS} == {
        "rpi4-4gb", "rpi4-8gb", "rpi4-2gb", "rpi3b-armv7l", "rpi3b-aarch64", "pi-zero2w", "pi5-16gb",
        "jetson-nano", "jetson-nano-5w", "jetson-xavier-nx", "jetson-xavier-nx-2core", "jetson-agx-xavier",
        "jetson-agx-orin-jp6", "jetson-orin-nano-dpkg", "generic-x86",
    }


@pytest.mark.parametrize("fixture", FIXTURE_DIRS, ids=lambda path: path.name)
def test_detect_board_on_fixture(fixture: Path) -> None:
    board = detect_board(str(fixture), path=str(fixture / "bin"), probe_cuda=False)
    assert board.to_json() == json.loads((fixture / "expected.json").read_text())


def test_fixture_trees_match_their_generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("make_fixtures", BOARDS / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    make_fixtures = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_fixtures", make_fixtures)  # dataclasses look their module up
    spec.loader.exec_module(make_fixtures)
    names = make_fixtures.build(tmp_path)
    assert sorted(names) == [path.name for path in FIXTURE_DIRS]
    for name in names:
        generated = {p.relative_to(tmp_path / name): p for p in (tmp_path / name).rglob("*") if p.is_file()}
        committed = {p.relative_to(BOARDS / name): p for p in (BOARDS / name).rglob("*") if p.is_file()}
        assert generated.keys() == committed.keys(), name
        for relative, path in generated.items():
            assert path.read_bytes() == committed[relative].read_bytes(), f"{name}/{relative}"
            assert os.access(path, os.X_OK) == os.access(committed[relative], os.X_OK), f"{name}/{relative}"


def test_device_tree_files_are_nul_terminated_like_the_kernels() -> None:
    nano = BOARDS / "jetson-nano" / "proc" / "device-tree"
    assert (nano / "compatible").read_bytes() == (
        b"nvidia,p3449-0000-b00+p3448-0000-b00\0nvidia,jetson-nano\0nvidia,tegra210\0")
    assert (nano / "model").read_bytes() == b"NVIDIA Jetson Nano Developer Kit\0"
    assert (BOARDS / "rpi4-4gb/proc/device-tree/system/linux,revision").read_bytes() == b"\x00\xc0\x31\x11"


# --- this machine --------------------------------------------------------------


def test_detect_board_on_this_machine_is_generic() -> None:
    board = detect_board("/", probe_cuda=False)
    assert board.family == "generic"
    assert board.arch == os.uname().machine
    assert board.ram_mb > 0
    assert board.cpus_online >= 1
    assert board.cpus_present >= board.cpus_online


# --- trees with missing or odd files --------------------------------------------


def test_empty_tree_gives_unknowns_not_errors(tmp_path: Path) -> None:
    board = detect_board(str(tmp_path), path=str(tmp_path / "bin"))
    assert board.to_json() == {
        "family": "generic", "model": None, "arch": os.uname().machine, "ram_mb": 0, "cpus_online": 0,
        "cpus_present": 0, "cpu_temp_c": None, "throttling": None, "raspberry_pi": None, "jetson": None,
    }


def test_weird_tree_does_not_raise(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "proc/device-tree/model": b"\xff\xfeRaspberry\0",
        "proc/device-tree/compatible": b"raspberrypi,\xff\0\0\0",
        "proc/device-tree/system/linux,revision": b"\x00\xc0\x31",  # 3 bytes: not a revision
        "proc/cpuinfo": "Revision\t: zzzz\nCPU architecture: 9\n",
        "proc/meminfo": "MemTotal: lots\n",
        "sys/devices/system/cpu/online": "0-",
        "sys/devices/system/cpu/present": "",
        "sys/class/thermal/thermal_zone0/type": "cpu-thermal\n",
        "sys/class/thermal/thermal_zone0/temp": "n/a\n",
    })
    (tmp_path / "sys/class/thermal/thermal_zoneX").mkdir()
    (tmp_path / "etc/nv_tegra_release").mkdir(parents=True)  # a directory where a file belongs
    board = detect_board(str(tmp_path), path="")
    assert board.family == "raspberry-pi"
    assert board.raspberry_pi is None  # no readable revision code anywhere
    assert (board.ram_mb, board.cpus_online, board.cpus_present, board.cpu_temp_c) == (0, 0, 0, None)


def test_jetson_with_garbage_release_file_and_no_tools(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "proc/device-tree/compatible": b"nvidia,tegra186\0",
        "etc/nv_tegra_release": "not a release line\n",
        "var/lib/dpkg/status": "Package: nvidia-l4t-core\nStatus: deinstall ok config-files\nVersion: 32.7.1-1\n",
    })
    board = detect_board(str(tmp_path), path=str(tmp_path / "bin"), probe_cuda=False)
    assert board.family == "jetson"
    assert board.jetson is not None
    found = (board.jetson.module, board.jetson.part_number, board.jetson.soc)
    assert found == (jetson.UNKNOWN_MODULE, None, "tegra186")
    assert (board.jetson.l4t, board.jetson.jetpack, board.jetson.power_mode) == (None, None, None)


def test_nv_tegra_release_alone_makes_a_jetson(tmp_path: Path) -> None:
    release = (SAMPLES / "jetson-nano/etc_nv_tegra_release_R32.6.1_jp4.6").read_bytes()
    write_tree(tmp_path, {"etc/nv_tegra_release": release})
    board = detect_board(str(tmp_path), path="", probe_cuda=False)
    assert board.family == "jetson"
    assert board.arch == "aarch64"
    assert board.jetson is not None and board.jetson.l4t == "32.6.1"


# --- sysroot helpers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu_list", "count"),
    [("0", 1), ("0-3", 4), ("0-1,4-5", 4), ("0-1\n", 2), ("0,2,4-7", 6),
     ("", None), ("0-", None), ("3-1", None), ("a", None)],
)
def test_count_cpu_list(cpu_list: str, count: int | None) -> None:
    assert sysroot.count_cpu_list(cpu_list) == count


def test_device_tree_falls_back_to_sys_firmware(tmp_path: Path) -> None:
    write_tree(tmp_path, {"sys/firmware/devicetree/base/model": b"Raspberry Pi Zero 2 W Rev 1.0\0"})
    assert sysroot.read_device_tree_string(str(tmp_path), "model") == "Raspberry Pi Zero 2 W Rev 1.0"
    assert sysroot.read_device_tree_strings(str(tmp_path), "compatible") is None
    assert sysroot.read_text(str(tmp_path), "sys/firmware") is None  # a directory


def test_cpu_temperature_prefers_the_cpu_zone(tmp_path: Path) -> None:
    for index, (zone_type, temp) in enumerate([("AO-therm", "30000"), ("GPU-therm", "31000")] + [("x", "1")] * 8):
        write_tree(tmp_path, {
            f"sys/class/thermal/thermal_zone{index}/type": zone_type,
            f"sys/class/thermal/thermal_zone{index}/temp": temp,
        })
    assert common.cpu_temp_c(str(tmp_path)) == 30.0  # no CPU zone: zone0
    write_tree(tmp_path, {
        "sys/class/thermal/thermal_zone10/type": "cpu_thermal\n",
        "sys/class/thermal/thermal_zone10/temp": "61500\n",
    })
    assert common.cpu_temp_c(str(tmp_path)) == 61.5


@pytest.mark.parametrize(
    ("cpuinfo", "arch"),
    [("CPU architecture: 8\n", "aarch64"), ("CPU architecture: 7\n", "armv7l"), ("flags\t\t: fpu vme lm\n", "x86_64")],
)
def test_arch_from_cpuinfo(tmp_path: Path, cpuinfo: str, arch: str) -> None:
    write_tree(tmp_path, {"proc/cpuinfo": cpuinfo})
    assert common.arch(str(tmp_path)) == arch


# --- Raspberry Pi revision codes -------------------------------------------------

# Type field of new-style codes, per the Raspberry Pi revision-codes documentation.
DOCUMENTED_TYPES = {
    0x00: "A", 0x01: "B", 0x02: "A+", 0x03: "B+", 0x04: "2B", 0x05: "Alpha", 0x06: "CM1", 0x08: "3B",
    0x09: "Zero", 0x0A: "CM3", 0x0C: "ZeroW", 0x0D: "3B+", 0x0E: "3A+", 0x10: "CM3+", 0x11: "4B",
    0x12: "Zero2W", 0x13: "400", 0x14: "CM4", 0x15: "CM4S", 0x17: "5", 0x18: "CM5", 0x19: "500",
    0x1A: "CM5Lite", 0x1B: "CM0",
}


@pytest.mark.parametrize("type_code", range(0x20))
def test_new_style_type_field(type_code: int) -> None:
    decoded = raspberry_pi.decode_revision(1 << 23 | type_code << 4)
    assert decoded.type == DOCUMENTED_TYPES.get(type_code)


@pytest.mark.parametrize(
    ("memory_code", "ram_mb"), [(0, 256), (1, 512), (2, 1024), (3, 2048), (4, 4096), (5, 8192), (6, 16384), (7, None)]
)
def test_new_style_memory_field(memory_code: int, ram_mb: int | None) -> None:
    assert raspberry_pi.decode_revision(1 << 23 | memory_code << 20 | 0x11 << 4).ram_mb_nominal == ram_mb


@pytest.mark.parametrize(
    ("processor_code", "soc"),
    [(0, "BCM2835"), (1, "BCM2836"), (2, "BCM2837"), (3, "BCM2711"), (4, "BCM2712"), (5, None), (15, None)],
)
def test_new_style_processor_field(processor_code: int, soc: str | None) -> None:
    assert raspberry_pi.decode_revision(1 << 23 | processor_code << 12).soc == soc


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0xC03111, RaspberryPiInfo("c03111", "4B", "BCM2711", 4096, "1.1")),
        (0xE04171, RaspberryPiInfo("e04171", "5", "BCM2712", 16384, "1.1")),
        (0xA04171, RaspberryPiInfo("a04171", "5", "BCM2712", 1024, "1.1")),
        (0xE04180, RaspberryPiInfo("e04180", "CM5", "BCM2712", 16384, "1.0")),
        (0xE041A0, RaspberryPiInfo("e041a0", "CM5Lite", "BCM2712", 16384, "1.0")),
        (0xD04190, RaspberryPiInfo("d04190", "500", "BCM2712", 8192, "1.0")),
        (0x902120, RaspberryPiInfo("902120", "Zero2W", "BCM2837", 512, "1.0")),
        (0xC03130, RaspberryPiInfo("c03130", "400", "BCM2711", 4096, "1.0")),
        (0xA03140, RaspberryPiInfo("a03140", "CM4", "BCM2711", 1024, "1.0")),
        (0xA52082, RaspberryPiInfo("a52082", "3B", "BCM2837", 1024, "1.2")),
        (0xA020D4, RaspberryPiInfo("a020d4", "3B+", "BCM2837", 1024, "1.4")),
        (0xA01041, RaspberryPiInfo("a01041", "2B", "BCM2836", 1024, "1.1")),
        (0x9000C1, RaspberryPiInfo("9000c1", "ZeroW", "BCM2835", 512, "1.1")),
        (0x900021, RaspberryPiInfo("900021", "A+", "BCM2835", 512, "1.1")),
        # Warranty bit (25) set by overclocking: a flag, not part of the board's code.
        (0x2A02082, RaspberryPiInfo("a02082", "3B", "BCM2837", 1024, "1.2")),
    ],
)
def test_documented_new_style_codes(code: int, expected: RaspberryPiInfo) -> None:
    assert raspberry_pi.decode_revision(code) == expected


# The documentation's old-style table: code -> (model, PCB revision, RAM).
OLD_STYLE = {
    0x0002: ("B", "1.0", 256), 0x0003: ("B", "1.0", 256), 0x0004: ("B", "2.0", 256), 0x0005: ("B", "2.0", 256),
    0x0006: ("B", "2.0", 256), 0x0007: ("A", "2.0", 256), 0x0008: ("A", "2.0", 256), 0x0009: ("A", "2.0", 256),
    0x000D: ("B", "2.0", 512), 0x000E: ("B", "2.0", 512), 0x000F: ("B", "2.0", 512), 0x0010: ("B+", "1.2", 512),
    0x0011: ("CM1", "1.0", 512), 0x0012: ("A+", "1.1", 256), 0x0013: ("B+", "1.2", 512), 0x0014: ("CM1", "1.0", 512),
    0x0015: ("A+", "1.1", None),
}


@pytest.mark.parametrize("code", sorted(OLD_STYLE))
def test_old_style_codes(code: int) -> None:
    board_type, pcb, ram = OLD_STYLE[code]
    assert raspberry_pi.decode_revision(code) == RaspberryPiInfo(f"{code:04x}", board_type, "BCM2835", ram, pcb)


def test_old_style_unknown_code() -> None:
    assert raspberry_pi.decode_revision(0x000A) == RaspberryPiInfo("000a", None, None, None, None)


@pytest.mark.parametrize(
    ("revision_line", "expected"),
    [
        ("Revision\t: 1000002", RaspberryPiInfo("0002", "B", "BCM2835", 256, "1.0")),  # overvoltage prefix
        ("Revision    : 100000e", RaspberryPiInfo("000e", "B", "BCM2835", 512, "2.0")),
        ("Revision\t: 000e", RaspberryPiInfo("000e", "B", "BCM2835", 512, "2.0")),
        ("Revision    : a32082", RaspberryPiInfo("a32082", "3B", "BCM2837", 1024, "1.2")),
        ("Revision:c03115", RaspberryPiInfo("c03115", "4B", "BCM2711", 4096, "1.5")),
    ],
)
def test_revision_from_cpuinfo(tmp_path: Path, revision_line: str, expected: RaspberryPiInfo) -> None:
    write_tree(tmp_path, {"proc/cpuinfo": f"Hardware\t: BCM2835\n{revision_line}\nSerial\t\t: 00000000\n"})
    assert raspberry_pi.info(str(tmp_path)) == expected


def test_device_tree_revision_wins_over_cpuinfo(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "proc/device-tree/system/linux,revision": b"\x00\xd0\x31\x15",
        "proc/cpuinfo": "Revision\t: a02082\n",
    })
    info = raspberry_pi.info(str(tmp_path))
    assert info is not None and info.revision == "d03115"


def test_cpuinfo_model_line_identifies_a_pi(tmp_path: Path) -> None:
    write_tree(tmp_path, {"proc/cpuinfo": (SAMPLES / "rpi4/proc_cpuinfo_tail_2gb").read_bytes()})
    assert raspberry_pi.is_raspberry_pi(str(tmp_path))
    write_tree(tmp_path, {"proc/cpuinfo": "Model\t\t: Pine64 RockPro64\n"})
    assert not raspberry_pi.is_raspberry_pi(str(tmp_path))


# --- vcgencmd ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "raw"),
    [("throttled=0x50005\n", 0x50005), ("throttled=0x0\n", 0x0), ("throttled=0xE0008", 0xE0008)],
)
def test_parse_throttled(output: str, raw: int) -> None:
    assert raspberry_pi.parse_throttled(output) == Throttling.from_raw(raw)


@pytest.mark.parametrize("output",
                         ["", "throttled=\n", "VCHI initialization failed\n", "throttled=0x5 extra\n", "x=0x1"])
def test_parse_throttled_rejects_garbage(output: str) -> None:
    assert raspberry_pi.parse_throttled(output) is None


def test_throttling_from_tool_variants(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    assert raspberry_pi.throttling(str(bin_dir)) is None  # missing
    write_tool(bin_dir, "vcgencmd", '[ "$1" = get_throttled ] && echo throttled=0x50000')
    assert raspberry_pi.throttling(str(bin_dir)) == Throttling.from_raw(0x50000)
    write_tool(bin_dir, "vcgencmd", "echo 'VCHI initialization failed' >&2; exit 255")
    assert raspberry_pi.throttling(str(bin_dir)) is None
    write_tool(bin_dir, "vcgencmd", "echo '\x01\x02 garbage'")
    assert raspberry_pi.throttling(str(bin_dir)) is None


# --- board tools -------------------------------------------------------------------


def test_hung_tool_is_killed_after_its_timeout(tmp_path: Path) -> None:
    write_tool(tmp_path, "nvpmodel", "sleep 30 & wait")
    assert common.run_tool("nvpmodel", ["-q"], str(tmp_path), timeout_s=0.3) is None


def test_non_executable_tool_is_not_run(tmp_path: Path) -> None:
    (tmp_path / "nvpmodel").write_text("#!/bin/sh\necho 'NV Power Mode: MAXN'\necho 0\n")
    assert common.run_tool("nvpmodel", ["-q"], str(tmp_path)) is None


# --- Jetson: module, L4T, JetPack ------------------------------------------------


@pytest.mark.parametrize(
    ("compatible", "module", "part_number"),
    [
        (["nvidia,p3449-0000-b00+p3448-0000-b00", "nvidia,jetson-nano", "nvidia,tegra210"],
         "Jetson Nano", "p3448-0000"),
        (["nvidia,p3542-0000+p3448-0003", "nvidia,tegra210"], "Jetson Nano (2GB)", "p3448-0003"),
        (["nvidia,p3509-0000+p3668-0001", "nvidia,tegra194"], "Jetson Xavier NX", "p3668-0001"),
        (["nvidia,p3509-0000+p3668-0003", "nvidia,tegra194"], "Jetson Xavier NX (16GB)", "p3668-0003"),
        (["nvidia,p2822-0000+p2888-0004", "nvidia,tegra194"], "Jetson AGX Xavier (32GB)", "p2888-0004"),
        (["nvidia,p2822-0000+p2888-0005", "nvidia,tegra194"], "Jetson AGX Xavier (64GB)", "p2888-0005"),
        (["nvidia,p2822-0000+p2888-0006", "nvidia,tegra194"], "Jetson AGX Xavier (8GB)", "p2888-0006"),
        (["nvidia,p2972-0000", "nvidia,tegra194"], "Jetson AGX Xavier", "p2972-0000"),
        (["nvidia,p3768-0000+p3767-0000", "nvidia,tegra234"], "Jetson Orin NX (16GB)", "p3767-0000"),
        (["nvidia,p3768-0000+p3767-0001", "nvidia,tegra234"], "Jetson Orin NX (8GB)", "p3767-0001"),
        (["nvidia,p3768-0000+p3767-0003", "nvidia,tegra234"], "Jetson Orin Nano (8GB)", "p3767-0003"),
        (["nvidia,p3768-0000+p3767-0004", "nvidia,p3767-0004", "nvidia,tegra234"],
         "Jetson Orin Nano (4GB)", "p3767-0004"),
        (["nvidia,p3768-0000+p3767-0003-super", "nvidia,p3767-0003"], "Jetson Orin Nano Super (8GB)", "p3767-0003"),
        (["nvidia,p3768-0000+p3767-0009", "nvidia,tegra234"], "Jetson Orin NX / Orin Nano", "p3767-0009"),
        (["nvidia,p3737-0000+p3701-0004", "nvidia,p3701-0004"], "Jetson AGX Orin (32GB)", "p3701-0004"),
        (["nvidia,p3737-0000+p3701-0000", "nvidia,p3701-0000"], "Jetson AGX Orin", "p3701-0000"),
        (["nvidia,p3971-0000+p3834-0008", "nvidia,tegra264"], jetson.UNKNOWN_MODULE, "p3834-0008"),
        (["nvidia,jetson-cv", "nvidia,tegra210"], jetson.UNKNOWN_MODULE, None),
        ([], jetson.UNKNOWN_MODULE, None),
    ],
)
def test_module_from_compatible(compatible: list[str], module: str, part_number: str | None) -> None:
    assert jetson.module(compatible) == (module, part_number)


def test_soc_ignores_family_wildcards() -> None:
    assert jetson.soc(["nvidia,p3701-0005", "nvidia,tegra23x", "nvidia,tegra234"]) == "tegra234"
    assert jetson.soc(["nvidia,tegra23x"]) is None


@pytest.mark.parametrize(
    ("release_file", "l4t"),
    [
        ((SAMPLES / "jetson-nano/etc_nv_tegra_release_R32.5.1_jp4.5.1").read_text(), "32.5.1"),
        ((SAMPLES / "jetson-xavier-nx/etc_nv_tegra_release_R32.6.1_jp4.6").read_text(), "32.6.1"),
        # notes/hardware.md's example line
        ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: ...\n", "35.4.1"),
        (
            "# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic, EABI: aarch64, DATE: x\n"
            "# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n",
            "36.4.3",
        ),
        ("# R32 (release), REVISION: 5.0, GCID: 1, BOARD: t210ref, EABI: aarch64\n", "32.5.0"),
        ("# R32 (release), REVISION: 1, GCID: 1, BOARD: t210ref, EABI: aarch64\n", "32.1.0"),
        ("#R28 (release), REVISION: 2.1, GCID: 1, BOARD: t186ref, EABI: aarch64\n", "28.2.1"),
        ("", None),
        ("R32 REVISION 6.1\n", None),
        ("\n# R35 (release), REVISION: 4.1\n", None),  # only the first line counts
    ],
)
def test_parse_l4t_release(release_file: str, l4t: str | None) -> None:
    assert jetson.parse_l4t_release(release_file) == l4t


@pytest.mark.parametrize(
    ("status", "l4t"),
    [
        ("Package: nvidia-l4t-core\nStatus: install ok installed\nVersion: 36.4.3-20250107174145\n", "36.4.3"),
        (
            "Package: nvidia-l4t-core-dev\nVersion: 35.1.0-1\n\n"
            "Package: nvidia-l4t-core\nVersion: 35.4.1-20230801124926\n",
            "35.4.1",
        ),
        ("Package: nvidia-l4t-core\nVersion: 32.7.1-20220219090432\nDescription: x\n y: z\n", "32.7.1"),
        ("Package: nvidia-l4t-core\nStatus: deinstall ok config-files\nVersion: 32.7.1-1\n", None),
        ("Package: nvidia-l4t-kernel\nVersion: 5.15.148-tegra-36.4.3-20250107174145\n", None),
        ("", None),
    ],
)
def test_parse_dpkg_l4t_release(status: str, l4t: str | None) -> None:
    assert jetson.parse_dpkg_l4t_release(status) == l4t


@pytest.mark.parametrize(
    ("l4t", "jetpack"),
    [
        ("32.1.0", "4.2"), ("32.2.1", "4.2.2"), ("32.3.1", "4.3"), ("32.4.3", "4.4"), ("32.4.4", "4.4.1"),
        ("32.5.0", "4.5"), ("32.5.1", "4.5.1"), ("32.6.1", "4.6"), ("32.7.1", "4.6.1"), ("32.7.4", "4.6.4"),
        ("32.7.6", "4.6.6"), ("35.1.0", "5.0.2"), ("35.2.1", "5.1"), ("35.3.1", "5.1.1"), ("35.4.1", "5.1.2"),
        ("35.5.0", "5.1.3"), ("35.6.0", "5.1.4"), ("35.6.1", "5.1.5"), ("36.2.0", "6.0 DP"), ("36.3.0", "6.0"),
        ("36.4.0", "6.1"), ("36.4.3", "6.2"), ("36.4.4", "6.2.1"), ("38.2.0", "7.0"), ("38.2.1", "7.0"),
        ("38.4.0", "7.1"), ("39.2.0", "7.2"),
        ("32.6.0", None), ("35.6.5", None), ("36.4.7", None), ("38.3.0", None), ("28.2.1", None), (None, None),
    ],
)
def test_jetpack_from_l4t(l4t: str | None, jetpack: str | None) -> None:
    assert jetson.jetpack_release(l4t) == jetpack


# --- Jetson: power mode ----------------------------------------------------------

VERBOSE_QUERY = (SAMPLES / "jetson-xavier-nx/nvpmodel_q_verbose_MODE_15W_6CORE_jp4.x").read_text()


@pytest.mark.parametrize(
    ("output", "mode"),
    [
        ((SAMPLES / "jetson-nano/nvpmodel_q_MAXN_jp4.5.1").read_text(), PowerMode(0, "MAXN")),
        ((SAMPLES / "jetson-xavier-nx/nvpmodel_q_MODE_15W_6CORE").read_text(), PowerMode(2, "MODE_15W_6CORE")),
        (VERBOSE_QUERY, PowerMode(2, "MODE_15W_6CORE")),
        ("NVPM WARN: fan mode is not set!\nNV Fan Mode:quiet\nNV Power Mode: MAXN_SUPER\n2\n",
         PowerMode(2, "MAXN_SUPER")),
        ("NV Power Mode: 15W\r\n0\r\n", PowerMode(0, "15W")),
        ("NV Power Mode: MODE_50W\n", None),  # id missing
        ("NV Power Mode: MODE_50W\nthree\n", None),
        ("NVPM ERROR: failed to read PARAM\n", None),
        ("", None),
    ],
)
def test_parse_nvpmodel_query(output: str, mode: PowerMode | None) -> None:
    assert jetson.parse_nvpmodel_query(output) == mode


def test_power_mode_from_tool_variants(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    root = str(tmp_path)
    assert jetson.power_mode(root, str(bin_dir)) is None  # missing
    (bin_dir).mkdir()
    (bin_dir / "verbose.txt").write_text(VERBOSE_QUERY)
    write_tool(bin_dir, "nvpmodel", '[ "$1" = -q ] && cat "$(dirname "$0")/verbose.txt"')
    assert jetson.power_mode(root, str(bin_dir)) == PowerMode(2, "MODE_15W_6CORE")
    write_tool(bin_dir, "nvpmodel", "echo 'NV Power Mode: MAXN'; echo 0; exit 1")  # right text, failed run
    assert jetson.power_mode(root, str(bin_dir)) is None
    write_tool(bin_dir, "nvpmodel", "head -c 64 /dev/zero")
    assert jetson.power_mode(root, str(bin_dir)) is None


@pytest.fixture
def fake_jtop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Installs a stand-in ``jtop`` module and service socket; yields a writer for its body."""
    package_dir = tmp_path / "site"
    package_dir.mkdir()
    socket = tmp_path / "jtop.sock"
    socket.touch()
    monkeypatch.syspath_prepend(str(package_dir))
    monkeypatch.setattr(jetson, "JTOP_SOCKET", str(socket))
    monkeypatch.setattr(jetson, "JTOP_TIMEOUT_S", 0.5)

    def install(enter_body: str) -> None:
        (package_dir / "jtop.py").write_text(
            textwrap.dedent(
                """
                import time
                from types import SimpleNamespace

                class jtop:
                    def __enter__(self):
                {body}
                    def __exit__(self, *exc):
                        return False
                """
            ).format(body=textwrap.indent(textwrap.dedent(enter_body), " " * 8))
        )
        importlib.invalidate_caches()

    yield install
    sys.modules.pop("jtop", None)


def test_power_mode_prefers_jtop_on_the_host(fake_jtop: Callable[[str], None], tmp_path: Path) -> None:
    fake_jtop("return SimpleNamespace(nvpmodel=SimpleNamespace(id=3, name='MODE_50W'))")
    assert jetson.power_mode("/", str(tmp_path / "no-bin")) == PowerMode(3, "MODE_50W")


@pytest.mark.parametrize("enter_body", ["raise RuntimeError('The jtop.service is not active')", "time.sleep(3)"])
def test_power_mode_falls_back_to_nvpmodel_when_jtop_fails(
    fake_jtop: Callable[[str], None], tmp_path: Path, enter_body: str
) -> None:
    fake_jtop(enter_body)
    write_tool(tmp_path / "bin", "nvpmodel", "printf 'NV Power Mode: MODE_15W\\n1\\n'")
    assert jetson.power_mode("/", str(tmp_path / "bin")) == PowerMode(1, "MODE_15W")


def test_jtop_is_not_used_for_a_foreign_root(fake_jtop: Callable[[str], None], tmp_path: Path) -> None:
    fake_jtop("return SimpleNamespace(nvpmodel=SimpleNamespace(id=3, name='MODE_50W'))")
    assert jetson.power_mode(str(tmp_path), str(tmp_path / "no-bin")) is None


# --- Jetson: CUDA probe and import hygiene ---------------------------------------


def stand_in_torch(directory: Path, body: str) -> Path:
    package = directory / "torch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(body))
    return directory


CUDA_TORCH = """
import os
if os.environ.get("EDGEFL_TEST_TORCH_MARKER"):
    open(os.environ["EDGEFL_TEST_TORCH_MARKER"], "a").close()
class cuda:
    @staticmethod
    def is_available():
        return {available}
"""


@pytest.mark.parametrize("available", [True, False])
def test_cuda_probe_asks_torch_in_a_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, available: bool) -> None:
    monkeypatch.setenv("PYTHONPATH", str(stand_in_torch(tmp_path, CUDA_TORCH.format(available=available))))
    modules_before = set(sys.modules)
    assert jetson.cuda_usable() is available
    # Other tests may have imported torch into this process already; the probe must add nothing.
    assert not {m for m in set(sys.modules) - modules_before if m == "torch" or m.startswith("torch.")}


@pytest.mark.parametrize(
    "body",
    [
        "raise ImportError('libcudart.so.10.2: cannot open shared object file')",
        "import sys; sys.exit(3)",
        "print('1 2 x')",
    ],
)
def test_cuda_probe_is_false_when_torch_is_broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    monkeypatch.setenv("PYTHONPATH", str(stand_in_torch(tmp_path, body)))
    assert jetson.cuda_usable() is False


def test_cuda_probe_without_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # -S drops site-packages, hiding any torch installed there from the child.
    no_site_python = write_tool(tmp_path, "python-without-site", f'exec {sys.executable} -S "$@"')
    monkeypatch.setattr(sys, "executable", str(no_site_python))
    monkeypatch.setenv("PYTHONPATH", str(stand_in_torch(tmp_path / "site", CUDA_TORCH.format(available=True))))
    assert jetson.cuda_usable() is True  # the wrapper does run the probe
    monkeypatch.delenv("PYTHONPATH")
    assert jetson.cuda_usable() is False
    # Nor is a `torch` directory in the current directory taken for one.
    monkeypatch.chdir(stand_in_torch(tmp_path / "cwd", CUDA_TORCH.format(available=True)))
    assert jetson.cuda_usable() is False


def test_detect_board_probes_cuda_only_on_a_jetson(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "torch-imported"
    monkeypatch.setenv("PYTHONPATH", str(stand_in_torch(tmp_path / "site", CUDA_TORCH.format(available=True))))
    monkeypatch.setenv("EDGEFL_TEST_TORCH_MARKER", str(marker))
    pi = BOARDS / "rpi4-4gb"
    assert detect_board(str(pi), path=str(pi / "bin")).family == "raspberry-pi"
    assert not marker.exists()
    nano = BOARDS / "jetson-nano"
    unprobed = detect_board(str(nano), path=str(nano / "bin"), probe_cuda=False)
    assert unprobed.jetson is not None and unprobed.jetson.cuda is False
    assert not marker.exists()
    board = detect_board(str(nano), path=str(nano / "bin"))
    assert board.jetson is not None and board.jetson.cuda is True
    assert marker.exists()


def test_detection_never_imports_frameworks(tmp_path: Path) -> None:
    nano = BOARDS / "jetson-nano"
    script = f"""
import sys
import edgefld.hardware
from edgefld.hardware import common, detect, jetson, raspberry_pi, sysroot
edgefld.hardware.detect_board("/")
board = edgefld.hardware.detect_board({str(nano)!r}, path={str(nano / "bin")!r})
assert board.jetson.cuda is True, board
print(sorted(m for m in ("torch", "numpy", "flwr", "tensorflow") if m in sys.modules))
"""
    site = stand_in_torch(tmp_path, CUDA_TORCH.format(available=True))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)])}
    env.pop("EDGEFL_TEST_TORCH_MARKER", None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
