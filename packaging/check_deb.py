#!/usr/bin/env python3
"""Check a built edgefl .deb from the outside: does it fit its target?

    python packaging/check_deb.py dist/edgefl_0.1.0_arm64.deb [dist/edgefl-backend-torch_0.1.0_arm64.deb ...]

Unpacks each package (dpkg-deb -x / -e into a temporary directory) and checks:
- control: Package, Architecture (= the file name's), Version (= the file name's);
- every ELF file under /opt/edgefl/venv (every *.so must be one) is 64-bit little-endian
  for the architecture's machine (e_machine 62 x86-64, 183 aarch64);
- every bundled wheel's dist-info/WHEEL Tag: cp311 / abi3 / py3, for this architecture,
  manylinux no newer than bookworm's glibc 2.36;
- each console script of every bundled distribution is in /opt/edgefl/venv/bin with the
  shebang #!/opt/edgefl/venv/bin/python3 (edgefl: Flower's too), no __pycache__ or .pyc;
- edgefl: the conffile /etc/edgefl.toml, pyvenv.cfg, bin/python3 -> /usr/bin/python3.11,
  /usr/bin/edgefl, the units, man page, copyright, changelog; maintainer scripts are
  POSIX sh with set -e; every file has one mtime (reproducible builds);
- DEBIAN/triggers: edgefl is interested in edgefl-venv-changed, every backend activates it.
Prints one line per check; exit 1 if any fails. Standard library + dpkg-deb only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from debbuild import target
from debbuild.elf import SHARED_OBJECT, read_elf_header, wrong_machine
from debbuild.product import BACKEND_PACKAGE_PREFIX, EDGEFL_SCRIPTS, UNITS, VENV_TRIGGER
from debbuild.staging import console_scripts

_FILENAME = re.compile(r"^(?P<package>[a-z0-9][a-z0-9+.-]+)_(?P<version>[^_]+)_(?P<arch>[a-z0-9]+)\.deb$")


def parse_control(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def check_elf_files(root: Path, arch: target.Arch) -> list[str]:
    """Problems with the ELF files under the venv: wrong machine/class/endianness, a *.so that is not ELF."""
    problems = []
    venv = root / target.VENV.lstrip("/")
    count = 0
    for path in sorted(venv.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        header = read_elf_header(path)
        rel = path.relative_to(root)
        if header is None:
            if SHARED_OBJECT.search(path.name):
                problems.append(f"/{rel}: named like a shared object, not an ELF file")
            continue
        count += 1
        problem = wrong_machine(header, arch)
        if problem:
            problems.append(f"/{rel}: {problem}")
    if count == 0:
        problems.append("no ELF file under the venv (expected compiled extensions)")
    return problems


def check_wheel_tags(site: Path, arch: target.Arch) -> tuple[list[str], int]:
    problems = []
    wheels = sorted(site.glob("*.dist-info/WHEEL"))
    for wheel in wheels:
        tags = target.wheel_tags(wheel.read_text(encoding="utf-8"))
        if not tags:
            problems.append(f"{wheel.parent.name}: WHEEL has no Tag")
        elif not any(target.tag_compatible(tag, arch) for tag in tags):
            problems.append(f"{wheel.parent.name}: tags {tags} do not fit CPython {target.PYTHON_VERSION} "
                            f"on {arch.deb} with glibc {'.'.join(map(str, target.TARGET_GLIBC))}")
    return problems, len(wheels)


def check_console_scripts(root: Path, required: tuple[str, ...] = ()) -> tuple[list[str], int]:
    """Every [console_scripts] entry of the package's distributions exists with our shebang."""
    site = root / target.SITE_PACKAGES.lstrip("/")
    bin_dir = root / target.VENV.lstrip("/") / "bin"
    expected = set(required)
    for entry_points in site.glob("*.dist-info/entry_points.txt"):
        expected |= set(console_scripts(entry_points.read_text(encoding="utf-8")))
    problems = []
    for name in sorted(expected):
        path = bin_dir / name
        if not path.is_file():
            problems.append(f"{target.VENV}/bin/{name} missing")
            continue
        first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8", "replace")
        if first != target.SCRIPT_SHEBANG:
            problems.append(f"{target.VENV}/bin/{name}: shebang {first!r}, not {target.SCRIPT_SHEBANG!r}")
        elif not os.access(path, os.X_OK):
            problems.append(f"{target.VENV}/bin/{name}: not executable")
    return problems, len(expected)


def check_no_bytecode(root: Path) -> list[str]:
    found = [p for p in root.rglob("*") if p.name == "__pycache__" or p.suffix in (".pyc", ".pyo")]
    return [f"/{p.relative_to(root)}: byte-code is compiled by postinst, not shipped" for p in found[:10]]


def check_maintainer_scripts(control_dir: Path) -> list[str]:
    problems = []
    for name in ("preinst", "postinst", "prerm", "postrm"):
        path = control_dir / name
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        if not text.startswith("#!/bin/sh\n"):
            problems.append(f"{name}: not a #!/bin/sh script")
        if not re.search(r"^set -e$", text, re.M):
            problems.append(f"{name}: no `set -e`")
        if not os.access(path, os.X_OK):
            problems.append(f"{name}: not executable")
    return problems


