"""packaging/locks/<arch>.json: every bundled wheel by name, version, file name and sha256.

Made by one pip resolution for the target (--platform/--python-version/--abi; edgefl + the
backend pins), pruned by evaluating environment markers for the TARGET (pip evaluates them
for the build host), then checked: every requirement of every bundled distribution that
applies on the target is met by the bundle. ``make deb`` installs exactly what it lists.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import zipfile
from pathlib import Path

from debbuild.base import PACKAGING, PIP, REPO, BuildError, Paths, log, normalize_name, parse_metadata, run
from debbuild.product import load_backends
from debbuild.target import (
    PYTHON_VERSION,
    TARGET_GLIBC,
    Arch,
    pip_target_args,
    platform_tags,
    tag_compatible,
    target_environment,
)
from debbuild.wheels import build_edgefl_wheel, fetch_backend_roots, fetch_sdist_wheel

LOCK_FORMAT = 1


def lock_path(arch: Arch) -> Path:
    return PACKAGING / "locks" / f"{arch.deb}.json"


def wheel_requires(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist, without the extras' (the bundle never installs an extra)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        headers = parse_metadata(archive.read(name).decode("utf-8"))
    return sorted(r for r in headers.get_all("Requires-Dist") or [] if not re.search(r"\bextra\s*==", r))


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
            active = extras_seen.get(normalize_name(parent), set()) or {""}
            if not any(req.marker.evaluate({**env, "extra": extra}) for extra in active):
                continue
        name = normalize_name(req.name)
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


def resolve(arch: Arch, paths: Paths, wheel: Path, backends: dict[str, dict]) -> dict[str, dict]:
    """pip's resolution of edgefl and every backend for the target: normalized name -> its
    name, version, requires_dist, url and sha256."""
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
    return {
        normalize_name(item["metadata"]["name"]): {
            "name": item["metadata"]["name"], "version": item["metadata"]["version"],
            "requires_dist": item["metadata"].get("requires_dist", []),
            "url": item["download_info"]["url"],
            "sha256": item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
            or item["download_info"].get("archive_info", {}).get("hash", "=").split("=", 1)[1],
        }
        for item in data["install"]
    }


def split_by_package(installs: dict[str, dict], backends: dict[str, dict],
                     arch: Arch) -> tuple[set[str], dict[str, set[str]]]:
    """(edgefl's distributions, each backend package's own), as needed on the target."""
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
    dropped = sorted(set(installs) - base.union(*own.values()))
    if dropped:
        log(f"not bundled (no requirement on {arch.machine} needs them): {', '.join(dropped)}")
    return base, own


def make_lock(arch: Arch, paths: Paths, settings: dict, epoch: int) -> dict:
    backends = load_backends(arch)
    wheel = build_edgefl_wheel(paths.work / "edgefl-wheel", epoch)
    paths.cache.mkdir(parents=True, exist_ok=True)
    sdist_entries = {normalize_name(name): fetch_sdist_wheel(name, version, None, paths.cache)
                     for name, version in sorted(settings.get("sdist", {}).items())}
    installs = resolve(arch, paths, wheel, backends)
    base, own = split_by_package(installs, backends, arch)

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


def write_lock(arch: Arch, paths: Paths, settings: dict, epoch: int) -> Path:
    lock = make_lock(arch, paths, settings, epoch)
    out = lock_path(arch)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(lock, indent=1) + "\n", encoding="utf-8")
    counts = {k: len(v) for k, v in lock["packages"].items()}
    log(f"wrote {out.relative_to(REPO)}: {counts}")
    return out


def lock_inputs(arch: Arch, wheel: Path, backends: dict[str, dict], settings: dict) -> dict:
    """What the lock was made from: a build refuses a lock whose inputs changed since."""
    return {
        "python": PYTHON_VERSION, "glibc": "{}.{}".format(*TARGET_GLIBC),
        "platforms": platform_tags(arch),
        "edgefl_requires": wheel_requires(wheel),
        "backend_requirements": {package: sorted(b["requirements"]) for package, b in backends.items()},
        "sdist": dict(sorted(settings.get("sdist", {}).items())),
    }


def check_filename_tags(filename: str, arch: Arch) -> None:
    parts = filename[: -len(".whl")].split("-")
    tag = "-".join(parts[-3:])
    if not tag_compatible(tag, arch):
        raise BuildError(f"{filename}: tag {tag} does not fit CPython {PYTHON_VERSION} on {arch.deb}")


def read_lock(arch: Arch, wheel: Path, backends: dict[str, dict], settings: dict) -> dict:
    """The committed lock, if it was made from the inputs this build has (else BuildError)."""
    path = lock_path(arch)
    if not path.exists():
        raise BuildError(f"{path.relative_to(REPO)} is missing: run `make deb-lock ARCH={arch.deb}` (needs PyPI)")
    lock = json.loads(path.read_text(encoding="utf-8"))
    if lock.get("format") != LOCK_FORMAT or lock.get("arch") != arch.deb:
        raise BuildError(f"{path.relative_to(REPO)}: wrong format or arch")
    expected = lock_inputs(arch, wheel, backends, settings)
    if lock["inputs"] != expected:
        changed = sorted(k for k in expected if lock["inputs"].get(k) != expected[k])
        raise BuildError(f"packaging/locks/{arch.deb}.json is stale ({', '.join(changed)} changed): "
                         f"run `make deb-lock ARCH={arch.deb}`")
    return lock
