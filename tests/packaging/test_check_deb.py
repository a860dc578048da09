"""Unit tests of the .deb checks and their pure helpers (no package is built here)."""

from __future__ import annotations

import os
from pathlib import Path

import check_deb
import pytest
from debbuild import base, elf, licences, staging, target

from tests.packaging.elfcraft import elf_image

AMD64, ARM64 = target.ARCHES["amd64"], target.ARCHES["arm64"]


# ---------------------------------------------------------------- ELF headers

@pytest.mark.parametrize(("machine", "arch"), [(62, AMD64), (183, ARM64)])
def test_elf_header_machine(machine, arch):
    header = elf.parse_elf_header(elf_image(machine))
    assert header == elf.ElfHeader(elf_class=2, endian="<", e_type=3, e_machine=arch.e_machine)


def test_elf_header_from_the_first_20_bytes_only():
    # check_deb reads 64 bytes of each file; the identifying fields are in the first 20.
    raw = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + (2).to_bytes(2, "little") + (183).to_bytes(2, "little")
    assert elf.parse_elf_header(raw) == elf.ElfHeader(2, "<", 2, 183)


def test_elf_header_32_bit_and_big_endian():
    arm32 = elf.parse_elf_header(elf_image(40, elf_class=1))
    assert (arm32.elf_class, arm32.e_machine) == (1, 40)
    big = elf.parse_elf_header(elf_image(183, big_endian=True))
    assert (big.endian, big.e_machine) == (">", 183)


@pytest.mark.parametrize("data", [b"", b"\x7fELF", b"#!/bin/sh\n" + b"\0" * 30, b"\x7fELF\x03\x01" + b"\0" * 30,
                                  b"PK\x03\x04" + b"\0" * 60])
def test_not_elf(data):
    assert elf.parse_elf_header(data) is None


@pytest.mark.parametrize("elf_class", [1, 2])
def test_elf_dynamic_needed_and_runpath(elf_class):
    image = elf_image(62, ("libstdc++.so.6", "libc.so.6"), "$ORIGIN/../numpy.libs", elf_class=elf_class)
    dynamic = elf.elf_dynamic(image)
    assert dynamic == {"NEEDED": ["libstdc++.so.6", "libc.so.6"], "RPATH": [], "RUNPATH": ["$ORIGIN/../numpy.libs"]}


def test_elf_dynamic_of_a_static_file():
    assert elf.elf_dynamic(elf_image(183)) == {"NEEDED": [], "RPATH": [], "RUNPATH": []}
    with pytest.raises(ValueError):
        elf.elf_dynamic(b"not an ELF file at all, no sir")


# ------------------------------------------------------------------- wheel tags

@pytest.mark.parametrize(("tag", "arch", "ok"), [
    ("py3-none-any", ARM64, True),
    ("py2.py3-none-any", AMD64, True),
    ("cp311-cp311-manylinux_2_28_aarch64", ARM64, True),
    ("cp311-cp311-manylinux_2_28_aarch64", AMD64, False),
    ("cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64", AMD64, True),
    ("cp311-cp311-manylinux2014_aarch64", ARM64, True),
    ("cp311-cp311-manylinux_2_36_aarch64", ARM64, True),
    ("cp311-cp311-manylinux_2_39_aarch64", ARM64, False),   # newer glibc than bookworm's 2.36
    ("cp39-abi3-manylinux2014_aarch64", ARM64, True),
    ("cp311-abi3-manylinux_2_17_x86_64", AMD64, True),
    ("cp312-abi3-manylinux_2_17_x86_64", AMD64, False),     # needs Python >= 3.12
    ("cp312-cp312-manylinux_2_28_x86_64", AMD64, False),
    ("cp310-cp310-manylinux_2_28_x86_64", AMD64, False),
    ("cp311-cp311-musllinux_1_2_aarch64", ARM64, False),
    ("cp311-cp311-linux_aarch64", ARM64, False),
    ("cp311-cp311-macosx_11_0_arm64", ARM64, False),
    ("py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64", ARM64, True),
])
def test_tag_compatible(tag, arch, ok):
    assert target.tag_compatible(tag, arch) is ok


def test_platform_tags_cover_manylinux2014_to_bookworm_glibc():
    tags = target.platform_tags(ARM64)
    assert tags[0] == "manylinux_2_36_aarch64" and tags[-1] == "manylinux2014_aarch64"
    assert "manylinux_2_28_aarch64" in tags and "manylinux_2_17_aarch64" in tags
    assert not any("2_37" in t or "x86_64" in t for t in tags)