def check_edgefl_files(root: Path, conffiles: str) -> list[str]:
    problems = []
    if "/etc/edgefl.toml" not in conffiles.split():
        problems.append("/etc/edgefl.toml is not a conffile")
    venv = root / target.VENV.lstrip("/")
    cfg = venv / "pyvenv.cfg"
    if not cfg.is_file() or cfg.read_text() != target.pyvenv_cfg():
        problems.append(f"{target.VENV}/pyvenv.cfg missing or not {target.pyvenv_cfg()!r}")
    python3 = venv / "bin" / "python3"
    if not python3.is_symlink() or os.readlink(python3) != f"/usr/bin/python{target.PYTHON_VERSION}":
        problems.append(f"{target.VENV}/bin/python3 is not a symlink to /usr/bin/python{target.PYTHON_VERSION}")
    edgefl = root / "usr/bin/edgefl"
    if not (edgefl.is_symlink() and os.readlink(edgefl) == f"{target.VENV}/bin/edgefl"):
        problems.append(f"/usr/bin/edgefl is not a symlink to {target.VENV}/bin/edgefl")
    for path in [f"lib/systemd/system/{u}" for u in UNITS] + [
            "etc/edgefl.toml", "usr/lib/sysusers.d/edgefl.conf", "usr/share/man/man1/edgefl.1.gz",
            "usr/share/doc/edgefl/copyright"]:
        if not (root / path).is_file():
            problems.append(f"/{path} missing")
    if not any((root / "usr/share/doc/edgefl" / n).is_file() for n in ("changelog.gz", "changelog.Debian.gz")):
        problems.append("/usr/share/doc/edgefl/changelog(.Debian).gz missing")
    return problems


def check_mtimes(root: Path) -> list[str]:
    mtimes = {p.lstat().st_mtime for p in root.rglob("*")}
    return [] if len(mtimes) <= 1 else [f"{len(mtimes)} different file mtimes (expected one: SOURCE_DATE_EPOCH)"]


def check_deb(deb: Path) -> list[tuple[str, list[str]]]:
    """(check name, problems) for one package file."""
    match = _FILENAME.match(deb.name)
    if not match:
        return [("file name PACKAGE_VERSION_ARCH.deb", [f"{deb.name} does not match"])]
    arch = target.ARCHES.get(match["arch"])
    if arch is None:
        return [("architecture", [f"unknown architecture {match['arch']}"])]
    results: list[tuple[str, list[str]]] = []
    with tempfile.TemporaryDirectory(prefix="check-deb-") as tmp:
        root, control_dir = Path(tmp) / "root", Path(tmp) / "control"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        subprocess.run(["dpkg-deb", "-e", str(deb), str(control_dir)], check=True)
        control = parse_control((control_dir / "control").read_text(encoding="utf-8"))
        conffiles = (control_dir / "conffiles").read_text() if (control_dir / "conffiles").exists() else ""
        package = control.get("Package", "")
        results.append(("control Package/Version/Architecture", [
            f"{k} is {control.get(k)!r}, the file name says {v!r}"
            for k, v in (("Package", match["package"]), ("Version", match["version"].replace("%3a", ":")),
                         ("Architecture", arch.deb)) if control.get(k) != v]))
        results.append((f"ELF files are {arch.machine} (e_machine {arch.e_machine})", check_elf_files(root, arch)))
        site = root / target.SITE_PACKAGES.lstrip("/")
        tag_problems, wheels = check_wheel_tags(site, arch)
        results.append((f"WHEEL tags of {wheels} distributions fit cp311/{arch.machine}", tag_problems))
        required = EDGEFL_SCRIPTS if package == "edgefl" else ()
        script_problems, scripts = check_console_scripts(root, required)
        results.append((f"{scripts} console scripts with {target.SCRIPT_SHEBANG}", script_problems))
        results.append(("no __pycache__ or .pyc", check_no_bytecode(root)))
        results.append(("maintainer scripts: #!/bin/sh, set -e", check_maintainer_scripts(control_dir)))
        results.append(("one mtime for every file", check_mtimes(root)))
        # edgefl compiles the venv and restarts its daemons once per dpkg run, from its trigger
        # (packaging/README.md); a backend without the activation would leave both undone.
        wanted = ("interest-noawait" if package == "edgefl" else "activate-noawait") + f" {VENV_TRIGGER}"
        triggers = (control_dir / "triggers").read_text() if (control_dir / "triggers").exists() else ""
        results.append((f"DEBIAN/triggers: {wanted}", [] if wanted in triggers.splitlines()
                        else [f"DEBIAN/triggers is {triggers.strip()!r}"]))
        if package == "edgefl":
            results.append(("conffile, venv, /usr/bin/edgefl, units, docs", check_edgefl_files(root, conffiles)))
            depends = control.get("Depends", "")
            python = target.python_depends()
            results.append((f"Depends on {', '.join(python)}",
                            [] if all(d in depends for d in python) else [f"Depends: {depends}"]))
        elif package.startswith(BACKEND_PACKAGE_PREFIX):
            depends = control.get("Depends", "")
            results.append((f"Depends on edgefl (= {control.get('Version')})",
                            [] if f"edgefl (= {control.get('Version')})" in depends else [f"Depends: {depends}"]))
    return results


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: check_deb.py PACKAGE.deb [...]", file=sys.stderr)
        return 64
    missing = [name for name in argv if not Path(name).is_file()]
    if missing:
        print(f"check_deb: no such package: {', '.join(missing)} (run make deb)", file=sys.stderr)
        return 66
    failed = False
    for name in argv:
        print(f"== {name}")
        for check, problems in check_deb(Path(name)):
            print(f"   {'ok  ' if not problems else 'FAIL'} {check}")
            for problem in problems[:20]:
                print(f"        {problem}")
            if len(problems) > 20:
                print(f"        ... and {len(problems) - 20} more")
            failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
