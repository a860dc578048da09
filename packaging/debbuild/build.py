"""One build for an architecture: edgefl's wheel, the lock checked, the wheels cached, then the
spec of every package, each built by ``build_package``; and the lock command."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from debbuild.base import PACKAGING, REPO, BuildError, Paths, log, run
from debbuild.lock import read_lock, write_lock
from debbuild.package import PackageSpec, Release, build_package
from debbuild.product import (
    BACKEND_PACKAGE_PREFIX,
    EDGEFL_SCRIPTS,
    UNITS,
    VENV_TRIGGER,
    backend_description,
    backend_find_links,
    backend_roots,
    changelog_top,
    debian_version,
    edgefl_description,
    load_backends,
    load_settings,
    read_changelog,
    upstream_version,
)
from debbuild.staging import gzip_bytes
from debbuild.target import PYTHON_VERSION, VENV, Arch, python_depends, pyvenv_cfg
from debbuild.wheels import build_edgefl_wheel, ensure_cached


def build(arch: Arch, dist: Path, revision: str, units_dir: Path) -> list[Path]:
    """dist/edgefl_<version>_<arch>.deb and dist/edgefl-backend-<name>_<version>_<arch>.deb."""
    started = time.monotonic()
    timings: list[tuple[str, float]] = []

    def lap(step: str) -> None:
        timings.append((step, time.monotonic() - started - sum(t for _, t in timings)))

    release = _release(arch, dist, revision)
    missing_units = [u for u in UNITS if not (units_dir / u).is_file()]
    if missing_units:
        raise BuildError(f"systemd units missing in {units_dir}: {', '.join(missing_units)} "
                         "(they are written in systemd/; the package cannot be built without them)")
    release.paths.work.mkdir(parents=True, exist_ok=True)
    backends = load_backends(arch)
    wheel = build_edgefl_wheel(release.paths.work / "edgefl-wheel", release.epoch)
    lock = read_lock(arch, wheel, backends, release.settings)
    lap("edgefl wheel, lock check")
    # Only the backends with a find-links page of their own fetch their roots from it.
    linked = {package: b for package, b in backends.items() if b.get("find_links")}
    cached = ensure_cached(lock, arch, release.paths.cache, backend_find_links(linked), backend_roots(linked))
    lap("wheel cache")

    descriptions = {"edgefl": edgefl_description(list(backends)),
                    **{package: backend_description(b) for package, b in backends.items()}}
    edgefl = build_package(edgefl_spec(release, [wheel] + [cached[i["filename"]] for i in lock["packages"]["edgefl"]],
                                       descriptions["edgefl"], units_dir))
    lap("edgefl")
    built = [edgefl]
    # Each backend is rebuilt only when its inputs change: torch is the slow one.
    for package, backend in backends.items():
        entries = lock["packages"][package]
        built.append(build_package(PackageSpec(
            release=release, name=package, description=descriptions[package],
            wheels=tuple(cached[i["filename"]] for i in entries), lock_entries=tuple(entries),
            depends=(f"edgefl (= {release.version})", *python_depends()),
            maintainer_scripts={"prerm": PACKAGING / "scripts" / "edgefl-backend.prerm"},
            triggers={"activate_noawait": [VENV_TRIGGER]},
            prune=tuple(backend.get("prune", [])), base=edgefl, reuse_unchanged=True)))
        lap(package.removeprefix(BACKEND_PACKAGE_PREFIX))
    problems = [problem for package in built for problem in package.problems]
    if problems:
        raise BuildError("bundled ELF files:\n  " + "\n  ".join(problems[:20]))
    total = time.monotonic() - started
    log("timings: " + ", ".join(f"{step} {seconds:.1f}s" for step, seconds in timings) + f"; total {total:.1f}s")
    return [package.deb for package in built]


def edgefl_spec(release: Release, wheels: list[Path], description: str, units_dir: Path) -> PackageSpec:
    """edgefl: the venv with edgefl, Flower and their dependencies, the units, config, docs."""
    venv = VENV.lstrip("/")
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(release.epoch))
    manpage = run([sys.executable, str(PACKAGING / "make_manpage.py")], env=env, capture_output=True, text=True).stdout
    return PackageSpec(
        release=release, name="edgefl", description=description, wheels=tuple(wheels),
        depends=(*python_depends(), "adduser", "init-system-helpers (>= 1.54~)"),
        maintainer_scripts={k: PACKAGING / "scripts" / f"edgefl.{k}" for k in ("postinst", "prerm", "postrm")},
        triggers={"interest_noawait": [VENV_TRIGGER]},
        files={
            f"{venv}/pyvenv.cfg": pyvenv_cfg(),
            **{f"lib/systemd/system/{unit}": (units_dir / unit).read_bytes() for unit in UNITS},
            "usr/lib/sysusers.d/edgefl.conf": (PACKAGING / "sysusers.conf").read_text(),
            "usr/share/man/man1/edgefl.1.gz": gzip_bytes(manpage.encode()),
        },
        symlinks={f"{venv}/bin/python3": f"/usr/bin/python{PYTHON_VERSION}",
                  f"{venv}/bin/python": "python3",
                  f"{venv}/bin/python{PYTHON_VERSION}": "python3"},
        contents=(
            {"src": str(REPO / "etc" / "edgefl.toml"), "dst": "/etc/edgefl.toml", "type": "config|noreplace",
             "file_info": {"mode": 0o644}},
            {"src": f"{VENV}/bin/edgefl", "dst": "/usr/bin/edgefl", "type": "symlink"},
        ),
        required_scripts=frozenset(EDGEFL_SCRIPTS))


def _release(arch: Arch, dist: Path, revision: str) -> Release:
    upstream = upstream_version()
    version = debian_version(upstream, revision)
    changelog = read_changelog()
    top_version, changelog_epoch = changelog_top(changelog)
    if top_version != version:
        raise BuildError(f"packaging/changelog's newest entry is {top_version}, building {version}: "
                         f"add an entry for {version} (e.g. `dch -v {version}`) first")
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or changelog_epoch)
    return Release(arch=arch, upstream=upstream, revision=revision, version=version, epoch=epoch,
                   changelog=changelog, settings=load_settings(), paths=Paths(arch, dist))


def lock(arch: Arch, dist: Path) -> Path:
    """(Re)write packaging/locks/<arch>.json (needs PyPI)."""
    paths = Paths(arch, dist)
    paths.work.mkdir(parents=True, exist_ok=True)
    _, epoch = changelog_top(read_changelog())
    return write_lock(arch, paths, load_settings(), epoch)

