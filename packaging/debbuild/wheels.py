"""The wheels a build installs: edgefl's, built from the checkout, and the locked ones, fetched
once into build/wheels/<arch>/ and checked against the lock's sha256 (sdist-only
dependencies built into pure-Python wheels there)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from debbuild.base import PIP, REPO, BuildError, log, normalize_name, run, sha256_of
from debbuild.target import Arch, pip_target_args


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


def fetch_sdist_wheel(name: str, version: str, sha256: str | None, cache: Path) -> dict:
    """A py3-none-any wheel built from the PyPI sdist (hash-checked when ``sha256`` is known)."""
    sdist_dir = cache / "sdist"
    sdist_dir.mkdir(parents=True, exist_ok=True)
    found = [p for p in sdist_dir.glob("*") if normalize_name(p.name).startswith(normalize_name(f"{name}-{version}."))]
    if not found or (sha256 and sha256_of(found[0]) != sha256):
        for stale in found:
            stale.unlink()
        run(PIP + ["download", "--quiet", "--no-deps", "--no-binary", ":all:", "-d", str(sdist_dir),
                   f"{name}=={version}"])
        prefix = normalize_name(f"{name}-{version}.")
        found = [p for p in sdist_dir.glob("*") if normalize_name(p.name).startswith(prefix)]
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


def fetch_backend_roots(requirements: list[str], find_links: list[str], arch: Arch, cache: Path,
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


def ensure_cached(lock: dict, arch: Arch, cache: Path, find_links: list[str],
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
        special = sorted(n for n in lines if normalize_name(n) in roots and find_links)
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