def test_glibc_of_platform_and_wheel_glibc():
    assert target.glibc_of_platform("manylinux_2_28_x86_64", AMD64) == (2, 28)
    assert target.glibc_of_platform("manylinux2014_x86_64", AMD64) == (2, 17)
    assert target.glibc_of_platform("manylinux_2_28_x86_64", ARM64) is None
    assert target.glibc_of_platform("any", ARM64) == (0, 0)
    text = "Wheel-Version: 1.0\nTag: cp311-cp311-manylinux_2_27_aarch64\nTag: cp311-cp311-manylinux_2_28_aarch64\n"
    assert target.wheel_tags(text) == ["cp311-cp311-manylinux_2_27_aarch64", "cp311-cp311-manylinux_2_28_aarch64"]
    assert target.wheel_glibc(target.wheel_tags(text), ARM64) == (2, 27)


def test_expand_tag_rejects_garbage():
    with pytest.raises(ValueError):
        target.expand_tag("cp311-manylinux_2_28_aarch64")


# ------------------------------------------------------ console scripts, metadata

def test_console_scripts_and_launcher():
    text = "[console_scripts]\nflwr = flwr.cli.app:app\nEdge-Tool = pkg.mod:Class.main [extra]\n\n[other]\nx = y:z\n"
    scripts = staging.console_scripts(text)
    assert scripts == {"flwr": "flwr.cli.app:app", "Edge-Tool": "pkg.mod:Class.main [extra]"}
    launcher = staging.console_script_text(scripts["Edge-Tool"])
    assert launcher.splitlines()[0] == "#!/opt/edgefl/venv/bin/python3"
    assert "from pkg.mod import Class\n" in launcher and "sys.exit(Class.main())" in launcher
    compile(launcher, "launcher", "exec")
    assert staging.console_scripts("[gui_scripts]\na = b:c\n") == {}
    with pytest.raises(ValueError):
        staging.console_script_text("os; rm -rf /:x")


def test_console_launcher_runs(tmp_path):
    (tmp_path / "fakemod.py").write_text("def main():\n    print('ran')\n    return 3\n")
    code = staging.console_script_text("fakemod:main").split("\n", 1)[1]
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (3, "ran\n")


@pytest.mark.parametrize(("headers", "expected"), [
    ("Name: a\nLicense-Expression: Apache-2.0 OR BSD-3-Clause\nLicense: MIT\n", "Apache-2.0 OR BSD-3-Clause"),
    ("Name: a\nLicense: MIT\n", "MIT"),
    ("Name: a\nLicense: UNKNOWN\nClassifier: License :: OSI Approved :: BSD License\n", "BSD"),
    ("Name: a\nClassifier: License :: OSI Approved :: Apache Software License\n"
     "Classifier: License :: OSI Approved :: MIT License\n", "Apache-2.0 OR MIT"),
    ("Name: a\nLicense: " + "Copyright (c) 2005 someone. All rights reserved, a long licence text" * 3 + "\n", ""),
    ("Name: a\nLicense: 3-Clause BSD License\n", "BSD-3-Clause"),
    ("Name: a\nLicense: BSD, Public Domain\nClassifier: License :: OSI Approved :: BSD License\n",
     "BSD AND public-domain"),
    ("Name: a\nLicense: Some Custom Terms v2\n", "LicenseRef-Some-Custom-Terms-v2"),
    ("Name: a\nLicense: Free text, see below\nClassifier: License :: Public Domain\n", "public-domain"),
])
def test_license_from_metadata(headers, expected):
    assert licences.license_from_metadata(base.parse_metadata(headers)) == expected


def test_metadata_decodes_encoded_author_names():
    headers = base.parse_metadata("Name: fastapi\n"
                                  "Author-email: =?utf-8?q?Sebasti=C3=A1n_Ram=C3=ADrez?= <t@example.org>\n")
    assert licences.copyright_from_metadata(headers) == "Sebastián Ramírez <t@example.org>"


def test_pyvenv_cfg_uses_system_python_and_its_packages():
    cfg = dict(line.split(" = ") for line in target.pyvenv_cfg().splitlines())
    assert cfg == {"home": "/usr/bin", "include-system-site-packages": "true", "version": "3.11"}


# --------------------------------------------------------- checks on fake trees

def _venv_tree(root: Path) -> Path:
    site = root / target.SITE_PACKAGES.lstrip("/")
    site.mkdir(parents=True)
    return site


def test_check_elf_files(tmp_path):
    site = _venv_tree(tmp_path)
    (site / "good.cpython-311-aarch64-linux-gnu.so").write_bytes(elf_image(183))
    assert check_deb.check_elf_files(tmp_path, ARM64) == []
    (site / "wrong.cpython-311-x86_64-linux-gnu.so").write_bytes(elf_image(62))
    (site / "libfake.so.1").write_text("not an ELF file")
    (site / "arm32.so").write_bytes(elf_image(183, elf_class=1))
    problems = check_deb.check_elf_files(tmp_path, ARM64)
    assert len(problems) == 3
    assert any("wrong.cpython" in p and "machine 62" in p for p in problems)
    assert any("libfake.so.1" in p and "not an ELF" in p for p in problems)
    assert any("arm32.so" in p and "64-bit" in p for p in problems)


