"""A package's tree before nfpm: wheels unpacked into the venv's site-packages, launchers in
its bin/, nothing of the build host left, modes and mtimes normalized."""

from __future__ import annotations

import configparser
import gzip
import io
import os
import re
import shutil
from pathlib import Path

from debbuild.base import PIP, BuildError, run
from debbuild.elf import SHARED_OBJECT
from debbuild.target import SCRIPT_SHEBANG, SITE_PACKAGES, Arch, pip_target_args


def install_wheels(stage: Path, wheels: list[Path], arch: Arch) -> Path:
    """The wheels unpacked into the stage's site-packages (returned)."""
    site = stage / SITE_PACKAGES.lstrip("/")
    site.mkdir(parents=True)
    # --no-deps: the lock is the complete closure. --no-index: nothing but these files.
    run(PIP + ["install", "--quiet", "--no-deps", "--no-index", "--no-compile", "--no-warn-script-location",
               "--target", str(site)] + pip_target_args(arch) + [str(w) for w in wheels])
    return site


def prune_site_packages(site: Path, prune: list[str]) -> None:
    """Remove directories a backend does not need (backends.toml ``prune``), and their
    lines in the owning distribution's RECORD, so that what pip knows stays true."""
    for relative in prune:
        target = site / relative
        if not target.is_dir():
            raise BuildError(f"backends.toml prunes {relative}, which the wheels do not install")
        shutil.rmtree(target)
        for record in site.glob("*.dist-info/RECORD"):
            lines = record.read_text(encoding="utf-8").splitlines(keepends=True)
            kept = [line for line in lines if not line.startswith(relative.rstrip("/") + "/")]
            if len(kept) != len(lines):
                record.write_text("".join(kept), encoding="utf-8")


def tidy_site_packages(site: Path, bin_dir: Path) -> dict[str, str]:
    """Move what pip put in site-packages/bin to the venv's bin/ (console-script launchers
    are dropped: they carry the build host's shebang and are rewritten by
    write_console_scripts), drop build-host paths; return the console scripts."""
    scripts: dict[str, str] = {}
    for dist_info in sorted(site.glob("*.dist-info")):
        entry_points = dist_info / "entry_points.txt"
        if entry_points.exists():
            for name, entry in console_scripts(entry_points.read_text(encoding="utf-8")).items():
                if name in scripts:
                    raise BuildError(f"two distributions install the console script {name}")
                scripts[name] = entry
    if (site / "bin").is_dir():
        # A wheel's .data/scripts (uv's binaries uv and uvx): kept, in the venv's bin/.
        for path in sorted((site / "bin").iterdir()):
            if path.name in scripts:
                continue
            bin_dir.mkdir(parents=True, exist_ok=True)
            data = path.read_bytes()
            if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
                data = SCRIPT_SHEBANG.encode() + b"\n" + data.split(b"\n", 1)[1]
            (bin_dir / path.name).write_bytes(data)
            (bin_dir / path.name).chmod(0o755)
        shutil.rmtree(site / "bin")
    # A wheel's .data/headers (greenlet's C headers: only for compiling against it) and
    # .data/data/share/man (sympy's isympy.1, for a script that is not on PATH).
    shutil.rmtree(site / "include", ignore_errors=True)
    shutil.rmtree(site / "share" / "man", ignore_errors=True)
    if (site / "share").is_dir() and not any((site / "share").iterdir()):
        (site / "share").rmdir()
    strays = sorted(p.name for p in site.iterdir() if p.name in ("share", "etc", "man", "data"))
    if strays:
        raise BuildError(f"wheels installed data outside site-packages ({strays}): not handled")
    for dist_info in sorted(site.glob("*.dist-info")):
        direct_url = dist_info / "direct_url.json"  # records the build host's path of a local wheel
        direct_url.unlink(missing_ok=True)
        record = dist_info / "RECORD"
        lines = record.read_text(encoding="utf-8").splitlines(keepends=True)
        dropped = (f"{dist_info.name}/direct_url.json,", "include/", "share/man/", "bin/")
        kept = [line for line in lines if not line.startswith(dropped)]
        if kept != lines:
            record.write_text("".join(kept), encoding="utf-8")
    for cache_dir in site.rglob("__pycache__"):
        shutil.rmtree(cache_dir)
    return scripts


# ------------------------------------------------------------------ console scripts

def console_scripts(entry_points_text: str) -> dict[str, str]:
    """[console_scripts] of an entry_points.txt: script name -> 'module:attr'."""
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    # configparser's documented way to keep keys' case; typeshed declares optionxform a method.
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


def write_console_scripts(bin_dir: Path, scripts: dict[str, str]) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, entry in sorted(scripts.items()):
        path = bin_dir / name
        path.write_text(console_script_text(entry), encoding="utf-8")
        path.chmod(0o755)


# ------------------------------------------------------------ files, modes, mtimes

def write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    path.chmod(mode)


def gzip_bytes(data: bytes) -> bytes:
    """gzip -n -9: no name, no timestamp."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as handle:
        handle.write(data)
    return buffer.getvalue()


def file_mode(name: str, head: bytes, executable: bool, in_site_packages: bool = False) -> int:
    """0644, or 0755 for what is meant to be run and marked executable: an ELF program (not
    a shared object: a library needs no x bit), or a script with #! outside site-packages
    (there, a #! line is a module's, e.g. torch's __init__.py files: run with python -m)."""
    if not executable or SHARED_OBJECT.search(name):
        return 0o644
    if head.startswith(b"\x7fELF"):
        return 0o755
    return 0o755 if head.startswith(b"#!") and not in_site_packages else 0o644


def normalize_tree(root: Path, epoch: int) -> None:
    """Modes as file_mode() says (directories 0755), every mtime = SOURCE_DATE_EPOCH (nfpm's
    mtime setting covers what it creates, not the files of a tree)."""
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            if path.is_dir():
                path.chmod(0o755)
            else:
                executable = bool(path.stat().st_mode & 0o111)
                head = b""
                if executable:
                    with open(path, "rb") as handle:
                        head = handle.read(4)
                path.chmod(file_mode(path.name, head, executable, "/site-packages/" in path.as_posix()))
        os.utime(path, (epoch, epoch), follow_symlinks=False)


def file_list(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())
