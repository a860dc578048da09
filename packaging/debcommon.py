"""Pure helpers shared by the .deb build scripts (standard library only).

Target facts, ELF parsing, wheel tags, distribution metadata, console scripts.
Everything here is a pure function of its arguments so that the unit tests in
tests/packaging/ can exercise it without building a package.
"""

from __future__ import annotations

import configparser
import email.message
import email.parser
import email.policy
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

# The one target: Debian 12 bookworm / Raspberry Pi OS bookworm.
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

# A shared object's file name: libfoo.so, libfoo.so.1.2, _ext.cpython-311-x86_64-linux-gnu.so.
SHARED_OBJECT = re.compile(r"\.so(\.\d+)*$")

# Legacy manylinux aliases (PEP 600).
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def platform_tags(arch: Arch, glibc: tuple[int, int] = TARGET_GLIBC) -> list[str]:
    """Every platform tag a wheel for this target may carry, newest first.

    pip matches --platform values literally (it does not widen manylinux_2_28
    to the older tags), so the full list goes on its command line.
    """
    tags = [f"manylinux_{glibc[0]}_{minor}_{arch.machine}" for minor in range(glibc[1], 16, -1)]
    tags.append(f"manylinux2014_{arch.machine}")
    return tags


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


# ---------------------------------------------------------------------------- ELF

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


# ----------------------------------------------------------------- distributions

@dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    license: str
    copyright: str
    dist_info: str  # directory name, e.g. numpy-2.4.6.dist-info


_CLASSIFIER_LICENSES = {
    "Apache Software License": "Apache-2.0",
    "MIT License": "MIT",
    "BSD License": "BSD",
    "Python Software Foundation License": "PSF-2.0",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "ISC License (ISCL)": "ISC",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0",
    "GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0+",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0",
    "The Unlicense (Unlicense)": "Unlicense",
    "MIT No Attribution License (MIT-0)": "MIT-0",
    "Zope Public License": "ZPL-2.1",
    "Public Domain": "public-domain",
}

# License: fields in free text seen in PyPI metadata, as SPDX expressions.
_FREE_TEXT_LICENSES = {
    "mit license": "MIT", "the mit license": "MIT", "isc license": "ISC", "bsd license": "BSD",
    "3-clause bsd license": "BSD-3-Clause", "new bsd license": "BSD-3-Clause", "bsd 3-clause": "BSD-3-Clause",
    "bsd, public domain": "BSD AND public-domain", "apache 2.0": "Apache-2.0", "apache license 2.0": "Apache-2.0",
    "apache software license": "Apache-2.0", "apache license, version 2.0": "Apache-2.0", "psf": "PSF-2.0",
}
_EXPRESSION = re.compile(r"\(*[A-Za-z0-9.+-]+\)*(?: (?:AND|OR|WITH) \(*[A-Za-z0-9.+-]+\)*)*")


def license_from_metadata(headers: email.message.Message) -> str:
    """The distribution's licence, as an SPDX-like expression, from its METADATA headers.

    License-Expression (core metadata 2.4) wins; then a short License field; then the
    trove classifiers. Returns "" when none of them says anything.
    """
    expression = (headers.get("License-Expression") or "").strip()
    if expression:
        return expression
    field = " ".join((headers.get("License") or "").split()) if "\n" not in (headers.get("License") or "").strip() else ""
    if field.upper() in ("UNKNOWN", "NONE"):
        field = ""
    if field.lower() in _FREE_TEXT_LICENSES:
        return _FREE_TEXT_LICENSES[field.lower()]
    if field and len(field) <= 80 and _EXPRESSION.fullmatch(field):
        return field
    found = []
    for classifier in headers.get_all("Classifier") or []:
        parts = [p.strip() for p in classifier.split("::")]
        if parts[0] == "License" and len(parts) > 1 and parts[-1] not in ("OSI Approved",):
            found.append(_CLASSIFIER_LICENSES.get(parts[-1], parts[-1]))
    if found:
        return " OR ".join(dict.fromkeys(found))
    if field and len(field) <= 80:  # free text nobody mapped: keep it, as a LicenseRef
        return "LicenseRef-" + re.sub(r"[^A-Za-z0-9.]+", "-", field).strip("-")
    return ""


def parse_metadata(text: str) -> email.message.Message:
    # policy.default decodes RFC 2047 words (=?utf-8?q?Sebasti=C3=A1n...?=) in author fields.
    return email.parser.HeaderParser(policy=email.policy.default).parsestr(text)


def copyright_from_metadata(headers: email.message.Message) -> str:
    for key in ("Author", "Author-email", "Maintainer", "Maintainer-email"):
        value = " ".join((headers.get(key) or "").split())
        if value and value.upper() != "UNKNOWN":
            return value
    return f"the {headers.get('Name')} authors"


def read_distribution(dist_info: Path) -> Distribution:
    headers = parse_metadata((dist_info / "METADATA").read_text(encoding="utf-8"))
    return Distribution(
        name=headers["Name"], version=headers["Version"], license=license_from_metadata(headers),
        copyright=copyright_from_metadata(headers), dist_info=dist_info.name,
    )


def normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------- console scripts

def console_scripts(entry_points_text: str) -> dict[str, str]:
    """[console_scripts] of an entry_points.txt: script name -> 'module:attr'."""
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(entry_points_text)
    if not parser.has_section("console_scripts"):
        return {}
    return {name: value.strip() for name, value in parser.items("console_scripts")}


def console_script_text(entry: str, shebang: str = SCRIPT_SHEBANG) -> str:
    """The launcher pip would write for 'module:attr.sub [extra]', with our shebang."""
    entry = entry.split("[", 1)[0].strip()
    module, _, attr = entry.partition(":")
    module = module.strip()
    attr = attr.strip()
    if not re.fullmatch(r"[\w.]+", module) or (attr and not re.fullmatch(r"[\w.]+", attr)):
        raise ValueError(f"bad entry point: {entry!r}")
    if attr:
        head = attr.split(".", 1)[0]
        imports, call = f"from {module} import {head}", attr
    else:
        imports, call = f"import {module}", module
    return (
        f"{shebang}\n"
        "import re\n"
        "import sys\n"
        f"{imports}\n"
        "if __name__ == \"__main__\":\n"
        "    sys.argv[0] = re.sub(r\"(-script\\.pyw|\\.exe)?$\", \"\", sys.argv[0])\n"
        f"    sys.exit({call}())\n"
    )


def pyvenv_cfg() -> str:
    # home: where the base interpreter lives; the venv's own site-packages come first on
    # sys.path, then the system ones (an NVIDIA-built torch in the system Python is found).
    return f"home = /usr/bin\ninclude-system-site-packages = true\nversion = {PYTHON_VERSION}\n"