def test_check_elf_files_wants_at_least_one(tmp_path):
    _venv_tree(tmp_path)
    assert check_deb.check_elf_files(tmp_path, AMD64) == ["no ELF file under the venv (expected compiled extensions)"]


def test_check_wheel_tags(tmp_path):
    site = _venv_tree(tmp_path)
    for name, tag in (("ok-1.dist-info", "cp311-cp311-manylinux_2_28_x86_64"), ("pure-1.dist-info", "py3-none-any"),
                      ("bad-1.dist-info", "cp311-cp311-manylinux_2_28_aarch64"), ("none-1.dist-info", None)):
        (site / name).mkdir()
        (site / name / "WHEEL").write_text("Wheel-Version: 1.0\n" + (f"Tag: {tag}\n" if tag else ""))
    problems, count = check_deb.check_wheel_tags(site, AMD64)
    assert count == 4
    assert [p.split(":")[0] for p in problems] == ["bad-1.dist-info", "none-1.dist-info"]


def test_check_console_scripts(tmp_path):
    site = _venv_tree(tmp_path)
    bin_dir = tmp_path / "opt/edgefl/venv/bin"
    bin_dir.mkdir()
    (site / "tool-1.dist-info").mkdir()
    (site / "tool-1.dist-info/entry_points.txt").write_text("[console_scripts]\ngood = t:a\nbad = t:b\nlost = t:c\n")
    (bin_dir / "good").write_text(staging.console_script_text("t:a"))
    (bin_dir / "good").chmod(0o755)
    (bin_dir / "bad").write_text("#!/usr/bin/python3\n")
    (bin_dir / "bad").chmod(0o755)
    problems, count = check_deb.check_console_scripts(tmp_path, required=("flwr",))
    assert count == 4
    assert sorted(p.split(":")[0].split()[0].rsplit("/", 1)[-1] for p in problems) == ["bad", "flwr", "lost"]


def test_check_no_bytecode_and_mtimes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/m.py").write_text("")
    os.utime(tmp_path / "a/m.py", (1000, 1000))
    os.utime(tmp_path / "a", (1000, 1000))
    assert check_deb.check_no_bytecode(tmp_path) == []
    assert check_deb.check_mtimes(tmp_path) == []
    (tmp_path / "a/__pycache__").mkdir()
    assert len(check_deb.check_no_bytecode(tmp_path)) == 1
    assert check_deb.check_mtimes(tmp_path) != []


def test_check_maintainer_scripts(tmp_path):
    good = tmp_path / "postinst"
    good.write_text("#!/bin/sh\nset -e\nexit 0\n")
    good.chmod(0o755)
    assert check_deb.check_maintainer_scripts(tmp_path) == []
    bad = tmp_path / "prerm"
    bad.write_text("#!/bin/bash\nexit 0\n")
    assert len(check_deb.check_maintainer_scripts(tmp_path)) == 3


def test_parse_control():
    control = check_deb.parse_control("Package: edgefl\nDescription: short\n long line\n .\n more\n"
                                      "Architecture: arm64\n")
    assert control["Package"] == "edgefl" and control["Architecture"] == "arm64"
    assert control["Description"] == "short\nlong line\n.\nmore"


def test_check_deb_rejects_a_badly_named_file(tmp_path):
    assert check_deb.check_deb(tmp_path / "edgefl.deb")[0][1] == ["edgefl.deb does not match"]
    assert check_deb.check_deb(tmp_path / "edgefl_0.1.0_armhf.deb")[0][1] == ["unknown architecture armhf"]


def test_summarize_parses_dpkg_listing():
    import summarize

    listing = (
        "drwxr-xr-x root/root         0 2026-11-28 12:00 ./opt/edgefl/venv/lib/python3.11/site-packages/\n"
        "-rw-r--r-- root/root      1234 2026-11-28 12:00 ./opt/edgefl/venv/lib/python3.11/site-packages/"
        "numpy-2.4.6.dist-info/METADATA\n"
        "lrwxrwxrwx root/root         0 2026-11-28 12:00 ./usr/bin/edgefl -> /opt/edgefl/venv/bin/edgefl\n"
        "-rw-r--r-- root/root        10 2026-11-28 12:00 ./opt/edgefl/venv/lib/python3.11/site-packages/"
        "torch-2.13.0+cpu.dist-info/RECORD\n"
    )
    entries = summarize.parse_listing(listing)
    assert [e[2] for e in entries][2] == "./usr/bin/edgefl"
    assert entries[1][1] == 1234
    assert summarize.distributions([e[2] for e in entries]) == [("numpy", "2.4.6"), ("torch", "2.13.0+cpu")]
    assert summarize.human(1536) == "1.5 KiB"
