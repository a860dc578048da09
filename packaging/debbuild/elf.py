"""ELF files: their headers and dynamic sections, and the Depends the bundled ones need."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from debbuild.target import Arch, wheel_glibc, wheel_tags

# A shared object's file name: libfoo.so, libfoo.so.1.2, _ext.cpython-311-x86_64-linux-gnu.so.
SHARED_OBJECT = re.compile(r"\.so(\.\d+)*$")

# Libraries that manylinux wheels may take from the system (PEP 600's policy list,
# the part a headless Debian has), and the bookworm packages that provide them.
SYSTEM_LIBRARIES = {
    "libc.so.6": "libc6", "libm.so.6": "libc6", "libdl.so.2": "libc6", "librt.so.1": "libc6",
    "libpthread.so.0": "libc6", "libutil.so.1": "libc6", "libresolv.so.2": "libc6",
    "libnsl.so.1": "libc6", "libcrypt.so.1": "libcrypt1",
    "ld-linux-x86-64.so.2": "libc6", "ld-linux-aarch64.so.1": "libc6",
    "libgcc_s.so.1": "libgcc-s1", "libstdc++.so.6": "libstdc++6", "libz.so.1": "zlib1g",
    "libexpat.so.1": "libexpat1",
}


@dataclass(frozen=True)
class ElfHeader:
    elf_class: int  # 1: 32-bit, 2: 64-bit
    endian: str     # "<" or ">"
    e_type: int     # 2 executable, 3 shared object
    e_machine: int


def parse_elf_header(data: bytes) -> ElfHeader | None:
    """The identifying fields of an ELF header, or None when ``data`` is not one."""
    if len(data) < 20 or data[:4] != b"\x7fELF":
        return None
    elf_class, data_encoding = data[4], data[5]
    if elf_class not in (1, 2) or data_encoding not in (1, 2):
        return None
    endian = "<" if data_encoding == 1 else ">"
    e_type, e_machine = struct.unpack_from(endian + "HH", data, 16)
    return ElfHeader(elf_class, endian, e_type, e_machine)


def read_elf_header(path: Path) -> ElfHeader | None:
    """The ELF header of a file (its first 64 bytes), or None when it is not an ELF file."""
    with open(path, "rb") as handle:
        return parse_elf_header(handle.read(64))


def wrong_machine(header: ElfHeader, arch: Arch) -> str | None:
    """Why an ELF file does not run on ``arch`` (None when it does)."""
    if header.e_machine != arch.e_machine:
        return f"ELF machine {header.e_machine}, not {arch.e_machine} ({arch.machine})"
    if header.elf_class != 2 or header.endian != "<":
        return "not a 64-bit little-endian ELF"
    return None


def elf_dynamic(data: bytes) -> dict[str, list[str]]:
    """DT_NEEDED, DT_RPATH and DT_RUNPATH strings of an ELF image (empty when it has none)."""
    header = parse_elf_header(data)
    if header is None:
        raise ValueError("not an ELF file")
    e = header.endian
    if header.elf_class == 2:
        shoff, = struct.unpack_from(e + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x3A)
        sec_fmt, dyn_fmt = e + "IIQQQQIIQQ", e + "qQ"
    else:
        shoff, = struct.unpack_from(e + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x2E)
        sec_fmt, dyn_fmt = e + "IIIIIIIIII", e + "iI"
    sections = []
    for index in range(shnum):
        fields = struct.unpack_from(sec_fmt, data, shoff + index * shentsize)
        # name, type, flags, addr, offset, size, link, info, addralign, entsize
        sections.append((fields[1], fields[4], fields[5], fields[6]))
    result: dict[str, list[str]] = {"NEEDED": [], "RPATH": [], "RUNPATH": []}
    for sh_type, offset, size, link in sections:
        if sh_type != 6:  # SHT_DYNAMIC
            continue
        _, str_offset, str_size, _ = sections[link]
        strtab = data[str_offset : str_offset + str_size]
        step = struct.calcsize(dyn_fmt)
        for pos in range(offset, offset + size, step):
            tag, value = struct.unpack_from(dyn_fmt, data, pos)
            if tag == 0:
                break
            name = {1: "NEEDED", 15: "RPATH", 29: "RUNPATH"}.get(tag)
            if name:
                end = strtab.index(b"\0", value)
                result[name].append(strtab[value:end].decode("utf-8", "replace"))
    return result


# ------------------------------------------------------------- the package's Depends

def system_depends(site: Path, arch: Arch, tree_files: list[Path]) -> tuple[list[str], list[str]]:
    """The Depends of the system libraries the package's ELF files need, and the problems found.

    Every DT_NEEDED is either bundled (auditwheel's ``*.libs``) or a library of
    SYSTEM_LIBRARIES; libc6 at the highest glibc any bundled wheel's manylinux tag asks for.
    ``tree_files``: the package's files (no symlinks); ``site``: its site-packages.
    """
    bundled = {p.name for p in tree_files}
    depends: set[str] = set()
    problems = []
    for path in tree_files:
        header = read_elf_header(path)
        if header is None:
            continue
        if header.e_machine != arch.e_machine:
            problems.append(f"{path}: {wrong_machine(header, arch)}")
            continue
        for needed in elf_dynamic(path.read_bytes())["NEEDED"]:
            if needed in bundled:
                continue
            package = SYSTEM_LIBRARIES.get(needed)
            if package:
                depends.add(package)
            elif not needed.startswith("libpython3"):
                problems.append(f"{path.relative_to(site)}: needs {needed}, neither bundled nor known")
    floor = glibc_floor(site, arch)
    return [f"libc6 (>= {floor[0]}.{floor[1]})" if lib == "libc6" and floor > (0, 0) else lib
            for lib in sorted(depends)], problems


def glibc_floor(site: Path, arch: Arch) -> tuple[int, int]:
    """The highest glibc the bundled wheels' tags ask for ((0, 0): pure Python only)."""
    floor = (0, 0)
    for wheel_file in site.glob("*.dist-info/WHEEL"):
        floor = max(floor, wheel_glibc(wheel_tags(wheel_file.read_text(encoding="utf-8")), arch))
    return floor
